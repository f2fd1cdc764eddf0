"""Helpers for the Jupyter Book *Melanoma detection on ISIC dermoscopy data*.

One module per concern (``datasets``, ``io``, ``data``, ``train``, ...); this file holds the few
functions every chapter calls in its setup cell.
"""
from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np

__all__ = ["REPO_ROOT", "data_dir", "device", "seed_everything", "display_path"]

#: The repository root (the folder that holds ``helpers/`` and ``data_samples/``).
REPO_ROOT = Path(__file__).resolve().parent.parent


def data_dir() -> Path:
    """The data root: ``$ISIC_DATA_DIR`` (laid out as ``data_samples/`` is) if set, else ``data_samples/``.

    Introduced in chapter 1 (skin disease and melanoma).
    """
    env = os.environ.get("ISIC_DATA_DIR", "").strip()
    root = Path(env).expanduser() if env else REPO_ROOT / "data_samples"
    if not root.is_dir():
        raise ValueError(f"data root {root} (from ISIC_DATA_DIR) is not a folder")
    return root


def device(verbose: bool = True):
    """Pick the best available torch device: CUDA, then Apple MPS, then CPU, and print which one.

    Introduced in chapter 7 (the data pipeline).
    """
    import torch

    if torch.cuda.is_available():
        dev, what = torch.device("cuda"), f"cuda ({torch.cuda.get_device_name(0)})"
    elif getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        dev, what = torch.device("mps"), "mps (Apple GPU)"
    else:
        dev, what = torch.device("cpu"), "cpu (no GPU found)"
    if verbose:
        print(f"device: {what}")
    return dev


def seed_everything(seed: int = 0) -> None:
    """Seed Python, NumPy and torch so that a chapter reruns identically.

    Introduced in chapter 1 (skin disease and melanoma).
    """
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def display_path(path: os.PathLike | str) -> str:
    """Show a path without machine-specific parts (for notebook outputs): relative to the repo or data root.

    Introduced in chapter 1 (skin disease and melanoma).
    """
    p = Path(path).resolve()
    for base in (REPO_ROOT, data_dir().resolve().parent):
        if p.is_relative_to(base):
            return p.relative_to(base).as_posix()
    return p.name
