"""Little data: textxfer's defaults against SetFit (same encoder) and two cheap baselines, on the same subsets.

Every system sees the same nested, stratified training subsets of one saved split (``textxfer study``'s
subsets: for a seed the 128-text subset lies inside the 500-text one) and is scored on the same test
split by the same scorer (``textxfer.core.metrics.score``):

- ``textxfer finetune`` with its default settings and ``textxfer baseline`` with its defaults — run as a
  ``textxfer study`` into ``--output`` (finished cells are reused, so an interrupted bench resumes);
- SetFit 1.2 (a dev-only reference: ``pip install -e '.[bench]'``) on the same encoder, the bundled
  multilingual-e5-small, as a Sentence Transformer (mean pooling, e5's own pooling): 20 pair iterations,
  1 epoch, batch 16, logistic-regression head — trained only at ``--setfit-sizes`` (default 32: 7 minutes
  of training a seed alone on 2 cores; 128 texts took 37 minutes a seed) and capped at ``--setfit-max-steps``
  contrastive steps (the cap binds from 500 texts on);
- character 1–3-gram TF-IDF + logistic regression (the reference of ``scripts/bench_baseline.py``).

Prints mean ± sd over the seeds per system and size, and writes ``bench_small_data.json`` and
``bench_small_data.md`` into ``--output``. Run: ``python scripts/bench_small_data.py [--sizes 32 128]
[--seeds 3] [--output runs/small_data]``. The defaults (32 and 128 texts, 3 seeds, SetFit at 32) took
51 minutes on 2 cores from a fresh folder (BENCHMARKS.md; the issue's budget is 60). Larger sizes are
given explicitly and do not fit that budget (``--sizes 500 1000 --skip-setfit``: a cell of the defaults
fine-tunes for about 11 minutes at 500 texts; the full split, ``all``, for about an hour a seed — so it is
measured with one seed).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SETFIT_MAX_STEPS = 320  # the uncapped step count of 128 texts: 20 iterations × 2 pairs × 128 texts / batch 16


def reference_class():
    """``Reference`` (TF-IDF + LR) from ``scripts/bench_baseline.py``."""
    spec = importlib.util.spec_from_file_location("bench_baseline", ROOT / "scripts" / "bench_baseline.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.Reference


def setfit_cell(train_texts, train_y, test_texts, seed: int, max_steps: int, max_length: int) -> dict:
    """Train SetFit on one subset; ``{"predicted": [...], "fit_seconds", "steps", "capped"}``."""
    import datasets
    from setfit import SetFitModel, Trainer, TrainingArguments

    from textxfer.transformer.bundled import resolve_bundled

    model = SetFitModel.from_pretrained(str(resolve_bundled("multilingual-e5-small")))
    model.model_body.max_seq_length = max_length
    pairs_steps = int(np.ceil(20 * 2 * len(train_texts) / 16))
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="setfit-") as scratch:  # SetFit's checkpoints: never in the work tree
        arguments = TrainingArguments(output_dir=scratch, save_strategy="no", batch_size=16, num_epochs=1,
                                      num_iterations=20, seed=seed, show_progress_bar=False,
                                      max_steps=max_steps if pairs_steps > max_steps else -1)
        trainer = Trainer(model=model, args=arguments,
                          train_dataset=datasets.Dataset.from_dict({"text": list(train_texts), "label": list(train_y)}))
        trainer.train()
    fit_seconds = time.perf_counter() - started
    predicted = np.asarray(model.predict(list(test_texts), batch_size=64, show_progress_bar=False))
    return {"predicted": [int(p) for p in predicted], "fit_seconds": round(fit_seconds, 1),
            "steps": min(pairs_steps, max_steps), "capped": pairs_steps > max_steps}


def cached(path: Path, compute) -> dict:
    """``compute()``'s record, kept as JSON at ``path`` so a re-run skips it."""
    if path.is_file():
        return json.loads(path.read_text(encoding="utf-8"))
    record = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record), encoding="utf-8")
    return record


def mean_sd(values: list[float]) -> str:
    return f"{np.mean(values):.4f} ± {np.std(values, ddof=1) if len(values) > 1 else 0.0:.4f}"


def main() -> None:
    from textxfer.data.dataset import DataOptions, load_data
    from textxfer.core.metrics import score
    from textxfer.baseline.pipeline import BaselineConfig
    from textxfer.transformer.pipeline import FinetuneConfig
    from textxfer.evaluation.study import Cell, nested_order, parse_sizes, parse_variant, run_study, same_automatic_choices, subset

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(ROOT / "sample_data" / "reviews.csv"))
    parser.add_argument("--sizes", nargs="+", default=["32", "128"],
                        help="training-set sizes (or all; 500 texts take about 11 minutes a seed on 2 cores, the full "
                             "split about an hour; the default 32 and 128 run in about 51 minutes with SetFit at 32)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--output", default=str(ROOT / "runs" / "small_data"))
    parser.add_argument("--setfit-sizes", nargs="+", default=["32"],
                        help="sizes at which SetFit is trained (its records at other sizes, saved earlier, are still "
                             "reported): 32 texts take about 7 minutes of training a seed on 2 cores, 128 about 37")
    parser.add_argument("--setfit-max-steps", type=int, default=SETFIT_MAX_STEPS)
    parser.add_argument("--setfit-max-length", type=int, default=256, help="SetFit's max tokens per text")
    parser.add_argument("--skip-textxfer", action="store_true", help="only SetFit and TF-IDF (textxfer cells: a study)")
    parser.add_argument("--skip-setfit", action="store_true")
    parser.add_argument("--report-only", action="store_true",
                        help="train nothing: report the finished cells and saved SetFit records only")
    args = parser.parse_args()
    output = Path(args.output)
    started = time.perf_counter()

    options = DataOptions(data=args.data)
    classes = {"baseline": BaselineConfig, "finetune": FinetuneConfig}
    if not (args.skip_textxfer or args.report_only):
        run_study(options, [parse_variant(v, classes) for v in ("baseline", "finetune")], args.sizes, args.seeds,
                  output, {"baseline": BaselineConfig(), "finetune": FinetuneConfig()})
    data = load_data(options)
    labels = data.labels
    sizes = parse_sizes(args.sizes, len(data.train))
    seeds = [options.seed + i for i in range(args.seeds)]
    setfit_sizes = set(parse_sizes(args.setfit_sizes, len(data.train)))
    y_test = np.asarray(labels.encode(data.test.labels))
    Reference = reference_class()
    results: dict[str, dict[int, list[dict]]] = {}
    defaults, stale = parse_variant("finetune", classes), []

    def add(system: str, size: int, seed: int, predicted, fit_seconds, **extra) -> None:
        metrics = score(y_test, np.asarray(predicted), labels)
        results.setdefault(system, {}).setdefault(size, []).append(
            {"seed": seed, "accuracy": metrics["accuracy"], "macro_f1": metrics["macro_f1"], "fit_seconds": fit_seconds, **extra})

    for size in sizes:
        for seed in seeds:
            train = subset(data, nested_order(data.train.labels, seed), size).train
            y_train = labels.encode(train.labels)
            # Every study variant found in the output (the defaults: cells/baseline, cells/finetune).
            for variant in sorted(p.name for p in (output / "cells").glob("*") if p.is_dir()):
                folder = output / "cells" / variant / f"n{size}-seed{seed}"
                if variant == "finetune" and (folder / "report.json").is_file() and not same_automatic_choices(
                        folder, Cell(defaults, size, seed), FinetuneConfig()):
                    stale.append(str(folder))  # made by earlier rules (--strategy auto's thresholds, pooling)
                    continue
                if (folder / "predictions.json").is_file():
                    saved = json.loads((folder / "predictions.json").read_text(encoding="utf-8"))["splits"]["test"]
                    fit = json.loads((folder / "report.json").read_text(encoding="utf-8"))["timing"]["fit_seconds"]
                    name = f"textxfer {variant} (defaults)" if variant in ("baseline", "finetune") else f"textxfer {variant}"
                    add(name, size, seed, saved["predicted"], fit)
            reference = Reference()
            t0 = time.perf_counter()
            reference.fit(train.texts, np.asarray(y_train))
            fit_seconds = time.perf_counter() - t0
            add("TF-IDF + LR", size, seed, reference.predict_proba(data.test.texts).argmax(axis=1), fit_seconds)
            saved = output / "setfit" / f"n{size}-seed{seed}-steps{args.setfit_max_steps}.json"
            if not args.skip_setfit and (saved.is_file() or (not args.report_only and size in setfit_sizes)):
                print(f"SetFit: {size} texts, seed {seed} …", flush=True)
                record = cached(saved, lambda: setfit_cell(train.texts, y_train, data.test.texts, seed,
                                                           args.setfit_max_steps, args.setfit_max_length))
                add("SetFit (e5-small, 20 iterations)", size, seed, record["predicted"], record["fit_seconds"],
                    capped=record["capped"], steps=record["steps"])

    lines = [f"data: {args.data}, test {len(data.test):,} texts; seeds {seeds}; {os.cpu_count()} CPU cores, "
             f"Python {platform.python_version()}; wall {time.perf_counter() - started:.0f} s", "",
             "| system | " + " | ".join(f"{n:,} texts" for n in sizes) + " |",
             "|---|" + "---|" * len(sizes)]
    for system, by_size in results.items():
        cells = []
        for n in sizes:
            rows = by_size.get(n, [])
            if not rows:
                cells.append("–")
                continue
            cap = " (capped)" if any(r.get("capped") for r in rows) else ""
            seeds_note = f" ({len(rows)} seed{'s' * (len(rows) != 1)})" if len(rows) != len(seeds) else ""
            cells.append(f"{mean_sd([r['accuracy'] for r in rows])}{seeds_note}{cap}")
        lines.append(f"| {system} | " + " | ".join(cells) + " |")
    if stale:
        lines += ["", f"Not reported: {len(stale)} cell(s) of the defaults made by earlier rules (today's defaults would "
                  "choose another strategy or pooling; run without --report-only to redo them): " + ", ".join(stale)]
    text = "\n".join(lines)
    print(text)
    output.mkdir(parents=True, exist_ok=True)
    (output / "bench_small_data.md").write_text(text + "\n", encoding="utf-8")
    (output / "bench_small_data.json").write_text(json.dumps(results, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
