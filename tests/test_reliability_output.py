"""Reliability: an unwritable or full output folder gives a clear error; nothing half-written
is left looking complete.

A full disk is simulated in-process: files opened for writing under one folder
get ``OSError(ENOSPC)`` once a given number of bytes has been written there
(after writing the part that still fits, as a real disk does). A read-only
folder is a ``chmod`` (skipped where it does not bite: as root); a
path under a regular file (``ENOTDIR``) fails for root too.

* ``python -m helpers train``: a full or unwritable ``--out`` fails in one
  line before training; a disk that fills up during training fails in one
  line naming the run folder, leaves only complete files (no ``summary.json``,
  no half checkpoint) and the run resumes once there is room again.
* ``python -m helpers predict``: no submission file unless it is complete;
  an older one stays whole.
* ``resize_folder``, ``tools.writers.write_dicom`` and ``write_tfrecords``,
  ``build_tensor_cache``: a ``ValueError`` naming the file or folder, no
  half-written file under its final name, and an older file stays whole.
"""
from __future__ import annotations

import builtins
import contextlib
import errno
import io
import json
import os
import stat
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from support import FAST, SIIM, lesion, needs_samples, smooth_rgb

from helpers import fastpath
from helpers.__main__ import main
from helpers.preprocess import resize_folder
from helpers.train import load_checkpoint
from tools.writers import write_dicom, write_tfrecords

NO_SPACE = os.strerror(errno.ENOSPC)   # "No space left on device"


def _chmod_bites() -> bool:
    """False where a read-only folder can still be written: root (os.geteuid() == 0) usually."""
    if hasattr(os, "geteuid") and os.geteuid() != 0:
        return True
    with tempfile.TemporaryDirectory() as tmp:   # root without CAP_DAC_OVERRIDE is bound too
        locked = Path(tmp, "locked")
        locked.mkdir()
        locked.chmod(stat.S_IRUSR | stat.S_IXUSR)
        try:
            (locked / "probe").write_bytes(b"")
        except PermissionError:
            return True
        finally:
            locked.chmod(stat.S_IRWXU)
        return False


needs_non_root = pytest.mark.skipif(not _chmod_bites(), reason="running as root: chmod does not bite")


class _Disk:
    def __init__(self, room: int) -> None:
        self.room, self.used = room, 0


class _Filling:
    """A file on the simulated full disk: a write past the room fails with ENOSPC."""

    def __init__(self, handle, disk: _Disk) -> None:
        self._handle, self._disk = handle, disk

    def write(self, data):
        raw = data.encode() if isinstance(data, str) else memoryview(data).cast("B")
        left = self._disk.room - self._disk.used
        if len(raw) > left:
            if left > 0:                       # what still fits reaches the disk
                self._handle.write(data[:left] if isinstance(data, str) else bytes(raw[:left]))
                self._handle.flush()
                self._disk.used += left
            raise OSError(errno.ENOSPC, NO_SPACE)
        self._disk.used += len(raw)
        return self._handle.write(data)

    def __getattr__(self, name):
        return getattr(self._handle, name)

    def __iter__(self):
        return iter(self._handle)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._handle.close()


@contextlib.contextmanager
def full_disk(folder: Path, room: int = 0):
    """Files opened for writing under ``folder`` share ``room`` bytes; then ENOSPC."""
    real_open = builtins.open
    disk = _Disk(room)
    folder = Path(folder).resolve()

    def filling_open(file, mode="r", *args, **kwargs):
        handle = real_open(file, mode, *args, **kwargs)
        if (isinstance(file, (str, bytes, os.PathLike)) and any(c in mode for c in "wxa+")
                and Path(os.fsdecode(file)).resolve().is_relative_to(folder)):
            return _Filling(handle, disk)
        return handle

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(builtins, "open", filling_open)
        mp.setattr(io, "open", filling_open)
        yield disk


def _left_over(folder: Path) -> list[str]:
    """Temporary files left behind (hidden names ending in .tmp, with or without a suffix after)."""
    return sorted(p.name for p in folder.rglob(".*") if ".tmp" in p.name)


def _one_line(err: str, *words: str) -> None:
    assert err.count("\n") == 1 and err.startswith("error: "), err
    assert "Traceback" not in err
    for w in words:
        assert w in err, (w, err)


# --------------------------------------------------------------------------- the command line
@needs_samples
def test_train_into_a_full_disk_fails_before_training(tmp_path, capsys):
    run = tmp_path / "run"
    with full_disk(tmp_path, room=0):
        code = main(["train", "--data-dir", str(SIIM), "--out", str(run), "--epochs", "1",
                     "--limit", "16", *FAST])
    captured = capsys.readouterr()
    assert code == 2
    _one_line(captured.err, f"{run}: cannot write to this folder ({NO_SPACE})")
    assert "train:" not in captured.out            # no training time was spent
    assert not any(run.iterdir())


@needs_samples
def test_a_disk_filling_up_during_training_leaves_only_complete_files(tmp_path, capsys):
    run = tmp_path / "run"
    args = ["train", "--data-dir", str(SIIM), "--out", str(run), "--epochs", "1", "--limit", "16",
            *FAST]
    with full_disk(tmp_path, room=100_000):        # config and split fit, a checkpoint does not
        code = main(args)
    captured = capsys.readouterr()
    assert code == 2
    _one_line(captured.err, f"{run}: cannot write the run's checkpoints ({NO_SPACE})", "--resume")
    assert sorted(p.name for p in run.iterdir()) == ["config.json", "split.csv"]
    assert json.loads((run / "config.json").read_text())["n_train"] > 0      # complete files
    assert len(pd.read_csv(run / "split.csv")) == 16

    # room again: the same command with --resume finishes the run
    assert main([*args, "--resume"]) == 0
    capsys.readouterr()
    assert json.loads((run / "summary.json").read_text())["epochs_done"] == 1
    assert load_checkpoint(run / "last.pt")["epoch"] == 1 and not _left_over(tmp_path)

    # predict: a full disk leaves no half submission, and an older one stays whole
    out = tmp_path / "out"
    preds = out / "preds.csv"
    predict = ["predict", "--run", str(run), "--data-dir", str(SIIM), "--out", str(preds), "--no-progress"]
    for existing in (False, True):
        if existing:
            assert main(predict) == 0
            assert len(pd.read_csv(preds)) == len(pd.read_csv(SIIM / "test.csv"))
            before = preds.read_bytes()
        with full_disk(out, room=1):               # the write test passes, the file does not fit
            code = main([*predict, "--tta", "2"])
        assert code == 2
        _one_line(capsys.readouterr().err, f"{preds}: cannot write ({NO_SPACE})")
        assert not _left_over(out)
        assert preds.read_bytes() == before if existing else not preds.exists()


def _fake_run(tmp_path: Path) -> Path:
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"model": "resnet18", "image_size": 32}))
    return run


@needs_samples
def test_an_output_path_under_a_file_is_refused(tmp_path, capsys):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where a folder should be")
    code = main(["train", "--data-dir", str(SIIM), "--out", str(blocker / "run"), *FAST])
    _one_line(capsys.readouterr().err, f"{blocker / 'run'}: cannot write to this folder")
    assert code == 2
    code = main(["predict", "--run", str(_fake_run(tmp_path)), "--data-dir", str(SIIM),
                 "--out", str(blocker / "preds.csv")])
    _one_line(capsys.readouterr().err, f"{blocker}: cannot write to this folder")
    assert code == 2


@needs_non_root
@needs_samples
def test_a_read_only_output_folder_is_refused(tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        code = main(["train", "--data-dir", str(SIIM), "--out", str(locked / "run"), *FAST])
        _one_line(capsys.readouterr().err, f"{locked / 'run'}: cannot write to this folder",
                  "Permission denied")
        assert code == 2
        code = main(["predict", "--run", str(_fake_run(tmp_path)), "--data-dir", str(SIIM),
                     "--out", str(locked / "preds.csv")])
        _one_line(capsys.readouterr().err, f"{locked}: cannot write to this folder",
                  "Permission denied")
        assert code == 2
        with pytest.raises(ValueError, match="Permission denied"):
            resize_folder(_sources(tmp_path / "src"), locked, 16, workers=1, progress=False)
        assert not any(locked.iterdir())
    finally:
        locked.chmod(stat.S_IRWXU)


# --------------------------------------------------------------------------- library writers
def _sources(folder: Path, n: int = 3) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray(lesion(40, 48, i)).save(folder / f"ISIC_{i:07d}.jpg")
    return folder


def test_resize_folder_stops_at_a_full_disk_and_leaves_no_half_image(tmp_path, monkeypatch):
    src, dst = _sources(tmp_path / "src"), tmp_path / "dst"
    resize_folder(src, dst, 16, workers=1, progress=False)
    old = {p.name: p.read_bytes() for p in dst.iterdir()}
    for path in dst.iterdir():                     # older than their sources: all redone
        os.utime(path, (path.stat().st_atime, path.stat().st_mtime - 100))
    real_save = Image.Image.save
    saved = []

    def filling_save(self, fp, *args, **kwargs):   # the second image meets a full disk
        saved.append(fp)
        if len(saved) == 1:
            return real_save(self, fp, *args, **kwargs)
        buf = io.BytesIO()
        real_save(self, buf, *args, **kwargs)
        Path(fp).write_bytes(buf.getvalue()[:100])
        raise OSError(errno.ENOSPC, NO_SPACE)

    monkeypatch.setattr(Image.Image, "save", filling_save)
    with pytest.raises(ValueError, match=rf"ISIC_0000001\.jpg: cannot write \({NO_SPACE}\).*full "
                                         r"or read-only"):
        resize_folder(src, dst, 16, workers=1, progress=False)
    monkeypatch.undo()
    assert sorted(p.name for p in dst.iterdir()) == sorted(old)          # no temp files
    assert (dst / "ISIC_0000001.jpg").read_bytes() == old["ISIC_0000001.jpg"]   # the old one, whole
    with Image.open(dst / "ISIC_0000000.jpg") as im:                     # the new one, whole
        im.load()
        assert im.size == (16, 16)
    report = resize_folder(src, dst, 16, workers=1, progress=False)    # room again: it finishes
    assert report["status"].tolist() == ["skipped", "resized", "resized"]


def test_resize_folder_into_a_path_under_a_file_is_refused(tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    with pytest.raises(ValueError, match=rf"{blocker.name}/dst: cannot create the output folder"):
        resize_folder(_sources(tmp_path / "src"), blocker / "dst", 16, workers=1, progress=False)


def _dicom(folder: Path, again: bool = False) -> Path:
    path = folder / "ISIC_0000001.dcm"
    write_dicom(path, smooth_rgb(32, 32) // (2 if again else 1), {"image_name": "ISIC_0000001"})
    return path


def _tfrecords(folder: Path, again: bool = False) -> Path:
    (path,) = write_tfrecords([{"image": smooth_rgb(32, 32) // (2 if again else 1),
                                "image_name": "ISIC_0000001"}], folder, "train", per_file=4)
    return path


def _tensor_cache(folder: Path, again: bool = False) -> Path:
    paths = [str(p) for p in sorted(_sources(folder.parent / "src", 4).iterdir())]
    frame = pd.DataFrame({"image_id": [f"ISIC_{i:07d}" for i in range(4)], "path": paths})
    if again:                                          # other rows: the cache is rebuilt
        frame = frame.iloc[::-1].reset_index(drop=True)
    return fastpath.build_tensor_cache(frame, 16, folder / "cache16.npy", workers=1, progress=False)


WRITERS = {"write_dicom": (_dicom, "ISIC_0000001.dcm"),
           "write_tfrecords": (_tfrecords, "train00-1.tfrec"),
           "build_tensor_cache": (_tensor_cache, "cache16.npy")}


@pytest.mark.parametrize("writer", sorted(WRITERS))
def test_writers_on_a_full_disk_name_the_file_and_leave_nothing(tmp_path, writer):
    write, name = WRITERS[writer]
    out = tmp_path / "out"
    out.mkdir()
    for existing in (False, True):
        if existing:
            path = write(out)                          # room again: a complete file
            assert path.name == name and path.is_file() and not _left_over(out)
            before = {p.name: p.read_bytes() for p in out.iterdir()}
        with full_disk(out, room=150):   # a .npy header (128 bytes) fits, the rest does not
            with pytest.raises(ValueError, match=rf"{name}: cannot write.*{NO_SPACE}"):
                write(out, again=existing)
        if existing:                                   # the old file(s) whole, no temp
            assert {p.name: p.read_bytes() for p in out.iterdir()} == before
        else:
            assert list(out.iterdir()) == []           # nothing under a final name, no temp
    if writer == "build_tensor_cache":
        assert np.load(out / name).shape == (4, 3, 16, 16) and len(fastpath.cache_index(out / name)) == 4
