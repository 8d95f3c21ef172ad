"""The one scorer: accuracy, macro/weighted F1, per-class P/R/F1 and the confusion matrix; for multi-label
data micro/macro/samples F1, subset accuracy, Hamming loss and label-ranking average precision.

Single-label figures are computed through Hugging Face ``evaluate`` with a metric module built locally (a
:class:`evaluate.Metric` subclass defined here), so nothing is ever fetched from the hub; multi-label ones
straight from scikit-learn (``evaluate``'s features would need one more layer for 0/1 matrices and
probabilities). Every pipeline and the comparison report share this one implementation.
"""

from __future__ import annotations

from typing import Sequence

from textxfer.core.imports import evaluate_module
from textxfer.data.labels import LabelSet

_DESCRIPTION = "Multi-class classification report: accuracy, macro/weighted F1, per-class P/R/F1, confusion matrix."


def _metric_class():
    """Build the metric class lazily: importing ``evaluate`` pulls in ``datasets``."""
    import datasets
    import numpy as np
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    evaluate = evaluate_module()

    class ClassificationReport(evaluate.Metric):
        """``evaluate`` metric over integer class ids ``0..num_labels-1``."""

        def _info(self):
            return evaluate.MetricInfo(
                description=_DESCRIPTION,
                citation="",
                inputs_description="predictions, references: class ids; num_labels: number of classes",
                features=datasets.Features({"predictions": datasets.Value("int64"),
                                            "references": datasets.Value("int64")}),
            )

        def _compute(self, predictions, references, num_labels: int):
            ids = list(range(num_labels))
            predictions, references = np.asarray(predictions), np.asarray(references)
            precision, recall, f1, support = precision_recall_fscore_support(
                references, predictions, labels=ids, zero_division=0)
            # Macro-F1 averages the classes that have rows here: a class with none has no F1 to average
            # (sklearn would count it as 0 and quietly pull the mean down).
            present = [i for i in ids if support[i] > 0] or ids
            _, _, macro_f1, _ = precision_recall_fscore_support(
                references, predictions, labels=present, average="macro", zero_division=0)
            _, _, weighted_f1, _ = precision_recall_fscore_support(
                references, predictions, labels=ids, average="weighted", zero_division=0)
            return {
                "accuracy": float((predictions == references).mean()) if len(references) else 0.0,
                "macro_f1": float(macro_f1),
                "weighted_f1": float(weighted_f1),
                "precision": precision.tolist(), "recall": recall.tolist(), "f1": f1.tolist(),
                "support": support.tolist(),
                "confusion_matrix": confusion_matrix(references, predictions, labels=ids).tolist(),
            }

    return ClassificationReport


_METRIC = None


def score(references: Sequence[int], predictions: Sequence[int], labels: LabelSet) -> dict:
    """Score predicted class ids against true class ids (both in ``labels`` order).

    Returns ``accuracy``, ``macro_f1`` (over the classes with at least one true row; those without are
    listed in ``classes_without_rows``), ``weighted_f1``, ``n``, ``per_class`` (label → precision,
    recall, f1, support) and ``confusion_matrix`` (rows: true label, columns: predicted, in
    ``labels`` order, which is also stored under ``labels``).
    """
    global _METRIC
    if _METRIC is None:
        _METRIC = _metric_class()(keep_in_memory=True)
    raw = _METRIC.compute(predictions=list(map(int, predictions)), references=list(map(int, references)),
                          num_labels=len(labels))
    per_class = {
        name: {"precision": raw["precision"][i], "recall": raw["recall"][i], "f1": raw["f1"][i],
               "support": int(raw["support"][i])}
        for i, name in enumerate(labels.names)
    }
    return {"n": len(references), "accuracy": raw["accuracy"], "macro_f1": raw["macro_f1"],
            "classes_without_rows": [name for name in labels.names if per_class[name]["support"] == 0],
            "weighted_f1": raw["weighted_f1"], "per_class": per_class,
            "labels": list(labels.names), "confusion_matrix": raw["confusion_matrix"]}


def score_multilabel(truth, predicted, probabilities, labels: LabelSet) -> dict:
    """Score multi-label predictions: ``truth`` and ``predicted`` are 0/1 ``(n, labels)`` arrays (columns in
    ``labels`` order), ``probabilities`` the scores they were thresholded from.

    Returns ``micro_f1`` (the headline: every label decision counts once), ``macro_f1`` (the mean over labels
    with at least one true row; those without are listed in ``classes_without_rows``), ``samples_f1`` (the
    mean over texts; a text with no true and no predicted label scores 1), ``subset_accuracy`` (the whole label
    set right), ``hamming_loss`` (the share of wrong label decisions), ``lrap`` (label-ranking average precision
    of the probabilities, over texts with at least one label), ``n``, ``per_class`` (label → precision, recall,
    f1, support, predicted: how many texts got the label) and ``labels``. ``accuracy`` is ``subset_accuracy``, so
    tables written for single-label runs read something meaningful.
    """
    import numpy as np
    from sklearn.metrics import f1_score, hamming_loss, label_ranking_average_precision_score, precision_recall_fscore_support

    truth, predicted = np.asarray(truth, dtype=np.int64), np.asarray(predicted, dtype=np.int64)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    n = len(truth)
    precision, recall, f1, support = precision_recall_fscore_support(truth, predicted, average=None, zero_division=0)
    present = [j for j in range(len(labels)) if support[j] > 0]
    with_labels = truth.sum(axis=1) > 0
    lrap = (float(label_ranking_average_precision_score(truth[with_labels], probabilities[with_labels]))
            if with_labels.any() else None)
    subset = float((truth == predicted).all(axis=1).mean()) if n else 0.0
    per_class = {name: {"precision": float(precision[j]), "recall": float(recall[j]), "f1": float(f1[j]),
                        "support": int(support[j]), "predicted": int(predicted[:, j].sum())}
                 for j, name in enumerate(labels.names)}
    return {
        "n": n, "multi_label": True,
        "micro_f1": float(f1_score(truth, predicted, average="micro", zero_division=0)) if n else 0.0,
        "macro_f1": float(np.mean([f1[j] for j in present])) if present else 0.0,
        "samples_f1": float(f1_score(truth, predicted, average="samples", zero_division=1.0)) if n else 0.0,
        "subset_accuracy": subset, "accuracy": subset,
        "hamming_loss": float(hamming_loss(truth, predicted)) if n else 0.0,
        "lrap": lrap,
        "classes_without_rows": [name for name in labels.names if per_class[name]["support"] == 0],
        "per_class": per_class, "labels": list(labels.names),
    }


def score_probabilities(labels: LabelSet, truth: Sequence, probabilities, thresholds=None) -> dict:
    """Score a model's ``probabilities`` (rows × ``labels``) against the true labels of the rows (label names; for a
    multi-label set, a tuple of names per row): the argmax for single-label sets, each label's ``thresholds`` for
    multi-label ones. The one entry point that every shape goes through."""
    import numpy as np

    if labels.multi_label:
        from textxfer.core.thresholds import decide

        return score_multilabel(labels.indicators(truth), decide(probabilities, thresholds), probabilities, labels)
    return score(labels.encode(truth), np.asarray(probabilities).argmax(axis=1), labels)


# Shown instead of a class's recall and F1 when the split has no row of it: both are 0/0, undefined. (The
# figures in metrics.json stay numbers, sklearn's 0.0, for whatever reads them; the class is marked there by
# ``support`` 0 and ``classes_without_rows``, which is what the tables go by.)
NO_ROWS = "n/a (no rows)"


def has_rows(metrics: dict, name: str) -> bool:
    """Whether the split scored in ``metrics`` (a :func:`score` result) has rows of class ``name``: without any,
    the class's recall and F1 are undefined."""
    return ((metrics.get("per_class") or {}).get(name) or {}).get("support") != 0


def class_f1(metrics: dict, name: str) -> float | None:
    """Class ``name``'s F1 in ``metrics``; None when it is undefined (no rows of the class) or not recorded."""
    return ((metrics.get("per_class") or {}).get(name) or {}).get("f1") if has_rows(metrics, name) else None


def format_f1(metrics: dict, name: str) -> str:
    """Class ``name``'s F1 as a table cell: 4 decimals, :data:`NO_ROWS` when undefined, "n/a" when not recorded."""
    if not has_rows(metrics, name):
        return NO_ROWS
    f1 = class_f1(metrics, name)
    return "n/a" if f1 is None else f"{f1:.4f}"


def format_table(results: dict[str, dict]) -> str:
    """A plain-text table of split → accuracy / macro-F1 / weighted-F1 / per-class F1 (:data:`NO_ROWS` for a class
    the split has no row of); for multi-label scores micro-F1 / macro-F1 / samples-F1 / subset accuracy / Hamming
    loss / per-label F1."""
    first = next(iter(results.values()), {})
    names = first.get("labels", [])
    multi = first.get("multi_label", False)
    header = ["split", "n"] + (["micro-F1", "macro-F1", "samples-F1", "subset-acc", "hamming"] if multi
                               else ["accuracy", "macro-F1", "weighted-F1"]) + [f"F1[{n}]" for n in names]
    lines = [header]
    for split, m in results.items():
        figures = ([m["micro_f1"], m["macro_f1"], m["samples_f1"], m["subset_accuracy"], m["hamming_loss"]] if multi
                   else [m["accuracy"], m["macro_f1"], m["weighted_f1"]])
        lines.append([split, str(m["n"])] + [f"{f:.4f}" for f in figures] + [format_f1(m, n) for n in names])
    widths = [max(len(row[i]) for row in lines) for i in range(len(header))]
    return "\n".join("  ".join(cell.rjust(w) for cell, w in zip(row, widths)) for row in lines)
