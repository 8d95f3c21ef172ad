#!/usr/bin/env python3
"""How the weight-choice rules of an ensemble compare, on run folders that share one split.

Every member predicts the validation and test splits once; then each rule picks weights **on validation**
(each member alone, equal weights, ``auto`` = lowest validation log loss — textxfer's rule — and the grid
point of highest validation accuracy, ties broken by log loss) and the chosen mixture is scored on test.
The test column is for reading, not for choosing: a rule picked by its test score would be tuned on test.

    python scripts/bench_ensemble.py --runs runs/demo/baseline runs/demo/finetune --output runs/bench_ensemble.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from textxfer import classifier
from textxfer.data.dataset import DataOptions, load_data
from textxfer.evaluation.ensemble_runs import same_split
from textxfer.ensemble.weights import choose, log_loss, mix, simplex_grid


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", nargs="+", required=True, help="run folders of one split (2 or more)")
    parser.add_argument("--output", help="write the figures as JSON here too")
    args = parser.parse_args(argv)
    folders = [Path(r) for r in args.runs]
    same_split(folders)
    data = load_data(DataOptions(split=str(folders[0])))
    started = time.perf_counter()
    members = [classifier.load(f) for f in folders]
    splits = {name: (getattr(data, name).texts, np.asarray(data.labels.encode(getattr(data, name).labels)))
              for name in ("validation", "test")}
    probabilities = {name: [m.predict_proba(texts) for m in members] for name, (texts, _) in splits.items()}
    print(f"{len(members)} members predicted {len(data.validation)} validation and {len(data.test)} test texts "
          f"in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    y_val, y_test = splits["validation"][1], splits["test"][1]
    n = len(members)
    rules = {f"{f} alone": [1.0 if j == i else 0.0 for j in range(n)] for i, f in enumerate(folders)}
    rules["equal weights"] = choose("equal", probabilities["validation"], y_val)[0]
    rules["auto: validation log loss (textxfer)"] = choose("auto", probabilities["validation"], y_val)[0]
    grid = simplex_grid(n)
    scored = [(float(np.mean(mix(probabilities["validation"], w).argmax(axis=1) == y_val)),
               -log_loss(mix(probabilities["validation"], w), y_val), i) for i, w in enumerate(grid)]
    rules["validation accuracy (ties: log loss)"] = [float(w) for w in grid[max(scored)[2]]]
    rows = []
    for rule, weights in rules.items():
        val, test = mix(probabilities["validation"], weights), mix(probabilities["test"], weights)
        rows.append({"rule": rule, "weights": [round(w, 4) for w in weights],
                     "validation_accuracy": float(np.mean(val.argmax(axis=1) == y_val)),
                     "validation_log_loss": log_loss(val, y_val),
                     "test_accuracy": float(np.mean(test.argmax(axis=1) == y_test))})
    print("| rule (weights chosen on validation) | weights | validation accuracy | validation log loss | test accuracy |")
    print("|---|---|---:|---:|---:|")
    for r in rows:
        print(f"| {r['rule']} | {', '.join(f'{w:.2f}' for w in r['weights'])} | {r['validation_accuracy']:.4f} | "
              f"{r['validation_log_loss']:.4f} | {r['test_accuracy']:.4f} |")
    if args.output:
        Path(args.output).write_text(json.dumps({"runs": [str(f) for f in folders], "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
