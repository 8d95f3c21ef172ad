"""The ``ensemble`` model kind: weights chosen on validation only, a safe round trip, refused mixtures."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from textxfer import classifier
from textxfer.data.dataset import DataOptions, load_data
from textxfer.data.shape import SINGLE
from textxfer.ensemble.weights import choose, mix, parse_weights, simplex_grid
from textxfer.errors import TextxferError
from textxfer.data.labels import LabelSet
from textxfer.core.contract import ClassifierBase
from textxfer.core.calibration import scale
from textxfer.ensemble.pipeline import EnsembleClassifier, EnsembleConfig


class Fixed(ClassifierBase):
    """A stand-in member: a fixed probability row per text, and a record of every text it was asked about."""

    kind = "baseline"  # any registered kind: never written
    fitted_attribute = "rows_"

    def __init__(self, rows: dict[str, list[float]], names=("neg", "pos")):
        self.rows_, self.labels, self.seen = rows, LabelSet(tuple(names)), []

    def fit(self, train, validation=None, labels=None, progress=False):
        return self

    def raw_proba(self, texts):
        self.seen.extend(texts)
        return np.array([self.rows_[t] for t in texts], dtype=float).reshape(len(texts), len(self.labels))

    def write(self, folder, data_info=None):
        raise AssertionError("not written")

    @classmethod
    def from_manifest(cls, folder, manifest, labels, device="auto", precision="auto"):
        raise AssertionError("not loaded")


class Split:
    """A stand-in ``TextDataset`` of single texts."""

    shape = SINGLE

    def __init__(self, texts, labels):
        self.texts, self.labels = list(texts), list(labels)

    @property
    def inputs(self):
        return self.texts

    def __len__(self):
        return len(self.texts)


def grid_log_losses(first: np.ndarray, second: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(w, loss)``: the log loss of w·first + (1 − w)·second for w = 0, 1/20, …, 1 (two members' probability
    matrices, true classes ``y``), in plain numpy: an independent check of textxfer.ensemble.weights."""
    w = np.arange(21) / 20
    rows = np.arange(len(y))
    true = w[:, None] * first[rows, y] + (1 - w[:, None]) * second[rows, y]
    return w, -np.log(np.clip(true, 1e-12, 1.0)).mean(axis=1)


def test_parse_weights():
    assert parse_weights("auto", 2) == "auto" and parse_weights("equal", 3) == "equal"
    assert parse_weights("3,1", 2) == [0.75, 0.25]
    for bad, words in [("1", "gives 1 weight(s) for 2 member(s)"), ("a,b", "use auto, equal or 2 numbers"),
                       ("-1,2", "must be finite, ≥ 0"), ("0,0", "not all 0"), ("nan,1", "finite")]:
        with pytest.raises(TextxferError) as error:
            parse_weights(bad, 2)
        assert words in str(error.value)


def test_grid_covers_the_simplex():
    grid = simplex_grid(3)
    assert np.allclose(grid.sum(axis=1), 1) and (grid >= 0).all()
    assert len(grid) == 231 and [1, 0, 0] in grid.tolist() and [0, 0, 1] in grid.tolist()


@pytest.mark.parametrize("shares", [(0.3, 0.7), (0.15, 0.6, 0.25)])
def test_auto_weights_are_the_known_optimum_on_validation_and_never_see_train_or_test(shares):
    # Validation text group k (a share f_k of the texts) is one that only member k gets right, with all its
    # probability; the others put all theirs on the wrong class. The mixture's probability of the true class
    # on group k is then w_k, so the validation log loss is -Σ f_k·log w_k: least at w = f exactly (the
    # multinomial maximum likelihood, worked on paper), a point of the grid, and never equal weights.
    n = 40
    sizes = [round(f * n) for f in shares]
    labels = ["pos" if i % 2 else "neg" for i in range(n)]
    group = np.repeat(np.arange(len(shares)), sizes)
    one_hot = {"neg": [1.0, 0.0], "pos": [0.0, 1.0]}
    flip = {"neg": "pos", "pos": "neg"}
    validation = Split([f"v{i}" for i in range(n)], labels)
    rows = [{t: one_hot[y if group[i] == k else flip[y]] for i, (t, y) in enumerate(zip(validation.texts, labels))}
            for k in range(len(shares))]
    # training texts on which the weights in reverse order would be best: fit must not look at them
    train = Split([f"t{i}" for i in range(n)], labels)
    train_group = np.repeat(np.arange(len(shares))[::-1], sizes)
    for k, member_rows in enumerate(rows):
        member_rows.update({t: one_hot[y if train_group[i] == k else flip[y]]
                            for i, (t, y) in enumerate(zip(train.texts, labels))})
    members = [Fixed(r) for r in rows]
    model = EnsembleClassifier(members).fit(train, validation)
    assert model.weights_ == pytest.approx(list(shares), abs=1e-9)
    record = model.selection_["validation"]
    assert model.selection_["method"] == "auto" and record["n"] == n
    assert [m["accuracy"] for m in record["members"]] == pytest.approx(list(shares))
    assert record["chosen"]["log_loss"] == pytest.approx(-sum(f * math.log(f) for f in shares), abs=1e-6)
    assert record["equal_weights"]["log_loss"] == pytest.approx(math.log(len(shares)), abs=1e-6)
    assert record["chosen"]["accuracy"] == pytest.approx(max(shares))  # right where w_k > 1/2: the largest group
    assert all(set(m.seen) == set(validation.texts) for m in members)  # fit looked at validation only
    # predict mixes with the chosen weights, in member order: a text only member k backs gets w_k
    for k, member in enumerate(members):
        for j, other in enumerate(members):
            other.rows_["test text"] = [0.0, 1.0] if j == k else [1.0, 0.0]
        mixed = model.raw_proba(["test text"])
        assert mixed == pytest.approx(np.array([[1 - shares[k], shares[k]]]), abs=1e-12)
        # and predict_proba is that mixture at the ensemble's own temperature, fitted on the mixed validation rows
        assert model.predict_proba(["test text"]) == pytest.approx(scale(mixed, model.temperature), abs=1e-12)
    assert model.calibration["method"] == "temperature"
    assert all(m.seen[-1] == "test text" for m in members)  # predict runs the members; fit never did on this text


def test_auto_weights_follow_a_calibrated_member_over_a_noisy_one():
    # One member right on every text with probability 0.9; the other the same on half of them and reversed
    # on the rest. Where they agree any weights do; where the noisy one is wrong the true class gets
    # 0.9·w_good + 0.1·w_noisy, largest at w_good = 1: all the weight goes to the good member.
    validation = Split([f"v{i}" for i in range(40)], ["pos" if i % 2 else "neg" for i in range(40)])
    truth = {t: ([0.1, 0.9] if label == "pos" else [0.9, 0.1]) for t, label in zip(validation.texts, validation.labels)}
    wrong_half = {t: (row if i % 4 < 2 else row[::-1]) for i, (t, row) in enumerate(truth.items())}
    for order in ((wrong_half, truth), (truth, wrong_half)):
        model = EnsembleClassifier([Fixed(order[0]), Fixed(order[1])]).fit(Split([], []), validation)
        assert model.weights_ == ([0.0, 1.0] if order[1] is truth else [1.0, 0.0])
        chosen = model.selection_["validation"]["chosen"]
        assert chosen["accuracy"] == 1.0 and chosen["log_loss"] == pytest.approx(-math.log(0.9), abs=1e-6)


def test_equal_and_given_weights_and_no_validation():
    a, b = Fixed({"x": [1.0, 0.0]}), Fixed({"x": [0.0, 1.0]})
    assert EnsembleClassifier([a, b], EnsembleConfig("equal")).fit(Split([], []), None).predict_proba(["x"]).tolist() == [[0.5, 0.5]]
    given = EnsembleClassifier([a, b], EnsembleConfig("1,3")).fit(Split([], []), None)
    assert given.weights_ == [0.25, 0.75] and np.allclose(given.predict_proba(["x"]), [[0.25, 0.75]])
    auto = EnsembleClassifier([a, b]).fit(Split([], []), None)
    assert auto.weights_ == [0.5, 0.5] and "no validation split" in auto.selection_["note"]
    zero = EnsembleClassifier([a, b], EnsembleConfig("0,1")).fit(Split([], []), None)
    a.seen.clear()
    assert zero.predict_proba(["x"]).tolist() == [[0.0, 1.0]] and a.seen == []  # a member of weight 0 is not run


def test_members_with_other_labels_or_order_are_refused():
    a = Fixed({"x": [1.0, 0.0]})
    with pytest.raises(TextxferError, match=r"member 2 has labels \['pos', 'neg'\].*same labels in another order"):
        EnsembleClassifier([a, Fixed({"x": [1.0, 0.0]}, ("pos", "neg"))]).fit(Split([], []), None)
    with pytest.raises(TextxferError, match="other labels"):
        EnsembleClassifier([a, Fixed({"x": [1.0, 0.0]}, ("neg", "neutral"))]).fit(Split([], []), None)
    with pytest.raises(TextxferError, match="at least 2 members"):
        EnsembleClassifier([a]).fit(Split([], []), None)
    assert np.allclose(mix([np.array([[0.2, 0.8]]), np.array([[0.6, 0.4]])], [0.5, 0.5]), [[0.4, 0.6]])
    assert choose("equal", [None, None], None)[0] == [0.5, 0.5]


@pytest.fixture(scope="module")
def ensemble_folder(trained_models, sample_csv, tmp_path_factory):
    members = [classifier.load(trained_models["baseline"]), classifier.load(trained_models["finetune"])]
    data = load_data(DataOptions(data=str(sample_csv), split=str(trained_models["baseline"])))
    model = EnsembleClassifier(members).fit(data.train, data.validation, labels=data.labels)
    folder = tmp_path_factory.mktemp("ensemble") / "model"
    model.save(folder)
    return folder, model, data


def test_written_ensemble_loads_and_predicts_identically(ensemble_folder):
    folder, model, data = ensemble_folder
    manifest = json.loads((folder / "textxfer.json").read_text())
    assert manifest["kind"] == "ensemble" and [m["kind"] for m in manifest["config"]["members"]] == ["baseline", "finetune"]
    assert all(len(m["sha256"]) == 64 for m in manifest["config"]["members"])
    loaded = classifier.load(folder)
    assert isinstance(loaded, EnsembleClassifier) and loaded.weights_ == model.weights_
    texts = data.test.texts + ["", "完全陌生 🙂" * 50]
    assert np.array_equal(loaded.predict_proba(texts), model.predict_proba(texts))
    accuracy = np.mean([p == t for p, t in zip(loaded.predict(data.test.texts), data.test.labels)])
    assert accuracy >= 0.9


@pytest.mark.parametrize("damage, words", [
    ("edit", "the member changed since the ensemble was written"),
    ("symlink", "a member folder must lie inside members/"),
    ("remove", "member listed in the manifest is missing"),
    ("pickle", "changed since the ensemble was written"),
    ("weights", "'config.chosen_weights' must give one weight"),
    ("escape", "is not a plain folder name"),
])
def test_a_damaged_or_planted_member_is_refused(ensemble_folder, tmp_path, damage, words):
    source, _, _ = ensemble_folder
    folder = tmp_path / "copy"
    shutil.copytree(source, folder)
    members = folder / "members"
    manifest_path = folder / "textxfer.json"
    manifest = json.loads(manifest_path.read_text())
    if damage == "edit":
        vocab = members / "1-baseline" / "vocab.json"
        vocab.write_text(vocab.read_text() + " ")
    elif damage == "symlink":
        outside = tmp_path / "outside"
        shutil.move(str(members / "1-baseline"), outside)
        (members / "1-baseline").symlink_to(outside, target_is_directory=True)
    elif damage == "remove":
        shutil.rmtree(members / "2-finetune")
    elif damage == "pickle":
        (members / "2-finetune" / "pytorch_model.bin").write_bytes(b"\x80\x04planted")
    elif damage == "weights":
        manifest["config"]["chosen_weights"] = [1.0]
    elif damage == "escape":
        manifest["config"]["members"][0]["folder"] = "../../elsewhere"
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(TextxferError) as error:
        classifier.load(folder)
    assert words in str(error.value)


# -- `textxfer ensemble`, and the ensemble through every command --------------------------------------------
@pytest.fixture(scope="module")
def ensemble_run(trained_models, tmp_path_factory):
    from textxfer.cli import main

    output = tmp_path_factory.mktemp("ensemble-run") / "run"
    assert main(["ensemble", "--runs", str(trained_models["baseline"]), str(trained_models["finetune"]),
                 "--output", str(output), "--no-progress"]) == 0
    return output


def test_ensemble_command_writes_a_scored_run(ensemble_run, trained_models):
    for name in ("textxfer.json", "split.json", "metrics.json", "report.json", "predictions.json"):
        assert (ensemble_run / name).is_file(), name
    assert (ensemble_run / "split.json").read_text() == (trained_models["baseline"] / "split.json").read_text()
    report = json.loads((ensemble_run / "report.json").read_text())
    selection = report["fit"]["selection"]
    assert selection["method"] == "auto" and abs(sum(report["fit"]["weights"]) - 1) < 1e-9
    validation_n = json.loads((ensemble_run / "metrics.json").read_text())["validation"]["n"]
    assert selection["validation"]["n"] == validation_n  # chosen on validation: its size, not test's
    assert json.loads((ensemble_run / "metrics.json").read_text())["test"]["accuracy"] >= 0.9


def test_the_ensemble_predicts_identically_in_every_command(ensemble_run, trained_models, tmp_path, capsys):
    from textxfer.cli import main

    from conftest import make_rows

    texts = [t for t, _ in make_rows(12, seed=5)] + [""]
    expected = classifier.predict(texts, model=ensemble_run)
    assert main(["predict", "--model", str(ensemble_run), *texts[:3]]) == 0
    printed = capsys.readouterr().out.strip().splitlines()
    assert [line.split("\t")[0] for line in printed] == [str(e.label) for e in expected[:3]]
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in texts), encoding="utf-8")
    assert main(["predict", "--model", str(ensemble_run), "--input", str(source), "--output", str(tmp_path / "out.jsonl"),
                 "--no-progress"]) == 0
    rows = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [r["label"] for r in rows] == [e.label for e in expected]
    for row, want in zip(rows, expected):
        assert list(row["probabilities"].values()) == pytest.approx(list(want.probabilities.values()), abs=1e-9)
    # serve: the HTTP answers are the Python API's
    import httpx

    from test_serve import running_server

    with running_server(ensemble_run) as (url, _):
        served = httpx.post(f"{url}/predict", json={"texts": texts[:8]}, timeout=60).json()["predictions"]
    assert [p["label"] for p in served] == [e.label for e in expected[:8]]
    for got, want in zip(served, expected):
        assert list(got["probabilities"].values()) == pytest.approx(list(want.probabilities.values()), abs=1e-6)
    # compare, the ensemble in the fine-tuned model's slot: scored as its own run scored it
    assert main(["compare", "--baseline-run", str(trained_models["baseline"]), "--finetune-run", str(ensemble_run),
                 "--output", str(tmp_path / "cmp"), "--no-progress", "--no-ensemble"]) == 0
    compared = json.loads((tmp_path / "cmp" / "comparison.json").read_text(encoding="utf-8"))["models"]["finetune"]
    assert compared["kind"] == "ensemble"
    assert compared["metrics"] == json.loads((ensemble_run / "metrics.json").read_text())["test"]


def test_ensemble_refusals(trained_models, sample_csv, tmp_path, capsys):
    from textxfer.cli import main

    other_split = tmp_path / "other"
    assert main(["baseline", "--data", str(sample_csv), "--seed", "7", "--output", str(other_split), "--no-progress",
                 "--vector-size", "8", "--min-count", "1", "--n-estimators", "5", "--n-jobs", "1", "--epochs", "1"]) == 0
    capsys.readouterr()
    cases = [
        ([str(trained_models["baseline"]), str(other_split)], "split differs from", "--split"),
        ([str(trained_models["baseline"])], "at least 2 run folders", ""),
        ([str(trained_models["baseline"])] * 2, "the same run folder twice", ""),
    ]
    for runs, words, more in cases:
        assert main(["ensemble", "--runs", *runs, "--output", str(tmp_path / "e"), "--no-progress"]) == 2
        err = capsys.readouterr().err.strip()
        assert words in err and more in err and len(err.splitlines()) == 1, err
    assert main(["ensemble", "--runs", str(trained_models["baseline"]), str(trained_models["finetune"]),
                 "--output", str(trained_models["finetune"])]) == 2
    assert "--output is one of the --runs" in capsys.readouterr().err
    assert main(["ensemble", "--runs", str(trained_models["baseline"]), str(trained_models["finetune"]),
                 "--weights", "1,2,3", "--output", str(tmp_path / "e")]) == 2
    assert "gives 3 weight(s) for 2 member(s)" in capsys.readouterr().err
    assert not (tmp_path / "e").exists()


def test_export_refuses_an_ensemble(ensemble_run, capsys):
    from textxfer.cli import main

    assert main(["export", "--model", str(ensemble_run)]) == 2
    assert "an ensemble is exported member by member" in capsys.readouterr().err


def load_bench_script():
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_ensemble", Path(__file__).parents[1] / "scripts" / "bench_ensemble.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


def test_bench_ensemble_scores_each_rule_from_the_members_predictions(ensemble_run, trained_models, tmp_path, capsys):
    bench = load_bench_script()
    out = tmp_path / "bench.json"
    runs = [str(trained_models["baseline"]), str(trained_models["finetune"])]
    assert bench.main(["--runs", *runs, "--output", str(out)]) == 0
    rows = {r["rule"]: r for r in json.loads(out.read_text())["rows"]}
    for run in runs:  # a member alone scores what its own run recorded
        assert rows[f"{run} alone"]["test_accuracy"] == json.loads((Path(run) / "metrics.json").read_text())["test"]["accuracy"]
    # Every other row worked out again here: the members' probabilities, an explicit grid and plain numpy.
    data = load_data(DataOptions(split=str(trained_models["baseline"])))
    members = [classifier.load(run) for run in runs]
    y_val, y_test = (np.asarray(data.labels.encode(s.labels)) for s in (data.validation, data.test))
    val, test = ([m.predict_proba(s.texts) for m in members] for s in (data.validation, data.test))
    w, losses = grid_log_losses(val[0], val[1], y_val)
    best = int(np.argmin(losses))
    auto = rows["auto: validation log loss (textxfer)"]
    assert auto["weights"] == [round(float(w[best]), 4), round(float(1 - w[best]), 4)]  # the baseline's weight first
    assert auto["validation_log_loss"] == pytest.approx(losses[best], abs=1e-9)
    assert auto["test_accuracy"] == mixed_accuracy(test, y_test, w[best])
    equal = rows["equal weights"]
    assert equal["weights"] == [0.5, 0.5] and equal["validation_log_loss"] == pytest.approx(losses[10], abs=1e-9)
    assert equal["test_accuracy"] == mixed_accuracy(test, y_test, 0.5)
    accuracies = np.array([mixed_accuracy(val, y_val, a) for a in w])
    by_accuracy = rows["validation accuracy (ties: log loss)"]
    assert by_accuracy["validation_accuracy"] == accuracies.max()
    assert by_accuracy["validation_log_loss"] == pytest.approx(losses[accuracies == accuracies.max()].min(), abs=1e-9)
    # the saved ensemble made the same choice, and scores what this row scores
    assert json.loads((ensemble_run / "textxfer.json").read_text())["config"]["chosen_weights"] == pytest.approx(
        [w[best], 1 - w[best]], abs=1e-9)
    assert auto["test_accuracy"] == json.loads((ensemble_run / "metrics.json").read_text())["test"]["accuracy"]
    assert "| rule (weights chosen on validation) |" in capsys.readouterr().out


def mixed_accuracy(probabilities, y, first_weight) -> float:
    """Accuracy of first_weight·member 1 + (1 − first_weight)·member 2 (plain numpy)."""
    mixed = first_weight * probabilities[0] + (1 - first_weight) * probabilities[1]
    return float(np.mean(mixed.argmax(axis=1) == y))


def test_bench_ensemble_chooses_every_rule_on_validation_with_known_answers(tmp_path, monkeypatch, capsys):
    # Two stand-in runs whose splits pull opposite ways. Validation: member 1 alone is right (with all its
    # probability) on 30% of the texts, member 2 alone on the other 70%; test: 80% and 20%. On validation the
    # log loss is -(0.3·log w1 + 0.7·log w2): least at (0.3, 0.7); accuracy is 0.7 for every w1 < 1/2, whose
    # tie the log loss breaks at (0.3, 0.7) too. Those weights on test are right only on the 20%; weights
    # chosen on test would be (0.8, 0.2) and score 0.8.
    import types

    bench = load_bench_script()
    one_hot, flip = {"neg": [1.0, 0.0], "pos": [0.0, 1.0]}, {"neg": "pos", "pos": "neg"}
    rows: list[dict] = [{}, {}]
    splits = {}
    for name, first_share, n in (("validation", 0.3, 40), ("test", 0.8, 20)):
        labels = ["pos" if i % 2 else "neg" for i in range(n)]
        texts = [f"{name}{i}" for i in range(n)]
        first_right = [i < round(first_share * n) for i in range(n)]
        for t, y, first in zip(texts, labels, first_right):
            rows[0][t], rows[1][t] = one_hot[y if first else flip[y]], one_hot[flip[y] if first else y]
        splits[name] = Split(texts, labels)
    data = types.SimpleNamespace(labels=LabelSet(("neg", "pos")), **splits)
    members = {"a": Fixed(rows[0]), "b": Fixed(rows[1])}
    monkeypatch.setattr(bench, "same_split", lambda folders: None)
    monkeypatch.setattr(bench, "load_data", lambda options: data)
    monkeypatch.setattr(bench, "classifier", types.SimpleNamespace(load=lambda folder: members[Path(folder).name]))
    out = tmp_path / "bench.json"
    assert bench.main(["--runs", "a", "b", "--output", str(out)]) == 0
    got = {r["rule"]: r for r in json.loads(out.read_text())["rows"]}
    assert got["a alone"]["weights"] == [1.0, 0.0] and got["a alone"]["test_accuracy"] == 0.8
    assert got["b alone"]["weights"] == [0.0, 1.0] and got["b alone"]["test_accuracy"] == pytest.approx(0.2)
    for rule in ("auto: validation log loss (textxfer)", "validation accuracy (ties: log loss)"):
        assert got[rule]["weights"] == [0.3, 0.7], rule
        assert got[rule]["validation_accuracy"] == pytest.approx(0.7)
        assert got[rule]["validation_log_loss"] == pytest.approx(-(0.3 * math.log(0.3) + 0.7 * math.log(0.7)), abs=1e-9)
        assert got[rule]["test_accuracy"] == pytest.approx(0.2)
    assert got["equal weights"]["validation_log_loss"] == pytest.approx(math.log(2), abs=1e-9)
    capsys.readouterr()
