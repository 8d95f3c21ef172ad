"""The shared ``Classifier`` contract, run over both pipelines."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from textxfer import classifier
from textxfer.data.dataset import DataOptions, load_data
from textxfer.errors import TextxferError
from textxfer.core.contract import ClassifierBase
from textxfer.baseline.pipeline import BaselineClassifier
from textxfer.transformer.pipeline import FinetuneClassifier


@pytest.fixture(params=["baseline", "finetune"])
def pipeline(request, fast_config, tiny_config):
    """``(class, config)`` of each pipeline with fixture-sized settings."""
    if request.param == "baseline":
        return BaselineClassifier, fast_config
    return FinetuneClassifier, tiny_config


def test_fit_predict_save_load_round_trip(tmp_path, reviews_csv, pipeline):
    cls, config = pipeline
    data = load_data(DataOptions(data=str(reviews_csv)))
    with pytest.raises(TextxferError, match="not trained"):
        cls(config).predict_proba(["x"])
    model = cls(config).fit(data.train, data.validation, labels=data.labels)
    texts = data.test.texts + ["", "完全陌生的内容 🙂" * 30]
    probabilities = model.predict_proba(texts)
    assert probabilities.shape == (len(texts), 2)
    assert np.isfinite(probabilities).all() and np.allclose(probabilities.sum(axis=1), 1)
    predicted = model.predict(data.test.texts)
    assert predicted == [model.labels.names[i] for i in probabilities[: len(data.test)].argmax(axis=1)]
    assert np.mean([p == t for p, t in zip(predicted, data.test.labels)]) >= 0.9
    assert model.predict_proba([]).shape == (0, 2)
    model.save(tmp_path / "model")
    loaded = classifier.load(tmp_path / "model")
    assert type(loaded) is cls and loaded.labels == model.labels
    assert np.array_equal(loaded.predict_proba(texts), probabilities)
    single = classifier.predict(data.test.texts[0], model=loaded)
    assert single.label == predicted[0] and abs(sum(single.probabilities.values()) - 1) < 1e-9


# -- one contract test over every model kind (textxfer.classifier.KINDS) ------------------------------------
TEXTS = ["这家酒店很干净，服务热情", "太差了，房间又脏又吵", "", "一般般", "完全陌生的内容 🙂" * 40, "很好", "很差很差"]


@pytest.fixture(scope="module")
def models_by_kind(trained_models, tmp_path_factory):
    """A trained (or exported) model folder of every kind."""
    folders = dict(trained_models)
    if importlib.util.find_spec("onnxruntime") and importlib.util.find_spec("onnxscript"):
        from textxfer.transformer.export import export_onnx

        folders["onnx"] = export_onnx(trained_models["finetune"], tmp_path_factory.mktemp("onnx") / "model")
    from textxfer.ensemble.pipeline import EnsembleClassifier, EnsembleConfig

    from textxfer.data.dataset import DataOptions
    from textxfer.evaluation.runner import run
    from textxfer.static.pipeline import StaticClassifier, StaticConfig

    folders["static"] = tmp_path_factory.mktemp("static") / "model"
    run(StaticClassifier(StaticConfig(model=str(trained_models["finetune"]))),
        DataOptions(split=str(trained_models["finetune"] / "split.json")), folders["static"], progress=False,
        log=lambda *_: None)
    members = [classifier.load(trained_models["baseline"]), classifier.load(trained_models["finetune"])]
    folders["ensemble"] = tmp_path_factory.mktemp("ensemble") / "model"
    EnsembleClassifier(members, EnsembleConfig("0.4,0.6")).fit(None, None).save(folders["ensemble"])
    return folders


def test_every_subclass_is_a_registered_kind():
    assert all(kind == cls.kind for kind, cls in classifier.KINDS.items())
    assert {cls.kind for cls in ClassifierBase.__subclasses__()} == set(classifier.KINDS)
    from textxfer.core import manifest

    assert set(manifest.KINDS) == set(classifier.KINDS)  # the manifest accepts exactly the kinds that load


@pytest.mark.parametrize("kind", sorted(classifier.KINDS))
def test_every_kind_keeps_the_contract(kind, models_by_kind, tmp_path):
    if kind not in models_by_kind:
        pytest.skip(f"no {kind} model here (its optional packages are not installed)")
    cls = classifier.kind_class(kind)
    with pytest.raises(TextxferError, match="not trained yet"):  # unfitted use is a clear error
        cls.__new__(cls).predict_proba(["x"])
    model = classifier.load(models_by_kind[kind])
    assert isinstance(model, ClassifierBase) and type(model) is cls and model.kind == kind
    n = len(model.labels)
    probabilities = model.predict_proba(TEXTS)
    assert probabilities.shape == (len(TEXTS), n) and np.isfinite(probabilities).all()
    assert np.allclose(probabilities.sum(axis=1), 1) and (probabilities >= 0).all()
    assert model.predict(TEXTS) == [model.labels.value(model.labels.names[i]) for i in probabilities.argmax(axis=1)]
    assert model.predict_proba([]).shape == (0, n)
    # predict_proba is raw_proba at the saved temperature, which never moves the argmax (an exported graph divides
    # its logits by the source model's temperature itself, so nothing is left to apply).
    raw = model.raw_proba(TEXTS)
    assert np.allclose(probabilities, model.calibrated(raw), atol=1e-12)
    assert np.array_equal(probabilities.argmax(axis=1), raw.argmax(axis=1))
    if kind == "onnx":  # (tests/test_export.py exports a model whose temperature is not 1)
        assert model.temperature == 1.0
    elif kind in ("baseline", "finetune", "static"):  # trained with a validation split: a temperature fitted on it, saved
        assert model.calibration["method"] == "temperature" and model.temperature == model.calibration["temperature"]
    # A text's row depends neither on the order of the texts nor on the others in the batch.
    assert np.allclose(model.predict_proba(TEXTS[::-1])[::-1], probabilities, atol=1e-6)
    alone = np.vstack([model.predict_proba([text]) for text in TEXTS])
    assert np.allclose(alone, probabilities, atol=1e-5)
    # write → load gives the same probabilities, through the kind's own load and the generic one.
    model.save(tmp_path / "copy")
    assert np.allclose(classifier.load(tmp_path / "copy").predict_proba(TEXTS), probabilities, atol=1e-12)
    assert classifier.load(tmp_path / "copy").labels == model.labels
    if kind == "ensemble":  # its members may be of any kind: only the registry (above every kind) loads them
        with pytest.raises(TextxferError, match="load it with textxfer.classifier.load"):
            cls.load(tmp_path / "copy")
    else:
        assert np.allclose(cls.load(tmp_path / "copy").predict_proba(TEXTS), probabilities, atol=1e-12)
    # The declared parts every caller uses, without probing.
    assert isinstance(model.device, str) and model.precision in ("fp32", "bf16", "fp16")
    assert isinstance(model.fit_stats, dict) and isinstance(model.input_report(TEXTS), dict)
    if kind == "onnx":
        with pytest.raises(TextxferError, match="cannot be trained"):
            model.fit(None)
    with pytest.raises(TextxferError, match=f"holds a {kind!r} model"):  # another kind's load refuses it
        classifier.kind_class("baseline" if kind != "baseline" else "finetune").load(models_by_kind[kind])
