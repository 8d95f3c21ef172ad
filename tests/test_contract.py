"""The shared ``Classifier`` contract, run over both pipelines."""

from __future__ import annotations

import numpy as np
import pytest

from textxfer import classifier
from textxfer.data import DataOptions, load_data
from textxfer.errors import TextxferError
from textxfer.pipelines.baseline import BaselineClassifier
from textxfer.pipelines.finetune import FinetuneClassifier


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
