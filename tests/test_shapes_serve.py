"""``textxfer serve`` and its page for a multi-label model of text pairs: pairs in, every label at or above its
threshold out, a second box on the page, and one-line 422s for inputs of the other shape."""

from __future__ import annotations

import random

import numpy as np
import pytest

from conftest import NEUTRAL, make_multilabel_rows, write_csv
from textxfer.baseline.pipeline import BaselineClassifier, BaselineConfig
from textxfer.classifier import load, predict
from textxfer.data.dataset import DataOptions, load_data


@pytest.fixture(scope="module")
def pair_multilabel_model(tmp_path_factory):
    """A baseline trained on pairs whose second text carries the labels (the multi-label fixture)."""
    rng = random.Random(0)
    rows = [("，".join(rng.sample(NEUTRAL, 3)) + "。", text, tags) for text, tags in make_multilabel_rows(300)]
    folder = tmp_path_factory.mktemp("pml")
    path = write_csv(folder / "pairs.csv", rows, header=("post", "reply", "tags"))
    data = load_data(DataOptions(data=str(path), text_column="post", text_pair_column="reply", label_column="tags",
                                 label_separator="|", validation_size=0.2, test_size=0.2))
    config = BaselineConfig(vector_size=16, epochs=5, min_count=1, n_estimators=20, n_jobs=1)
    BaselineClassifier(config).fit(data.train, data.validation).save(folder / "model")
    return folder / "model", data


@pytest.fixture(scope="module")
def client(pair_multilabel_model):
    from fastapi.testclient import TestClient

    from textxfer.serving.server import ServeSettings, create_app

    with TestClient(create_app(ServeSettings(model=str(pair_multilabel_model[0]), max_text_chars=200))) as client:
        yield client


def test_serve_takes_pairs_and_returns_every_label_above_its_threshold(client, pair_multilabel_model):
    folder, data = pair_multilabel_model
    pairs = data.test.inputs[:10]
    response = client.post("/predict", json={"texts": [list(p) for p in pairs]})
    assert response.status_code == 200
    served = response.json()["predictions"]
    expected = predict(pairs, model=folder)
    assert [p["labels"] for p in served] == [e.labels for e in expected]
    assert "label" not in served[0] and "score" not in served[0]
    for shown, wanted in zip(served, expected):
        assert shown["probabilities"] == pytest.approx({str(k): v for k, v in wanted.probabilities.items()})
    thresholds = load(folder).thresholds
    for shown in served:  # every label at or above its threshold, and no other
        chosen = {name for (name, p), t in zip(shown["probabilities"].items(), thresholds) if p >= t}
        assert set(shown["labels"]) == chosen
    assert any(len(p["labels"]) > 1 for p in served)
    one = client.post("/predict", json={"text": list(pairs[0])}).json()["predictions"][0]
    assert one["labels"] == served[0]["labels"]
    info = client.get("/model").json()
    assert info["task"]["pair"] and info["task"]["multi_label"] and set(info["task"]["thresholds"]) == set(info["labels"])


@pytest.mark.parametrize("body, message", [
    ({"texts": ["only one text"]}, "texts[0]: this model reads text pairs"),
    ({"texts": [["a", "b", "c"]]}, "texts[0]: this model reads text pairs"),
    ({"text": "one"}, "texts[0]: this model reads text pairs"),
    ({"texts": [["a", "好" * 201]]}, "text 0 has 201 characters"),
])
def test_inputs_of_the_other_shape_are_one_line_errors(client, body, message):
    response = client.post("/predict", json=body)
    assert response.status_code in (413, 422) and message in response.json()["error"]
    assert "\n" not in response.json()["error"]


def test_a_single_text_model_refuses_pairs_in_one_line(trained_models):
    from fastapi.testclient import TestClient

    from textxfer.serving.server import ServeSettings, create_app

    with TestClient(create_app(ServeSettings(model=str(trained_models["baseline"])))) as client:
        response = client.post("/predict", json={"texts": [["a", "b"]]})
        assert response.status_code == 422
        assert "this model reads single texts (it was not trained on text pairs)" in response.json()["error"]
        assert client.post("/predict", json={"text": "很好"}).json()["predictions"][0]["label"] in ("positive", "negative")


def test_the_page_has_a_second_box_and_shows_the_label_list(pair_multilabel_model, tmp_path):
    from test_serve_browser import served_page

    folder, data = pair_multilabel_model
    with served_page(folder, tmp_path) as page:
        from playwright.sync_api import expect

        expect(page.locator("#pair")).to_be_visible()
        first, second = data.test.inputs[0]
        page.fill("#text", first)
        page.click("#predict")
        expect(page.locator("#error")).to_contain_text("both texts")
        page.fill("#second", second)
        with page.expect_response(lambda response: response.url.endswith("/predict")):
            page.click("#predict")
        expected = predict((first, second), model=folder)
        expect(page.locator("#label")).to_have_text(", ".join(map(str, expected.labels)) or "no label")
        best = page.locator(".bar.best")
        expect(best).to_have_count(len(expected.labels))
        shown = {bar.get_attribute("data-label") for bar in best.all()}
        assert shown == {str(label) for label in expected.labels}
        assert np.isclose(sum(float(b.get_attribute("data-probability")) for b in page.locator(".bar").all()),
                          sum(expected.probabilities.values()))
