"""Calibration in the comparison report: each model's figures before and after its temperature, and the
reliability diagram (one panel per model: accuracy against confidence over equal-mass bins, the diagonal drawn).

A compare entry's ``calibration`` (:func:`entry`) holds the model's method and temperature, the validation figures
its temperature was fitted on (from its manifest), the test figures before and after, and the reliability bins of
both, so the report and the figure are drawn from ``comparison.json`` alone.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from textxfer.core.calibration import ECE_BINS, figures, reliability_bins

RELIABILITY_PNG = "reliability.png"


def describe(model) -> dict:
    """``model``'s calibration method, the temperature it applies, and why it applies none (when it does not)."""
    info = model.calibration or {"method": "none", "why": "the model was saved before calibration existed"}
    return {"method": info["method"], "temperature": model.temperature, **({"why": info["why"]} if "why" in info else {})}


def before_after(raw: np.ndarray, calibrated: np.ndarray, y: np.ndarray) -> dict:
    """ECE, log loss and Brier score of one split's probabilities before (``raw``) and after calibration."""
    return {"before": figures(raw, y), "after": figures(calibrated, y)}


def entry(model, raw: np.ndarray, calibrated: np.ndarray, y: np.ndarray) -> dict:
    """A compare entry's ``calibration``: :func:`describe`, the validation figures (when the temperature was fitted
    on validation), and on the test split (``raw``: before, ``calibrated``: after, ``y``: the truth) the figures and
    reliability bins before and after."""
    info = model.calibration or {}
    return {**describe(model), **({"validation": info["validation"]} if "validation" in info else {}),
            "test": before_after(raw, calibrated, y),
            "reliability": {"before": reliability_bins(raw, y), "after": reliability_bins(calibrated, y)}}


def score_rows(models: dict) -> list[tuple[str, list[float]]]:
    """The main table's calibration rows: each model's test ECE and log loss after its temperature."""
    return [(f"test {title} (calibrated)", [m["calibration"]["test"]["after"][key] for m in models.values()])
            for key, title in (("ece", "ECE"), ("log_loss", "log loss"))]


def _pair(split: dict | None, key: str) -> str:
    if not split:
        return "n/a"
    before, after = split["before"][key], split["after"][key]
    return f"{before:.4f} → {after:.4f}"


def markdown(models: dict) -> list[str]:
    """The report's *Calibration* section: per model the temperature and, on test and validation, ECE, log loss and
    Brier score before → after."""
    rows = [(name, m["calibration"]) for name, m in models.items() if m.get("calibration")]
    if not rows:
        return []
    out = ["## Calibration", "",
           f"Each model's probabilities before → after its temperature (fitted on the validation split's log loss; "
           f"it never changes a predicted label). ECE: expected calibration error over {ECE_BINS} equal-mass bins of "
           "the top probability (multi-label: of every label's probability); lower is better for all three. "
           f"Reliability diagram: [{RELIABILITY_PNG}]({RELIABILITY_PNG}).", "",
           "| model | temperature | test ECE | test log loss | test Brier | validation ECE | validation log loss |",
           "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for name, c in rows:
        temperature = f"{c['temperature']:.3g}" if c["method"] == "temperature" else "none"
        test, validation = c.get("test"), c.get("validation")
        out.append(f"| {name} | {temperature}{' *' if c.get('why') else ''} | {_pair(test, 'ece')} | "
                   f"{_pair(test, 'log_loss')} | {_pair(test, 'brier')} | {_pair(validation, 'ece')} | "
                   f"{_pair(validation, 'log_loss')} |")
    notes = [f"\\* {name}: {c['why']}." for name, c in rows if c.get("why")]
    return out + [""] + (notes + [""] if notes else [])


def plot_reliability(comparison: dict, path: Path | str, draw_figure: Callable):
    """One panel per model: accuracy against mean confidence per equal-mass bin of the test split, before (grey)
    and after (colour) calibration, with the diagonal of perfect calibration; returns the Figure."""
    models = {name: m for name, m in comparison["models"].items() if m.get("calibration")}
    multi = comparison.get("multi_label")

    def paint(fig):
        for i, (ax, (name, m)) in enumerate(zip(fig.subplots(1, len(models), squeeze=False)[0], models.items())):
            c = m["calibration"]
            ax.plot([0, 1], [0, 1], color="black", linewidth=0.8, linestyle="--", label="perfect calibration")
            for key, style in (("before", {"color": "0.6", "marker": "o", "markersize": 3}),
                               ("after", {"color": f"C{i}", "marker": "o", "markersize": 4})):
                points = c["reliability"][key]
                ece = c["test"][key]["ece"]
                label = (f"{key} (T = {c['temperature']:.3g})" if key == "after" and c["method"] == "temperature"
                         else key) + f": ECE {ece:.3f}"
                ax.plot([b["confidence"] for b in points], [b["accuracy"] for b in points], label=label, **style)
            ax.set(xlim=(0, 1), ylim=(0, 1), aspect="equal",
                   xlabel="predicted probability" if multi else "confidence (top probability)",
                   ylabel="observed frequency" if multi else "accuracy")
            ax.set_title(name, fontsize=10)
            ax.legend(fontsize=7, loc="upper left")

    return draw_figure(Path(path), (3.6 * max(len(models), 1) + 0.5, 4.0), paint)
