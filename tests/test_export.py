"""``export_onnx`` and ``OnnxClassifier``: fp32 and int8 exports of the tiny fine-tuned BERT."""

from __future__ import annotations

import importlib.util
import json
import shutil

import numpy as np
import pytest

from conftest import make_rows
from textxfer import classifier
from textxfer.errors import TextxferError

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

from textxfer.transformer.export import export_onnx  # noqa: E402
from textxfer.transformer.pipeline import FinetuneClassifier  # noqa: E402
from textxfer.transformer.onnx_pipeline import OnnxClassifier  # noqa: E402

LONG_TEXT = "房间很干净，服务热情。" * 60 + "但是早餐很差，非常失望。" * 20


@pytest.fixture(scope="module")
def texts() -> list[str]:
    return [text for text, _ in make_rows(60, seed=7)] + ["", LONG_TEXT, "x"]


@pytest.fixture(scope="module")
def torch_model(trained_models):
    return FinetuneClassifier.load(trained_models["finetune"])


@pytest.fixture(scope="module")
def exported(trained_models, tmp_path_factory):
    return export_onnx(trained_models["finetune"], tmp_path_factory.mktemp("export") / "fp32")


@pytest.fixture(scope="module")
def exported_int8(trained_models, tmp_path_factory):
    return export_onnx(trained_models["finetune"], tmp_path_factory.mktemp("export") / "int8", quantize="int8")


def test_fp32_export_matches_the_torch_model(exported, torch_model, texts, trained_models):
    model = classifier.load(exported)
    assert type(model) is OnnxClassifier and model.labels == torch_model.labels
    manifest = json.loads((exported / "textxfer.json").read_text(encoding="utf-8"))
    assert manifest["kind"] == "onnx" and manifest["config"]["quantize"] is None
    assert manifest["config"]["runtime"] == "onnxruntime" and manifest["config"]["opset"] >= 18
    assert {"model.onnx", "config.json", "split.json", "metrics.json"} <= {p.name for p in exported.iterdir()}
    assert not list(exported.glob("*.data"))  # self-contained graph
    probabilities = model.predict_proba(texts)
    assert np.abs(probabilities - torch_model.predict_proba(texts)).max() <= 1e-5
    assert np.allclose(probabilities.sum(axis=1), 1, atol=1e-12)
    assert model.predict(texts) == torch_model.predict(texts)
    assert np.array_equal(model.predict_proba(texts[0]), probabilities[:1])
    assert model.predict_proba([]).shape == (0, len(model.labels))


def test_the_graph_carries_the_models_temperature(trained_models, torch_model, texts, tmp_path):
    # A copy of the fine-tuned run whose manifest says T = 2.5 (the fixture's own validation split is separated,
    # so its fitted temperature is 1): the exported graph must divide its logits by 2.5 itself, so any runtime
    # reading model.onnx gets the calibrated probabilities, and textxfer applies nothing more.
    source = tmp_path / "calibrated"
    shutil.copytree(trained_models["finetune"], source)
    manifest = json.loads((source / "textxfer.json").read_text(encoding="utf-8"))
    manifest["calibration"] = {"method": "temperature", "temperature": 2.5, "fitted_on": "validation"}
    (source / "textxfer.json").write_text(json.dumps(manifest), encoding="utf-8")
    calibrated = classifier.load(source)
    assert calibrated.temperature == 2.5
    model = classifier.load(export_onnx(source, tmp_path / "onnx"))
    assert model.calibration == {**manifest["calibration"], "in_graph": True} and model.temperature == 1.0
    probabilities = model.predict_proba(texts)
    assert np.abs(probabilities - calibrated.predict_proba(texts)).max() <= 1e-5
    assert np.abs(probabilities - torch_model.predict_proba(texts)).max() > 1e-3  # softer than the uncalibrated model
    import onnxruntime  # the graph alone, outside textxfer: its logits are the model's divided by 2.5

    session = onnxruntime.InferenceSession(str(tmp_path / "onnx" / "model.onnx"), providers=["CPUExecutionProvider"])
    feed = next(model.batches(texts[:1]))[1]
    logits = session.run(["logits"], feed)[0]
    reference = calibrated.model_(**{k: __import__("torch").as_tensor(v) for k, v in feed.items()}).logits
    assert np.allclose(logits, reference.detach().numpy() / 2.5, atol=1e-4)


def test_int8_export_mostly_agrees(exported_int8, torch_model, texts):
    model = classifier.load(exported_int8)
    assert type(model) is OnnxClassifier
    assert json.loads((exported_int8 / "textxfer.json").read_text(encoding="utf-8"))["config"]["quantize"] == "int8"
    probabilities, reference = model.predict_proba(texts), torch_model.predict_proba(texts)
    agreement = float(np.mean(probabilities.argmax(axis=1) == reference.argmax(axis=1)))
    print(f"int8: argmax agreement {agreement:.3f}, max |prob diff| {np.abs(probabilities - reference).max():.2e}")
    assert agreement >= 0.9 and np.allclose(probabilities.sum(axis=1), 1)


def test_save_round_trip_and_no_training(exported, texts, tmp_path):
    model = classifier.load(exported)
    model.save(tmp_path / "copy")
    again = classifier.load(tmp_path / "copy")
    assert type(again) is OnnxClassifier and again.labels == model.labels
    assert np.array_equal(again.predict_proba(texts), model.predict_proba(texts))
    assert json.loads((tmp_path / "copy" / "textxfer.json").read_text(encoding="utf-8"))["data"]
    with pytest.raises(TextxferError, match="cannot be trained"):
        model.fit(None)


def test_baseline_onnx_and_bad_options_are_refused(trained_models, exported, tmp_path):
    with pytest.raises(TextxferError, match="baseline"):
        export_onnx(trained_models["baseline"], tmp_path / "out")
    with pytest.raises(TextxferError, match="already an ONNX export"):
        export_onnx(exported, tmp_path / "out")
    with pytest.raises(TextxferError, match="unknown --quantize"):
        export_onnx(trained_models["finetune"], tmp_path / "out", quantize="int4")
    assert not (tmp_path / "out").exists()


def test_missing_packages_is_one_clear_line(trained_models, tmp_path, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnxscript" else real(name, *a))
    with pytest.raises(TextxferError, match=r"pip install 'textxfer\[onnx\]'"):
        export_onnx(trained_models["finetune"], tmp_path / "out")


def test_failed_verification_keeps_the_earlier_folder(trained_models, exported, tmp_path, monkeypatch):
    import textxfer.transformer.export as export

    target = tmp_path / "out"
    shutil.copytree(exported, target)
    before = {p.name: p.read_bytes() for p in target.iterdir() if p.is_file()}
    # skip the slow graph capture: reuse the graph exported earlier, then make verification fail
    monkeypatch.setattr(export, "_export_graph", lambda source, path, *_: shutil.copy2(exported / "model.onnx", path) and False)
    monkeypatch.setattr(export, "max_probability_difference", lambda *_: 0.5)
    with pytest.raises(TextxferError, match="disagrees with the PyTorch model"):
        export_onnx(trained_models["finetune"], target)
    assert {p.name: p.read_bytes() for p in target.iterdir() if p.is_file()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no staging folder left behind
