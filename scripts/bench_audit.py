#!/usr/bin/env python3
"""Does ``textxfer audit`` find wrong labels? Flip 5 % of the training labels at random (seeded), audit, and count.

Per corpus (``--corpora``: the Chinese reviews of ``sample_data/``, THUCNews headlines, BBC News in English; built by
``scripts/corpora.py``) the default split is made once and kept: the flipped copy carries it in a ``split`` column,
so only training labels change and the test split is the original's. Per seed:

- 5 % of the training rows get another label, drawn at random among the other classes;
- ``textxfer audit`` (its defaults: ``--model auto``, the average of three cheap views — a logistic regression and a
  nearest-neighbour vote on the bundled encoder's frozen features, a logistic regression on character n-grams; each
  view alone: ``scripts/bench_audit_views.py``) runs on the flipped copy; with k = the number of flipped rows, the
  share of its k most suspect rows that were flipped (precision at k) and the share of flipped rows among them (recall at k; equal to precision here, both over k);
- the baseline (word2vec + RandomForest, defaults, ``n_jobs=1`` so runs repeat) trains on the original labels, on
  the flipped ones, and on the flipped ones with the audit's k most suspect rows dropped, or relabelled with its
  suggestion; test accuracy of each (the untouched test split).

The encoder's features do not depend on the labels, so they are cached across seeds (``<output>/features``); the
first seed's audit time is the cold one. Run: ``python scripts/bench_audit.py [--corpora reviews thucnews bbc]
[--seeds 3] [--report-only]``; writes ``<output>/<corpus>-<seed>.json`` and ``bench_audit.md``.
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

import corpora  # noqa: E402
from bench_small_data import cached  # noqa: E402

SHARE = 0.05


def flipped_copy(source: Path, target: Path, seed: int) -> tuple[set[int], dict]:
    """``source`` with its default split in a ``split`` column and 5 % of the training labels changed; returns the
    flipped rows and the split's sizes."""
    from textxfer.data.dataset import DataOptions, load_data

    data = load_data(DataOptions(data=str(source)))
    split_of = {row: name for name, part in data.splits().items() for row in part.rows}
    with open(source, encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    train_rows = sorted(data.train.rows)
    rng = random.Random(seed)
    flipped = set(rng.sample(train_rows, round(SHARE * len(train_rows))))
    names = list(data.labels.names)
    for row in flipped:
        record = rows[row - 1]
        record["label"] = rng.choice([n for n in names if n != record["label"].strip()])
    renumbered = {}  # a row's number in the copy, which keeps only the rows the split kept
    with open(target, "w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["text", "label", "split"])
        writer.writeheader()
        for number, record in enumerate(rows, start=1):
            if number in split_of:
                writer.writerow({"text": record["text"], "label": record["label"], "split": split_of[number]})
                renumbered[number] = len(renumbered) + 1
    return {renumbered[row] for row in flipped}, {name: len(part) for name, part in data.splits().items()}


def baseline_accuracy(path: Path, drop: set[int] = frozenset(), relabel: dict[int, str] | None = None) -> float:
    """Test accuracy of the baseline (defaults, one job) trained on ``path``'s training rows, less ``drop``, with
    ``relabel`` applied."""
    from dataclasses import replace

    from textxfer.baseline.pipeline import BaselineClassifier, BaselineConfig
    from textxfer.data.dataset import DataOptions, load_data

    data = load_data(DataOptions(data=str(path)))
    train = data.train
    keep = [i for i, row in enumerate(train.rows) if row not in drop]
    labels = [(relabel or {}).get(train.rows[i], train.labels[i]) for i in keep]
    train = replace(train.take(keep), labels=labels)
    model = BaselineClassifier(BaselineConfig(n_jobs=1)).fit(train, data.validation, labels=data.labels)
    predicted = model.predict(data.test.texts)
    return float(np.mean([p == t for p, t in zip(predicted, data.test.labels)]))


def run_one(name: str, seed: int, output: Path, encoder: str | None) -> dict:
    from textxfer.audit.run import audit
    from textxfer.data.dataset import DataOptions
    from textxfer.transformer.pipeline import FinetuneConfig

    flipped_path = output / f"{name}-{seed}-flipped.csv"
    flipped, sizes = flipped_copy(corpora.build(name), flipped_path, seed)
    config = FinetuneConfig(feature_cache=str(output / "features"), **({"model": encoder} if encoder else {}))
    started = time.perf_counter()
    summary = audit(DataOptions(data=str(flipped_path)), output / f"{name}-{seed}-audit", configs={"finetune": config},
                    progress=False, log=lambda line: print(f"  {line}", flush=True))
    seconds = time.perf_counter() - started
    with open(output / f"{name}-{seed}-audit" / "audit.csv", encoding="utf-8", newline="") as handle:
        ranked = list(csv.DictReader(handle))
    k = len(flipped)
    top = ranked[:k]
    hits = sum(int(r["row"]) in flipped for r in top)
    suggested = {int(r["row"]): r["suggested_label"] for r in top if r["suggested_label"]}
    original = corpora.build(name)
    accuracy = {"original labels": baseline_accuracy(original),
                "flipped labels": baseline_accuracy(flipped_path),
                "flipped, audit's top k dropped": baseline_accuracy(flipped_path, drop={int(r["row"]) for r in top}),
                "flipped, audit's top k relabelled": baseline_accuracy(flipped_path, relabel=suggested)}
    record = {"corpus": name, "seed": seed, "sizes": sizes, "flipped": k, "audited": summary["audited"],
              "audit_seconds": round(seconds, 1), "suspect_rows": summary["suspect_rows"],
              "cleanlab_label_issues": summary["counts"].get("label-issue", 0),
              "out_of_fold_accuracy": summary["auditor"].get("out_of_fold_accuracy"),
              "precision_at_k": hits / k, "recall_at_k": hits / k,
              "flipped_among_label_issues": sum(int(r["row"]) in flipped for r in ranked if "label-issue" in r["reason"]),
              "test_accuracy": accuracy}
    print(json.dumps(record), flush=True)
    return record


def mean_sd(values: list[float], digits: int = 4) -> str:
    if len(values) == 1:
        return f"{values[0]:.{digits}f} (1 seed)"
    return f"{np.mean(values):.{digits}f} ± {np.std(values, ddof=1):.{digits}f}"


def markdown(records: list[dict]) -> list[str]:
    out = ["| corpus | audited texts | flipped (k) | precision at k | cleanlab's label issues (of which flipped) | "
           "auditor's out-of-fold accuracy | audit time (first seed: features computed) |",
           "|---|---:|---:|---:|---:|---:|---:|"]
    names = list(dict.fromkeys(r["corpus"] for r in records))
    for name in names:
        runs = [r for r in records if r["corpus"] == name]
        out.append(f"| {name} | {runs[0]['audited']:,} | {runs[0]['flipped']:,} | "
                   f"{mean_sd([r['precision_at_k'] for r in runs], 3)} | "
                   f"{mean_sd([r['cleanlab_label_issues'] for r in runs], 0)} "
                   f"({mean_sd([r['flipped_among_label_issues'] for r in runs], 0)}) | "
                   f"{mean_sd([r['out_of_fold_accuracy'] for r in runs], 4)} | "
                   f"{runs[0]['audit_seconds'] / 60:.1f} min (later seeds {mean_sd([r['audit_seconds'] / 60 for r in runs[1:]], 1) if len(runs) > 1 else 'n/a'} min) |")
    out += ["", "Test accuracy of the baseline (word2vec + RandomForest, defaults, one job), mean ± sd over the seeds:", "",
            "| corpus | original labels | 5 % flipped | flipped, audit's top k dropped | flipped, top k relabelled |",
            "|---|---:|---:|---:|---:|"]
    for name in names:
        runs = [r for r in records if r["corpus"] == name]
        cells = [mean_sd([r["test_accuracy"][key] for r in runs]) for key in runs[0]["test_accuracy"]]
        out.append(f"| {name} | " + " | ".join(cells) + " |")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpora", nargs="+", default=["reviews", "thucnews", "bbc"])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--encoder", help="the auditor's encoder (default: the bundled one)")
    parser.add_argument("--output", type=Path, default=ROOT / "runs" / "bench_audit")
    parser.add_argument("--report-only", action="store_true")
    args = parser.parse_args()
    args.output.mkdir(parents=True, exist_ok=True)
    records = [cached(path, lambda: run_one(name, seed, args.output, args.encoder))
               for name in args.corpora for seed in range(42, 42 + args.seeds)
               if (path := args.output / f"{name}-{seed}.json").is_file() or not args.report_only]
    text = "\n".join(markdown(records))
    (args.output / "bench_audit.md").write_text(text, encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
