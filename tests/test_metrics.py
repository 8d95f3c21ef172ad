import pytest

from textxfer.data.labels import LabelSet
from textxfer.core.metrics import format_table, score


def test_scores_match_a_hand_worked_case():
    labels = LabelSet(("a", "b", "c"))
    # true:  a a a b b c ; predicted: a a b b c c
    result = score([0, 0, 0, 1, 1, 2], [0, 0, 1, 1, 2, 2], labels)
    assert result["accuracy"] == 4 / 6
    assert result["confusion_matrix"] == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    # a: P=1, R=2/3, F1=0.8; b: P=1/2, R=1/2, F1=0.5; c: P=1/2, R=1, F1=2/3
    assert abs(result["per_class"]["a"]["f1"] - 0.8) < 1e-9
    assert abs(result["per_class"]["b"]["f1"] - 0.5) < 1e-9
    assert abs(result["per_class"]["c"]["f1"] - 2 / 3) < 1e-9
    assert abs(result["macro_f1"] - (0.8 + 0.5 + 2 / 3) / 3) < 1e-9
    assert abs(result["weighted_f1"] - (3 * 0.8 + 2 * 0.5 + 2 / 3) / 6) < 1e-9
    assert result["per_class"]["a"]["support"] == 3


def test_absent_class_scores_zero_not_error():
    result = score([0, 0], [0, 0], LabelSet(("x", "y")))
    assert result["per_class"]["y"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    assert "validation" in format_table({"validation": result})


def test_macro_f1_averages_only_the_classes_with_rows():
    labels = LabelSet.from_labels(["a", "b", "c"])
    # No true 'c' row: sklearn's macro over a, b, c would count c's F1 as 0 (a mean of 2/3 here).
    result = score([0, 0, 1, 1], [0, 0, 1, 2], labels)
    assert result["classes_without_rows"] == ["c"]
    f1_b = 2 * 1.0 * 0.5 / 1.5  # precision 1, recall 1/2
    assert result["macro_f1"] == pytest.approx((1.0 + f1_b) / 2)
    assert score([0, 1, 2], [0, 1, 2], labels)["classes_without_rows"] == []


def test_a_class_without_rows_has_no_f1_in_the_table():
    labels = LabelSet(("fresh", "rotten", "stale"))
    validation = score([0, 1, 2], [0, 1, 2], labels)
    test = score([0, 0, 2, 2], [0, 1, 2, 2], labels)  # no true 'rotten' row; one text predicted 'rotten'
    assert test["classes_without_rows"] == ["rotten"]
    assert test["per_class"]["rotten"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}  # JSON: a number
    assert format_table({"validation": validation, "test": test}).splitlines() == [
        "     split  n  accuracy  macro-F1  weighted-F1  F1[fresh]     F1[rotten]  F1[stale]",
        "validation  3    1.0000    1.0000       1.0000     1.0000         1.0000     1.0000",
        "      test  4    0.7500    0.8333       0.8333     0.6667  n/a (no rows)     1.0000",
    ]
