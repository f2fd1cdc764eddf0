"""Smoke test of benchmarks/throughput.py: it runs on CPU at tiny sizes and reports sane figures.

Speed itself is never asserted (CONVENTIONS: speed is measured in benchmarks/,
as ratios within one run); what is asserted is that every configuration gets
three positive rates, that the ratios are the rates divided by the ceiling,
and that the report says what it measured.
"""
from __future__ import annotations

import importlib.util
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parent.parent
SCRIPT = REPO_ROOT / "benchmarks" / "throughput.py"


def _load():
    spec = importlib.util.spec_from_file_location("throughput_bench", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


def _number(cell: str) -> float:
    return float(cell.replace(",", "").strip())


def _table(text: str) -> dict[str, list[str]]:
    """Rows of the Markdown table, by configuration (``model@size``)."""
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| ") and re.fullmatch(r"\w+@\d+", cells[0]):
            rows[cells[0]] = cells
    return rows


@pytest.fixture(scope="module")
def quick_run() -> str:
    proc = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--device", "cpu", "--markdown"],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=900)  # a loaded CPU can take minutes
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def test_quick_run_reports_three_rates_per_configuration(quick_run: str) -> None:
    rows = _table(quick_run)
    assert set(rows) == {"resnet18@64", "efficientnet_b0@64"}
    for config, cells in rows.items():
        ceiling, starter, s_ratio, project, p_ratio = (_number(c) for c in cells[1:6])
        for rate in (ceiling, starter, project):
            assert math.isfinite(rate) and rate > 0, (config, cells)
        for ratio, rate in ((s_ratio, starter), (p_ratio, project)):
            # the ratio's value is a measurement (above 1 where another job slowed the ceiling's
            # window), so only its arithmetic is checked, not its size
            assert ratio > 0, (config, cells)
            assert ratio == pytest.approx(rate / ceiling, abs=0.011), (config, cells)
        assert cells[6] == "n/a (no GPU)"          # the GPU goal is not judged on a CPU
    assert re.fullmatch(r"\d+\.\d\d s for 64 images \([\d,]+ img/s\)", rows["resnet18@64"][7])
    assert rows["efficientnet_b0@64"][7] == "(built above)"  # one cache per input size


def test_quick_run_says_what_it_measured(quick_run: str) -> None:
    assert "CPU only" in quick_run
    assert "64 synthetic JPEGs, 128x128 px" in quick_run
    assert "batch 8" in quick_run
    assert f"torch {torch.__version__}" in quick_run
    assert "helpers.train.fit" in quick_run and "build_tensor_cache" in quick_run
    assert "/tmp" not in quick_run and str(REPO_ROOT) not in quick_run


def test_models_and_sizes_pair_up_and_windows_cover_all_steps() -> None:
    mod = _load()
    s = mod.parse_args(["--device", "cpu", "--models", "resnet18", "--sizes", "64", "96"])
    assert s.pairs == [("resnet18", 64), ("resnet18", 96)]
    s = mod.parse_args(["--device", "cpu"])
    assert s.pairs == [("resnet18", 224), ("efficientnet_b0", 224), ("efficientnet_b0", 384)]
    q = mod.parse_args(["--quick", "--device", "cpu", "--batch-size", "4"])
    assert (q.batch_size, q.n_images, q.source_size) == (4, 64, 128)  # explicit options win over --quick
    with pytest.raises(SystemExit):
        mod.parse_args(["--device", "cpu", "--models", "a", "b", "--sizes", "64", "96", "128"])
    with pytest.raises(SystemExit):
        mod.parse_args(["--device", "cpu", "--models", "resnet18", "--sizes", "16"])
    for steps in (1, 2, 3, 9, 50, 61):
        w = mod.windows(steps)
        assert sum(w) == steps and len(w) == min(3, steps) and max(w) - min(w) <= 1


def test_goal_is_judged_on_a_gpu_only() -> None:
    mod = _load()
    rows = [mod.Row("resnet18", 224, 1000.0, 500.0, 950.0, 2.0, 100, False),
            mod.Row("efficientnet_b0", 224, 400.0, 300.0, 300.0, 2.0, 100, True)]
    gpu = mod.format_markdown(rows, ["device: test"], torch.device("cuda"))
    table = _table(gpu)
    assert table["resnet18@224"][3:7] == ["0.50", "950.0", "0.95", "yes"]
    assert table["efficientnet_b0@224"][5:8] == ["0.75", "no", "(built above)"]
    assert table["resnet18@224"][7] == "2.00 s for 100 images (50 img/s)"
    text = mod.format_text(rows, ["device: test"], torch.device("cpu"))
    assert text.count("n/a (no GPU)") == 2 and "yes" not in text


def test_a_failed_measurement_costs_only_its_figure(capsys: pytest.CaptureFixture[str]) -> None:
    mod = _load()
    s = mod.parse_args(["--quick", "--device", "cpu"])
    failures: list[str] = []

    def crash() -> float:
        raise RuntimeError("DataLoader worker (pid 1) is killed by signal: Bus error.\ndetails")

    assert math.isnan(mod._measure(failures, "resnet18@64", "(2) starter", s, crash))
    assert failures == ["resnet18@64 (2) starter: RuntimeError: DataLoader worker (pid 1) "
                        "is killed by signal: Bus error."]
    assert mod._measure(failures, "resnet18@64", "(1) ceiling", s, lambda: 5.0) == 5.0
    assert len(failures) == 1 and "resnet18@64 (1) ceiling: 5.0 img/s" in capsys.readouterr().err
    row = mod.Row("resnet18", 64, 100.0, float("nan"), 95.0, 1.0, 10, False)
    cells = _table(mod.format_markdown([row], [], torch.device("cuda")))["resnet18@64"]
    assert cells[2:7] == ["failed", "-", "95.0", "0.95", "yes"]
