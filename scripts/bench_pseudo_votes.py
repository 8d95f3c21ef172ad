#!/usr/bin/env python3
"""The forest's probabilities with and without half a pseudo-vote per class, before and after the temperature.

Reads the raw probabilities ``scripts/bench_calibration.py`` saved (``<corpus>-<seed>.npz``: the forest's own
averaged votes, 100 trees, from runs made before ``--pseudo-votes`` existed) and recomputes, per corpus and seed,
the baseline's temperature, test ECE and log loss with the forest's own averages and with ``(n·p + ½) / (n + k·½)``
— what ``BaselineClassifier.raw_proba`` now returns — and the ``auto`` ensemble with the calibrated fine-tuned model
(test accuracy). Run: ``python scripts/bench_pseudo_votes.py [runs/bench_calibration]``.
"""

from __future__ import annotations

import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

from textxfer.core.calibration import expected_calibration_error, fit_temperature, log_loss, scale
from textxfer.ensemble.weights import choose, mix

TREES, VOTE = 100, 0.5


def with_votes(p: np.ndarray) -> np.ndarray:
    return (TREES * p + VOTE) / (TREES + VOTE * p.shape[1])


def figures(pv, pt, fv, ft, yv, yt) -> list[float]:
    t = fit_temperature(pv, yv)
    tf = fit_temperature(fv, yv)
    weights, _ = choose("auto", [scale(pv, t), scale(fv, tf)], yv)
    ensemble = float(np.mean(mix([scale(pt, t), scale(ft, tf)], weights).argmax(axis=1) == yt))
    return [t, expected_calibration_error(pt, yt), expected_calibration_error(scale(pt, t), yt), log_loss(pt, yt),
            log_loss(scale(pt, t), yt), float((pv[np.arange(len(yv)), yv] == 0).mean()), weights[0], ensemble]


def main() -> None:
    folder = Path(sys.argv[1] if len(sys.argv) > 1 else "runs/bench_calibration")
    rows = defaultdict(lambda: defaultdict(list))
    for path in sorted(folder.glob("*.npz")):
        corpus = path.stem.rsplit("-", 1)[0]
        d = np.load(path, allow_pickle=False)
        yv, yt, fv, ft = d["y_validation"], d["y_test"], d["finetune_validation"], d["finetune_test"]
        for name, f in (("forest's own averages", lambda p: p), ("half a vote per class", with_votes)):
            rows[corpus][name].append(figures(f(d["baseline_validation"]), f(d["baseline_test"]), fv, ft, yv, yt))
    print("| corpus | baseline probabilities | seeds | validation texts with p(true) = 0 | temperature | test ECE before → "
          "after | test log loss before → after | ensemble (auto, calibrated members): baseline weight, test accuracy |")
    print("|---|---|---:|---:|---:|---|---|---|")
    for corpus, by_name in rows.items():
        for name, runs in by_name.items():
            a = np.asarray(runs)
            m, s = a.mean(axis=0), (a.std(axis=0, ddof=1) if len(a) > 1 else np.zeros(a.shape[1]))
            print(f"| {corpus} | {name} | {len(a)} | {m[5]:.2%} | {m[0]:.3f} ± {s[0]:.3f} | {m[1]:.4f} ± {s[1]:.4f} → "
                  f"{m[2]:.4f} ± {s[2]:.4f} | {m[3]:.4f} ± {s[3]:.4f} → {m[4]:.4f} ± {s[4]:.4f} | {m[6]:.2f}, "
                  f"{m[7]:.4f} ± {s[7]:.4f} |")


if __name__ == "__main__":
    main()
