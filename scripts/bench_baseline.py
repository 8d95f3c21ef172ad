"""Benchmark the default baseline against a classic reference on the bundled sample data.

Same split (the default seeded 80/10/10 split of ``sample_data/reviews.csv``), same scorer
(``textxfer.core.metrics.score``), same process. The reference is character 1–3-gram TF-IDF + logistic
regression. Prints accuracy, macro-F1, fit seconds and predict texts/s for both, and the ratios the
targets in BENCHMARKS.md are stated in; a plain recipe
(CBOW word2vec, plain mean, 300 trees) is measured too, to show what the default recipe adds. Run: ``python scripts/bench_baseline.py [--json out.json]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def timed(function, *args):
    """``(result, seconds)`` of one call."""
    started = time.perf_counter()
    result = function(*args)
    return result, time.perf_counter() - started


class Reference:
    """Character 1–3-gram TF-IDF + logistic regression (the classic strong linear baseline).

    ``tuned=False`` is the reference the target is stated against (library defaults, sublinear tf);
    ``tuned=True`` (C=4, min_df=2) is shown beside it so nobody mistakes the default for the ceiling.
    """

    def __init__(self, tuned: bool = False) -> None:
        self.tuned = tuned

    def fit(self, texts, y):
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression

        self.vectorizer = TfidfVectorizer(analyzer="char", ngram_range=(1, 3), sublinear_tf=True,
                                          min_df=2 if self.tuned else 1)
        self.model = LogisticRegression(C=4.0 if self.tuned else 1.0, max_iter=2000)
        self.model.fit(self.vectorizer.fit_transform(texts), y)
        return self

    def predict_proba(self, texts):
        return self.model.predict_proba(self.vectorizer.transform(texts))


def main() -> None:
    """Run both, print the comparison, optionally write it as JSON."""
    from textxfer.data.dataset import DataOptions, load_data
    from textxfer.core.metrics import score
    from textxfer.baseline.pipeline import BaselineClassifier, BaselineConfig

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(ROOT / "sample_data" / "reviews.csv"))
    parser.add_argument("--json", help="also write the figures to this JSON file")
    args = parser.parse_args()

    data = load_data(DataOptions(data=args.data))
    labels = data.labels
    y_train, y_test = np.array(labels.encode(data.train.labels)), labels.encode(data.test.labels)
    # Throughput is measured on every text of the data set (train + validation + test), in one batch.
    all_texts = data.train.texts + data.validation.texts + data.test.texts

    results = {}
    # The default recipe, then the plain recipe (CBOW, plain mean, RF 300) as an ablation.
    plain = BaselineConfig(sg=False, sample=1e-3, epochs=10, label_tokens=0, label_dimensions=False,
                           weighting="mean", n_estimators=300, min_samples_leaf=1)
    for name, config in (("baseline (word2vec + RandomForest)", BaselineConfig()),
                         ("plain word2vec mean + RF(300)", plain)):
        baseline = BaselineClassifier(config)
        _, fit_seconds = timed(baseline.fit, data.train)
        _, predict_seconds = timed(baseline.predict_proba, all_texts)
        predicted = baseline.predict_proba(data.test.texts).argmax(axis=1)
        results[name] = (score(y_test, predicted, labels), fit_seconds, predict_seconds)

    for name, tuned in (("reference (char 1-3gram TF-IDF + LR)", False), ("tuned reference (C=4, min_df=2)", True)):
        reference = Reference(tuned)
        _, fit_seconds = timed(reference.fit, data.train.texts, y_train)
        _, predict_seconds = timed(reference.predict_proba, all_texts)
        predicted = reference.predict_proba(data.test.texts).argmax(axis=1)
        results[name] = (score(y_test, predicted, labels), fit_seconds, predict_seconds)

    print(f"data: {args.data} — train {len(data.train)}, test {len(data.test)}; "
          f"predict throughput over {len(all_texts)} texts; {os.cpu_count()} CPU cores, Python {platform.python_version()}")
    print(f"{'model':40} {'accuracy':>9} {'macro-F1':>9} {'fit s':>7} {'predict texts/s':>16}")
    figures = {}
    for name, (metrics, fit_s, predict_s) in results.items():
        rate = len(all_texts) / predict_s
        print(f"{name:40} {metrics['accuracy']:9.4f} {metrics['macro_f1']:9.4f} {fit_s:7.1f} {rate:16,.0f}")
        figures[name] = {"accuracy": metrics["accuracy"], "macro_f1": metrics["macro_f1"],
                         "fit_seconds": fit_s, "predict_texts_per_second": rate}
    base, _, ref, _ = figures.values()
    print(f"accuracy gap (baseline − reference): {base['accuracy'] - ref['accuracy']:+.4f} (target ≥ −0.02); "
          f"baseline fit {base['fit_seconds']:.1f} s (target ≤ 60); "
          f"baseline predict {base['predict_texts_per_second']:,.0f} texts/s (target ≥ 5,000)")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
