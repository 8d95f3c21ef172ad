"""``textxfer`` command line: parse arguments and call the library; no logic of its own.

Heavy libraries are imported inside the command functions, so ``textxfer --help`` stays instant.
"""

from __future__ import annotations

import argparse
import os
import sys
from importlib import metadata

from textxfer.config import add_arguments, collect, field_names, from_dict, read_config_file
from textxfer.data import DataOptions
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
    data = from_dict(DataOptions, data_values)
    if "seed" in config_names:
        config_values["seed"] = data.seed
    return data, from_dict(config_cls, config_values)


def cmd_baseline(args: argparse.Namespace) -> int:
    """Train and evaluate the word2vec + RandomForest baseline."""
    from textxfer.pipelines.baseline import BaselineClassifier, BaselineConfig
    from textxfer.runner import run
    from textxfer.runs import default_run_dir

    data, config = _options(args, BaselineConfig)
    output = args.output or default_run_dir("baseline")
    result = run(BaselineClassifier(config), data, output, progress=not args.no_progress)
    print(f"saved to {result.output} (model, split.json, metrics.json, report.json)")
    return 0


def cmd_finetune(args: argparse.Namespace) -> int:
    """Fine-tune a BERT/RoBERTa-family encoder and evaluate it."""
    from textxfer.pipelines.finetune import FinetuneClassifier, FinetuneConfig, remove_checkpoints
    from textxfer.runner import is_main_process, run
    from textxfer.runs import default_run_dir

    data, config = _options(args, FinetuneConfig)
    if args.output is None and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise TextxferError("pass --output when training with several processes (they must agree on one folder)")
    output = args.output or default_run_dir("finetune")
    if config.checkpoint_dir is None:
        config.checkpoint_dir = f"{output}.checkpoints"
    result = run(FinetuneClassifier(config), data, output, progress=not args.no_progress,
                 log=print if is_main_process() else (lambda *_: None))
    if is_main_process():
        remove_checkpoints(config.checkpoint_dir)
        print(f"saved to {result.output} (model, tokenizer, split.json, metrics.json, report.json)")
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    """List the bundled offline encoders."""
    from textxfer.bundled import list_bundled

    rows = [("name", "installed", "ready", "size", "languages", "path")]
    for item in list_bundled():
        size = f"{item['size_bytes'] / 2**20:.0f} MiB" if item.get("size_bytes") else "-"
        rows.append((item["name"], "yes" if item["installed"] else "no", "yes" if item["ready"] else "no",
                     size, str(item.get("languages", "")), str(item.get("path") or "-")))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    from textxfer.pipelines.baseline import BaselineConfig
    from textxfer.pipelines.finetune import FinetuneConfig

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
    models = commands.add_parser("models", help="list the bundled offline encoders", description=cmd_models.__doc__)
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
        print("textxfer: interrupted; nothing was written to the output folder", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
