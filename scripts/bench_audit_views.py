#!/usr/bin/env python3
"""Which out-of-fold view finds flipped labels best — alone, and averaged? The evidence for ``textxfer audit``'s
default auditor.

On the flipped copies of ``scripts/bench_audit.py`` (per corpus its default split, 5 % of the training labels
flipped, seeded; the same files, made here when missing) and the same 5 stratified folds the audit uses, each view
scores every training and validation text out-of-fold with textxfer's own functions (``textxfer.audit.crossfit``):

- ``regression``: a logistic regression on the frozen bundled encoder's features, C chosen on the validation rows
  (the single view the audit used until now; ``--model head-only``);
- ``neighbours``: the similarity-weighted vote of the 25 nearest texts of the other folds on the same features;
- ``ngrams``: a logistic regression on character 1–3-gram TF-IDF, C chosen on the validation rows;
- ``forest`` (``--with-forest``): the baseline recipe, word2vec + RandomForest, one per fold (``--model baseline``);

and the averages of their probabilities. With k = the number of flipped rows, precision at k of two rankings: by
the probability of the given label alone, lowest first (what the audit's list approaches, and reaches where
cleanlab flags at least k rows), and the rows flagged by cleanlab's default filter (``prune_by_noise_rate``) first,
by that probability, then the rest (the audit's order until now). ``bench_audit.py`` measures the audit's own list.
Run: ``python scripts/bench_audit_views.py [--corpora reviews thucnews bbc] [--seeds 3] [--with-forest]``; each
corpus × seed is cached in ``<output>/views-<corpus>-<seed>.json``, and the encoder's features in
``<output>/features`` (shared with ``bench_audit.py``).
"""

from __future__ import annotations

import argparse
import json
import sys
from itertools import combinations
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

import corpora  # noqa: E402
from bench_audit import flipped_copy, mean_sd  # noqa: E402
from bench_small_data import cached  # noqa: E402


def precision(probabilities: np.ndarray, targets: np.ndarray, flipped: set[int], noise_rate_first: bool) -> float:
    """Precision at k of the rows ranked by the probability of their given label (lowest first), or, with
    ``noise_rate_first``, of the rows cleanlab's default filter (``prune_by_noise_rate``) flags first, then the rest
    (the audit's order until now)."""
    from cleanlab.filter import find_label_issues

    k = len(flipped)
    score = probabilities[np.arange(len(targets)), targets]
    by_score = [int(i) for i in np.argsort(score, kind="stable")]
    if noise_rate_first:
        first = [int(i) for i in find_label_issues(targets, probabilities, return_indices_ranked_by="self_confidence")]
        by_score = first + [i for i in by_score if i not in set(first)]
    return len(set(by_score[:k]) & flipped) / k


def run_one(name: str, seed: int, output: Path, with_forest: bool) -> dict:
    from textxfer.audit import crossfit
    from textxfer.audit.run import audited_rows, cheap_views
    from textxfer.data.dataset import DataOptions, load_data
    from textxfer.transformer.pipeline import FinetuneConfig

    path = output / f"{name}-{seed}-flipped.csv"
    flipped_rows, _ = flipped_copy(corpora.build(name), path, seed)
    data = load_data(DataOptions(data=str(path)))
    dataset, splits = audited_rows(data)
    labels, targets = data.labels, data.labels.targets(dataset.labels)
    held_out = crossfit.fold_indices(labels, targets, 5, 42)
    is_validation = np.array([split == "validation" for split in splits])
    flipped = {i for i, row in enumerate(dataset.rows) if row in flipped_rows}
    features, _ = crossfit.frozen_features(FinetuneConfig(feature_cache=str(output / "features")), dataset, labels)
    views = {view: p for view, (p, _) in cheap_views("auto", features, "", dataset, targets, labels, held_out,
                                                        is_validation, 42, False, lambda _: None).items()}
    if with_forest:
        from textxfer.baseline.pipeline import BaselineClassifier, BaselineConfig

        views["forest"] = crossfit.model_out_of_fold(lambda: BaselineClassifier(BaselineConfig(seed=42, n_jobs=1)),
                                                     dataset, labels, held_out, log=lambda _: None)
    combined = {" + ".join(names): np.mean([views[n] for n in names], axis=0)
                for size in range(1, len(views) + 1) for names in combinations(views, size)}
    record = {"corpus": name, "seed": seed, "flipped": len(flipped),
              "views": {key: {"accuracy": float(np.mean(p.argmax(axis=1) == targets)),
                              "precision_by_score": precision(p, targets, flipped, False),
                              "precision_noise_rate_first": precision(p, targets, flipped, True)}
                        for key, p in combined.items()}}
    print(json.dumps(record), flush=True)
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpora", nargs="+", default=["reviews", "thucnews", "bbc"])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--with-forest", action="store_true")
    parser.add_argument("--output", type=Path, default=ROOT / "runs" / "bench_audit")
    args = parser.parse_args()
    args.output.mkdir(parents=True, exist_ok=True)
    records = [cached(args.output / f"views-{name}-{seed}.json", lambda: run_one(name, seed, args.output, args.with_forest))
               for name in args.corpora for seed in range(42, 42 + args.seeds)]
    names = list(dict.fromkeys(r["corpus"] for r in records))
    keys = list(records[0]["views"])
    out = ["| views averaged | " + " | ".join(f"{n}: precision at k by score (noise-rate filter first) · accuracy"
                                           for n in names) + " |",
           "|---|" + "---|" * len(names)]
    for key in keys:
        cells = []
        for name in names:
            runs = [r["views"][key] for r in records if r["corpus"] == name and key in r["views"]]
            cells.append(f"{mean_sd([v['precision_by_score'] for v in runs], 3)} "
                         f"({mean_sd([v['precision_noise_rate_first'] for v in runs], 3)}) · "
                         f"{mean_sd([v['accuracy'] for v in runs], 3)}" if runs else "—")
        out.append(f"| {key} | " + " | ".join(cells) + " |")
    text = "\n".join(out)
    (args.output / "bench_audit_views.md").write_text(text + "\n", encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
