"""``disagreements.md``: for test texts where compare's two models predict differently, what each one read — both
models' explanations by one method (occlusion, which every kind has), so the words line up side by side."""

from __future__ import annotations

from pathlib import Path

import numpy as np

DISAGREEMENTS_MD = "disagreements.md"
EXPLAINED = 20  # disagreements explained (each costs one prediction per word per model)
SHOWN_WORDS = 5


def disagreeing_rows(predictions: dict[str, np.ndarray]) -> list[int]:
    """Test rows (indices) where the models' predictions differ (multi-label: their label sets)."""
    first, *others = predictions.values()
    differ = np.zeros(len(first), dtype=bool)
    for other in others:
        differ |= np.any(np.asarray(first).reshape(len(first), -1) != np.asarray(other).reshape(len(first), -1), axis=1)
    return [int(i) for i in np.flatnonzero(differ)]


def write(path: Path, models: dict, test, truth: list[str], predictions: dict[str, np.ndarray],
          limit: int = EXPLAINED) -> dict:
    """Write ``disagreements.md`` for ``models`` (name → fitted model) on the ``test`` split; returns what it holds."""
    rows = disagreeing_rows(predictions)
    chosen = rows[:limit]
    inputs = [test.inputs[i] for i in chosen]
    explained = {name: model.explain(inputs, method="occlusion") if inputs else [] for name, model in models.items()}
    names = list(models)
    out = ["# Where the models disagree", "",
           f"{len(rows):,} of {len(test):,} test texts get different predictions from {' and '.join(names)}"
           + (f"; the first {len(chosen)} are explained here" if len(rows) > len(chosen) else "")
           + ". Each model's explanation is by occlusion (the drop in its predicted label's probability when a word "
             "is removed), the same method for both, so the words line up: **for** raised the label's probability, "
             "**against** lowered it.", ""]
    for k, i in enumerate(chosen):
        item = test.inputs[i]
        text = " ⟂ ".join(item) if isinstance(item, tuple) else item
        out += [f"## Test row {test.rows[i]} (true label: {truth[i]})", "", "> " + " ".join(text.split())[:600], ""]
        for name in names:
            e = explained[name][k]
            out.append(f"- **{name}** says **{e.label}** ({e.score:.3f}) — for: {e.listed(1, SHOWN_WORDS)}; against: "
                       f"{e.listed(-1, SHOWN_WORDS)}")
        out.append("")
    Path(path).write_text("\n".join(out), encoding="utf-8")
    return {"file": DISAGREEMENTS_MD, "disagreeing": len(rows), "explained": len(chosen), "method": "occlusion"}
