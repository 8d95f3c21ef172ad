"""--text-prefix: 'query: ' for E5 encoders, kept with the saved model and used by every prediction path."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import make_rows
from textxfer.transformer import text_prefix
from textxfer.data.dataset import DataOptions, load_data
from textxfer.errors import TextxferError
from textxfer.transformer.pipeline import FinetuneClassifier, FinetuneConfig


@pytest.mark.parametrize("name,expected", [
    ("multilingual-e5-small", True), ("intfloat/multilingual-e5-small", True), ("intfloat/e5-base-v2", True),
    ("/home/u/.cache/textxfer/multilingual-e5-small-0123abcd/", True),
    ("intfloat/multilingual-e5-large-instruct", False), ("bert-base-chinese", False), ("hfl/xe5net", False),
    ("all-minilm-l6-v2", False), ("", False),
])
def test_e5_encoders_are_recognised_by_name(name, expected):
    assert text_prefix.is_e5(name) is expected


def test_auto_none_and_explicit_prefixes():
    assert text_prefix.choose("auto", "multilingual-e5-small")[0] == "query: "
    assert "E5 encoder" in text_prefix.choose("auto", "multilingual-e5-small")[1]
    assert text_prefix.choose("auto", "bert-base-chinese") == ("", None)
    assert text_prefix.choose("none", "multilingual-e5-small") == ("", None)
    assert text_prefix.choose("评论：", "bert-base-chinese") == ("评论：", None)
    assert text_prefix.apply("q ", ["a", "b"]) == ["q a", "q b"] and text_prefix.apply("", ["a"]) == ["a"]
    with pytest.raises(TextxferError, match="text_prefix must be a string"):
        FinetuneConfig(text_prefix=3)
    assert FinetuneConfig(text_prefix=None).text_prefix == "none"  # JSON null / a study's `text_prefix=none`


@pytest.fixture(scope="module")
def prefixed(tmp_path_factory, tiny_bert):
    from conftest import write_csv

    data = load_data(DataOptions(data=str(write_csv(tmp_path_factory.mktemp("px") / "r.csv", make_rows()))))
    config = FinetuneConfig(model=str(tiny_bert), strategy="full", epochs=5, learning_rate=3e-3, batch_size=8,
                            eval_batch_size=32, logging_steps=1000, early_stopping=0, warmup=0.0, min_steps=0,
                            text_prefix="好坏", checkpoint_dir=str(tmp_path_factory.mktemp("ck")))
    return FinetuneClassifier(config).fit(data.train, data.validation, labels=data.labels), data


def test_the_prefix_reaches_the_tokens_and_survives_saving_and_export(prefixed, tmp_path):
    from textxfer import classifier

    model, data = prefixed
    assert model.fit_stats_["recipe"]["text_prefix"] == "好坏"
    ids = model.encode(["服务"])["input_ids"][0]
    expected = model.tokenizer_("好坏服务")["input_ids"]
    assert ids == expected and ids != model.tokenizer_("服务")["input_ids"]
    model.write(tmp_path / "run")
    assert json.loads((tmp_path / "run" / "textxfer.json").read_text())["config"]["resolved_text_prefix"] == "好坏"
    again = classifier.load(tmp_path / "run")
    assert again.encode(["服务"])["input_ids"][0] == expected
    np.testing.assert_allclose(again.predict_proba(data.test.texts), model.predict_proba(data.test.texts), atol=1e-6)
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from textxfer.transformer.export import export_onnx

    onnx = classifier.load(export_onnx(tmp_path / "run", tmp_path / "onnx"))
    assert onnx.encode(["服务"])["input_ids"][0] == expected
    assert np.abs(onnx.predict_proba(data.test.texts) - model.predict_proba(data.test.texts)).max() <= 1e-5
