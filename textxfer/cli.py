"""``textxfer`` command line: parse arguments and call the library; no logic of its own.

Heavy libraries are imported inside the command functions, so ``textxfer --help`` stays instant.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from importlib import metadata

from textxfer.core.calibration import CALIBRATION_HELP, CALIBRATIONS
from textxfer.core.config import add_arguments, collect, field_names, from_dict, read_config_file
from textxfer.data.dataset import DataOptions
from textxfer.transformer.devices import DEVICE_HELP, PRECISIONS
from textxfer.errors import TextxferError


def _add_common(parser: argparse.ArgumentParser) -> None:
    add_arguments(parser, DataOptions, "data")
    parser.add_argument("--config", help="JSON/YAML file of options (flags given on the command line win)")
    parser.add_argument("--output", help="run folder to write (default: runs/<command>-<timestamp>); "
                                         "replaced only when the run succeeds")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")


def _options(args: argparse.Namespace, config_cls: type) -> tuple[DataOptions, object]:
    """Data options and pipeline config from defaults < config file < command-line flags."""
    given = read_config_file(args.config) if args.config else {}
    data_names = field_names(DataOptions)
    config_names = field_names(config_cls)
    unknown = sorted(set(given) - data_names - config_names)
    if unknown:
        raise TextxferError(f"{args.config}: unknown option(s) {unknown}")
    data_values = {k: v for k, v in given.items() if k in data_names} | collect(args, DataOptions)
    config_values = {k: v for k, v in given.items() if k in config_names and k not in data_names}
    config_values |= {k: v for k, v in collect(args, config_cls).items() if k not in data_names}
    data = from_dict(DataOptions, data_values, source=args.config)
    if "seed" in config_names:
        config_values["seed"] = data.seed
    return data, from_dict(config_cls, config_values, source=args.config)


def cmd_baseline(args: argparse.Namespace) -> int:
    """Train and evaluate the word2vec + RandomForest baseline."""
    from textxfer.baseline.pipeline import BaselineClassifier, BaselineConfig
    from textxfer.evaluation.runner import run
    from textxfer.core.runs import default_run_dir

    data, config = _options(args, BaselineConfig)
    output = args.output or default_run_dir("baseline")
    result = run(BaselineClassifier(config), data, output, progress=not args.no_progress)
    print(f"saved to {result.output} (model, split.json, metrics.json, report.json)")
    return 0


def cmd_finetune(args: argparse.Namespace) -> int:
    """Fine-tune a BERT/RoBERTa-family encoder and evaluate it."""
    from textxfer.transformer.pipeline import FinetuneClassifier, FinetuneConfig, remove_checkpoints
    from textxfer.evaluation.runner import is_main_process, run
    from textxfer.core.runs import check_writable, default_run_dir

    data, config = _options(args, FinetuneConfig)
    if args.output is None and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise TextxferError("pass --output when training with several processes (they must agree on one folder)")
    output = args.output or default_run_dir("finetune")
    if config.checkpoint_dir is None:
        config.checkpoint_dir = f"{output}.checkpoints"
    if is_main_process():
        check_writable(Path(config.checkpoint_dir) / "probe")
    result = run(FinetuneClassifier(config), data, output, progress=not args.no_progress,
                 log=print if is_main_process() else (lambda *_: None))
    if is_main_process():
        remove_checkpoints(config.checkpoint_dir)
        print(f"saved to {result.output} (model, tokenizer, split.json, metrics.json, report.json)")
    return 0


def _pipeline_configs(args: argparse.Namespace) -> tuple[DataOptions, dict[str, object]]:
    """Data options and both pipelines' configs: defaults < config file sections < ``--<pipeline>-*`` flags."""
    from textxfer.baseline.pipeline import BaselineConfig
    from textxfer.transformer.pipeline import FinetuneConfig

    given = read_config_file(args.config) if args.config else {}
    sections = {"baseline": BaselineConfig, "finetune": FinetuneConfig}
    data_names = field_names(DataOptions)
    unknown = sorted(set(given) - data_names - set(sections))
    if unknown:
        raise TextxferError(f"{args.config}: unknown option(s) {unknown}; put pipeline options under "
                            "'baseline' or 'finetune'")
    data = from_dict(DataOptions, {k: v for k, v in given.items() if k in data_names} | collect(args, DataOptions),
                     source=args.config)
    configs = {}
    for name, cls in sections.items():
        section = given.get(name) or {}
        if not isinstance(section, dict):
            raise TextxferError(f"{args.config}: '{name}' must be a mapping of {name} options")
        configs[name] = from_dict(cls, {"seed": data.seed, **section, **collect(args, cls, prefix=name)},
                                  source=f"{args.config} ({name})" if args.config else None)
    return data, configs


def cmd_compare(args: argparse.Namespace) -> int:
    """Train (or load) both pipelines on one split, score them alike, and write a comparison report."""
    from textxfer.evaluation.compare import compare
    from textxfer.core.runs import default_run_dir

    data, configs = _pipeline_configs(args)
    output = args.output or default_run_dir("compare")
    models = {"baseline": args.baseline_run, "finetune": args.finetune_run}
    compare(data, output, configs, models, progress=not args.no_progress, device=args.device,
            ensemble=not args.no_ensemble)
    print(f"report: {output}/comparison.md (plus comparison.json, PNG plots, disagreements.csv)")
    return 0


def cmd_study(args: argparse.Namespace) -> int:
    """Train a grid of variants × training-set sizes × seeds on one split and draw the learning curves."""
    from textxfer.core.runs import default_run_dir
    from textxfer.evaluation.study import parse_variant, run_study

    data, configs = _pipeline_configs(args)
    classes = {name: type(config) for name, config in configs.items()}
    variants = [parse_variant(text, classes) for text in args.variants]
    if len({v.slug for v in variants}) < len(variants):
        raise TextxferError(f"--variants: {args.variants} name the same variant twice")
    output = args.output or default_run_dir("study")
    run_study(data, variants, args.sizes, args.seeds, output, configs, progress=not args.no_progress)
    print(f"report: {output}/study.md (plus study.json, learning_curve.png, one run folder per cell under cells/)")
    return 0


def cmd_distill(args: argparse.Namespace) -> int:
    """Train a smaller, faster student on a teacher run's soft labels (its training texts plus --unlabelled texts)
    and score it on the teacher's split; the result is an ordinary run folder of the student's kind."""
    from textxfer.core.runs import default_run_dir
    from textxfer.distill.students import DistillConfig
    from textxfer.evaluation.distillation import distill

    data, config = _options(args, DistillConfig)
    output = args.output or default_run_dir(f"distill-{config.student}")
    result = distill(config, data, output, progress=not args.no_progress)
    print(f"saved to {result.output} (a {result.model.kind} model, split.json, metrics.json, report.json: "
          "distillation)")
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    """Score every training and validation text out-of-fold and list the rows whose label is probably wrong (confident
    learning), near-duplicates under different labels, texts with nothing to read or too long, texts in another
    script, and label-column mistakes: audit.csv (most suspect first), audit.md, audit.json."""
    from textxfer.audit.run import audit
    from textxfer.core.runs import default_run_dir

    data, configs = _pipeline_configs(args)
    output = args.output or default_run_dir("audit")
    audit(data, output, args.auditor, configs, folds=args.folds, fix_file=args.fix_file, progress=not args.no_progress)
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    """Predict texts given on the command line, or every row of a CSV/TSV/JSONL file (or stdin)."""
    from textxfer import classifier

    if bool(args.texts) == bool(args.input):
        raise TextxferError("give texts to predict, or --input FILE (use --input - for stdin), not both")
    model = classifier.load(args.model, device=args.device, precision=args.precision)
    if args.predict_batch_size is not None:
        if args.predict_batch_size < 1:
            raise TextxferError(f"--predict-batch-size must be at least 1, got {args.predict_batch_size}")
        model.predict_batch_size = args.predict_batch_size  # used by transformer models; the baseline has no batches
    if args.texts:
        if model.shape.pair:
            raise TextxferError(f"{args.model}: this model reads text pairs; pass them in a file: --input FILE with "
                                f"--text-column and --text-pair-column (default {model.shape.text_pair_column!r})")
        explained = (classifier.explain(list(args.texts), model=model, method=args.explain_method) if args.explain
                     else [None] * len(args.texts))
        for text, result, why in zip(args.texts, classifier.predict(list(args.texts), model=model), explained):
            if model.labels.multi_label:
                print(f"{(model.shape.label_separator or '|').join(map(str, result.labels)) or '(none)'}\t{text}")
            else:
                print(f"{result.label}\t{result.score:.4f}\t{text}")
            if why is not None:
                print(_explanation_line(why))
        return 0
    from textxfer.serving.predict_files import ProcessGroup, predict_file

    group = ProcessGroup()
    try:
        summary = predict_file(model, args.input, args.output, text_column=args.text_column,
                               chunk_size=args.chunk_size, input_format=args.input_format,
                               output_format=args.output_format, encoding=args.encoding,
                               progress=not args.no_progress, rank=group.rank, world_size=group.world_size,
                               barrier=group.barrier, text_pair_column=args.text_pair_column,
                               explain=args.explain_method if args.explain else None)
    finally:
        group.close()
    if group.rank == 0 and summary["output"] != "-":
        empty = f"; {summary['empty_texts']} empty texts" if summary["empty_texts"] else ""
        print(f"wrote {summary['output']}{empty}", file=sys.stderr)
    return 0


def _explanation_line(why, shown: int = 6) -> str:
    """One indented line: the words that speak for the label (most first) and against it, with their contributions."""
    return f"  {why.method} (to {why.label!r}): for: {why.listed(1, shown)} | against: {why.listed(-1, shown // 2)}"


def cmd_ensemble(args: argparse.Namespace) -> int:
    """Combine trained runs of one split (any kinds) into one model: a weighted average of their probabilities,
    the weights chosen on the validation split (never test), scored on the test split like any run."""
    from textxfer.evaluation.ensemble_runs import build
    from textxfer.core.runs import default_run_dir

    output = args.output or default_run_dir("ensemble")
    result = build(args.runs, output, weights=args.weights, calibration=args.calibration, data=args.data, encoding=args.encoding,
                   device=args.device, precision=args.precision, progress=not args.no_progress)
    print(f"saved to {result.output} (model with its members, split.json, metrics.json, report.json)")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """Export a fine-tuned model to ONNX Runtime (optionally int8-quantized) for fast CPU inference."""
    from textxfer.transformer.export import export_onnx

    output = export_onnx(args.model, args.output, quantize=args.quantize, opset=args.opset, log=print)
    print(f"saved to {output} (model.onnx, tokenizer, config.json, textxfer.json); "
          f"use it like any model folder: textxfer predict --model {output} ...")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    """Serve a trained model over HTTP: POST /predict, GET /health, GET /model, a web page at /, docs at /docs."""
    from textxfer.serving.server import ServeSettings, serve

    if args.workers < 1:
        raise TextxferError(f"--workers must be at least 1, got {args.workers}")
    settings = ServeSettings(model=args.model, max_batch_size=args.max_batch_size, batch_window_ms=args.batch_window_ms,
                             batching=not args.no_batching, max_texts=args.max_texts, max_text_chars=args.max_text_chars,
                             max_explain_texts=args.max_explain_texts,
                             device=args.device, precision=args.precision)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"textxfer: note: listening on {args.host}, reachable from other machines; there is no authentication",
              file=sys.stderr)
    serve(settings, host=args.host, port=args.port, workers=args.workers, log_level=args.log_level)
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    """List the bundled offline encoders, and which student of `textxfer distill` to pick for what."""
    from textxfer.transformer.bundled import list_bundled

    rows = [("name", "installed", "ready", "size", "languages", "path")]
    for item in list_bundled():
        size = f"{item['size_bytes'] / 2**20:.0f} MiB" if item.get("size_bytes") else "-"
        rows.append((item["name"], "yes" if item["installed"] else "no", "yes" if item["ready"] else "no",
                     size, str(item.get("languages", "")), str(item.get("path") or "-")))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
    from textxfer.distill.advice import lines

    print("\nfaster students of a trained model (textxfer distill --teacher RUN --student …; BENCHMARKS.md):")
    for line in lines():
        print(f"  {line}")
    return 0


def _add_device(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="auto", help=f"{DEVICE_HELP} (default: auto)")
    parser.add_argument("--precision", default="auto", choices=PRECISIONS,
                        help="of a fine-tuned model's prediction: auto (bf16 on a GPU, fp16 where it lacks bf16; fp32 "
                             "on the CPU) | fp32 | bf16 | fp16 (default: auto)")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    from textxfer.baseline.pipeline import BaselineConfig
    from textxfer.transformer.pipeline import FinetuneConfig

    parser = argparse.ArgumentParser(prog="textxfer", description="Text classification by transfer learning.")
    parser.add_argument("--version", action="version", version=f"textxfer {_version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    baseline = commands.add_parser("baseline", help="train + evaluate word2vec-average + RandomForest",
                                   description=cmd_baseline.__doc__)
    _add_common(baseline)
    add_arguments(baseline, BaselineConfig, "baseline", skip=("seed",))
    baseline.set_defaults(handler=cmd_baseline)
    finetune = commands.add_parser("finetune", help="fine-tune a BERT/RoBERTa-family encoder + evaluate",
                                   description=cmd_finetune.__doc__)
    _add_common(finetune)
    add_arguments(finetune, FinetuneConfig, "fine-tuning", skip=("seed",))
    finetune.set_defaults(handler=cmd_finetune)
    compare = commands.add_parser("compare", help="both pipelines on one split: tables, plots, significance",
                                  description=cmd_compare.__doc__)
    _add_common(compare)
    compare.add_argument("--baseline-run", help="a trained baseline run folder to score instead of training one")
    compare.add_argument("--finetune-run", help="a fine-tuned (or exported) run folder to score instead of training one")
    compare.add_argument("--no-ensemble", action="store_true",
                         help="do not score the two models' ensemble (weights chosen on validation) as a third column")
    compare.add_argument("--device", default="auto", help=f"{DEVICE_HELP} — for a model loaded by --finetune-run "
                                                          "(a trained one scores where it trained) (default: auto)")
    add_arguments(compare, BaselineConfig, "baseline (--baseline-*)", skip=("seed",), prefix="baseline")
    add_arguments(compare, FinetuneConfig, "fine-tuning (--finetune-*)", skip=("seed",), prefix="finetune")
    compare.set_defaults(handler=cmd_compare)
    study = commands.add_parser("study", help="learning curves: variants × training-set sizes × seeds on one split",
                                description=cmd_study.__doc__)
    _add_common(study)
    study.add_argument("--variants", nargs="+", default=["baseline", "finetune"],
                       help="pipelines with settings, e.g. baseline finetune finetune:strategy=head-only "
                            "'finetune:strategy=full,layer_lr_decay=0.9'; ensemble:baseline+finetune (the cells of "
                            "two variants combined); distill:static or 'distill:shallow,keep_every=2@finetune' (a "
                            "student of another variant's cells, textxfer distill) (default: baseline finetune)")
    study.add_argument("--sizes", nargs="+", default=["100", "300", "1000", "all"],
                       help="training-set sizes: whole numbers or 'all' (default: 100 300 1000 all)")
    study.add_argument("--seeds", type=int, default=3, help="seeds per cell: --seed, --seed+1, … (default: 3)")
    add_arguments(study, BaselineConfig, "baseline (--baseline-*)", skip=("seed", "max_train_samples"), prefix="baseline")
    add_arguments(study, FinetuneConfig, "fine-tuning (--finetune-*)", skip=("seed", "max_train_samples"),
                  prefix="finetune")
    study.set_defaults(handler=cmd_study)
    from textxfer.audit.run import AUDITOR_HELP, AUDITORS

    distill = commands.add_parser("distill", help="a faster student trained on a teacher run's soft labels",
                                  description=cmd_distill.__doc__)
    _add_common(distill)
    from textxfer.distill.students import DistillConfig

    add_arguments(distill, DistillConfig, "distillation", skip=("seed",))
    distill.set_defaults(handler=cmd_distill)
    audit = commands.add_parser("audit", help="which labels are probably wrong: out-of-fold scores, duplicates, "
                                              "odd texts", description=cmd_audit.__doc__)
    _add_common(audit)
    audit.add_argument("--model", dest="auditor", default="auto", choices=AUDITORS,
                       help=AUDITOR_HELP + " (default: auto)")
    audit.add_argument("--folds", type=int, default=5, help="cross-fitting folds (default: 5)")
    audit.add_argument("--fix-file", help="also write a copy of the --data file with a 'suspect' column (the reasons of "
                                          "each suspect row, empty elsewhere); the input is never modified")
    add_arguments(audit, BaselineConfig, "baseline auditor (--baseline-*)", skip=("seed",), prefix="baseline")
    add_arguments(audit, FinetuneConfig, "encoder and fine-tuning auditor (--finetune-*)", skip=("seed",),
                  prefix="finetune")
    audit.set_defaults(handler=cmd_audit)
    predict = commands.add_parser("predict", help="predict texts or a CSV/TSV/JSONL file with a trained model",
                                  description=cmd_predict.__doc__)
    predict.add_argument("texts", nargs="*", help="texts to predict (printed as label, score, text; for a multi-label model: its labels, text)")
    predict.add_argument("--model", required=True, help="a trained model folder (baseline, finetune, exported or ensemble)")
    predict.add_argument("--input", help="CSV/TSV/JSONL file to predict; - reads stdin")
    predict.add_argument("--output", help="CSV/TSV/JSONL file to write (default: stdout in the input's format); "
                                          "every input column is kept, label/score/probabilities are added")
    predict.add_argument("--text-column", default="text", help="column holding the text (default: text)")
    predict.add_argument("--text-pair-column", help="a pair model's column of second texts (default: the column it "
                                                    "was trained on)")
    predict.add_argument("--input-format", choices=("csv", "tsv", "jsonl"), help="input format (default: from the extension; csv for stdin)")
    predict.add_argument("--output-format", choices=("csv", "tsv", "jsonl"), help="output format (default: from the extension)")
    predict.add_argument("--chunk-size", type=int, default=2048, help="rows read and predicted at a time (bounds memory)")
    predict.add_argument("--predict-batch-size", type=int, help="texts per forward pass of a transformer model "
                                                                "(named apart from finetune's training --batch-size; default: 16 on "
                                                        "the CPU; on a GPU batches of up to 32,768 padded tokens)")
    predict.add_argument("--explain", action="store_true",
                         help="after each prediction, the words that raised and lowered its probability (jieba words "
                              "for Chinese), with their contributions; with --input, an 'explanation' column (CSV/TSV: "
                              "a JSON list of [word, contribution]; JSONL: an object)")
    predict.add_argument("--explain-method", default="auto", choices=("auto", "integrated-gradients", "occlusion"),
                         help="auto: integrated gradients for a fine-tuned model, occlusion (the drop in probability "
                              "when a word is removed) for every other kind (default: auto)")
    _add_device(predict)
    predict.add_argument("--encoding", default="utf-8", help="text encoding of the input")
    predict.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    predict.set_defaults(handler=cmd_predict)
    ensemble = commands.add_parser("ensemble", help="combine trained runs of one split into one weighted model",
                                   description=cmd_ensemble.__doc__)
    ensemble.add_argument("--runs", nargs="+", required=True, metavar="RUN",
                          help="run folders of one split: baseline, finetune, exported, ensemble (at least 2)")
    ensemble.add_argument("--output", help="run folder to write (default: runs/ensemble-<timestamp>); replaced only "
                                           "when the ensemble is built and scored")
    ensemble.add_argument("--weights", default="auto",
                          help="auto: chosen on the validation split by log loss (never test) | equal | one number per "
                               "run, e.g. 0.7,0.3 (default: auto)")
    ensemble.add_argument("--calibration", default="temperature", choices=CALIBRATIONS,
                          help="of the averaged probabilities: " + CALIBRATION_HELP + " (default: temperature)")
    ensemble.add_argument("--data", help="the data file when it has moved since the runs were trained (default: the "
                                         "path in their split.json)")
    ensemble.add_argument("--encoding", default="utf-8", help="text encoding of the data file (default: utf-8)")
    _add_device(ensemble)
    ensemble.add_argument("--no-progress", action="store_true", help="hide progress bars")
    ensemble.set_defaults(handler=cmd_ensemble)
    export = commands.add_parser("export", help="export a fine-tuned model to ONNX for fast CPU inference",
                                 description=cmd_export.__doc__)
    export.add_argument("--model", required=True, help="fine-tuned run folder to export")
    export.add_argument("--format", choices=("onnx",), default="onnx", help="export format (default: onnx)")
    export.add_argument("--quantize", choices=("int8",),
                        help="int8 weights (dynamic quantization): about 4x smaller and faster on CPU, slightly less exact")
    export.add_argument("--output", help="folder to write (default: <model>-onnx, or <model>-onnx-int8); "
                                         "replaced only when the export succeeds")
    export.add_argument("--opset", type=int, help="ONNX opset version (default: the exporter's, currently 20)")
    export.set_defaults(handler=cmd_export)
    server = commands.add_parser("serve", help="serve a trained model over HTTP (API + web page)",
                                 description=cmd_serve.__doc__)
    server.add_argument("--model", required=True, help="a trained model folder (baseline, finetune, exported or ensemble)")
    server.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1, this machine only)")
    server.add_argument("--port", type=int, default=8000, help="port (default: 8000)")
    server.add_argument("--workers", type=int, default=1, help="server processes, each with its own copy of the model")
    server.add_argument("--max-batch-size", type=int, default=32, help="most texts predicted together across requests")
    server.add_argument("--batch-window-ms", type=float, default=5.0, help="how long a request waits for others to batch with")
    server.add_argument("--no-batching", action="store_true", help="predict every request on its own")
    server.add_argument("--max-texts", type=int, default=64, help="most texts in one request (more: 413)")
    server.add_argument("--max-text-chars", type=int, default=10_000, help="longest text in characters (longer: 413)")
    server.add_argument("--max-explain-texts", type=int, default=8,
                        help="texts per POST /explain request (more: 413; each costs many predictions) (default: 8)")
    server.add_argument("--log-level", default="info", choices=("critical", "error", "warning", "info", "debug"))
    _add_device(server)
    server.set_defaults(handler=cmd_serve)
    models = commands.add_parser("models", help="list the bundled offline encoders, and which distilled student to "
                                 "pick", description=cmd_models.__doc__)
    models.set_defaults(handler=cmd_models)
    return parser


def _version() -> str:
    try:
        return metadata.version("textxfer")
    except metadata.PackageNotFoundError:
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    """Entry point: run a command; a :class:`TextxferError` becomes one line on stderr and exit code 2."""
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except TextxferError as exc:
        print(f"textxfer: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        resume = " (checkpoints are kept: re-run the same command with --resume to continue)" \
            if args.command == "finetune" else ""
        print(f"textxfer: interrupted; the output folder was not changed{resume}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
