"""Sections of the study report: what each ensemble adds over its best member, the fine-tuning cells' training loss
against validation loss (:mod:`textxfer.transformer.loss_curve`), and the cells' calibration before and after their
temperature."""

from __future__ import annotations

import numpy as np

from textxfer.transformer.loss_curve import RISES


def ensemble_gains(records: list[dict], variants, sizes: list[int], key: str = "accuracy") -> dict:
    """ensemble variant → size → ``{"best_member", "gain": {mean, sd, n}, "seeds"}``: the ensemble's test
    accuracy (``key``: micro-F1 for multi-label texts) minus that of its member with the best mean at that size,
    paired by seed."""
    accuracy = {(r["variant"], r["size"], r["seed"]): r["test"][key] for r in records}
    gains = {}
    for variant in (v for v in variants if v.pipeline == "ensemble"):
        members = variant.settings["members"]
        gains[variant.text] = {}
        for size in sizes:
            seeds = sorted(s for (v, n, s) in accuracy if v == variant.text and n == size)
            means = {m: sum(accuracy[(m, size, s)] for s in seeds) / len(seeds) for m in members} if seeds else {}
            if not means:
                continue
            best = max(members, key=lambda m: means[m])
            differences = [accuracy[(variant.text, size, s)] - accuracy[(best, size, s)] for s in seeds]
            gains[variant.text][str(size)] = {"best_member": best, "seeds": seeds, "gain": {
                "mean": float(np.mean(differences)), "n": len(differences),
                "sd": float(np.std(differences, ddof=1)) if len(differences) > 1 else 0.0}}
    return gains


def gains_markdown(gains: dict, title: str = "test accuracy") -> list[str]:
    """The "what the ensembles add" table (nothing when the study has no ensemble); ``title``: the figure compared."""
    if not gains:
        return []
    figure = title[len("test "):] if title.startswith("test ") else title
    out = ["## What the ensembles add", "", f"{title[0].upper() + title[1:]} of the ensemble minus that of its best "
           f"member (by mean {figure} at that size), paired by seed: mean ± sd over seeds. Weights are chosen on each "
           "cell's validation split.", "", "| ensemble | training texts | best member | gain |", "|---|---:|---|---:|"]
    for variant, by_size in gains.items():
        for size, entry in by_size.items():
            gain = entry["gain"]
            out.append(f"| `{variant}` | {int(size):,} | `{entry['best_member']}` | "
                       f"{gain['mean'] * 100:+.2f} ± {gain['sd'] * 100:.2f} points |")
    return out + [""]


def gains_findings(gains: dict) -> list[str]:
    """One sentence per ensemble variant: its gain at each size."""
    out = []
    for variant, by_size in gains.items():
        parts = [f"{entry['gain']['mean'] * 100:+.2f} points at {int(size):,} texts (over `{entry['best_member']}`)"
                 for size, entry in by_size.items()]
        if parts:
            out.append(f"`{variant}` against its best member: " + ", ".join(parts) + ".")
    return out


def loss_markdown(records: list[dict]) -> list[str]:
    """One row per cell with evaluations: validation loss first → lowest → last, training loss first → last,
    and the overfitting note; nothing when no cell logged an evaluation."""
    cells = [r for r in records if (r.get("loss_curve") or {}).get("evaluations")]
    if not cells:
        return []
    fmt = lambda v: "n/a" if v is None else f"{v:.4f}"  # noqa: E731
    out = ["## Training and validation loss", "",
           f"Per fine-tuning cell, from its Trainer log (`trainer_log.json`): validation loss at the first, the "
           f"lowest and the last evaluation, and training loss at the first and last. Overfitting: validation loss "
           f"rose at {RISES} evaluations in a row while training loss fell.", "",
           "| variant | training texts | seed | evaluations | validation loss (first → lowest → last) | "
           "training loss (first → last) | overfitting |", "|---|---:|---:|---:|---|---|---|"]
    for r in cells:
        curve = r["loss_curve"]
        points = curve["evaluations"]
        validation = [p["validation_loss"] for p in points]
        verdict = f"from step {curve['from_step']}" if curve["overfitting"] else "no"
        out.append(f"| `{r['variant']}` | {r['size']:,} | {r['seed']} | {len(points)} | {fmt(validation[0])} → "
                   f"{fmt(min(validation))} → {fmt(validation[-1])} | {fmt(points[0]['training_loss'])} → "
                   f"{fmt(points[-1]['training_loss'])} | {verdict} |")
    notes = [f"- `{r['variant']}`, {r['size']:,} texts, seed {r['seed']}: {r['loss_curve']['note']}."
             for r in cells if r["loss_curve"]["overfitting"]]
    return out + [""] + (notes + [""] if notes else [])


CALIBRATION_FIGURES = (("ece", "ECE"), ("log_loss", "log loss"), ("brier", "Brier"))


def calibration_of(report: dict) -> dict | None:
    """A cell record's ``calibration`` from its ``report.json``: the temperature, and per split the figures before and
    after (None for a run written before calibration existed)."""
    record = report.get("calibration")
    if not isinstance(record, dict) or not record.get("splits"):
        return None
    return {"method": record.get("method"), "temperature": record.get("temperature"), **record["splits"]}


def calibration_summary(records: list[dict], variants, sizes: list[int]) -> dict:
    """variant → size → the test split's ECE, log loss and Brier score before and after calibration, and the
    temperature: ``{"ece": {"before": {mean, sd, n}, "after": …}, …, "temperature": {mean, sd, n}}``."""
    def spread(values: list[float]) -> dict:
        return {"mean": float(np.mean(values)), "sd": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
                "n": len(values)}

    summary = {}
    for variant in variants:
        summary[variant.text] = {}
        for size in sizes:
            cells = [r["calibration"] for r in records if r["variant"] == variant.text and r["size"] == size
                     and (r.get("calibration") or {}).get("test")]
            if not cells:
                continue
            summary[variant.text][str(size)] = {
                **{key: {when: spread([c["test"][when][key] for c in cells]) for when in ("before", "after")}
                   for key, _ in CALIBRATION_FIGURES},
                "temperature": spread([c["temperature"] for c in cells])}
    return {variant: by_size for variant, by_size in summary.items() if by_size}


def calibration_markdown(summary: dict) -> list[str]:
    """The study's *Calibration* table: per variant and size, the temperature and the test figures before → after
    (means over seeds, ± sd of the after figure); nothing when no cell carries calibration figures."""
    if not summary:
        return []
    out = ["## Calibration on the test split", "",
           "Each cell's probabilities before → after the temperature it fitted on its validation split (means over "
           "seeds; ± the sd of the calibrated figure). ECE: expected calibration error over 15 equal-mass bins; "
           "lower is better for all three. The temperature never changes a predicted label.", "",
           "| variant | training texts | temperature | " + " | ".join(title for _, title in CALIBRATION_FIGURES) + " |",
           "|---|---:|---:|" + "---|" * len(CALIBRATION_FIGURES)]
    for variant, by_size in summary.items():
        for size, entry in by_size.items():
            cells = [f"{entry[key]['before']['mean']:.4f} → {entry[key]['after']['mean']:.4f} ± "
                     f"{entry[key]['after']['sd']:.4f}" for key, _ in CALIBRATION_FIGURES]
            out.append(f"| `{variant}` | {int(size):,} | {entry['temperature']['mean']:.3g} | " + " | ".join(cells) + " |")
    return out + [""]
