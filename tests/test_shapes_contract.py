"""The ``Classifier`` contract for the new task shapes, over every model kind: multi-label texts, text pairs, and
multi-label text pairs. Each kind trains (or is exported / combined) on the shape, predicts label lists or reads
pairs, keeps its shape and thresholds through write → load, and refuses inputs of another shape in one line."""

from __future__ import annotations

import importlib.util
import random

import numpy as np
import pytest

from conftest import NEUTRAL, make_hard_rows, make_multilabel_rows, write_csv
from textxfer import classifier
from textxfer.baseline.pipeline import BaselineClassifier, BaselineConfig
from textxfer.data.dataset import DataOptions, load_data
from textxfer.errors import TextxferError
from textxfer.transformer.pipeline import FinetuneClassifier, FinetuneConfig

pytestmark = pytest.mark.usefixtures("one_torch_thread")
SHAPES = ("multi-label texts", "single-label text pairs", "multi-label text pairs")
HAS_ONNX = bool(importlib.util.find_spec("onnxruntime") and importlib.util.find_spec("onnxscript"))


def _rows(shape: str) -> tuple[list, dict]:
    rng = random.Random(0)
    neutral = lambda: "，".join(rng.sample(NEUTRAL, 3)) + "。"  # noqa: E731
    if shape == "multi-label texts":
        return make_multilabel_rows(200), {"label_column": "tags", "label_separator": "|"}
    if shape == "single-label text pairs":
        return [(neutral(), text, label) for text, label in make_hard_rows(200)], {"text_pair_column": "second"}
    return ([(neutral(), text, tags) for text, tags in make_multilabel_rows(200)],
            {"text_pair_column": "second", "label_column": "tags", "label_separator": "|"})


@pytest.fixture(scope="module", params=SHAPES)
def shaped(request, tmp_path_factory, tiny_bert):
    """``(shape, data, {kind: model folder})`` for one shape: every kind trained, exported or combined on it."""
    rows, options = _rows(request.param)
    label = "tags" if request.param.startswith("multi") else "label"
    header = ("text", label) if len(rows[0]) == 2 else ("text", "second", label)
    folder = tmp_path_factory.mktemp("shape")
    data = load_data(DataOptions(data=str(write_csv(folder / "data.csv", rows, header=header)), validation_size=0.2,
                                 test_size=0.2, **options))
    baseline = BaselineClassifier(BaselineConfig(vector_size=16, epochs=5, min_count=1, n_estimators=20, n_jobs=1))
    finetune = FinetuneClassifier(FinetuneConfig(model=str(tiny_bert), strategy="full", epochs=3, learning_rate=3e-3,
                                                 batch_size=8, logging_steps=1000, early_stopping=0, warmup=0.0,
                                                 min_steps=0))
    folders = {}
    for name, model in (("baseline", baseline), ("finetune", finetune)):
        model.fit(data.train, data.validation)
        model.save(folder / name)
        folders[name] = folder / name
    if HAS_ONNX:
        from textxfer.transformer.export import export_onnx

        folders["onnx"] = export_onnx(folders["finetune"], folder / "onnx")
    from textxfer.ensemble.pipeline import EnsembleClassifier

    members = [classifier.load(folders["baseline"]), classifier.load(folders["finetune"])]
    EnsembleClassifier(members).fit(data.train, data.validation).save(folder / "ensemble")
    folders["ensemble"] = folder / "ensemble"
    return request.param, data, folders


@pytest.mark.parametrize("kind", sorted(classifier.KINDS))
def test_every_kind_keeps_the_contract_on_every_shape(kind, shaped, tmp_path):
    shape, data, folders = shaped
    if kind not in folders:
        pytest.skip(f"no {kind} model here (its optional packages are not installed)")
    model = classifier.load(folders[kind])
    assert model.kind == kind and model.shape.describe() == shape
    inputs = data.test.inputs
    n = len(model.labels)
    probabilities = model.predict_proba(inputs)
    assert probabilities.shape == (len(inputs), n) and np.isfinite(probabilities).all()
    assert ((probabilities >= 0) & (probabilities <= 1)).all()
    assert np.allclose(model.predict_proba(inputs[::-1])[::-1], probabilities, atol=1e-6)
    assert np.allclose(np.vstack([model.predict_proba([item]) for item in inputs[:5]]), probabilities[:5], atol=1e-5)
    predicted = model.predict(inputs)
    if model.labels.multi_label:
        assert model.thresholds.shape == (n,) and model.thresholds_from
        assert all(isinstance(row, list) for row in predicted)
        chosen = [[model.labels.names[j] for j in range(n) if p[j] >= model.thresholds[j]] for p in probabilities]
        assert [sorted(row) for row in predicted] == [sorted(row) for row in chosen]
    else:
        assert np.allclose(probabilities.sum(axis=1), 1)
        assert predicted == [model.labels.names[i] for i in probabilities.argmax(axis=1)]
    model.save(tmp_path / "copy")
    copy = classifier.load(tmp_path / "copy")
    assert copy.shape == model.shape and copy.labels == model.labels
    assert np.allclose(copy.predict_proba(inputs), probabilities, atol=1e-12)
    if model.labels.multi_label:
        assert copy.thresholds.tolist() == pytest.approx(model.thresholds.tolist(), abs=1e-6)
    other = ["一个文本"] if model.shape.pair else [("一个文本", "另一个")]
    with pytest.raises(TextxferError) as caught:
        model.predict(other)
    assert "\n" not in str(caught.value) and ("reads text pairs" in str(caught.value)
                                               or "reads single texts" in str(caught.value))
