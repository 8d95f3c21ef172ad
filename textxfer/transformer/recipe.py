"""The data-size-aware part of the fine-tuning recipe: strategy, epochs, head learning rate and
evaluation cadence, chosen from the number of training texts.

With little data an epoch is a handful of optimizer steps, so "2 epochs" leaves a freshly initialised
head almost where it started (128 texts at batch 16: 16 steps). ``--min-steps`` (default 150) puts a
floor under the step count: the epochs are raised (whole epochs) until training takes at least that
many steps; early stopping on validation macro-F1 still ends it when the model stops improving. Only the
default epochs are raised: an ``--epochs`` the user gives is trained as given (the recipe line says it is
under the floor), as an explicit ``--batch-size`` is. While
the floor binds — training is short — the head, newly initialised, gets ``HEAD_RATE_FACTOR`` × the
learning rate (at most ``HEAD_RATE_CAP``, never less than the learning rate) unless ``--head-learning-rate`` is given, and evaluation runs every ``min_steps /
EVALUATIONS_UNDER_FLOOR`` steps instead of every (tiny) epoch unless ``--eval-strategy`` is given.
``--strategy auto`` picks the strategy by size and pooling. The threshold comes from measured learning
curves (``textxfer study`` on ``sample_data/``; BENCHMARKS.md, "Pooling and the text prefix"). With enough data none of
this binds and the recipe is the one measured at full size.

Every choice is returned as a JSON-ready record (kept in ``report.json`` under ``fit.recipe``) and
announced in one line.
"""

from __future__ import annotations

import math

from textxfer.transformer import contrastive
from textxfer.transformer.batch_size import nominal

# --strategy auto with a mean-pooled sentence-embedding encoder: feature extraction (head-only, logistic regression
# on frozen features) below this many training texts, fine-tuning (freeze-embeddings) from it on. Read off the
# learning curves (BENCHMARKS.md, "Pooling and the text prefix"). With first-token pooling the frozen features are weak and fine-tuning
# led at every size measured (from 32 texts), so auto always fine-tunes then.
HEAD_ONLY_BELOW = 129
# … and below this many, contrastive tuning of the body on pairs first (SetFit's recipe; --strategy contrastive):
# ahead of the fitted head at 32 texts (BENCHMARKS.md, "Contrastive tuning"); its pair steps grow with the texts
# (2 × 20 × texts / batch), so it stops where its cost passes the step floor's (64 texts: 160 steps).
CONTRASTIVE_BELOW = 65
HEAD_RATE_FACTOR = 20  # head rate = 20 × the learning rate while the step floor binds (5e-5 → 1e-3) …
HEAD_RATE_CAP = 1e-3  # … but not above 1e-3 (the measured rate), nor below the learning rate itself
DEFAULT_EPOCHS = 2.0  # --epochs when not given; only this default is raised by the step floor
EVALUATIONS_UNDER_FLOOR = 3  # evaluations over a floor-length run (150 steps: every 50)


def steps_per_epoch(train_texts: int, batch_size: int, accumulation: int = 1, world_size: int = 1) -> int:
    """Optimizer steps in one pass over ``train_texts`` (the ``Trainer``'s count: last batch kept)."""
    batches = math.ceil(train_texts / max(1, batch_size * world_size))
    return max(1, batches // max(1, accumulation))


def fits_head(strategy: str, head_solver: str) -> bool:
    """Whether ``strategy`` ends in a head fitted by regression on frozen features (no training steps of the
    classifier): ``head-only`` with the logistic solver, and ``contrastive`` after its pair stage."""
    return strategy == "contrastive" or (strategy == "head-only" and head_solver == "logistic")


def choose_strategy(cfg, train_texts: int, pooling: str = "cls") -> tuple[str, str | None]:
    """``(strategy, why)``: ``cfg.strategy`` itself unless it is ``auto`` (then ``why`` says what decided).

    ``pooling``: the model's (``mean`` for sentence-embedding encoders, whose frozen features are good)."""
    if cfg.strategy != "auto":
        return cfg.strategy, None
    if pooling != "mean":
        return "freeze-embeddings", ("strategy freeze-embeddings (--strategy auto: with first-token pooling, "
                                     "fine-tuning beat feature extraction on the measured learning curves at every "
                                     "size from 32 texts)")
    if train_texts < CONTRASTIVE_BELOW:
        return "contrastive", (f"strategy contrastive for {train_texts:,} training texts (--strategy auto: below "
                               f"{CONTRASTIVE_BELOW:,} texts the body is first tuned on same/different-label pairs, "
                               "then a head is fitted on its mean-pooled features — ahead of the head alone on the "
                               "measured learning curves)")
    if train_texts < HEAD_ONLY_BELOW:
        return "head-only", (f"strategy head-only (feature extraction) for {train_texts:,} training texts "
                             f"(--strategy auto: below {HEAD_ONLY_BELOW:,} texts a head fitted on frozen mean-pooled "
                             "features beat fine-tuning on the measured learning curves)")
    return "freeze-embeddings", (f"strategy freeze-embeddings (--strategy auto: fine-tuning from {HEAD_ONLY_BELOW:,} "
                                 "texts on; a head fitted on frozen mean-pooled features led only below that on the "
                                 "measured learning curves)")


def plan(cfg, train_texts: int, world_size: int = 1, pooling: str = "cls") -> dict:
    """The recipe for ``train_texts`` training texts under ``cfg`` and the model's ``pooling``, and why.

    Returns ``strategy`` (``strategy_asked``), ``train_texts``, ``steps_per_epoch``, ``epochs_asked``,
    ``epochs``, ``planned_steps``, ``min_steps``, ``learning_rate``, ``head_learning_rate``,
    ``eval_strategy``, ``eval_steps`` and ``choices`` (sentences for what was chosen automatically).
    ``cfg.max_steps`` > 0 overrides the floor (the ``Trainer`` stops there).
    """
    strategy, why = choose_strategy(cfg, train_texts, pooling)
    choices = [why] if why else []
    batch = nominal(cfg.batch_size)  # train_model passes the resolved batch; plans made before training count 16 for auto
    per_epoch = steps_per_epoch(train_texts, batch, cfg.gradient_accumulation, world_size)
    epochs_given = cfg.epochs is not None  # a number the user gave is trained as given; the floor raises the default
    epochs = epochs_asked = float(cfg.epochs) if epochs_given else DEFAULT_EPOCHS
    planned = cfg.max_steps if cfg.max_steps > 0 else math.ceil(per_epoch * epochs)
    fitted_head = fits_head(strategy, cfg.head_solver)
    under_floor = not fitted_head and cfg.max_steps <= 0 and cfg.min_steps > planned
    floor_binds = under_floor and not epochs_given
    if floor_binds:
        epochs = float(math.ceil(cfg.min_steps / per_epoch))
        planned = int(per_epoch * epochs)
        choices.append(f"{train_texts:,} training texts give {per_epoch} step{'s' * (per_epoch != 1)} per epoch, "
                       f"so epochs are raised from {epochs_asked:g} to {epochs:g} ({planned} steps) to reach the "
                       f"{cfg.min_steps}-step floor (--min-steps); early stopping on validation macro-F1 can still "
                       "end it sooner")
    elif under_floor:
        choices.append(f"--epochs {epochs_asked:g} trained as given: {planned} step{'s' * (planned != 1)}, under the "
                       f"{cfg.min_steps}-step floor (--min-steps), which raises only the default {DEFAULT_EPOCHS:g} "
                       "epochs")
    head_rate = cfg.head_learning_rate
    if head_rate is None:
        head_rate = cfg.learning_rate
        if floor_binds:
            head_rate = max(cfg.learning_rate, min(HEAD_RATE_FACTOR * cfg.learning_rate, HEAD_RATE_CAP))
        if head_rate != cfg.learning_rate:
            choices.append(f"head learning rate {head_rate:g} ({head_rate / cfg.learning_rate:g}× --learning-rate: "
                           "a new head in a short run; --head-learning-rate to set it)")
    eval_strategy, eval_steps = cfg.eval_strategy, cfg.eval_steps
    if eval_strategy == "auto":
        eval_strategy = "steps" if floor_binds else "epoch"
        if floor_binds:
            eval_steps = max(1, math.ceil(cfg.min_steps / EVALUATIONS_UNDER_FLOOR))
            choices.append(f"evaluation every {eval_steps} steps rather than every epoch (--eval-strategy to set it)")
    pair_steps = (contrastive.planned_steps(train_texts, batch * world_size, cfg.pair_iterations)
                  if strategy == "contrastive" else 0)  # the pair stage; the head is then fitted, not trained
    return {"strategy": strategy, "strategy_asked": cfg.strategy, "train_texts": train_texts,
            "steps_per_epoch": per_epoch, "epochs_asked": epochs_asked,
            "epochs_given": epochs_given, "epochs": 0.0 if fitted_head else epochs,
            "planned_steps": pair_steps if fitted_head else planned, "min_steps": cfg.min_steps,
            "batch_size": batch, "learning_rate": cfg.learning_rate, "head_learning_rate": head_rate,
            "eval_strategy": eval_strategy, "eval_steps": eval_steps, "choices": choices}


def describe(record: dict) -> str | None:
    """The one line that announces the automatic choices (None when there were none)."""
    return ("recipe: " + "; ".join(record["choices"])) if record["choices"] else None
