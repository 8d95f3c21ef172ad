"""Training loss against validation loss per evaluation, and the overfitting note (``textxfer.transformer.loss_curve``)."""

from __future__ import annotations

import json

from textxfer.transformer import loss_curve


def log(train: list[float], validation: list[float], every: int = 10) -> list[dict]:
    """A Trainer-style log: a training loss then an evaluation every ``every`` steps."""
    out = []
    for i, (t, v) in enumerate(zip(train, validation), start=1):
        out.append({"loss": t, "learning_rate": 1e-5, "epoch": i / 2, "step": i * every})
        out.append({"eval_loss": v, "eval_macro_f1": 1 - v, "eval_runtime": 1.0, "epoch": i / 2, "step": i * every})
    return out + [{"train_runtime": 9.0, "train_loss": sum(train) / len(train), "epoch": len(train) / 2,
                   "step": len(train) * every}]


def test_points_pair_each_evaluation_with_the_last_training_loss():
    history = [{"loss": 0.9, "step": 5}, {"loss": 0.7, "step": 10}, {"eval_loss": 0.6, "eval_macro_f1": 0.8,
                                                                     "epoch": 1.0, "step": 10},
               {"loss": 0.5, "step": 15}, {"eval_loss": 0.55, "epoch": 2.0, "step": 20}]
    assert loss_curve.points(history) == [
        {"step": 10, "epoch": 1.0, "training_loss": 0.7, "validation_loss": 0.6, "validation_macro_f1": 0.8},
        {"step": 20, "epoch": 2.0, "training_loss": 0.5, "validation_loss": 0.55, "validation_macro_f1": None}]
    # an earlier stage's log (its steps start again) lends no training loss to this run's first evaluation
    earlier = [{"loss": 0.2, "step": 40}, {"loss": 0.1, "step": 80}]
    assert loss_curve.points(earlier + [{"eval_loss": 0.6, "step": 10}])[0]["training_loss"] is None
    assert loss_curve.points(None) == [] and loss_curve.points([{"C": 1.0, "validation_macro_f1": 0.8}]) == []


def test_overfitting_needs_two_rises_of_validation_loss_while_training_loss_falls():
    rising = loss_curve.summary(log([0.6, 0.4, 0.3, 0.2], [0.50, 0.45, 0.48, 0.52]))
    assert rising["overfitting"] is True and rising["from_step"] == 20
    assert "steps 30 and 40 (0.4500 → 0.4800 → 0.5200)" in rising["note"]
    assert "0.4000 → 0.2000" in rising["note"] and "best validation macro-F1 evaluation (step 20)" in rising["note"]
    once = loss_curve.summary(log([0.6, 0.4, 0.3, 0.2], [0.50, 0.45, 0.48, 0.47]))  # one rise, then a fall
    both = loss_curve.summary(log([0.3, 0.4, 0.5], [0.50, 0.55, 0.60]))  # training loss rises too: not overfitting
    falling = loss_curve.summary(log([0.6, 0.5, 0.4], [0.5, 0.4, 0.3]))
    noise = loss_curve.summary(log([0.6, 0.4, 0.3], [0.18, 0.1887, 0.18871]))  # a second "rise" of 0.005 %
    for summary in (once, both, falling, noise):
        assert summary["overfitting"] is False and summary["note"] is None
    assert len(falling["evaluations"]) == 3


def test_markdown_and_a_run_folder(tmp_path):
    history = log([0.6, 0.4, 0.3, 0.2], [0.50, 0.45, 0.48, 0.52])
    (tmp_path / loss_curve.TRAINER_LOG).write_text(json.dumps(history), encoding="utf-8")
    curve = loss_curve.of_run(tmp_path)
    assert curve == loss_curve.summary(history)
    lines = loss_curve.markdown(curve, "### finetune")
    assert lines[0] == "### finetune" and "| 40 | 2.00 | 0.2000 | 0.5200 | 0.4800 |" in lines
    assert any(line.startswith("> **Note — overfitting: validation loss rose") for line in lines)
    assert loss_curve.markdown(loss_curve.summary([]), "### x") == []
    (tmp_path / loss_curve.TRAINER_LOG).write_text("{not json", encoding="utf-8")
    assert loss_curve.of_run(tmp_path) is None and loss_curve.of_run(tmp_path / "missing") is None
