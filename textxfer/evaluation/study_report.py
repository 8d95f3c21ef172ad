"""The study's report: ``study.json`` (every cell and the summary), ``study.md`` and ``learning_curve.png``.

Per variant × size: mean ± sd of test accuracy and macro-F1 over the seeds and a 95% interval for the
mean (Student's t with n − 1 degrees of freedom; none from a single seed), and how many of its cells
are degenerate (``model_check`` in the cell's ``report.json``). At every size the best variant (mean
test accuracy) is tested against each other one with McNemar's test on the cells' saved test
predictions (``predictions.json``), pooled over the seeds; a few sentences say what the curves show.

A multi-label study reports micro-F1 (its headline) and macro-F1, and tests the best variant with the paired
bootstrap of micro-F1 (:mod:`textxfer.evaluation.report_multilabel`) on the seeds' pooled test predictions.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from textxfer.transformer import loss_curve
from textxfer.errors import TextxferError
from textxfer.evaluation.study_sections import (calibration_markdown, calibration_of, calibration_summary,
                                                ensemble_gains, gains_findings, gains_markdown, loss_markdown)

STUDY_JSON, STUDY_MD, CURVE_PNG = "study.json", "study.md", "learning_curve.png"
METRICS = (("accuracy", "test accuracy"), ("macro_f1", "test macro-F1"))  # (key, title in running text)
MULTILABEL_METRICS = (("micro_f1", "test micro-F1"), ("macro_f1", "test macro-F1"))


def metrics_of(multi_label: bool) -> tuple:
    """The study's two figures (the first is its headline): accuracy or, for multi-label texts, micro-F1."""
    return MULTILABEL_METRICS if multi_label else METRICS


def cell_record(cell, folder: Path) -> dict:
    """One finished cell as a JSON-ready record (scores read back from its run folder)."""
    try:
        metrics = json.loads((folder / "metrics.json").read_text(encoding="utf-8"))
        report = json.loads((folder / "report.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise TextxferError(f"{folder}: cannot read the cell's metrics.json / report.json ({exc}); "
                            "delete the folder and run the study again to retrain it") from None
    scores = {split: {k: metrics[split][k] for k, _ in metrics_of(bool(metrics[split].get("multi_label")))}
              for split in metrics}
    check = report.get("model_check") or {}
    record = {"variant": cell.variant.text, "pipeline": cell.variant.pipeline, "size": cell.size, "seed": cell.seed,
              "folder": cell.folder, **scores, "degenerate": check.get("degenerate"),
              "fit_seconds": (report.get("timing") or {}).get("fit_seconds")}
    calibration = calibration_of(report)
    if calibration:
        record["calibration"] = calibration
    curve = loss_curve.of_run(folder)
    if curve and curve["evaluations"]:
        record["loss_curve"] = curve
    return record


def interval(values: list[float]) -> dict:
    """Mean, sample sd, and the 95% t-interval of the mean (``ci95`` None for a single value; everything None
    for no value: every cell of that variant and size was left out)."""
    from scipy.stats import t

    if not values:
        return {"mean": None, "sd": None, "ci95": None, "n": 0}
    array = np.asarray(values, dtype=float)
    mean = float(array.mean())
    if len(array) < 2:
        return {"mean": mean, "sd": 0.0, "ci95": None, "n": len(array)}
    sd = float(array.std(ddof=1))
    half = float(t.ppf(0.975, len(array) - 1) * sd / math.sqrt(len(array)))
    return {"mean": mean, "sd": sd, "ci95": [mean - half, mean + half], "n": len(array)}


def summarise(records: list[dict], variants, sizes: list[int], metrics=METRICS) -> dict:
    """variant → size → {accuracy (or micro_f1), macro_f1: interval, cells, degenerate_cells}."""
    summary = {}
    for variant in variants:
        summary[variant.text] = {}
        for size in sizes:
            cells = [r for r in records if r["variant"] == variant.text and r["size"] == size]
            summary[variant.text][str(size)] = {
                **{key: interval([c["test"][key] for c in cells]) for key, _ in metrics},
                "cells": len(cells), "degenerate_cells": sum(bool(c["degenerate"]) for c in cells)}
    return summary


def _correct(output: Path, record: dict, references: np.ndarray) -> np.ndarray | None:
    """Per-test-text correctness of one cell, from its ``predictions.json`` (None when it has none); for multi-label
    ``references`` (0/1 rows), the cell's 0/1 predictions instead."""
    try:
        saved = json.loads((output / record["folder"] / "predictions.json").read_text(encoding="utf-8"))
        predicted = saved["splits"]["test"]["predicted"]
        if references.ndim == 2:  # label-id lists per row
            matrix = np.zeros(references.shape, dtype=np.int64)
            for row, ids in enumerate(predicted):
                matrix[row, ids] = 1
            return matrix if len(predicted) == len(references) else None
        predicted = np.asarray(predicted)
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        return None
    return predicted == references if predicted.shape == references.shape else None


def paired_tests(output: Path, records: list[dict], variants, sizes: list[int], references: np.ndarray,
                 headline: str = "accuracy") -> dict:
    """size → {"best": variant, "tests": {other: McNemar result}}: the best variant by mean test ``headline``
    against each other one, on the paired test predictions pooled over the seeds (the same seeds' cells); for
    multi-label ``references``, the paired bootstrap of micro-F1 (other as ``a``, best as ``b``)."""
    from textxfer.evaluation.report import mcnemar
    from textxfer.evaluation.report_multilabel import paired_bootstrap

    names = [v.text for v in variants]
    results = {}
    for size in sizes:
        cells = {(r["variant"], r["seed"]): r for r in records if r["size"] == size}
        means = {n: np.mean([r["test"][headline] for (v, _), r in cells.items() if v == n]) for n in names
                 if any(v == n for v, _ in cells)}  # a variant whose cells were all left out has no mean
        if not means:
            continue
        best = max(means, key=lambda n: means[n])
        tests = {}
        for other in (n for n in means if n != best):
            seeds = sorted(s for (v, s) in cells if v == best and (other, s) in cells)
            pairs = [(_correct(output, cells[(best, s)], references), _correct(output, cells[(other, s)], references))
                     for s in seeds]
            if not pairs or any(a is None or b is None for a, b in pairs):
                tests[other] = None  # a cell without predictions.json (trained by an older textxfer)
                continue
            best_rows, other_rows = np.concatenate([a for a, _ in pairs]), np.concatenate([b for _, b in pairs])
            if references.ndim == 2:
                tests[other] = paired_bootstrap(other_rows, best_rows, np.concatenate([references] * len(pairs)))
            else:
                tests[other] = mcnemar(best_rows, other_rows)
        results[str(size)] = {"best": best, "tests": tests}
    return results


def findings(study: dict) -> list[str]:
    """Plain sentences: where fine-tuning overtakes the baseline, and where the variants are within noise."""
    variants, sizes, summary, paired = study["variants"], study["sizes"], study["summary"], study["paired"]
    pipelines = dict(zip(variants, study["pipelines"]))
    key, title = study.get("metrics", METRICS)[0]
    mean = lambda v, n: summary[v][str(n)][key]["mean"]  # noqa: E731  (None: every cell left out)
    best_of = lambda group, n: max((mean(v, n) for v in group if mean(v, n) is not None), default=None)  # noqa: E731
    out = []
    baselines = [v for v in variants if pipelines[v] == "baseline"]
    tuned = [v for v in variants if pipelines[v] == "finetune"]
    if baselines and tuned:
        ahead = [n for n in sizes if None not in (best_of(tuned, n), best_of(baselines, n))
                 and best_of(tuned, n) > best_of(baselines, n)]
        start = next((n for i, n in enumerate(sizes) if all(m in ahead for m in sizes[i:])), None)
        if start is None:
            out.append("Fine-tuning does not stay ahead of the baseline at the largest sizes studied.")
        else:
            out.append(f"Fine-tuning's best variant is ahead of the best baseline in mean {title} from "
                       f"{start:,} training texts on" + (" (every size studied)." if start == sizes[0] else "."))
    if len(variants) < 2:  # nothing to compare across variants: say how the one variant's curve goes instead
        return out + [_curve_sentence(variants[0], sizes, mean, title)] if variants else out
    test_name = "paired bootstrap of micro-F1" if key == "micro_f1" else "McNemar"
    for n in (n for n in sizes if str(n) in paired):
        entry = paired[str(n)]
        tied = [o for o, t in entry["tests"].items() if t is not None and not t["significant"]]
        beaten = [o for o, t in entry["tests"].items() if t is not None and t["significant"]]
        sentence = f"At {n:,} texts `{entry['best']}` is best ({mean(entry['best'], n):.4f})"
        if tied:
            sentence += (f"; within noise of it ({test_name}, pooled over seeds, p ≥ 0.05): "
                         + ", ".join(f"`{o}`" for o in tied))
        if beaten:
            sentence += "; significantly below it: " + ", ".join(f"`{o}`" for o in beaten)
        out.append(sentence + ".")
    return out + gains_findings(study.get("ensembles") or {})


def _curve_sentence(variant: str, sizes: list[int], mean, title: str = "test accuracy") -> str:
    """One variant's mean test accuracy (or ``title``'s figure) size by size, and whether the curve dips anywhere."""
    sizes = [n for n in sizes if mean(variant, n) is not None]  # sizes whose cells were all left out: no point
    points = ", ".join(f"{n:,} texts {mean(variant, n):.4f}" for n in sizes)
    dips = [(a, b) for a, b in zip(sizes, sizes[1:]) if mean(variant, b) < mean(variant, a)]
    verdict = ("it never dips as the texts grow" if not dips else
               "it dips " + ", ".join(f"from {a:,} to {b:,} texts" for a, b in dips))
    return f"`{variant}` mean {title}: {points}; " + (verdict if len(sizes) > 1 else "one size only") + "."


def _cell_text(entry: dict, key: str) -> str:
    stats = entry[key]
    if not stats["n"]:
        return "– (no cell finished)"
    text = f"{stats['mean']:.4f} ± {stats['sd']:.4f}"
    if stats["ci95"]:
        text += f" [{stats['ci95'][0]:.3f}, {stats['ci95'][1]:.3f}]"
    if entry["degenerate_cells"]:
        text += f" ⚠ {entry['degenerate_cells']}/{entry['cells']} degenerate"
    return text


# Per paired test: (the sentence above the table, the test's column headings, its cells).
_MCNEMAR = ("McNemar's test on the paired test predictions, pooled over the seeds",
            ("only best right", "only other right"),
            lambda t: (f"{t['a_only_correct']:,}", f"{t['b_only_correct']:,}"))
_BOOTSTRAP = ("The paired bootstrap of micro-F1 over the test texts, the seeds' predictions pooled",
              ("best − other [95% interval]",),
              lambda t: (f"{t['difference']:+.4f} [{t['interval'][0]:+.4f}, {t['interval'][1]:+.4f}]",))


def _paired_markdown(study: dict) -> list[str]:
    """The paired-test table: at each size the best variant against each other one (McNemar's test, or for a
    multi-label study the paired bootstrap of micro-F1)."""
    key = study.get("metrics", METRICS)[0][0]
    sentence, headings, cells = _BOOTSTRAP if key == "micro_f1" else _MCNEMAR
    figure = "micro-F1" if key == "micro_f1" else "accuracy"
    out = ["## Best variant against each other one", "",
           f"{sentence} (each seed's cells share their training subset and the test split).", "",
           f"| training texts | best (mean {figure}) | against | " + " | ".join(headings) + " | p | verdict |",
           "|---:|---|---|" + "---:|" * len(headings) + "---:|---|"]
    for size in (n for n in study["sizes"] if str(n) in study["paired"]):
        entry = study["paired"][str(size)]
        best = entry["best"]
        for other, test in entry["tests"].items():
            if test is None:
                out.append(f"| {size:,} | `{best}` | `{other}` | " + "– | " * (len(headings) + 1)
                           + "no saved predictions |")
                continue
            verdict = "significant" if test["significant"] else "within noise"
            out.append(f"| {size:,} | `{best}` ({study['summary'][best][str(size)][key]['mean']:.4f}) | `{other}` | "
                       + " | ".join(cells(test)) + f" | {test['p_value']:.3g} | {verdict} |")
    return out


def study_markdown(study: dict) -> str:
    """``study.md``: one table per metric (rows: sizes, columns: variants), then the degenerate cells."""
    variants, sizes, seeds = study["variants"], study["sizes"], study["seeds"]
    out = ["# Learning-curve study", "",
           f"{len(study['cells'])} cells: {len(variants)} variant(s) × {len(sizes)} training-set size(s) × "
           f"{len(seeds)} seed(s) ({', '.join(map(str, seeds))}). Every cell trains on a nested stratified subset of "
           f"the one training split ({study['train_size']:,} texts) and is scored on the same test split "
           f"({study['test_size']:,} texts); sizes of one seed are nested (a smaller subset lies inside a larger one).",
           ""]
    for key, title in study.get("metrics", METRICS):
        out += [f"## {title[0].upper() + title[1:]}: mean ± sd over seeds [95% interval of the mean]", "",
                "| training texts | " + " | ".join(f"`{v}`" for v in variants) + " |",
                "|---:|" + "---|" * len(variants)]
        for size in sizes:
            row = [_cell_text(study["summary"][v][str(size)], key) for v in variants]
            out.append(f"| {size:,} | " + " | ".join(row) + " |")
        out.append("")
    if len(variants) > 1:  # one variant has no other to be tested against
        out += _paired_markdown(study)
    out += ["", *gains_markdown(study.get("ensembles") or {}, study.get("metrics", METRICS)[0][1])]
    out += ["## In words", "", *(f"- {line}" for line in study["findings"]), ""]
    out += calibration_markdown(study.get("calibration") or {})
    out += loss_markdown(study["cells"])
    degenerate = [c for c in study["cells"] if c["degenerate"]]
    if study.get("failed_cells"):
        out += ["## Cells left out", "", "These cells did not finish; the tables above are over the cells that did "
                "(their `n` counts them). Run the study again to retry them.", ""]
        out += [f"- {f['line'][len('study: '):] if f['line'].startswith('study: ') else f['line']}"
                for f in study["failed_cells"]]
        out.append("")
    if degenerate:
        out += ["## Degenerate cells", "", "Models that predict one class for (nearly) every validation text, or "
                "whose validation macro-F1 is not above the majority answer's (see `model_check` in each "
                "cell's `report.json`):", ""]
        out += [f"- `{c['variant']}`, {c['size']:,} texts, seed {c['seed']}: `{c['folder']}`" for c in degenerate]
        out.append("")
    out += ["## Figure", "", f"![learning curve]({CURVE_PNG})", ""]
    return "\n".join(out)


def plot_learning_curve(study: dict, path: Path):
    """Test accuracy and macro-F1 against training-set size (log x), a line per variant, 95% bands."""
    from textxfer.evaluation.report import draw_figure

    sizes = study["sizes"]

    def paint(fig):
        for ax, (key, title) in zip(fig.subplots(1, 2), study.get("metrics", METRICS)):
            for i, variant in enumerate(study["variants"]):
                points = [(n, study["summary"][variant][str(n)][key]) for n in sizes]
                points = [(n, e) for n, e in points if e["n"]]  # a size whose cells were all left out: no point
                entries = [e for _, e in points]
                ax.plot([n for n, _ in points], [e["mean"] for e in entries], marker="o", color=f"C{i}", label=variant)
                bands = [(n, e["ci95"]) for n, e in points if e["ci95"]]
                if bands:
                    ax.fill_between([n for n, _ in bands], [max(0.0, b[0]) for _, b in bands],
                                    [min(1.0, b[1]) for _, b in bands], color=f"C{i}", alpha=0.15, linewidth=0)
            ax.set_xscale("log")
            ax.set(xlabel="training texts (log scale)", ylabel=title, title=f"{title} (95% band over seeds)")
            ax.set_xticks(sizes, [f"{n:,}" for n in sizes])
            ax.minorticks_off()
            ax.grid(alpha=0.3)
        fig.axes[0].legend(fontsize=8, loc="lower right")

    return draw_figure(Path(path), (11.0, 4.2), paint)


def write_study(output: Path, records: list[dict], variants, sizes: list[int], seeds: list[int], data,
                failed: list[dict] = ()) -> dict:
    """Write ``study.json``, ``study.md`` and ``learning_curve.png`` into ``output``; returns the study dict.
    ``failed``: cells that did not finish (:func:`textxfer.evaluation.study.failed_cell`), listed, left out."""
    references = data.labels.targets(data.test.labels)
    metrics = metrics_of(data.labels.multi_label)
    degenerate = [r for r in records if r["degenerate"]]
    warnings = []
    if failed:
        warnings.append(f"WARNING: {len(failed)} of {len(records) + len(failed)} cells did not finish and are left out "
                        f"(listed under 'Cells left out' in {STUDY_MD}); run the study again to retry them")
    if degenerate:
        where = "; ".join(f"{r['variant']} n={r['size']} seed={r['seed']}" for r in degenerate[:6])
        more = f" and {len(degenerate) - 6} more" if len(degenerate) > 6 else ""
        warnings.append(f"WARNING: {len(degenerate)} of {len(records)} cells are degenerate ({where}{more}); "
                        f"they are flagged in {STUDY_MD}")
    study = {"variants": [v.text for v in variants], "sizes": sizes, "seeds": seeds, "train_size": len(data.train),
             **({"metrics": [list(m) for m in metrics]} if data.labels.multi_label else {}),
             "test_size": len(data.test), "split": "split.json", "cells": records,
             "pipelines": [v.pipeline for v in variants], "summary": summarise(records, variants, sizes, metrics),
             "paired": paired_tests(output, records, variants, sizes, references, metrics[0][0]), "warnings": warnings,
             "ensembles": ensemble_gains(records, variants, sizes, metrics[0][0]), "failed_cells": list(failed),
             "calibration": calibration_summary(records, variants, sizes),
             "files": {"json": STUDY_JSON, "markdown": STUDY_MD, "plot": CURVE_PNG}}
    overfit = [r for r in records if (r.get("loss_curve") or {}).get("overfitting")]
    if overfit:
        warnings.append(f"note: {len(overfit)} fine-tuning cell(s) show overfitting (validation loss rising while "
                        f"training loss falls); see 'Training and validation loss' in {STUDY_MD}")
    study["findings"] = findings(study)
    try:
        (output / STUDY_JSON).write_text(json.dumps(study, indent=1, ensure_ascii=False), encoding="utf-8")
        (output / STUDY_MD).write_text(study_markdown(study), encoding="utf-8")
        plot_learning_curve(study, output / CURVE_PNG)
    except OSError as exc:
        raise TextxferError(f"cannot write the study report into {output}: {exc}") from exc
    return study
