#!/usr/bin/env python3
"""Calibration across corpora: test ECE, log loss and Brier score before and after each model's temperature, and
what weighing calibrated members does to the ensemble (issue 27).

Per corpus (``--corpora``; ``scripts/corpora.py`` builds them: the Chinese reviews of ``sample_data/`` on
``make demo``'s split, the 10-topic THUCNews headlines, the 5-topic BBC News articles in English) and per seed, on
the corpus's one default split: the baseline at its defaults — except ``--pseudo-votes 0``: the forest's own
averaged votes, as in the first runs, made before that flag existed; ``scripts/bench_pseudo_votes.py`` adds the
votes to the saved probabilities — and the fine-tuned bundled encoder at ``make demo``'s
budget (2,000 training texts, 1 epoch, no step floor), each fitting its temperature on the validation split as
every run now does. Reported on the test split, mean ± sd over the seeds:

- each model's accuracy (the temperature never moves the argmax: checked on every run) and its ECE (15 equal-mass
  bins), log loss and Brier score before → after, with the temperature;
- the baseline + fine-tuned ensemble with weights of lowest validation log loss chosen on the members' probabilities
  *before* calibration (the rule until now), on their calibrated probabilities (now), and equal weights; the gain of
  each over the fine-tuned model alone, paired by seed.

The weights, mixtures and temperatures are textxfer's own functions (``ensemble.weights.choose``/``mix``,
``core.calibration``), the ones ``EnsembleClassifier.fit_on`` calls (``tests/test_calibrated_models.py``). Each
corpus × seed is cached in ``--output`` (``<corpus>-<seed>.json``), so the grid resumes. Run:
``python scripts/bench_calibration.py [--corpora reviews thucnews bbc] [--seeds 3] [--first-seed 42] [--report-only]``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

import corpora  # noqa: E402
from bench_small_data import cached  # noqa: E402

from textxfer.core.calibration import figures, fit_temperature, scale  # noqa: E402
from textxfer.ensemble.weights import choose, mix  # noqa: E402


def run_one(name: str, seed: int, output: Path) -> dict:
    """Both models on one corpus and seed: their raw and calibrated test figures, and the three ensembles; the raw
    validation and test probabilities and labels are kept in ``output/<corpus>-<seed>.npz``."""
    from textxfer.baseline.pipeline import BaselineClassifier, BaselineConfig
    from textxfer.data.dataset import DataOptions, load_data
    from textxfer.transformer.pipeline import FinetuneClassifier, FinetuneConfig

    data = load_data(DataOptions(data=str(corpora.build(name))))
    y = {split: data.labels.targets(getattr(data, split).labels) for split in ("validation", "test")}
    models = {"baseline": BaselineClassifier(BaselineConfig(seed=seed, pseudo_votes=0.0)),
              "finetune": FinetuneClassifier(FinetuneConfig(seed=seed, max_train_samples=2000, epochs=1, min_steps=0))}
    record = {"corpus": name, "seed": seed, "rows": {k: len(v) for k, v in data.splits().items()}, "models": {}}
    raw = {}
    for kind, model in models.items():
        started = time.perf_counter()
        model.fit(data.train, data.validation, labels=data.labels)
        raw[kind] = {split: model.raw_proba(getattr(data, split).inputs) for split in ("validation", "test")}
        calibrated = model.calibrated(raw[kind]["test"])
        same = bool(np.array_equal(calibrated.argmax(axis=1), raw[kind]["test"].argmax(axis=1)))
        record["models"][kind] = {
            "seconds": round(time.perf_counter() - started, 1), "temperature": model.temperature,
            "why": model.calibration.get("why"), "argmax_unchanged": same,
            "accuracy": float(np.mean(calibrated.argmax(axis=1) == y["test"])),
            "validation": model.calibration.get("validation"),
            "test": {"before": figures(raw[kind]["test"], y["test"]), "after": figures(calibrated, y["test"]),
                     "floor": ece_floor(calibrated)}}
        print(f"{name} · seed {seed} · {kind}: T = {model.temperature:.3g}, {record['models'][kind]}", flush=True)
    temperatures = {kind: models[kind].temperature for kind in models}
    members = list(models)
    calibrated = {kind: {split: scale(p, temperatures[kind]) for split, p in raw[kind].items()} for kind in members}
    rules = {"auto on raw members (until now)": ("auto", raw), "auto on calibrated members (now)": ("auto", calibrated),
             "equal weights, raw members": ("equal", raw)}
    np.savez_compressed(output / f"{name}-{seed}.npz", **{
        f"{kind}_{split}": p for kind in members for split, p in raw[kind].items()},
        **{f"y_{split}": labels for split, labels in y.items()})
    record["ensembles"] = {}
    for rule, (how, probabilities) in rules.items():
        weights, _ = choose(how, [probabilities[k]["validation"] for k in members], y["validation"])
        mixed = {split: mix([probabilities[k][split] for k in members], weights) for split in ("validation", "test")}
        temperature = fit_temperature(mixed["validation"], y["validation"])
        record["ensembles"][rule] = {
            "weights": dict(zip(members, weights)), "temperature": temperature,
            "accuracy": float(np.mean(mixed["test"].argmax(axis=1) == y["test"])),
            "test_after": figures(scale(mixed["test"], temperature), y["test"])}
    return record


def ece_floor(probabilities: np.ndarray, draws: int = 200, seed: int = 0) -> float:
    """The ECE a perfectly calibrated model would still show on a split of this size: labels drawn from
    ``probabilities`` themselves, ECE averaged over ``draws`` draws (sampling noise alone)."""
    from textxfer.core.calibration import expected_calibration_error

    rng = np.random.default_rng(seed)
    cumulative = probabilities.cumsum(axis=1)
    values = []
    for _ in range(draws):
        drawn = (rng.random((len(probabilities), 1)) > cumulative).sum(axis=1).clip(0, probabilities.shape[1] - 1)
        values.append(expected_calibration_error(probabilities, drawn))
    return round(float(np.mean(values)), 6)


def mean_sd(values: list[float], digits: int = 4) -> str:
    if len(values) == 1:
        return f"{values[0]:.{digits}f} (1 seed)"
    return f"{np.mean(values):.{digits}f} ± {np.std(values, ddof=1):.{digits}f}"


def markdown(records: list[dict]) -> list[str]:
    out = []
    for name in dict.fromkeys(r["corpus"] for r in records):
        runs = [r for r in records if r["corpus"] == name]
        rows = runs[0]["rows"]
        out += [f"**{name}** ({rows['train']:,} train / {rows['validation']:,} validation / {rows['test']:,} test; "
                f"seeds {', '.join(str(r['seed']) for r in runs)}):", "",
                "| model | test accuracy | temperature | test ECE before → after | ECE of a perfectly calibrated model "
                "here | validation ECE before → after | test log loss before → after | test Brier before → after |",
                "|---|---:|---:|---|---:|---|---|---|"]
        for kind in ("baseline", "finetune"):
            got = [r["models"][kind] for r in runs]
            assert all(g["argmax_unchanged"] for g in got), f"{name} {kind}: the temperature moved a prediction"
            cells = [f"{mean_sd([g['test']['before'][key] for g in got])} → {mean_sd([g['test']['after'][key] for g in got])}"
                     for key in ("ece", "log_loss", "brier")]
            floor = mean_sd([g["test"]["floor"] for g in got]) if all("floor" in g["test"] for g in got) else "n/a"
            validation = (f"{mean_sd([g['validation']['before']['ece'] for g in got])} → "
                          f"{mean_sd([g['validation']['after']['ece'] for g in got])}"
                          if all(g.get("validation") for g in got) else "n/a")
            out.append(f"| {kind} | {mean_sd([g['accuracy'] for g in got])} | "
                       f"{mean_sd([g['temperature'] for g in got], 3)} | {cells[0]} | {floor} | {validation} | "
                       + " | ".join(cells[1:]) + " |")
        out += ["", "| ensemble rule (weights chosen on validation) | test accuracy | gain over fine-tuned (points) | "
                "weight of the baseline | test ECE (after its own temperature) |", "|---|---:|---:|---:|---:|"]
        for rule in runs[0]["ensembles"]:
            got = [r["ensembles"][rule] for r in runs]
            gains = [100 * (g["accuracy"] - r["models"]["finetune"]["accuracy"]) for g, r in zip(got, runs)]
            out.append(f"| {rule} | {mean_sd([g['accuracy'] for g in got])} | {mean_sd(gains, 2)} | "
                       f"{mean_sd([g['weights']['baseline'] for g in got], 2)} | "
                       f"{mean_sd([g['test_after']['ece'] for g in got])} |")
        out.append("")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpora", nargs="+", default=["reviews", "thucnews", "bbc"])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--first-seed", type=int, default=42, help="seeds first-seed … first-seed + seeds − 1")
    parser.add_argument("--output", type=Path, default=ROOT / "runs" / "bench_calibration")
    parser.add_argument("--report-only", action="store_true", help="train nothing: report the cached runs")
    args = parser.parse_args()
    args.output.mkdir(parents=True, exist_ok=True)
    records = [cached(path, lambda: run_one(name, seed, args.output))
               for name in args.corpora for seed in range(args.first_seed, args.first_seed + args.seeds)
               if (path := args.output / f"{name}-{seed}.json").is_file() or not args.report_only]
    text = "\n".join(markdown(records))
    (args.output / "bench_calibration.md").write_text(text, encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
