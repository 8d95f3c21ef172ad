"""The shared dataset layer: read sources, validate rows, split, check hygiene, record the split.

Both pipelines get their data from :func:`load_data`, so they see the same rows, the same labels and
the same report. The input is only ever read.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from textxfer.errors import TextxferError
from textxfer.data.label_cells import check_training_labels, detect_shape, read_label_cells
from textxfer.data.labels import LabelSet
from textxfer.data.shape import SINGLE, TaskShape
from textxfer.data.splits import (SPLITS, canonical_split_name, multilabel_split, read_split_file, stratified_split,
                                  time_split)
from textxfer.data.tables import Table, as_text, is_missing, read_source
from textxfer.data.times import parse_times

if TYPE_CHECKING:
    from textxfer.data.unlabelled import UnlabelledTexts

FIRST_ROWS = 5  # how many offending row numbers a message lists


@dataclass
class DataOptions:
    """Where the data is and how to read and split it (the same flags on every command)."""

    data: str | None = field(default=None, metadata={"help": "one file, dataset folder or hub dataset; split automatically or by --split-column"})
    train: str | None = field(default=None, metadata={"help": "training file (instead of --data)"})
    validation: str | None = field(default=None, metadata={"help": "validation file; carved from --train when absent"})
    test: str | None = field(default=None, metadata={"help": "test file; carved from --train when absent"})
    split: str | None = field(default=None, metadata={"help": "split.json (or run folder) of an earlier run: score on exactly its rows"})
    text_column: str = field(default="text", metadata={"help": "column holding the text"})
    label_column: str = field(default="label", metadata={"help": "column holding the label (for multi-label data: the labels, listed with --label-separator or as a JSON list)"})
    text_pair_column: str | None = field(default=None, metadata={"help": "column holding each row's second text, for text pairs (premise/hypothesis, question/answer)"})
    label_separator: str | None = field(default=None, metadata={"help": "multi-label: the separator between a row's labels in --label-column, e.g. '|'"})
    label_columns: list[str] | None = field(default=None, metadata={"help": "multi-label: one 0/1 column per label (instead of --label-column)"})
    time_column: str | None = field(default=None, metadata={"help": "column of each row's time (a number or an ISO date): the latest rows become test, the ones just before them validation"})
    split_column: str | None = field(default=None, metadata={"help": "column naming each row's split (train/validation/test); a column called 'split' is used automatically"})
    validation_size: float = field(default=0.1, metadata={"help": "fraction held out for validation by the automatic split"})
    test_size: float = field(default=0.1, metadata={"help": "fraction held out for test by the automatic split"})
    seed: int = field(default=42, metadata={"help": "random seed (split and training)"})
    encoding: str = field(default="utf-8", metadata={"help": "text encoding of CSV/TSV/JSON inputs"})
    drop_invalid: bool = field(default=False, metadata={"help": "drop rows with an empty text or missing label instead of failing"})
    unlabelled: str | None = field(default=None, metadata={"help": "texts without labels (.txt: one per line; a table: --text-column) for self-training: the trained model labels them and a second model is trained on the labelled texts plus the confident, class-balanced pseudo-labelled ones; the better of the two on validation is kept (needs a validation split; none of its texts may be a validation or test text)"})

    def __post_init__(self) -> None:
        if self.data and self.train:
            raise TextxferError("pass either --data or --train/--validation/--test, not both")
        if (self.validation or self.test) and not self.train:
            raise TextxferError("--validation/--test need --train as well (or use --data)")
        if self.label_columns is not None and (isinstance(self.label_columns, str)
                                               or not all(isinstance(c, str) and c for c in self.label_columns)):
            raise TextxferError(f"--label-columns {self.label_columns!r}: give a list of column names")
        if self.time_column and self.split_column:
            raise TextxferError("pass either --time-column (split by time) or --split-column (split as a column says), not both")

    @property
    def shape(self) -> TaskShape:
        """The task shape these options ask for (a JSON-list label column is found later, in the data)."""
        multi = bool(self.label_separator or self.label_columns)
        return TaskShape(multi, self.label_separator, tuple(self.label_columns or ()), self.text_pair_column)


@dataclass
class TextDataset:
    """Texts and label names of one split, with each row's number in its source (1-based).

    For text pairs, ``pairs`` holds each row's second text; for multi-label data each label is a tuple of
    label names (possibly empty). ``shape`` says which.
    """

    texts: list[str]
    labels: list
    rows: list[int]
    origin: str
    pairs: list[str] | None = None
    shape: TaskShape = SINGLE

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def inputs(self) -> list:
        """What a model reads per row: the text, or the ``(text, second text)`` pair."""
        return list(zip(self.texts, self.pairs)) if self.pairs is not None else list(self.texts)

    def take(self, indices) -> "TextDataset":
        """The rows at ``indices`` (in that order), of the same shape and origin."""
        indices = [int(i) for i in indices]
        pairs = [self.pairs[i] for i in indices] if self.pairs is not None else None
        return TextDataset([self.texts[i] for i in indices], [self.labels[i] for i in indices],
                           [self.rows[i] for i in indices], self.origin, pairs, self.shape)


@dataclass
class PreparedData:
    """The three splits, their label set, the split record and the hygiene report."""

    train: TextDataset
    validation: TextDataset
    test: TextDataset
    labels: LabelSet
    split_record: dict
    notes: list[str]
    counts: dict[str, int]
    unlabelled: "UnlabelledTexts | None" = None  # --unlabelled, checked against validation and test
    label_findings: list = field(default_factory=list)  # label problems of the training rows (data.label_checks)

    def splits(self) -> dict[str, TextDataset]:
        """Split name → dataset."""
        return {"train": self.train, "validation": self.validation, "test": self.test}


@dataclass
class _Pool:
    """Valid rows of one table: indices into the table plus their text and label."""

    location: str
    key: str
    table: Table
    rows: list[int]
    texts: list[str]
    labels: list
    pairs: list[str] | None = None
    shape: TaskShape = SINGLE
    findings: list = field(default_factory=list)  # label problems of a training table (data.label_checks)

    @property
    def keys(self) -> list:
        """What makes two rows the same input: the text, or the pair of texts."""
        return list(zip(self.texts, self.pairs)) if self.pairs is not None else self.texts


def load_data(options: DataOptions) -> PreparedData:
    """Read, validate and split the data described by ``options``."""
    notes: list[str] = []
    counts: Counter = Counter()
    if options.split:
        record = read_split_file(options.split)
        parts = _parts_from_split_record(record, options, notes, counts)
        method = record.get("method", "reused")
        text_column, label_column = record["text_column"], record["label_column"]
        time_column = record.get("time_column")
    else:
        text_column, label_column, time_column = options.text_column, options.label_column, options.time_column
        parts, method = _parts_from_sources(options, notes, counts)
    shape = parts["train"][0].shape
    datasets = {name: _subset(pool, indices) for name, (pool, indices) in parts.items()}
    _check_columns(datasets["train"], text_column, label_column)
    _check_classes(datasets["train"], label_column)
    labels = LabelSet.from_labels(datasets["train"].labels, shape.multi_label)
    _check_unseen_labels(datasets, labels)
    _remove_leakage(datasets, parts, notes, counts)
    _report_conflicts(datasets, notes, counts)
    _note_thin_classes(datasets, labels, notes)
    if shape.multi_label:
        _note_unlabelled_rows(datasets, notes, counts)
    for name in SPLITS:
        counts[f"{name}_rows"] = len(datasets[name])
    record = {
        "method": method,
        "text_column": text_column,
        "label_column": label_column,
        "seed": options.seed,
        "validation_size": options.validation_size,
        "test_size": options.test_size,
        **({"shape": shape.to_dict()} if not shape.single else {}),
        **({"time_column": time_column} if time_column else {}),
        "splits": {
            name: {"source": pool.location, "table": pool.key, "sha256": pool.table.fingerprint,
                   "rows": [pool.rows[i] for i in indices]}
            for name, (pool, indices) in parts.items()
        },
    }
    unlabelled = None
    if options.unlabelled:
        from textxfer.data.unlabelled import check_against_split, read_unlabelled

        if not shape.single:
            why = ("an unlabelled file holds one text per row, not pairs" if shape.pair else
                   "its pseudo-labels are one confident class per text, not a set of labels")
            raise TextxferError(f"--unlabelled {options.unlabelled}: self-training on {shape.describe()} is not supported "
                                f"({why}); leave out --unlabelled")
        if not datasets["validation"].texts:
            raise TextxferError(f"--unlabelled {options.unlabelled}: self-training needs a validation split to tell "
                                "whether the pseudo-labels helped; pass --validation or a --validation-size above 0")
        unlabelled = check_against_split(read_unlabelled(options.unlabelled, text_column, options.encoding), datasets)
        notes += unlabelled.notes
    findings = [finding for pool in {id(pool): pool for pool, _ in parts.values()}.values() for finding in pool.findings]
    return PreparedData(datasets["train"], datasets["validation"], datasets["test"], labels, record, notes, dict(counts),
                        unlabelled, findings)


def _parts_from_sources(options: DataOptions, notes: list[str], counts: Counter) -> tuple[dict, str]:
    """Split name → (pool, indices into the pool) from --data or --train/--validation/--test."""
    if not options.data and not options.train:
        raise TextxferError("no data given: pass --data PATH, or --train PATH [--validation PATH --test PATH]")
    if options.data:
        tables = read_source(options.data, options.encoding)
        if set(tables) == {"all"}:
            pool = _pool(options.data, "all", tables["all"], options, notes, counts, training=True)
            split_column = options.split_column or ("split" if "split" in pool.table.columns and not options.time_column
                                                    else None)
            if split_column:
                return _split_by_column(pool, split_column), "column"
            assignment = _assign(pool, options, options.validation_size, options.test_size)
            return _group(pool, assignment), "time" if options.time_column else "random"
        named = {canonical_split_name(key, options.data, 0, "split name"): key for key in tables}
        if "train" not in named:
            raise TextxferError(f"{options.data}: no training split among {sorted(tables)}")
        pools = {"train": _pool(options.data, named["train"], tables[named["train"]], options, notes, counts, training=True)}
        for name, key in named.items():
            if name != "train":
                pools[name] = _pool(options.data, key, tables[key], options, notes, counts, pools["train"].shape)
        return _carve_missing(pools, options), "dataset-splits"
    pools = {}
    for name in SPLITS:
        location = getattr(options, name)
        if location:
            tables = read_source(location, options.encoding)
            key = "all" if "all" in tables else ("train" if name == "train" and "train" in tables else sorted(tables)[0])
            shape = pools["train"].shape if "train" in pools else None
            pools[name] = _pool(location, key, tables[key], options, notes, counts, shape, training=name == "train")
    return _carve_missing(pools, options), "files"


def _assign(pool: "_Pool", options: DataOptions, validation_size: float, test_size: float) -> list[str]:
    """Each pool row's split: by time (--time-column), else stratified (iteratively for multi-label rows)."""
    if options.time_column:
        column = pool.table.column(options.time_column, "time")
        times = parse_times([column[row - 1] for row in pool.rows], pool.rows, pool.table.origin, options.time_column)
        return time_split(times, validation_size, test_size)
    split = multilabel_split if pool.shape.multi_label else stratified_split
    return split(pool.keys, pool.labels, validation_size, test_size, options.seed)


def _carve_missing(pools: dict[str, _Pool], options: DataOptions) -> dict:
    """Use each split's own pool; carve absent validation/test out of the training pool."""
    train = pools["train"]
    carve_validation = options.validation_size if "validation" not in pools else 0.0
    carve_test = options.test_size if "test" not in pools else 0.0
    parts = _group(train, _assign(train, options, carve_validation, carve_test))
    for name, pool in pools.items():
        if name != "train":
            parts[name] = (pool, list(range(len(pool.rows))))
    return parts


def _parts_from_split_record(record: dict, options: DataOptions, notes: list[str], counts: Counter) -> dict:
    """Rebuild the splits of a saved ``split.json``; refuse if a source changed."""
    overrides = {"train": options.train or options.data, "validation": options.validation or options.data,
                 "test": options.test or options.data}
    shape = TaskShape.from_dict(record.get("shape"), str(options.split))
    asked = options.shape
    if not asked.single and (asked.multi_label, asked.pair) != (shape.multi_label, shape.pair):
        raise TextxferError(f"{options.split}: the split was made for {shape.describe()}, but the options ask for "
                            f"{asked.describe()}; leave out the shape options (the split's own are used) or make a "
                            "new split without --split")
    reading = DataOptions(text_column=record["text_column"], label_column=record["label_column"],
                          text_pair_column=shape.text_pair_column, label_separator=shape.label_separator,
                          label_columns=list(shape.label_columns) or None, encoding=options.encoding, drop_invalid=True)
    cache: dict[tuple[str, str], _Pool] = {}
    parts = {}
    for name, entry in record["splits"].items():
        location = overrides[name] or entry["source"]
        key = (location, entry["table"])
        if key not in cache:
            tables = read_source(location, options.encoding)
            if entry["table"] not in tables:
                raise TextxferError(f"{location}: has no table {entry['table']!r} named in the split file")
            table = tables[entry["table"]]
            if table.fingerprint != entry["sha256"]:
                raise TextxferError(
                    f"{location}: its contents changed since the split was made (sha256 {table.fingerprint[:12]}… "
                    f"≠ {entry['sha256'][:12]}…); re-create the split without --split, or restore the original file"
                )
            cache[key] = _pool(location, entry["table"], table, reading, [], Counter(), shape)
        pool = cache[key]
        position = {row: i for i, row in enumerate(pool.rows)}
        missing = [row for row in entry["rows"] if row not in position]
        if missing:
            raise TextxferError(f"{location}: split rows {missing[:FIRST_ROWS]} are not valid rows of the file")
        parts[name] = (pool, [position[row] for row in entry["rows"]])
    for name in SPLITS:
        parts.setdefault(name, (parts["train"][0], []))
    notes.append(f"reused the split from {options.split}")
    return parts


def _pool(location: str, key: str, table: Table, options: DataOptions, notes: list[str], counts: Counter,
          shape: TaskShape | None = None, training: bool = False) -> _Pool:
    """Valid rows of ``table``; invalid ones fail the run, or are dropped with --drop-invalid. ``shape``: the
    training data's (None: this is the training data; a JSON-list label column makes it multi-label)."""
    shape = shape or detect_shape(table, options.label_column, options.shape)
    texts_raw = table.column(options.text_column, "text")
    pairs_raw = table.column(shape.text_pair_column, "second text") if shape.pair else None
    labels_raw = read_label_cells(table, options.label_column, shape)
    rows, texts, labels, pairs = [], [], [], []
    empty_text, empty_pair, missing_label = [], [], []
    for index, (text, label) in enumerate(zip(texts_raw, labels_raw)):
        row = index + 1
        if is_missing(text):
            empty_text.append(row)
        elif pairs_raw is not None and is_missing(pairs_raw[index]):
            empty_pair.append(row)
        elif label is None:
            missing_label.append(row)
        else:
            rows.append(row)
            texts.append(as_text(text, f"{table.origin}: row {row}", options.text_column))
            labels.append(label)
            if pairs_raw is not None:
                pairs.append(as_text(pairs_raw[index], f"{table.origin}: row {row}", shape.text_pair_column))
    for problem, bad_rows, column in (("an empty, whitespace-only or invisible (zero-width) text", empty_text, options.text_column),
                                      ("an empty second text", empty_pair, shape.text_pair_column),
                                      ("a missing label", missing_label, options.label_column)):
        if not bad_rows:
            continue
        where = f"{table.origin}: {len(bad_rows)} row(s) with {problem} in column {column!r} (rows {_first(bad_rows)})"
        if not options.drop_invalid:
            raise TextxferError(f"{where}; fix them or pass --drop-invalid to skip them")
        notes.append(f"{where}: dropped (--drop-invalid)")
        counts["dropped_invalid"] += len(bad_rows)
    if not len(table):
        raise TextxferError(f"{table.origin}: has a header but no data rows (columns {list(table.columns)}); "
                            "add rows or point at the right file")
    if not rows:
        raise TextxferError(f"{table.origin}: no usable rows (columns {list(table.columns)})")
    if training and shape.multi_label:
        where = (f"columns {list(shape.label_columns)}" if shape.label_columns
                 else f"column {options.label_column!r}")
        check_training_labels(labels, rows, table.origin, where)
    findings = []
    if training:
        from textxfer.data.label_checks import label_findings

        cells = None if shape.label_columns else table.column(options.label_column, "label")
        findings = label_findings(table.origin, rows, texts, labels, cells and [cells[row - 1] for row in rows],
                                  options.text_column, options.label_column, shape.multi_label)
    return _Pool(location, key, table, rows, texts, labels, pairs if pairs_raw is not None else None, shape, findings)


def _split_by_column(pool: _Pool, column: str) -> dict:
    values = pool.table.column(column, "split")
    assignment = [canonical_split_name(values[row - 1], pool.table.origin, row, column) for row in pool.rows]
    return _group(pool, assignment)


def _group(pool: _Pool, assignment: list[str]) -> dict:
    grouped: dict[str, list[int]] = {name: [] for name in SPLITS}
    for index, name in enumerate(assignment):
        grouped[name].append(index)
    return {name: (pool, indices) for name, indices in grouped.items()}


def _subset(pool: _Pool, indices: list[int]) -> TextDataset:
    pairs = [pool.pairs[i] for i in indices] if pool.pairs is not None else None
    return TextDataset([pool.texts[i] for i in indices], [pool.labels[i] for i in indices],
                       [pool.rows[i] for i in indices], pool.table.origin, pairs, pool.shape)


# A "label" column with at least this many classes, nearly one per row, whose median value is this long,
# holds texts (swapped columns); few-shot intent data (one short name per row) is not refused.
MANY_CLASSES = 50
LONG_LABEL = 20


def _check_columns(train: TextDataset, text_column: str, label_column: str) -> None:
    """Refuse the text/label column mix-ups that would otherwise train a model on nonsense, in one line."""
    fix = "point --text-column at the texts and --label-column at the labels"
    shape = train.shape
    label_columns = shape.label_columns or (label_column,)
    if text_column in label_columns:
        raise TextxferError(f"{train.origin}: --text-column and --label-column{'s' if shape.label_columns else ''} both "
                            f"name column {text_column!r}; a model would learn its labels from themselves — {fix}")
    if shape.pair and shape.text_pair_column in (text_column, *label_columns):
        raise TextxferError(f"{train.origin}: --text-pair-column {shape.text_pair_column!r} is also the text or label "
                            "column; point it at the column of each row's second text")
    if shape.multi_label:  # the swapped-column checks below read single label names
        return
    if len(train) >= 20 and all(text.strip() == label for text, label in zip(train.texts, train.labels)):
        raise TextxferError(f"{train.origin}: column {text_column!r} holds the same values as label column "
                            f"{label_column!r} in every training row; {fix}")
    texts, classes = len(set(train.texts)), len(set(train.labels))
    lengths = sorted(len(label) for label in train.labels)
    if classes >= MANY_CLASSES and classes > 0.9 * len(train) and lengths[len(lengths) // 2] >= LONG_LABEL:
        raise TextxferError(f"{train.origin}: label column {label_column!r} has {classes:,} distinct values in "
                            f"{len(train):,} training rows — it looks like a text column (swapped columns?); {fix}")
    if len(train) >= 20 and texts <= classes and texts < len(train) / 2:  # repeats like a label column
        raise TextxferError(f"{train.origin}: text column {text_column!r} has only {texts} distinct value(s) in "
                            f"{len(train):,} training rows — it looks like a label or category column; {fix}")


def _check_classes(train: TextDataset, column: str) -> None:
    if train.shape.multi_label:  # checked before the split, on all training rows (label_cells.check_training_labels)
        return
    found = sorted(set(train.labels))
    if len(found) < 2:
        raise TextxferError(
            f"{train.origin}: the training rows have {len(found)} class(es) {found} in column {column!r}; "
            "a classifier needs at least 2 — add rows of another class or choose the right --label-column"
        )


def _check_unseen_labels(datasets: dict[str, TextDataset], labels: LabelSet) -> None:
    known = set(labels.names)
    for name in ("validation", "test"):
        used = ([label for names in datasets[name].labels for label in names] if labels.multi_label
                else datasets[name].labels)
        unseen = Counter(label for label in used if label not in known)
        if unseen:
            listed = ", ".join(f"{label!r} ×{n}" for label, n in sorted(unseen.items()))
            raise TextxferError(
                f"{datasets[name].origin}: {name} has labels that never occur in training: {listed}; "
                "add training examples for them or remove those rows"
            )


# A class with fewer test (or validation) rows than this gets a note: its F1, and macro-F1 with it, are noisy.
FEW_ROWS = 10


def _note_thin_classes(datasets: dict[str, TextDataset], labels: LabelSet, notes: list[str]) -> None:
    """Notes for evaluation splits a class is missing from, or has only a few rows in."""
    for name in ("validation", "test"):
        split = datasets[name]
        if not len(split):
            continue
        counts = Counter(label for names in split.labels for label in names) if labels.multi_label else Counter(split.labels)
        missing = [label for label in labels.names if not counts[label]]
        if missing:
            notes.append(f"{name} has no rows of class(es) {missing}: their F1 is undefined, and macro-F1 averages "
                         "the other classes only (add rows of them to score them)")
        thin = {label: counts[label] for label in labels.names if 0 < counts[label] < FEW_ROWS}
        if thin:
            listed = ", ".join(f"{label!r} {n}" for label, n in thin.items())
            notes.append(f"{name} has fewer than {FEW_ROWS} rows of some classes ({listed}, of {len(split):,} rows): "
                         "their F1, and macro-F1, are noisy")


def _remove_leakage(datasets: dict[str, TextDataset], parts: dict, notes: list[str], counts: Counter) -> None:
    """Drop evaluation rows whose exact text appears in an earlier split (train, then validation)."""
    seen = set(datasets["train"].inputs)
    for name in ("validation", "test"):
        dataset = datasets[name]
        keep = [i for i, key in enumerate(dataset.inputs) if key not in seen]
        leaked = [dataset.rows[i] for i in sorted(set(range(len(dataset))) - set(keep))]
        if leaked:
            notes.append(f"{dataset.origin}: {len(leaked)} {name} row(s) repeat a text of an earlier split "
                         f"(leakage) and were removed from {name} (rows {_first(leaked)})")
            counts[f"leaked_{name}"] = len(leaked)
            pool, indices = parts[name]
            parts[name] = (pool, [indices[i] for i in keep])
            datasets[name] = _subset(pool, parts[name][1])
        seen.update(datasets[name].inputs)


def _report_conflicts(datasets: dict[str, TextDataset], notes: list[str], counts: Counter) -> None:
    labels_of: dict[str, set] = defaultdict(set)
    rows_of: dict[str, list[int]] = defaultdict(list)
    for dataset in datasets.values():
        for text, label, row in zip(dataset.inputs, dataset.labels, dataset.rows):
            labels_of[text].add(label)
            rows_of[text].append(row)
    conflicting = [text for text, found in labels_of.items() if len(found) > 1]
    if conflicting:
        rows = sorted(row for text in conflicting for row in rows_of[text])
        notes.append(f"{len(conflicting)} text(s) appear with conflicting labels (rows {_first(rows)}); kept as given")
        counts["conflicting_texts"] = len(conflicting)


def _note_unlabelled_rows(datasets: dict[str, TextDataset], notes: list[str], counts: Counter) -> None:
    """Say how many multi-label rows have no label at all (kept: the model learns that none applies)."""
    for name, dataset in datasets.items():
        empty = [row for names, row in zip(dataset.labels, dataset.rows) if not names]
        if empty:
            notes.append(f"{name}: {len(empty):,} of {len(dataset):,} rows have no label (rows {_first(empty)}); kept — "
                         "the model learns that none of the labels applies to them")
            counts[f"{name}_rows_without_labels"] = len(empty)


def _first(rows: list[int]) -> str:
    shown = ", ".join(str(r) for r in rows[:FIRST_ROWS])
    return shown + (", …" if len(rows) > FIRST_ROWS else "")
