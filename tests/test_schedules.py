"""``--lr-scheduler``: every schedule trains, and the learning rate the Trainer logged at each step is that
schedule's (checked against the schedule's formula, written out here independently of transformers)."""

from __future__ import annotations

import math

import pytest

from conftest import make_rows
from textxfer.data.dataset import TextDataset
from textxfer.errors import TextxferError
from textxfer.data.labels import LabelSet
from textxfer.transformer.pipeline import FinetuneClassifier, FinetuneConfig
from textxfer.transformer.schedules import SCHEDULES, trainer_settings

STEPS, WARMUP, RATE = 8, 2, 1e-3  # 32 texts at batch 8: 4 steps per epoch, so 2 epochs


def expected(name: str, step: int) -> float:
    """The rate factor after ``step`` scheduler steps (the Trainer logs, at step s, the rate step s used: s − 1)."""
    warm = step / WARMUP if step < WARMUP else None
    progress = (step - WARMUP) / (STEPS - WARMUP)
    if name == "linear":
        return warm if warm is not None else max(0.0, 1 - progress)
    if name == "cosine":
        return warm if warm is not None else 0.5 * (1 + math.cos(math.pi * progress))
    if name == "cosine-with-restarts":  # 2 epochs: 2 cycles
        if warm is not None:
            return warm
        return 0.0 if progress >= 1 else 0.5 * (1 + math.cos(math.pi * ((2 * progress) % 1)))
    if name == "polynomial":  # power 2 down to the Trainer's end rate 1e-7
        return warm if warm is not None else ((RATE - 1e-7) * (1 - progress) ** 2 + 1e-7) / RATE
    if name == "constant":
        return 1.0
    if name == "constant-with-warmup":
        return warm if warm is not None else 1.0
    raise AssertionError(name)


def datasets():
    rows = make_rows(64, seed=3)
    train, validation = rows[:32], rows[32:]
    as_set = lambda part: TextDataset([t for t, _ in part], [y for _, y in part], list(range(1, len(part) + 1)), "fixture")  # noqa: E731
    return as_set(train), as_set(validation)


def train(tiny_bert, schedule: str, **settings):
    config = dict(model=str(tiny_bert), strategy="full", max_steps=STEPS, learning_rate=RATE, batch_size=8,
                  eval_batch_size=32, logging_steps=1, early_stopping=0, warmup=WARMUP, min_steps=0,
                  lr_scheduler=schedule, eval_strategy="steps", eval_steps=2)
    config.update(settings)
    model = FinetuneClassifier(FinetuneConfig(**config))
    train_set, validation = datasets()
    model.fit(train_set, validation, LabelSet.from_labels(train_set.labels))
    rates = {entry["step"]: entry["learning_rate"] for entry in model.log_history_ if "learning_rate" in entry}
    return model, rates


@pytest.mark.parametrize("schedule", [s for s in SCHEDULES if s != "reduce-on-plateau"])
def test_each_schedule_trains_with_its_own_rates(tiny_bert, schedule):
    model, rates = train(tiny_bert, schedule)
    assert model.fit_stats_["steps"] == STEPS
    assert model.fit_stats_["lr_scheduler"]["trainer_type"] == SCHEDULES[schedule]
    assert sorted(rates) == list(range(1, STEPS + 1))
    for step, rate in rates.items():
        assert rate == pytest.approx(RATE * expected(schedule, step - 1), rel=1e-6, abs=1e-12), (schedule, step)


def test_the_schedules_differ(tiny_bert):
    # A guard on the test above: the formulas it checks against are not all the same curve.
    curves = {name: tuple(round(expected(name, s), 6) for s in range(STEPS))
              for name in SCHEDULES if name != "reduce-on-plateau"}
    assert len(set(curves.values())) == len(curves)


def test_reduce_on_plateau_halves_the_rate_when_validation_stops_improving(tiny_bert):
    # At a rate of 1e-6 the tiny model's predictions do not change, so validation macro-F1 never improves
    # after the first evaluation (step 2): the rate halves at the evaluations of steps 4 and 6 (logged from
    # the next step on). (Below 1e-8 torch ignores a reduction smaller than its eps.)
    model, rates = train(tiny_bert, "reduce-on-plateau", learning_rate=1e-6, head_learning_rate=1e-6, warmup=0)
    assert model.fit_stats_["lr_scheduler"]["options"]["mode"] == "max"
    scores = [e["eval_macro_f1"] for e in model.log_history_ if "eval_macro_f1" in e]
    assert len(scores) == 4 and len(set(scores)) == 1  # the premise: no evaluation improved on the first
    factors = [round(rates[s] / 1e-6, 6) for s in range(1, STEPS + 1)]
    assert factors == [1, 1, 1, 1, 0.5, 0.5, 0.25, 0.25]


def test_reduce_on_plateau_needs_evaluations(tiny_bert):
    with pytest.raises(TextxferError, match="reduce-on-plateau .* needs a validation split"):
        trainer_settings("reduce-on-plateau", 2.0, evaluating=False)
    with pytest.raises(TextxferError, match="unknown learning-rate schedule 'cyclic'"):
        FinetuneConfig(lr_scheduler="cyclic")


def test_restarts_follow_the_epochs():
    assert trainer_settings("cosine-with-restarts", 3.0, True)["lr_scheduler_kwargs"] == {"num_cycles": 3}
    assert trainer_settings("cosine-with-restarts", 0.4, True)["lr_scheduler_kwargs"] == {"num_cycles": 1}
