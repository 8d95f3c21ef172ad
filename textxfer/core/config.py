"""Configuration dataclasses ↔ command-line flags and config files, with one source of truth.

Each field's ``metadata["help"]`` is its flag help; :func:`add_arguments` generates ``--field-name``
flags from a dataclass and :func:`from_dict` builds one from a dict, rejecting unknown keys.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

from textxfer.errors import TextxferError

T = TypeVar("T")


def _base_type(annotation: Any) -> Any:
    """``int | None`` → ``int``."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return args[0] if len(args) == 1 else str
    return annotation


def _fields(cls: type) -> list[tuple[dataclasses.Field, Any]]:
    hints = typing.get_type_hints(cls)
    return [(f, _base_type(hints[f.name])) for f in dataclasses.fields(cls) if f.init]


def field_names(cls: type) -> set[str]:
    """The names of the settable fields of dataclass ``cls``."""
    return {f.name for f, _ in _fields(cls)}


def parse_field(cls: type, name: str, text: str) -> Any:
    """``text`` converted to the type of field ``name`` of ``cls`` ("none" → None; true/false for booleans)."""
    kinds = {f.name: kind for f, kind in _fields(cls)}
    if name not in kinds:
        raise TextxferError(f"unknown {cls.__name__} option {name!r}; known options: {sorted(kinds)}")
    kind = kinds[name]
    if text.strip().lower() == "none":
        return None
    if kind is bool:
        if text.strip().lower() not in ("true", "false", "1", "0", "yes", "no"):
            raise TextxferError(f"{name}={text!r}: expected true or false")
        return text.strip().lower() in ("true", "1", "yes")
    try:
        return kind(text) if kind in (int, float) else text
    except ValueError:
        raise TextxferError(f"{name}={text!r}: expected a{'n' if kind is int else ''} {kind.__name__}") from None


def add_arguments(parser: argparse.ArgumentParser, cls: type, title: str, skip: tuple[str, ...] = (),
                  prefix: str = "") -> None:
    """Add one ``--flag`` per field of dataclass ``cls`` (booleans become on/off switches).

    Defaults are ``SUPPRESS``ed so that :func:`collect` can tell flags given from flags left alone
    (a config file's value then wins over a default but loses to an explicit flag). With ``prefix``
    (e.g. ``"finetune"``) the flags are ``--finetune-epochs`` and so on, for commands that configure
    two pipelines whose option names overlap.
    """
    group = parser.add_argument_group(title)
    hints = typing.get_type_hints(cls)
    for f, kind in _fields(cls):
        if f.name in skip:
            continue
        dest = f"{prefix}__{f.name}" if prefix else f.name
        flag = "--" + (f"{prefix}-" if prefix else "") + f.name.replace("_", "-")
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        help_text = f.metadata.get("help", "")
        if "default:" not in help_text:  # a help that explains its default already says it once
            help_text += f" (default: {'none' if default is None else default})"
        choices = f.metadata.get("choices")
        if kind is bool:
            group.add_argument(flag, dest=dest, action=argparse.BooleanOptionalAction,
                               default=argparse.SUPPRESS, help=help_text)
        elif typing.get_origin(kind) is list:  # --label-columns a b c
            group.add_argument(flag, dest=dest, nargs="+", default=argparse.SUPPRESS, help=help_text,
                               metavar=f.name.upper().rstrip("S"))
        else:
            optional = type(None) in typing.get_args(hints[f.name])
            group.add_argument(flag, dest=dest, type=_flag_type(kind, optional, f.name),
                               default=argparse.SUPPRESS, help=help_text, choices=choices,
                               metavar=None if choices else f.name.upper())


def _flag_type(kind: Any, optional: bool, name: str):
    """argparse's converter for a field: int/float/str, and ``none`` → None for optional fields (the help offers
    it: ``--max-depth none``)."""
    def convert(text: str):
        if optional and text.strip().lower() == "none":
            return None
        if kind not in (int, float):
            return text
        try:
            return kind(text)
        except ValueError:
            what = "a whole number" if kind is int else "a number"
            raise argparse.ArgumentTypeError(f"expected {what}{' or none' if optional else ''}, got {text!r}") from None

    convert.__name__ = {int: "int", float: "float"}.get(kind, "str")
    return convert


def collect(namespace: argparse.Namespace, cls: type, prefix: str = "") -> dict[str, Any]:
    """The fields of ``cls`` that were given on the command line (added with the same ``prefix``)."""
    names = field_names(cls)
    start = f"{prefix}__" if prefix else ""
    return {k[len(start):]: v for k, v in vars(namespace).items() if k.startswith(start) and k[len(start):] in names}


def from_dict(cls: type[T], data: dict[str, Any], source: str | None = None) -> T:
    """Build dataclass ``cls`` from ``data``; unknown keys, and values of the wrong type (a config file's
    ``"n_estimators": "100"``), are an error naming the option (and ``source``, the file they came from)."""
    known = field_names(cls)
    unknown = sorted(set(data) - known)
    where = f"{source}: " if source else ""
    if unknown:
        raise TextxferError(f"{where}unknown {cls.__name__} option(s) {unknown}; known options: {sorted(known)}")
    hints = typing.get_type_hints(cls)
    for name, value in data.items():
        expected = _type_problem(hints[name], value)
        if expected:
            shown = f"the string {value!r}" if isinstance(value, str) else f"{type(value).__name__} {value!r:.60}"
            raise TextxferError(f"{where}option {name!r} must be {expected}, got {shown}")
    return cls(**data)


_KINDS = {bool: "true or false", int: "a whole number", float: "a number", str: "a string", type(None): "none"}


def _type_problem(annotation: Any, value: Any) -> str | None:
    """None when ``value`` fits ``annotation`` (``int``, ``float``, ``bool``, ``str``, unions of them with
    None), else what was expected in words. A whole number is a fine float; a boolean is not a number."""
    allowed = (typing.get_args(annotation) if typing.get_origin(annotation) in (typing.Union, types.UnionType)
               else (annotation,))
    for kind in allowed:
        if kind is type(None) and value is None:
            return None
        if kind is bool and isinstance(value, bool):
            return None
        if kind is int and isinstance(value, int) and not isinstance(value, bool):
            return None
        if kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return None
        if kind is str and isinstance(value, str):
            return None
        if kind not in _KINDS:  # a type this check does not know: the dataclass checks it
            return None
    return " or ".join(_KINDS[kind] for kind in allowed)


def read_config_file(path: str) -> dict[str, Any]:
    """Read a JSON (or, with PyYAML installed, YAML) config file into a flat dict."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise TextxferError(f"{path}: cannot read config file ({exc.strerror})") from None
    except UnicodeDecodeError as exc:
        raise TextxferError(f"{path}: a config file must be UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset "
                            f"{exc.start} is not); save it as UTF-8") from None
    try:
        if file.suffix.lower() in (".yaml", ".yml"):
            import yaml  # PyYAML: a dependency of textxfer (pyproject.toml)

            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except Exception as exc:  # json and yaml raise different types; YAML's message spans lines: keep one
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        reason = getattr(exc, "problem", None) or " ".join(str(exc).split())
        raise TextxferError(f"{path}: not a valid config file{where} ({reason}); it must hold one mapping of option "
                            "names to values") from None
    if not isinstance(data, dict):
        raise TextxferError(f"{path}: a config file must hold one mapping of option names to values")
    # Hyphenated keys (max-depth) as the flags spell them, at the top and in compare's sections alike.
    return {str(k).replace("-", "_"): ({str(sk).replace("-", "_"): sv for sk, sv in v.items()} if isinstance(v, dict) else v)
            for k, v in data.items()}
