"""Writers of the SIIM-ISIC 2020 containers: DICOM files and TFRecord shards.

The book reads these formats (``helpers.io.read_dicom``, ``helpers.io.read_tfrecords``); it
never writes them. These writers make the synthetic ``siim-isic-2020`` sample and the
test files, so they live here, outside the package the chapters import.
"""
from __future__ import annotations

import io as _io
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from helpers.io import TFREC_KEYS, tfrec_codes, write_atomically

_SEX_TO_DICOM = {"male": "M", "female": "F", "m": "M", "f": "F"}


def _is_missing(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    if isinstance(value, str) and value.strip() == "":
        return True
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def _dicom_age(value: Any) -> str:
    if _is_missing(value):
        return ""
    if isinstance(value, str) and value.strip()[-1:].upper() in ("Y", "M", "W", "D"):
        return value.strip().upper()
    years = int(round(float(value)))
    if not 0 <= years <= 999:
        raise ValueError(f"age {value!r} cannot be written as a DICOM age string")
    return f"{years:03d}Y"


def write_dicom(path: os.PathLike | str, rgb: np.ndarray, meta: Mapping[str, Any], quality: int = 90) -> None:
    """Write an RGB image as a SIIM-ISIC-2020-style DICOM file.

    Pixel data: one JPEG Baseline frame (transfer syntax 1.2.840.10008.1.2.4.50)
    encoded by Pillow as 4:2:2 subsampled YCbCr (``subsampling=1``), so the
    PhotometricInterpretation ``YBR_FULL_422`` is truthful; encapsulated with
    ``pydicom.encaps.encapsulate``. SOP class: Secondary Capture Image Storage.

    ``meta`` uses the column names of the Kaggle ``train.csv``: ``image_name``,
    ``patient_id``, ``sex`` (male/female/blank), ``age_approx`` (45.0),
    ``anatom_site_general_challenge`` (or ``anatom_site``); missing values may be
    None, NaN or "". They become PatientID, PatientSex (M/F/""), PatientAge
    ("045Y"), BodyPartExamined (upper-case site) and ImageComments (the image
    name). Keys that are DICOM keywords (e.g. ``"StudyDescription"``) are set
    as given. UIDs are derived from the image name, so reruns give identical files.
    The file is written under a temporary name and renamed when complete; a
    folder that cannot be written (full, read-only) raises ``ValueError``
    naming ``path``.

    Used by ``tools.samples`` and the tests.
    """
    from pydicom import config as pydicom_config
    from pydicom.dataelem import DataElement
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.datadict import keyword_dict
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEGBaseline8Bit, SecondaryCaptureImageStorage, generate_uid

    path = Path(path)
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"{path}: write_dicom needs an RGB uint8 array (H, W, 3), got {rgb.dtype} {rgb.shape}")
    buf = _io.BytesIO()
    Image.fromarray(rgb, "RGB").save(buf, format="JPEG", quality=int(quality), subsampling=1)

    name = "" if _is_missing(meta.get("image_name")) else str(meta["image_name"])
    seed = [name or path.stem]
    site = meta.get("anatom_site_general_challenge", meta.get("anatom_site"))
    sex = meta.get("sex")

    file_meta = FileMetaDataset()
    file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    sop_uid = generate_uid(entropy_srcs=seed + ["sop"])
    file_meta.MediaStorageSOPInstanceUID = sop_uid

    ds = Dataset()
    ds.file_meta = file_meta
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = sop_uid
    ds.StudyInstanceUID = generate_uid(entropy_srcs=seed + ["study"])
    ds.SeriesInstanceUID = generate_uid(entropy_srcs=seed + ["series"])
    ds.Modality = "XC"  # external-camera photography
    ds.ConversionType = "WSD"
    ds.PatientName = ""
    ds.PatientID = "" if _is_missing(meta.get("patient_id")) else str(meta["patient_id"])
    ds.PatientSex = "" if _is_missing(sex) else _SEX_TO_DICOM.get(str(sex).strip().lower(), "O")
    ds.PatientAge = _dicom_age(meta.get("age_approx"))
    # "HEAD/NECK": '/' is outside the CS character set, but it is what the layout (and a
    # site vocabulary with slashes) needs, so this one element skips pydicom's validation.
    body_part = "" if _is_missing(site) else str(site).strip().upper()
    ds[0x00180015] = DataElement(0x00180015, "CS", body_part, validation_mode=pydicom_config.IGNORE)
    ds.ImageComments = name
    ds.StudyID = ""
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.Rows, ds.Columns = int(rgb.shape[0]), int(rgb.shape[1])
    ds.SamplesPerPixel = 3
    ds.PhotometricInterpretation = "YBR_FULL_422"
    ds.PlanarConfiguration = 0
    ds.BitsAllocated = 8
    ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.LossyImageCompression = "01"
    ds.LossyImageCompressionMethod = "ISO_10918_1"
    ds.LossyImageCompressionRatio = f"{rgb.nbytes / max(1, len(buf.getvalue())):.2f}"[:16]
    for key, value in meta.items():
        if key in keyword_dict and not _is_missing(value):
            setattr(ds, key, value)
    ds.PixelData = encapsulate([buf.getvalue()])
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    write_atomically(path, lambda tmp: ds.save_as(tmp, enforce_file_format=True))


def _encode_int(key: str, value: Any, where: str) -> int:
    """Encode one TFRecord integer field; names are looked up in the code tables."""
    if _is_missing(value):
        return -1
    if key == "patient_id" and isinstance(value, str):
        digits = value.strip().removeprefix("IP_")
        if not digits.isdigit():
            raise ValueError(f"{where}: patient_id {value!r} is not IP_ + digits")
        return int(digits)
    if isinstance(value, str):
        if key == "target":
            value = {"benign": 0, "malignant": 1}.get(value.strip().lower(), value)
        else:
            names = tfrec_codes().get(key)
            if names is not None:
                if value not in names:
                    raise ValueError(f"{where}: {key} {value!r} not in {list(names)}")
                return names.index(value)
    try:
        return int(round(float(value)))
    except (TypeError, ValueError):
        raise ValueError(f"{where}: {key} {value!r} is not an integer code") from None


def _jpeg_bytes(image: Any, where: str) -> bytes:
    if isinstance(image, (bytes, bytearray, memoryview)):
        return bytes(image)
    if isinstance(image, (str, os.PathLike)):
        return Path(image).read_bytes()
    arr = np.asarray(image)
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"{where}: image must be JPEG bytes, a path or an RGB uint8 array")
    buf = _io.BytesIO()
    Image.fromarray(arr, "RGB").save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def write_tfrecords(
    records: Sequence[Mapping[str, Any]], out_dir: os.PathLike | str, prefix: str, per_file: int
) -> list[Path]:
    """Write records as TFRecord shards ``{prefix}{NN:02d}-{count}.tfrec`` (e.g. ``train00-120.tfrec``).

    Each record is a mapping with ``image`` (JPEG bytes, a JPEG path, or an RGB
    uint8 array, which is JPEG-encoded at quality 95), ``image_name`` (str) and
    ``patient_id``, ``sex``, ``age_approx``, ``anatom_site_general_challenge``,
    ``diagnosis``, ``target``. Those six are written as int64 with the 2020
    encodings (``TFREC_SEX``, ``TFREC_SITES``, ``TFREC_DIAGNOSES``; patient_id
    ``IP_0001234`` → 1234); names are encoded for you, ints are kept, missing
    keys or values (test records have no diagnosis/target) become -1.
    Written with ``tfrecord.TFRecordWriter``, each shard under a temporary
    name renamed when complete (a shard's name promises its record count); a
    folder that cannot be written raises ``ValueError`` naming the shard.
    Returns the shard paths.

    Used by ``tools.samples`` and the tests.
    """
    from tfrecord import TFRecordWriter

    if per_file < 1:
        raise ValueError(f"per_file must be >= 1, got {per_file}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    records = list(records)
    paths: list[Path] = []
    for shard, start in enumerate(range(0, len(records), per_file)):
        chunk = records[start : start + per_file]
        path = out_dir / f"{prefix}{shard:02d}-{len(chunk)}.tfrec"

        def write(tmp: Path, path: Path = path, chunk: list = chunk) -> None:
            writer = TFRecordWriter(str(tmp))
            try:
                for i, rec in enumerate(chunk):
                    where = f"{path} (record {i})"
                    if "image" not in rec or "image_name" not in rec:
                        raise ValueError(f"{where}: a record needs 'image' and 'image_name'")
                    datum: dict[str, tuple[Any, str]] = {
                        "image": (_jpeg_bytes(rec["image"], where), "byte"),
                        "image_name": (str(rec["image_name"]).encode("utf-8"), "byte"),
                    }
                    for key, kind in TFREC_KEYS.items():
                        if kind == "int":
                            datum[key] = (_encode_int(key, rec.get(key), where), "int")
                    writer.write(datum)
            finally:
                writer.close()

        write_atomically(path, write)   # a shard's name promises its record count
        paths.append(path)
    return paths


def write_raw_tfrecord(path: os.PathLike | str, records: Sequence[Mapping[str, tuple[Any, str]]]) -> Path:
    """Write records of any features (``{"image/encoded": (bytes, "byte"), ...}``) to one shard.

    For the tests: TFRecord files of other tasks (object detection), which the book's readers
    must refuse. Used by the tests.
    """
    from tfrecord import TFRecordWriter

    writer = TFRecordWriter(str(path))
    try:
        for rec in records:
            writer.write(dict(rec))
    finally:
        writer.close()
    return Path(path)
