"""``--augment``: altered copies of the training texts (word dropout, neighbour swaps), labels kept, seeded."""

from __future__ import annotations

from collections import Counter

import pytest

from conftest import make_rows
from textxfer.data.augment import augment
from textxfer.data.dataset import TextDataset
from textxfer.errors import TextxferError

ENGLISH = [("the room was clean and the staff were kind to us all week", "positive"),
           ("the bed was hard and the noise from the street kept us awake", "negative")] * 20


def _data(rows):
    return TextDataset([t for t, _ in rows], [label for _, label in rows], list(range(1, len(rows) + 1)), "r.csv")


def test_word_dropout_adds_copies_whose_words_are_the_original_in_order_minus_some():
    data = _data(ENGLISH)
    out = augment(data, "word-dropout", 2, seed=1)
    assert len(out) == 3 * len(data) and out.texts[:len(data)] == data.texts
    assert out.labels == data.labels * 3 and out.rows == data.rows * 3
    dropped = 0
    for copy, original in zip(out.texts[len(data):], data.texts * 2):
        words, source = copy.split(), original.split()
        it = iter(source)
        assert all(word in it for word in words)  # a subsequence: words only removed, never moved
        dropped += len(source) - len(words)
    total = 2 * sum(len(t.split()) for t in data.texts)
    assert 0.05 * total < dropped < 0.15 * total  # about RATE = 10 % of the words
    assert augment(data, "word-dropout", 2, seed=1).texts == out.texts  # seeded
    assert augment(data, "word-dropout", 2, seed=2).texts != out.texts


def test_word_swap_on_chinese_keeps_every_character_and_moves_some():
    data = _data(make_rows(40, seed=2))
    out = augment(data, "word-swap", 1, seed=3)
    copies = out.texts[len(data):]
    assert all(Counter(c) == Counter(o) for c, o in zip(copies, data.texts))  # jieba words, joined without spaces
    assert sum(c != o for c, o in zip(copies, data.texts)) > len(data) // 2


def test_none_and_unknown():
    data = _data(ENGLISH)
    assert augment(data, "none", 3, seed=0) is data
    with pytest.raises(TextxferError, match="unknown augmentation"):
        augment(data, "back-translation", 1, seed=0)


def test_fit_trains_on_the_copies_and_records_them(tiny_config, one_torch_thread):
    from textxfer.transformer.pipeline import FinetuneClassifier

    rows = make_rows(60, seed=4)
    tiny_config.strategy, tiny_config.augment, tiny_config.augment_copies = "head-only", "word-dropout", 2
    model = FinetuneClassifier(tiny_config).fit(_data(rows))
    assert model.fit_stats_["train_texts"] == 180
    assert model.fit_stats_["augmented"] == {"method": "word-dropout", "copies": 2, "texts_added": 120}
