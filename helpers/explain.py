"""Explaining a lesion classifier and measuring where it may fail: attribution maps and skin tone.

Attribution maps come from `Captum <https://captum.ai>`_, PyTorch's maintained
interpretability library; this module only picks sensible defaults for the
book's models and returns NumPy heat maps at image size:

- :func:`gradcam` -- Grad-CAM (Selvaraju et al. 2017): the last convolutional
  feature map, weighted by the gradient of the score, upsampled to the image
  (``captum.attr.LayerGradCam`` + ``LayerAttribution.interpolate``);
- :func:`occlusion_map` -- occlusion (Zeiler and Fergus 2014): how much the
  score drops when a square patch of the image is covered
  (``captum.attr.Occlusion``);
- :func:`overlay` -- a heat map blended over the image, for display;
- :func:`heat_inside` -- the share of a heat map that falls inside a mask
  (e.g. the lesion), a number to compare with the mask's share of the image.

Skin tone, measured from the image rather than asked from the patient:

- :func:`ita` -- the individual typology angle (ITA, Chardon et al. 1991),
  ``arctan((L* - 50) / b*)`` in degrees, from CIELAB lightness and yellowness;
- :func:`skin_ita` -- the ITA of the skin ring around a segmented lesion;
- :func:`ita_category` -- the six ITA skin-colour categories (very light ..
  dark) used in dermatology and in fairness audits of skin-lesion classifiers.

Choosing and perturbing test images:

- :func:`confusion_cases` -- true and false positives and negatives at a
  threshold, a few of each, drawn with a seed;
- :func:`simulate_acquisition` -- a change of camera or light simulated on an
  image (blur, colour cast, exposure, JPEG quality).

And :func:`render_model_card`, which lays out a model card (Mitchell et al.
2019) as Markdown and refuses one with a section missing.
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
    "default_target_layer",
    "gradcam",
    "occlusion_map",
    "overlay",
    "heat_inside",
    "confusion_cases",
    "ACQUISITION_CHANGES",
    "simulate_acquisition",
    "ita",
    "skin_ita",
    "ITA_CATEGORIES",
    "ita_category",
    "MODEL_CARD_SECTIONS",
    "render_model_card",
]


# ----------------------------------------------------------------------------------------
# Attribution maps (Captum)
# ----------------------------------------------------------------------------------------

def default_target_layer(model: nn.Module) -> nn.Module:
    """The layer whose feature map :func:`gradcam` explains by default: the last spatial one.

    For the book's :class:`helpers.models.LesionClassifier` backbones:
    EfficientNet-Lite0 -> ``_bn1`` (the 1280-channel map after the head
    convolution and its batch norm, which the network passes through ReLU6 and
    averages), ResNet -> ``layer4``, torchvision EfficientNet / ConvNeXt ->
    ``features[-1]``. Any other model: its last ``nn.Conv2d``. Raises
    ``ValueError`` when the model has no convolution at all.

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


def _as_batch(images: torch.Tensor, what: str) -> torch.Tensor:
    if not torch.is_tensor(images) or not images.is_floating_point():
        raise ValueError(f"{what}: images must be a float tensor (N, 3, H, W) as eval_transforms makes")
    if images.ndim == 3:
        images = images.unsqueeze(0)
    if images.ndim != 4:
        raise ValueError(f"{what}: expected shape (N, C, H, W) or (C, H, W), got {tuple(images.shape)}")
    return images


class _Signed(nn.Module):
    """``sign * model(x, meta)``: sign -1 turns a melanoma logit into evidence for 'benign'."""

    def __init__(self, model: nn.Module, sign: int) -> None:
        super().__init__()
        self.model, self.sign = model, sign

    def forward(self, x: torch.Tensor, meta: torch.Tensor | None = None) -> torch.Tensor:
        out = self.model(x) if meta is None else self.model(x, meta)
        return out if self.sign == 1 else -out


def _check_sign(sign: int, what: str) -> None:
    if sign not in (1, -1):
        raise ValueError(f"{what}: sign must be 1 (evidence for the output) or -1 (against), got {sign}")


def _normalise(maps: np.ndarray) -> np.ndarray:
    top = maps.reshape(len(maps), -1).max(axis=1)
    top = np.where(top > 0, top, 1.0)
    return maps / top[:, None, None]


def gradcam(
    model: nn.Module,
    images: torch.Tensor,
    target_layer: nn.Module | None = None,
    *,
    target: int = 0,
    sign: int = 1,
    meta: torch.Tensor | None = None,
    normalize: bool = True,
) -> np.ndarray:
    """Grad-CAM heat maps of ``model`` for a batch of images, at the images' size.

    ``images``: float tensor (N, 3, H, W) (or one image (3, H, W)) prepared as for
    prediction (``helpers.data.eval_transforms``). ``target_layer`` defaults to
    :func:`default_target_layer`. ``target`` is the output explained (0 for the
    book's one-logit melanoma models); ``sign=-1`` explains minus that output,
    i.e. the evidence *against* melanoma. ``meta`` is passed to models with a
    metadata branch. Captum's ``LayerGradCam`` weights each channel of the
    layer's output by the mean gradient of the score and keeps the positive
    part of their sum (``relu_attributions=True``);
    ``LayerAttribution.interpolate`` upsamples it bilinearly. Returns float32
    (N, H, W), each map divided by its maximum when ``normalize`` (an all-zero
    map, no positive evidence at all, stays zero). The model is put in eval
    mode and left there.

    Introduced in chapter 11 (explainability and limits).
    """
    from captum.attr import LayerAttribution, LayerGradCam

    _check_sign(sign, "gradcam")
    x = _as_batch(images, "gradcam")
    layer = target_layer if target_layer is not None else default_target_layer(model)
    model.eval()
    device = next(model.parameters()).device
    x = x.to(device)
    extra = (meta.to(device),) if meta is not None else None
    cam = LayerGradCam(_Signed(model, sign), layer)
    with torch.enable_grad():
        attr = cam.attribute(x, target=target, additional_forward_args=extra, relu_attributions=True)
    up = LayerAttribution.interpolate(attr, tuple(x.shape[-2:]), interpolate_mode="bilinear")
    maps = up[:, 0].detach().float().cpu().numpy().clip(min=0)
    return (_normalise(maps) if normalize else maps).astype(np.float32)


def occlusion_map(
    model: nn.Module,
    images: torch.Tensor,
    window: int = 16,
    stride: int = 8,
    baseline: float | torch.Tensor = 0.0,
    *,
    target: int = 0,
    sign: int = 1,
    meta: torch.Tensor | None = None,
    batch_size: int = 64,
) -> np.ndarray:
    """Occlusion maps: the drop of the score when a ``window`` x ``window`` patch is covered.

    Captum's ``Occlusion`` slides the patch over the image in steps of
    ``stride`` pixels, replaces it by ``baseline`` (0.0 in the normalised
    input is the ImageNet mean colour, a neutral grey-beige; a tensor
    broadcastable to the images may give e.g. a skin colour), and records
    ``score(image) - score(occluded image)`` on the covered pixels, averaged over
    all windows that cover a pixel. Scores are the model's raw output
    ``target`` (the melanoma logit), times ``sign``. Positive values: covering
    the region lowered the score, so the region held evidence for it.
    ``batch_size`` occluded copies are scored at once. Returns float32
    (N, H, W) in logit units (not normalised, so maps of different images can
    be compared).

    Introduced in chapter 11 (explainability and limits).
    """
    from captum.attr import Occlusion

    _check_sign(sign, "occlusion_map")
    x = _as_batch(images, "occlusion_map")
    if not 1 <= stride <= window <= min(x.shape[-2:]):
        raise ValueError(f"occlusion_map: need 1 <= stride ({stride}) <= window ({window}) "
                         f"<= image side ({min(x.shape[-2:])})")
    model.eval()
    device = next(model.parameters()).device
    x = x.to(device)
    if torch.is_tensor(baseline):
        baseline = baseline.to(device, x.dtype)
    extra = (meta.to(device),) if meta is not None else None
    occ = Occlusion(_Signed(model, sign))
    with torch.no_grad():
        attr = occ.attribute(x, sliding_window_shapes=(x.shape[1], window, window),
                             strides=(x.shape[1], stride, stride), baselines=baseline,
                             target=target, additional_forward_args=extra,
                             perturbations_per_eval=max(1, batch_size))
    return attr.mean(1).float().cpu().numpy().astype(np.float32)


def _display_rgb(image: Any) -> np.ndarray:
    """(H, W, 3) float in [0, 1] from a normalised (3, H, W) tensor or an RGB array."""
    if torch.is_tensor(image):
        return to_display(image).astype(np.float64) / 255.0

    return to_float_rgb(image)


def overlay(image: Any, heat: np.ndarray, alpha: float = 0.5, cmap: str = "jet",
            vmax: float | None = None) -> np.ndarray:
    """Blend a heat map over an image for display; returns (H, W, 3) floats in [0, 1].

    ``image``: a normalised (3, H, W) tensor (as :func:`gradcam` takes) or an
    RGB array (uint8, or floats in [0, 1]). ``heat``: (H, W), divided by
    ``vmax`` (default: its own maximum; pass a common value to put several maps
    on one scale) and clipped to [0, 1], so negative values count as 0. Each
    pixel moves towards the colour map's colour in proportion to its heat,
    ``alpha * heat``: cold regions show the image unchanged and a pixel at
    ``vmax`` is ``1 - alpha`` image and ``alpha`` colour.

    Introduced in chapter 11 (explainability and limits).
    """
    import matplotlib

    if not 0 <= alpha <= 1:
        raise ValueError(f"overlay: alpha must be in [0, 1], got {alpha}")
    rgb = _display_rgb(image)
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

    Compare it with ``mask.mean()``, the share a heat map spread evenly would
    put there. A mask of another size (e.g. the lesion segmented at 256 px for
    a 128 px map) is resized to the map's shape first (nearest neighbour).
    Returns NaN for a map without positive values.

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


# ----------------------------------------------------------------------------------------
# Choosing and perturbing test images
# ----------------------------------------------------------------------------------------

def confusion_cases(y: Any, p: Any, threshold: float, n: int = 2, seed: int = 0) -> dict[str, list[int]]:
    """Row positions of ``n`` true positives, false positives, false negatives and true negatives.

    ``y``: 0/1 truth; ``p``: scores; a score ``>= threshold`` is called
    positive (as :func:`helpers.metrics.confusion_matrix` does). Returns
    ``{"TP": [...], "FP": [...], "FN": [...], "TN": [...]}`` with ``n``
    positions drawn without replacement (seeded; all of them, sorted, when a
    case has fewer than ``n``). Raises ``ValueError`` on lengths that differ or
    a ``y`` that is not 0/1.

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

    ``kind`` and ``strength`` (default: :data:`ACQUISITION_CHANGES`):

    - ``"blur"``: Gaussian blur of standard deviation ``strength`` pixels (an
      out-of-focus or lower-resolution camera);
    - ``"colour cast"``: a warm light, red kept, green times ``(1 + strength) / 2``,
      blue times ``strength`` (0.6: green 0.8, blue 0.6), a per-channel gain;
    - ``"exposure"``: every channel times ``strength`` (0.6: darker);
    - ``"jpeg"``: encoded and decoded again as JPEG of quality ``strength``
      (1-100; 10 shows blocks).

    Introduced in chapter 11 (explainability and limits).
    """
    from torchvision.io import decode_jpeg, encode_jpeg
    from torchvision.transforms.v2 import functional as F

    if not torch.is_tensor(image) or image.dtype != torch.uint8 or image.ndim != 3 or image.shape[0] != 3:
        raise ValueError("simulate_acquisition: image must be a uint8 tensor (3, H, W)")
    if kind not in ACQUISITION_CHANGES:
        raise ValueError(f"simulate_acquisition: unknown kind {kind!r}; use one of {', '.join(ACQUISITION_CHANGES)}")
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


# ----------------------------------------------------------------------------------------
# Skin tone: the individual typology angle
# ----------------------------------------------------------------------------------------

#: ITA skin-colour categories and their lower bounds in degrees (Chardon et al. 1991;
#: Del Bino and Bernerd 2013): very light > 55 >= light > 41 >= intermediate > 28 >= tan
#: > 10 >= brown > -30 >= dark.
ITA_CATEGORIES: tuple[tuple[str, float], ...] = (
    ("very light", 55.0), ("light", 41.0), ("intermediate", 28.0),
    ("tan", 10.0), ("brown", -30.0), ("dark", -np.inf),
)


def ita(L: Any, b: Any) -> Any:
    """Individual typology angle in degrees: ``arctan((L* - 50) / b*) * 180 / pi``.

    ``L`` (CIELAB lightness, 0-100) and ``b`` (yellow-blue axis) are numbers or
    arrays. Computed as ``arctan2(L - 50, b)``, which equals the formula for the
    positive ``b*`` of skin and stays defined at ``b* = 0``. Light skin has a
    large angle (> 55 degrees), dark skin a negative one (< -30).

    Not called in a chapter; used by `skin_ita`.
    """
    out = np.degrees(np.arctan2(np.asarray(L, dtype=np.float64) - 50.0, np.asarray(b, dtype=np.float64)))
    return float(out) if np.ndim(out) == 0 else out


def skin_ita(image: Any, mask: Any | None = None, width: float = 0.03, min_pixels: int = 30) -> float:
    """ITA of the skin around a lesion: the median L* and b* of a ring outside its border.

    ``image``: an RGB array (uint8 or floats in [0, 1]); ``mask``: the lesion
    (True inside), segmented with :func:`helpers.features.segment_lesion` when
    ``None``. The ring lies between ``width`` and ``2 * width`` times the
    image's long side outside the lesion (the rim of the lesion, blurred into
    the skin, is left out), inside the dermoscope's field of view
    (:func:`helpers.features.field_of_view`); medians ignore the few hairs that
    cross it. Where the ring has fewer than ``min_pixels`` pixels (a lesion
    filling the field) all skin pixels of the field are used. Raises
    ``ValueError`` when no skin is visible at all.

    Introduced in chapter 11 (explainability and limits).
    """
    from skimage import color, filters

    rgb = to_float_rgb(image)
    m = segment_lesion(rgb) if mask is None else np.asarray(mask).astype(bool)
    if m.shape != rgb.shape[:2]:
        raise ValueError(f"skin_ita: mask of shape {m.shape} does not match the image's {rgb.shape[:2]}")
    gray = color.rgb2gray(rgb)
    fov = field_of_view(filters.gaussian(gray, sigma=max(0.5, 0.01 * max(gray.shape))))
    w = max(2, int(round(width * max(m.shape))))
    ring = skin_ring(m, w) & fov
    if ring.sum() < min_pixels:
        ring = fov & ~m
    if ring.sum() < min_pixels:
        raise ValueError(f"skin_ita: only {int(ring.sum())} skin pixels visible (need {min_pixels})")
    lab = color.rgb2lab(rgb[ring][None])[0]
    return ita(np.median(lab[:, 0]), np.median(lab[:, 2]))


def ita_category(values: Any) -> Any:
    """ITA category name(s) of angle(s) in degrees (see :data:`ITA_CATEGORIES`).

    A number gives a string; a sequence or Series gives an ordered categorical
    Series (very light first), NaN staying NaN.

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


# ----------------------------------------------------------------------------------------
# Model card
# ----------------------------------------------------------------------------------------

#: The sections of a model card, in the order of Mitchell et al. (2019).
MODEL_CARD_SECTIONS: tuple[str, ...] = (
    "Model details", "Intended use", "Factors", "Metrics", "Evaluation data", "Training data",
    "Quantitative analyses", "Ethical considerations", "Caveats and recommendations",
)


def render_model_card(card: Mapping[str, Any]) -> str:
    """Lay out a model card as Markdown, its sections in the order of Mitchell et al. (2019).

    ``card`` maps each name in :data:`MODEL_CARD_SECTIONS` to a string (a
    paragraph), a list of strings (bullets) or a mapping (``**key**: value``
    bullets). A missing or empty section, or an unknown one, raises
    ``ValueError`` naming it: an empty "Ethical considerations" is a finding,
    write it down.

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
