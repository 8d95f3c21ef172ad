"""Training loss against validation loss per evaluation, from the ``Trainer``'s log, and an overfitting note.

Each evaluation in the log (an entry with ``eval_loss``) becomes one point: its step and epoch, the
validation loss and macro-F1, and the training loss the ``Trainer`` logged last at or before that step (the
mean over its last ``logging_steps``). The note fires when validation loss rose (by more than 0.1 %) at two
evaluations in a row while training loss fell over the same span — the model memorising its training texts.
"""

from __future__ import annotations

import json
from pathlib import Path

TRAINER_LOG = "trainer_log.json"
RISES = 2  # evaluations in a row whose validation loss rose
MIN_RISE = 0.001  # a rise smaller than 0.1 % is noise (the Trainer's extra evaluation 2 steps after the last one)


def _number(value) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def points(log_history: list) -> list[dict]:
    """One dict per evaluation: ``step``, ``epoch``, ``training_loss`` (or None), ``validation_loss``,
    ``validation_macro_f1`` (or None)."""
    out, training, last_step = [], None, -1
    for entry in log_history if isinstance(log_history, list) else []:
        if not isinstance(entry, dict):
            continue
        step = entry.get("step")
        if isinstance(step, int) and step < last_step:
            training = None  # a new trainer's log (a tuning stage before this one): its losses are not this run's
        if isinstance(step, int):
            last_step = step
        if _number(entry.get("loss")) is not None:
            training = _number(entry["loss"])
        if _number(entry.get("eval_loss")) is not None:
            out.append({"step": step, "epoch": _number(entry.get("epoch")), "training_loss": training,
                        "validation_loss": _number(entry["eval_loss"]),
                        "validation_macro_f1": _number(entry.get("eval_macro_f1"))})
    return out


def overfitting(curve: list[dict]) -> dict:
    """``{"overfitting": bool, "note": str | None, "from_step": int | None}`` for the points of :func:`points`.

    Overfitting: validation loss rose at ``RISES`` evaluations in a row while training loss (where logged)
    fell from the first to the last of those evaluations.
    """
    for end in range(RISES, len(curve)):
        span = curve[end - RISES:end + 1]
        validation = [p["validation_loss"] for p in span]
        training = [p["training_loss"] for p in span]
        rising = all(b > a * (1 + MIN_RISE) for a, b in zip(validation, validation[1:]))
        falling = None not in training and training[-1] < training[0]
        if rising and falling:
            best = max(curve, key=lambda p: p["validation_macro_f1"] if p["validation_macro_f1"] is not None else -1.0)
            kept = (f"; the model kept is the best validation macro-F1 evaluation (step {best['step']})"
                    if best["validation_macro_f1"] is not None else "")
            steps = " and ".join(str(p["step"]) for p in span[1:])
            note = (f"overfitting: validation loss rose at steps {steps} ("
                    + " → ".join(f"{v:.4f}" for v in validation) + ") while training loss fell ("
                    + f"{training[0]:.4f} → {training[-1]:.4f}){kept}; fewer epochs or more data may help")
            return {"overfitting": True, "note": note, "from_step": span[0]["step"]}
    return {"overfitting": False, "note": None, "from_step": None}


def summary(log_history: list) -> dict:
    """``{"evaluations": points, **overfitting}``: what ``report.json`` records under ``loss_curve``."""
    curve = points(log_history)
    return {"evaluations": curve, **overfitting(curve)}


def of_run(folder: str | Path) -> dict | None:
    """:func:`summary` of a run folder's ``trainer_log.json`` (JSON); None when the run has none or it is
    unreadable (a report leaves the section out rather than fail)."""
    try:
        return summary(json.loads((Path(folder) / TRAINER_LOG).read_text(encoding="utf-8")))
    except (OSError, ValueError):
        return None


def markdown(curve: dict, heading: str) -> list[str]:
    """Markdown lines: ``heading``, a table of the evaluations, and the note (nothing without evaluations)."""
    evaluations = curve.get("evaluations") or []
    if not evaluations:
        return []
    fmt = lambda v: "n/a" if v is None else f"{v:.4f}"  # noqa: E731
    out = [heading, "", "| step | epoch | training loss | validation loss | validation macro-F1 |",
           "| ---: | ---: | ---: | ---: | ---: |"]
    out += [f"| {p['step']} | {'n/a' if p['epoch'] is None else format(p['epoch'], '.2f')} | {fmt(p['training_loss'])} "
            f"| {fmt(p['validation_loss'])} | {fmt(p['validation_macro_f1'])} |" for p in evaluations]
    out += ["", f"> **Note — {curve['note']}.**" if curve.get("overfitting")
            else f"No sign of overfitting: validation loss did not rise at {RISES} evaluations in a row while "
                 "training loss fell.", ""]
    return out
