"""The baseline on multi-label rows and on text pairs: it learns them, thresholds come from validation, and a
saved model keeps its shape and refuses inputs of the other one."""

from __future__ import annotations

import random

import numpy as np
import pytest

from conftest import make_multilabel_rows, make_pair_rows, write_csv
from textxfer.baseline.pipeline import BaselineClassifier, pair_features, with_label_tokens
from textxfer.classifier import load
from textxfer.core.metrics import score, score_multilabel
from textxfer.core.thresholds import decide
from textxfer.data.dataset import DataOptions, load_data
from textxfer.errors import TextxferError


@pytest.fixture(scope="module")
def pair_data(tmp_path_factory):
    path = write_csv(tmp_path_factory.mktemp("pairs") / "pairs.csv", make_pair_rows(400),
                     header=("first", "second", "label"))
    return load_data(DataOptions(data=str(path), text_column="first", text_pair_column="second", test_size=0.2))


def _micro_f1(model, data):
    probabilities = model.predict_proba(data.test.inputs)
    truth = data.labels.indicators(data.test.labels)
    return score_multilabel(truth, decide(probabilities, model.thresholds), probabilities, data.labels)["micro_f1"]


def test_multi_label_baseline_learns_each_label_and_sets_thresholds_on_validation(multilabel_data, fast_config):
    model = BaselineClassifier(fast_config).fit(multilabel_data.train, multilabel_data.validation)
    assert model.labels.multi_label and model.labels.names == ("clean", "noisy", "value")
    assert model.thresholds.shape == (3,) and model.thresholds_from.startswith("validation")
    f1 = _micro_f1(model, multilabel_data)
    # 6% of label decisions are flipped: a model that learns stays below 1.0 but far above a shuffled one.
    assert 0.75 < f1 < 1.0
    rng = np.random.default_rng(0)
    train = multilabel_data.train
    scrambled = type(train)(train.texts, [train.labels[i] for i in rng.permutation(len(train))], train.rows,
                            train.origin, train.pairs, train.shape)
    noise_model = BaselineClassifier(fast_config).fit(scrambled, multilabel_data.validation)
    assert _micro_f1(noise_model, multilabel_data) < f1 - 0.25
    predicted = model.predict(multilabel_data.test.inputs)
    assert all(isinstance(labels, list) for labels in predicted) and any(len(labels) > 1 for labels in predicted)


def test_a_saved_multi_label_baseline_keeps_its_thresholds(multilabel_data, fast_config, tmp_path):
    model = BaselineClassifier(fast_config).fit(multilabel_data.train, multilabel_data.validation)
    model.thresholds = np.array([0.2, 0.6, 0.45])  # distinct values, to see that they come back
    model.save(tmp_path / "m")
    loaded = load(tmp_path / "m")
    assert loaded.thresholds.tolist() == [0.2, 0.6, 0.45] and loaded.labels == model.labels
    assert loaded.predict(multilabel_data.test.inputs) == model.predict(multilabel_data.test.inputs)
    assert loaded.shape.multi_label and loaded.shape.label_separator == "|"


def test_pair_baseline_reads_both_texts(pair_data, fast_config):
    model = BaselineClassifier(fast_config).fit(pair_data.train, pair_data.validation)
    accuracy = score(pair_data.labels.encode(pair_data.test.labels),
                     model.predict_proba(pair_data.test.inputs).argmax(axis=1), pair_data.labels)["accuracy"]
    # Only the pair decides the label (either text alone is at chance); 5% of labels are flipped.
    assert 0.8 < accuracy < 1.0
    first_only = type(pair_data.train)(pair_data.train.texts, pair_data.train.labels, pair_data.train.rows, "x")
    alone = BaselineClassifier(fast_config).fit(first_only)
    assert score(pair_data.labels.encode(pair_data.test.labels), alone.predict_proba(pair_data.test.texts).argmax(axis=1),
                 pair_data.labels)["accuracy"] < 0.65


def test_a_pair_model_refuses_single_texts_and_a_text_model_refuses_pairs(pair_data, fast_config, tmp_path):
    model = BaselineClassifier(fast_config).fit(pair_data.train)
    model.save(tmp_path / "pairs")
    loaded = load(tmp_path / "pairs")
    a, b = pair_data.test.inputs[0]
    assert loaded.predict((a, b)) == loaded.predict([(a, b)]) == model.predict([[a, b]])
    with pytest.raises(TextxferError, match="input 1: this model reads text pairs"):
        loaded.predict(["just one text"])
    single = BaselineClassifier(fast_config).fit(type(pair_data.train)(pair_data.train.texts, pair_data.train.labels,
                                                                       pair_data.train.rows, "x"))
    with pytest.raises(TextxferError, match="input 1: this model reads single texts.*not trained on text pairs"):
        single.predict([(a, b)])


def test_label_tokens_take_turns_and_pair_features_hold_agreement_and_difference():
    assert with_label_tokens(["a", "b", "c", "d"], ["X", "Y"], 2) == ["X", "a", "b", "Y", "c", "d", "X"]
    assert with_label_tokens(["a", "b"], [], 2) == ["a", "b"]
    assert with_label_tokens(["a", "b", "c"], ["X"], 2) == ["X", "a", "b", "X", "c", "X"]  # the single-label form
    a, b = np.array([[1.0, -2.0]]), np.array([[3.0, 1.0]])
    assert pair_features(a, b).tolist() == [[1, -2, 3, 1, 3, -2, 2, 3]]


def test_the_baseline_command_scores_multi_label_and_pair_runs(tmp_path, capsys):
    import json

    from textxfer.cli import main

    aspects = write_csv(tmp_path / "aspects.csv", make_multilabel_rows(300), header=("text", "tags"))
    assert main(["baseline", "--data", str(aspects), "--label-column", "tags", "--label-separator", "|",
                 "--output", str(tmp_path / "ml"), "--no-progress", "--vector-size", "16", "--n-estimators", "20",
                 "--min-count", "1"]) == 0
    printed = capsys.readouterr().out
    assert "micro-F1" in printed and "hamming" in printed
    metrics = json.loads((tmp_path / "ml" / "metrics.json").read_text())
    assert metrics["test"]["multi_label"] and 0.7 < metrics["test"]["micro_f1"] < 1.0
    predictions = json.loads((tmp_path / "ml" / "predictions.json").read_text())
    assert all(isinstance(ids, list) for ids in predictions["splits"]["test"]["predicted"])
    check = json.loads((tmp_path / "ml" / "report.json").read_text())["model_check"]
    assert check["degenerate"] is False and check["always_predicted"] == []

    pairs = write_csv(tmp_path / "pairs.csv", make_pair_rows(300), header=("first", "second", "label"))
    assert main(["baseline", "--data", str(pairs), "--text-column", "first", "--text-pair-column", "second",
                 "--output", str(tmp_path / "pairs"), "--no-progress", "--vector-size", "16", "--n-estimators", "20",
                 "--min-count", "1"]) == 0
    metrics = json.loads((tmp_path / "pairs" / "metrics.json").read_text())
    assert 0.8 < metrics["test"]["accuracy"] <= 1.0
    assert load(tmp_path / "pairs").shape.text_pair_column == "second"


@pytest.fixture(scope="module")
def multilabel_model(multilabel_data, tmp_path_factory):
    from textxfer.baseline.pipeline import BaselineConfig

    folder = tmp_path_factory.mktemp("model") / "ml"
    BaselineClassifier(BaselineConfig(vector_size=16, epochs=5, min_count=1, n_estimators=20, n_jobs=1)).fit(
        multilabel_data.train, multilabel_data.validation).save(folder)
    return folder


def test_a_multi_label_pair_study_reports_micro_f1_and_the_paired_bootstrap(tmp_path, capsys):
    import json
    import random

    from conftest import NEUTRAL
    from textxfer.cli import main

    rng = random.Random(0)
    rows = [("，".join(rng.sample(NEUTRAL, 3)) + "。", text, tags) for text, tags in make_multilabel_rows(300)]
    path = write_csv(tmp_path / "pairs.csv", rows, header=("post", "reply", "tags"))
    assert main(["study", "--data", str(path), "--text-column", "post", "--text-pair-column", "reply",
                 "--label-column", "tags", "--label-separator", "|", "--variants", "baseline",
                 "baseline:label_dimensions=false", "--sizes", "60", "150", "--seeds", "2", "--baseline-vector-size",
                 "16", "--baseline-min-count", "1", "--baseline-n-estimators", "20", "--output", str(tmp_path / "s"),
                 "--no-progress"]) == 0
    capsys.readouterr()
    study = json.loads((tmp_path / "s" / "study.json").read_text())
    assert study["metrics"][0] == ["micro_f1", "test micro-F1"]
    cell = study["cells"][0]
    assert set(cell["test"]) == {"micro_f1", "macro_f1"}
    entry = study["summary"]["baseline"]["150"]["micro_f1"]
    assert entry["n"] == 2 and 0.5 < entry["mean"] <= 1.0
    test = next(iter(study["paired"]["150"]["tests"].values()))
    assert test["method"].startswith("paired bootstrap") and len(test["interval"]) == 2
    report = (tmp_path / "s" / "study.md").read_text()
    assert "## Test micro-F1" in report and "best − other [95% interval]" in report


def test_nested_multi_label_subsets_keep_the_rarest_labels_in_their_share():
    from collections import Counter

    from textxfer.evaluation.study import nested_order

    rng = random.Random(0)
    labels = [tuple(sorted({rng.choice("aab") for _ in range(rng.randint(0, 2))} | ({"r"} if i % 25 == 0 else set())))
              for i in range(500)]
    order = nested_order(labels, seed=3)
    assert sorted(order) == list(range(500))
    for size in (50, 100, 250):
        counts = Counter(name for i in order[:size] for name in labels[i])
        assert abs(counts["r"] - 20 * size / 500) <= 1  # 20 rows carry the rare label 'r'
    assert order[:50] == nested_order(labels, seed=3)[:50]


def test_the_python_api_predicts_label_lists_and_pairs(multilabel_model, multilabel_data, pair_data, fast_config):
    from textxfer import classifier

    texts = multilabel_data.test.texts[:20]
    results = classifier.predict(texts, model=multilabel_model)
    model = classifier.cached(multilabel_model)
    assert [sorted(r.labels) for r in results] == [sorted(labels) for labels in model.predict(texts)]
    for result in results:
        assert set(result.probabilities) == {"clean", "noisy", "value"}
        ordered = [result.probabilities[label] for label in result.labels]
        assert ordered == sorted(ordered, reverse=True)  # most probable first
        for label, p in result.probabilities.items():
            threshold = model.thresholds[model.labels.names.index(label)]
            assert (label in result.labels) == (p >= threshold)
    one = classifier.predict(texts[0], model=multilabel_model)
    assert isinstance(one, classifier.MultiLabelPrediction) and one == results[0]

    pair_model = BaselineClassifier(fast_config).fit(pair_data.train)
    a, b = pair_data.test.inputs[0]
    single = classifier.predict((a, b), model=pair_model)
    assert isinstance(single, classifier.Prediction) and single == classifier.predict([(a, b)], model=pair_model)[0]
    with pytest.raises(TextxferError, match="input 1: this model reads text pairs"):
        classifier.predict("one text", model=pair_model)


def test_predict_files_write_label_lists_and_read_pairs(multilabel_model, multilabel_data, pair_data, fast_config,
                                                        tmp_path):
    import csv
    import json

    from textxfer.serving.predict_files import predict_file

    model = load(multilabel_model)
    texts = multilabel_data.test.texts
    source = write_csv(tmp_path / "in.csv", [(t, i) for i, t in enumerate(texts)], header=("text", "id"))
    predict_file(model, str(source), str(tmp_path / "out.csv"), progress=False)
    with open(tmp_path / "out.csv", encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["text", "id", "labels", "prob_clean", "prob_noisy", "prob_value"]
    expected = model.predict(texts)
    assert [sorted(filter(None, r["labels"].split("|"))) for r in rows] == [sorted(e) for e in expected]
    assert any("|" in r["labels"] for r in rows)  # several labels in a row
    jsonl = tmp_path / "in.jsonl"
    jsonl.write_text("".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in texts[:5]), encoding="utf-8")
    predict_file(model, str(jsonl), str(tmp_path / "out.jsonl"), progress=False)
    records = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [sorted(r["labels"]) for r in records] == [sorted(e) for e in expected[:5]]
    assert set(records[0]["probabilities"]) == {"clean", "noisy", "value"}

    pair_model = BaselineClassifier(fast_config).fit(pair_data.train)
    inputs = pair_data.test.inputs
    pairs_in = write_csv(tmp_path / "pairs.csv", inputs, header=("first", "second"))
    predict_file(pair_model, str(pairs_in), str(tmp_path / "pairs_out.csv"), text_column="first", progress=False)
    with open(tmp_path / "pairs_out.csv", encoding="utf-8", newline="") as handle:
        labels = [r["label"] for r in csv.DictReader(handle)]
    assert labels == pair_model.predict(inputs)
    renamed = write_csv(tmp_path / "renamed.csv", inputs, header=("first", "reply"))
    with pytest.raises(TextxferError, match="'second'"):
        predict_file(pair_model, str(renamed), str(tmp_path / "x.csv"), text_column="first", progress=False)
    predict_file(pair_model, str(renamed), str(tmp_path / "y.csv"), text_column="first", text_pair_column="reply",
                 progress=False)
    with pytest.raises(TextxferError, match="this model reads single texts"):
        predict_file(model, str(source), str(tmp_path / "z.csv"), text_pair_column="id", progress=False)
