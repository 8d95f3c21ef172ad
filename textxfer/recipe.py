"""The data-size-aware part of the fine-tuning recipe: how many epochs a training set gets.

With little data an epoch is a handful of optimizer steps, so "2 epochs" leaves a freshly initialised
head almost where it started (128 texts at batch 16: 16 steps). ``--min-steps`` puts a floor under the
step count: the epochs are raised (whole epochs, so every evaluation sees a full pass) until training
takes at least that many steps; early stopping on validation macro-F1 still ends it when the model
stops improving. Every choice is returned as a JSON-ready record (kept in ``report.json`` under
``fit.recipe``) and described in one line when something was chosen automatically.
"""

from __future__ import annotations

import math


def steps_per_epoch(train_texts: int, batch_size: int, accumulation: int = 1, world_size: int = 1) -> int:
    """Optimizer steps in one pass over ``train_texts`` (the ``Trainer``'s count: last batch kept)."""
    batches = math.ceil(train_texts / max(1, batch_size * world_size))
    return max(1, batches // max(1, accumulation))


def plan_epochs(cfg, train_texts: int, world_size: int = 1) -> dict:
    """The epochs to train and why: ``cfg.epochs``, raised to reach ``cfg.min_steps`` when set.

    ``cfg.max_steps`` > 0 overrides both (the ``Trainer`` stops there), so nothing is raised then.
    Returns ``train_texts``, ``steps_per_epoch``, ``epochs_asked``, ``epochs``, ``planned_steps``,
    ``min_steps``, ``learning_rate``, ``head_learning_rate`` and ``choices`` (sentences; empty when
    nothing was chosen automatically).
    """
    per_epoch = steps_per_epoch(train_texts, cfg.batch_size, cfg.gradient_accumulation, world_size)
    epochs, choices = float(cfg.epochs), []
    planned = cfg.max_steps if cfg.max_steps > 0 else math.ceil(per_epoch * epochs)
    if cfg.max_steps <= 0 and cfg.min_steps > planned:
        epochs = float(math.ceil(cfg.min_steps / per_epoch))
        planned = int(per_epoch * epochs)
        choices.append(f"{train_texts:,} training texts give {per_epoch} step{'s' * (per_epoch != 1)} per epoch, "
                       f"so epochs are raised from "
                       f"{cfg.epochs:g} to {epochs:g} ({planned} steps) to reach the {cfg.min_steps}-step floor "
                       "(--min-steps); early stopping on validation macro-F1 can still end it sooner")
    head_rate = cfg.head_learning_rate if cfg.head_learning_rate is not None else cfg.learning_rate
    return {"train_texts": train_texts, "steps_per_epoch": per_epoch, "epochs_asked": cfg.epochs, "epochs": epochs,
            "planned_steps": planned, "min_steps": cfg.min_steps, "learning_rate": cfg.learning_rate,
            "head_learning_rate": head_rate, "choices": choices}


def describe(record: dict) -> str | None:
    """The one line that announces the automatic choices (None when there were none)."""
    return ("recipe: " + "; ".join(record["choices"])) if record["choices"] else None
