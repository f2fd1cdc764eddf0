"""The data pipeline of a CNN: images to tensors, labels to targets, patients to folds.

Two roads lead from image files to a training batch. This module is **the teaching road**:
:class:`LesionDataset` + ``torch.utils.data.DataLoader``: each image is read
(:func:`read_image_tensor`), augmented by torchvision ``transforms.v2``
(:func:`train_transforms`: random crops, flips, rotations, colour jitter and two
dermoscopy-specific transforms, :class:`RandomHair` and :class:`RandomVignette`) and
normalised. Simple and flexible, but every sample costs Python work on the CPU, and a GPU
waits for it. The throughput road (a tensor cache on disk, batches augmented on the GPU)
is :mod:`helpers.fastpath`.

The rest of the module handles what every dermoscopy model needs:
metadata as numbers (:func:`encode_meta`), the class imbalance
(:func:`weighted_sampler`, :func:`pos_weight`, :class:`FocalLoss`, Lin et al.
2017) and validation splits that never put one patient on both sides
(:func:`patient_folds`, the "triple-stratified" folds of the 2020 winners,
Ha et al. 2020; :func:`holdout_split`).

A bad image never stops an epoch: :class:`LesionDataset` returns ``None`` for
it, lists it in ``dataset.skipped`` and warns once; :func:`collate_skip_bad`
drops the ``None`` from the batch.
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
    "CLASSES_2019",
    "LABELS_9",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "META_COLUMNS",
    "META_SEXES",
    "META_SITES",
    "SkippedImageWarning",
    "read_image_tensor",
    "shades_of_gray",
    "ShadesOfGray",
    "RandomHair",
    "RandomVignette",
    "RandomRot90",
    "train_transforms",
    "eval_transforms",
    "to_display",
    "encode_targets",
    "encode_meta",
    "LesionDataset",
    "collate_skip_bad",
    "weighted_sampler",
    "pos_weight",
    "FocalLoss",
    "patient_folds",
    "holdout_split",
    "label_folds",
]

# ``LABELS_9`` (the 2019 classes plus ``UNK``) is ``target="label9"``; the vocabulary is helpers.vocab's.
#: Tidy-frame columns :func:`encode_meta` knows how to encode.
META_COLUMNS: tuple[str, ...] = ("age_approx", "sex", "anatom_site")
# The one-hot encoding's sexes and sites (``META_SEXES``, ``META_SITES``) are helpers.vocab's
# SEXES and SITES, in that order; anything else counts as missing.
#: Ages are divided by this, so that they lie roughly in 0..1.
AGE_SCALE = 90.0

_TV_DEPRECATION = "The image decoding and encoding capabilities of TorchVision"


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
        warnings.filterwarnings("ignore", message=_TV_DEPRECATION, category=DeprecationWarning)
        yield


# =========================================================================== reading
_TV_SUFFIXES = (".jpg", ".jpeg", ".png")


def read_image_tensor(path: os.PathLike | str) -> torch.Tensor:
    """Read an image file as an RGB ``uint8`` tensor of shape (3, H, W).

    JPEG and 8-bit PNG files are decoded by ``torchvision.io.decode_image``
    (libjpeg-turbo / libpng, EXIF orientation applied; greyscale repeated to
    three channels); everything else (DICOM, 16-bit PNG, images with an alpha
    channel, CMYK, files torchvision refuses) goes through
    :func:`helpers.io.read_image` (Pillow), which handles CMYK, 16-bit, alpha
    (composited on white) and EXIF rotation, so both roads give the same
    pixels. Raises ``ValueError`` naming the file when it is missing, empty,
    truncated, not an image, or a decompression bomb (its header announces
    more pixels than ``PIL.Image.MAX_IMAGE_PIXELS``; checked before
    torchvision, which has no limit, allocates anything).

    Introduced in chapter 7 (the data pipeline).
    """
    path = Path(path)
    if path.suffix.lower() in _TV_SUFFIXES:
        check_file(path)
        mode, transparent = image_header(path, path)
        # alpha, CMYK or 16 bits: Pillow below converts them as read_image does
        if mode in ("RGB", "L", "P") and not transparent:
            try:
                from torchvision.io import ImageReadMode, decode_image, read_file

                with quiet_tv_io():
                    img = decode_image(read_file(str(path)), mode=ImageReadMode.RGB,
                                       apply_exif_orientation=True)
                if img.dtype == torch.uint8 and img.ndim == 3 and img.shape[0] == 3:
                    return img
            except (RuntimeError, OSError):
                pass  # Pillow decides: it reads what libjpeg refuses or raises a ValueError naming the file
    arr = read_image(path)
    return torch.from_numpy(np.array(arr, dtype=np.uint8, copy=True)).permute(2, 0, 1).contiguous()


# =========================================================================== colour constancy
def shades_of_gray(img: torch.Tensor | np.ndarray, p: float = 6) -> torch.Tensor | np.ndarray:
    """Shades-of-gray colour constancy (Finlayson & Trezzi 2004): remove a colour cast.

    The illuminant of each channel is estimated by the Minkowski ``p``-norm of
    its pixel values, ``e_c = mean(I_c ** p) ** (1/p)``; each channel is then
    divided by its illuminant, rescaled so that a grey illuminant leaves the
    image unchanged (``e / |e| * sqrt(3)``). ``p=1`` is grey world,
    ``p=inf`` is max-RGB (white patch); ``p=6`` worked best on dermoscopy
    (Barata et al. 2015, and the 2019 challenge winners).

    Accepts a tensor (..., 3, H, W) — ``uint8``, or float in 0..1 — or a
    NumPy array (H, W, 3); returns the same type, shape and dtype, clipped to
    the valid range.

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
    top = 255.0 if is_int else 1.0
    x = img.to(torch.float32) / top if is_int else img.to(torch.float32)
    flat = x.flatten(-2).clamp_min(0)
    if math.isinf(p):
        illum = flat.amax(-1)
    else:
        illum = flat.pow(p).mean(-1).pow(1.0 / p)
    illum = illum / illum.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    gain = 1.0 / (illum * math.sqrt(3.0)).clamp_min(1e-6)
    out = (x * gain[..., None, None]).clamp(0.0, 1.0)
    if is_int:
        return (out * top).round_().to(img.dtype)
    return out.to(img.dtype)


# =========================================================================== custom v2 transforms
def _is_image(inpt: Any) -> bool:
    """True for inputs a photometric transform should change (not masks, boxes, labels)."""
    if isinstance(inpt, (tv_tensors.Mask, tv_tensors.BoundingBoxes)):
        return False
    return isinstance(inpt, torch.Tensor) and inpt.ndim >= 3 and inpt.shape[-3] in (1, 3)


def _rand(lo: float, hi: float) -> float:
    return float(torch.empty(()).uniform_(lo, hi))


def _blend(img: torch.Tensor, alpha: torch.Tensor, colour: torch.Tensor) -> torch.Tensor:
    """``img * (1 - alpha) + colour * alpha`` in float, returned in ``img``'s dtype."""
    is_int = not img.is_floating_point()
    x = img.to(torch.float32)
    colour = colour.to(x.device, torch.float32).view(-1, 1, 1)
    if not is_int:
        colour = colour / 255.0
    out = x * (1 - alpha) + colour * alpha
    if is_int:
        return out.round_().clamp_(0, 255).to(img.dtype)
    return out.to(img.dtype)


class ShadesOfGray(v2.Transform):
    """Shades-of-gray colour constancy as a ``transforms.v2`` transform (see :func:`shades_of_gray`).

    Not called in a chapter; used by `train_transforms`, `eval_transforms`.
    """

    def __init__(self, p: float = 6) -> None:
        super().__init__()
        self.p = p

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if not _is_image(inpt) or inpt.shape[-3] != 3:
            return inpt
        return tv_tensors.wrap(shades_of_gray(inpt.as_subclass(torch.Tensor), self.p), like=inpt) \
            if isinstance(inpt, tv_tensors.TVTensor) else shades_of_gray(inpt, self.p)


class RandomHair(v2.Transform):
    """Draw a few thin, dark, curved hairs across the image (a dermoscopy artefact).

    Each hair is a quadratic Bézier curve between two random points, drawn
    ``width`` pixels wide (a max filter over the rasterised curve, edges
    softened by a 3×3 mean), nearly opaque, in a near-black brown. Applied with
    probability ``p``; ``n_hairs`` = (min, max) hairs per image; ``width`` in
    pixels, relative to a 256-pixel image (scaled with the image size).
    Models trained with it learn to look through hair, which covers many real
    lesions (removing hair, e.g. DullRazor, is the other school).

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
            # Sample the Bezier curve densely (about 2 points per pixel of length) and mark the pixels it crosses.
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
            col = colour if out.shape[-3] == 3 else colour.mean().view(1)
            out = _blend(out, alpha, col)
        return tv_tensors.wrap(out, like=inpt) if isinstance(inpt, tv_tensors.TVTensor) else out


class RandomVignette(v2.Transform):
    """Darken everything outside a circle: the round field of view of a contact dermoscope.

    Applied with probability ``p``. The circle's radius is drawn from
    ``radius`` (a fraction of half the shorter side: 1.0 touches the edges
    and every corner is dark), its centre moves by up to ``shift`` of the
    size, and the edge fades over ``softness`` of the radius. Outside the
    circle the image becomes near black. Many ISIC images (notably in
    HAM10000 and BCN20000) have this black frame, and a model can learn it as
    a shortcut; adding it at random to every class takes the shortcut away.

    Introduced in chapter 7 (the data pipeline).
    """

    def __init__(self, p: float = 0.5, radius: tuple[float, float] = (0.85, 1.25),
                 shift: float = 0.05, softness: float = 0.08, darkness: tuple[float, float] = (0.0, 25.0)) -> None:
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
        r = torch.sqrt(xx ** 2 + yy ** 2)
        edge = params["radius"]
        alpha = ((r - edge) / (self.softness * edge) + 0.5).clamp(0, 1)  # 0 inside, 1 outside
        colour = torch.full((inpt.shape[-3],), params["level"])
        out = _blend(inpt.as_subclass(torch.Tensor), alpha, colour)
        return tv_tensors.wrap(out, like=inpt) if isinstance(inpt, tv_tensors.TVTensor) else out


class RandomRot90(v2.Transform):
    """Rotate by a random multiple of 90 degrees (exact: no interpolation, no black corners).

    A lesion has no "up": with horizontal and vertical flips this gives all
    eight symmetries of the square.

    Introduced in chapter 7 (the data pipeline).
    """

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        return {"k": int(torch.randint(0, 4, ()))}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if not isinstance(inpt, torch.Tensor) or isinstance(inpt, tv_tensors.BoundingBoxes) or inpt.ndim < 2:
            return inpt
        out = torch.rot90(inpt.as_subclass(torch.Tensor), params["k"], dims=(-2, -1))
        return tv_tensors.wrap(out, like=inpt) if isinstance(inpt, tv_tensors.TVTensor) else out


def _finish_transforms() -> list[v2.Transform]:
    return [v2.ToDtype(torch.float32, scale=True), v2.Normalize(IMAGENET_MEAN, IMAGENET_STD),
            v2.ToPureTensor()]


def train_transforms(size: int, *, hair: bool = True, vignette: bool = True,
                     shades_of_gray: bool = False, rotation: str = "any",
                     scale: tuple[float, float] = (0.6, 1.0)) -> v2.Compose:
    """The training augmentation: random crop, flips, rotation, colour jitter, hair, vignette.

    Input: a ``uint8`` tensor (3, H, W) (also a PIL image or an (H, W, 3)
    array); output: a float32 tensor (3, size, size) normalised with the
    ImageNet mean and standard deviation. In order: optional
    :class:`ShadesOfGray` colour constancy (on the whole image),
    ``RandomResizedCrop(size, scale)``, horizontal and vertical flips, a
    rotation (``rotation="any"``: uniform in ±180°; ``"rot90"``: multiples of
    90° only, :class:`RandomRot90`), ``ColorJitter``, :class:`RandomHair`,
    :class:`RandomVignette`, then conversion to float and normalisation.

    Introduced in chapter 7 (the data pipeline).
    """
    if rotation not in ("any", "rot90"):
        raise ValueError(f"rotation must be 'any' or 'rot90', got {rotation!r}")
    steps: list[v2.Transform] = [v2.ToImage()]
    if shades_of_gray:
        steps.append(ShadesOfGray())
    steps += [
        v2.RandomResizedCrop(size, scale=scale, ratio=(3 / 4, 4 / 3), antialias=True),
        v2.RandomHorizontalFlip(),
        v2.RandomVerticalFlip(),
        v2.RandomRotation(180, interpolation=v2.InterpolationMode.BILINEAR) if rotation == "any"
        else RandomRot90(),
        v2.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2, hue=0.02),
    ]
    if hair:
        steps.append(RandomHair(p=0.3))
    if vignette:
        steps.append(RandomVignette(p=0.3))
    return v2.Compose(steps + _finish_transforms())


def eval_transforms(size: int, shades_of_gray: bool = False) -> v2.Compose:
    """The evaluation transform: shorter side to ``size``, centre crop, normalise (deterministic).

    The same geometry as :func:`build_tensor_cache` and
    ``helpers.preprocess.resize_image`` (bilinear anti-aliased here, Lanczos
    there). Output: float32 (3, size, size), ImageNet-normalised.

    Introduced in chapter 7 (the data pipeline).
    """
    steps: list[v2.Transform] = [v2.ToImage()]
    if shades_of_gray:
        steps.append(ShadesOfGray())
    steps += [v2.Resize(size, antialias=True), v2.CenterCrop(size)]
    return v2.Compose(steps + _finish_transforms())


def to_display(image: torch.Tensor) -> np.ndarray:
    """Undo the ImageNet normalisation of a (3, H, W) float tensor: an (H, W, 3) ``uint8`` array to show.

    Introduced in chapter 7 (the data pipeline).
    """
    if image.ndim != 3 or image.shape[0] != 3:
        raise ValueError(f"to_display: expected a (3, H, W) tensor, got shape {tuple(image.shape)}")
    x = image.detach().float().cpu() * torch.tensor(IMAGENET_STD).view(3, 1, 1) \
        + torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    return (x.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()


# =========================================================================== targets and metadata
def encode_targets(frame: pd.DataFrame, target: str = "target") -> np.ndarray:
    """The training target of each row as a NumPy array.

    ``"target"``: float32 0/1 (melanoma or not), NaN where unknown.
    ``"label"``: int64 index in :data:`CLASSES_2019` (0..7); ``UNK`` and
    missing labels are -1 (to be ignored by the loss, ``ignore_index=-1``).
    ``"label9"``: int64 index in :data:`LABELS_9` (0..8, ``UNK`` = 8); missing -1.

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
            raise ValueError(f"row {int(np.flatnonzero(bad.to_numpy())[0])}, column 'target': "
                             f"expected 0 or 1, got {values[bad].iloc[0]}")
        return values.astype("float64").to_numpy(dtype=np.float32, na_value=np.nan)
    classes = CLASSES_2019 if target == "label" else LABELS_9
    labels = frame["label"].astype("string")
    unknown = labels.notna() & ~labels.isin(LABELS_9)
    if unknown.any():
        raise ValueError(f"row {int(np.flatnonzero(unknown.to_numpy())[0])}, column 'label': "
                         f"unknown class {labels[unknown].iloc[0]!r} (expected one of {', '.join(LABELS_9)})")
    codes = {c: i for i, c in enumerate(classes)}
    return labels.map(codes).astype("Float64").fillna(-1).to_numpy(dtype=np.int64)


def _slug(text: str) -> str:
    return "".join(ch if ch.isalnum() else "_" for ch in text)


def encode_meta(frame: pd.DataFrame, columns: Sequence[str] = META_COLUMNS,
                age_mean: float | None = None) -> tuple[np.ndarray, list[str]]:
    """Encode age, sex and anatomical site as a float32 matrix for a metadata branch.

    * ``age_approx`` → ``age`` = age / 90; a missing age becomes the mean age
      (``age_mean``, default: the mean of this frame; pass the training
      frame's mean when encoding a validation or test frame) plus a flag
      ``age_missing`` = 1.
    * ``sex`` → one-hot ``sex_female``, ``sex_male`` and ``sex_missing``.
    * ``anatom_site`` → one-hot over :data:`META_SITES` (``site_head_neck`` …)
      and ``site_missing``.

    Values outside the vocabularies count as missing. The column order is
    fixed (it does not depend on which values occur), so two frames encode
    alike. Returns ``(matrix, names)``, ``matrix`` of shape (len(frame), len(names)).

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
        known = values.isin(vocab).fillna(False).to_numpy(dtype=bool)
        for v in vocab:
            parts.append((values == v).fillna(False).to_numpy(dtype=np.float64))
            names.append(f"{prefix}_{_slug(v)}")
        parts.append((~known).astype(np.float64))
        names.append(f"{prefix}_missing")
    matrix = np.stack(parts, 1).astype(np.float32) if parts else np.zeros((len(frame), 0), np.float32)
    return matrix, names


# =========================================================================== dataset
class LesionDataset(Dataset):
    """A map-style dataset over a tidy frame: image, target, metadata and row index.

    ``frame`` needs a ``path`` column (and ``target`` / ``label`` for the
    chosen ``target``, see :func:`encode_targets`; ``target=None`` for
    unlabelled images). ``transform`` takes the ``uint8`` (3, H, W) tensor of
    :func:`read_image_tensor` (e.g. :func:`train_transforms`). ``meta``: tidy
    columns to encode with :func:`encode_meta` (e.g. ``list(META_COLUMNS)``;
    ``age_mean`` is passed on), or names of numeric columns used as they are.

    An item is ``{"image", "target", "meta" (if meta), "index"}`` where
    ``index`` is the row's position in ``frame``. An image that cannot be read
    gives ``None`` instead: it is listed in :attr:`skipped` as
    ``(path, reason)`` and warned about once (:class:`SkippedImageWarning`);
    use :func:`collate_skip_bad` as the ``DataLoader``'s ``collate_fn``. The
    record survives ``DataLoader`` worker processes (a flag per row in shared
    memory).

    ``root``: for a ``path`` column from a file you did not write yourself.
    Relative paths are then taken relative to ``root``, and a path that lies
    outside ``root`` once ``..`` and symlinks are resolved (``../../etc/passwd``,
    an absolute path elsewhere, a symlink pointing out) is refused with a
    ``ValueError`` naming the row and the value. (Frames from
    :func:`helpers.datasets.load_dataset` are checked there already.)

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
            other = [c for c in meta if c not in META_COLUMNS]
            blocks = []
            if known:
                m, n = encode_meta(self.frame, known, age_mean=age_mean)
                blocks.append(m)
                self.meta_names += n
            for c in other:
                if c not in self.frame:
                    raise ValueError(f"LesionDataset: frame has no meta column {c!r}")
                values = pd.to_numeric(self.frame[c], errors="coerce").astype("float64")
                if values.isna().any():
                    row = int(np.flatnonzero(values.isna().to_numpy())[0])
                    raise ValueError(f"row {row}, column {c!r}: missing or non-numeric metadata")
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
            reason = str(exc)
            self._reasons[index] = reason
            if not bool(self._bad[index]):
                self._bad[index] = 1
                warnings.warn(f"skipped unreadable image: {reason}", SkippedImageWarning, stacklevel=2)
            return None
        if self.transform is not None:
            image = self.transform(image)
        item: dict[str, Any] = {"image": image}
        if self.targets is not None:
            t = self.targets[index]
            item["target"] = torch.tensor(t, dtype=torch.float32 if self.target_name == "target" else torch.long)
        if self.meta is not None:
            item["meta"] = torch.from_numpy(self.meta[index])
        item["index"] = int(index)
        return item


def _paths_inside(paths: list[str], root: Path) -> list[str]:
    """Join each path to ``root``; refuse one that resolves (``..``, symlinks) outside ``root``."""
    real_root = Path(os.path.realpath(root))
    out = []
    for row, value in enumerate(paths):
        if not value:
            out.append(value)
            continue
        joined = root / value            # an absolute value replaces root: checked below
        real = Path(os.path.realpath(joined))
        if not real.is_relative_to(real_root):
            raise ValueError(f"row {row}, column 'path': {value!r} lies outside the data folder "
                             f"{root} (it resolves to {real}); refused")
        out.append(str(joined))
    return out


def collate_skip_bad(batch: list[dict[str, Any] | None]) -> dict[str, Any] | None:
    """``collate_fn`` for a ``DataLoader`` over :class:`LesionDataset`: drop unreadable images.

    Returns the default collation of the remaining items, or ``None`` when
    every item of the batch was bad (a training loop skips such a batch).

    Introduced in chapter 7 (the data pipeline).
    """
    from torch.utils.data import default_collate

    kept = [item for item in batch if item is not None]
    return default_collate(kept) if kept else None


# =========================================================================== class imbalance
def _valid_targets(targets: Any) -> np.ndarray:
    t = np.asarray(targets.cpu() if isinstance(targets, torch.Tensor) else targets, dtype=np.float64)
    return t.reshape(-1)


def weighted_sampler(targets: Any, num_samples: int | None = None,
                     generator: torch.Generator | None = None) -> WeightedRandomSampler:
    """A ``WeightedRandomSampler`` that draws every class equally often (inverse class frequency).

    ``targets``: one class per row (0/1 floats or class indices). Rows whose
    target is NaN or negative (unknown, ``UNK``) get weight 0 and are never
    drawn. ``num_samples`` defaults to the number of rows (one "epoch");
    draws are with replacement, so rare classes repeat.

    Introduced in chapter 7 (the data pipeline).
    """
    t = _valid_targets(targets)
    valid = ~np.isnan(t) & (t >= 0)
    if not valid.any():
        raise ValueError("weighted_sampler: no valid targets")
    classes, counts = np.unique(t[valid], return_counts=True)
    per_class = dict(zip(classes.tolist(), (1.0 / counts).tolist()))
    weights = np.zeros(len(t), dtype=np.float64)
    weights[valid] = [per_class[v] for v in t[valid].tolist()]
    return WeightedRandomSampler(torch.from_numpy(weights), num_samples or len(t), replacement=True,
                                 generator=generator)


def pos_weight(targets: Any) -> torch.Tensor:
    """``pos_weight`` for ``BCEWithLogitsLoss``: number of negatives / number of positives.

    Returns a one-element float32 tensor (NaN targets are ignored). With it,
    each positive (melanoma) counts as much as all negatives together divided
    by the number of positives, as if the classes were balanced.

    Introduced in chapter 7 (the data pipeline).
    """
    t = _valid_targets(targets)
    t = t[~np.isnan(t)]
    pos, neg = int((t == 1).sum()), int((t == 0).sum())
    if pos == 0:
        raise ValueError("pos_weight: no positive targets")
    return torch.tensor([neg / pos], dtype=torch.float32)


class FocalLoss(nn.Module):
    """Focal loss (Lin et al. 2017): cross-entropy that down-weights easy examples.

    ``loss = alpha_t * (1 - p_t) ** gamma * CE``, where ``p_t`` is the
    predicted probability of the true class. ``gamma=0`` and ``alpha=None``
    give plain cross-entropy.

    * Binary: ``logits`` of shape (N,) or (N, 1), float ``targets`` 0/1 of
      shape (N,); ``alpha`` (a float) weights the positives, ``1 - alpha``
      the negatives.
    * Multi-class: ``logits`` (N, C) and integer ``targets`` (N,);
      ``alpha`` is ``None``, a float (same for every class) or a sequence of C
      class weights; targets equal to ``ignore_index`` (-1) are ignored.

    ``reduction``: ``"mean"`` (over counted examples), ``"sum"`` or ``"none"``.

    Not called in a chapter; used by `_make_criterion`.
    """

    def __init__(self, alpha: float | Sequence[float] | None = 0.25, gamma: float = 2.0,
                 reduction: str = "mean", ignore_index: int = -1) -> None:
        super().__init__()
        if reduction not in ("mean", "sum", "none"):
            raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
        self.gamma, self.reduction, self.ignore_index = float(gamma), reduction, ignore_index
        self.alpha: float | None = None
        if alpha is None or isinstance(alpha, (int, float)):
            self.alpha = None if alpha is None else float(alpha)
            self.register_buffer("class_alpha", None)
        else:
            self.register_buffer("class_alpha", torch.as_tensor(list(alpha), dtype=torch.float32))

    def _reduce(self, loss: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        if self.reduction == "none":
            return loss
        if keep is not None:
            loss = loss[keep]
        if self.reduction == "sum":
            return loss.sum()
        return loss.mean() if loss.numel() else loss.sum()

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        multi = logits.ndim == 2 and logits.shape[1] > 1 and not targets.is_floating_point()
        if multi:
            keep = targets != self.ignore_index
            safe = torch.where(keep, targets, torch.zeros_like(targets))
            logp = F.log_softmax(logits.float(), dim=1).gather(1, safe[:, None]).squeeze(1)
            loss = -logp * (1 - logp.exp()).pow(self.gamma)
            if self.class_alpha is not None:
                loss = loss * self.class_alpha.to(loss.device)[safe]
            elif self.alpha is not None:
                loss = loss * self.alpha
            loss = torch.where(keep, loss, torch.zeros_like(loss))
            return self._reduce(loss, keep)
        x = logits.float().reshape(targets.shape)
        y = targets.float()
        ce = F.binary_cross_entropy_with_logits(x, y, reduction="none")
        p = torch.sigmoid(x)
        p_t = p * y + (1 - p) * (1 - y)
        loss = ce * (1 - p_t).pow(self.gamma) if self.gamma else ce
        if self.alpha is not None:
            loss = loss * (self.alpha * y + (1 - self.alpha) * (1 - y))
        return self._reduce(loss)


# =========================================================================== folds and splits
def _groups(frame: pd.DataFrame) -> pd.Series:
    """Patient of each row; a row without a patient id is its own patient (its image id)."""
    own = frame["image_id"].astype("string") if "image_id" in frame else \
        pd.Series([f"row{i}" for i in range(len(frame))], index=frame.index, dtype="string")
    if "patient_id" not in frame:
        return own
    return frame["patient_id"].astype("string").fillna("image:" + own)


def _melanoma(frame: pd.DataFrame) -> np.ndarray:
    """1 for melanoma rows (``target == 1``, else ``label == "MEL"``), 0 otherwise (unknown too)."""
    if "target" in frame and frame["target"].notna().any():
        return (pd.to_numeric(frame["target"].astype("Float64"), errors="coerce") == 1).fillna(False).to_numpy(int)
    if "label" in frame:
        return (frame["label"].astype("string") == "MEL").fillna(False).to_numpy(int)
    raise ValueError("frame has neither a 'target' nor a 'label' column to stratify by")


def patient_folds(frame: pd.DataFrame, k: int = 5, seed: int = 0, n_buckets: int = 4) -> pd.Series:
    """Assign each row to one of ``k`` folds: patients never split, melanoma and patient sizes balanced.

    The "triple-stratified" folds of the 2020 winners (Ha et al. 2020): every
    image of a patient lands in the same fold (no patient is both trained and
    validated on — a model could otherwise recognise the patient's skin);
    each fold gets about the same share of patients with a melanoma and of
    patients with few and many images. Each patient gets a stratum
    ``has_melanoma × images-per-patient bucket`` (``n_buckets`` quantile
    buckets of the per-patient image count) and scikit-learn's
    ``StratifiedGroupKFold(k, shuffle=True, random_state=seed)`` splits the
    rows grouped by patient and stratified by that stratum. Rows without a
    ``patient_id`` count as their own patient (grouped by ``image_id``).

    Returns a Series of fold numbers 0..k-1 named ``fold``, index aligned with ``frame``.

    Introduced in chapter 6 (patient context).
    """
    from sklearn.model_selection import StratifiedGroupKFold

    groups = _groups(frame).reset_index(drop=True)
    if groups.nunique() < k:
        raise ValueError(f"patient_folds: {groups.nunique()} patients cannot fill {k} folds")
    mel = pd.Series(_melanoma(frame), index=groups.index)
    per_patient = pd.DataFrame({"g": groups, "mel": mel}).groupby("g", sort=True)
    has_mel = per_patient["mel"].max()
    size = per_patient["mel"].size()
    ranks = size.rank(method="first")
    bucket = pd.qcut(ranks, q=min(n_buckets, len(size)), labels=False) if len(size) > 1 else size * 0
    # Ranks break ties, so equal sizes may share two buckets: map bucket edges back to sizes.
    edges = size.groupby(bucket).max()
    bucket = pd.Series(np.searchsorted(edges.to_numpy(), size.to_numpy(), side="left"), index=size.index)
    stratum = (has_mel * (bucket.max() + 1) + bucket).astype(int)
    y = groups.map(stratum).to_numpy()
    folds = np.full(len(frame), -1, dtype=np.int64)
    splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The least populated class", category=UserWarning)
        for fold, (_, val) in enumerate(splitter.split(np.zeros(len(frame)), y, groups.to_numpy())):
            folds[val] = fold
    return pd.Series(folds, index=frame.index, name="fold")


def holdout_split(frame: pd.DataFrame, frac: float = 0.2, seed: int = 0) -> pd.Series:
    """Split a frame without an official split into ``"train"`` and ``"val"`` rows.

    Stratified by melanoma (``target``, else ``label == "MEL"``) so both
    parts have the same melanoma rate. When a ``patient_id`` column has
    values, patients are kept whole: ``StratifiedGroupKFold`` with
    ``round(1 / frac)`` folds, one fold is ``val`` (so ``frac`` is rounded to
    1/2, 1/3, 1/4, 1/5, ...). Otherwise ``train_test_split(stratify=...)``
    takes exactly ``frac`` of the rows. Returns a Series named ``split``,
    index aligned with ``frame``.

    Not called in a chapter; used by `choose_split`.
    """
    from sklearn.model_selection import StratifiedGroupKFold, train_test_split

    if not 0 < frac < 1:
        raise ValueError(f"holdout_split: frac must be between 0 and 1, got {frac}")
    y = _melanoma(frame)
    split = np.full(len(frame), "train", dtype=object)
    if "patient_id" in frame and frame["patient_id"].notna().any():
        groups = _groups(frame).to_numpy()
        n = max(2, round(1 / frac))
        splitter = StratifiedGroupKFold(n_splits=n, shuffle=True, random_state=seed)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="The least populated class", category=UserWarning)
            _, val = next(iter(splitter.split(np.zeros(len(frame)), y, groups)))
    else:
        strat = y if np.bincount(y, minlength=2).min() >= 2 else None
        _, val = train_test_split(np.arange(len(frame)), test_size=frac, random_state=seed, stratify=strat)
    split[val] = "val"
    return pd.Series(split, index=frame.index, name="split", dtype="string")


def label_folds(frame: pd.DataFrame, k: int = 5, seed: int = 0, column: str = "label") -> pd.Series:
    """Assign each row to one of ``k`` folds stratified by a label column, for data without patient ids.

    scikit-learn's ``StratifiedKFold(k, shuffle=True, random_state=seed)``
    over ``frame[column]``: every fold gets about the same share of each
    class. Rows are treated as independent, so use it only where nothing
    groups the images (no ``patient_id``, no ``lesion_id``), as in ISIC 2017;
    where patient ids exist use :func:`patient_folds`. A missing label, or a
    class with fewer than ``k`` rows, raises ``ValueError``. Returns a Series
    of fold numbers 0..k-1 named ``fold``, index aligned with ``frame``.

    Introduced in chapter 7 (the data pipeline).
    """
    from sklearn.model_selection import StratifiedKFold

    if column not in frame:
        raise ValueError(f"label_folds: frame has no {column!r} column")
    labels = frame[column].astype("string")
    if labels.isna().any():
        raise ValueError(f"label_folds: row {int(np.flatnonzero(labels.isna().to_numpy())[0])}, "
                         f"column {column!r}: missing label")
    smallest = labels.value_counts()
    if smallest.min() < k:
        raise ValueError(f"label_folds: class {smallest.idxmin()!r} has {int(smallest.min())} rows, "
                         f"fewer than {k} folds")
    folds = np.full(len(frame), -1, dtype=np.int64)
    splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    for fold, (_, val) in enumerate(splitter.split(np.zeros(len(frame)), labels.to_numpy())):
        folds[val] = fold
    return pd.Series(folds, index=frame.index, name="fold")
