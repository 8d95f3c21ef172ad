"""Calibration applied by the models: every kind fits one temperature on the validation split after training, saves
it in the manifest, and ``predict_proba`` applies it; reports carry the figures before and after."""

from __future__ import annotations

import json

import numpy as np
import pytest

from test_ensemble import Fixed as Member, Split
from textxfer import classifier
from textxfer.baseline.pipeline import BaselineClassifier
from textxfer.core.calibration import fit_temperature, log_loss, scale
from textxfer.core.manifest import MANIFEST_NAME
from textxfer.data.dataset import DataOptions, load_data
from textxfer.errors import TextxferError
from textxfer.evaluation.runner import run_prepared


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


class Fixed(Member):
    """:class:`test_ensemble.Fixed` (raw rows fixed per text, every text asked about recorded) over labels a, b, c,
    whose ``fit`` runs only what the contract does after training: :meth:`ClassifierBase.end_fit`."""

    def __init__(self, rows: dict[str, np.ndarray]):
        super().__init__(rows, names=("a", "b", "c"))

    def fit(self, train, validation=None, labels=None, progress=False, calibration="temperature"):
        self.labels = self.begin_fit(train, labels)
        self.end_fit(validation, calibration=calibration)
        return self


def _split(prefix: str, temperature: float, n: int, seed: int) -> tuple[Split, dict]:
    """Texts whose raw rows are softmax(logits) while their labels are drawn from softmax(logits / temperature)."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 3, size=(n, 3))
    truth = _softmax(logits / temperature)
    names = ["a", "b", "c"]
    labels = [names[rng.choice(3, p=row)] for row in truth]
    texts = [f"{prefix}{i}" for i in range(n)]
    return Split(texts, labels), dict(zip(texts, _softmax(logits)))


def test_end_fit_finds_the_validation_temperature_and_never_looks_at_train_or_test():
    # Training rows drawn at T = 0.4 (a fit on them would sharpen), validation rows at T = 2.5 (soften): the
    # temperature must be validation's. A planted bug fitting on train, or applying 1/T, fails here.
    train, rows = _split("t", 0.4, 3000, 0)
    validation, more = _split("v", 2.5, 3000, 1)
    model = Fixed(rows | more)
    model.fit(train, validation)
    assert model.temperature == pytest.approx(2.5, rel=0.1)
    assert set(model.seen) == set(validation.texts)  # end_fit read validation only
    before, after = model.calibration["validation"]["before"], model.calibration["validation"]["after"]
    assert after["log_loss"] < before["log_loss"] - 0.05 and after["ece"] < before["ece"] / 2
    y = model.labels.targets(validation.labels)
    calibrated = model.predict_proba(validation.texts)
    assert log_loss(calibrated, y) == pytest.approx(after["log_loss"], abs=1e-6)
    assert np.allclose(calibrated, scale(model.raw_proba(validation.texts), model.temperature))
    assert np.array_equal(calibrated.argmax(axis=1), model.raw_proba(validation.texts).argmax(axis=1))


def test_calibration_none_and_no_validation_keep_the_models_own_probabilities_and_say_why():
    train, rows = _split("t", 2.0, 200, 0)
    validation, more = _split("v", 2.0, 200, 1)
    off = Fixed(rows | more).fit(train, validation, calibration="none")
    assert off.temperature == 1.0 and off.calibration == {"method": "none", "why": "--calibration none"}
    assert off.seen == []  # nothing predicted: no temperature to fit, no thresholds to tune
    assert np.array_equal(off.predict_proba(validation.texts), off.raw_proba(validation.texts))
    alone = Fixed(rows).fit(train, None)
    assert alone.temperature == 1.0 and alone.calibration["why"] == "no validation split to fit a temperature on"


def test_a_multi_label_models_thresholds_are_tuned_on_its_calibrated_probabilities(multilabel_data, fast_config):
    from textxfer.core.thresholds import tune_thresholds

    model = BaselineClassifier(fast_config).fit(multilabel_data.train, multilabel_data.validation)
    assert model.calibration["method"] == "temperature" and model.temperature != 1.0
    validation = multilabel_data.validation
    raw = model.raw_proba(validation.inputs)
    assert model.temperature == pytest.approx(fit_temperature(raw, model.labels.targets(validation.labels)), abs=1e-6)
    calibrated = scale(raw, model.temperature, multi_label=True)
    assert np.allclose(model.predict_proba(validation.inputs), calibrated)
    expected, _ = tune_thresholds(model.labels.indicators(validation.labels), calibrated)
    assert np.allclose(model.thresholds, expected)


@pytest.fixture(scope="module")
def baseline_run(tmp_path_factory):
    """A baseline run on the hard fixture (flipped labels: no model separates its validation split)."""
    from conftest import make_hard_rows, write_csv
    from textxfer.baseline.pipeline import BaselineConfig

    folder = tmp_path_factory.mktemp("calibrated")
    data = load_data(DataOptions(data=str(write_csv(folder / "hard.csv", make_hard_rows(400, seed=3)))))
    folder = folder / "baseline"
    lines: list[str] = []
    config = BaselineConfig(vector_size=16, epochs=5, min_count=1, n_estimators=20, n_jobs=1)
    result = run_prepared(BaselineClassifier(config), data, folder, progress=False, log=lines.append)
    return folder, result, data, lines


def test_a_run_reports_calibration_before_and_after_on_validation_and_test(baseline_run):
    folder, result, data, lines = baseline_run
    report = json.loads((folder / "report.json").read_text(encoding="utf-8"))
    manifest = json.loads((folder / MANIFEST_NAME).read_text(encoding="utf-8"))
    record = report["calibration"]
    assert record["method"] == "temperature" and record["temperature"] == manifest["calibration"]["temperature"]
    assert set(record["splits"]) == {"validation", "test"}
    model = classifier.load(folder)
    for name in ("validation", "test"):
        split = getattr(data, name)
        y = data.labels.targets(split.labels)
        raw, calibrated = model.raw_proba(split.inputs), model.predict_proba(split.inputs)
        assert record["splits"][name]["before"]["log_loss"] == pytest.approx(log_loss(raw, y), abs=1e-6)
        assert record["splits"][name]["after"]["log_loss"] == pytest.approx(log_loss(calibrated, y), abs=1e-6)
        assert np.allclose(calibrated, result.probabilities[name])
    # validation is where the temperature was fitted: it cannot be worse there, and the manifest says the same
    assert record["splits"]["validation"]["after"]["log_loss"] <= record["splits"]["validation"]["before"]["log_loss"]
    assert manifest["calibration"]["validation"] == record["splits"]["validation"]
    line = next(line for line in lines if line.startswith("calibration: temperature"))
    assert f"test ECE {record['splits']['test']['before']['ece']:.4f} → {record['splits']['test']['after']['ece']:.4f}" in line


def test_a_separated_validation_split_keeps_temperature_one_and_says_why(sample_csv, fast_config):
    from textxfer.core.calibration import SEPARATED

    data = load_data(DataOptions(data=str(sample_csv)))  # the plain fixture: every model gets validation right
    model = BaselineClassifier(fast_config).fit(data.train, data.validation)
    raw = model.raw_proba(data.validation.inputs)
    assert (raw.argmax(axis=1) == model.labels.targets(data.validation.labels)).all()
    assert model.temperature == 1.0 and model.calibration["why"] == SEPARATED
    # sharpening would lower the validation log loss without end: that is what is refused
    y = model.labels.targets(data.validation.labels)
    assert log_loss(scale(raw, 0.05), y) <= log_loss(raw, y)


def test_calibration_none_is_said_in_the_log_and_report(sample_csv, tmp_path):
    from textxfer.baseline.pipeline import BaselineConfig

    data = load_data(DataOptions(data=str(sample_csv)))
    lines: list[str] = []
    config = BaselineConfig(vector_size=16, epochs=5, min_count=1, n_estimators=20, n_jobs=1, calibration="none")
    run_prepared(BaselineClassifier(config), data, tmp_path / "run", progress=False, log=lines.append)
    report = json.loads((tmp_path / "run" / "report.json").read_text(encoding="utf-8"))
    assert report["calibration"]["method"] == "none" and report["calibration"]["temperature"] == 1.0
    assert report["calibration"]["splits"]["test"]["before"] == report["calibration"]["splits"]["test"]["after"]
    assert "calibration: none (--calibration none); the probabilities are the model's own" in lines
    with pytest.raises(TextxferError, match="unknown calibration 'platt'; choose one of"):
        BaselineConfig(calibration="platt")


@pytest.mark.parametrize("value", [0, -1.5, "2", None, float("inf")])
def test_a_manifest_with_a_bad_temperature_is_refused_in_one_line(baseline_run, tmp_path, value):
    import shutil

    folder = tmp_path / "edited"
    shutil.copytree(baseline_run[0], folder)
    manifest = json.loads((folder / MANIFEST_NAME).read_text(encoding="utf-8"))
    manifest["calibration"]["temperature"] = value
    (folder / MANIFEST_NAME).write_text(json.dumps(manifest), encoding="utf-8")
    with pytest.raises(TextxferError, match="calibration.temperature must be a positive number") as caught:
        classifier.load(folder)
    assert "\n" not in str(caught.value)


def test_a_model_saved_before_calibration_loads_at_temperature_one(baseline_run, tmp_path):
    import shutil

    folder = tmp_path / "old"
    shutil.copytree(baseline_run[0], folder)
    manifest = json.loads((folder / MANIFEST_NAME).read_text(encoding="utf-8"))
    del manifest["calibration"]
    (folder / MANIFEST_NAME).write_text(json.dumps(manifest), encoding="utf-8")
    old = classifier.load(folder)
    assert old.temperature == 1.0 and old.calibration == {}
    texts = baseline_run[2].test.texts
    assert np.array_equal(old.predict_proba(texts), classifier.load(baseline_run[0]).raw_proba(texts))



def test_an_ensemble_weighs_its_calibrated_members_then_fits_its_own_temperature():
    from textxfer.ensemble.pipeline import EnsembleClassifier
    from textxfer.ensemble.weights import mix

    train, rows = _split("t", 1.0, 50, 0)
    validation, drawn = _split("v", 1.0, 2000, 1)  # labels drawn from these very rows
    logs = {t: np.log(p) for t, p in drawn.items()}
    over = {t: _softmax(2.0 * z[None])[0] for t, z in logs.items()}  # member 1 over-confident (T ≈ 2 fixes it)
    under = {t: _softmax(0.4 * z[None])[0] for t, z in logs.items()}  # member 2 under-confident (T ≈ 0.4)
    members = [Fixed(rows | over).fit(train, validation), Fixed(rows | under).fit(train, validation)]
    assert members[0].temperature == pytest.approx(2.0, rel=0.15) and members[1].temperature == pytest.approx(0.4, rel=0.15)
    ensemble = EnsembleClassifier(members).fit(train, validation)
    y = ensemble.labels.targets(validation.labels)
    calibrated = [m.predict_proba(validation.texts) for m in members]
    # the weights were chosen on the calibrated members (their log losses are the calibrated ones)...
    record = ensemble.selection_["validation"]["members"]
    assert [m["log_loss"] for m in record] == pytest.approx([log_loss(p, y) for p in calibrated], abs=1e-6)
    # ...and the ensemble's temperature is fitted on the mixture of those, with the chosen weights
    mixed = mix(calibrated, ensemble.weights_)
    assert ensemble.temperature == pytest.approx(fit_temperature(mixed, y), abs=1e-6)
    assert np.allclose(ensemble.predict_proba(validation.texts), scale(mixed, ensemble.temperature))


def test_the_forest_gives_every_class_half_a_vote_so_no_probability_is_zero(baseline_run):
    model = classifier.load(baseline_run[0])
    texts = baseline_run[2].test.texts
    own = model._forest_proba(model.features(texts)[0])
    assert (own == 0).any()  # the trees alone leave some class at exactly 0
    n, k, a = len(model.forest_.estimators_), len(model.labels), model.config.pseudo_votes
    raw = model.raw_proba(texts)
    assert a == 0.5 and raw == pytest.approx((n * own + a) / (n + k * a))
    assert raw.min() >= a / (n + k * a) - 1e-12 and np.allclose(raw.sum(axis=1), 1)
    assert np.array_equal(raw.argmax(axis=1), own.argmax(axis=1))
