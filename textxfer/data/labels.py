"""``LabelSet``: the one ordered mapping between label values and class ids, shared by all pipelines."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Iterable, Sequence

from textxfer.errors import TextxferError


@dataclass(frozen=True)
class LabelSet:
    """Ordered label names and their kind (``"str"`` or ``"int"``).

    Order is deterministic: integers ascending, strings in code-point order. Labels are handled as
    their string form internally; :meth:`value` returns the original type for users. ``multi_label``:
    a row has a set of these labels (see :meth:`indicators`) rather than exactly one.
    """

    names: tuple[str, ...]
    kind: str = "str"
    multi_label: bool = False

    def __post_init__(self) -> None:
        if self.kind not in ("str", "int"):
            raise TextxferError(f"label kind must be 'str' or 'int', got {self.kind!r}")
        if len(set(self.names)) != len(self.names):
            raise TextxferError(f"duplicate label names in {list(self.names)}")
        if len(self.names) < 2:
            what = "labels to train a multi-label" if self.multi_label else "classes to train a"
            raise TextxferError(
                f"need at least 2 {what} classifier, found {list(self.names)}; "
                "check --label-column"
            )

    @classmethod
    def from_labels(cls, labels: Iterable, multi_label: bool = False) -> "LabelSet":
        """Build from the (string) labels of a training set — for ``multi_label``, from each row's tuple of
        labels; all-integer labels sort numerically."""
        distinct = {name for names in labels for name in names} if multi_label else set(labels)
        if distinct and all(_is_int(name) for name in distinct):
            return cls(tuple(str(v) for v in sorted(int(n) for n in distinct)), "int", multi_label)
        return cls(tuple(sorted(distinct)), "str", multi_label)

    def __len__(self) -> int:
        return len(self.names)

    @property
    def index(self) -> dict[str, int]:
        """Label name → class id."""
        return {name: i for i, name in enumerate(self.names)}

    def encode(self, labels: Sequence[str]) -> list[int]:
        """Class ids for label names; unknown names raise a :class:`TextxferError`."""
        index = self.index
        unknown = Counter(label for label in labels if label not in index)
        if unknown:
            raise TextxferError(
                f"labels not in the model's label set {list(self.names)}: {dict(unknown)}"
            )
        return [index[label] for label in labels]

    def indicators(self, labels: Sequence[Sequence[str]]):
        """A ``(len(labels), len(self))`` 0/1 ``int64`` array: row i has 1 in the columns of row i's labels (a
        multi-label set's rows); unknown names raise a :class:`TextxferError`."""
        import numpy as np

        self.encode([name for names in labels for name in names])  # the one check and message for unknown names
        index = self.index
        matrix = np.zeros((len(labels), len(self.names)), dtype=np.int64)
        for row, names in enumerate(labels):
            matrix[row, [index[name] for name in names]] = 1
        return matrix

    def targets(self, labels: Sequence):
        """What a model trains on: class ids (``int64``) for single-label rows, the :meth:`indicators` matrix for a
        multi-label set's rows."""
        import numpy as np

        return self.indicators(labels) if self.multi_label else np.asarray(self.encode(labels), dtype=np.int64)

    def value(self, name: str) -> str | int:
        """The user-facing value of a label name (an ``int`` for integer label sets)."""
        return int(name) if self.kind == "int" else name

    def to_dict(self) -> dict:
        """JSON-ready form."""
        data = {"names": list(self.names), "kind": self.kind}
        if self.multi_label:  # written only when set: a single-label model's files stay as they were
            data["multi_label"] = True
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "LabelSet":
        """Inverse of :meth:`to_dict`."""
        try:
            return cls(tuple(str(n) for n in data["names"]), data.get("kind", "str"), bool(data.get("multi_label", False)))
        except (KeyError, TypeError) as exc:
            raise TextxferError(f"malformed label set {data!r}: {exc}") from None


def _is_int(text: str) -> bool:
    stripped = text.strip()
    return stripped.lstrip("-").isdigit() and stripped == str(int(stripped))
