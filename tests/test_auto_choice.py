"""``--strategy auto`` chooses on validation: the candidates, the one-standard-error rule, and the search run on a
tiny model (each candidate as a run with that strategy would train it; the winner's weights kept)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import make_hard_rows
from textxfer.core.metrics import score
from textxfer.data.dataset import TextDataset
from textxfer.data.labels import LabelSet
from textxfer.transformer import auto_choice


def _predictions(references, accuracy, rng):
    """Predictions right on a share ``accuracy`` of the texts (the wrong ones a random other class)."""
    references = np.asarray(references)
    predicted = references.copy()
    wrong = rng.choice(len(references), size=int(round((1 - accuracy) * len(references))), replace=False)
    predicted[wrong] = (references[wrong] + 1 + rng.integers(0, 2, size=len(wrong))) % 3
    return predicted


def _race(texts, cheap_accuracy, dear_accuracy, seed=0):
    rng = np.random.default_rng(seed)
    references = rng.integers(0, 3, size=texts)
    results = [{"strategy": "head-only", "seconds": 10, "predicted": _predictions(references, cheap_accuracy, rng)},
               {"strategy": "contrastive", "seconds": 300, "predicted": _predictions(references, dear_accuracy, rng)}]
    return auto_choice.winner(results, references, 3, seed=1)


def test_a_small_lead_on_few_validation_texts_is_noise_and_the_cheaper_candidate_wins():
    chosen, details = _race(60, 0.70, 0.73)  # 2 texts of 60 more right: within one standard error
    dear = next(c for c in details["candidates"] if c["strategy"] == "contrastive")
    cheap = next(c for c in details["candidates"] if c["strategy"] == "head-only")
    assert details["best"] == "contrastive" and dear["macro_f1"] > cheap["macro_f1"]
    assert 0 < cheap["gap"] <= cheap["standard_error"]
    assert chosen == "head-only" and "within noise of the best, contrastive" in details["why"]


def test_the_same_lead_on_many_validation_texts_is_real_and_the_costlier_candidate_wins():
    chosen, details = _race(6000, 0.70, 0.73)  # the same 3-point lead, 100× the texts: the standard error shrinks
    cheap = next(c for c in details["candidates"] if c["strategy"] == "head-only")
    assert cheap["gap"] > cheap["standard_error"] > 0
    assert chosen == "contrastive" and "more than the noise" in details["why"]


def test_a_clear_lead_wins_even_on_few_texts_and_ties_go_to_the_cheaper():
    assert _race(60, 0.55, 0.90)[0] == "contrastive"
    chosen, details = _race(500, 0.80, 0.80, seed=4)
    assert chosen == "head-only"


def test_the_bootstrap_scores_like_the_one_scorer_including_absent_classes():
    rng = np.random.default_rng(2)
    references = rng.integers(0, 4, size=50)
    references[references == 3] = 0  # class 3 has no true text: the scorer leaves it out of the macro average
    predicted = _predictions(references, 0.6, rng)
    whole = np.arange(len(references))[None, :]
    labels = LabelSet(["a", "b", "c", "d"])
    expected = score(references, predicted, labels)["macro_f1"]
    assert auto_choice.macro_f1_resampled(predicted, references, whole, 4)[0] == pytest.approx(expected)


def test_the_candidates_and_when_auto_does_not_search():
    assert auto_choice.candidates(32) == ["head-only", "contrastive"]
    assert auto_choice.candidates(auto_choice.FINETUNE_FROM) == ["head-only", "contrastive", "freeze-embeddings"]
    assert auto_choice.searches(128, True) is None
    assert "no validation split" in auto_choice.searches(128, False)
    assert "multi-process" in auto_choice.searches(128, True, world_size=2)
    assert "more than 1,000" in auto_choice.searches(auto_choice.SEARCH_UP_TO + 1, True)
    assert auto_choice.budget_minutes(None, False) == 15 and auto_choice.budget_minutes(None, True) == 30
    assert auto_choice.budget_minutes(4, True) == 4


# -- the search on a tiny model ---------------------------------------------------------------------------------

def _data(rows):
    return TextDataset([t for t, _ in rows], [label for _, label in rows], list(range(len(rows))), "fixture")


@pytest.fixture(scope="module")
def split():
    rows = make_hard_rows(400, seed=1)
    return _data(rows[:120]), _data(rows[120:220])


def _config(tiny_bert, **settings):
    from textxfer.transformer.pipeline import FinetuneConfig

    return FinetuneConfig(model=str(tiny_bert), learning_rate=3e-3, batch_size=8, logging_steps=1000, seed=3,
                          pair_iterations=4, **settings)


@pytest.fixture(scope="module")
def searched(tiny_bert, split, one_torch_thread):
    from textxfer.transformer.pipeline import FinetuneClassifier

    train, validation = split
    return FinetuneClassifier(_config(tiny_bert)).fit(train, validation)


def test_auto_trains_each_candidate_as_its_own_strategy_would_and_keeps_the_winner(searched, tiny_bert, split):
    """Each candidate's validation score equals a run with that --strategy (the search restores the starting weights
    between candidates); the model left is the winner's, chosen by the rule from those scores."""
    from textxfer.transformer.pipeline import FinetuneClassifier

    train, validation = split
    search = searched.fit_stats_["recipe"]["search"]
    scores = {c["strategy"]: c for c in search["candidates"]}
    assert set(scores) == {"head-only", "contrastive", "freeze-embeddings"} and not search["skipped"]
    references = searched.labels.encode(validation.labels)
    for strategy in scores:
        alone = FinetuneClassifier(_config(tiny_bert, strategy=strategy)).fit(train, validation)
        predicted = alone.predict_proba(validation.texts).argmax(axis=1)
        assert scores[strategy]["macro_f1"] == pytest.approx(score(references, predicted, searched.labels)["macro_f1"]), strategy
    mine = searched.predict_proba(validation.texts).argmax(axis=1)
    assert score(references, mine, searched.labels)["macro_f1"] == pytest.approx(scores[search["winner"]]["macro_f1"])
    assert searched.fit_stats_["strategy"] == search["winner"]
    recipe = searched.fit_stats_["recipe"]
    assert recipe["strategy_asked"] == "auto" and recipe["strategy"] == search["winner"]
    line = recipe["choices"][0]
    assert line.startswith(f"strategy {search['winner']} chosen on validation") and "head-only 0." in line


def test_the_time_budget_leaves_out_what_does_not_fit(tiny_bert, split, one_torch_thread, capsys):
    from textxfer.transformer.pipeline import FinetuneClassifier

    train, validation = split
    model = FinetuneClassifier(_config(tiny_bert, time_budget=1e-4)).fit(train, validation)
    search = model.fit_stats_["recipe"]["search"]
    assert [c["strategy"] for c in search["candidates"]] == ["head-only"] and search["winner"] == "head-only"
    assert {s["strategy"] for s in search["skipped"]} == {"contrastive", "freeze-embeddings"}
    assert all("--time-budget" in s["why"] and s["estimated_seconds"] > 0 for s in search["skipped"])
    assert "not tried: " in model.fit_stats_["recipe"]["choices"][0]


def test_without_validation_auto_keeps_the_rule_by_size_and_says_why(tiny_bert, split, one_torch_thread):
    from textxfer.transformer.pipeline import FinetuneClassifier

    train, _ = split
    model = FinetuneClassifier(_config(tiny_bert, min_steps=0, epochs=1)).fit(train)
    recipe = model.fit_stats_["recipe"]
    assert "search" not in recipe and recipe["strategy"] == "freeze-embeddings"  # cls pooling: the rule fine-tunes
    said = [c for c in recipe["choices"] if "no search on validation: no validation split to choose on" in c]
    assert len(said) == 1 and said[0].startswith("strategy freeze-embeddings (--strategy auto")


def test_finetune_auto_reports_the_search_in_report_json_and_one_line(tiny_bert, sample_csv, tmp_path, capsys,
                                                                       one_torch_thread):
    from textxfer.cli import main

    output = tmp_path / "auto"
    assert main(["finetune", "--data", str(sample_csv), "--output", str(output), "--model", str(tiny_bert),
                 "--batch-size", "8", "--pair-iterations", "2", "--max-train-samples", "40", "--no-progress"]) == 0
    out = capsys.readouterr().out
    report = json.loads((output / "report.json").read_text(encoding="utf-8"))
    search = report["fit"]["recipe"]["search"]
    assert [c["strategy"] for c in search["candidates"]] == ["head-only", "contrastive"]  # 40 texts: no fine-tuning
    assert all(c["seconds"] > 0 and 0 <= c["macro_f1"] <= 1 for c in search["candidates"])
    assert report["fit"]["strategy"] == search["winner"]
    announced = [line for line in out.splitlines() if "chosen on validation" in line]
    assert len(announced) == 1 and announced[0].startswith(f"recipe: strategy {search['winner']} chosen on validation")


@pytest.mark.parametrize("forced", ["freeze-embeddings", "head-only"])
def test_every_candidate_that_trains_the_encoder_sets_and_says_its_attention_dropout(tiny_bert, split, one_torch_thread,
                                                                                    monkeypatch, forced):
    """Each candidate starts from the model's own attention dropout (0.1 here), so the one kept says it set 0; a kept
    head-only leaves the saved config at the model's own (its encoder never trained)."""
    from textxfer.transformer.pipeline import FinetuneClassifier

    rule = auto_choice.winner

    def force(results, references, num_labels, seed=0):
        _, details = rule(results, references, num_labels, seed)
        return forced, {**details, "winner": forced}

    monkeypatch.setattr(auto_choice, "winner", force)
    train, validation = split
    model = FinetuneClassifier(_config(tiny_bert)).fit(train, validation)
    said = [c for c in model.fit_stats_["recipe"]["choices"] if c.startswith("attention dropout 0 (the model's own 0.1")]
    assert model.fit_stats_["strategy"] == forced
    assert len(said) == (1 if forced != "head-only" else 0)
    assert model.model_.config.attention_probs_dropout_prob == pytest.approx(0.0 if forced != "head-only" else 0.1)
