"""``--lr-scheduler``: the learning-rate schedules transfer-learning guides use, as the ``Trainer``'s own types.

Each name maps to a ``transformers`` ``SchedulerType``; where the ``Trainer``'s default settings would make
a schedule the same as another (or wrong for a score that should rise), textxfer sets them and says so:

- ``cosine-with-restarts``: one cosine per epoch (SGDR's warm restarts; the ``Trainer`` default is one
  cycle, i.e. plain ``cosine``);
- ``polynomial``: power 2 (the default power 1 is ``linear``);
- ``reduce-on-plateau``: halves the rate at every evaluation whose validation macro-F1 is not better than
  the best so far (``mode="max"``: the ``Trainer`` passes that score, which should rise; patience 0 because
  early stopping ends the run after ``--early-stopping`` such evaluations). It needs evaluations, so a
  validation split and ``--eval-strategy`` other than ``no``; warm-up does not apply to it.
"""

from __future__ import annotations

from textxfer.errors import TextxferError

SCHEDULES = {
    "linear": "linear",
    "cosine": "cosine",
    "cosine-with-restarts": "cosine_with_restarts",
    "polynomial": "polynomial",
    "constant": "constant",
    "constant-with-warmup": "constant_with_warmup",
    "reduce-on-plateau": "reduce_lr_on_plateau",
}
POLYNOMIAL_POWER = 2.0
PLATEAU_FACTOR = 0.5


def trainer_settings(name: str, epochs: float, evaluating: bool) -> dict:
    """``lr_scheduler_type`` and ``lr_scheduler_kwargs`` for ``TrainingArguments`` (``epochs``: the planned
    passes over the data; ``evaluating``: whether the run evaluates on a validation split)."""
    if name not in SCHEDULES:
        raise TextxferError(f"unknown learning-rate schedule {name!r}; choose one of {list(SCHEDULES)}")
    options: dict = {}
    if name == "cosine-with-restarts":
        options = {"num_cycles": max(1, round(epochs))}
    elif name == "polynomial":
        options = {"power": POLYNOMIAL_POWER}
    elif name == "reduce-on-plateau":
        if not evaluating:
            raise TextxferError("--lr-scheduler reduce-on-plateau lowers the rate when validation macro-F1 stops "
                                "improving, so it needs a validation split and evaluations (--validation-size above 0, "
                                "--eval-strategy other than no); choose another schedule or add validation")
        options = {"mode": "max", "factor": PLATEAU_FACTOR, "patience": 0}
    return {"lr_scheduler_type": SCHEDULES[name], "lr_scheduler_kwargs": options}
