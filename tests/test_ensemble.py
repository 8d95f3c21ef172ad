"""The ``ensemble`` model kind: weights chosen on validation only, a safe round trip, refused mixtures."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from textxfer import classifier
from textxfer.data.dataset import DataOptions, load_data
from textxfer.ensemble.weights import choose, mix, parse_weights, simplex_grid
from textxfer.errors import TextxferError
from textxfer.data.labels import LabelSet
from textxfer.core.contract import ClassifierBase
from textxfer.ensemble.pipeline import EnsembleClassifier, EnsembleConfig


class Fixed(ClassifierBase):
    """A stand-in member: a fixed probability row per text, and a record of every text it was asked about."""

    kind = "baseline"  # any registered kind: never written
    fitted_attribute = "rows_"

    def __init__(self, rows: dict[str, list[float]], names=("neg", "pos")):
        self.rows_, self.labels, self.seen = rows, LabelSet(tuple(names)), []

    def fit(self, train, validation=None, labels=None, progress=False):
        return self

    def predict_proba(self, texts):
        self.seen.extend(texts)
        return np.array([self.rows_[t] for t in texts], dtype=float).reshape(len(texts), len(self.labels))

    def write(self, folder, data_info=None):
        raise AssertionError("not written")

    @classmethod
    def from_manifest(cls, folder, manifest, labels, device="auto", precision="auto"):
        raise AssertionError("not loaded")


class Split:
    def __init__(self, texts, labels):
        self.texts, self.labels = list(texts), list(labels)

    def __len__(self):
        return len(self.texts)


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


def test_auto_weights_follow_the_better_member_on_validation_and_never_see_test():
    validation = Split([f"v{i}" for i in range(40)], ["pos" if i % 2 else "neg" for i in range(40)])
    truth = {t: ([0.1, 0.9] if label == "pos" else [0.9, 0.1]) for t, label in zip(validation.texts, validation.labels)}
    wrong_half = {t: (row if i % 4 < 2 else row[::-1]) for i, (t, row) in enumerate(truth.items())}
    good, noisy = Fixed(truth), Fixed(wrong_half)
    model = EnsembleClassifier([noisy, good]).fit(Split([], []), validation)
    assert model.weights_[1] > model.weights_[0]
    record = model.selection_
    assert record["method"] == "auto" and record["validation"]["n"] == 40
    assert record["validation"]["chosen"]["log_loss"] <= record["validation"]["equal_weights"]["log_loss"]
    assert record["validation"]["members"][1]["accuracy"] == 1.0
    assert set(good.seen) == set(noisy.seen) == set(validation.texts)  # fit looked at validation only
    good.rows_["test text"] = noisy.rows_["test text"] = [0.5, 0.5]
    model.predict_proba(["test text"])
    assert good.seen[-1] == "test text"  # predict runs the members; fit never did on this text


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


def test_bench_ensemble_scores_each_rule_from_the_members_predictions(ensemble_run, trained_models, tmp_path, capsys):
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("bench_ensemble", Path(__file__).parents[1] / "scripts" / "bench_ensemble.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "bench.json"
    runs = [str(trained_models["baseline"]), str(trained_models["finetune"])]
    assert bench.main(["--runs", *runs, "--output", str(out)]) == 0
    rows = {r["rule"]: r for r in json.loads(out.read_text())["rows"]}
    for run in runs:  # a member alone scores what its own run recorded
        assert rows[f"{run} alone"]["test_accuracy"] == json.loads((Path(run) / "metrics.json").read_text())["test"]["accuracy"]
    auto = rows["auto: validation log loss (textxfer)"]
    assert auto["weights"] == [round(w, 4) for w in json.loads((ensemble_run / "textxfer.json").read_text())["config"]["chosen_weights"]]
    assert auto["test_accuracy"] == json.loads((ensemble_run / "metrics.json").read_text())["test"]["accuracy"]
    assert auto["validation_log_loss"] <= min(r["validation_log_loss"] for r in rows.values()) + 1e-12
    assert "| rule (weights chosen on validation) |" in capsys.readouterr().out
