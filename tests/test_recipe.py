"""The data-size-aware recipe: the step floor raises epochs for little data; the head gets its own learning rate;
`--strategy auto` switches strategy at exact training-set sizes."""

from __future__ import annotations

import json

import pytest

from textxfer.errors import TextxferError
from textxfer.transformer.pipeline import FinetuneClassifier, FinetuneConfig
from textxfer.transformer import recipe as recipes
from textxfer.transformer.recipe import describe, plan, steps_per_epoch


def test_steps_per_epoch_counts_like_the_trainer():
    assert steps_per_epoch(128, 16) == 8
    assert steps_per_epoch(129, 16) == 9  # the last, short batch is a step too
    assert steps_per_epoch(128, 16, accumulation=2) == 4
    assert steps_per_epoch(128, 16, world_size=2) == 4
    assert steps_per_epoch(3, 16) == 1


def test_little_data_gets_epochs_raised_to_the_step_floor(monkeypatch):
    monkeypatch.setattr(recipes, "HEAD_ONLY_BELOW", 0)
    record = plan(FinetuneConfig(), 128)  # the defaults
    assert (record["steps_per_epoch"], record["epochs"], record["planned_steps"]) == (8, 19.0, 152)
    assert record["epochs_asked"] == 2 and not record["epochs_given"] and record["strategy"] == "freeze-embeddings" and record["strategy_asked"] == "auto"
    assert record["head_learning_rate"] == pytest.approx(1e-3) and (record["eval_strategy"], record["eval_steps"]) == ("steps", 50)
    line = describe(record)
    assert "\n" not in line and line.startswith("recipe: strategy freeze-embeddings (--strategy auto: with first-token")
    assert ("128 training texts give 8 steps per epoch, so epochs are raised from 2 to 19 (152 steps) to reach the "
            "150-step floor (--min-steps); early stopping on validation macro-F1 can still end it sooner") in line
    assert "head learning rate 0.001 (20× --learning-rate" in line and "evaluation every 50 steps" in line
    json.dumps(record)  # kept in report.json as it is


def test_the_automatic_head_rate_is_capped_and_never_below_the_body_rate():
    assert plan(FinetuneConfig(learning_rate=2e-5), 128)["head_learning_rate"] == pytest.approx(4e-4)
    assert plan(FinetuneConfig(learning_rate=1e-4), 128)["head_learning_rate"] == pytest.approx(1e-3)
    high = plan(FinetuneConfig(learning_rate=3e-3), 128)
    assert high["head_learning_rate"] == 3e-3 and not any("head learning rate" in c for c in high["choices"])


def test_explicit_settings_win_over_the_automatic_ones():
    record = plan(FinetuneConfig(strategy="full", head_learning_rate=2e-4, eval_strategy="epoch"), 128)
    assert (record["strategy"], record["head_learning_rate"], record["eval_strategy"]) == ("full", 2e-4, "epoch")
    assert record["epochs"] == 19.0 and len(record["choices"]) == 1  # the floor only


def test_auto_chooses_feature_extraction_below_the_threshold(monkeypatch):
    monkeypatch.setattr(recipes, "HEAD_ONLY_BELOW", 100)
    monkeypatch.setattr(recipes, "CONTRASTIVE_BELOW", 40)
    tiny, small, large = (plan(FinetuneConfig(), n, pooling="mean") for n in (39, 99, 100))
    assert plan(FinetuneConfig(), 40, pooling="mean")["strategy"] == "head-only"
    assert tiny["strategy"] == "contrastive" and "below 40 texts the body is first tuned" in tiny["choices"][0]
    assert tiny["planned_steps"] == -(-2 * 20 * 39 // 16) and tiny["epochs"] == 0.0 and len(tiny["choices"]) == 1
    assert small["strategy"] == "head-only" and large["strategy"] == "freeze-embeddings"
    assert small["planned_steps"] == 0 and "below 100 texts" in small["choices"][0] and len(small["choices"]) == 1
    assert "from 100 texts" in large["choices"][0]
    # First-token features are weak frozen: auto fine-tunes at every size then.
    assert plan(FinetuneConfig(), 32, pooling="cls")["strategy"] == "freeze-embeddings"
    assert plan(FinetuneConfig(), 20, pooling="cls")["strategy"] == "freeze-embeddings"  # no pairs on weak features
    trainer = plan(FinetuneConfig(head_solver="trainer"), 99, pooling="mean")  # a Trainer-trained head gets the floor
    assert trainer["strategy"] == "head-only" and trainer["epochs"] > 2


@pytest.mark.parametrize("settings, texts", [({"min_steps": 0}, 128),  # floor off
                                             ({"min_steps": 150}, 13_891),  # enough data: 1,738 steps already
                                             ({"min_steps": 150, "max_steps": 20}, 128)])  # max_steps decides
def test_nothing_is_raised_when_the_floor_is_off_reached_or_overridden(settings, texts):
    config = FinetuneConfig(epochs=2, batch_size=16, strategy="freeze-embeddings", **settings)
    record = plan(config, texts)
    assert record["epochs"] == 2 and record["choices"] == [] and describe(record) is None
    assert record["planned_steps"] == (settings.get("max_steps") or 2 * steps_per_epoch(texts, 16))
    assert record["head_learning_rate"] == config.learning_rate and record["eval_strategy"] == "epoch"


def test_epochs_the_user_gives_are_trained_as_given_and_the_line_says_so():
    """An explicit --epochs 1 on 480 texts trained 5 epochs (the floor raised it): a number given wins."""
    record = plan(FinetuneConfig(epochs=1, batch_size=16, strategy="freeze-embeddings"), 480)
    assert (record["epochs"], record["planned_steps"], record["epochs_given"]) == (1.0, 30, True)
    assert record["head_learning_rate"] == 5e-5 and record["eval_strategy"] == "epoch"  # no short-run settings
    assert describe(record) == ("recipe: --epochs 1 trained as given: 30 steps, under the 150-step floor "
                                "(--min-steps), which raises only the default 2 epochs")
    default = plan(FinetuneConfig(batch_size=16, strategy="freeze-embeddings"), 480)
    assert (default["epochs"], default["planned_steps"], default["epochs_given"]) == (5.0, 150, False)
    from textxfer.cli import build_parser

    typed = build_parser().parse_args(["finetune", "--data", "x.csv", "--epochs", "1"])
    assert typed.epochs == 1.0 and not hasattr(build_parser().parse_args(["finetune", "--data", "x.csv"]), "epochs")


def test_full_data_defaults_are_the_measured_full_recipe():
    record = plan(FinetuneConfig(), 13_891)
    assert (record["strategy"], record["epochs"], record["head_learning_rate"], record["eval_strategy"]) == (
        "freeze-embeddings", 2.0, 5e-5, "epoch")


def test_head_learning_rate_reaches_only_the_head_and_pooler(tiny_bert):
    from transformers import AutoModelForSequenceClassification

    from textxfer.transformer.strategies import parameter_groups

    model = AutoModelForSequenceClassification.from_pretrained(str(tiny_bert), num_labels=2)
    head_ids = {id(p) for name, p in model.named_parameters() if name.startswith(("classifier.", "bert.pooler."))}
    groups = parameter_groups(model, 1e-4, 0.01, 0.5, head_learning_rate=2e-3)
    rates = {id(p): g["lr"] for g in groups for p in g["params"]}
    assert {rates[i] for i in head_ids} == {2e-3}
    top = model.bert.encoder.layer[-1].attention.self.query.weight
    embeddings = model.bert.embeddings.word_embeddings.weight
    assert rates[id(top)] == pytest.approx(1e-4 * 0.5) and rates[id(embeddings)] == pytest.approx(1e-4 * 0.5 ** 3)
    default = parameter_groups(model, 1e-4, 0.01, 0.5)
    assert {g["lr"] for g in default for p in g["params"] if id(p) in head_ids} == {1e-4}


@pytest.mark.parametrize("settings", [{"head_learning_rate": 0.0}, {"learning_rate": -1.0}, {"min_steps": -5}])
def test_bad_recipe_settings_are_refused(settings):
    with pytest.raises(TextxferError):
        FinetuneConfig(**settings)


def test_training_runs_the_raised_epochs_and_records_why(sample_csv, tiny_config, capsys):
    from textxfer.data.dataset import DataOptions, load_data

    data = load_data(DataOptions(data=str(sample_csv)))
    tiny_config.epochs, tiny_config.batch_size, tiny_config.min_steps = None, 64, 12  # the default epochs: raised
    tiny_config.max_train_samples, tiny_config.head_learning_rate = 64, 1e-2
    model = FinetuneClassifier(tiny_config).fit(data.train, data.validation, labels=data.labels)
    recipe = model.fit_stats_["recipe"]
    assert (recipe["train_texts"], recipe["steps_per_epoch"], recipe["epochs"]) == (64, 1, 12.0)
    assert model.fit_stats_["steps"] == 12  # the Trainer really ran the raised budget (early stopping is off)
    assert recipe["head_learning_rate"] == 1e-2
    printed = capsys.readouterr().out
    line = next(line for line in printed.splitlines() if line.startswith("recipe: "))
    assert printed.count("recipe: ") == 1 and line.startswith("recipe: pooling cls (") and recipe["pooling"] == "cls"
    assert "; 64 training texts give 1 step per epoch, so epochs are raised from 2 to 12" in line
    assert recipe["strategy"] == "full" and recipe["eval_strategy"] == "steps" and recipe["eval_steps"] == 4


def test_the_optimizer_gets_the_recipes_head_rate(sample_csv, tiny_config, monkeypatch):
    """The rate in report.json is the rate that trained: 20× on the head while the floor binds."""
    import torch

    from textxfer.data.dataset import DataOptions, load_data

    captured = []

    class Recording(torch.optim.AdamW):
        def __init__(self, groups, **kwargs):
            captured.append([dict(lr=g["lr"], names={id(p) for p in g["params"]}) for g in groups])
            super().__init__(groups, **kwargs)

    monkeypatch.setattr(torch.optim, "AdamW", Recording)
    data = load_data(DataOptions(data=str(sample_csv)))
    tiny_config.epochs, tiny_config.batch_size, tiny_config.min_steps = None, 64, 6
    tiny_config.max_train_samples, tiny_config.learning_rate = 64, 1e-4
    model = FinetuneClassifier(tiny_config).fit(data.train, data.validation, labels=data.labels)
    assert model.fit_stats_["recipe"]["head_learning_rate"] == pytest.approx(1e-3)  # 20× 1e-4, capped at 1e-3
    head = {id(p) for name, p in model.model_.named_parameters() if name.startswith(("classifier.", "bert.pooler."))}
    (groups,) = captured
    head_rates = [g["lr"] for g in groups if g["names"] <= head]
    body_rates = [g["lr"] for g in groups if not g["names"] & head]
    assert head_rates and all(rate == pytest.approx(1e-3) for rate in head_rates)
    assert body_rates and all(rate == pytest.approx(1e-4) for rate in body_rates)
    assert len(head_rates) + len(body_rates) == len(groups)


def _dataset(rows):
    from textxfer.data.dataset import TextDataset

    return TextDataset([t for t, _ in rows], [label for _, label in rows], list(range(len(rows))), "r.csv")


class _StrategyChosen(Exception):
    """Raised where training would start: by then ``fit`` has chosen the strategy and announced it."""


def _choose_through_fit(config, train_texts: int, monkeypatch, capsys, validation_texts: int = 0, **settings):
    """``(strategy, recipe line)`` that ``FinetuneClassifier.fit`` picks for ``train_texts`` training texts,
    stopped at ``apply_strategy`` (so no training step runs). No validation texts by default: ``auto`` then keeps
    its rule by size (with validation it searches, tests/test_auto_choice.py)."""
    from conftest import make_rows

    from textxfer.data.labels import LabelSet
    from textxfer.transformer import training

    def stop(model, strategy):
        raise _StrategyChosen(strategy)

    monkeypatch.setattr(training, "apply_strategy", stop)
    rows = make_rows(train_texts + validation_texts, seed=3)
    config.strategy = "auto"
    for name, value in settings.items():
        setattr(config, name, value)
    capsys.readouterr()
    with pytest.raises(_StrategyChosen) as chosen:
        FinetuneClassifier(config).fit(_dataset(rows[:train_texts]),
                                       _dataset(rows[train_texts:]) if validation_texts else None,
                                       labels=LabelSet.from_labels(["negative", "positive"]))
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("recipe: ")]
    assert len(lines) == 1
    return str(chosen.value), lines[0]


# The exact boundaries of --strategy auto with mean pooling, just below / at / just above each threshold: pairs
# first below 65 training texts, a fitted head from 65 to 128, fine-tuning from 129 (validation texts not counted).
@pytest.mark.parametrize("texts, expected", [(64, "contrastive"), (65, "head-only"), (66, "head-only"),
                                             (128, "head-only"), (129, "freeze-embeddings"),
                                             (130, "freeze-embeddings")])
def test_auto_strategy_boundaries_through_fit(tiny_config, monkeypatch, capsys, texts, expected):
    strategy, line = _choose_through_fit(tiny_config, texts, monkeypatch, capsys, pooling="mean")
    assert strategy == expected
    assert line.startswith(f"recipe: strategy {expected} ")
    assert "no search on validation: no validation split to choose on" in line
    if expected == "contrastive":
        assert f"for {texts} training texts" in line and "below 65 texts the body is first tuned" in line
    elif expected == "head-only":
        assert f"for {texts} training texts" in line and "below 129 texts a head fitted" in line
    else:
        assert "fine-tuning from 129 texts on" in line


def test_auto_counts_the_training_texts_left_after_subsetting(tiny_config, monkeypatch, capsys):
    """``--max-train-samples`` decides the size the strategy is chosen for, not the file's."""
    strategy, line = _choose_through_fit(tiny_config, 200, monkeypatch, capsys, pooling="mean",
                                         max_train_samples=128)
    assert strategy == "head-only" and "for 128 training texts" in line


def test_auto_fine_tunes_below_the_thresholds_with_first_token_pooling(tiny_config, monkeypatch, capsys):
    strategy, line = _choose_through_fit(tiny_config, 64, monkeypatch, capsys, pooling="cls")
    assert strategy == "freeze-embeddings" and "with first-token pooling" in line


def test_auto_below_the_contrastive_threshold_runs_the_pair_stage_then_fits_the_head(tiny_config, capsys):
    """The whole contrastive branch as ``auto`` picks it at 64 texts without validation (one pair iteration: 8 steps)."""
    from conftest import make_rows

    rows = make_rows(64, seed=3)
    tiny_config.strategy, tiny_config.pooling = "auto", "mean"
    tiny_config.pair_iterations, tiny_config.batch_size = 1, 16
    model = FinetuneClassifier(tiny_config).fit(_dataset(rows))
    stats = model.fit_stats_
    assert (stats["strategy"], stats["recipe"]["strategy"], stats["recipe"]["strategy_asked"]) == (
        "contrastive", "contrastive", "auto")
    assert stats["contrastive"]["pairs"] == 2 * 64 and stats["steps"] == stats["recipe"]["planned_steps"] == 8
    assert stats["head_fit"]["C"] > 0 and not any(p.requires_grad for p in model.model_.parameters())
    assert "recipe: strategy contrastive for 64 training texts" in capsys.readouterr().out
