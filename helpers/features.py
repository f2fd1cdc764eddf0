"""Hand-made ABCD features of a dermoscopic image: segmentation, asymmetry, border, colours, diameter.

What a few lines of scikit-image can measure of the dermoscopic ABCD rule (Stolz / Nachbar 1994),
plus the clinical "D" (diameter), so that chapter 2 can show how far such features go.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import ndimage as ndi
from skimage import color, filters, measure, morphology, transform

__all__ = [
    "REFERENCE_COLOURS", "COLOUR_NAMES", "to_float_rgb", "remove_hair", "field_of_view", "segment_lesion",
    "asymmetry", "compactness", "colour_fractions", "abcd_features", "features_frame", "tds_like",
    "draw_abcd",
]

#: The six colours of the dermoscopic ABCD rule (Nachbar et al. 1994) as sRGB anchors (0-255):
#: the names come from the literature, the numbers are this book's choice, picked by eye.
REFERENCE_COLOURS: dict[str, tuple[int, int, int]] = {
    "white": (235, 230, 235),
    "red": (200, 60, 70),
    "light brown": (180, 115, 70),
    "dark brown": (100, 55, 35),
    "blue-grey": (110, 120, 145),
    "black": (35, 30, 30),
}
COLOUR_NAMES: tuple[str, ...] = tuple(REFERENCE_COLOURS)


def to_float_rgb(image: Any, name: str = "image") -> np.ndarray:
    """Return ``image`` (uint8, uint16 or float in [0, 1]; at least 8x8) as float64 (H, W, 3) in [0, 1].

    Anything else raises ``ValueError`` naming ``name``.

    Not called in a chapter; used by `skin_ita`, `remove_hair`, `segment_lesion`.
    """
    arr = np.asarray(image)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"{name}: expected an RGB array of shape (H, W, 3), got shape {arr.shape}")
    if arr.shape[0] < 8 or arr.shape[1] < 8:
        raise ValueError(f"{name}: image of shape {arr.shape} is too small (need at least 8x8)")
    if arr.dtype == np.uint8:
        return arr.astype(np.float64) / 255.0
    if arr.dtype == np.uint16:
        return arr.astype(np.float64) / 65535.0
    if np.issubdtype(arr.dtype, np.floating):
        if not np.isfinite(arr).all() or arr.min() < 0.0 or arr.max() > 1.0:
            raise ValueError(f"{name}: float images must hold finite values in [0, 1]")
        return arr.astype(np.float64)
    raise ValueError(f"{name}: unsupported dtype {arr.dtype} (use uint8, uint16 or float in [0, 1])")


def _footprint_radius(shape: Sequence[int], fraction: float) -> int:
    return max(1, int(round(fraction * max(shape[:2]))))


def _ring_width(mask: np.ndarray) -> int:
    return max(2, int(round(0.02 * max(mask.shape))))


def remove_hair(image: Any, radius: int | None = None, threshold: float = 0.06) -> np.ndarray:
    """Paint over thin dark hairs, in the spirit of DullRazor (Lee et al. 1997); float RGB in [0, 1].

    Where the black-hat of the luminance exceeds ``threshold``, pixels take the per-channel closing.
    It also erases small dark dots, so colours are measured on the original image.

    Introduced in chapter 2 (dermoscopy and the ABCD rule).
    """
    rgb = to_float_rgb(image)
    r = radius if radius is not None else _footprint_radius(rgb.shape, 0.02)
    fp = morphology.disk(r)
    gray = color.rgb2gray(rgb)
    hair = morphology.black_tophat(gray, fp) > threshold
    hair = morphology.dilation(hair, morphology.disk(1))
    if not hair.any():
        return rgb
    out = rgb.copy()
    for c in range(3):
        closed = morphology.closing(rgb[..., c], fp)
        out[..., c][hair] = closed[hair]
    return out


def field_of_view(gray: np.ndarray, margin: float = 0.03) -> np.ndarray:
    """Boolean mask of the dermoscope's round field of view in a (blurred) grey image.

    Dark regions holding an image corner are the vignette; the rest, shrunk by ``margin`` times
    the image size, is the field (all True without a vignette).

    Introduced in chapter 2 (dermoscopy and the ABCD rule).
    """
    dark_mask = gray < 0.35 * np.percentile(gray, 95)
    labels, _ = ndi.label(dark_mask)
    corner_labels = {labels[0, 0], labels[0, -1], labels[-1, 0], labels[-1, -1]} - {0}
    if not corner_labels:
        return np.ones_like(dark_mask)
    fov = ~np.isin(labels, list(corner_labels))
    return ndi.distance_transform_edt(fov) > margin * max(gray.shape)


def segment_lesion(image: Any, *, work_size: int = 256, sigma: float = 0.01) -> np.ndarray:
    """Segment the lesion of a dermoscopic image; return a boolean mask of the image's size.

    Downscale to ``work_size`` px; remove hairs; blur the blue channel by ``sigma`` times the
    image size; Otsu's threshold in the field of view (darker = lesion); opening and closing; keep
    the component with the most centre-weighted area, holes filled; upscale. Raises ``ValueError``
    for a non-RGB array or when nothing is left to segment.

    Introduced in chapter 2 (dermoscopy and the ABCD rule).
    """
    rgb = to_float_rgb(image)
    h, w = rgb.shape[:2]
    scale = min(1.0, work_size / max(h, w))
    small = transform.resize(rgb, (max(8, round(h * scale)), max(8, round(w * scale))),
                             anti_aliasing=scale < 1.0) if scale < 1.0 else rgb
    small = remove_hair(small)
    sig = max(0.5, sigma * max(small.shape[:2]))
    fov = field_of_view(filters.gaussian(color.rgb2gray(small), sigma=sig))
    if fov.sum() < 16:
        raise ValueError("segment_lesion: no field of view found (image almost entirely dark)")
    img = filters.gaussian(small[..., 2], sigma=sig)
    if np.ptp(img[fov]) < 1e-3:
        raise ValueError("segment_lesion: image has no contrast inside the field of view, no lesion found")
    raw = (img < filters.threshold_otsu(img[fov])) & fov
    r = _footprint_radius(small.shape, 0.01)
    mask = morphology.opening(raw, morphology.disk(r, decomposition="sequence"))
    mask = morphology.closing(mask, morphology.disk(2 * r, decomposition="sequence"))
    labels, n = ndi.label(mask)
    if n == 0:
        raise ValueError("segment_lesion: empty segmentation (Otsu threshold left no lesion pixels)")
    yy, xx = np.mgrid[0:small.shape[0], 0:small.shape[1]]
    cy, cx = (small.shape[0] - 1) / 2, (small.shape[1] - 1) / 2
    s = 0.2 * np.hypot(*small.shape[:2])
    weight = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * s * s))
    scores = ndi.sum(weight, labels, index=np.arange(1, n + 1))
    mask = ndi.binary_fill_holes(labels == (int(np.argmax(scores)) + 1))
    if scale < 1.0:
        mask = transform.resize(mask.astype(float), (h, w), order=1) > 0.5
    if not mask.any():
        raise ValueError("segment_lesion: empty segmentation after upscaling")
    return mask


def _check_mask(mask: Any, shape: tuple[int, int]) -> np.ndarray:
    m = np.asarray(mask)
    if m.shape != shape:
        raise ValueError(f"mask: shape {m.shape} does not match the image's {shape}")
    m = m.astype(bool)
    if m.sum() < 10:
        raise ValueError(f"mask: empty segmentation ({int(m.sum())} lesion pixels, need at least 10)")
    return m


def _principal_axes(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Centroid (y, x), unit vectors (dy, dx) of the major and minor axes, pixel offsets from the centroid."""
    ys, xs = np.nonzero(mask)
    centroid = np.array([ys.mean(), xs.mean()])
    d = np.stack([ys, xs], axis=1) - centroid
    _, evecs = np.linalg.eigh(d.T @ d / len(d))
    return centroid, evecs[:, 1], evecs[:, 0], d


def asymmetry(mask: Any) -> tuple[float, float]:
    """Shape asymmetry about the major and the minor principal axis through the centroid.

    Per axis, the share of lesion pixels whose mirror image lands outside the lesion (0 to 1).

    Not called in a chapter; used by `abcd_features`.
    """
    m = np.asarray(mask).astype(bool)
    if m.ndim != 2 or m.sum() < 10:
        raise ValueError("asymmetry: mask must be a 2-D boolean array with at least 10 lesion pixels")
    centroid, major, minor, d = _principal_axes(m)
    out = []
    for axis in (major, minor):
        ry, rx = np.rint(2 * (d @ axis)[:, None] * axis[None, :] - d + centroid).astype(int).T
        ok = (ry >= 0) & (ry < m.shape[0]) & (rx >= 0) & (rx < m.shape[1])
        inside = np.zeros(len(d), bool)
        inside[ok] = m[ry[ok], rx[ok]]
        out.append(float(1.0 - inside.mean()))
    return out[0], out[1]


def compactness(mask: Any) -> float:
    """Border irregularity as compactness, perimeter^2 / (4 pi area): 1 for a disc, more if ragged.

    The perimeter is scikit-image's Crofton estimate.

    Not called in a chapter; used by `abcd_features`.
    """
    m = np.asarray(mask).astype(bool)
    area = m.sum()
    if m.ndim != 2 or area < 10:
        raise ValueError("compactness: mask must be a 2-D boolean array with at least 10 lesion pixels")
    p = measure.perimeter_crofton(np.pad(m, 1), directions=4)
    return float(p * p / (4 * np.pi * area))


def skin_ring(mask: np.ndarray, width: int) -> np.ndarray:
    """Pixels more than ``width`` and at most ``2 * width`` pixels outside ``mask``."""
    dist = ndi.distance_transform_edt(~mask)
    return (dist > width) & (dist <= 2 * width)


def colour_fractions(image: Any, mask: Any) -> dict[str, float]:
    """Fraction of lesion pixels nearest to each of the six reference colours (CIELAB distance).

    The median skin of a ring around the lesion competes as a seventh anchor, and "white" counts
    only where lighter than that skin. Returns ``{name: fraction}`` over :data:`COLOUR_NAMES`.

    Not called in a chapter; used by `abcd_features`.
    """
    rgb = to_float_rgb(image)
    m = _check_mask(mask, rgb.shape[:2])
    lab = color.rgb2lab(rgb)
    anchors = color.rgb2lab(np.array([list(REFERENCE_COLOURS.values())], float) / 255.0)[0]
    ring = skin_ring(m, _ring_width(m))
    pix = lab[m]
    if ring.sum() >= 10:
        anchors = np.vstack([anchors, np.median(lab[ring], axis=0)])
    nearest = np.linalg.norm(pix[:, None, :] - anchors[None, :, :], axis=2).argmin(axis=1)
    fractions = {}
    for i, name in enumerate(COLOUR_NAMES):
        sel = nearest == i
        if name == "white" and len(anchors) > len(COLOUR_NAMES):
            sel &= pix[:, 0] > anchors[-1][0]
        fractions[name] = float(sel.mean())
    return fractions


def _abrupt_octants(gray: np.ndarray, mask: np.ndarray, centroid: np.ndarray, step: float) -> int:
    """Number of the 8 angular segments whose border shows a sharp luminance step."""
    r_eq = np.sqrt(mask.sum() / np.pi)
    w = max(2, int(round(0.08 * r_eq)))
    inner = mask & (ndi.distance_transform_edt(mask) <= w)
    dist_out = ndi.distance_transform_edt(~mask)
    outer = (dist_out > 0) & (dist_out <= w)
    yy, xx = np.mgrid[0:mask.shape[0], 0:mask.shape[1]]
    octant = ((np.arctan2(yy - centroid[0], xx - centroid[1]) + np.pi) / (np.pi / 4)).astype(int) % 8
    count = 0
    for k in range(8):
        sel_in, sel_out = inner & (octant == k), outer & (octant == k)
        if sel_in.sum() >= 3 and sel_out.sum() >= 3 and gray[sel_out].mean() - gray[sel_in].mean() > step:
            count += 1
    return count


def abcd_features(
    image: Any,
    mask: Any | None = None,
    *,
    px_per_mm: float | None = None,
    min_fraction: float = 0.05,
    axis_threshold: float = 0.1,
    border_step: float = 0.1,
) -> dict[str, Any]:
    """Compute ABCD-style features of one dermoscopic image (segmented first if ``mask`` is None).

    ``asymmetry_axes``: axes whose mismatch exceeds ``axis_threshold`` (0-2); ``border_abrupt``:
    of 8 segments, those whose luminance steps by more than ``border_step`` across the border;
    ``colour_count``: colours covering ``min_fraction`` of the lesion (at least 1); ``contrast``:
    median grey of the surrounding skin minus the lesion's (NaN without a ring); ``diameter_px`` is
    the maximum Feret diameter, ``diameter_mm`` NaN without ``px_per_mm``; ``orientation`` is in
    radians from the x axis towards +y.

    Introduced in chapter 2 (dermoscopy and the ABCD rule).
    """
    rgb = to_float_rgb(image)
    m = segment_lesion(rgb) if mask is None else _check_mask(mask, rgb.shape[:2])
    a_major, a_minor = asymmetry(m)
    centroid, major, _, _ = _principal_axes(m)
    props = measure.regionprops(m.astype(np.uint8))[0]
    fractions = colour_fractions(rgb, m)
    present = [n for n in COLOUR_NAMES if fractions[n] >= min_fraction]
    if not present:  # the rule's minimum is one colour: keep the most frequent
        present = [max(COLOUR_NAMES, key=fractions.__getitem__)]
    gray = color.rgb2gray(rgb)
    ring = skin_ring(m, _ring_width(m))
    contrast = float(np.median(gray[ring]) - np.median(gray[m])) if ring.sum() >= 10 else float("nan")
    feret = float(props.feret_diameter_max)
    return {
        "asymmetry_major": a_major, "asymmetry_minor": a_minor, "asymmetry": (a_major + a_minor) / 2,
        "asymmetry_axes": int(a_major > axis_threshold) + int(a_minor > axis_threshold),
        "compactness": compactness(m), "solidity": float(props.solidity),
        "border_abrupt": _abrupt_octants(gray, m, centroid, border_step),
        "colour_count": len(present), "colours": ";".join(present),
        **{f"frac_{n.replace(' ', '_').replace('-', '_')}": fractions[n] for n in COLOUR_NAMES},
        "colour_variegation": float(rgb[m].std(axis=0).mean()),
        "diameter_px": feret, "diameter_mm": feret / px_per_mm if px_per_mm else float("nan"),
        "contrast": contrast, "area_px": int(m.sum()), "area_fraction": float(m.mean()),
        "centroid_y": float(centroid[0]), "centroid_x": float(centroid[1]),
        "orientation": float(np.arctan2(major[0], major[1])),
        "major_len": float(props.axis_major_length), "minor_len": float(props.axis_minor_length),
    }


def _load(item: Any, max_side: int | None) -> tuple[np.ndarray, str, float]:
    """Read a path or take an array; downscale to ``max_side``; return (uint8/float rgb, name, scale)."""
    if isinstance(item, (str, PathLike)):
        from PIL import Image

        path = Path(item)
        try:
            with Image.open(path) as im:
                original = max(im.size)
                if max_side:
                    im.draft("RGB", (max_side, max_side))  # fast JPEG downscale while decoding
                arr = np.asarray(im.convert("RGB"))
        except OSError as err:
            raise ValueError(f"{path.name}: cannot read image ({err})") from err
        name = path.name
    else:
        arr, name = np.asarray(item), ""
        original = max(arr.shape[:2]) if arr.ndim >= 2 else 1
    if max_side and arr.ndim == 3 and max(arr.shape[:2]) > max_side:
        factor = max_side / max(arr.shape[:2])
        shape = (round(arr.shape[0] * factor), round(arr.shape[1] * factor))
        arr = transform.resize(to_float_rgb(arr, name or "image"), shape, anti_aliasing=True)
    scale = max(arr.shape[:2]) / original if arr.ndim >= 2 else 1.0
    return arr, name, scale


def _frame_row(item: Any, mask: Any, i: int, max_side: int | None, px_per_mm: float | None,
               errors: str) -> tuple[dict[str, Any], str]:
    """One row of :func:`features_frame`: (features or error, name)."""
    arr, name, scale = _load(item, max_side)
    label = name or f"image {i}"
    try:
        if mask is not None and scale != 1.0:
            mask = transform.resize(np.asarray(mask, float), arr.shape[:2], order=1) > 0.5
        feats = abcd_features(arr, mask, px_per_mm=px_per_mm * scale if px_per_mm else None)
        feats["diameter_px"] /= scale
        feats["error"] = ""
    except ValueError as err:
        if errors == "raise":
            raise ValueError(f"features_frame: {label}: {err}") from err
        feats = {"error": str(err)}
    return feats, name or str(i)


def features_frame(images: Iterable[Any], masks: Iterable[Any] | None = None, *,
                   ids: Sequence[str] | None = None, px_per_mm: float | None = None,
                   max_side: int | None = 512, errors: str = "raise", n_jobs: int = 1) -> pd.DataFrame:
    """ABCD features (:func:`abcd_features`) of many images (arrays or paths), one row each.

    Images larger than ``max_side`` are downscaled first (``diameter_px`` stays in original pixels).
    ``errors="raise"`` raises ``ValueError`` naming the image; ``errors="nan"`` keeps a row of NaN
    with the message in column ``error``. The index is ``ids`` (or file names, or 0..n-1).
    ``n_jobs`` > 1 (or -1) uses joblib worker processes, with the same frame.

    Introduced in chapter 2 (dermoscopy and the ABCD rule).
    """
    if errors not in ("raise", "nan"):
        raise ValueError(f"features_frame: errors must be 'raise' or 'nan', got {errors!r}")
    if not isinstance(n_jobs, int) or n_jobs == 0 or n_jobs < -1:
        raise ValueError(f"features_frame: n_jobs must be a positive integer or -1, got {n_jobs!r}")
    items = list(images)
    mask_list = list(masks) if masks is not None else [None] * len(items)
    if len(mask_list) != len(items):
        raise ValueError(f"features_frame: {len(items)} images but {len(mask_list)} masks")
    from joblib import Parallel, delayed

    results = Parallel(n_jobs=n_jobs if len(items) > 1 else 1, batch_size=8)(  # n_jobs=1: in this process
        delayed(_frame_row)(item, mask, i, max_side, px_per_mm, errors)
        for i, (item, mask) in enumerate(zip(items, mask_list)))
    rows, names = [row for row, _ in results], [name for _, name in results]
    index = list(ids) if ids is not None else names
    if len(index) != len(rows):
        raise ValueError(f"features_frame: {len(rows)} images but {len(index)} ids")
    return pd.DataFrame(rows, index=pd.Index(index, name="image"))


def tds_like(frame: pd.DataFrame | dict[str, Any], d_score: float | None = None) -> Any:
    """A TDS-like score from computed features: 1.3 A + 0.1 B + 0.5 C (+ 0.5 D).

    The weights of Nachbar et al. (1994) on ``asymmetry_axes``, ``border_abrupt`` and
    ``colour_count``; D is left out unless ``d_score`` is given, so the published cut-offs do not apply.

    Introduced in chapter 2 (dermoscopy and the ABCD rule).
    """
    score = 1.3 * frame["asymmetry_axes"] + 0.1 * frame["border_abrupt"] + 0.5 * frame["colour_count"]
    if d_score is not None:
        score = score + 0.5 * d_score
    return score


def draw_abcd(ax: Any, image: Any, mask: Any, feats: dict[str, Any] | None = None,
              title: str | None = None) -> Any:
    """Draw the image, the lesion contour, its principal axes and the colours found on ``ax``.

    ``feats`` defaults to :func:`abcd_features`; the default title lists A, B, C and D. Returns ``ax``.

    Introduced in chapter 2 (dermoscopy and the ABCD rule).
    """
    rgb = to_float_rgb(image)
    m = _check_mask(mask, rgb.shape[:2])
    f = abcd_features(rgb, m) if feats is None else feats
    ax.imshow(rgb)
    ax.contour(m, levels=[0.5], colors="lime", linewidths=1.2)
    cy, cx, th = f["centroid_y"], f["centroid_x"], f["orientation"]
    for length, angle, style in ((f["major_len"], th, "-"), (f["minor_len"], th + np.pi / 2, "--")):
        dx, dy = np.cos(angle) * length / 2, np.sin(angle) * length / 2
        ax.plot([cx - dx, cx + dx], [cy - dy, cy + dy], style, color="cyan", lw=1)
    names = [n for n in f["colours"].split(";") if n]
    for k, name in enumerate(names):
        ax.text(0.02, 0.97 - 0.09 * k, name, transform=ax.transAxes, fontsize=7, va="top",
                color="black" if name in ("white", "light brown") else "white",
                bbox=dict(boxstyle="square,pad=0.15", lw=0.3,
                          fc=np.array(REFERENCE_COLOURS[name]) / 255.0))
    ax.set_xlim(-0.5, rgb.shape[1] - 0.5)  # axes that run past the lesion stay inside the image
    ax.set_ylim(rgb.shape[0] - 0.5, -0.5)
    ax.set_title(title if title is not None else
                 f"A={f['asymmetry']:.2f} B={f['compactness']:.2f} C={f['colour_count']} "
                 f"D={f['diameter_px']:.0f}px", fontsize=8)
    ax.set_axis_off()
    return ax
