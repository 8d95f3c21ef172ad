"""The audit workflow: read and split the data as training would, score every training and validation text
out-of-fold, collect what each finding flags, and write the audit folder (and the ``--fix-file`` copy)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from textxfer.audit import crossfit, findings, report
from textxfer.core.runs import atomic_output_dir, check_writable
from textxfer.data.dataset import DataOptions, PreparedData, TextDataset, load_data
from textxfer.errors import TextxferError

AUDITORS = ("auto", "head-only", "baseline", "finetune")
AUDITOR_HELP = ("what scores the texts out-of-fold: auto (the average of three cheap views: a logistic regression and "
                f"a {crossfit.NEIGHBOURS}-nearest-neighbour vote on the frozen encoder's features, computed once — "
                "--finetune-model picks the encoder — and a logistic regression on character 1–3-grams) | head-only "
                "(the first view alone) | baseline (word2vec + forest, one per fold) | finetune (the --finetune-* "
                "recipe, one fine-tuning per fold: slow)")


def audited_rows(data: PreparedData) -> tuple[TextDataset, list[str]]:
    """The training and validation rows as one dataset, and each row's split."""
    parts = [(name, getattr(data, name)) for name in ("train", "validation") if len(getattr(data, name))]
    first = parts[0][1]
    pairs = sum((d.pairs for _, d in parts), []) if first.pairs is not None else None
    joined = TextDataset(sum((d.texts for _, d in parts), []), sum((list(d.labels) for _, d in parts), []),
                         sum((d.rows for _, d in parts), []), first.origin, pairs, first.shape)
    return joined, [name for name, d in parts for _ in range(len(d))]


def audit(options: DataOptions, output: str | Path, auditor: str = "auto", configs: dict | None = None,
          folds: int = 5, fix_file: str | None = None, progress: bool = True, log=print) -> dict:
    """Audit the data described by ``options`` into ``output``; returns the summary (``audit.json``)."""
    from textxfer.evaluation.runner import describe_data

    if auditor not in AUDITORS:
        raise TextxferError(f"unknown --model {auditor!r} for the audit; choose one of {list(AUDITORS)}")
    if folds < 2:
        raise TextxferError(f"--folds must be at least 2 (each text is scored by a model of the other folds), got {folds}")
    if fix_file is not None and (options.data is None or not Path(options.data).is_file()):
        raise TextxferError("--fix-file writes a copy of one data file with a 'suspect' column; pass the data as "
                            "--data FILE (not --train/--validation files or a dataset folder)")
    if fix_file is not None and Path(fix_file).resolve() == Path(options.data).resolve():
        raise TextxferError(f"--fix-file {fix_file}: that is the data file itself; the input is never modified — "
                            "choose another path")
    check_writable(output)
    started = time.perf_counter()
    data = load_data(options)
    describe_data(data, log)
    dataset, splits = audited_rows(data)
    labels, configs = data.labels, dict(configs or {})
    targets = labels.targets(dataset.labels)
    held_out = crossfit.fold_indices(labels, targets, folds, options.seed)
    features, token_counts, max_tokens = None, None, None
    if auditor in ("auto", "head-only"):
        from textxfer.transformer.pipeline import FinetuneConfig

        config = configs.get("finetune") or FinetuneConfig(seed=options.seed)
        log(f"audit: frozen features of {len(dataset):,} texts ({config.model or 'the bundled encoder'})")
        features, prepared = crossfit.frozen_features(config, dataset, labels, progress)
        token_counts, max_tokens = _token_counts(prepared, dataset.inputs)
        is_validation = np.array([split == "validation" for split in splits])
        views = cheap_views(auditor, features, prepared.base_model, dataset, targets, labels, held_out,
                             is_validation, options.seed, progress, log)
        probabilities = np.mean([p for p, _ in views.values()], axis=0)
        parts = [what for _, what in views.values()]
        description = parts[0] if len(parts) == 1 else f"the average of {', '.join(parts[:-1])} and {parts[-1]}"
        view_accuracy = {name: _accuracy(p, targets, labels) for name, (p, _) in views.items()}
    else:
        make = _model_factory(auditor, configs, options.seed)
        probabilities = crossfit.model_out_of_fold(make, dataset, labels, held_out, progress, log)
        description = f"{auditor} ({'word2vec + RandomForest' if auditor == 'baseline' else 'the --finetune-* recipe'})"
        view_accuracy = {}
    entries = _entries(data, dataset, splits, targets, probabilities, features, token_counts, max_tokens)
    summary = _summary(data, dataset, splits, entries, probabilities, targets, description, folds, auditor, started)
    if view_accuracy and not labels.multi_label:
        summary["auditor"]["out_of_fold_accuracy_per_view"] = view_accuracy
    with atomic_output_dir(output) as staging:
        report.write_csv(staging / "audit.csv", entries, dataset.pairs is not None)
        (staging / "audit.md").write_text(report.markdown(summary, entries), encoding="utf-8")
        (staging / "audit.json").write_text(json.dumps(summary, indent=1, ensure_ascii=False), encoding="utf-8")
    if fix_file is not None:
        from textxfer.data.tables import read_source

        suspects = {e["row"]: "; ".join(e["reasons"]) for e in entries}
        report.write_fix_file(read_source(options.data, options.encoding)["all"], Path(options.data), Path(fix_file),
                              suspects)
        log(f"audit: wrote {fix_file} (the data with a 'suspect' column; {len(suspects):,} rows marked)")
    log(report.summary_line(summary, Path(output)))
    return summary


def cheap_views(auditor: str, features: np.ndarray, encoder: str, dataset: TextDataset, targets: np.ndarray, labels,
                held_out, is_validation: np.ndarray, seed: int, progress: bool, log) -> dict[str, tuple[np.ndarray, str]]:
    """The cheap auditor's out-of-fold probabilities, per view, with what each view is (``auditor``: auto, all
    three; head-only, the regression alone); ``scripts/bench_audit_views.py`` measures them one by one."""
    c, how = crossfit.choose_strength(features, targets, labels, is_validation, seed)
    log(f"audit: {len(held_out)}-fold out-of-fold logistic regressions on the encoder's features (C = {c:g}, "
        f"chosen by {how})")
    views = {"regression": (crossfit.regression_out_of_fold(features, targets, labels, held_out, c, seed, progress),
                            f"a logistic regression (C = {c:g}) on the frozen features of {encoder}")}
    if auditor == "head-only":
        return views
    views["neighbours"] = (crossfit.neighbour_out_of_fold(features, targets, labels, held_out),
                           f"a {crossfit.NEIGHBOURS}-nearest-neighbour vote on the same features")
    texts = [f"{t}\n{p}" for t, p in zip(dataset.texts, dataset.pairs)] if dataset.pairs is not None else dataset.texts
    grams = crossfit.ngram_features(texts)
    c, how = crossfit.choose_strength(grams, targets, labels, is_validation, seed)
    log(f"audit: {len(held_out)}-fold out-of-fold logistic regressions on {grams.shape[1]:,} character n-grams "
        f"(C = {c:g}, chosen by {how})")
    views["ngrams"] = (crossfit.regression_out_of_fold(grams, targets, labels, held_out, c, seed, progress),
                       f"a logistic regression on character 1–3-grams (C = {c:g})")
    return views


def _accuracy(probabilities: np.ndarray, targets: np.ndarray, labels) -> float | None:
    if labels.multi_label:
        return None
    return round(float(np.mean(probabilities.argmax(axis=1) == targets)), 6)


def _model_factory(auditor: str, configs: dict, seed: int):
    import copy

    if auditor == "baseline":
        from textxfer.baseline.pipeline import BaselineClassifier, BaselineConfig

        config = configs.get("baseline") or BaselineConfig(seed=seed)
        return lambda: BaselineClassifier(copy.deepcopy(config))
    from textxfer.transformer.pipeline import FinetuneClassifier, FinetuneConfig

    config = configs.get("finetune") or FinetuneConfig(seed=seed)
    return lambda: FinetuneClassifier(copy.deepcopy(config))


def _token_counts(model, inputs: list) -> tuple[list[int], int]:
    """Each input's token count without truncation, and how many tokens the model reads at most."""
    tokenizer = model.tokenizer_
    limit = min(int(getattr(tokenizer, "model_max_length", 512) or 512),
                int(getattr(model.model_.config, "max_position_embeddings", 512) or 512))
    if inputs and isinstance(inputs[0], tuple):
        encoded = tokenizer([a for a, _ in inputs], [b for _, b in inputs], truncation=False, verbose=False)
    else:
        encoded = tokenizer(list(inputs), truncation=False, verbose=False)
    return [len(ids) for ids in encoded["input_ids"]], limit


def _entries(data: PreparedData, dataset: TextDataset, splits: list[str], targets: np.ndarray,
             probabilities: np.ndarray, features, token_counts, max_tokens) -> list[dict]:
    """One entry per suspect row, most suspect first: cleanlab's label issues in its order, then the others by the
    probability the out-of-fold model gives their label."""
    names = list(data.labels.names)
    multi = data.labels.multi_label
    flags: dict[int, list] = {}
    issues, scores, ranked = findings.label_issues(targets, probabilities, names, multi)
    label_keys = ["|".join(sorted(labels)) if multi else labels for labels in dataset.labels]
    keys = [findings.normalised(text) + ("\0" + findings.normalised(pair) if dataset.pairs is not None else "")
            for text, pair in zip(dataset.texts, dataset.pairs or [""] * len(dataset))]
    texts = [f"{t} {p}" for t, p in zip(dataset.texts, dataset.pairs)] if dataset.pairs is not None else dataset.texts
    sources = (issues, findings.conflicting_duplicates(keys, label_keys, dataset.rows, features),
               findings.text_problems(texts, token_counts, max_tokens))
    for source in sources:
        for index, flag in source.items():
            flags.setdefault(index, []).append(flag)
    position = {row: i for i, row in enumerate(dataset.rows)}
    for finding in data.label_findings:  # rows of the training file's label problems that are audited here
        for row in finding.rows:
            if row in position:
                flags.setdefault(position[row], []).append(
                    findings.Flag(finding.reason, finding.message.split(": ", 1)[-1], finding.suggested.get(row)))
    order = {index: rank for rank, index in enumerate(ranked)}
    chosen = sorted(flags, key=lambda i: (order.get(i, len(order)), float(scores[i])))
    return [{"split": splits[i], "row": dataset.rows[i], "text": dataset.texts[i],
             "second_text": dataset.pairs[i] if dataset.pairs is not None else None,
             "given": label_keys[i], "suggested": next((f.suggested for f in flags[i] if f.suggested), None),
             "score": float(scores[i]), "reasons": [f.reason for f in flags[i]], "details": [f.detail for f in flags[i]]}
            for i in chosen]


def _summary(data, dataset, splits, entries, probabilities, targets, description, folds, auditor, started) -> dict:
    multi = data.labels.multi_label
    auditor_record = {"model": auditor, "description": description, "folds": folds}
    if not multi:
        auditor_record["out_of_fold_accuracy"] = _accuracy(probabilities, targets, data.labels)
    return {"audited": len(dataset), "splits": ", ".join(f"{splits.count(s):,} {s}" for s in dict.fromkeys(splits)),
            "test_rows": len(data.test), "auditor": auditor_record, "suspect_rows": len(entries),
            "suspect_share": len(entries) / len(dataset) if len(dataset) else 0.0, "counts": report.counts_of(entries),
            "label_findings": [f.message for f in data.label_findings], "seconds": round(time.perf_counter() - started, 1)}
