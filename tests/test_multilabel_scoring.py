"""Multi-label scoring and per-label thresholds chosen on validation."""

from __future__ import annotations

import numpy as np
import pytest

from textxfer.core.metrics import score_multilabel
from textxfer.core.thresholds import DEFAULT_THRESHOLD, decide, tune_thresholds
from textxfer.data.labels import LabelSet


def _f1(truth, predicted):
    tp = int((truth & predicted).sum())
    return 2 * tp / (truth.sum() + predicted.sum()) if truth.sum() + predicted.sum() else 0.0


def test_a_rare_label_scored_low_gets_a_low_threshold_and_a_better_f1_than_half():
    rng = np.random.default_rng(0)
    truth = np.zeros((200, 2), dtype=int)
    truth[:100, 0] = 1
    truth[:20, 1] = 1  # rare: the model scores its positives 0.2-0.4 and its negatives 0-0.3
    probabilities = np.c_[np.where(truth[:, 0], rng.uniform(0.55, 1, 200), rng.uniform(0, 0.45, 200)),
                          np.where(truth[:, 1], rng.uniform(0.2, 0.4, 200), rng.uniform(0, 0.3, 200))]
    thresholds, kept = tune_thresholds(truth, probabilities)
    assert kept == []
    assert 0.45 <= thresholds[0] <= 0.55  # separable around 0.5: the tie-break keeps the cut nearest 0.5
    assert 0.2 < thresholds[1] < 0.4
    tuned, fixed = decide(probabilities, thresholds), decide(probabilities, np.full(2, 0.5))
    assert _f1(truth[:, 1] == 1, tuned[:, 1] == 1) > 0.6 > _f1(truth[:, 1] == 1, fixed[:, 1] == 1) == 0.0
    assert _f1(truth[:, 0] == 1, tuned[:, 0] == 1) == 1.0


def test_the_chosen_threshold_maximises_the_label_f1_over_every_cut():
    rng = np.random.default_rng(1)
    truth = (rng.random((150, 3)) < [0.1, 0.3, 0.6]).astype(int)
    probabilities = np.clip(truth * 0.25 + rng.random((150, 3)) * 0.7, 0, 1)
    thresholds, _ = tune_thresholds(truth, probabilities)
    for j in range(3):
        achieved = _f1(truth[:, j] == 1, probabilities[:, j] >= thresholds[j])
        best = max(_f1(truth[:, j] == 1, probabilities[:, j] >= t) for t in np.unique(probabilities[:, j]))
        assert achieved == pytest.approx(best)
        assert not np.isin(thresholds[j], probabilities[:, j])  # halfway between two scores, not on one


def test_a_label_without_positive_or_negative_validation_rows_keeps_half():
    truth = np.array([[1, 0, 1], [0, 0, 1], [1, 0, 1]])
    probabilities = np.array([[0.9, 0.2, 0.7], [0.1, 0.3, 0.8], [0.8, 0.1, 0.9]])
    thresholds, kept = tune_thresholds(truth, probabilities)
    assert thresholds[1] == thresholds[2] == DEFAULT_THRESHOLD
    assert kept == ["label 1: no positive validation row", "label 2: no negative validation row"]


def test_decide_predicts_where_the_probability_reaches_the_threshold():
    assert decide(np.array([[0.3, 0.3], [0.2, 0.7]]), np.array([0.3, 0.5])).tolist() == [[1, 0], [0, 1]]


def test_multi_label_scores_against_hand_computed_figures():
    labels = LabelSet(("a", "b", "c"), multi_label=True)
    truth = np.array([[1, 0, 0], [1, 1, 0], [0, 0, 0], [0, 1, 0]])
    predicted = np.array([[1, 0, 0], [1, 0, 0], [0, 0, 0], [1, 1, 0]])
    probabilities = np.array([[0.9, 0.1, 0.0], [0.8, 0.4, 0.1], [0.2, 0.1, 0.3], [0.6, 0.7, 0.2]])
    m = score_multilabel(truth, predicted, probabilities, labels)
    # label a: tp 2 fp 1 fn 0 → F1 0.8; label b: tp 1 fp 0 fn 1 → F1 2/3; c has no rows.
    assert m["per_class"]["a"] == {"precision": pytest.approx(2 / 3), "recall": 1.0, "f1": pytest.approx(0.8),
                                   "support": 2, "predicted": 3}
    assert m["macro_f1"] == pytest.approx((0.8 + 2 / 3) / 2) and m["classes_without_rows"] == ["c"]
    assert m["micro_f1"] == pytest.approx(2 * 3 / (4 + 4))  # tp 3, 4 true labels, 4 predicted
    assert m["subset_accuracy"] == m["accuracy"] == 0.5  # rows 1 and 3 exactly right
    assert m["hamming_loss"] == pytest.approx(2 / 12)
    # samples-F1: 1, 2/3, 1 (nothing true, nothing predicted), 2/3
    assert m["samples_f1"] == pytest.approx((1 + 2 / 3 + 1 + 2 / 3) / 4)
    # LRAP over the 3 texts with labels: 1, (1 + 1)/2 = 1, then row 3 ranks b first → 1
    assert m["lrap"] == pytest.approx(1.0)
    worse = score_multilabel(truth, predicted, probabilities[:, ::-1], labels)
    assert worse["lrap"] < 0.7 and worse["micro_f1"] == m["micro_f1"]  # LRAP reads the probabilities only


def test_a_weak_label_is_not_given_to_every_text_even_where_that_maximises_f1():
    rng = np.random.default_rng(2)
    truth = (rng.random((100, 1)) < 0.4).astype(int)
    probabilities = rng.random((100, 1))  # no signal: "every text" would score F1 2p / (1 + p) ≈ 0.57
    thresholds, _ = tune_thresholds(truth, probabilities)
    assert decide(probabilities, thresholds).sum() < 100


def test_the_guard_flags_a_label_given_to_every_text_and_lists_labels_never_given():
    from textxfer.evaluation.guard import check_multilabel

    labels = LabelSet(("a", "b", "c"), multi_label=True)
    truth = np.array([[1, 0, 1], [0, 1, 0], [1, 0, 0], [0, 0, 1]] * 10)
    fine = score_multilabel(truth, truth, truth.astype(float), labels)
    assert check_multilabel(fine) == {"split": "validation", "n": 40, "degenerate": False, "reasons": [],
                                      "never_predicted": [], "always_predicted": [], "micro_f1": 1.0}
    always_a = truth.copy()
    always_a[:, 0], always_a[:, 1] = 1, 0
    check = check_multilabel(score_multilabel(truth, always_a, always_a.astype(float), labels))
    assert check["degenerate"] and check["always_predicted"] == ["a"] and check["never_predicted"] == ["b"]
    nothing = check_multilabel(score_multilabel(truth, 0 * truth, 0.0 * truth, labels))
    assert nothing["degenerate"] and "no label for any validation text" in nothing["reasons"][-1]
