"""Training output: one readable line per evaluation, no raw Trainer dicts, with and without progress bars."""

from __future__ import annotations

import re
from types import SimpleNamespace

import pytest

from textxfer.transformer import train_log
from textxfer.transformer.pipeline import FinetuneClassifier

LINE = re.compile(r"evaluation (\d+)/(\d+) · step (\d+)/(\d+) · epoch (\d+\.\d\d): validation loss \d+\.\d{4}, "
                  r"accuracy \d\.\d{4}, macro-F1 \d\.\d{4}(?: · training loss \d+\.\d{4})?")


def test_evaluation_line_formats_and_ignores_other_logs():
    logs = {"eval_loss": 0.42537, "eval_accuracy": 0.83291, "eval_macro_f1": 0.8321, "eval_runtime": 3.1,
            "eval_samples_per_second": 500.0, "epoch": 1.0}
    line = train_log.evaluation_line(logs, 125, 250, 1, 2, 0.51234)
    assert line == ("evaluation 1/2 · step 125/250 · epoch 1.00: validation loss 0.4254, accuracy 0.8329, "
                    "macro-F1 0.8321 · training loss 0.5123")
    assert train_log.evaluation_line(logs, 125, 250, 3, None, None).startswith("evaluation 3 · step 125/250")
    assert train_log.evaluation_line({"loss": 0.5, "learning_rate": 1e-5}, 1, 2, 1, 1, None) is None
    assert train_log.evaluation_line({"train_runtime": 9.0, "train_loss": 0.4}, 2, 2, 1, 1, None) is None


@pytest.mark.parametrize("strategy, steps, epochs, max_steps, total, expected", [
    ("epoch", None, 3, -1, 300, 3), ("epoch", None, 2.5, -1, 250, 3), ("steps", 50, 1, -1, 120, 3), ("steps", 50, 1, -1, 150, 3),
    ("steps", 0.25, 1, -1, 100, 4), ("epoch", None, 3, 40, 40, None), ("no", None, 3, -1, 300, None)])
def test_planned_evaluations(strategy, steps, epochs, max_steps, total, expected):
    args = SimpleNamespace(eval_strategy=strategy, eval_steps=steps, num_train_epochs=epochs, max_steps=max_steps)
    assert train_log.planned_evaluations(args, total) == expected


@pytest.mark.parametrize("progress", [True, False])
def test_training_prints_one_readable_line_per_evaluation(fixture_split, tiny_config, capsys, progress):
    train, validation = fixture_split
    tiny_config.epochs, tiny_config.logging_steps = 3, 5
    FinetuneClassifier(tiny_config).fit(train, validation, progress=progress)
    captured = capsys.readouterr()
    printed = captured.out + captured.err
    assert "{'" not in printed and "eval_loss" not in printed  # no raw Trainer dicts, on either stream
    found = [LINE.search(line) for line in captured.out.splitlines()]
    found = [m for m in found if m]
    assert [int(m[1]) for m in found] == [1, 2, 3] and {int(m[2]) for m in found} == {3}
    steps = [int(m[3]) for m in found]
    assert steps == sorted(steps) and steps[-1] == int(found[-1][4])  # the last one at the last step
    assert all(" · training loss " in m[0] for m in found)  # logged every 5 steps, so known by each evaluation
    total = int(found[-1][4])
    assert (f"| {total}/{total} [" in captured.err) is progress  # the training bar only with progress on
    assert ("%|" in captured.err) is progress  # and without progress, no other bar either (loading weights)
    assert "Writing model shards" not in captured.err  # each epoch's checkpoint save draws no bar of its own


def test_the_count_includes_the_trainers_evaluation_after_the_last_step(fixture_split, tiny_config, capsys):
    train, validation = fixture_split
    tiny_config.max_steps, tiny_config.eval_strategy, tiny_config.eval_steps = 10, "steps", 4  # at 4, 8 and 10
    FinetuneClassifier(tiny_config).fit(train, validation, progress=False)
    found = [m for m in map(LINE.search, capsys.readouterr().out.splitlines()) if m]
    assert [(int(m[1]), int(m[2]), int(m[3])) for m in found] == [(1, 3, 4), (2, 3, 8), (3, 3, 10)]


@pytest.fixture
def fixture_split(sample_csv):
    from textxfer.data.dataset import DataOptions, load_data

    data = load_data(DataOptions(data=str(sample_csv)))
    return data.train, data.validation
