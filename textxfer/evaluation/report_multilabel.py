"""The parts of a comparison report that differ for multi-label models: the paired test, the score rows and the
per-label F1 figure (instead of McNemar's test and confusion matrices).

Why a paired bootstrap rather than McNemar's test per label: :data:`WHY_BOOTSTRAP`.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np

from textxfer.core.metrics import class_f1, format_f1
from textxfer.core.thresholds import micro_f1, micro_f1_resampled

WHY_BOOTSTRAP = (
    "The headline of a multi-label comparison is micro-F1, a figure of the whole test split (its hits and misses "
    "pooled over every text and label), not a mean of per-text right or wrong, so there is no per-text correctness "
    "for McNemar's test to count. McNemar per label would test one hypothesis per label and, after a "
    "multiple-testing correction, lose most of its power on the rare labels, while still not saying whether "
    "micro-F1 differs. The paired bootstrap resamples the test texts (each with all its labels, so labels that occur "
    "together stay together), scores both models on the same resample, and reads the p-value and a 95 % interval "
    "off the distribution of the micro-F1 difference.")
RESAMPLES = 2000
PER_LABEL_PNG = "per_label_f1.png"
SCORES = (("micro-F1", "micro_f1"), ("macro-F1", "macro_f1"), ("samples-F1", "samples_f1"),
          ("subset accuracy", "subset_accuracy"), ("Hamming loss", "hamming_loss"), ("LRAP", "lrap"))


def paired_bootstrap(predicted_a: np.ndarray, predicted_b: np.ndarray, truth: np.ndarray, alpha: float = 0.05,
                     resamples: int = RESAMPLES, seed: int = 0) -> dict:
    """The paired bootstrap of micro-F1(b) − micro-F1(a) over the test texts (0/1 ``(texts, labels)`` arrays).

    The p-value is two-sided: twice the smaller share of resampled differences on either side of 0 (with one
    added to both counts, so it is never 0); the interval is the 2.5th to 97.5th percentile of the differences."""
    truth = np.asarray(truth)
    rng = np.random.default_rng(seed)
    samples = rng.integers(0, len(truth), size=(resamples, len(truth)))
    differences = micro_f1_resampled(predicted_b, truth, samples) - micro_f1_resampled(predicted_a, truth, samples)
    observed = micro_f1(truth, predicted_b) - micro_f1(truth, predicted_a)
    below, above = int(np.sum(differences <= 0)), int(np.sum(differences >= 0))
    p = min(1.0, 2 * (min(below, above) + 1) / (resamples + 1))
    low, high = (float(v) for v in np.percentile(differences, [100 * alpha / 2, 100 * (1 - alpha / 2)]))
    significant = p < alpha
    return {"n": int(len(truth)), "difference": round(float(observed), 6), "interval": [round(low, 6), round(high, 6)],
            "p_value": p, "resamples": resamples, "method": "paired bootstrap of micro-F1 over the test texts",
            "alpha": float(alpha), "significant": significant,
            "better": ("b" if observed > 0 else "a") if significant else None}


def bootstrap_pairs(predicted: dict[str, np.ndarray], truth: np.ndarray) -> dict:
    """:func:`paired_bootstrap` for every pair of models (``predicted``: name → 0/1 predictions, in column order):
    ``bootstrap_pairs`` (``{"a", "b", …test}`` each) and ``bootstrap``, the first pair's test."""
    pairs = [{"a": a, "b": b, **paired_bootstrap(predicted[a], predicted[b], truth)}
             for a, b in itertools.combinations(predicted, 2)]
    return {"bootstrap": {k: v for k, v in pairs[0].items() if k not in ("a", "b")} if pairs else None,
            "bootstrap_pairs": pairs}


def bootstrap_sentence(pair: dict) -> str:
    """The test's result in plain words."""
    low, high = pair["interval"]
    verdict = "significant" if pair["significant"] else "not significant"
    text = (f"{pair['b']} − {pair['a']}: micro-F1 {pair['difference']:+.4f} (95 % interval {low:+.4f} to {high:+.4f}, "
            f"{pair['resamples']:,} paired resamples of the {pair['n']:,} test texts); p = {pair['p_value']:.3g} → "
            f"the difference is {verdict} at α = {pair['alpha']:g}")
    better = {"a": pair["a"], "b": pair["b"]}.get(pair.get("better") or "")
    return text + (f": {better} is better." if better else ".")


def score_rows(comparison: dict) -> list[tuple[str, list, list[str]]]:
    """``(title, values, cells)`` of the score rows of a multi-label comparison: the headline figures, then each
    label's F1."""
    metrics = [m["metrics"] for m in comparison["models"].values()]
    rows = [(title, [m.get(key) for m in metrics], ["n/a" if m.get(key) is None else f"{m[key]:.4f}" for m in metrics])
            for title, key in SCORES]
    return rows + [(f"F1[{c}]", [class_f1(m, c) for m in metrics], [format_f1(m, c) for m in metrics])
                   for c in comparison["labels"]]


def plot_per_label_f1(comparison: dict, path: Path | str, draw_figure):
    """Each label's test F1 per model as grouped bars (labels sorted by support, most common first); returns the
    Figure. ``draw_figure``: the report's figure helper (fonts for CJK labels)."""
    models = comparison["models"]
    names = list(models)
    first = next(iter(models.values()))["metrics"]["per_class"]
    labels = sorted(comparison["labels"], key=lambda c: -first.get(c, {}).get("support", 0))

    def paint(fig):
        ax = fig.subplots()
        width = 0.8 / len(names)
        for i, name in enumerate(names):
            values = [class_f1(models[name]["metrics"], c) or 0.0 for c in labels]
            ax.bar([x - 0.4 + width * (i + 0.5) for x in range(len(labels))], values, width, color=f"C{i}",
                   label=f"{name} (micro-F1 {models[name]['metrics']['micro_f1']:.4f})")
        supports = [first.get(c, {}).get("support", 0) for c in labels]
        ax.set_xticks(range(len(labels)), [f"{c}\n({s:,})" for c, s in zip(labels, supports)],
                      rotation=45 if len(labels) > 6 else 0, ha="right" if len(labels) > 6 else "center", fontsize=8)
        ax.set(ylim=(0, 1.1), ylabel="test F1", title="F1 per label (test rows with the label in brackets)")
        ax.legend(fontsize=8, loc="upper right", ncols=len(names))

    return draw_figure(Path(path), (min(14.0, max(6.0, 0.25 * len(labels) * len(names) + 3)), 4.2), paint)
