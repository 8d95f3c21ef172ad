"""The hard fixture (``conftest.make_hard_rows``) that the quality tests rely on: no word gives the label away,
the count of sentiment words does, and a known share of the labels is wrong."""

from __future__ import annotations

from collections import Counter

from conftest import HARD_NOISE, NEGATIVE, NEUTRAL, POSITIVE, make_hard_rows, make_rows


def words(text: str) -> list[str]:
    return text.rstrip("。").split("，")


def majority(text: str) -> str:
    counts = Counter("positive" if w in POSITIVE else "negative" for w in words(text) if w not in NEUTRAL)
    return "positive" if counts["positive"] > counts["negative"] else "negative"


def test_no_word_list_gives_the_label_away(hard_data):
    texts, labels = hard_data.train.texts, hard_data.train.labels
    assert all(set(words(t)) & set(POSITIVE) and set(words(t)) & set(NEGATIVE) for t in texts)
    seen_under = {w: {l for t, l in zip(texts, labels) if w in words(t)} for w in POSITIVE + NEGATIVE + NEUTRAL}
    assert all(found == {"positive", "negative"} for found in seen_under.values())
    # The easy fixture, by contrast, is solved by looking words up in a list.
    easy = make_rows()
    assert all((set(words(t)) & set(POSITIVE) != set()) == (l == "positive") for t, l in easy)


def test_the_majority_is_right_but_for_the_flipped_share(hard_data):
    for split in (hard_data.train, hard_data.validation, hard_data.test):
        wrong = sum(majority(t) != l for t, l in zip(split.texts, split.labels))
        assert wrong == round(HARD_NOISE * len(split.texts)) > 0
        assert 0.4 < split.labels.count("positive") / len(split.labels) < 0.6
    assert make_hard_rows(50, seed=7) == make_hard_rows(50, seed=7)  # seeded


def test_the_splits_are_disjoint_and_the_control_only_permutes_labels(hard_data):
    train, validation, test = (set(s.texts) for s in (hard_data.train, hard_data.validation, hard_data.test))
    assert len(train) == 200 and len(validation) == 40 and len(test) == 400
    assert not train & validation and not train & test and not validation & test
    shuffled = hard_data.shuffled_train
    assert shuffled.texts == hard_data.train.texts and Counter(shuffled.labels) == Counter(hard_data.train.labels)
    agreement = sum(a == b for a, b in zip(shuffled.labels, hard_data.train.labels)) / len(shuffled.labels)
    assert 0.4 < agreement < 0.6  # about as often as chance
