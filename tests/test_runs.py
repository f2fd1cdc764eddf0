"""Tests for helpers/runs.py: training and prediction as Python calls.

The command line over them is tested in test_cli.py and the test_reliability_* files.
"""
from __future__ import annotations

import json
from dataclasses import fields

import pandas as pd
from support import FAST, SIIM, needs_samples

from helpers.__main__ import build_parser
from helpers.runs import TrainConfig, predict_run, train_run


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
