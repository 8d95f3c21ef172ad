"""Two sections of the study report: what each ensemble adds over its best member, and the fine-tuning cells'
training loss against validation loss (:mod:`textxfer.transformer.loss_curve`)."""

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
