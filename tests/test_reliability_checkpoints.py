"""Reliability: checkpoints are loaded with ``weights_only=True`` only, and never run code.

* Every ``torch.load`` in ``helpers/`` passes ``weights_only=True``, and nothing
  in ``helpers/`` unpickles by another door (``pickle.load``, ``allow_pickle=True``).
* A checkpoint carrying a pickled object (here one that would create a file
  when unpickled) is refused with a clear message by ``load_checkpoint`` and
  by ``python -m helpers predict`` / ``train --resume`` (one line, exit code
  2), and the object's code never runs.

``tests/test_train.py::test_checkpoints_with_pickled_objects_are_refused``
checks ``load_checkpoint`` and ``fit(resume=True)`` on a harmless pickled object.
"""
from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
import torch
from support import FAST, REPO_ROOT, SIIM, needs_samples

from helpers.__main__ import main
from helpers.models import build_model
from helpers.train import CHECKPOINT_FORMAT, load_checkpoint

SENTINEL_NAME = "code-ran.txt"


class Payload:
    """Unpickling this object calls ``open(path, "w")``: the file appearing means code ran."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def _calls(tree: ast.AST, dotted: str):
    owner, name = dotted.split(".")
    for node in ast.walk(tree):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr == name and isinstance(node.func.value, ast.Name)
                and node.func.value.id == owner):
            yield node


def test_every_torch_load_in_helpers_is_weights_only():
    loads = 0
    for path in sorted((REPO_ROOT / "helpers").glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for call in _calls(tree, "torch.load"):
            loads += 1
            flag = next((k.value for k in call.keywords if k.arg == "weights_only"), None)
            assert isinstance(flag, ast.Constant) and flag.value is True, \
                f"{path.name}:{call.lineno}: torch.load without weights_only=True"
        for dotted in ("pickle.load", "pickle.loads"):
            assert not list(_calls(tree, dotted)), f"{path.name}: {dotted}"
        for call in ast.walk(tree):
            if isinstance(call, ast.Call):
                for k in call.keywords:
                    assert not (k.arg == "allow_pickle" and isinstance(k.value, ast.Constant)
                                and k.value.value is True), f"{path.name}:{call.lineno}: allow_pickle=True"
    assert loads >= 1   # load_checkpoint itself


def _evil_checkpoint(path: Path, sentinel: Path) -> Path:
    model = build_model("resnet18", 1, pretrained=False, verbose=False)
    torch.save({"format": CHECKPOINT_FORMAT, "epoch": 1, "model": model.state_dict(),
                "extra": Payload(sentinel)}, path)
    return path


def test_the_payload_would_run_if_loaded_unsafely(tmp_path):
    """The control: without weights_only the payload runs, so the refusals below mean something."""
    sentinel = tmp_path / SENTINEL_NAME
    path = _evil_checkpoint(tmp_path / "evil.pt", sentinel)
    torch.load(path, weights_only=False)
    assert sentinel.exists()


def test_load_checkpoint_refuses_a_pickled_object_without_running_it(tmp_path):
    sentinel = tmp_path / SENTINEL_NAME
    path = _evil_checkpoint(tmp_path / "evil.pt", sentinel)
    with pytest.raises(ValueError, match=r"evil\.pt: refused, the checkpoint holds pickled Python "
                                         r"objects such as (io|builtins)\.open"):
        load_checkpoint(path)
    assert not sentinel.exists()


def test_predict_refuses_a_run_with_a_pickled_object(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"model": "resnet18", "image_size": 32}))
    sentinel = tmp_path / SENTINEL_NAME
    _evil_checkpoint(run / "best.pt", sentinel)
    code = main(["predict", "--run", str(run), "--data-dir", str(SIIM), "--out",
                 str(tmp_path / "preds.csv")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert err.startswith("error: ") and "best.pt: refused" in err and "pickled" in err
    assert not sentinel.exists() and not (tmp_path / "preds.csv").exists()


@needs_samples
def test_resume_refuses_a_run_with_a_pickled_object(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    sentinel = tmp_path / SENTINEL_NAME
    _evil_checkpoint(run / "last.pt", sentinel)
    code = main(["train", "--data-dir", str(SIIM), "--out", str(run), "--resume", "--epochs", "1",
                 "--limit", "16", *FAST])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert "last.pt: refused" in err and "pickled" in err
    assert not sentinel.exists() and not (run / "summary.json").exists()
