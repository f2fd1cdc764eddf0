"""Tests for helpers/runs.py: training and prediction as Python calls.

The command line over them is tested in test_cli.py and the test_reliability_* files.
"""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import fields

import numpy as np
import pandas as pd
import pytest
import torch
from support import FAST, REPO_ROOT, SIIM, cli_env, needs_samples, run_cli

from helpers.__main__ import build_parser, main
from helpers.runs import TrainConfig, predict_run, train_run
from helpers.train import load_checkpoint


def _option(parser, command, dest):
    sub = next(a for a in parser._actions if a.dest == "command").choices[command]
    return next(a for a in sub._actions if a.dest == dest)


def test_every_setting_is_a_command_line_option_with_the_same_default():
    parser = build_parser()
    for field in fields(TrainConfig):
        action = _option(parser, "train", field.name)
        if field.name not in ("data_dir", "out"):
            assert action.default == field.default, field.name


def _fast_config(tmp_path) -> TrainConfig:
    args = build_parser().parse_args(["train", "--data-dir", str(SIIM), "--out", str(tmp_path / "run"),
                                      "--epochs", "1", "--limit", "32", *FAST])
    return TrainConfig(**{f.name: getattr(args, f.name) for f in fields(TrainConfig)})


@needs_samples
def test_train_run_returns_the_summary_it_writes_and_predict_run_a_frame(tmp_path, capsys):
    cfg = _fast_config(tmp_path)
    summary = train_run(cfg, progress=False)
    assert summary == json.loads((cfg.out / "summary.json").read_text(encoding="utf-8"))
    assert summary["epochs_done"] == 1 and "done: 1 epochs" in capsys.readouterr().out
    frame = predict_run(cfg.out, SIIM, progress=False)
    test_ids = pd.read_csv(SIIM / "test.csv")["image_name"]
    assert list(frame.columns) == ["image_name", "target"] and sorted(frame["image_name"]) == sorted(test_ids)
    assert frame["target"].between(0, 1).all()
    assert not list(tmp_path.glob("*.csv"))      # no out: nothing written


# ==========================================================================================
# Reliability: an interrupted training run resumes to exactly the uninterrupted result.
#
# * ``python -m helpers train`` on the CPU is killed with SIGKILL after epoch k,
#   run again with ``--resume``, and ends with the same weights, history and
#   summary as an uninterrupted run with the same seed.
# * A process killed while it writes a checkpoint leaves the previous
#   ``last.pt`` whole: ``save_checkpoint`` writes a temporary file and renames
#   it. (``tests/test_train.py`` checks the same for an exception during the
#   write, and that ``fit(resume=True)`` ignores a stray temporary file.)
# ==========================================================================================
def _weights(run) -> dict[str, torch.Tensor]:
    return torch.load(run / "last.pt", weights_only=True)["model"]


# moved from test_cli.py (a little smaller: 48 images, 3 epochs)
@needs_samples
def test_killed_training_resumes_to_the_same_result(tmp_path):
    """SIGKILL a CPU run after its first checkpoint, --resume it, compare with an uninterrupted run."""
    args = ["--data-dir", str(SIIM), "--limit", "48", "--epochs", "3", "--seed", "7", *FAST]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)             # as in the subprocesses (OMP_NUM_THREADS=1): same sums
    try:                                 # the uninterrupted run, in this process (saves imports)
        assert main(["train", "--out", str(tmp_path / "full"), *args]) == 0
    finally:
        torch.set_num_threads(threads)

    cut = tmp_path / "cut"
    proc = subprocess.Popen([sys.executable, "-m", "helpers", "train", "--out", str(cut), *args],
                            cwd=REPO_ROOT, env=cli_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while not (cut / "last.pt").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = torch.load(cut / "last.pt", weights_only=True)["epoch"]
    assert 1 <= done < 3, "the run was not interrupted"
    assert not (cut / "summary.json").exists()          # an interrupted run does not look finished

    resumed = run_cli("train", "--out", str(cut), "--resume", *args)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"resume: continuing after epoch {done} of 3" in resumed.stdout
    a, b = _weights(tmp_path / "full"), _weights(cut)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    h_full = pd.read_csv(tmp_path / "full" / "history.csv")
    h_cut = pd.read_csv(cut / "history.csv")
    for col in ["epoch", "train_loss", "val_loss", "val_auc", "lr"]:
        np.testing.assert_array_equal(h_full[col], h_cut[col])
    s_full = json.loads((tmp_path / "full" / "summary.json").read_text())
    s_cut = json.loads((cut / "summary.json").read_text())
    for summary in (s_full, s_cut):           # the wall-clock time is the one thing that differs
        assert summary.pop("train_seconds") > 0
    assert s_full == s_cut
    full_val = pd.read_csv(tmp_path / "full" / "val_predictions.csv")
    cut_val = pd.read_csv(cut / "val_predictions.csv")
    pd.testing.assert_frame_equal(full_val, cut_val)


WRITER = textwrap.dedent("""
    import io, sys, time
    import torch
    from helpers.train import save_checkpoint

    path = sys.argv[1]
    save_checkpoint({"epoch": 1, "weights": torch.arange(1000.0)}, path)
    real_save = torch.save

    def slow_save(obj, handle, *args, **kwargs):   # a big checkpoint: the write takes a while
        buf = io.BytesIO()
        real_save(obj, buf)
        data = buf.getvalue()
        handle.write(data[: len(data) // 2])
        handle.flush()
        print("writing", handle.name, flush=True)
        time.sleep(120)
        handle.write(data[len(data) // 2:])

    torch.save = slow_save
    save_checkpoint({"epoch": 2, "weights": torch.arange(1000.0) * 2}, path)
""")


def test_a_kill_during_a_checkpoint_write_keeps_the_previous_checkpoint(tmp_path):
    path = tmp_path / "last.pt"
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], cwd=REPO_ROOT,
                            env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith("writing"), proc.stderr.read()[-2000:]
        proc.send_signal(signal.SIGKILL)              # half of epoch 2's checkpoint is on disk
    finally:
        proc.kill()
        proc.wait()
    half = tmp_path / line.split()[1].rsplit("/", 1)[-1]
    assert half.is_file() and half.stat().st_size > 0   # the kill really landed mid-write
    with pytest.raises(ValueError):
        load_checkpoint(half)                         # ... and that file is not a checkpoint
    checkpoint = load_checkpoint(path)                # the latest checkpoint is whole
    assert checkpoint["epoch"] == 1
    assert torch.equal(checkpoint["weights"], torch.arange(1000.0))
    assert half.name.startswith(".last.") and ".tmp" in half.name   # hidden, never taken for it
