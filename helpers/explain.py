"""Explaining a lesion classifier and measuring where it may fail.

Attribution maps from Captum (Grad-CAM, occlusion) as NumPy heat maps at image size; skin tone as
the individual typology angle (ITA) of the skin around a lesion; confusion cases and simulated
acquisition changes to probe a model; and a model card (Mitchell et al. 2019) laid out as Markdown.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from helpers.data import to_display
from helpers.features import field_of_view, segment_lesion, skin_ring, to_float_rgb

__all__ = [
    "default_target_layer", "gradcam", "occlusion_map", "overlay", "heat_inside", "confusion_cases",
    "ACQUISITION_CHANGES", "simulate_acquisition", "ita", "skin_ita", "ITA_CATEGORIES", "ita_category",
    "MODEL_CARD_SECTIONS", "render_model_card",
]


# Attribution maps (Captum)
def default_target_layer(model: nn.Module) -> nn.Module:
    """The layer whose feature map :func:`gradcam` explains by default: the last spatial one.

    EfficientNet-Lite0 -> ``_bn1`` (after the head convolution), ResNet -> ``layer4``, torchvision
    EfficientNet / ConvNeXt -> ``features[-1]``, any other model its last ``nn.Conv2d``
    (``ValueError`` when it has none).

    Not called in a chapter; used by `gradcam`.
    """
    net = getattr(model, "backbone", model)
    if hasattr(net, "_bn1") and hasattr(net, "_conv_head"):       # EfficientNetLite0
        return net._bn1
    if hasattr(net, "layer4"):                                     # torchvision ResNet
        return net.layer4
    features = getattr(net, "features", None)
    if isinstance(features, nn.Sequential) and len(features):      # EfficientNet-Bn, ConvNeXt
        return features[-1]
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ValueError(f"default_target_layer: {type(model).__name__} has no Conv2d layer; "
                         "pass target_layer explicitly")
    return convs[-1]


def _prepare(model: nn.Module, images: torch.Tensor, sign: int, meta: torch.Tensor | None,
             what: str) -> tuple[nn.Module, torch.Tensor, tuple | None]:
    """(signed model in eval mode, (N, C, H, W) images on its device, Captum's extra forward args)."""
    if sign not in (1, -1):
        raise ValueError(f"{what}: sign must be 1 (evidence for the output) or -1 (against), got {sign}")
    if not torch.is_tensor(images) or not images.is_floating_point():
        raise ValueError(f"{what}: images must be a float tensor (N, 3, H, W) as eval_transforms makes")
    x = images.unsqueeze(0) if images.ndim == 3 else images
    if x.ndim != 4:
        raise ValueError(f"{what}: expected shape (N, C, H, W) or (C, H, W), got {tuple(x.shape)}")
    model.eval()
    device = next(model.parameters()).device
    return _Signed(model, sign), x.to(device), (meta.to(device),) if meta is not None else None


class _Signed(nn.Module):
    """``sign * model(x, meta)``: sign -1 turns a melanoma logit into evidence for 'benign'."""

    def __init__(self, model: nn.Module, sign: int) -> None:
        super().__init__()
        self.model, self.sign = model, sign

    def forward(self, x: torch.Tensor, meta: torch.Tensor | None = None) -> torch.Tensor:
        out = self.model(x) if meta is None else self.model(x, meta)
        return out if self.sign == 1 else -out


def gradcam(model: nn.Module, images: torch.Tensor, target_layer: nn.Module | None = None, *, target: int = 0,
            sign: int = 1, meta: torch.Tensor | None = None, normalize: bool = True) -> np.ndarray:
    """Grad-CAM heat maps of ``model`` for a batch of images, at the images' size.

    ``images``: float (N, 3, H, W) or (3, H, W) as ``eval_transforms`` makes; ``sign=-1`` explains
    minus output ``target`` (evidence *against* melanoma); ``meta`` feeds a metadata branch.
    Captum's ``LayerGradCam`` (``relu_attributions=True``), upsampled bilinearly. Returns float32
    (N, H, W), each map divided by its maximum when ``normalize`` (an all-zero map stays zero).
    Leaves the model in eval mode.

    Introduced in chapter 11 (explainability and limits).
    """
    from captum.attr import LayerAttribution, LayerGradCam

    signed, x, extra = _prepare(model, images, sign, meta, "gradcam")
    cam = LayerGradCam(signed, target_layer if target_layer is not None else default_target_layer(model))
    with torch.enable_grad():
        attr = cam.attribute(x, target=target, additional_forward_args=extra, relu_attributions=True)
    up = LayerAttribution.interpolate(attr, tuple(x.shape[-2:]), interpolate_mode="bilinear")
    maps = up[:, 0].detach().float().cpu().numpy().clip(min=0)
    if normalize:
        top = maps.reshape(len(maps), -1).max(axis=1)
        maps = maps / np.where(top > 0, top, 1.0)[:, None, None]
    return maps.astype(np.float32)


def occlusion_map(model: nn.Module, images: torch.Tensor, window: int = 16, stride: int = 8,
                  baseline: float | torch.Tensor = 0.0, *, target: int = 0, sign: int = 1,
                  meta: torch.Tensor | None = None, batch_size: int = 64) -> np.ndarray:
    """Occlusion maps: the drop of the score when a ``window`` x ``window`` patch is covered.

    Captum's ``Occlusion`` slides the patch in steps of ``stride``, fills it with ``baseline``
    (0.0 is the ImageNet mean colour; a broadcastable tensor may give e.g. a skin colour) and
    averages ``score(image) - score(occluded)`` over the windows covering each pixel; the score is
    ``sign`` times the raw output ``target``, ``batch_size`` copies at a time. Returns float32
    (N, H, W) in logit units, not normalised, so maps of different images compare.

    Introduced in chapter 11 (explainability and limits).
    """
    from captum.attr import Occlusion

    signed, x, extra = _prepare(model, images, sign, meta, "occlusion_map")
    if not 1 <= stride <= window <= min(x.shape[-2:]):
        raise ValueError(f"occlusion_map: need 1 <= stride ({stride}) <= window ({window}) "
                         f"<= image side ({min(x.shape[-2:])})")
    if torch.is_tensor(baseline):
        baseline = baseline.to(x.device, x.dtype)
    with torch.no_grad():
        attr = Occlusion(signed).attribute(
            x, sliding_window_shapes=(x.shape[1], window, window), strides=(x.shape[1], stride, stride),
            baselines=baseline, target=target, additional_forward_args=extra,
            perturbations_per_eval=max(1, batch_size))
    return attr.mean(1).float().cpu().numpy().astype(np.float32)


def overlay(image: Any, heat: np.ndarray, alpha: float = 0.5, cmap: str = "jet",
            vmax: float | None = None) -> np.ndarray:
    """Blend a heat map over an image for display; returns (H, W, 3) floats in [0, 1].

    ``image``: a normalised (3, H, W) tensor or an RGB array. ``heat`` (H, W) is divided by ``vmax``
    (default its maximum; a common value puts several maps on one scale) and clipped to [0, 1];
    each pixel moves towards the colour map's colour by ``alpha * heat``.

    Introduced in chapter 11 (explainability and limits).
    """
    import matplotlib

    if not 0 <= alpha <= 1:
        raise ValueError(f"overlay: alpha must be in [0, 1], got {alpha}")
    rgb = to_display(image).astype(np.float64) / 255.0 if torch.is_tensor(image) else to_float_rgb(image)
    h = np.asarray(heat, dtype=np.float64)
    if h.shape != rgb.shape[:2]:
        raise ValueError(f"overlay: heat map of shape {h.shape} does not match the image's {rgb.shape[:2]}")
    if vmax is not None and not vmax > 0:
        raise ValueError(f"overlay: vmax must be > 0, got {vmax}")
    top = vmax if vmax is not None else max(float(h.max()), 0.0)
    h = np.clip(h / top, 0, 1) if top > 0 else np.zeros_like(h)
    colours = matplotlib.colormaps[cmap](h)[..., :3]
    w = (alpha * h)[..., None]
    return np.clip(rgb * (1 - w) + colours * w, 0, 1)


def heat_inside(heat: np.ndarray, mask: np.ndarray) -> float:
    """Share of a heat map's (positive) mass that lies inside ``mask``, in [0, 1].

    Compare it with ``mask.mean()``. A mask of another size is resized to the map's (nearest
    neighbour). NaN for a map without positive values.

    Introduced in chapter 11 (explainability and limits).
    """
    h = np.clip(np.asarray(heat, dtype=np.float64), 0, None)
    m = np.asarray(mask).astype(bool)
    if h.ndim != 2 or m.ndim != 2:
        raise ValueError(f"heat_inside: heat {h.shape} and mask {m.shape} must both be 2-D")
    if m.shape != h.shape:
        from skimage.transform import resize

        m = resize(m.astype(float), h.shape, order=0, anti_aliasing=False) > 0.5
    total = h.sum()
    return float(h[m].sum() / total) if total > 0 else float("nan")


# Choosing and perturbing test images
def confusion_cases(y: Any, p: Any, threshold: float, n: int = 2, seed: int = 0) -> dict[str, list[int]]:
    """Row positions of ``n`` true positives, false positives, false negatives and true negatives.

    ``p >= threshold`` is positive. Returns ``{"TP": [...], "FP": [...], "FN": [...], "TN": [...]}``,
    ``n`` sorted positions of each drawn with ``seed`` without replacement (all when fewer).

    Introduced in chapter 11 (explainability and limits).
    """
    y_arr, p_arr = np.asarray(y, dtype=float), np.asarray(p, dtype=float)
    if y_arr.shape != p_arr.shape or y_arr.ndim != 1:
        raise ValueError(f"confusion_cases: y {y_arr.shape} and p {p_arr.shape} must be 1-D of one length")
    if not np.isin(y_arr, (0, 1)).all():
        raise ValueError("confusion_cases: y must hold only 0 and 1")
    called = p_arr >= threshold
    masks = {"TP": (y_arr == 1) & called, "FP": (y_arr == 0) & called,
             "FN": (y_arr == 1) & ~called, "TN": (y_arr == 0) & ~called}
    rng = np.random.default_rng(seed)
    out = {}
    for name, mask in masks.items():
        where = np.flatnonzero(mask)
        pick = where if len(where) <= n else rng.choice(where, size=n, replace=False)
        out[name] = sorted(int(i) for i in pick)
    return out


#: The acquisition changes of chapter 11 and their default strength (see :func:`simulate_acquisition`).
ACQUISITION_CHANGES: dict[str, float] = {"blur": 3.0, "colour cast": 0.6, "exposure": 0.6, "jpeg": 10}


def simulate_acquisition(image: torch.Tensor, kind: str, strength: float | None = None) -> torch.Tensor:
    """One image as another camera or light might have recorded it: a ``uint8`` (3, H, W) tensor.

    ``strength`` (default :data:`ACQUISITION_CHANGES`) is, by ``kind``: the blur's sigma in pixels;
    the warm "colour cast" (red kept, green times ``(1 + s) / 2``, blue times ``s``); the
    "exposure" gain of every channel; the JPEG quality (1-100) of a re-encoding.

    Introduced in chapter 11 (explainability and limits).
    """
    from torchvision.io import decode_jpeg, encode_jpeg
    from torchvision.transforms.v2 import functional as F

    if not torch.is_tensor(image) or image.dtype != torch.uint8 or image.ndim != 3 or image.shape[0] != 3:
        raise ValueError("simulate_acquisition: image must be a uint8 tensor (3, H, W)")
    if kind not in ACQUISITION_CHANGES:
        raise ValueError(f"simulate_acquisition: unknown kind {kind!r}; "
                         f"use one of {', '.join(ACQUISITION_CHANGES)}")
    s = float(ACQUISITION_CHANGES[kind] if strength is None else strength)
    if kind == "blur":
        if s <= 0:
            raise ValueError(f"simulate_acquisition: blur needs a sigma > 0, got {s}")
        k = 2 * int(np.ceil(3 * s)) + 1
        return F.gaussian_blur(image, [k, k], [s, s])
    if kind == "jpeg":
        if not 1 <= s <= 100:
            raise ValueError(f"simulate_acquisition: JPEG quality must be in 1..100, got {s}")
        return decode_jpeg(encode_jpeg(image.contiguous(), quality=int(round(s))))
    if s < 0:
        raise ValueError(f"simulate_acquisition: {kind} needs a factor >= 0, got {s}")
    gains = torch.tensor([1.0, (1.0 + s) / 2, s]) if kind == "colour cast" else torch.full((3,), s)
    return (image.float() * gains.view(3, 1, 1)).round().clamp(0, 255).to(torch.uint8)


# Skin tone: the individual typology angle
#: ITA skin-colour categories and their lower bounds in degrees (Chardon et al. 1991;
#: Del Bino and Bernerd 2013); a bound belongs to the category below it.
ITA_CATEGORIES: tuple[tuple[str, float], ...] = (
    ("very light", 55.0), ("light", 41.0), ("intermediate", 28.0), ("tan", 10.0), ("brown", -30.0),
    ("dark", -np.inf))


def ita(L: Any, b: Any) -> Any:
    """Individual typology angle in degrees: ``arctan((L* - 50) / b*) * 180 / pi`` (CIELAB).

    Computed as ``arctan2(L - 50, b)``: the same for the positive ``b*`` of skin, defined at 0.

    Not called in a chapter; used by `skin_ita`.
    """
    out = np.degrees(np.arctan2(np.asarray(L, dtype=np.float64) - 50.0, np.asarray(b, dtype=np.float64)))
    return float(out) if np.ndim(out) == 0 else out


def skin_ita(image: Any, mask: Any | None = None, width: float = 0.03, min_pixels: int = 30) -> float:
    """ITA of the skin around a lesion: the median L* and b* of a ring outside its border.

    ``mask`` (True on the lesion) is segmented when ``None``. The ring lies ``width`` to
    ``2 * width`` times the image's long side outside the lesion, inside the field of view; with
    fewer than ``min_pixels`` there, all skin of the field is used. ``ValueError`` if none is visible.

    Introduced in chapter 11 (explainability and limits).
    """
    from skimage import color, filters

    rgb = to_float_rgb(image)
    m = segment_lesion(rgb) if mask is None else np.asarray(mask).astype(bool)
    if m.shape != rgb.shape[:2]:
        raise ValueError(f"skin_ita: mask of shape {m.shape} does not match the image's {rgb.shape[:2]}")
    gray = color.rgb2gray(rgb)
    fov = field_of_view(filters.gaussian(gray, sigma=max(0.5, 0.01 * max(gray.shape))))
    ring = skin_ring(m, max(2, int(round(width * max(m.shape))))) & fov
    if ring.sum() < min_pixels:
        ring = fov & ~m
    if ring.sum() < min_pixels:
        raise ValueError(f"skin_ita: only {int(ring.sum())} skin pixels visible (need {min_pixels})")
    lab = color.rgb2lab(rgb[ring][None])[0]
    return ita(np.median(lab[:, 0]), np.median(lab[:, 2]))


def ita_category(values: Any) -> Any:
    """ITA category name(s) of angle(s) in degrees (see :data:`ITA_CATEGORIES`).

    A number gives a string (None for NaN); a sequence an ordered categorical Series, very light first.

    Introduced in chapter 11 (explainability and limits).
    """
    names = [n for n, _ in ITA_CATEGORIES][::-1]                   # dark .. very light
    edges = [-np.inf] + [lo for _, lo in ITA_CATEGORIES][::-1][1:] + [np.inf]
    scalar = np.ndim(values) == 0
    s = pd.Series([values] if scalar else values, dtype="float64",
                  index=None if scalar or not isinstance(values, pd.Series) else values.index)
    cut = pd.cut(s, edges, labels=names, right=True)
    cut = cut.cat.reorder_categories(names[::-1], ordered=True)
    return (None if pd.isna(cut.iloc[0]) else str(cut.iloc[0])) if scalar else cut


# Model card
#: The sections of a model card, in the order of Mitchell et al. (2019).
MODEL_CARD_SECTIONS: tuple[str, ...] = (
    "Model details", "Intended use", "Factors", "Metrics", "Evaluation data", "Training data",
    "Quantitative analyses", "Ethical considerations", "Caveats and recommendations",
)


def render_model_card(card: Mapping[str, Any]) -> str:
    """Lay out a model card as Markdown, its sections in the order of Mitchell et al. (2019).

    ``card`` maps each of :data:`MODEL_CARD_SECTIONS` to a paragraph, a list (bullets) or a mapping
    (``**key**: value`` bullets). A missing, empty or unknown section raises ``ValueError`` naming it.

    Introduced in chapter 11 (explainability and limits).
    """
    missing = [s for s in MODEL_CARD_SECTIONS if not card.get(s)]
    if missing:
        raise ValueError(f"render_model_card: section(s) missing or empty: {', '.join(missing)}")
    unknown = [s for s in card if s not in MODEL_CARD_SECTIONS]
    if unknown:
        raise ValueError(f"render_model_card: unknown section(s) {', '.join(map(repr, unknown))}; "
                         f"use {', '.join(MODEL_CARD_SECTIONS)}")
    lines: list[str] = []
    for section in MODEL_CARD_SECTIONS:
        body = card[section]
        lines.append(f"**{section}.**")
        if isinstance(body, str):
            lines += ["", body.strip()]
        elif isinstance(body, Mapping):
            lines += [""] + [f"- **{k}**: {v}" for k, v in body.items()]
        elif isinstance(body, Sequence):
            lines += [""] + [f"- {item}" for item in body]
        else:
            raise ValueError(f"render_model_card: section {section!r} must be a string, list or "
                             f"mapping, got {type(body).__name__}")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"
