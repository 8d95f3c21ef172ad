"""How an ensemble weighs its members: equal, given, or chosen on the validation split (never test).

``auto`` searches a grid over the simplex (steps of 1/20 of the total weight; coarser for many members)
for the weights whose averaged probabilities have the lowest validation log loss — a proper scoring rule,
so it rewards members that are right *and* calibrated, and unlike accuracy it has no ties and moves
smoothly with the weights. Accuracy and macro-F1 of every member, of equal weights and of the chosen
weights are recorded beside the choice, all on validation.

Multi-label members give one probability per label: the average is taken label by label (no row sums to 1), the
log loss is the mean binary cross-entropy over texts and labels, and micro-F1 at thresholds tuned on validation
is recorded instead of accuracy.
"""

from __future__ import annotations

import itertools
from typing import Sequence

import numpy as np

from textxfer.core.calibration import log_loss
from textxfer.errors import TextxferError

GRID_STEPS = {2: 20, 3: 20, 4: 10, 5: 10}  # members → divisions of the total weight (more members: 5)


def parse_weights(value: str | Sequence[float], members: int) -> str | list[float]:
    """``auto``, ``equal`` or ``members`` non-negative numbers (``"0.7,0.3"``), normalised to sum to 1."""
    if isinstance(value, str) and value in ("auto", "equal"):
        return value
    if isinstance(value, str):
        try:
            numbers = [float(part) for part in value.split(",")]
        except ValueError:
            raise TextxferError(f"--weights {value!r}: use auto, equal or {members} numbers such as "
                                f"{','.join(['0.5'] * members)}") from None
    else:
        numbers = [float(v) for v in value]
    if len(numbers) != members:
        raise TextxferError(f"--weights gives {len(numbers)} weight(s) for {members} member(s); give one per --runs entry")
    if not all(np.isfinite(numbers)) or min(numbers) < 0 or sum(numbers) <= 0:
        raise TextxferError(f"--weights {numbers}: weights must be finite, ≥ 0 and not all 0")
    total = sum(numbers)
    return [n / total for n in numbers]


def simplex_grid(members: int) -> np.ndarray:
    """Every weight vector on the grid of ``members`` parts summing to 1 (rows)."""
    steps = GRID_STEPS.get(members, 5)
    points = [c for c in itertools.product(range(steps + 1), repeat=members - 1) if sum(c) <= steps]
    return np.array([[*c, steps - sum(c)] for c in points], dtype=np.float64) / steps


def mix(probabilities: Sequence[np.ndarray], weights: Sequence[float], multi_label: bool = False) -> np.ndarray:
    """The weighted average of the members' probability matrices (rows still sum to 1; ``multi_label``: each label's
    probabilities averaged on their own)."""
    total = sum(w * p for w, p in zip(weights, probabilities) if w > 0)
    if multi_label:
        return total / sum(w for w in weights if w > 0)
    return total / total.sum(axis=1, keepdims=True)


def choose(how: str | list[float], probabilities: Sequence[np.ndarray], y: np.ndarray | None) -> tuple[list[float], dict]:
    """``(weights, record)``: the weights for ``how`` (``parse_weights``' result) and what the choice saw.

    ``probabilities`` and ``y`` are the members' predictions on the validation split and its labels (``y``
    may be ``None`` when there is no validation split: then ``auto`` falls back to equal weights, and says
    so in the record).
    """
    members = len(probabilities)
    equal = [1.0 / members] * members
    multi = y is not None and np.ndim(y) == 2
    blend = lambda parts, w: mix(parts, w, multi)  # noqa: E731
    if how == "equal" or isinstance(how, list):
        weights = equal if how == "equal" else list(how)
        record = {"method": "equal" if how == "equal" else "given"}
    elif y is None or len(y) == 0:
        weights, record = equal, {"method": "equal", "note": "no validation split to choose weights on: equal weights"}
    else:
        grid = simplex_grid(members)
        losses = [log_loss(blend(probabilities, w), y) for w in grid]
        best = int(np.argmin(losses))
        weights = [round(float(w), 6) for w in grid[best]]
        record = {"method": "auto", "criterion": "validation log loss", "grid_points": len(grid)}
    if y is not None and len(y):
        record["validation"] = {
            "n": int(len(y)),
            "members": [_figures(p, y) for p in probabilities],
            "equal_weights": _figures(blend(probabilities, equal), y),
            "chosen": _figures(blend(probabilities, weights), y),
        }
    return weights, record


def _figures(probabilities: np.ndarray, y: np.ndarray) -> dict:
    from sklearn.metrics import f1_score

    if np.ndim(y) == 2:
        from textxfer.core.thresholds import tuned_micro_f1

        return {"micro_f1": round(tuned_micro_f1(y, probabilities), 6), "log_loss": round(log_loss(probabilities, y), 6)}
    predicted = probabilities.argmax(axis=1)
    return {"accuracy": round(float(np.mean(predicted == y)), 6),
            "macro_f1": round(float(f1_score(y, predicted, average="macro", labels=np.unique(y))), 6),
            "log_loss": round(log_loss(probabilities, y), 6)}
