"""Model folders written by an earlier version (before the package was regrouped, issue 24) still load and
predict exactly as that version did: the folders and its probabilities are committed under
tests/data/legacy_models/ (made by make_legacy_models.py through the CLI)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

LEGACY = Path(__file__).parent / "data" / "legacy_models"
EXPECTED = json.loads((LEGACY / "expected.json").read_text(encoding="utf-8"))


@pytest.mark.parametrize("kind", ["baseline", "finetune", "ensemble", "onnx"])
def test_a_folder_written_before_the_regrouping_predicts_as_it_did(kind, tmp_path):
    if kind == "onnx":
        pytest.importorskip("onnxruntime")
    from textxfer import classifier

    folder = shutil.copytree(LEGACY / kind, tmp_path / kind)  # a copy: loading must not need to write
    model = classifier.load(folder, device="cpu")
    assert model.kind == kind
    probabilities = model.predict_proba(EXPECTED["texts"])
    expected = np.asarray(EXPECTED["probabilities"][kind])
    np.testing.assert_allclose(probabilities, expected, rtol=0, atol=1e-5)
    # Not a constant model: the committed answers tell the texts apart, so an all-equal load would fail above.
    assert expected[:, 0].std() > 0.01
    predictions = classifier.predict(EXPECTED["texts"], model=model)
    assert [p.label for p in predictions] == [model.labels.names[i] for i in expected.argmax(axis=1)]
