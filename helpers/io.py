"""Reading the image containers of the ISIC downloads: JPEG/PNG, HDF5, DICOM, TFRecord.

:func:`read_image` turns any JPEG/PNG (or ``.dcm``, or ``store.hdf5/<key>``) into an RGB ``uint8``
array and refuses corrupt, truncated or decompression-bomb-sized files with a one-line ``ValueError``;
:func:`read_dicom` reads the SIIM-ISIC 2020 DICOM files (JPEG Baseline, ``YBR_FULL_422``, metadata in
standard tags); :func:`read_tfrecords` reads the 2020 Kaggle TFRecord shards with the ``tfrecord``
package (no TensorFlow). :func:`write_atomically` is the package's one writer of output files. The
writers of these formats (for the synthetic samples and test files) live in ``tools/writers.py``.
"""
from __future__ import annotations

import contextlib
import io as _io
import os
import re
import struct
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image, ImageOps
from tqdm.std import tqdm  # text progress bars in every front end

from helpers.vocab import TFREC_DIAGNOSES, TFREC_SEX, TFREC_SITES

__all__ = ["write_atomically", "TFREC_SEX", "TFREC_SITES", "TFREC_DIAGNOSES", "read_image", "HDF5_SUFFIXES",
           "read_hdf5_image", "read_dicom", "dicom_summary", "read_tfrecords", "tfrecord_frame"]

#: Keys of one 2020 TFRecord and their ``tfrecord`` type names.
TFREC_KEYS: dict[str, str] = {
    "image": "byte", "image_name": "byte", "patient_id": "int", "sex": "int", "age_approx": "int",
    "anatom_site_general_challenge": "int", "diagnosis": "int", "target": "int",
}
#: Suffixes of HDF5 image stores: ``store.hdf5/<key>`` names one image inside one.
HDF5_SUFFIXES: tuple[str, ...] = (".hdf5", ".h5")


def _pil_rgb(img: Image.Image) -> Image.Image:
    """Convert an opened, loaded PIL image of any common mode to an RGB PIL image."""
    if img.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        # 16-bit greyscale: the full 0..65535 range to 0..255 (no contrast stretch); float as it is.
        arr = np.asarray(img).astype(np.float64)
        arr = arr if img.mode == "F" else arr / 257.0
        return Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), "L").convert("RGB")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (img.mode == "P" and "transparency" in img.info):
        # Transparent pixels are composited on white (what a viewer shows on a page).
        white = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(white, img.convert("RGBA"))
    return img if img.mode == "RGB" else img.convert("RGB")  # L, 1, P, CMYK (no ICC), YCbCr, LAB, HSV


@contextlib.contextmanager
def _no_bombs(where: object) -> Iterator[None]:
    """Turn Pillow's decompression-bomb warning and error into a ``ValueError`` naming ``where``."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            yield
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ValueError(f"{where}: image too large, possible decompression bomb ({exc})") from None


def image_header(source: Path | bytes | np.ndarray, where: object) -> tuple[str | None, bool]:
    """Read an image's header only: ``(Pillow mode, has transparency)``; refuse decompression bombs.

    Cheap (``PIL.Image.open`` is lazy); guards decoders with no pixel limit of their own
    (torchvision's). A file Pillow cannot identify gives ``(None, False)``: its decoder reports it.
    """
    handle = source if isinstance(source, (str, os.PathLike)) else _io.BytesIO(source)  # any buffer
    with _no_bombs(where):
        try:
            with Image.open(handle) as img:
                return img.mode, "transparency" in img.info
        except (OSError, SyntaxError, ValueError, EOFError, struct.error):
            return None, False


def _decode_rgb(source: Path | bytes, where: object, draft: int | None = None) -> Image.Image:
    """The one decoding road (files, HDF5 members, TFRecord images): RGB PIL image or ``ValueError``."""
    if isinstance(source, bytes) and not source:
        raise ValueError(f"{where}: empty image (0 bytes)")
    with _no_bombs(where):
        try:
            # We own the file object, so closing it leaves the loaded image usable (no copy).
            with open(source, "rb") if isinstance(source, Path) else _io.BytesIO(source) as fh:
                img = Image.open(fh)
                if draft is not None and img.format == "JPEG":
                    img.draft("RGB", (int(draft), int(draft)))
                img.load()
            ImageOps.exif_transpose(img, in_place=True)
            return _pil_rgb(img)
        except Image.UnidentifiedImageError:
            raise ValueError(f"{where}: not an image file Pillow can identify") from None
        except (OSError, SyntaxError, EOFError, struct.error, ValueError) as exc:
            raise ValueError(f"{where}: corrupt or truncated image ({exc})") from None


def check_file(path: Path) -> None:
    """Refuse, with a ``ValueError`` naming ``path``, a file that is missing, empty or a folder."""
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise ValueError(f"{path}: cannot read file ({exc.strerror or exc})") from None
    if size == 0:
        raise ValueError(f"{path}: empty file (0 bytes)")
    if not path.is_file():
        raise ValueError(f"{path}: not a file")


def load_rgb(path: Path, draft: int | None = None) -> Image.Image:
    """Open, check and decode an image file as an RGB PIL image (the core of :func:`read_image`)."""
    check_file(path)
    return _decode_rgb(path, path, draft)


def _as_array(img: Image.Image) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(img, dtype=np.uint8))


def hdf5_keys(path: Path) -> list[str]:
    """The names of the members of an HDF5 image store (ISIC 2024: the isic_ids)."""
    import h5py

    try:
        with h5py.File(path, "r") as store:
            return list(store.keys())
    except OSError as exc:
        raise ValueError(f"{path}: not a readable HDF5 file ({exc})") from None


def read_hdf5_image(path: os.PathLike | str, key: str, draft: int | None = None) -> np.ndarray:
    """Read image ``key`` of an HDF5 image store (ISIC 2024: JPEG bytes per isic_id) as RGB ``uint8``.

    Decoded as :func:`read_image` decodes a file; a non-HDF5 file, a missing key, a member without encoded
    bytes or corrupt bytes raise ``ValueError`` naming file and key.

    Not called in a chapter; used by `read_image`.
    """
    import h5py

    path = Path(path)
    try:
        with h5py.File(path, "r") as store:
            member = store.get(key)
            if not isinstance(member, h5py.Dataset):
                raise ValueError(f"{path}: no image {key!r} in this HDF5 file")
            data = member[()]
    except OSError as exc:
        raise ValueError(f"{path}: not a readable HDF5 file ({exc})") from None
    if isinstance(data, np.void) or (isinstance(data, np.ndarray) and data.dtype == np.uint8):
        data = data.tobytes()
    if not isinstance(data, bytes):
        raise ValueError(f"{path}: member {key!r} holds {type(data).__name__}, not encoded image bytes")
    return _as_array(_decode_rgb(data, f"{path} [{key}]", draft))


def read_image(path: os.PathLike | str, draft: int | None = None) -> np.ndarray:
    """Read a JPEG, PNG (or ``.dcm``, or ``store.hdf5/<key>``) image as RGB ``uint8`` (H, W, 3).

    Greyscale repeated, alpha composited on white, CMYK converted, 16-bit divided by 257, EXIF orientation
    applied. ``draft``: libjpeg decodes at 1/2, 1/4 or 1/8 scale while both sides stay >= ``draft``.
    Raises ``ValueError`` naming the file for empty, truncated, corrupt or unidentifiable files and for
    decompression bombs (more pixels than ``PIL.Image.MAX_IMAGE_PIXELS``).

    Introduced in chapter 2 (dermoscopy and the ABCD rule).
    """
    path = Path(path)
    if path.suffix.lower() == ".dcm":
        return read_dicom(path)[0]
    if path.parent.suffix.lower() in HDF5_SUFFIXES and path.parent.is_file():
        return read_hdf5_image(path.parent, path.name, draft)
    return _as_array(load_rgb(path, draft))


def write_atomically(path: Path, write: Any, durable: bool = False) -> None:
    """``write(tmp)`` to a temporary file beside ``path`` (same suffix), then rename it to ``path``.

    On any failure the temporary file is removed; an ``OSError`` becomes a ``ValueError`` naming ``path``.
    ``durable``: also ``fsync`` the file and the rename (checkpoints that must survive a power cut).

    Not called in a chapter; used by every writer of run files, checkpoints, histories, resized
    images and embeddings, and by the format writers of ``tools/``.
    """
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")  # keeps the suffix
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write(tmp)
        if durable:
            _fsync(tmp)
        os.replace(tmp, path)
        if durable:
            _fsync(path.parent)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise ValueError(f"{path}: cannot write ({exc.strerror or exc})") from exc
        raise


def _fsync(path: Path) -> None:
    """Flush a file's or a folder's data to disk (folders: where the platform allows it)."""
    try:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        if not path.is_dir():
            raise


def age_from_dicom(value: Any) -> float | None:
    """DICOM Age String ("045Y", "006M") -> years as float; a bare number is read as years."""
    text = str(value or "").strip().upper()
    if not text:
        return None
    if text[-1] in "YMWD" and text[:-1].isdigit():
        return int(text[:-1]) / {"Y": 1.0, "M": 12.0, "W": 52.0, "D": 365.0}[text[-1]]
    try:
        return float(text)
    except ValueError:
        return None


def _dicom_meta(ds: Any, path: Path) -> dict[str, Any]:
    """The image name (Image Comments, else Patient's Name when an ISIC id, else the file's stem) and tags."""
    sex = str(ds.get("PatientSex", "") or "").strip().upper()
    site = str(ds.get("BodyPartExamined", "") or "").strip().lower()
    texts = (str(ds.get(k, "") or "").strip() for k in ("ImageComments", "PatientName"))
    return {
        "image_name": next((s for s in texts if re.fullmatch(r"ISIC_\d+(?:_downsampled)?", s)), path.stem),
        "patient_id": str(ds.get("PatientID", "") or "").strip() or None,
        "sex": {"M": "male", "F": "female"}.get(sex),
        "age_approx": age_from_dicom(ds.get("PatientAge", "")),
        "anatom_site": site or None,
    }


#: (implicit VR, little endian) of a dataset read without file meta -> its transfer syntax.
_NATIVE_SYNTAX = {(True, True): "1.2.840.10008.1.2", (False, True): "1.2.840.10008.1.2.1",
                  (False, False): "1.2.840.10008.1.2.2"}


def _dcmread(path: Path, stop_before_pixels: bool = False) -> Any:
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                ds = pydicom.dcmread(path, stop_before_pixels=stop_before_pixels)
            except InvalidDicomError:
                # No preamble and 'DICM' marker: still DICOM if it starts with a group 0002 (file
                # meta) or 0008 (identification) element, in either byte order. Anything else is
                # refused before force=True could read garbage as elements.
                with open(path, "rb") as fh:
                    start = fh.read(2)
                if start not in (b"\x02\x00", b"\x08\x00", b"\x00\x02", b"\x00\x08"):
                    raise
                ds = pydicom.dcmread(path, force=True, stop_before_pixels=stop_before_pixels)
                if "TransferSyntaxUID" not in ds.file_meta:  # no meta: uncompressed, as read
                    ds.file_meta.TransferSyntaxUID = _NATIVE_SYNTAX[tuple(ds.original_encoding)]
    except InvalidDicomError:
        raise ValueError(f"{path}: not a DICOM file (no 'DICM' marker)") from None
    except FileNotFoundError:
        raise ValueError(f"{path}: no such file") from None
    except Exception as exc:  # pydicom raises many types on garbage input
        raise ValueError(f"{path}: unreadable DICOM file ({type(exc).__name__}: {exc})") from None
    for w in caught:  # pydicom only warns when the file ends inside an element
        if "End of file reached" in str(w.message):
            raise ValueError(f"{path}: truncated DICOM file ({w.message})")
        warnings.warn(w.message, w.category, stacklevel=3)
    return ds


def read_dicom(path: os.PathLike | str) -> tuple[np.ndarray, dict[str, Any]]:
    """Read a DICOM file: (RGB uint8 array (H, W, 3), metadata dict); of several frames, the first.

    Greyscale as a viewer shows it: modality LUT, then the first VOI window, mapped to 0..255; without a
    window, unsigned data of up to 8 bits keeps its range and other data is stretched min..max;
    MONOCHROME1 inverted. Files without preamble and ``DICM`` marker are read when they start like a data
    set. Metadata: ``image_name``, ``patient_id``, ``sex``, ``age_approx`` ("045Y" → 45.0),
    ``anatom_site``. Raises ``ValueError`` naming the file for non-DICOM or truncated bytes, missing pixel
    data or a transfer syntax no decoder supports.

    Introduced in chapter 4 (image files and the resize cache).
    """
    from pydicom.pixels import apply_modality_lut, apply_voi_lut, get_decoder, pixel_array

    path = Path(path)
    ds = _dcmread(path)
    if "PixelData" not in ds:
        raise ValueError(f"{path}: DICOM file has no pixel data")
    tsyntax = ds.file_meta.get("TransferSyntaxUID", None)
    try:
        ok = get_decoder(tsyntax).is_available
    except (NotImplementedError, ValueError, TypeError):
        ok = False
    if not ok:
        name = getattr(tsyntax, "name", "") or "unknown"
        raise ValueError(f"{path}: unsupported transfer syntax {tsyntax} ({name})")
    photometric = str(ds.get("PhotometricInterpretation", "")).upper()
    try:  # pydicom 3: as_rgb=True by default (YBR -> RGB); index=0 decodes one frame only
        bits = int(ds.get("BitsStored", 8) or 8)
        arr = pixel_array(ds, index=0 if int(ds.get("NumberOfFrames", 1) or 1) > 1 else None)
        if photometric.startswith("MONOCHROME"):
            stored = arr.dtype
            arr = apply_modality_lut(arr, ds)
            if "WindowCenter" in ds or "VOILUTSequence" in ds:  # its output range: probe it
                lo, hi = sorted(apply_voi_lut(np.array([-1e12, 1e12]), ds).astype(np.float64))
                arr = apply_voi_lut(arr, ds).astype(np.float64)
            elif stored == np.uint8 and arr.dtype == np.uint8:  # 1..8 bits, no rescale
                lo, hi = 0.0, 2.0**bits - 1
            else:
                lo, hi = float(np.min(arr)), float(np.max(arr))
            arr = np.clip(np.rint((arr - lo) * 255.0 / ((hi - lo) or 1.0)), 0, 255).astype(np.uint8)
            if photometric == "MONOCHROME1":
                arr = 255 - arr
    except Exception as exc:
        raise ValueError(f"{path}: cannot decode pixel data ({type(exc).__name__}: {exc})") from None
    if arr.dtype != np.uint8:
        arr = np.clip(np.rint(arr.astype(np.float64) * 255.0 / (2**bits - 1)), 0, 255).astype(np.uint8)
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    return np.ascontiguousarray(arr), _dicom_meta(ds, path)


def dicom_summary(folder: os.PathLike | str, progress: bool = True) -> pd.DataFrame:
    """One row per ``.dcm`` file under ``folder`` (recursively): tags and pixel format, headers only.

    Columns: ``file``, :func:`read_dicom`'s metadata, ``rows``, ``columns``, ``transfer_syntax`` (and
    ``_name``), ``photometric``. Raises ``ValueError`` naming a bad file.

    Introduced in chapter 4 (image files and the resize cache).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"{folder}: not a folder")
    rows = []
    for f in tqdm(sorted(folder.rglob("*.dcm")), desc="DICOM headers", unit="file", disable=not progress):
        ds = _dcmread(f, stop_before_pixels=True)
        ts = ds.file_meta.get("TransferSyntaxUID", None)
        rows.append({"file": f.relative_to(folder).as_posix(), **_dicom_meta(ds, f),
                     "rows": int(ds.get("Rows", 0) or 0), "columns": int(ds.get("Columns", 0) or 0),
                     "transfer_syntax": str(ts) if ts else None,
                     "transfer_syntax_name": getattr(ts, "name", None),
                     "photometric": str(ds.get("PhotometricInterpretation", "") or "") or None})
    cols = ["file", "image_name", "patient_id", "sex", "age_approx", "anatom_site", "rows",
            "columns", "transfer_syntax", "transfer_syntax_name", "photometric"]
    return pd.DataFrame(rows, columns=cols)


def tfrec_codes() -> dict[str, tuple[str, ...]]:
    """The TFRecord code tables (helpers.vocab's; index = code), keyed by feature name."""
    return {"sex": TFREC_SEX, "anatom_site_general_challenge": TFREC_SITES, "diagnosis": TFREC_DIAGNOSES}


def _tfrec_files(paths_or_folder: os.PathLike | str | Iterable[os.PathLike | str]) -> list[Path]:
    if isinstance(paths_or_folder, (str, os.PathLike)):
        p = Path(paths_or_folder)
        return sorted(p.glob("*.tfrec")) if p.is_dir() else [p]
    return [Path(p) for p in paths_or_folder]


#: Features that hold an encoded image: the 2020 Kaggle shards' and the object-detection convention's.
_TFREC_IMAGE_KEYS = ("image", "image/encoded")


def _tfrec_record(raw: Mapping[str, Any], where: str, decode_images: bool) -> dict[str, Any]:
    """One parsed record: images decoded, other bytes as text, single values unwrapped, 2020 keys first."""
    rec: dict[str, Any] = {}
    for key, value in raw.items():
        if not isinstance(value, bytes):
            arr = np.asarray(value)
            value = arr.reshape(-1)[0].item() if arr.size == 1 else arr
        elif key in _TFREC_IMAGE_KEYS:
            value = _as_array(_decode_rgb(value, where)) if decode_images else value
        else:
            try:
                value = value.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise ValueError(f"{where}: feature {key!r} is not UTF-8 text (byte {exc.start}); "
                                 f"images are read from {' or '.join(_TFREC_IMAGE_KEYS)}") from None
        rec[key] = value
    order = [k for k in TFREC_KEYS if k in rec] + sorted(k for k in rec if k not in TFREC_KEYS)
    return {k: rec[k] for k in order}


def read_tfrecords(
    paths_or_folder: os.PathLike | str | Iterable[os.PathLike | str],
    decode_images: bool = True,
    description: Sequence[str] | None = None,
) -> Iterator[dict[str, Any]]:
    """Iterate over the records of TFRecord shards (a folder's ``*.tfrec``, or given files).

    One dict per record: the image (``image`` or ``image/encoded``) as an RGB uint8 array, checked as
    :func:`read_image` checks (raw bytes without ``decode_images``), other bytes as str, integer
    features as int (codes) or arrays; ``description`` limits the keys. An unreadable record raises
    ``ValueError`` naming the shard and the record's index.

    Introduced in chapter 4 (image files and the resize cache).
    """
    from google.protobuf.message import DecodeError
    from tfrecord.reader import tfrecord_loader

    for path in _tfrec_files(paths_or_folder):
        if not path.is_file():
            raise ValueError(f"{path}: no such TFRecord file")
        n = 0  # the record being read
        try:
            for raw in tfrecord_loader(str(path), None, list(description) if description else None):
                yield _tfrec_record(raw, f"{path} (record {n})", decode_images)
                n += 1
        except (RuntimeError, DecodeError, OSError, struct.error) as exc:
            raise ValueError(f"{path} (record {n}): corrupt TFRecord file ({exc})") from None
        except (KeyError, TypeError) as exc:
            raise ValueError(f"{path} (record {n}): unexpected TFRecord content ({exc})") from None


def _code(value: Any) -> int | None:
    """A TFRecord integer code, ``None`` where missing (-1)."""
    return None if value is None or int(value) < 0 else int(value)


def tfrecord_frame(
    paths_or_folder: os.PathLike | str | Iterable[os.PathLike | str], progress: bool = False
) -> pd.DataFrame:
    """The features of TFRecord shards as a table (the layout of the Kaggle ``train.csv``), without images.

    Codes mapped back to names (``TFREC_*``; -1 → missing), ``patient_id`` as ``IP_`` + 7 digits,
    ``target`` nullable Int64. A record without ``image_name`` and ``patient_id`` (not an ISIC
    record: an object-detection shard, say) raises ``ValueError`` naming the shard and the fields.

    Introduced in chapter 4 (image files and the resize cache).
    """
    codes = tfrec_codes()
    rows = []
    files = _tfrec_files(paths_or_folder)
    for path in tqdm(files, desc="TFRecord shards", unit="file", disable=not progress):
        for n, rec in enumerate(read_tfrecords([path], decode_images=False)):
            missing = [k for k in ("image_name", "patient_id") if k not in rec]
            if missing:
                raise ValueError(f"{path} (record {n}): not an ISIC record, no {', '.join(missing)} "
                                 f"(it has {', '.join(sorted(rec)[:6])})")
            pid, age, tgt = (_code(rec.get(k, -1)) for k in ("patient_id", "age_approx", "target"))
            row: dict[str, Any] = {"file": path.name, "image_name": rec.get("image_name"),
                                   "patient_id": None if pid is None else f"IP_{pid:07d}"}
            for key, names in codes.items():
                code = _code(rec.get(key, -1))
                if code is not None and code >= len(names):
                    raise ValueError(f"{path}: {key} code {rec.get(key)} outside 0..{len(names) - 1} "
                                     f"({rec.get('image_name')})")
                row[key] = None if code is None else names[code]
            row["age_approx"] = np.nan if age is None else float(rec["age_approx"])
            row["target"] = pd.NA if tgt is None else tgt
            rows.append(row)
    cols = ["file", "image_name", "patient_id", "sex", "age_approx", "anatom_site_general_challenge",
            "diagnosis", "target"]
    frame = pd.DataFrame(rows, columns=cols)
    return frame.astype({"age_approx": "float64", "target": "Int64"})
