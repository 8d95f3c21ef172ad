"""The degenerate-model guard: a trained model that predicts one class for (nearly) all texts, or whose
macro-F1 is not above what always answering the training set's majority class scores.

Such a model is still saved (it is the user's run), but the check is printed as one loud line, kept in
``report.json`` under ``model_check`` and flagged by ``compare``. The check reads only a split's scores
(its confusion matrix), so it costs nothing after scoring and works on any model kind.
"""

from __future__ import annotations

from collections import Counter
from typing import Sequence

import numpy as np

from textxfer.data.labels import LabelSet
from textxfer.core.metrics import score

NEARLY_ALL = 0.95  # one class predicted for at least this share of the texts ...
OVER_TRUE_SHARE = 0.05  # ... and for this much more than its true share
MIN_TEXTS = 20  # below this, only "one class for every text" is judged (shares and F1 are too noisy)


def check_model(metrics: dict, train_labels: Sequence, labels: LabelSet, split: str = "validation") -> dict:
    """Judge one split's scores (``metrics`` as :func:`textxfer.core.metrics.score` returns them).

    Returns a JSON-ready dict: ``split``, ``n``, ``degenerate``, ``reasons`` (plain sentences),
    ``predicted_shares`` / ``true_shares`` (label → share), ``macro_f1``, ``majority_class`` (of the
    training labels) and ``majority_macro_f1`` (that constant answer's macro-F1 on this split).
    """
    names = [str(n) for n in labels.names]
    matrix = np.asarray(metrics["confusion_matrix"], dtype=np.int64)
    n = int(matrix.sum())
    true_counts, predicted_counts = matrix.sum(axis=1), matrix.sum(axis=0)
    majority = Counter(train_labels).most_common(1)[0][0] if len(train_labels) else labels.names[0]
    references = np.repeat(np.arange(len(names)), true_counts)
    majority_f1 = score(references, np.full(n, labels.names.index(majority)), labels)["macro_f1"] if n else 0.0
    check = {"split": split, "n": n, "degenerate": False, "reasons": [],
             "predicted_shares": {c: round(float(k) / n, 4) if n else 0.0 for c, k in zip(names, predicted_counts)},
             "true_shares": {c: round(float(k) / n, 4) if n else 0.0 for c, k in zip(names, true_counts)},
             "macro_f1": metrics["macro_f1"], "majority_class": str(majority), "majority_macro_f1": majority_f1}
    if not n or (true_counts > 0).sum() < 2:
        return check  # one true class (or none): nothing to tell apart here
    top = int(predicted_counts.argmax())
    share, true_share = predicted_counts[top] / n, true_counts[top] / n
    if predicted_counts[top] == n:
        check["reasons"].append(f"it predicts '{names[top]}' for every {split} text (its true share is {true_share:.0%})")
    elif n >= MIN_TEXTS and share >= NEARLY_ALL and share - true_share >= OVER_TRUE_SHARE:
        check["reasons"].append(f"it predicts '{names[top]}' for {share:.0%} of the {split} texts "
                                f"(its true share is {true_share:.0%})")
    if n >= MIN_TEXTS and metrics["macro_f1"] <= majority_f1:
        check["reasons"].append(f"its {split} macro-F1 {metrics['macro_f1']:.4f} is not above the "
                                f"{majority_f1:.4f} of always answering the majority class '{majority}'")
    check["degenerate"] = bool(check["reasons"])
    return check


def check_multilabel(metrics: dict, split: str = "validation") -> dict:
    """Judge a multi-label split's scores (:func:`textxfer.core.metrics.score_multilabel`): a label predicted for
    every text while it is not true of nearly all, or no label ever predicted, makes the model degenerate; a
    label never predicted although the split has rows of it is listed (rare labels often are: a note, not a
    verdict)."""
    n = metrics["n"]
    check = {"split": split, "n": n, "degenerate": False, "reasons": [], "never_predicted": [], "always_predicted": [],
             "micro_f1": metrics["micro_f1"]}
    if not n:
        return check
    for name, figures in metrics["per_class"].items():
        if figures["predicted"] == 0 and figures["support"] > 0:
            check["never_predicted"].append(name)
        if figures["predicted"] == n and figures["support"] / n < NEARLY_ALL:
            check["always_predicted"].append(name)
    if check["always_predicted"]:
        listed = ", ".join(f"'{name}'" for name in check["always_predicted"])
        check["reasons"].append(f"it predicts label(s) {listed} for every {split} text")
    if all(figures["predicted"] == 0 for figures in metrics["per_class"].values()):
        check["reasons"].append(f"it predicts no label for any {split} text")
    check["degenerate"] = bool(check["reasons"])
    return check


ADVICE = {"finetune": "give it more updates (--min-steps, --head-learning-rate, --epochs), try another --strategy, or add data",
          "baseline": "add data, or compare with the fine-tuned pipeline"}


def warning_line(check: dict | None, name: str = "the model", kind: str = "") -> str | None:
    """The one loud line for a degenerate check (None when the model is fine or was not checked)."""
    if not check or not check.get("degenerate"):
        return None
    return (f"WARNING: {name} is degenerate: " + "; ".join(check["reasons"]) + ". It was saved, but do not "
            f"trust it: {ADVICE.get(kind, 'add data or train longer')}")
