"""Readable training output: one line per evaluation instead of the ``Trainer``'s raw log dicts.

The ``Trainer`` prints every log as a Python dict (``{'eval_loss': '0.4254', 'eval_accuracy': …}``) between
its progress bars. :func:`install` swaps its progress/printer callback for :class:`ReadableLog`: the
training bar stays (when progress is on), the latest training loss and learning rate ride on the bar,
and each evaluation prints one line such as::

    evaluation 2/4 · step 250/500 · epoch 1.00: validation loss 0.4254, accuracy 0.8329, macro-F1 0.8321 · training loss 0.4511
"""

from __future__ import annotations

import math

from tqdm.auto import tqdm
from transformers import PrinterCallback, ProgressCallback
from transformers.trainer import DEFAULT_PROGRESS_CALLBACK

# eval_* keys shown, in this order, with their readable names; other eval_* keys are timings (not shown).
METRIC_NAMES = {"eval_loss": "validation loss", "eval_accuracy": "accuracy", "eval_macro_f1": "macro-F1",
                "eval_micro_f1": "micro-F1 (tuned thresholds)"}


def evaluation_line(logs: dict, step: int, max_steps: int, evaluation: int, evaluations: int | None,
                    training_loss: float | None) -> str | None:
    """The one line for an evaluation log, or None when ``logs`` is not one (no ``eval_loss``)."""
    if "eval_loss" not in logs:
        return None
    where = f"evaluation {evaluation}" + (f"/{evaluations}" if evaluations else "") + f" · step {step}/{max_steps}"
    if isinstance(logs.get("epoch"), (int, float)):
        where += f" · epoch {logs['epoch']:.2f}"
    scores = [f"{name} {logs[key]:.4f}" for key, name in METRIC_NAMES.items()
              if isinstance(logs.get(key), (int, float))]
    line = f"{where}: " + ", ".join(scores)
    if training_loss is not None:
        line += f" · training loss {training_loss:.4f}"
    return line


def planned_evaluations(args, max_steps: int) -> int | None:
    """How many evaluations the schedule holds (early stopping may end it sooner); None when unknown."""
    strategy = getattr(args.eval_strategy, "value", args.eval_strategy)
    if strategy == "steps" and args.eval_steps:
        every = args.eval_steps if args.eval_steps >= 1 else math.ceil(args.eval_steps * max_steps)
        # The Trainer also evaluates after the last step when it is not a multiple of eval_steps (189 steps,
        # every 50: at 50, 100, 150 and 189), so the count rounds up.
        return math.ceil(max_steps / max(int(every), 1)) or None
    if strategy == "epoch" and args.max_steps <= 0:
        return math.ceil(args.num_train_epochs)
    return None


class ReadableLog(ProgressCallback):
    """The ``Trainer``'s training bar (when ``progress``) with readable log lines (always, on rank 0)."""

    def __init__(self, progress: bool, write=None) -> None:
        super().__init__()
        self.progress = progress
        self.write = write or tqdm.write
        self.training_loss: float | None = None
        self.evaluations_done = 0
        self.evaluations: int | None = None

    def on_train_begin(self, args, state, control, **kwargs):
        if self.progress:
            super().on_train_begin(args, state, control, **kwargs)
        self.current_step = 0
        self.evaluations = planned_evaluations(args, state.max_steps)

    def on_step_end(self, args, state, control, **kwargs):
        if self.progress:
            super().on_step_end(args, state, control, **kwargs)

    def on_prediction_step(self, args, state, control, eval_dataloader=None, **kwargs):
        if self.progress:
            super().on_prediction_step(args, state, control, eval_dataloader=eval_dataloader, **kwargs)

    def on_train_end(self, args, state, control, **kwargs):
        if self.progress and self.training_bar is not None:
            super().on_train_end(args, state, control, **kwargs)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        if isinstance(logs.get("loss"), (int, float)):
            self.training_loss = float(logs["loss"])
            if self.training_bar is not None:
                rate = logs.get("learning_rate")
                self.training_bar.set_postfix_str(f"loss {self.training_loss:.4f}"
                                                  + (f", lr {rate:.2e}" if isinstance(rate, float) else ""))
            return
        self.evaluations_done += "eval_loss" in logs
        if "eval_loss" in logs and self.prediction_bar is not None:
            self.prediction_bar.close()  # the Trainer logs before on_evaluate closes it: the line goes below the bar
            self.prediction_bar = None
        line = evaluation_line(logs, state.global_step, state.max_steps, self.evaluations_done, self.evaluations,
                               self.training_loss)
        if line is not None:
            self.write(line)


def install(trainer, progress: bool) -> ReadableLog:
    """Replace ``trainer``'s progress or printer callback with a :class:`ReadableLog`; returns it."""
    trainer.remove_callback(DEFAULT_PROGRESS_CALLBACK)  # added when progress is on
    trainer.remove_callback(PrinterCallback)  # added instead when it is off: prints every raw dict
    readable = ReadableLog(progress)
    trainer.add_callback(readable)
    return readable
