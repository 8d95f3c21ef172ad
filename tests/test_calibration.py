"""Temperature scaling and the calibration figures (textxfer.core.calibration) on synthetic probabilities whose true
calibration is known: labels are drawn from softmax(logits / T0), and the model reports softmax(logits)."""

from __future__ import annotations

import numpy as np
import pytest

from textxfer.core.calibration import (brier_score, expected_calibration_error, figures, fit_temperature, log_loss,
                                       scale)


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _drawn(true_temperature: float, n: int = 6000, classes: int = 4, seed: int = 0):
    """Reported probabilities softmax(logits) and labels drawn from softmax(logits / true_temperature)."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 3, size=(n, classes))
    truth = _softmax(logits / true_temperature)
    y = np.array([rng.choice(classes, p=row) for row in truth])
    return _softmax(logits), y


@pytest.mark.parametrize("true_temperature", [0.5, 2.0])
def test_the_fitted_temperature_finds_the_one_the_labels_were_drawn_with(true_temperature):
    reported, y = _drawn(true_temperature)
    fitted = fit_temperature(reported, y)
    assert fitted == pytest.approx(true_temperature, rel=0.1)
    calibrated = scale(reported, fitted)
    assert log_loss(calibrated, y) < log_loss(reported, y) - 0.01
    assert expected_calibration_error(calibrated, y) < expected_calibration_error(reported, y) / 2


def test_a_calibrated_model_keeps_temperature_one_and_a_low_ece():
    reported, y = _drawn(1.0)
    assert fit_temperature(reported, y) == pytest.approx(1.0, abs=0.1)
    assert expected_calibration_error(reported, y) < 0.03


def test_temperature_never_moves_the_argmax_and_rows_still_sum_to_one():
    reported, _ = _drawn(2.0, n=500)
    for temperature in (0.1, 0.7, 3.0, 15.0):
        scaled = scale(reported, temperature)
        assert np.array_equal(scaled.argmax(axis=1), reported.argmax(axis=1))
        assert np.allclose(scaled.sum(axis=1), 1.0)
    assert np.allclose(scale(reported, 1.0), reported)
    # T > 1 softens: the top probability falls; T < 1 sharpens: it rises
    assert (scale(reported, 3.0).max(axis=1) <= reported.max(axis=1) + 1e-12).all()
    assert (scale(reported, 0.5).max(axis=1) >= reported.max(axis=1) - 1e-12).all()


def test_multi_label_temperature_scales_each_sigmoid_and_keeps_the_order_within_a_label():
    rng = np.random.default_rng(1)
    logits = rng.normal(0, 3, size=(4000, 3))
    y = (rng.random(logits.shape) < 1 / (1 + np.exp(-logits / 2.5))).astype(int)  # drawn at T0 = 2.5
    reported = 1 / (1 + np.exp(-logits))
    fitted = fit_temperature(reported, y)
    assert fitted == pytest.approx(2.5, rel=0.1)
    calibrated = scale(reported, fitted, multi_label=True)
    assert calibrated.shape == reported.shape and not np.allclose(calibrated.sum(axis=1), 1.0)
    for j in range(3):  # each label's ranking (and so its tuned threshold's cut) is unchanged
        assert np.array_equal(np.argsort(calibrated[:, j], kind="stable"), np.argsort(reported[:, j], kind="stable"))
    assert expected_calibration_error(calibrated, y) < expected_calibration_error(reported, y) / 2


def test_ece_uses_equal_mass_bins_on_a_hand_worked_example():
    # 4 texts, 2 bins of 2 by confidence: (0.6 right, 0.7 wrong) → |0.65 − 0.5|; (0.8 right, 0.9 right) → |0.85 − 1|
    p = np.array([[0.6, 0.4], [0.3, 0.7], [0.8, 0.2], [0.1, 0.9]])
    y = np.array([0, 0, 0, 1])
    assert expected_calibration_error(p, y, bins=2) == pytest.approx((2 * 0.15 + 2 * 0.15) / 4)
    assert expected_calibration_error(p, y, bins=4) == pytest.approx((0.4 + 0.7 + 0.2 + 0.1) / 4)


def test_brier_and_log_loss_on_hand_worked_rows():
    p = np.array([[0.8, 0.2], [0.4, 0.6]])
    y = np.array([0, 0])
    assert brier_score(p, y) == pytest.approx(((0.2 ** 2 + 0.2 ** 2) + (0.6 ** 2 + 0.6 ** 2)) / 2)
    assert log_loss(p, y) == pytest.approx(-(np.log(0.8) + np.log(0.4)) / 2)
    multi = np.array([[0.9, 0.2]])
    assert brier_score(multi, np.array([[1, 0]])) == pytest.approx((0.01 + 0.04) / 2)
    assert figures(p, y) == {"ece": pytest.approx(expected_calibration_error(p, y), abs=1e-6),
                             "log_loss": pytest.approx(log_loss(p, y), abs=1e-6),
                             "brier": pytest.approx(brier_score(p, y), abs=1e-6)}

