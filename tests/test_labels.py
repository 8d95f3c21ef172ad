import pytest

from textxfer.errors import TextxferError
from textxfer.data.labels import LabelSet


def test_string_labels_sorted_and_round_trip():
    labels = LabelSet.from_labels(["pos", "neg", "pos", "neutral"])
    assert labels.names == ("neg", "neutral", "pos")
    assert labels.encode(["pos", "neg"]) == [2, 0]
    assert LabelSet.from_dict(labels.to_dict()) == labels


def test_integer_labels_sort_numerically_and_keep_their_type():
    labels = LabelSet.from_labels(["10", "2", "-1", "2"])
    assert labels.names == ("-1", "2", "10")
    assert labels.kind == "int"
    assert labels.value("10") == 10


def test_unknown_label_is_named():
    with pytest.raises(TextxferError, match="'maybe'"):
        LabelSet.from_labels(["a", "b"]).encode(["a", "maybe"])


def test_single_class_is_refused():
    with pytest.raises(TextxferError, match="at least 2 classes"):
        LabelSet.from_labels(["only", "only"])
