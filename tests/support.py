"""Plain helpers shared by several test files (``from support import ...``).

Fixtures live in ``conftest.py``; this module holds what a test calls
directly: small image and CSV writers, the sample folders and a runner for
``python -m helpers`` in a subprocess.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED = REPO_ROOT.parent / "shared" / "datasets"
SAMPLES = REPO_ROOT / "data_samples"
SIIM = SAMPLES / "siim-isic-2020"
ARCHIVE = SAMPLES / "isic-archive"

needs_samples = pytest.mark.skipif(not SIIM.is_dir() or not ARCHIVE.is_dir(),
                                   reason="data_samples/ absent (python -m tools.samples)")

#: Tiny and fast CLI training: 32 px, a randomly initialised resnet18, no workers.
FAST = ["--model", "resnet18", "--no-pretrained", "--image-size", "32", "--batch-size", "16",
        "--no-progress", "--workers", "0"]


# --------------------------------------------------------------------------- chapters


def code_cell(nb, marker: str):
    """The one code cell of a chapter (a JSON dict or an nbformat notebook) whose source holds
    ``marker``; fails the test when none or several do."""
    found = [c for c in nb["cells"] if c["cell_type"] == "code"
             and marker in ("".join(c["source"]) if isinstance(c["source"], list) else c["source"])]
    assert len(found) == 1, f"expected one code cell containing {marker!r}, found {len(found)}"
    return found[0]


# --------------------------------------------------------------------------- images
def smooth_rgb(h: int = 64, w: int = 96) -> np.ndarray:
    """A smooth, colourful image: three different ramps, so a channel swap or a YBR mix-up shows."""
    y, x = np.mgrid[0:h, 0:w]
    r = 40 + 180 * x / (w - 1)
    g = 200 - 150 * y / (h - 1)
    b = 60 + 60 * (x + y) / (w + h)
    return np.stack([r, g, b], axis=-1).round().astype(np.uint8)


def lesion(h: int, w: int, seed: int) -> np.ndarray:
    """A synthetic skin-coloured image with a dark blob: (h, w, 3) uint8."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w]
    blob = ((yy - h / 2) ** 2 + (xx - w / 2) ** 2) < (min(h, w) / 4) ** 2
    img = np.empty((h, w, 3), np.float64)
    img[:] = (200, 150, 130)
    img[blob] = (90, 60, 50)
    return np.clip(img + rng.normal(0, 12, img.shape), 0, 255).astype(np.uint8)


#: Rows of the ``image_frame`` fixture whose file is unreadable (3: corrupt) or missing (6).
BAD_ROWS = {3, 6}


# --------------------------------------------------------------------------- label files
def write(folder: Path, name: str, lines: list[str], *, eol: str = "\n", final: bool = True,
          bom: bool = False) -> Path:
    """Write ``lines`` as ``folder/name`` with the given line ending, final newline and BOM."""
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    text = eol.join(lines) + (eol if final else "")
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode())
    return path


def touch_images(folder: Path, ids, suffix: str = ".jpg") -> None:
    """Stand-in image files (a JPEG start and end marker) named ``<id><suffix>``."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in ids:
        (folder / f"{i}{suffix}").write_bytes(b"\xff\xd8\xff\xd9")


GT2019 = "image,MEL,NV,BCC,AK,BKL,DF,VASC,SCC,UNK"
SIIM_HEADER = ("image_name,patient_id,sex,age_approx,anatom_site_general_challenge,diagnosis,"
               "benign_malignant,target")
SIIM_ROWS = ["ISIC_2637011,IP_7279968,male,45.0,head/neck,unknown,benign,0",
             "ISIC_0015719,IP_3075186,,,,nevus,benign,0",
             "ISIC_0052212,IP_2842074,female,50.0,torso,melanoma,malignant,1"]


def make_2020(root: Path) -> Path:
    """A small SIIM-ISIC 2020 layout: train.csv, test.csv, the v2 ground truth, stand-in images."""
    write(root, "train.csv", [SIIM_HEADER, *SIIM_ROWS])
    write(root, "test.csv", ["image_name,patient_id,sex,age_approx,anatom_site_general_challenge",
                             "ISIC_0052060,IP_3579794,male,70.0,"])
    write(root, "ISIC_2020_Training_GroundTruth_v2.csv", [
        "image_name,patient_id,lesion_id,sex,age_approx,anatom_site_general_challenge,diagnosis,"
        "benign_malignant,target",
        "ISIC_2637011,IP_7279968,IL_0000001,male,45,head/neck,unknown,benign,0",
        "ISIC_0015719,IP_3075186,IL_0000001,,,,nevus,benign,0",
        "ISIC_0052212,IP_2842074,IL_0000002,female,50,torso,melanoma,malignant,1"], eol="\r\n")
    touch_images(root / "jpeg" / "train", ["ISIC_2637011", "ISIC_0015719"])
    touch_images(root / "train", ["ISIC_0052212"], ".dcm")
    touch_images(root / "jpeg" / "test", ["ISIC_0052060"])
    return root


# --------------------------------------------------------------------------- command line
def cli_env() -> dict[str, str]:
    """Environment of a ``python -m helpers`` subprocess: this checkout, one thread, no torchrun."""
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1"}
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        env.pop(key, None)
    return env


def run_cli(*args: str, **kwargs) -> subprocess.CompletedProcess:
    """Run ``python -m helpers ARGS`` from the repository root; capture its output as text."""
    return subprocess.run([sys.executable, "-m", "helpers", *args], cwd=REPO_ROOT, env=cli_env(),
                          capture_output=True, text=True, timeout=300, **kwargs)


def secret_image(folder: Path) -> Path:
    """An image outside the data folder, for the tests that symlinks must not reach it."""
    folder.mkdir(parents=True, exist_ok=True)
    secret = folder / "secret.jpg"
    Image.fromarray(lesion(16, 16, 0)).save(secret)
    return secret
