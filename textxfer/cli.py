"""``textxfer`` command line: parse arguments and call the library; no logic of its own.

Heavy libraries are imported inside the command functions, so ``textxfer --help`` stays instant.
"""

from __future__ import annotations

import argparse
import sys
from importlib import metadata

from textxfer.config import add_arguments, collect, from_dict, read_config_file
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
    from textxfer.config import _fields

    given = read_config_file(args.config) if args.config else {}
    data_names = {f.name for f, _ in _fields(DataOptions)}
    config_names = {f.name for f, _ in _fields(config_cls)}
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


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    from textxfer.pipelines.baseline import BaselineConfig

    parser = argparse.ArgumentParser(prog="textxfer", description="Text classification by transfer learning.")
    parser.add_argument("--version", action="version", version=f"textxfer {_version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    baseline = commands.add_parser("baseline", help="train + evaluate word2vec-average + RandomForest",
                                   description=cmd_baseline.__doc__)
    _add_common(baseline)
    add_arguments(baseline, BaselineConfig, "baseline", skip=("seed",))
    baseline.set_defaults(handler=cmd_baseline)
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
