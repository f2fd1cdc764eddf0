"""Reliability: the helpers, the tests and the book build work without a network.

* Importing every ``helpers`` module, loading every sample layout, reading an
  image and building the default model with its (offline) ImageNet weights
  open no socket and look up no host name (a fresh process with every socket
  door shut: ``connect``, ``connect_ex``, ``sendto``, ``create_connection``,
  ``getaddrinfo``).
* ``python -m helpers train`` and ``predict`` open no socket.
* A pretrained-weight download is attempted only where asked
  (``pretrained=True`` on a torchvision architecture with no cached weights)
  and then falls back to a random initialisation with a one-line reason.
* The tests themselves: ``conftest.py`` refuses every non-loopback connection
  and host-name lookup.
* The book: the build configuration loads no network extension, and no
  chapter downloads anything.
"""
from __future__ import annotations

import errno
import json
import socket
import subprocess
import sys
import textwrap

import pytest
from support import REPO_ROOT, SIIM, cli_env, needs_samples

import conftest
from helpers.__main__ import main
from helpers.models import build_model

BLOCKER = textwrap.dedent("""
    import errno, socket
    ATTEMPTS = []

    def refuse(what):
        def door(*args, **kwargs):
            ATTEMPTS.append(f"{what}{args[1:] if what.startswith('socket.') else args}")
            raise OSError(errno.ENETUNREACH, f"network blocked by the test ({what})")
        return door

    for name in ("connect", "connect_ex", "sendto"):
        setattr(socket.socket, name, refuse(f"socket.{name}"))
    socket.create_connection = refuse("create_connection")
    socket.getaddrinfo = refuse("getaddrinfo")
""")


@pytest.fixture
def no_sockets(monkeypatch):
    """Shut every socket door in this process; yields the list of attempts."""
    attempts: list[str] = []

    def refuse(what):
        def door(*args, **kwargs):
            attempts.append(f"{what}{args}")
            raise OSError(errno.ENETUNREACH, f"network blocked by the test ({what})")
        return door

    for name in ("connect", "connect_ex", "sendto"):
        monkeypatch.setattr(socket.socket, name, refuse(f"socket.{name}"))
    monkeypatch.setattr(socket, "create_connection", refuse("create_connection"))
    monkeypatch.setattr(socket, "getaddrinfo", refuse("getaddrinfo"))
    return attempts


def test_importing_helpers_and_its_main_paths_open_no_socket(tmp_path):
    script = BLOCKER + textwrap.dedent("""
        import importlib, json, pkgutil, sys
        import helpers
        modules = [m.name for m in pkgutil.iter_modules(helpers.__path__)]
        for name in modules:
            importlib.import_module(f"helpers.{name}")
        from helpers import datasets, io, models
        frames = datasets.load_all(helpers.data_dir(), strict=True)
        path = next(p for f in frames.values() for p in f["path"].dropna() if p.endswith(".jpg"))
        image = io.read_image(path)
        model = models.build_model("efficientnet_lite0", 1, pretrained=True, verbose=False)
        print(json.dumps({"modules": modules, "layouts": sorted(frames), "shape": image.shape,
                          "weights": model.weights_note, "attempts": ATTEMPTS}))
    """)
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=cli_env(),
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["attempts"] == []
    assert {"datasets", "io", "data", "models", "train", "__main__"} <= set(report["modules"])
    assert "siim-isic-2020" in report["layouts"] and report["shape"][2] == 3
    assert report["weights"].startswith("ImageNet EfficientNet-Lite0")


@needs_samples
def test_train_and_predict_open_no_socket(tmp_path, no_sockets, capsys):
    run = tmp_path / "run"
    # the default model, pretrained: its weights ship in a package, no download
    assert main(["train", "--data-dir", str(SIIM), "--out", str(run), "--epochs", "1",
                 "--limit", "16", "--image-size", "32", "--no-progress", "--workers", "0"]) == 0
    assert "weights: ImageNet EfficientNet-Lite0" in capsys.readouterr().out
    assert main(["predict", "--run", str(run), "--data-dir", str(SIIM), "--out",
                 str(tmp_path / "preds.csv")]) == 0
    assert no_sockets == []


def test_pretrained_download_only_where_asked_then_falls_back(tmp_path, no_sockets, monkeypatch,
                                                              capsys):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-hub"))   # no cached weights
    build_model("resnet18", 1, pretrained=False)
    build_model("efficientnet_lite0", 1, pretrained=True)
    assert no_sockets == []                                        # not asked: no attempt
    model = build_model("resnet18", 1, pretrained=True)            # asked: one attempt ...
    assert no_sockets and all(a.startswith(("getaddrinfo", "create_connection", "socket."))
                              for a in no_sockets)
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1].startswith("weights: random init (torchvision's ImageNet resnet18 weights")
    assert model.weights_note.startswith("random init")            # ... and a quiet fallback
    assert not any((tmp_path / "empty-hub").rglob("*.pth"))


def test_the_test_session_refuses_connections_and_lookups():
    with pytest.raises(conftest.NetworkBlocked):
        socket.create_connection(("192.0.2.1", 80), timeout=1)   # TEST-NET-1: never routed
    with pytest.raises(conftest.NetworkBlocked):
        socket.getaddrinfo("example.invalid", 443)
    assert socket.getaddrinfo("127.0.0.1", 80)                     # loopback stays open
    conftest.attempts.clear()


def test_the_book_build_needs_no_network():
    yaml = pytest.importorskip("yaml")
    config = yaml.safe_load((REPO_ROOT / "_config.yml").read_text(encoding="utf-8"))
    extensions = config.get("sphinx", {}).get("extra_extensions", []) or []
    assert not [e for e in extensions if "intersphinx" in e or "linkcheck" in e]
    assert "intersphinx_mapping" not in (config.get("sphinx", {}).get("config", {}) or {})
    for bib in config.get("bibtex_bibfiles", []):
        assert (REPO_ROOT / bib).is_file()
    chapters = sorted((REPO_ROOT / "chapters").glob("*.ipynb"))
    assert chapters
    fetchers = ("urlopen", "urlretrieve", "requests.", "httpx", "wget ", "curl ", "pip install",
                "load_state_dict_from_url", "torch.hub.load(", "download=True")
    for path in chapters:
        cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
        code = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
        found = [f for f in fetchers if f in code]
        assert not found, f"{path.name} fetches from the network: {found}"
