"""``scripts/bench_gpu.py --smoke``: the GPU benchmark's every path runs (on the CPU, a tiny model)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).parent.parent / "scripts" / "bench_gpu.py"


def test_smoke_mode_runs_every_measurement(tmp_path):
    done = subprocess.run([sys.executable, str(SCRIPT), "--smoke", "--output", str(tmp_path)], capture_output=True,
                          text=True, timeout=600, env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    assert done.returncode == 0, done.stderr[-3000:]
    figures = json.loads((tmp_path / "bench_gpu.json").read_text(encoding="utf-8"))
    assert figures["smoke"] is True and figures["device"] == "CPU"
    old, new = figures["throughput"]["old"], figures["throughput"]["new"]
    assert (old["batch_size"], old["steps"], new["steps"]) == (16, 4, 2)
    assert new["batch_size"] == 16  # auto on the CPU: the CPU recipe
    assert old["train_samples_per_second"] > 0 and old["tokens_per_second"] > old["train_samples_per_second"]
    assert old["mfu"] is None  # no GPU peak to divide by
    for run in figures["time_to_accuracy"].values():
        assert run["steps"] == 4 and 0 <= run["test_accuracy"] <= 1 and run["wall_seconds"] > 0
    assert "--batch-size 16" in figures["time_to_accuracy"]["old"]["command"]
    assert "--batch-size" not in figures["time_to_accuracy"]["new"]["command"]
    assert figures["prediction"]["cpu"]["texts"] == 40 and figures["prediction"]["cpu"]["texts_per_second"] > 0
    table = (tmp_path / "bench_gpu.md").read_text(encoding="utf-8")
    assert "SMOKE RUN" in table and "| old defaults | 16 |" in table


def test_peak_flops_by_gpu_name():
    sys.path.insert(0, str(SCRIPT.parent))
    from bench_gpu import peak_flops

    assert peak_flops("NVIDIA H200") == peak_flops("NVIDIA H100 80GB HBM3") == 989e12
    assert peak_flops("CPU") is None
