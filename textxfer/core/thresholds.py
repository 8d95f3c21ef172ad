"""Per-label decision thresholds for multi-label models, chosen on validation.

A multi-label model gives each label a probability; a label is predicted where its probability reaches the
label's threshold. A fixed 0.5 suits a label only when the model is calibrated for it and the label is about as
common as not; rare labels usually need a lower one. :func:`tune_thresholds` picks, per label, the threshold
that maximises that label's F1 on the validation split; it is saved in the manifest and ``--threshold 0.5``
overrides it.
"""

from __future__ import annotations

import numpy as np

from textxfer.errors import TextxferError

DEFAULT_THRESHOLD = 0.5
THRESHOLD_HELP = ("multi-label models: one decision threshold for every label (e.g. 0.5) instead of each label's "
                  "F1-maximising threshold on the validation split (the default)")


def check_threshold(value: float | None) -> None:
    """Refuse a ``--threshold`` outside (0, 1) in one line."""
    if value is not None and not 0 < value < 1:
        raise TextxferError(f"--threshold must be between 0 and 1 (a probability), got {value}")


def tune_thresholds(truth: np.ndarray, probabilities: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """One threshold per label (column) maximising the label's F1 on ``truth`` (0/1, ``(n, labels)``) given the
    model's ``probabilities`` (same shape), and the reasons for the labels left at :data:`DEFAULT_THRESHOLD`.

    The threshold lies halfway between the lowest probability predicted positive and the next lower one, so it
    does not sit on a validation text's score; it never lies below every validation score (the label would be
    given to every text). Among thresholds with equal F1 the one nearest 0.5 wins. A label
    with no positive (or no negative) validation row has no F1 to maximise: it keeps 0.5.
    """
    truth = np.asarray(truth, dtype=bool)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if truth.shape != probabilities.shape or truth.ndim != 2:
        raise ValueError(f"truth {truth.shape} and probabilities {probabilities.shape} must be equal (n, labels) arrays")
    thresholds = np.full(truth.shape[1], DEFAULT_THRESHOLD)
    kept = []
    for j in range(truth.shape[1]):
        positives = int(truth[:, j].sum())
        if positives == 0 or positives == len(truth):
            kept.append(j)
            continue
        thresholds[j] = _best_threshold(truth[:, j], probabilities[:, j], positives)
    return thresholds, [f"label {j}: no {'positive' if not truth[:, j].any() else 'negative'} validation row"
                        for j in kept]


def _best_threshold(truth: np.ndarray, scores: np.ndarray, positives: int) -> float:
    order = np.argsort(-scores, kind="stable")
    ranked, hits = scores[order], truth[order]
    # Cut after each run of equal scores: predicting the top k texts positive.
    last_of_run = np.r_[ranked[1:] != ranked[:-1], True]
    k = np.arange(1, len(ranked) + 1)[last_of_run]
    true_positives = np.cumsum(hits)[last_of_run]
    f1 = 2 * true_positives / (k + positives)
    below = np.r_[ranked[last_of_run][1:], 0.0]  # the next lower score after each cut (0 below the last)
    cuts = (ranked[last_of_run] + below) / 2
    if len(cuts) > 1:  # never the cut below every score: a label given to every text is no decision (and F1 often
        f1, cuts = f1[:-1], cuts[:-1]  # favours it for a weak model: 2p / (1 + p) for a label of share p)
    best = f1.max()
    candidates = cuts[np.isclose(f1, best, rtol=0, atol=1e-12)]
    return float(candidates[np.argmin(np.abs(candidates - DEFAULT_THRESHOLD))])


def decide(probabilities: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """The 0/1 ``(n, labels)`` predictions: 1 where a label's probability reaches its threshold."""
    return (np.asarray(probabilities) >= np.asarray(thresholds)[None, :]).astype(np.int64)


def chosen_labels(probabilities: np.ndarray, thresholds: np.ndarray) -> list[list[int]]:
    """Per row, the ids of the labels :func:`decide` gives it, most probable first (possibly none)."""
    probabilities = np.asarray(probabilities)
    return [sorted((int(j) for j in chosen.nonzero()[0]), key=lambda j: -row[j])
            for row, chosen in zip(probabilities, decide(probabilities, thresholds))]


def micro_f1(truth: np.ndarray, decided: np.ndarray) -> float:
    """Micro-averaged F1 of 0/1 ``decided`` against 0/1 ``truth`` (both ``(n, labels)``; 0 when neither has a 1)."""
    truth, decided = np.asarray(truth, dtype=bool), np.asarray(decided, dtype=bool)
    true_positives = int((truth & decided).sum())
    denominator = int(truth.sum() + decided.sum())
    return 2 * true_positives / denominator if denominator else 0.0


def decide_tuned(truth: np.ndarray, probabilities: np.ndarray) -> np.ndarray:
    """:func:`decide` at the thresholds :func:`tune_thresholds` picks on these very rows (validation)."""
    return decide(probabilities, tune_thresholds(truth, probabilities)[0])


def tuned_micro_f1(truth: np.ndarray, probabilities: np.ndarray) -> float:
    """Micro-F1 on validation at the thresholds tuned on it — what a multi-label model will be judged by once
    :func:`tune_thresholds` has run, so it ranks checkpoints and settings the way the finished model is used (a
    fixed 0.5 ranks them by how soon rare labels' probabilities climb past 0.5 instead)."""
    return micro_f1(truth, decide_tuned(truth, probabilities))


def micro_f1_resampled(predicted: np.ndarray, truth: np.ndarray, samples: np.ndarray) -> np.ndarray:
    """:func:`micro_f1` of each resample of the rows of 0/1 ``predicted`` against ``truth`` (``(texts, labels)``):
    ``samples`` is (resamples × texts) row indices (a bootstrap)."""
    predicted, truth = np.asarray(predicted, dtype=bool), np.asarray(truth, dtype=bool)
    hits = (predicted & truth).sum(axis=1)[samples].sum(axis=1)
    given = (predicted.sum(axis=1) + truth.sum(axis=1))[samples].sum(axis=1)
    return np.where(given > 0, 2 * hits / np.maximum(given, 1), 0.0)
