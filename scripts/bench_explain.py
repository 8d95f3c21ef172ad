#!/usr/bin/env python3
"""Are explanations faithful? Deleting the words an explanation ranks first must lower the predicted label's
probability more than deleting as many random words.

For each model folder and each of its explanation methods, over the test split of its ``split.json`` (texts of at
least ``k + 1`` words; ``--limit`` for the first N of them): the predicted label's probability drop when the ``k``
(3) words of largest contribution are removed, and when ``k`` random words are (seeded, the same draw for every
model); mean ± sd over the texts, the share of texts where the explanation's words cost more, and the seconds per
explanation. Run: ``python scripts/bench_explain.py --runs runs/demo/baseline runs/demo/finetune [--limit 500]``.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import numpy as np

from textxfer import classifier
from textxfer.core.explain import without
from textxfer.data.dataset import DataOptions, load_data


def removed(item, words):
    """``item`` with ``words`` removed, the last first so the earlier spans stay valid."""
    for word in sorted(words, key=lambda w: (w.part, w.start), reverse=True):
        item = without(item, word)
    return item


def measure(model, inputs: list, method: str, k: int, seed: int) -> dict:
    started = time.perf_counter()
    explained = model.explain(inputs, method=method)
    seconds = (time.perf_counter() - started) / max(len(inputs), 1)
    rng = random.Random(seed)
    top, chance, label_ids = [], [], []
    names = [model.labels.value(n) for n in model.labels.names]
    for e in explained:
        order = np.argsort(-np.asarray(e.contributions), kind="stable")[:k]
        top.append(removed(e.input, [e.words[i] for i in order]))
        chance.append(removed(e.input, rng.sample(e.words, k)))
        label_ids.append(names.index(e.label))
    rows = np.arange(len(explained))
    base = np.array([e.score for e in explained])
    drop_top = base - model.predict_proba(top)[rows, label_ids]
    drop_random = base - model.predict_proba(chance)[rows, label_ids]
    return {"method": method, "texts": len(explained), "seconds_per_text": round(seconds, 3),
            "drop_top": [float(drop_top.mean()), float(drop_top.std(ddof=1))],
            "drop_random": [float(drop_random.mean()), float(drop_random.std(ddof=1))],
            "share_top_larger": float(np.mean(drop_top > drop_random))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", nargs="+", required=True, help="model run folders of one split")
    parser.add_argument("--k", type=int, default=3)
    parser.add_argument("--limit", type=int, help="explain only the first N eligible test texts")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, help="write the figures as JSON here too")
    args = parser.parse_args()
    data = load_data(DataOptions(split=str(Path(args.runs[0]) / "split.json")))
    from textxfer.core.explain import words_of

    inputs = [item for item in data.test.inputs if len(words_of(item)[0]) > args.k][:args.limit]
    print(f"{len(inputs):,} of {len(data.test):,} test texts have more than {args.k} words", file=sys.stderr)
    results = []
    for run in args.runs:
        model = classifier.load(run)
        for method in model.explanation_methods:
            figures = {"run": run, "kind": model.kind, **measure(model, inputs, method, args.k, args.seed)}
            results.append(figures)
            print(json.dumps(figures), flush=True)
    print(f"| model | method | texts | probability drop, top {args.k} words removed | drop, {args.k} random words | "
          "texts where the top words cost more | seconds per explanation |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for r in results:
        print(f"| {r['kind']} | {r['method']} | {r['texts']:,} | {r['drop_top'][0]:.4f} ± {r['drop_top'][1]:.4f} | "
              f"{r['drop_random'][0]:.4f} ± {r['drop_random'][1]:.4f} | {r['share_top_larger']:.1%} | "
              f"{r['seconds_per_text']:.2f} |")
    if args.output:
        args.output.write_text(json.dumps(results, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
