"""Peak memory of reading many tiny rows: `textxfer predict --input` (streams) and the training loader.

    .venv/bin/python scripts/bench_bad_input.py --rows 1000000 [--model RUN_FOLDER] [--json out.json]

Writes a CSV of ``--rows`` tiny rows into a temporary folder (deleted afterwards), then measures, each in
its own process, the peak resident set size (``ru_maxrss`` of the child) of

* ``textxfer predict --model M --input big.csv --output preds.csv`` (and of the same on 1,000 rows, to
  show the streaming predictor's memory does not grow with the input), and
* ``textxfer.data.dataset.load_data`` of the big file, which is what ``baseline``/``finetune``/``compare`` do
  before training (every row is held in memory).

Without ``--model`` a tiny baseline is trained first on synthetic rows.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# Runs a command and prints the peak RSS of that child (KiB on Linux) and its wall time as JSON.
WRAP = (
    "import json, resource, subprocess, sys, time\n"
    "t = time.perf_counter()\n"
    "code = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL).returncode\n"
    "print(json.dumps({'rc': code, 'seconds': time.perf_counter() - t,\n"
    "                  'peak_rss_mib': resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))\n"
)
LOAD = (
    "import sys\n"
    "from textxfer.data.dataset import DataOptions, load_data\n"
    "data = load_data(DataOptions(data=sys.argv[1]))\n"
    "assert len(data.train) + len(data.validation) + len(data.test) > 0\n"
)


def write_rows(path: Path, rows: int) -> Path:
    """``rows`` tiny distinct rows (``好123,pos``), written in blocks."""
    with open(path, "w", encoding="utf-8", newline="") as handle:
        handle.write("text,label\n")
        for start in range(0, rows, 100_000):
            handle.write("".join(f"{'好' if i % 2 else '差'}{i},{'pos' if i % 2 else 'neg'}\n"
                                 for i in range(start, min(rows, start + 100_000))))
    return path


def measure(command: list[str]) -> dict:
    """Peak RSS and wall time of ``command`` run in a fresh child process."""
    completed = subprocess.run([sys.executable, "-c", WRAP, *command], capture_output=True, text=True, check=True)
    result = json.loads(completed.stdout.strip().splitlines()[-1])
    if result["rc"] != 0:
        raise SystemExit(f"failed ({result['rc']}): {' '.join(command)}")
    return result


def train_tiny_model(folder: Path) -> Path:
    from textxfer.data.dataset import DataOptions
    from textxfer.baseline.pipeline import BaselineClassifier, BaselineConfig
    from textxfer.evaluation.runner import run

    data = write_rows(folder / "train.csv", 400)
    config = BaselineConfig(vector_size=16, epochs=2, min_count=1, n_estimators=20, n_jobs=1)
    run(BaselineClassifier(config), DataOptions(data=str(data)), folder / "model", progress=False, log=lambda *_: None)
    return folder / "model"


def bench(rows: int, model: str | None = None, chunk_size: int = 2048) -> dict:
    """Measure predict (``rows`` and 1,000 rows) and the training loader on ``rows`` tiny rows."""
    cli = [sys.executable, "-m", "textxfer.cli"]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        model = model or str(train_tiny_model(folder))
        big = write_rows(folder / "big.csv", rows)
        small = write_rows(folder / "small.csv", 1000)
        predict = ["predict", "--model", model, "--output", str(folder / "preds.csv"), "--no-progress",
                   "--chunk-size", str(chunk_size), "--input"]
        results = {
            "rows": rows,
            "input_mib": round(big.stat().st_size / 2**20, 1),
            "predict_small": measure([*cli, *predict, str(small)]),
            "predict": measure([*cli, *predict, str(big)]),
            "load_data": measure([sys.executable, "-c", LOAD, str(big)]),
        }
        with open(folder / "preds.csv", encoding="utf-8") as handle:
            results["predicted_rows"] = sum(1 for _ in handle) - 1
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--model", help="a trained model folder (default: train a tiny baseline)")
    parser.add_argument("--chunk-size", type=int, default=2048)
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    started = time.perf_counter()
    results = bench(args.rows, args.model, args.chunk_size)
    results["total_seconds"] = round(time.perf_counter() - started, 1)
    print(json.dumps(results, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
