"""The task's shape: one label or several per row, one text or a pair of texts per row.

The shape is read from the data options once (:meth:`TaskShape.from_options`), travels with every
split (:class:`textxfer.data.dataset.TextDataset`), and is saved in ``split.json`` and in each model's
manifest, so that a model of one shape refuses data of another in one line.
"""

from __future__ import annotations

from dataclasses import dataclass

from textxfer.errors import TextxferError


@dataclass(frozen=True)
class TaskShape:
    """How rows map to inputs and labels.

    ``multi_label``: each row has a set of labels (possibly empty) rather than exactly one.
    ``label_separator``: how a multi-label cell lists its labels (``"|"``); None where labels come as JSON
    lists or as several 0/1 columns (``label_columns``). ``text_pair_column``: the column of each row's
    second text; None for single texts.
    """

    multi_label: bool = False
    label_separator: str | None = None
    label_columns: tuple[str, ...] = ()
    text_pair_column: str | None = None

    def __post_init__(self) -> None:
        if self.label_separator is not None and (not self.label_separator or self.label_separator.strip() != self.label_separator):
            raise TextxferError(f"--label-separator {self.label_separator!r}: give a visible separator such as '|' or ';' "
                                "(no spaces around it; labels are stripped of spaces anyway)")
        if (self.label_separator or self.label_columns) and not self.multi_label:
            raise TextxferError("a label separator or label columns make the task multi-label")
        if self.label_separator and self.label_columns:
            raise TextxferError("pass either --label-separator (one column listing several labels) or --label-columns "
                                "(one 0/1 column per label), not both")
        if len(self.label_columns) == 1:
            raise TextxferError(f"--label-columns {self.label_columns[0]}: one 0/1 column is a single yes/no label; "
                                "pass it as --label-column, or name at least two label columns")
        if len(set(self.label_columns)) != len(self.label_columns):
            raise TextxferError(f"--label-columns {' '.join(self.label_columns)}: a column is named twice")

    @property
    def pair(self) -> bool:
        """Whether each row is a pair of texts."""
        return self.text_pair_column is not None

    @property
    def single(self) -> bool:
        """Whether this is the plain shape: one text, one label per row."""
        return not (self.multi_label or self.pair)

    def describe(self) -> str:
        """In words: "single-label texts", "multi-label text pairs", …"""
        return f"{'multi' if self.multi_label else 'single'}-label {'text pairs' if self.pair else 'texts'}"

    def to_dict(self) -> dict:
        """JSON-ready form (for ``split.json`` and manifests)."""
        return {"multi_label": self.multi_label, "label_separator": self.label_separator,
                "label_columns": list(self.label_columns), "text_pair_column": self.text_pair_column}

    @classmethod
    def from_dict(cls, data: dict | None, where: str = "") -> "TaskShape":
        """Inverse of :meth:`to_dict`; None (files written before shapes existed) is the single-label shape."""
        if data is None:
            return cls()
        try:
            return cls(bool(data["multi_label"]), data.get("label_separator"), tuple(data.get("label_columns") or ()),
                       data.get("text_pair_column"))
        except (KeyError, TypeError, AttributeError) as exc:
            raise TextxferError(f"{where}: malformed task shape {data!r} ({exc}); re-create the file") from None

    def refuse_other(self, other: "TaskShape", what: str, fix: str) -> None:
        """One line when ``other`` (the data's shape) is not this one (the model's, or the split's)."""
        if (self.multi_label, self.pair) != (other.multi_label, other.pair):
            raise TextxferError(f"{what} is for {self.describe()}, but the data holds {other.describe()}; {fix}")


SINGLE = TaskShape()
