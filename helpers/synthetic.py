"""Synthetic dermoscopy-like images: nothing here is a real patient.

:func:`make_lesion` paints a lesion on skin as a dermoscope shows it and gives each class a coarse
textbook look; melanocytic lesions draw an *atypia* score whose MEL and NV distributions overlap,
so no classifier can be perfect. ``python -m tools.samples`` writes ``data_samples/`` with them.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi
from skimage import draw

from helpers.vocab import CLASSES_2019

CLASSES = CLASSES_2019
#: Written at the top of a folder of synthetic samples (``tools.samples`` only rewrites its own).
MARKER = ".synthetic-samples"

#: Colours in RGB, 0..1.
PALETTE = {
    "light brown": (0.66, 0.46, 0.32), "dark brown": (0.38, 0.22, 0.14), "black": (0.10, 0.07, 0.07),
    "blue-grey": (0.40, 0.44, 0.52), "red": (0.74, 0.30, 0.30), "white": (0.92, 0.90, 0.88),
    "pink": (0.90, 0.62, 0.60), "purple": (0.45, 0.16, 0.33), "vessel red": (0.70, 0.10, 0.15),
    "scale": (0.95, 0.92, 0.80),
}


@dataclass(frozen=True)
class NevusStyle:
    """A person's own nevus look: the colour, size and atypia their nevi share (the "ugly duckling").

    Introduced in chapter 1 (skin disease and melanoma).
    """

    brown: tuple[float, float, float] = PALETTE["light brown"]
    size: float = 1.0
    atypia: float = 0.2


def noise(rng: np.random.Generator, size: int, sigma: float) -> np.ndarray:
    """Smooth Gaussian noise, zero mean and unit standard deviation.

    Not called in a chapter; used by :func:`make_lesion` and ``tools.samples``.
    """
    field = ndi.gaussian_filter(rng.standard_normal((size, size)), sigma, mode="wrap")
    return (field - field.mean()) / (field.std() + 1e-9)


def _mix(a: np.ndarray, colour, weight: np.ndarray) -> np.ndarray:
    """Blend image ``a`` towards ``colour`` by ``weight`` (0..1, per pixel)."""
    w = np.clip(weight, 0, 1)[..., None]
    return a * (1 - w) + np.asarray(colour, dtype=float) * w


def _skin(rng: np.random.Generator, size: int, tone: float) -> np.ndarray:
    """Skin of the given tone (0 light .. 1 dark) with soft texture."""
    base = np.array([0.93, 0.78, 0.70]) * (1 - tone) + np.array([0.42, 0.27, 0.19]) * tone
    texture = 0.03 * noise(rng, size, 12) + 0.015 * noise(rng, size, 1.5)
    redness = 0.02 * noise(rng, size, 25)
    img = base[None, None, :] * (1 + texture[..., None])
    img[..., 0] += redness
    return img


def _polar(size: int, cx: float, cy: float, stretch: float, angle: float):
    """Distance and angle of every pixel from (cx, cy) in an ellipse-stretched frame."""
    yy, xx = np.mgrid[0:size, 0:size].astype(float)
    dx, dy = xx - cx, yy - cy
    u = dx * np.cos(angle) + dy * np.sin(angle)
    v = (-dx * np.sin(angle) + dy * np.cos(angle)) * stretch
    return np.hypot(u, v), np.arctan2(v, u)


def _border(rng: np.random.Generator, theta: np.ndarray, asymmetry: float, irregularity: float):
    """Relative radius r(theta): low harmonics = asymmetry (A), high harmonics = border (B)."""
    r = np.ones_like(theta)
    for k in (1, 2, 3):
        r += asymmetry * rng.uniform(0.3, 1.0) / k * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    for k in range(5, 16):
        r += irregularity * rng.uniform(0, 1) / np.sqrt(k) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    return np.clip(r, 0.35, None)


def _blobs(rng: np.random.Generator, size: int, inside: np.ndarray, fraction: float, sigma: float,
           centre_bias: np.ndarray | None = None) -> np.ndarray:
    """A random patchy region covering about ``fraction`` of the lesion."""
    field = noise(rng, size, sigma)
    if centre_bias is not None:
        field = field + centre_bias
    if fraction <= 0 or not inside.any():
        return np.zeros((size, size), bool)
    cut = np.quantile(field[inside], 1 - fraction)
    return (field > cut) & inside


def _curves(rng: np.random.Generator, size: int, n: int, length: float, width: float) -> np.ndarray:
    """``n`` thin, gently bending strokes (hairs, fissures) as a soft 0..1 map."""
    canvas = np.zeros((size, size))
    steps = int(length)
    for _ in range(n):
        x0, y0 = rng.uniform(0, size, 2)
        heading = rng.uniform(0, 2 * np.pi) + np.cumsum(rng.normal(0, 0.004) + rng.normal(0, 0.01, steps))
        x, y = x0 + np.cumsum(np.cos(heading)), y0 + np.cumsum(np.sin(heading))
        ok = (x >= 0) & (x < size) & (y >= 0) & (y < size)
        canvas[y[ok].astype(int), x[ok].astype(int)] = 1.0
    return np.clip(ndi.gaussian_filter(canvas, width) * (2.5 / width), 0, 1)


def _vessels(rng: np.random.Generator, size: int, cx: float, cy: float, radius: float, n: int) -> np.ndarray:
    """Arborizing (tree-like, branching) vessels, as seen in basal cell carcinoma."""
    canvas = np.zeros((size, size))
    stack = [(cx + rng.normal(0, radius / 3), cy + rng.normal(0, radius / 3),
              rng.uniform(0, 2 * np.pi), radius * 0.7, 3) for _ in range(n)]
    while stack:
        x, y, heading, length, depth = stack.pop()
        x2, y2 = x + length * np.cos(heading), y + length * np.sin(heading)
        rr, cc, val = draw.line_aa(int(y), int(x), int(y2), int(x2))
        ok = (rr >= 0) & (rr < size) & (cc >= 0) & (cc < size)
        canvas[rr[ok], cc[ok]] = np.maximum(canvas[rr[ok], cc[ok]], val[ok] * depth / 3)
        if depth > 1:
            for turn in (-1, 1):
                stack.append((x2, y2, heading + turn * rng.uniform(0.3, 0.9), length * 0.6, depth - 1))
    return np.clip(ndi.gaussian_filter(canvas, 0.7) * 2.2, 0, 1)


def _dots(rng: np.random.Generator, size: int, where: np.ndarray, n: int, radius: float) -> np.ndarray:
    """``n`` small round dots placed at random pixels of ``where``."""
    canvas = np.zeros((size, size), bool)
    ys, xs = np.nonzero(where)
    if len(ys) == 0:
        return canvas
    for i in rng.integers(0, len(ys), n):
        rr, cc = draw.disk((ys[i], xs[i]), radius * rng.uniform(0.6, 1.4), shape=canvas.shape)
        canvas[rr, cc] = True
    return canvas


def _paint_melanocytic(rng, size, rho, theta, inside, atypia: float, style: NevusStyle | None, label: str):
    """Colours of a nevus or melanoma, more of them with atypia; returns (colour image, blur sigma)."""
    brown = np.array(style.brown if style is not None and label == "NV" else PALETTE["light brown"])
    brown = brown * rng.uniform(0.9, 1.1)
    dark = np.array(PALETTE["dark brown"]) * rng.uniform(0.85, 1.15)
    # A symmetric centre-to-edge gradient between the lesion's two browns.
    img = _mix(np.broadcast_to(dark, (size, size, 3)).copy(), brown, rho * rng.uniform(0.5, 1.0))
    # Pigment network: fine dark meshes, more irregular with atypia.
    net = noise(rng, size, 1.6 + 1.5 * atypia)
    img = _mix(img, dark * 0.8, 0.35 * (np.abs(net) < 0.35) * inside)
    # Extra colours, each as an off-centre patch (asymmetric colour = A and C of ABCD).
    n_extra = int(np.clip(np.round(4.5 * atypia - 0.8 + rng.normal(0, 0.5)), 0, 4))
    extras = ["black", "blue-grey", "white", "red"][:n_extra]
    towards = rng.uniform(0, 2 * np.pi)  # extra colours gather on one side of the lesion
    bias = 2.0 * atypia * rho * np.cos(theta - towards)
    for name in extras:
        region = _blobs(rng, size, inside, rng.uniform(0.08, 0.22), rng.uniform(4, 9), bias)
        strength = {"black": 0.9, "blue-grey": 0.75, "white": 0.55, "red": 0.5}[name]
        img = _mix(img, PALETTE[name], strength * ndi.gaussian_filter(region.astype(float), 1.5))
    blur = 1.0 + 4.0 * atypia * rng.uniform(0.6, 1.2)
    return img, blur


def _paint_other(rng, size, rho, inside, label: str, cx, cy, radius):
    """Coarse looks of the non-melanocytic classes; returns (colour image, blur sigma)."""
    full = np.ones((size, size, 3))
    tex = noise(rng, size, 2.0)
    if label == "BCC":  # pinkish translucent, arborizing vessels, blue-grey ovoid nests
        img = _mix(full * PALETTE["pink"], PALETTE["white"], 0.35 + 0.1 * tex)
        nests = _dots(rng, size, inside & (rho < 0.8), rng.integers(0, 5), 5)
        img = _mix(img, PALETTE["blue-grey"], 0.8 * nests)
        img = _mix(img, PALETTE["vessel red"], _vessels(rng, size, cx, cy, radius, rng.integers(2, 5)))
        return img, 3.0
    if label == "BKL":  # light-brown waxy, milia-like cysts, fissures
        img = _mix(full * (0.70, 0.54, 0.38), PALETTE["dark brown"], 0.25 + 0.15 * tex)
        img = _mix(img, PALETTE["dark brown"], 0.8 * _curves(rng, size, rng.integers(4, 10), radius, 1.0))
        img = _mix(img, PALETTE["white"], 0.9 * _dots(rng, size, inside, rng.integers(4, 14), 2.2))
        return img, 1.0
    if label == "AK":  # reddish rough scaly patch, ill-defined border
        img = _mix(full * (0.86, 0.50, 0.45), PALETTE["red"], 0.3 + 0.2 * tex)
        scale = noise(rng, size, 1.2) > 1.0
        img = _mix(img, PALETTE["scale"], 0.7 * scale)
        img = _mix(img, PALETTE["white"], 0.8 * _dots(rng, size, inside, 25, 1.8))
        return img, 6.0
    if label == "DF":  # central white scar-like patch, faint brown peripheral ring
        scar = np.clip(1.4 - 1.6 * rho + 0.1 * tex, 0, 1)
        img = _mix(full * (0.70, 0.52, 0.40), PALETTE["white"], scar)
        return img, 4.0
    if label == "VASC":  # red / purple lacunae separated by pale septa
        img = full * (0.85, 0.55, 0.58)
        for colour in ("vessel red", "purple"):
            lacunae = _dots(rng, size, inside & (rho < 0.9), rng.integers(12, 25), 7)
            img = _mix(img, PALETTE[colour], 0.9 * lacunae)
        return img, 1.5
    if label == "SCC":  # pink-white keratotic, central scale, dotted/glomerular vessels
        img = _mix(full * PALETTE["pink"], PALETTE["white"], 0.4 + 0.15 * tex)
        img = _mix(img, PALETTE["scale"], np.clip(1.6 - 2.4 * rho + 0.3 * tex, 0, 1))
        dots = _dots(rng, size, inside & (rho > 0.4), rng.integers(15, 35), 1.5)
        img = _mix(img, PALETTE["vessel red"], 0.9 * dots)
        return img, 2.5
    raise ValueError(f"unknown class {label!r}; expected one of {', '.join(CLASSES)}")


def make_lesion(label: str, seed: int, size: int = 256, skin_tone: float | None = None,
                hair: bool | None = None, style: NevusStyle | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Paint one synthetic dermoscopy image of class ``label``; return (RGB uint8, lesion mask).

    Deterministic in ``seed``, with draws in a fixed order, so forcing ``skin_tone`` (0 light to
    1 dark) or ``hair`` changes only that aspect. ``style`` gives nevi a person's shared look.

    Introduced in chapter 1 (skin disease and melanoma).
    """
    if label not in CLASSES:
        raise ValueError(f"unknown class {label!r}; expected one of {', '.join(CLASSES)}")
    if size < 32:
        raise ValueError(f"size {size} too small; use at least 32 pixels")
    rng = np.random.default_rng(seed)
    drawn_tone, drawn_hair = rng.beta(1.3, 3.0), rng.random() < 0.3  # always drawn: fixed order
    tone = drawn_tone if skin_tone is None else float(np.clip(skin_tone, 0, 1))
    has_hair = drawn_hair if hair is None else bool(hair)

    # Atypia: MEL ~ Beta(5, 2), NV ~ Beta(1.6, 5) -> overlapping, not separable.
    if label == "MEL":
        atypia = rng.beta(5.0, 2.0)
    elif label == "NV" and style is None:
        atypia = rng.beta(1.6, 5.0)
    elif label == "NV":
        atypia = float(np.clip(style.atypia + rng.normal(0, 0.05), 0, 1))
    else:
        atypia = rng.beta(2.0, 3.0)

    # Shape: size (D), asymmetry (A) and border irregularity (B) rise with atypia.
    scale = {"MEL": 0.13 + 0.10 * atypia, "NV": 0.12 + 0.09 * atypia, "DF": 0.13, "VASC": 0.15,
             "AK": 0.24, "BKL": 0.22, "BCC": 0.21, "SCC": 0.20}[label]
    if label == "NV" and style is not None:
        scale *= style.size
    radius = size * scale * rng.uniform(0.75, 1.25)
    melanocytic = label in ("MEL", "NV")
    asym = 0.05 + 0.35 * atypia if melanocytic else 0.15
    irreg = 0.02 + 0.16 * atypia ** 1.5 if melanocytic else 0.08
    cx, cy = size / 2 + rng.normal(0, size * 0.04, 2)
    dist, theta = _polar(size, cx, cy, rng.uniform(1.0, 1.3), rng.uniform(0, np.pi))
    r_theta = radius * _border(rng, theta, asym, irreg)
    rho = dist / r_theta  # 0 at the centre, 1 on the border
    mask = rho < 1.0

    skin = _skin(rng, size, tone)
    if melanocytic:
        colour, blur = _paint_melanocytic(rng, size, rho, theta, mask, atypia, style, label)
    else:
        colour, blur = _paint_other(rng, size, rho, mask, label, cx, cy, radius)
    # On darker skin lesions look darker too (and stay visible): scale the lesion by the tone.
    colour = colour * (1 - 0.6 * tone) * (1 + 0.05 * noise(rng, size, 3.0))[..., None]
    alpha = ndi.gaussian_filter(mask.astype(float), blur)
    img = skin * (1 - alpha[..., None]) + colour * alpha[..., None]

    hairs = _curves(rng, size, rng.integers(3, 12), size * 0.8, 0.6)
    if has_hair:
        img = _mix(img, (0.12, 0.09, 0.08), 0.9 * hairs)

    # Dermoscope: a round field of view, dark outside, with a soft rim.
    fx, fy = size / 2 + rng.normal(0, size * 0.02, 2)
    field_r = size * rng.uniform(0.50, 0.62)
    yy, xx = np.mgrid[0:size, 0:size]
    edge = np.clip((np.hypot(xx - fx, yy - fy) - field_r) / (size * 0.06) + 1, 0, 1)
    falloff = 1 - 0.12 * (np.hypot(xx - fx, yy - fy) / field_r) ** 2
    img = img * (1 - 0.92 * edge[..., None]) * falloff[..., None]
    img = img + 0.012 * rng.standard_normal(img.shape)
    return (np.clip(img, 0, 1) * 255).round().astype(np.uint8), mask


def another_photo(img: np.ndarray, seed: int) -> np.ndarray:
    """The same lesion photographed again: rotated/flipped, slightly brighter or darker.

    Not called in a chapter; used by ``tools.samples`` (repeat images of a lesion).
    """
    rng = np.random.default_rng(seed)
    out = np.rot90(img, int(rng.integers(0, 4)))
    if rng.random() < 0.5:
        out = out[:, ::-1]
    gain = rng.uniform(0.92, 1.08)
    return np.clip(out.astype(float) * gain, 0, 255).round().astype(np.uint8)
