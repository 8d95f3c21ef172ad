"""Little data on several corpora: each fixed strategy, ``--strategy auto`` and TF-IDF + LR on the same subsets.

For each corpus (``--corpora``; built by ``scripts/corpora.py``: the Chinese reviews of ``sample_data/``, the
10-topic THUCNews headlines, the 5-topic BBC News articles) one saved split is made — validation and test of
10 % each, at most ``--max-test`` (1,000) texts each — and every system sees the same nested, stratified
training subsets of it (``textxfer study``'s: for a seed the 128-text subset lies inside the 500-text one),
scored on the same test texts by the one scorer (``textxfer.core.metrics.score``):

- the fixed strategies, as ``textxfer study`` cells (finished cells are reused, so the grid resumes across
  sessions): ``head-only`` at every size, ``contrastive`` up to 128 texts (and beyond where auto's budget would
  try it: the 128-text cells' time scaled by size fits ``--time-budget``), ``fine-tuning``
  (``freeze-embeddings``) from 128;
- ``auto``: not trained again — the winner that ``--strategy auto`` would keep among those cells, by
  :func:`textxfer.transformer.auto_choice.winner` on their saved validation predictions, trying them in its
  order (with ``--time-budget``, leaving out what the cells' recorded seconds put past it; by default none are:
  cells trained while other work shared the cores record inflated seconds, so a real search's budget is timed on
  its own). ``tests/test_auto_choice.py`` shows that a search trains each candidate as the fixed-strategy run does. Also shown: the same choice made on a
  random max(20, n/4) of the validation texts, to see what a small validation split does to it. Where a real
  search's cell exists (``--variants auto`` trains them: the ``finetune`` study variant, the defaults), it stands
  for auto's row instead — its own budget and estimates, for corpora whose candidate cells cost too much to train;
- with ``--variants augment``: head-only with ``--augment word-dropout`` at sizes up to 128, beside head-only;
- character 1–3-gram TF-IDF + logistic regression (``scripts/bench_baseline.py``'s reference);
- with ``--unlabelled N``: ``auto`` self-trained on N texts of the training split without their labels (a
  ``textxfer study`` with ``--unlabelled``, at 32 and 128 texts), beside the first model of the same runs;
- SetFit 1.2 on the same encoder where ``--setfit-sizes`` asks (a dev-only reference: ``pip install -e '.[bench]'``).

Prints and writes ``bench_small_data.md``/``.json`` into ``--output``: per corpus, test accuracy mean ± sd over the
seeds and mean fit minutes, auto's choices, whether its curve dips, and which cells are still missing. Run:
``python scripts/bench_small_data.py [--corpora reviews thucnews bbc] [--sizes 32 128 500] [--seeds 3]
[--variants head-only contrastive fine-tuning auto augment] [--report-only]``.
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import os
import platform
import sys
import tempfile
import time
from collections import Counter
from dataclasses import replace
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


VARIANTS = {"head-only": "finetune:strategy=head-only", "contrastive": "finetune:strategy=contrastive",
            "fine-tuning": "finetune:strategy=freeze-embeddings"}
CONTRASTIVE_UP_TO, FINETUNE_FROM = 128, 128  # the grid: contrastive up to 128 texts, fine-tuning from 128
AUGMENTED = {"head-only, word dropout": "finetune:strategy=head-only,augment=word-dropout"}  # the augmentation variant
AUGMENT_UP_TO = 128  # measured at 32 and 128 texts, beside head-only
AUTO = "finetune"  # the study variant of a real --strategy auto search (the defaults)
UNLABELLED_UP_TO = 128  # --unlabelled is measured at 32 and 128 labelled texts


def corpus_options(path: Path, max_test: int, seed: int):
    """The saved split of a corpus: validation and test of 10 % each, at most ``max_test`` texts each."""
    from textxfer.data.dataset import DataOptions

    with open(path, encoding="utf-8") as handle:
        rows = sum(1 for _ in handle) - 1
    share = min(0.1, max_test / rows)
    return DataOptions(data=str(path), validation_size=share, test_size=share, seed=seed)


def cell_folder(output: Path, variant: str, size: int, seed: int) -> Path:
    """Where ``textxfer study`` keeps the cell of ``variant`` (its text) at ``size`` texts and ``seed``."""
    from textxfer.baseline.pipeline import BaselineConfig
    from textxfer.evaluation.study import Cell, parse_variant
    from textxfer.transformer.pipeline import FinetuneConfig

    parsed = parse_variant(variant, {"baseline": BaselineConfig, "finetune": FinetuneConfig})
    return output / Cell(parsed, size, seed).folder


def saved_cell(folder: Path) -> dict | None:
    """A finished cell's validation and test predictions, fit seconds and recipe (None when it is not there)."""
    try:
        splits = json.loads((folder / "predictions.json").read_text(encoding="utf-8"))["splits"]
        report = json.loads((folder / "report.json").read_text(encoding="utf-8"))
    except (OSError, ValueError, KeyError):
        return None
    return {"validation": splits["validation"]["predicted"], "test": splits["test"]["predicted"],
            "seconds": report["timing"]["fit_seconds"], "recipe": report["fit"]["recipe"]}


def derived_auto(cells: dict[str, dict], size: int, y_validation, num_labels: int, seed: int, budget_seconds: float,
                 validation_rows=None, over_budget=()):
    """What ``--strategy auto`` would keep from these fixed-strategy cells (the same candidates, budget order and
    one-standard-error rule; each cell's own fit seconds stand for the search's estimate). ``validation_rows``:
    choose on those validation texts only (a smaller validation split). ``(winner, details)`` or None."""
    from textxfer.transformer import auto_choice

    names = {"head-only": "head-only", "contrastive": "contrastive", "freeze-embeddings": "fine-tuning"}
    wanted = auto_choice.candidates(size)
    if "head-only" not in cells:  # the first candidate, always tried
        return None
    spent, results, skipped = cells["head-only"]["seconds"], [], list(over_budget)
    rows = np.arange(len(y_validation)) if validation_rows is None else np.asarray(validation_rows)
    order = ["head-only"] + sorted((s for s in wanted[1:] if names[s] in cells), key=lambda s: cells[names[s]]["seconds"])
    for strategy in order:
        cell = cells[names[strategy]]
        if strategy != "head-only":
            if budget_seconds is not None and spent + cell["seconds"] > budget_seconds:
                skipped.append(strategy)
                continue
            spent += cell["seconds"]
        results.append({"strategy": strategy, "seconds": cell["seconds"],
                        "predicted": np.asarray(cell["validation"])[rows]})
    missing = [s for s in wanted if names[s] not in cells and s not in skipped]
    winner, details = auto_choice.winner(results, np.asarray(y_validation)[rows], num_labels, seed)
    details.update({"skipped": skipped, "missing": missing, "seconds": spent})
    return names[winner], details


def searched_cell(folder: Path) -> dict | None:
    """A finished cell of a real ``--strategy auto`` search (the ``finetune`` study variant): its test predictions,
    fit seconds, the strategy it kept, what its budget left out and each candidate's seconds (None when absent)."""
    cell = saved_cell(folder)
    if cell is None:
        return None
    recipe = cell["recipe"]
    search = recipe.get("search") or {}
    seconds = {c["strategy"]: c["seconds"] for c in search.get("candidates", [])}
    seconds.update({s["strategy"]: s["estimated_seconds"] for s in search.get("skipped", [])})
    named = {"freeze-embeddings": "fine-tuning"}  # the table's name of each strategy
    return {**cell, "winner": named.get(recipe["strategy"], recipe["strategy"]),
            "skipped": [named.get(s["strategy"], s["strategy"]) for s in search.get("skipped", [])],
            "candidate_seconds": seconds}


def contrastive_fits(output: Path, size: int, seeds: list[int], budget: float | None) -> bool | None:
    """Whether auto's budget would let contrastive run at ``size`` (> 128) texts: the pair steps grow with the texts,
    so the 128-text cells' mean time scaled by size is the estimate — of the contrastive cells, or else of the real
    searches' contrastive time or estimate (None: nothing at 128 texts to scale yet)."""
    smaller = [saved_cell(cell_folder(output, VARIANTS["contrastive"], CONTRASTIVE_UP_TO, s)) for s in seeds]
    times = [c["seconds"] for c in smaller if c]
    if not times:
        searched = [searched_cell(cell_folder(output, AUTO, CONTRASTIVE_UP_TO, s)) for s in seeds]
        times = [c["candidate_seconds"]["contrastive"] for c in searched if c and "contrastive" in c["candidate_seconds"]]
    return None if not times else bool(np.mean(times) * size / CONTRASTIVE_UP_TO <= (budget or 15 * 60))


def run_corpus(name: str, args, output: Path) -> dict:
    """Train the corpus's missing cells (resumable), then its results: system → size → [per-seed records]."""
    from textxfer.baseline.pipeline import BaselineConfig
    from textxfer.core.metrics import score
    from textxfer.data.dataset import load_data
    from textxfer.evaluation.study import nested_order, parse_sizes, parse_variant, run_study, subset
    from textxfer.transformer.pipeline import FinetuneConfig

    sys.path.insert(0, str(ROOT / "scripts"))
    from corpora import build

    options = corpus_options(build(name), args.max_test, 42)
    data = load_data(options)
    labels, sizes = data.labels, parse_sizes(args.sizes, len(data.train))
    seeds = [options.seed + i for i in range(args.seeds)]
    classes = {"baseline": BaselineConfig, "finetune": FinetuneConfig}
    base = {"baseline": BaselineConfig(), "finetune": FinetuneConfig()}
    budget = None if args.time_budget is None else args.time_budget * 60
    for size in sizes:
        if args.report_only:
            break
        chosen = ["head-only"] + (["contrastive"] if size <= CONTRASTIVE_UP_TO else []) + (
            ["fine-tuning"] if size >= FINETUNE_FROM else [])
        chosen = [v for v in chosen if v in args.variants] + (["auto"] if "auto" in args.variants else []) + (
            list(AUGMENTED) if "augment" in args.variants and size <= AUGMENT_UP_TO else [])
        if size > CONTRASTIVE_UP_TO and "contrastive" in args.variants and contrastive_fits(output, size, seeds, budget):
            chosen.append("contrastive")
        for variant in chosen:
            print(f"{name}: {variant} at {size} texts × {len(seeds)} seeds", flush=True)
            text = {**VARIANTS, **AUGMENTED}.get(variant, AUTO)
            run_study(options, [parse_variant(text, classes)], [str(size)], args.seeds, output, base, progress=False)
    unlabelled_output = output.parent / f"{name}-unlabelled-{args.unlabelled}"
    if args.unlabelled and not args.report_only:
        # The training split without labels: args.unlabelled of its texts (each cell leaves its own training texts out)
        path = unlabelled_output / "unlabelled.csv"
        if not path.is_file():
            unlabelled_output.mkdir(parents=True, exist_ok=True)
            rng = np.random.default_rng(0)
            chosen = rng.choice(len(data.train), size=min(args.unlabelled, len(data.train)), replace=False)
            with open(path, "w", encoding="utf-8", newline="") as handle:
                csv.writer(handle).writerows([("text",), *((data.train.texts[i],) for i in sorted(chosen))])
        options_u = replace(options, unlabelled=str(path))
        for size in (n for n in sizes if n <= UNLABELLED_UP_TO):
            print(f"{name}: auto with {args.unlabelled:,} unlabelled texts at {size} texts × {len(seeds)} seeds", flush=True)
            run_study(options_u, [parse_variant("finetune", classes)], [str(size)], args.seeds, unlabelled_output, base,
                      progress=False)
    y_validation = np.asarray(labels.encode(data.validation.labels))
    y_test = np.asarray(labels.encode(data.test.labels))
    results: dict[str, dict[int, list[dict]]] = {}
    missing: list[str] = []
    choices: dict[int, list[str]] = {}
    Reference = reference_class()

    def add(system, size, seed, predicted, seconds, **extra):
        metrics = score(y_test, np.asarray(predicted), labels)
        results.setdefault(system, {}).setdefault(size, []).append(
            {"seed": seed, "accuracy": metrics["accuracy"], "macro_f1": metrics["macro_f1"], "fit_seconds": seconds, **extra})

    for size in sizes:
        # contrastive beyond 128 texts left out by the budget: one estimate for the size, whatever the seed
        over = ["contrastive"] if size > CONTRASTIVE_UP_TO and contrastive_fits(output, size, seeds, budget) is False else []
        for seed in seeds:
            cells = {}
            for variant, text in VARIANTS.items():
                cell = saved_cell(cell_folder(output, text, size, seed))
                if cell:
                    cells[variant] = cell
                    add(f"{variant}", size, seed, cell["test"], cell["seconds"])
            for variant, text in AUGMENTED.items():  # not a candidate of auto: reported beside head-only
                cell = saved_cell(cell_folder(output, text, size, seed))
                if cell:
                    add(variant, size, seed, cell["test"], cell["seconds"])
            auto = derived_auto(cells, size, y_validation, len(labels), seed, budget, over_budget=over)
            searched = searched_cell(cell_folder(output, AUTO, size, seed))
            if searched:  # a real search trained at this cell: it is auto's row (and its own budget's choices)
                add("auto", size, seed, searched["test"], searched["seconds"], winner=searched["winner"],
                    skipped=searched["skipped"], searched=True)
                choices.setdefault(size, []).append(searched["winner"])
                if auto and not auto[1]["missing"]:
                    small = np.random.default_rng(seed).choice(len(y_validation), size=max(20, size // 4), replace=False)
                    small_winner, _ = derived_auto(cells, size, y_validation, len(labels), seed, budget, small, over)
                    add("auto, validation of max(20, n/4) texts", size, seed, cells[small_winner]["test"],
                        auto[1]["seconds"], winner=small_winner)
            elif auto is None or auto[1]["missing"]:
                missing.append(f"auto n={size} seed={seed}" + (f" (no {', '.join(auto[1]['missing'])} cell)" if auto else ""))
            else:
                winner, details = auto
                add("auto", size, seed, cells[winner]["test"], details["seconds"], winner=winner,
                    skipped=details["skipped"])
                choices.setdefault(size, []).append(winner)
                small = np.random.default_rng(seed).choice(len(y_validation), size=max(20, size // 4), replace=False)
                small_winner, _ = derived_auto(cells, size, y_validation, len(labels), seed, budget, small, over)
                add("auto, validation of max(20, n/4) texts", size, seed, cells[small_winner]["test"],
                    details["seconds"], winner=small_winner)
            self_trained = unlabelled_output / "cells" / "finetune" / f"n{size}-seed{seed}" / "report.json"
            if self_trained.is_file():
                record = json.loads(self_trained.read_text(encoding="utf-8")).get("self_training") or {}
                if record.get("test"):
                    for kept, system in (("without", "auto (its own search)"), (record["kept"], "auto + unlabelled")):
                        results.setdefault(system, {}).setdefault(size, []).append(
                            {"seed": seed, "accuracy": record["test"][kept]["accuracy"],
                             "macro_f1": record["test"][kept]["macro_f1"], "kept": record["kept"],
                             "fit_seconds": sum(record["seconds"].values()),
                             "pseudo_labels": sum(record.get("pseudo_labels", {}).values())})
            train = subset(data, nested_order(data.train.labels, seed), size).train
            reference = Reference()
            began = time.perf_counter()
            reference.fit(train.texts, np.asarray(labels.encode(train.labels)))
            add("TF-IDF + LR", size, seed, reference.predict_proba(data.test.texts).argmax(axis=1),
                time.perf_counter() - began)
            saved = output / "setfit" / f"n{size}-seed{seed}-steps{args.setfit_max_steps}.json"
            if saved.is_file() or (not args.report_only and str(size) in args.setfit_sizes):
                y_train = labels.encode(train.labels)
                record = cached(saved, lambda: setfit_cell(train.texts, y_train, data.test.texts, seed,
                                                           args.setfit_max_steps, args.setfit_max_length))
                add("SetFit (e5-small, 20 iterations)", size, seed, record["predicted"], record["fit_seconds"],
                    capped=record["capped"], steps=record["steps"])
    return {"corpus": name, "data": options.data, "classes": len(labels), "train": len(data.train),
            "validation": len(data.validation), "test": len(data.test), "sizes": sizes, "seeds": seeds,
            "results": results, "auto_choices": {str(k): v for k, v in choices.items()}, "missing": missing}


def corpus_markdown(record: dict) -> list[str]:
    sizes, seeds = record["sizes"], record["seeds"]
    out = [f"### {record['corpus']}: {record['classes']} classes; train {record['train']:,}, validation "
           f"{record['validation']:,}, test {record['test']:,} texts; seeds {seeds}", "",
           "| system | " + " | ".join(f"{n:,} texts" for n in sizes) + " |", "|---|" + "---|" * len(sizes)]
    for system, by_size in record["results"].items():
        row = []
        for n in sizes:
            rows = by_size.get(n) or by_size.get(str(n)) or []
            if not rows:
                row.append("–")
                continue
            note = f" ({len(rows)} seed{'s' * (len(rows) != 1)})" if len(rows) != len(seeds) else ""
            minutes = np.mean([r["fit_seconds"] for r in rows]) / 60
            row.append(f"{mean_sd([r['accuracy'] for r in rows])}{note}, {minutes:.1f} min")
        out.append(f"| {system} | " + " | ".join(row) + " |")
    searched = {n for n, rows in record["results"].get("auto", {}).items() if any(r.get("searched") for r in rows)}
    if searched:
        out += ["", "auto at " + ", ".join(f"{int(n):,}" for n in sorted(searched, key=int)) + " texts: real "
                "`--strategy auto` searches (their own time budget and estimates), not derived from the fixed cells."]
    if record["auto_choices"]:
        def left_out(n):
            runs = record["results"].get("auto", {}).get(int(n)) or record["results"].get("auto", {}).get(str(n)) or []
            skipped = sorted({s for r in runs for s in r.get("skipped", [])})
            return f" ({', '.join(skipped)} left out by the budget)" if skipped else ""

        out += ["", "auto's choices: " + "; ".join(
            f"{int(n):,} texts: " + ", ".join(f"{w} × {c}" for w, c in Counter(v).most_common()) + left_out(n)
            for n, v in record["auto_choices"].items())]
    means = {n: np.mean([r["accuracy"] for r in record["results"].get("auto", {}).get(n, [])] or [np.nan]) for n in sizes}
    known = [(n, m) for n, m in means.items() if not np.isnan(m)]
    dips = [(a, b) for (a, ma), (b, mb) in zip(known, known[1:]) if mb < ma]
    if len(known) > 1:
        out.append("auto's learning curve: " + ("never dips" if not dips else
                   "dips " + ", ".join(f"from {a:,} to {b:,} texts" for a, b in dips)) + ".")
    if record["missing"]:
        out.append("Missing: " + "; ".join(record["missing"]) + ".")
    return out + [""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpora", nargs="+", default=["reviews", "thucnews", "bbc"],
                        help="reviews (sample_data/), thucnews, bbc (built by scripts/corpora.py)")
    parser.add_argument("--sizes", nargs="+", default=["32", "128", "500"])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=[*VARIANTS, "auto", "augment"],
                        help="fixed strategies to train (auto is derived from them); 'auto' also trains real "
                             "--strategy auto searches, whose cells then stand for auto's row; 'augment' trains "
                             "head-only with --augment word-dropout up to 128 texts")
    parser.add_argument("--unlabelled", type=int, default=0,
                        help="also run auto with this many unlabelled texts (the training split's, labels removed) at "
                             "sizes up to 128: --unlabelled self-training (a study in <output>/<corpus>-unlabelled-N)")
    parser.add_argument("--max-test", type=int, default=1000, help="validation and test texts per corpus, at most")
    parser.add_argument("--time-budget", type=float, default=None,
                        help="minutes: leave out of auto's choice the candidate cells past this budget, by their recorded "
                             "fit seconds (default: none — cells trained while other work shared the cores record "
                             "inflated seconds; a real search's budget is measured on its own instead); contrastive "
                             "beyond 128 texts is trained when the 128-text cells' time scaled by size fits it (default "
                             "15)")
    parser.add_argument("--output", default=str(ROOT / "runs" / "small_data"))
    parser.add_argument("--setfit-sizes", nargs="*", default=[],
                        help="sizes at which SetFit is trained too (a dev-only reference: pip install -e '.[bench]'; "
                             "about 7 minutes a seed at 32 short texts on 2 cores, 37 at 128)")
    parser.add_argument("--setfit-max-steps", type=int, default=SETFIT_MAX_STEPS)
    parser.add_argument("--setfit-max-length", type=int, default=256, help="SetFit's max tokens per text")
    parser.add_argument("--report-only", action="store_true", help="train nothing: report the finished cells")
    args = parser.parse_args()
    started = time.perf_counter()
    records = [run_corpus(name, args, Path(args.output) / name) for name in args.corpora]
    lines = [f"{os.cpu_count()} CPU cores, Python {platform.python_version()}; this call's wall time "
             f"{time.perf_counter() - started:.0f} s. Test accuracy, mean ± sd over seeds, and mean fit minutes "
             "(auto: the candidates it trains).", ""]
    for record in records:
        lines += corpus_markdown(record)
    text = "\n".join(lines)
    print(text)
    Path(args.output).mkdir(parents=True, exist_ok=True)
    (Path(args.output) / "bench_small_data.md").write_text(text + "\n", encoding="utf-8")
    (Path(args.output) / "bench_small_data.json").write_text(json.dumps(records, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
