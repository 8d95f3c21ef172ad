"""Explanations: words (not sub-word pieces) with their contribution to the predicted label, by occlusion for every
kind and by integrated gradients for a fine-tuned model."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from conftest import NEGATIVE, NEUTRAL, POSITIVE, make_rows
from textxfer import classifier
from textxfer.core.contract import ClassifierBase
from textxfer.core.explain import Word, to_words, words_of
from textxfer.data.labels import LabelSet
from textxfer.data.shape import SINGLE
from textxfer.errors import TextxferError


class Counting(ClassifierBase):
    """A stand-in model: P(pos) = sigmoid(2 · (#"good" − #"bad")) over whitespace words; P(neg) the rest."""

    kind = "baseline"
    fitted_attribute = "labels"

    def __init__(self):
        self.labels, self.shape = LabelSet(("neg", "pos")), SINGLE

    def fit(self, *args, **kwargs):
        return self

    def raw_proba(self, texts):
        texts = self.check_inputs(texts)
        score = np.array([2.0 * (t.split().count("good") - t.split().count("bad")) for t in texts])
        pos = 1 / (1 + np.exp(-score))
        return np.column_stack([1 - pos, pos])

    def write(self, folder, data_info=None):
        raise AssertionError

    @classmethod
    def from_manifest(cls, *args, **kwargs):
        raise AssertionError


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


def test_occlusion_is_the_drop_in_the_predicted_labels_probability():
    [explained] = Counting().explain(["good good bad room"])
    assert explained.label == "pos" and explained.method == "occlusion"
    assert [w.text for w in explained.words] == ["good", "good", "bad", "room"]
    full = _sigmoid(2.0)
    expected = [full - _sigmoid(0.0), full - _sigmoid(0.0), full - _sigmoid(4.0), 0.0]
    assert explained.contributions == pytest.approx(expected)
    assert [w.text for w, _ in explained.top(2)] == ["good", "good"]
    # a negative prediction is explained for its own label: "bad" speaks for it
    [negative] = Counting().explain(["bad room"])
    assert negative.label == "neg" and negative.contributions == pytest.approx([(1 - _sigmoid(-2.0)) - 0.5, 0.0])


def test_words_are_jieba_words_for_chinese_and_both_texts_of_a_pair():
    words, notes = words_of("房间很干净，服务热情！")
    assert [w.text for w in words] == ["房间", "很", "干净", "服务", "热情"] and notes == []
    words, _ = words_of(("The room was clean.", "干净"))
    assert [(w.text, w.part) for w in words] == [("The", 0), ("room", 0), ("was", 0), ("clean", 0), ("干净", 1)]
    words, notes = words_of("word " * 300, max_words=10)
    assert len(words) == 10 and "300 words; the first 10 are scored" in notes[0]


def test_sub_word_scores_are_summed_into_the_words_they_overlap():
    words = [Word("干净", 0, 2), Word("热情", 3, 5), Word("good", 0, 4, part=1)]
    tokens = [(0, 0, 0), (0, 0, 1), (0, 1, 2), (0, 2, 3), (0, 3, 4), (0, 4, 5), (1, 0, 2), (1, 2, 4)]
    scores = np.array([9.0, 0.1, 0.2, 5.0, 0.3, 0.4, 1.0, 2.0])  # the special token's 9 and the comma's 5 are dropped
    assert to_words(tokens, scores, words) == pytest.approx([0.3, 0.7, 3.0])


def test_every_kind_explains_by_occlusion_and_refuses_an_unknown_method(trained_models):
    texts = ["这家酒店很干净，服务热情", "太差了，房间又脏又吵"]
    for folder in trained_models.values():
        model = classifier.load(folder)
        explained = model.explain(texts, method="occlusion")
        assert [e.label for e in explained] == model.predict(texts)
        for e in explained:
            assert e.method == "occlusion" and len(e.words) == len(e.contributions) > 0
            assert e.score == pytest.approx(model.predict_proba([e.input])[0].max())
        with pytest.raises(TextxferError, match="explains by"):
            model.explain(texts, method="saliency")
    assert classifier.load(trained_models["finetune"]).explanation_methods[0] == "integrated-gradients"
    assert classifier.load(trained_models["baseline"]).explanation_methods == ("occlusion",)


def test_integrated_gradients_add_up_to_the_probability_change_from_the_baseline_input(trained_models):
    import torch

    from textxfer.transformer.gradients import _encoded

    model = classifier.load(trained_models["finetune"])
    text = "".join(make_rows(1, seed=5)[0][0].split("，"))[:-2]  # words only: every token lies in a word
    [explained] = model.explain([text])
    assert explained.method == "integrated-gradients"
    encoded, _ = _encoded(model, text)
    ids = encoded["input_ids"]
    special = torch.tensor(model.tokenizer_.get_special_tokens_mask(ids[0].tolist(), already_has_special_tokens=True),
                           dtype=torch.bool)
    baseline = torch.where(special, ids[0], torch.full_like(ids[0], model.tokenizer_.pad_token_id))[None]
    with torch.no_grad():
        probabilities = [torch.softmax(model.model_(input_ids=x, attention_mask=encoded["attention_mask"]).logits
                                       / model.temperature, dim=-1)[0] for x in (ids, baseline)]
    label = list(model.labels.names).index(explained.label)
    change = float(probabilities[0][label] - probabilities[1][label])
    assert sum(explained.contributions) == pytest.approx(change, abs=0.02 + 0.05 * abs(change))


def test_the_fine_tuned_models_explanations_point_at_the_sentiment_words(trained_models):
    # The fixture's labels are decided by two sentiment words among neutral ones: on average, a sentiment word must
    # contribute more to the predicted label than a neutral word, by either method.
    model = classifier.load(trained_models["finetune"])
    texts = [text for text, _ in make_rows(30, seed=9)]
    for method in ("integrated-gradients", "occlusion"):
        sentiment, neutral = [], []
        for e in model.explain(texts, method=method):
            for word, value in zip(e.words, e.contributions):
                (sentiment if word.text in POSITIVE + NEGATIVE else neutral if word.text in NEUTRAL else []).append(value)
        assert np.mean(sentiment) > max(3 * np.mean(neutral), 0.001), method  # on a model trained like this one:
        # IG 0.055 vs -0.0002, occlusion 0.0064 vs 0.0003 (its probabilities move little when one of two sentiment
        # words goes)


def test_predict_explain_prints_the_words_for_and_against(trained_models, capsys, tmp_path):
    from textxfer.cli import main

    assert main(["predict", "--model", str(trained_models["baseline"]), "--explain", "房间，干净，服务，热情，脏。"]) == 0
    lines = capsys.readouterr().out.splitlines()
    model = classifier.load(trained_models["baseline"])
    [why] = model.explain(["房间，干净，服务，热情，脏。"])
    assert lines[0].startswith(f"{why.label}\t") and lines[1].startswith(f"  occlusion (to {why.label!r}): for: ")
    best = max(zip(why.words, why.contributions), key=lambda pair: pair[1])
    assert best[1] > 0 and f"{best[0].text} {best[1]:+.3f}" in lines[1].split(" | ")[0]  # a mixed text: words on both
    worst = min(zip(why.words, why.contributions), key=lambda pair: pair[1])  # sides move the forest's vote
    assert worst[1] < 0 and f"{worst[0].text} {worst[1]:+.3f}" in lines[1].split(" | ")[1]
    rows = ["房间，干净，服务，热情，脏。", "很差，失望"]
    (tmp_path / "in.csv").write_text("id,text\n" + "".join(f"{i},{t}\n" for i, t in enumerate(rows)), encoding="utf-8")
    for suffix in ("csv", "jsonl"):
        source = tmp_path / f"in.{suffix}"
        if suffix == "jsonl":
            source.write_text("".join(json.dumps({"id": i, "text": t}, ensure_ascii=False) + "\n"
                                      for i, t in enumerate(rows)), encoding="utf-8")
        output = tmp_path / f"out.{suffix}"
        assert main(["predict", "--model", str(trained_models["baseline"]), "--explain", "--input", str(source),
                     "--output", str(output), "--no-progress"]) == 0
        expected = model.explain(rows)
        if suffix == "csv":
            with open(output, encoding="utf-8", newline="") as handle:
                got = [json.loads(r["explanation"]) for r in csv.DictReader(handle)]
            assert got == [[[w.text, pytest.approx(c, abs=1e-6)] for w, c in zip(e.words, e.contributions)]
                           for e in expected]
        else:
            got = [json.loads(line)["explanation"] for line in output.read_text(encoding="utf-8").splitlines()]
            assert [g["label"] for g in got] == [e.label for e in expected]
            assert [[w["word"] for w in g["words"]] for g in got] == [[w.text for w in e.words] for e in expected]
