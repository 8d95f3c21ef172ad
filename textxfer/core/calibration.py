"""Calibration of predicted probabilities: one temperature fitted on validation, and the figures that say how far a
model's probabilities are from the frequencies they claim. Every model kind fits its temperature on the validation
split after training (``ClassifierBase.end_fit``) and ``predict_proba`` applies it.

Temperature scaling (Guo et al., 2017) divides a model's log-probabilities by one scalar ``T`` and renormalises:
``softmax(log p / T)`` — for a transformer that is ``softmax(logits / T)``, for the forest it works on its averaged
votes the same way. ``T > 1`` softens over-confident probabilities, ``T < 1`` sharpens under-confident ones, and no
``T`` moves the argmax, so accuracy is unchanged. A multi-label model's labels are independent sigmoids: each
label's probability becomes ``sigmoid(logit(p) / T)``, one ``T`` for all labels.

The figures: expected calibration error over equal-mass bins of the top-label confidence (each bin holds about the
same number of texts, so no bin is scored on a handful of them), log loss and the Brier score.
"""

from __future__ import annotations

import numpy as np

from textxfer.errors import TextxferError

CALIBRATIONS = ("temperature", "none")
CALIBRATION_HELP = ("temperature: after training, fit one temperature on the validation split's log loss and apply it "
                    "to every probability (the predicted labels do not change) | none: the model's own probabilities")
EPSILON = 1e-12
ECE_BINS = 15
TEMPERATURE_BOUNDS = (0.05, 20.0)


def check_calibration(value: str) -> None:
    """Refuse an unknown ``--calibration`` in one line."""
    if value not in CALIBRATIONS:
        raise TextxferError(f"unknown calibration {value!r}; choose one of {list(CALIBRATIONS)}")


def _is_multi_label(y: np.ndarray) -> bool:
    return np.ndim(y) == 2


def scale(probabilities: np.ndarray, temperature: float, multi_label: bool = False) -> np.ndarray:
    """``probabilities`` at ``temperature``: rows renormalised from ``log p / T``, or, ``multi_label``, every
    probability through ``sigmoid(logit(p) / T)``. ``T = 1`` returns them unchanged (up to clipping at 1e-12)."""
    p = np.clip(np.asarray(probabilities, dtype=np.float64), EPSILON, 1 - EPSILON if multi_label else 1.0)
    if multi_label:
        return 1.0 / (1.0 + np.exp(-(np.log(p) - np.log1p(-p)) / temperature))
    scaled = np.log(p) / temperature
    scaled -= scaled.max(axis=1, keepdims=True)
    exp = np.exp(scaled)
    return exp / exp.sum(axis=1, keepdims=True)


def log_loss(probabilities: np.ndarray, y: np.ndarray) -> float:
    """Mean negative log probability of the true class (clipped at 1e-12); for 0/1 ``(texts, labels)`` ``y``, the
    mean binary cross-entropy over every text and label (also what ensembles choose their weights by)."""
    if _is_multi_label(y):
        p = np.clip(probabilities, EPSILON, 1 - EPSILON)
        return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))) + 0.0  # + 0.0: never -0.0
    return float(-np.mean(np.log(np.clip(probabilities[np.arange(len(y)), y], EPSILON, 1.0)))) + 0.0


def brier_score(probabilities: np.ndarray, y: np.ndarray) -> float:
    """Mean squared distance between the probabilities and the one-hot truth, summed over classes (single-label) or
    averaged over every text and label (multi-label)."""
    p = np.asarray(probabilities, dtype=np.float64)
    if _is_multi_label(y):
        return float(np.mean((p - y) ** 2))
    onehot = np.zeros_like(p)
    onehot[np.arange(len(y)), y] = 1.0
    return float(np.mean(np.sum((p - onehot) ** 2, axis=1)))


def reliability_bins(probabilities: np.ndarray, y: np.ndarray, bins: int = ECE_BINS) -> list[dict]:
    """The points of a reliability diagram: the texts sorted by confidence and cut into ``bins`` bins of (about)
    equal size, each with its mean confidence, its accuracy and its number of texts (``n``).

    Single-label: the confidence is the top probability and the hit whether the top class is the true one.
    Multi-label: every (text, label) cell counts, its confidence the label's probability and its hit whether the
    label is present (the calibration of each sigmoid)."""
    p = np.asarray(probabilities, dtype=np.float64)
    if _is_multi_label(y):
        confidence, hits = p.ravel(), np.asarray(y, dtype=np.float64).ravel()
    else:
        confidence, hits = p.max(axis=1), (p.argmax(axis=1) == y).astype(np.float64)
    order = np.argsort(confidence, kind="stable")
    return [{"confidence": float(confidence[part].mean()), "accuracy": float(hits[part].mean()), "n": len(part)}
            for part in np.array_split(order, min(bins, len(order))) if len(part)]


def expected_calibration_error(probabilities: np.ndarray, y: np.ndarray, bins: int = ECE_BINS) -> float:
    """Expected calibration error over ``bins`` equal-mass bins (:func:`reliability_bins`): per bin |mean
    confidence − accuracy|, weighted by the bin's share of the texts (0 for no texts)."""
    points = reliability_bins(probabilities, y, bins)
    total = sum(b["n"] for b in points)
    return float(sum(b["n"] * abs(b["confidence"] - b["accuracy"]) for b in points) / total) if total else 0.0


SEPARATED = ("the validation split is separated perfectly (its log loss keeps falling as the probabilities sharpen "
             "towards 0 and 1), so it cannot fix a temperature; kept 1")


def fit_temperature(probabilities: np.ndarray, y: np.ndarray) -> float:
    """The temperature in :data:`TEMPERATURE_BOUNDS` with the lowest log loss of ``scale(probabilities, T)`` against
    ``y`` (the validation split's labels: class ids, or 0/1 ``(texts, labels)``), searched on ``log T``; 1 when no
    temperature does better, or when the best one lies at the lower bound (:data:`SEPARATED`: a validation split
    the model gets right with room to spare would otherwise push every probability to 0 or 1)."""
    return _search(probabilities, y)[0]


def _search(probabilities: np.ndarray, y: np.ndarray) -> tuple[float, str | None]:
    """:func:`fit_temperature` and, when it keeps 1 for want of a finite optimum, why."""
    from scipy.optimize import minimize_scalar

    multi = _is_multi_label(y)
    y = np.asarray(y)

    def loss(log_t: float) -> float:
        return log_loss(scale(probabilities, float(np.exp(log_t)), multi), y)

    low, high = np.log(TEMPERATURE_BOUNDS[0]), np.log(TEMPERATURE_BOUNDS[1])
    found = minimize_scalar(loss, bounds=(low, high), method="bounded", options={"xatol": 1e-4})
    best = float(found.x)
    if best - low < 1e-2 or loss(low) <= loss(best) + 1e-9:  # at the bound, or a flat floor running down to it
        return 1.0, SEPARATED
    return (float(np.exp(best)), None) if loss(best) < loss(0.0) else (1.0, None)  # never worse than leaving them


def figures(probabilities: np.ndarray, y: np.ndarray) -> dict:
    """ECE (15 equal-mass bins), log loss and Brier score of ``probabilities`` against ``y``, rounded for reports."""
    return {"ece": round(expected_calibration_error(probabilities, y), 6),
            "log_loss": round(log_loss(probabilities, y), 6), "brier": round(brier_score(probabilities, y), 6)}


def fit_report(raw: np.ndarray, y: np.ndarray) -> tuple[float, dict]:
    """The temperature fitted on validation probabilities ``raw`` (before calibration) against ``y``, and the
    manifest's ``calibration`` entry: the method, the temperature and the validation figures before and after."""
    temperature, why = _search(raw, y)
    temperature = round(temperature, 6)  # as saved, so a loaded model predicts exactly the same
    after = scale(raw, temperature, _is_multi_label(y)) if temperature != 1.0 else raw
    return temperature, {"method": "temperature", "temperature": temperature, "fitted_on": "validation",
                         **({"why": why} if why else {}),
                         "validation": {"before": figures(raw, y), "after": figures(after, y)}}
