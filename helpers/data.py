"""The teaching road from image files to a training batch, and what every dermoscopy model needs.

:class:`LesionDataset` and a ``DataLoader`` read each image (:func:`read_image_tensor`) and augment it
with torchvision ``transforms.v2`` (:func:`train_transforms`; :class:`RandomHair` and
:class:`RandomVignette` are dermoscopy's own); the throughput road is :mod:`helpers.fastpath`. Then
targets and metadata as numbers, the class imbalance (sampler, ``pos_weight``, :class:`FocalLoss`) and
folds that never put one patient on both sides. A bad image never stops an epoch: the dataset returns
``None`` for it, lists it in ``dataset.skipped``, and :func:`collate_skip_bad` drops it.
"""
from __future__ import annotations

import contextlib
import math
import os
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset, WeightedRandomSampler
from torchvision import tv_tensors
from torchvision.transforms import v2

from helpers.io import check_file, image_header, read_image
from helpers.vocab import CLASSES_2019, IMAGENET_MEAN, IMAGENET_STD
from helpers.vocab import LABELS as LABELS_9, SEXES as META_SEXES, SITES as META_SITES

__all__ = [
    "CLASSES_2019", "LABELS_9", "IMAGENET_MEAN", "IMAGENET_STD", "META_COLUMNS", "META_SEXES", "META_SITES",
    "SkippedImageWarning", "read_image_tensor", "shades_of_gray", "ShadesOfGray", "RandomHair",
    "RandomVignette", "RandomRot90", "train_transforms", "eval_transforms", "to_display", "encode_targets",
    "encode_meta", "LesionDataset", "collate_skip_bad", "weighted_sampler", "pos_weight", "FocalLoss",
    "patient_folds", "holdout_split", "label_folds",
]

#: Tidy-frame columns :func:`encode_meta` knows how to encode (sexes and sites: helpers.vocab's).
META_COLUMNS: tuple[str, ...] = ("age_approx", "sex", "anatom_site")
#: Ages are divided by this, so that they lie roughly in 0..1.
AGE_SCALE = 90.0


class SkippedImageWarning(UserWarning):
    """An image could not be read and was left out of the batch.

    Not called in a chapter; used by `LesionDataset`.
    """


@contextlib.contextmanager
def quiet_tv_io() -> Iterator[None]:
    """Silence torchvision 0.29's deprecation notice of ``torchvision.io`` decoding (TorchCodec).

    Not called in a chapter; used by `read_image_tensor` and `decode_jpeg_batch`.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning,
                                message="The image decoding and encoding capabilities of TorchVision")
        yield


def read_image_tensor(path: os.PathLike | str) -> torch.Tensor:
    """Read an image file as an RGB ``uint8`` tensor (3, H, W): torchvision for JPEG/8-bit PNG, else Pillow.

    Both roads give the same pixels (:func:`helpers.io.read_image` handles DICOM, 16-bit, alpha, CMYK).
    Raises ``ValueError`` naming the file when it is missing, empty, truncated, not an image, or a
    decompression bomb (checked before torchvision allocates anything).

    Introduced in chapter 7 (the data pipeline).
    """
    path = Path(path)
    if path.suffix.lower() in (".jpg", ".jpeg", ".png"):
        check_file(path)
        mode, transparent = image_header(path, path)
        if mode in ("RGB", "L", "P") and not transparent:  # alpha, CMYK, 16 bits: Pillow below
            from torchvision.io import ImageReadMode, decode_image, read_file

            try:
                with quiet_tv_io():
                    img = decode_image(read_file(str(path)), mode=ImageReadMode.RGB,
                                       apply_exif_orientation=True)
                if img.dtype == torch.uint8 and img.ndim == 3 and img.shape[0] == 3:
                    return img
            except (RuntimeError, OSError):
                pass  # Pillow decides: it reads what libjpeg refuses or raises a ValueError naming the file
    return torch.tensor(read_image(path)).permute(2, 0, 1).contiguous()


def shades_of_gray(img: torch.Tensor | np.ndarray, p: float = 6) -> torch.Tensor | np.ndarray:
    """Shades-of-gray colour constancy (Finlayson & Trezzi 2004): remove a colour cast.

    Each channel is divided by its Minkowski ``p``-norm ``mean(I_c ** p) ** (1/p)``, rescaled so that a
    grey illuminant changes nothing (``p=1``: grey world, ``inf``: max-RGB, 6: best on dermoscopy).
    Tensor (..., 3, H, W) (``uint8`` or float 0..1) or (H, W, 3) array in; same type and dtype out.

    Introduced in chapter 7 (the data pipeline).
    """
    if isinstance(img, np.ndarray):
        if img.ndim != 3 or img.shape[-1] != 3:
            raise ValueError(f"shades_of_gray: expected an (H, W, 3) array, got shape {img.shape}")
        out = shades_of_gray(torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1), p)
        return out.permute(1, 2, 0).numpy()
    if img.ndim < 3 or img.shape[-3] != 3:
        raise ValueError(f"shades_of_gray: expected a (..., 3, H, W) tensor, got shape {tuple(img.shape)}")
    is_int = not img.is_floating_point()
    x = img.to(torch.float32) / 255.0 if is_int else img.to(torch.float32)
    flat = x.flatten(-2).clamp_min(0)
    illum = flat.amax(-1) if math.isinf(p) else flat.pow(p).mean(-1).pow(1.0 / p)
    illum = illum / illum.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    gain = 1.0 / (illum * math.sqrt(3.0)).clamp_min(1e-6)
    out = (x * gain[..., None, None]).clamp(0.0, 1.0)
    return (out * 255.0).round_().to(img.dtype) if is_int else out.to(img.dtype)


# Custom v2 transforms
def _is_image(inpt: Any) -> bool:
    """True for inputs a photometric transform should change (not masks, boxes, labels)."""
    if isinstance(inpt, (tv_tensors.Mask, tv_tensors.BoundingBoxes)):
        return False
    return isinstance(inpt, torch.Tensor) and inpt.ndim >= 3 and inpt.shape[-3] in (1, 3)


def _like(out: torch.Tensor, inpt: Any) -> Any:
    """``out`` wrapped as the tv_tensor ``inpt`` is, if it is one."""
    return tv_tensors.wrap(out, like=inpt) if isinstance(inpt, tv_tensors.TVTensor) else out


def _rand(lo: float, hi: float) -> float:
    return float(torch.empty(()).uniform_(lo, hi))


def _blend(img: torch.Tensor, alpha: torch.Tensor, colour: torch.Tensor) -> torch.Tensor:
    """``img * (1 - alpha) + colour * alpha`` in float (``colour`` in 0..255), returned in ``img``'s dtype."""
    is_int = not img.is_floating_point()
    colour = colour.to(img.device, torch.float32).view(-1, 1, 1)
    out = img.to(torch.float32) * (1 - alpha) + (colour if is_int else colour / 255.0) * alpha
    return out.round_().clamp_(0, 255).to(img.dtype) if is_int else out.to(img.dtype)


class ShadesOfGray(v2.Transform):
    """:func:`shades_of_gray` as a ``transforms.v2`` transform.

    Not called in a chapter; used by `train_transforms`, `eval_transforms`.
    """

    def __init__(self, p: float = 6) -> None:
        super().__init__()
        self.p = p

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if not _is_image(inpt) or inpt.shape[-3] != 3:
            return inpt
        return _like(shades_of_gray(inpt.as_subclass(torch.Tensor), self.p), inpt)


class RandomHair(v2.Transform):
    """Draw a few thin, dark, curved hairs (quadratic Bézier curves) across the image.

    ``p``: probability; ``n_hairs``: (min, max) per image; ``width``: pixels at 256 px (scaled).

    Introduced in chapter 7 (the data pipeline).
    """

    def __init__(self, p: float = 0.5, n_hairs: tuple[int, int] = (1, 6),
                 width: tuple[float, float] = (1.0, 3.0)) -> None:
        super().__init__()
        self.p, self.n_hairs, self.width = p, n_hairs, width

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        apply = bool(torch.rand(()) < self.p)
        n = int(torch.randint(self.n_hairs[0], self.n_hairs[1] + 1, ())) if apply else 0
        # Control points in relative coordinates: start and end on (or beyond) the image, a bend in between.
        ends = torch.rand(n, 2, 2) * 1.2 - 0.1
        chord = ends[:, 1] - ends[:, 0]
        normal = torch.stack([-chord[:, 1], chord[:, 0]], 1)
        bend = (torch.rand(n, 1) - 0.5) * 0.6  # a gentle curve: the bend is up to 30 % of the length
        mid = (ends.mean(1) + bend * normal)[:, None]
        widths = torch.empty(n).uniform_(*self.width)
        colours = torch.stack([torch.empty(n).uniform_(0, 60), torch.empty(n).uniform_(0, 45),
                               torch.empty(n).uniform_(0, 35)], 1)
        return {"ctrl": torch.cat([ends[:, :1], mid, ends[:, 1:]], 1), "widths": widths, "colours": colours}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if not _is_image(inpt) or len(params["ctrl"]) == 0:
            return inpt
        h, w = inpt.shape[-2:]
        dev = inpt.device
        out = inpt.as_subclass(torch.Tensor)
        scale = torch.tensor([w - 1.0, h - 1.0])
        for ctrl, width, colour in zip(params["ctrl"], params["widths"], params["colours"]):
            c = ctrl * scale
            # Sample the curve densely (about 2 points per pixel of length) and mark the pixels it crosses.
            length = float((c[1] - c[0]).norm() + (c[2] - c[1]).norm())
            t = torch.linspace(0, 1, max(2, int(2 * length) + 2))[:, None]
            pts = ((1 - t) ** 2 * c[0] + 2 * (1 - t) * t * c[1] + t ** 2 * c[2]).round().long()
            inside = (pts[:, 0] >= 0) & (pts[:, 0] < w) & (pts[:, 1] >= 0) & (pts[:, 1] < h)
            pts = pts[inside].to(dev)
            if len(pts) == 0:
                continue
            mask = torch.zeros(1, 1, h, w, device=dev)
            mask[0, 0, pts[:, 1], pts[:, 0]] = 1.0
            # Thicken to the hair's width (max filter), then soften the edge (3x3 mean): anti-aliasing.
            k = max(1, int(round(float(width) * max(h, w) / 256.0)))
            if k > 1:
                mask = F.max_pool2d(mask, k, stride=1, padding=k // 2)[..., :h, :w]
            alpha = torch.maximum(mask * 0.85, F.avg_pool2d(mask, 3, stride=1, padding=1))[0, 0]
            out = _blend(out, alpha, colour if out.shape[-3] == 3 else colour.mean().view(1))
        return _like(out, inpt)


class RandomVignette(v2.Transform):
    """Darken everything outside a circle: the round field of view of a contact dermoscope.

    ``radius``: a fraction of half the shorter side; ``shift``: centre offset; ``softness``: edge width
    as a fraction of the radius. Added to every class, it takes away the black-frame shortcut.

    Introduced in chapter 7 (the data pipeline).
    """

    def __init__(self, p: float = 0.5, radius: tuple[float, float] = (0.85, 1.25),
                 shift: float = 0.05, softness: float = 0.08,
                 darkness: tuple[float, float] = (0.0, 25.0)) -> None:
        super().__init__()
        self.p, self.radius, self.shift, self.softness, self.darkness = p, radius, shift, softness, darkness

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        return {"apply": bool(torch.rand(()) < self.p), "radius": _rand(*self.radius),
                "cx": _rand(-self.shift, self.shift), "cy": _rand(-self.shift, self.shift),
                "level": _rand(*self.darkness)}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if not _is_image(inpt) or not params["apply"]:
            return inpt
        h, w = inpt.shape[-2:]
        dev = inpt.device
        half = min(h, w) / 2.0
        yy = (torch.arange(h, device=dev, dtype=torch.float32)[:, None] + 0.5 - h / 2) / half - params["cy"]
        xx = (torch.arange(w, device=dev, dtype=torch.float32)[None, :] + 0.5 - w / 2) / half - params["cx"]
        edge = params["radius"]
        r = torch.sqrt(xx ** 2 + yy ** 2)
        alpha = ((r - edge) / (self.softness * edge) + 0.5).clamp(0, 1)  # 0 inside, 1 outside
        colour = torch.full((inpt.shape[-3],), params["level"])
        return _like(_blend(inpt.as_subclass(torch.Tensor), alpha, colour), inpt)


class RandomRot90(v2.Transform):
    """Rotate by a random multiple of 90 degrees (exact: no interpolation, no black corners).

    Introduced in chapter 7 (the data pipeline).
    """

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        return {"k": int(torch.randint(0, 4, ()))}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if not isinstance(inpt, torch.Tensor) or isinstance(inpt, tv_tensors.BoundingBoxes) or inpt.ndim < 2:
            return inpt
        return _like(torch.rot90(inpt.as_subclass(torch.Tensor), params["k"], dims=(-2, -1)), inpt)


def _pipeline(steps: list[v2.Transform], shades: bool) -> v2.Compose:
    """ToImage, optional colour constancy, ``steps``, then float32 and ImageNet normalisation."""
    return v2.Compose([v2.ToImage(), *([ShadesOfGray()] if shades else []), *steps,
                       v2.ToDtype(torch.float32, scale=True), v2.Normalize(IMAGENET_MEAN, IMAGENET_STD),
                       v2.ToPureTensor()])


def train_transforms(size: int, *, hair: bool = True, vignette: bool = True,
                     shades_of_gray: bool = False, rotation: str = "any",
                     scale: tuple[float, float] = (0.6, 1.0)) -> v2.Compose:
    """The training augmentation: random crop, flips, rotation, colour jitter, hair, vignette.

    ``uint8`` tensor (3, H, W), PIL image or array in; float32 (3, size, size), ImageNet-normalised, out.
    ``rotation``: ``"any"`` (±180°) or ``"rot90"``; :class:`ShadesOfGray` (optional) comes first.

    Introduced in chapter 7 (the data pipeline).
    """
    if rotation not in ("any", "rot90"):
        raise ValueError(f"rotation must be 'any' or 'rot90', got {rotation!r}")
    steps = [
        v2.RandomResizedCrop(size, scale=scale, ratio=(3 / 4, 4 / 3), antialias=True),
        v2.RandomHorizontalFlip(),
        v2.RandomVerticalFlip(),
        v2.RandomRotation(180, interpolation=v2.InterpolationMode.BILINEAR) if rotation == "any"
        else RandomRot90(),
        v2.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2, hue=0.02),
        *([RandomHair(p=0.3)] if hair else []),
        *([RandomVignette(p=0.3)] if vignette else []),
    ]
    return _pipeline(steps, shades_of_gray)


def eval_transforms(size: int, shades_of_gray: bool = False) -> v2.Compose:
    """The evaluation transform: shorter side to ``size``, centre crop, normalise (deterministic).

    The tensor cache's geometry (bilinear anti-aliased here, Lanczos there); float32 (3, size, size) out.

    Introduced in chapter 7 (the data pipeline).
    """
    return _pipeline([v2.Resize(size, antialias=True), v2.CenterCrop(size)], shades_of_gray)


def to_display(image: torch.Tensor) -> np.ndarray:
    """Undo the ImageNet normalisation of a (3, H, W) float tensor: an (H, W, 3) ``uint8`` array to show.

    Introduced in chapter 7 (the data pipeline).
    """
    if image.ndim != 3 or image.shape[0] != 3:
        raise ValueError(f"to_display: expected a (3, H, W) tensor, got shape {tuple(image.shape)}")
    x = image.detach().float().cpu() * torch.tensor(IMAGENET_STD).view(3, 1, 1) \
        + torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    return (x.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()


def _first_row(mask: pd.Series | np.ndarray) -> int:
    return int(np.flatnonzero(np.asarray(mask))[0])


def encode_targets(frame: pd.DataFrame, target: str = "target") -> np.ndarray:
    """The training target of each row as a NumPy array.

    ``"target"``: float32 0/1, NaN where unknown; ``"label"``: int64 index in :data:`CLASSES_2019`,
    ``UNK``/missing -1 (``ignore_index``); ``"label9"``: index in :data:`LABELS_9`, missing -1.

    Introduced in chapter 7 (the data pipeline).
    """
    if target not in ("target", "label", "label9"):
        raise ValueError(f"target must be 'target', 'label' or 'label9', got {target!r}")
    column = "target" if target == "target" else "label"
    if column not in frame:
        raise ValueError(f"frame has no {column!r} column (needed for target={target!r})")
    if target == "target":
        values = pd.to_numeric(frame["target"].astype("Float64"), errors="coerce")
        bad = values.notna() & ~values.isin([0, 1])
        if bad.any():
            raise ValueError(f"row {_first_row(bad)}, column 'target': expected 0 or 1, "
                             f"got {values[bad].iloc[0]}")
        return values.astype("float64").to_numpy(dtype=np.float32, na_value=np.nan)
    labels = frame["label"].astype("string")
    unknown = labels.notna() & ~labels.isin(LABELS_9)
    if unknown.any():
        raise ValueError(f"row {_first_row(unknown)}, column 'label': unknown class "
                         f"{labels[unknown].iloc[0]!r} (expected one of {', '.join(LABELS_9)})")
    codes = {c: i for i, c in enumerate(CLASSES_2019 if target == "label" else LABELS_9)}
    return labels.map(codes).astype("Float64").fillna(-1).to_numpy(dtype=np.int64)


def encode_meta(frame: pd.DataFrame, columns: Sequence[str] = META_COLUMNS,
                age_mean: float | None = None) -> tuple[np.ndarray, list[str]]:
    """Encode age, sex and anatomical site as a float32 matrix: ``(matrix, names)``.

    ``age`` = age / 90, missing ages set to ``age_mean`` (default: this frame's; pass the training
    frame's) and flagged in ``age_missing``; sex and site one-hot plus a ``_missing`` column. The column
    order is fixed, so two frames encode alike.

    Introduced in chapter 10 (metadata and the multi-class task).
    """
    parts: list[np.ndarray] = []
    names: list[str] = []
    for column in columns:
        if column not in META_COLUMNS:
            raise ValueError(f"encode_meta: unknown column {column!r} (known: {', '.join(META_COLUMNS)})")
        if column not in frame:
            raise ValueError(f"encode_meta: frame has no {column!r} column")
        if column == "age_approx":
            age = pd.to_numeric(frame[column], errors="coerce").astype("float64").to_numpy()
            missing = np.isnan(age)
            fill = age_mean if age_mean is not None else (np.nanmean(age) if (~missing).any() else 50.0)
            parts += [np.where(missing, fill, age) / AGE_SCALE, missing.astype(np.float64)]
            names += ["age", "age_missing"]
            continue
        vocab, prefix = (META_SEXES, "sex") if column == "sex" else (META_SITES, "site")
        values = frame[column].astype("string").str.strip().str.lower()
        for v in vocab:
            parts.append((values == v).fillna(False).to_numpy(dtype=np.float64))
            slug = "".join(ch if ch.isalnum() else "_" for ch in v)
            names.append(f"{prefix}_{slug}")
        parts.append((~values.isin(vocab).fillna(False)).to_numpy(dtype=np.float64))
        names.append(f"{prefix}_missing")
    matrix = np.stack(parts, 1).astype(np.float32) if parts else np.zeros((len(frame), 0), np.float32)
    return matrix, names


class LesionDataset(Dataset):
    """A map-style dataset over a tidy frame: items ``{"image", "target", "meta", "index"}``.

    ``target``: see :func:`encode_targets` (``None``: unlabelled); ``meta``: :data:`META_COLUMNS` (encoded
    by :func:`encode_meta`) or numeric columns. An unreadable image gives ``None``, is listed in
    :attr:`skipped` and warned about once, also from ``DataLoader`` workers. With ``root``, paths are
    taken relative to it and one that resolves outside it raises ``ValueError`` naming the row.

    Introduced in chapter 7 (the data pipeline).
    """

    def __init__(self, frame: pd.DataFrame, transform: Any = None, target: str | None = "target",
                 meta: Sequence[str] | None = None, age_mean: float | None = None,
                 root: os.PathLike | str | None = None) -> None:
        if "path" not in frame:
            raise ValueError("LesionDataset: frame has no 'path' column")
        self.frame = frame.reset_index(drop=True)
        self.paths: list[str] = [("" if pd.isna(p) else str(p)) for p in self.frame["path"]]
        if root is not None:
            self.paths = _paths_inside(self.paths, Path(root))
        self.transform = transform
        self.target_name = target
        self.targets = encode_targets(self.frame, target) if target is not None else None
        self.meta_names: list[str] = []
        self.meta: np.ndarray | None = None
        if meta:
            known = [c for c in meta if c in META_COLUMNS]
            blocks = []
            if known:
                m, self.meta_names = encode_meta(self.frame, known, age_mean=age_mean)
                blocks.append(m)
            for c in (c for c in meta if c not in META_COLUMNS):
                if c not in self.frame:
                    raise ValueError(f"LesionDataset: frame has no meta column {c!r}")
                values = pd.to_numeric(self.frame[c], errors="coerce").astype("float64")
                if values.isna().any():
                    raise ValueError(f"row {_first_row(values.isna())}, column {c!r}: "
                                     "missing or non-numeric metadata")
                blocks.append(values.to_numpy(np.float32)[:, None])
                self.meta_names.append(c)
            self.meta = np.concatenate(blocks, 1).astype(np.float32)
        # One flag per row in shared memory, so that DataLoader workers can report bad files.
        self._bad = torch.zeros(len(self.frame), dtype=torch.uint8).share_memory_()
        self._reasons: dict[int, str] = {}

    def __len__(self) -> int:
        return len(self.frame)

    @property
    def meta_dim(self) -> int:
        """Number of metadata features per item (0 without ``meta``)."""
        return len(self.meta_names)

    @property
    def skipped(self) -> list[tuple[str, str]]:
        """``(path, reason)`` of every image that could not be read so far, in row order."""
        out = []
        for i in torch.nonzero(self._bad).flatten().tolist():
            if i not in self._reasons:  # read in a worker process: find the reason again here
                try:
                    read_image_tensor(self.paths[i])
                    self._reasons[i] = "unreadable in a DataLoader worker"
                except (ValueError, OSError) as exc:
                    self._reasons[i] = str(exc)
            out.append((self.paths[i], self._reasons[i]))
        return out

    def __getitem__(self, index: int) -> dict[str, Any] | None:
        path = self.paths[index]
        try:
            if not path:
                raise ValueError(f"row {index}, column 'path': no image file")
            image = read_image_tensor(path)
        except (ValueError, OSError) as exc:
            self._reasons[index] = str(exc)
            if not bool(self._bad[index]):
                self._bad[index] = 1
                warnings.warn(f"skipped unreadable image: {exc}", SkippedImageWarning, stacklevel=2)
            return None
        item: dict[str, Any] = {"image": image if self.transform is None else self.transform(image)}
        if self.targets is not None:
            dtype = torch.float32 if self.target_name == "target" else torch.long
            item["target"] = torch.tensor(self.targets[index], dtype=dtype)
        if self.meta is not None:
            item["meta"] = torch.from_numpy(self.meta[index])
        item["index"] = int(index)
        return item


def _paths_inside(paths: list[str], root: Path) -> list[str]:
    """Join each path to ``root``; refuse one that resolves (``..``, symlinks) outside ``root``."""
    real_root = Path(os.path.realpath(root))
    out = []
    for row, value in enumerate(paths):
        if value:
            real = Path(os.path.realpath(root / value))  # an absolute value replaces root: refused below
            if not real.is_relative_to(real_root):
                raise ValueError(f"row {row}, column 'path': {value!r} lies outside the data folder "
                                 f"{root} (it resolves to {real}); refused")
            value = str(root / value)
        out.append(value)
    return out


def collate_skip_bad(batch: list[dict[str, Any] | None]) -> dict[str, Any] | None:
    """``collate_fn`` for a ``DataLoader`` over :class:`LesionDataset`: drop unreadable images.

    Returns ``None`` when every item of the batch was bad (a training loop skips such a batch).

    Introduced in chapter 7 (the data pipeline).
    """
    from torch.utils.data import default_collate

    kept = [item for item in batch if item is not None]
    return default_collate(kept) if kept else None


def _valid_targets(targets: Any) -> np.ndarray:
    t = targets.cpu() if isinstance(targets, torch.Tensor) else targets
    return np.asarray(t, dtype=np.float64).reshape(-1)


def weighted_sampler(targets: Any, num_samples: int | None = None,
                     generator: torch.Generator | None = None) -> WeightedRandomSampler:
    """A ``WeightedRandomSampler`` that draws every class equally often (inverse class frequency).

    Rows whose target is NaN or negative (unknown) are never drawn. ``num_samples`` defaults to the
    number of rows; draws are with replacement.

    Introduced in chapter 7 (the data pipeline).
    """
    t = _valid_targets(targets)
    valid = ~np.isnan(t) & (t >= 0)
    if not valid.any():
        raise ValueError("weighted_sampler: no valid targets")
    _, inverse, counts = np.unique(t[valid], return_inverse=True, return_counts=True)
    weights = np.zeros(len(t), dtype=np.float64)
    weights[valid] = 1.0 / counts[inverse]
    return WeightedRandomSampler(torch.from_numpy(weights), num_samples or len(t), replacement=True,
                                 generator=generator)


def pos_weight(targets: Any) -> torch.Tensor:
    """``pos_weight`` for ``BCEWithLogitsLoss``: number of negatives / number of positives (NaN ignored).

    Introduced in chapter 7 (the data pipeline).
    """
    t = _valid_targets(targets)
    pos, neg = int((t == 1).sum()), int((t == 0).sum())
    if pos == 0:
        raise ValueError("pos_weight: no positive targets")
    return torch.tensor([neg / pos], dtype=torch.float32)


class FocalLoss(nn.Module):
    """Focal loss (Lin et al. 2017): ``alpha_t * (1 - p_t) ** gamma * CE``, easy examples down-weighted.

    Binary (float 0/1 targets; ``alpha`` weights the positives) or multi-class ((N, C) logits, integer
    targets; ``alpha`` a float or C weights; ``ignore_index`` rows left out of ``"mean"``).

    Not called in a chapter; used by `_make_criterion`.
    """

    def __init__(self, alpha: float | Sequence[float] | None = 0.25, gamma: float = 2.0,
                 reduction: str = "mean", ignore_index: int = -1) -> None:
        super().__init__()
        if reduction not in ("mean", "sum", "none"):
            raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
        self.gamma, self.reduction, self.ignore_index = float(gamma), reduction, ignore_index
        scalar = alpha is None or isinstance(alpha, (int, float))
        self.alpha: float | None = float(alpha) if scalar and alpha is not None else None
        weights = None if scalar else torch.as_tensor(list(alpha), dtype=torch.float32)
        self.register_buffer("class_alpha", weights)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        keep = None
        if logits.ndim == 2 and logits.shape[1] > 1 and not targets.is_floating_point():
            keep = targets != self.ignore_index
            safe = torch.where(keep, targets, torch.zeros_like(targets))
            logp = F.log_softmax(logits.float(), dim=1).gather(1, safe[:, None]).squeeze(1)
            loss = -logp * (1 - logp.exp()).pow(self.gamma)
            if self.class_alpha is not None:
                loss = loss * self.class_alpha.to(loss.device)[safe]
            elif self.alpha is not None:
                loss = loss * self.alpha
            loss = torch.where(keep, loss, torch.zeros_like(loss))
        else:
            x = logits.float().reshape(targets.shape)
            y = targets.float()
            loss = F.binary_cross_entropy_with_logits(x, y, reduction="none")
            p = torch.sigmoid(x)
            if self.gamma:
                loss = loss * (1 - (p * y + (1 - p) * (1 - y))).pow(self.gamma)
            if self.alpha is not None:
                loss = loss * (self.alpha * y + (1 - self.alpha) * (1 - y))
        if self.reduction == "none":
            return loss
        loss = loss if keep is None else loss[keep]
        return loss.mean() if self.reduction == "mean" and loss.numel() else loss.sum()


# Folds and splits
def _groups(frame: pd.DataFrame) -> pd.Series:
    """Patient of each row; a row without a patient id is its own patient (its image id)."""
    own = frame["image_id"].astype("string") if "image_id" in frame else \
        pd.Series([f"row{i}" for i in range(len(frame))], index=frame.index, dtype="string")
    return frame["patient_id"].astype("string").fillna("image:" + own) if "patient_id" in frame else own


def _melanoma(frame: pd.DataFrame) -> np.ndarray:
    """1 for melanoma rows (``target == 1``, else ``label == "MEL"``), 0 otherwise (unknown too)."""
    if "target" in frame and frame["target"].notna().any():
        target = pd.to_numeric(frame["target"].astype("Float64"), errors="coerce")
        return (target == 1).fillna(False).to_numpy(int)
    if "label" in frame:
        return (frame["label"].astype("string") == "MEL").fillna(False).to_numpy(int)
    raise ValueError("frame has neither a 'target' nor a 'label' column to stratify by")


def _group_split(y: np.ndarray, groups: np.ndarray, k: int,
                 seed: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """``StratifiedGroupKFold(k, shuffle=True, random_state=seed)``'s splits, quietly."""
    from sklearn.model_selection import StratifiedGroupKFold

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The least populated class", category=UserWarning)
        splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
        splits = list(splitter.split(np.zeros(len(y)), y, groups))
    return iter(splits)


def _fold_series(splits: Iterator[tuple[np.ndarray, np.ndarray]], frame: pd.DataFrame) -> pd.Series:
    folds = np.full(len(frame), -1, dtype=np.int64)
    for fold, (_, val) in enumerate(splits):
        folds[val] = fold
    return pd.Series(folds, index=frame.index, name="fold")


def patient_folds(frame: pd.DataFrame, k: int = 5, seed: int = 0, n_buckets: int = 4) -> pd.Series:
    """Assign each row to one of ``k`` folds: patients never split, melanoma and patient sizes balanced.

    The "triple-stratified" folds of Ha et al. 2020: ``StratifiedGroupKFold(k, shuffle=True,
    random_state=seed)`` grouped by patient, stratified by ``has_melanoma × images-per-patient bucket``
    (``n_buckets`` quantiles). Rows without a ``patient_id`` are their own patient.

    Introduced in chapter 6 (patient context).
    """
    groups = _groups(frame).reset_index(drop=True)
    if groups.nunique() < k:
        raise ValueError(f"patient_folds: {groups.nunique()} patients cannot fill {k} folds")
    per_patient = pd.DataFrame({"g": groups, "mel": _melanoma(frame)}).groupby("g", sort=True)
    has_mel = per_patient["mel"].max()
    size = per_patient["mel"].size()
    ranks = size.rank(method="first")
    bucket = pd.qcut(ranks, q=min(n_buckets, len(size)), labels=False) if len(size) > 1 else size * 0
    # Ranks break ties, so equal sizes may share two buckets: map bucket edges back to sizes.
    edges = size.groupby(bucket).max()
    bucket = pd.Series(np.searchsorted(edges.to_numpy(), size.to_numpy(), side="left"), index=size.index)
    stratum = (has_mel * (bucket.max() + 1) + bucket).astype(int)
    return _fold_series(_group_split(groups.map(stratum).to_numpy(), groups.to_numpy(), k, seed), frame)


def holdout_split(frame: pd.DataFrame, frac: float = 0.2, seed: int = 0) -> pd.Series:
    """Split rows into ``"train"`` and ``"val"`` (a Series named ``split``), stratified by melanoma.

    With patient ids, patients stay whole (one of ``round(1 / frac)`` group folds), else exactly ``frac``.

    Not called in a chapter; used by `choose_split`.
    """
    from sklearn.model_selection import train_test_split

    if not 0 < frac < 1:
        raise ValueError(f"holdout_split: frac must be between 0 and 1, got {frac}")
    y = _melanoma(frame)
    split = np.full(len(frame), "train", dtype=object)
    if "patient_id" in frame and frame["patient_id"].notna().any():
        _, val = next(_group_split(y, _groups(frame).to_numpy(), max(2, round(1 / frac)), seed))
    else:
        strat = y if np.bincount(y, minlength=2).min() >= 2 else None
        _, val = train_test_split(np.arange(len(frame)), test_size=frac, random_state=seed, stratify=strat)
    split[val] = "val"
    return pd.Series(split, index=frame.index, name="split", dtype="string")


def label_folds(frame: pd.DataFrame, k: int = 5, seed: int = 0, column: str = "label") -> pd.Series:
    """Assign each row to one of ``k`` folds stratified by ``column``, for data without patient ids.

    Use where nothing groups the images (ISIC 2017); a missing label or a class under ``k`` rows raises.

    Introduced in chapter 7 (the data pipeline).
    """
    from sklearn.model_selection import StratifiedKFold

    if column not in frame:
        raise ValueError(f"label_folds: frame has no {column!r} column")
    labels = frame[column].astype("string")
    if labels.isna().any():
        raise ValueError(f"label_folds: row {_first_row(labels.isna())}, column {column!r}: missing label")
    counts = labels.value_counts()
    if counts.min() < k:
        raise ValueError(f"label_folds: class {counts.idxmin()!r} has {int(counts.min())} rows, "
                         f"fewer than {k} folds")
    splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    return _fold_series(splitter.split(np.zeros(len(frame)), labels.to_numpy()), frame)
