"""The baseline: tokens → word2vec (gensim) → weighted average per text → scikit-learn RandomForest."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from textxfer.data.dataset import TextDataset
from textxfer.errors import TextxferError
from textxfer.core.imports import skops_io
from textxfer.data.labels import LabelSet
from textxfer.data.tables import unicode_safe
from textxfer.core.calibration import CALIBRATION_HELP, CALIBRATIONS, check_calibration
from textxfer.core.manifest import build_manifest, write_manifest
from textxfer.core.contract import ClassifierBase
from textxfer.core.thresholds import THRESHOLD_HELP, check_threshold
from textxfer.data.words import MAX_TEXT_CHARS, TOKENIZERS, jieba_engine, resolve_tokenizer, tokenize
from textxfer.baseline.vectors import WordVectors, read_pretrained, train_word2vec

FOREST_FILE = "forest.skops"
WEIGHTINGS = ("mean", "tfidf", "nb", "nb-tfidf")
# The only non-default type a RandomForestClassifier file may contain; anything else is refused.
TRUSTED_FOREST_TYPES = ("sklearn.tree._tree.Tree",)
FOREST_PROGRESS_CHUNKS = 10
SMALL_BATCH = 64  # up to this many texts, predict without the forest's thread pool


@dataclass
class BaselineConfig:
    """Settings of the word2vec + RandomForest baseline."""

    tokenizer: str = field(default="auto", metadata={"help": "auto (jieba for Chinese, else words) | jieba | words | chars", "choices": TOKENIZERS})
    vectors: str | None = field(default=None, metadata={"help": "pretrained word2vec file (.txt/.vec text, .bin binary) instead of training vectors"})
    corpus: str | None = field(default=None, metadata={"help": "extra unlabelled text file (one text per line) for word2vec training"})
    vector_size: int = field(default=100, metadata={"help": "word2vec dimensions"})
    window: int = field(default=5, metadata={"help": "word2vec context window"})
    min_count: int = field(default=2, metadata={"help": "ignore words rarer than this in word2vec training"})
    epochs: int = field(default=5, metadata={"help": "word2vec training epochs"})
    sg: bool = field(default=True, metadata={"help": "skip-gram (--no-sg: CBOW)"})
    negative: int = field(default=5, metadata={"help": "word2vec negative samples"})
    sample: float = field(default=0.0, metadata={"help": "word2vec down-sampling of frequent words (0: off)"})
    label_tokens: int = field(default=3, metadata={"help": "insert each training text's label as a token every N words of its word2vec sentence, so the vectors absorb the labels (0: off; prediction texts carry no label tokens)"})
    label_dimensions: bool = field(default=True, metadata={"help": "append each word's per-label log-count ratios (from the training split) to its vector before averaging"})
    weighting: str = field(default="nb", metadata={"help": "how word vectors are averaged: mean | tfidf (idf) | nb (by how strongly a word separates the training labels: its largest log-count ratio) | nb-tfidf (idf × (0.1 + that))", "choices": WEIGHTINGS})
    n_estimators: int = field(default=100, metadata={"help": "number of trees"})
    max_depth: int | None = field(default=None, metadata={"help": "maximum tree depth (none: unlimited)"})
    min_samples_leaf: int = field(default=3, metadata={"help": "minimum samples per leaf"})
    max_features: str = field(default="sqrt", metadata={"help": "features tried per split: sqrt | log2 | a fraction such as 0.3"})
    class_weight: str | None = field(default=None, metadata={"help": "none | balanced | balanced_subsample"})
    n_jobs: int = field(default=-1, metadata={"help": "parallel jobs for word2vec and the forest (-1: all cores)"})
    seed: int = field(default=42, metadata={"help": "random seed"})
    threshold: float | None = field(default=None, metadata={"help": THRESHOLD_HELP})
    calibration: str = field(default="temperature", metadata={"help": CALIBRATION_HELP, "choices": CALIBRATIONS})
    pseudo_votes: float = field(default=0.5, metadata={"help": "votes every class gets before the trees' own (Jeffreys' half a vote): a class no tree chose keeps a small probability instead of 0, which a log-loss temperature cannot handle (0: the forest's own averages)"})

    def __post_init__(self) -> None:
        check_threshold(self.threshold)
        check_calibration(self.calibration)
        if self.tokenizer not in TOKENIZERS:
            raise TextxferError(f"unknown tokenizer {self.tokenizer!r}; choose one of {list(TOKENIZERS)}")
        if self.weighting not in WEIGHTINGS:
            raise TextxferError(f"unknown weighting {self.weighting!r}; choose one of {list(WEIGHTINGS)}")
        if self.class_weight in ("none", "None", ""):
            self.class_weight = None
        if self.class_weight not in (None, "balanced", "balanced_subsample"):
            raise TextxferError(f"class_weight must be none, balanced or balanced_subsample, got {self.class_weight!r}")
        if self.label_tokens < 0 or self.sample < 0 or self.pseudo_votes < 0:
            raise TextxferError("label_tokens, sample and pseudo_votes must not be negative")
        for name in ("vector_size", "window", "min_count", "epochs", "n_estimators", "min_samples_leaf"):
            if getattr(self, name) < 1:
                raise TextxferError(f"{name} must be at least 1, got {getattr(self, name)}")
        self.forest_max_features()  # validates

    def forest_max_features(self) -> str | float | int:
        """``max_features`` as scikit-learn expects it."""
        if self.max_features in ("sqrt", "log2"):
            return self.max_features
        try:
            value = float(self.max_features)
        except ValueError:
            raise TextxferError(f"max_features must be sqrt, log2 or a number, got {self.max_features!r}") from None
        return int(value) if value >= 1 and value.is_integer() else value


class BaselineClassifier(ClassifierBase):
    """word2vec-average + RandomForest, following the shared ``Classifier`` contract."""

    kind = "baseline"
    fitted_attribute = "forest_"

    def __init__(self, config: BaselineConfig | None = None) -> None:
        self.config = config or BaselineConfig()

    # -- training -------------------------------------------------------------------------------
    def fit(self, train: TextDataset, validation: TextDataset | None = None, labels: LabelSet | None = None,
            progress: bool = False) -> "BaselineClassifier":
        """Train vectors (or read pretrained ones) and the forest on ``train``; returns ``self``.

        ``validation`` sets the temperature of the forest's probabilities (``--calibration``) and a multi-label
        model's per-label thresholds; the forest itself never sees it (it has no early stopping). Text pairs: both texts' tokens train the vectors and the word statistics, and
        the forest reads :func:`pair_features` of the two averaged vectors.
        """
        cfg = self.config
        self.labels = self.begin_fit(train, labels)
        self.tokenizer_ = resolve_tokenizer(cfg.tokenizer, train.texts + (train.pairs or []))
        self.tokenizer_engine_ = jieba_engine()[0] if self.tokenizer_ == "jieba" else "regex"
        parts = [tokenize(texts, self.tokenizer_, progress, len(texts)) for texts in _parts(train)]
        tokens = [sum(row, []) for row in zip(*parts)] if len(parts) > 1 else parts[0]  # a row's words, both texts
        # The label ids of each row: one for a single-label row, any number (none included) for a multi-label one.
        ids = ([list(row.nonzero()[0]) for row in self.labels.indicators(train.labels)] if self.labels.multi_label
               else [[i] for i in self.labels.encode(train.labels)])
        if cfg.vectors:
            vocab, matrix = read_pretrained(cfg.vectors)
        else:
            markers = [label_token(name) for name in self.labels.names]
            sentences = ([with_label_tokens(t, [markers[i] for i in row], cfg.label_tokens)
                          for part in parts for t, row in zip(part, ids)] if cfg.label_tokens else sum(parts, []))
            corpus = sentences + self._corpus_tokens(progress)
            vocab, matrix = train_word2vec(corpus, cfg.vector_size, cfg.window, cfg.min_count, cfg.epochs, cfg.sg,
                                           cfg.negative, cfg.sample, _workers(cfg.n_jobs), cfg.seed, progress,
                                           exclude=frozenset(markers))
        y = self.labels.targets(train.labels)
        idf, log_ratio = word_statistics(vocab, tokens, y, len(self.labels))
        if cfg.label_dimensions:
            matrix = np.hstack([matrix, log_ratio.T.astype(np.float32)])
        self.vectors_ = WordVectors(vocab, matrix, word_weights(idf, log_ratio, cfg.weighting))
        features, empty = _combine([self.vectors_.embed(part) for part in parts])
        self.forest_ = self._fit_forest(features, y, progress)
        self.end_fit(validation, cfg.threshold, cfg.calibration)
        self.fit_stats_ = {"train_texts": len(train), "vocabulary": len(vocab),
                           "train_texts_without_known_words": empty, "tokenizer": self.tokenizer_,
                           "tokenizer_engine": self.tokenizer_engine_,
                           "long_texts": {"max_chars": MAX_TEXT_CHARS, "train_texts_capped":
                                          sum(len(t) > MAX_TEXT_CHARS for t in train.texts),
                                          "policy": "head and tail, half each"}}
        return self

    def _corpus_tokens(self, progress: bool) -> list[list[str]]:
        if not self.config.corpus:
            return []
        path = Path(self.config.corpus)
        try:
            lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        except FileNotFoundError:
            raise TextxferError(f"{path}: no such corpus file") from None
        except UnicodeDecodeError as exc:
            raise TextxferError(f"{path}: not valid UTF-8 at byte offset {exc.start}; convert the corpus to UTF-8") from None
        return tokenize(lines, self.tokenizer_, progress, len(lines))

    def _fit_forest(self, features: np.ndarray, y: np.ndarray, progress: bool):
        from sklearn.ensemble import RandomForestClassifier
        from tqdm.auto import tqdm

        cfg = self.config
        forest = RandomForestClassifier(
            n_estimators=0, max_depth=cfg.max_depth, min_samples_leaf=cfg.min_samples_leaf,
            max_features=cfg.forest_max_features(), class_weight=cfg.class_weight, n_jobs=cfg.n_jobs,
            random_state=cfg.seed, warm_start=True)
        # Grow the forest in chunks (warm_start) so a progress bar can follow it.
        step = max(1, math.ceil(cfg.n_estimators / FOREST_PROGRESS_CHUNKS))
        with tqdm(total=cfg.n_estimators, desc="random forest", unit="tree", leave=False, disable=not progress) as bar:
            while forest.n_estimators < cfg.n_estimators:
                grow = min(step, cfg.n_estimators - forest.n_estimators)
                forest.set_params(n_estimators=forest.n_estimators + grow)
                forest.fit(features, y)
                bar.update(grow)
        forest.set_params(warm_start=False)
        return forest

    # -- inference ------------------------------------------------------------------------------
    def features(self, texts: Sequence) -> tuple[np.ndarray, int]:
        """The forest's input for ``texts`` (text vectors, or :func:`pair_features` of pairs) and how many inputs had
        no known word (their text vector is zero; for a pair, in either text)."""
        self._check_fitted()
        inputs = self.check_inputs(texts)
        parts = ([[unicode_safe(item[k]) for item in inputs] for k in (0, 1)] if self.shape.pair
                 else [[unicode_safe(t) for t in inputs]])
        return _combine([self.vectors_.embed(tokenize(part, self.tokenizer_)) for part in parts])

    def raw_proba(self, texts: Sequence) -> np.ndarray:
        """Class probabilities, one row per text, columns in ``self.labels`` order (for a multi-label model, each
        label's probability of applying): the trees' averaged votes with ``pseudo_votes`` added to every class
        (:meth:`_with_pseudo_votes`)."""
        features, _ = self.features(texts)
        if len(features) == 0:
            return np.zeros((0, len(self.labels)))
        return self._with_pseudo_votes(self._forest_proba(features))

    def _with_pseudo_votes(self, probabilities: np.ndarray) -> np.ndarray:
        """``(n·p + a) / (n + k·a)`` for ``n`` trees, ``a`` pseudo-votes and ``k`` outcomes (the classes; 2 for each
        label of a multi-label model): the same affine map for every class of a row, so the order of the classes
        (and each label's order over texts) is kept. Without it a class no tree chose has probability exactly 0,
        which costs an unbounded log loss: fitted on such validation texts, the temperature softens every other
        probability (measured on THUCNews, BENCHMARKS.md "Calibration")."""
        a = self.config.pseudo_votes
        if not a:
            return probabilities
        n = len(self.forest_.estimators_)
        return (n * probabilities + a) / (n + (2 if self.labels.multi_label else probabilities.shape[1]) * a)

    def _forest_proba(self, features: np.ndarray) -> np.ndarray:
        """The forest's own averaged probabilities of ``features``."""
        if len(features) <= SMALL_BATCH:
            # RandomForestClassifier.predict_proba costs ~35 ms per call however few the rows (a thread
            # pool, input checks): average the trees here as it does, validating the input once.
            rows = np.ascontiguousarray(features, dtype=np.float32)
            outputs = [tree.predict_proba(rows, check_input=False) for tree in self.forest_.estimators_]
            if self.labels.multi_label:  # one (n, classes) array per label from each tree
                return self._positive_columns([sum(tree[j] for tree in outputs) / len(outputs)
                                               for j in range(len(self.labels))])
            return sum(outputs) / len(outputs)
        probabilities = self.forest_.predict_proba(features)
        return self._positive_columns(probabilities) if self.labels.multi_label else probabilities

    def _positive_columns(self, per_label: list[np.ndarray]) -> np.ndarray:
        """A multi-output forest's per-label ``(n, classes)`` probabilities → the ``(n, labels)`` probability that
        each label applies (0 for a label the training rows never had, 1 for one they always had)."""
        columns = []
        for j, probabilities in enumerate(per_label):
            classes = list(self.forest_.classes_[j])
            columns.append(probabilities[:, classes.index(1)] if 1 in classes else np.zeros(len(probabilities)))
        return np.stack(columns, axis=1)

    def input_report(self, texts: Sequence[str]) -> dict[str, int]:
        """Figures about inputs worth reporting: texts with no word known to the vectors."""
        return {"texts_without_known_words": self.features(texts)[1]}


    # -- persistence ----------------------------------------------------------------------------

    def write(self, folder: Path, data_info: dict | None = None) -> None:
        """Write the model files and manifest into an existing, empty ``folder``."""
        sio = skops_io()
        self._check_fitted()
        files = self.vectors_.save(folder)
        sio.dump(self.forest_, folder / FOREST_FILE)
        files["forest"] = FOREST_FILE
        config = {**asdict(self.config), "resolved_tokenizer": self.tokenizer_,
                  "tokenizer_engine": self.tokenizer_engine_}
        write_manifest(folder, build_manifest(self.kind, self.labels, config, data_info or {}, files, self.task_info(),
                                              self.calibration))

    @classmethod
    def from_manifest(cls, folder: Path, manifest: dict, labels: LabelSet, device: str = "auto",
                      precision: str = "auto", load_member=None) -> "BaselineClassifier":
        """A saved baseline (it runs on the CPU: ``device`` and ``precision`` do not apply); the forest file may
        only contain the types a forest needs."""
        sio = skops_io()
        config = dict(manifest["config"])
        tokenizer, engine = config.pop("resolved_tokenizer", None), config.pop("tokenizer_engine", None)
        from textxfer.core.config import from_dict

        config.setdefault("pseudo_votes", 0.0)  # saved before they existed: the forest's own averages, as then
        model = cls(from_dict(BaselineConfig, config, source=f"{folder}/textxfer.json config"))
        model.labels = labels
        model.tokenizer_ = resolve_tokenizer(tokenizer or "auto", [])
        model.tokenizer_engine_ = engine
        model.vectors_ = WordVectors.load(folder)
        forest_path = folder / manifest["files"].get("forest", FOREST_FILE)
        try:
            untrusted = sio.get_untrusted_types(file=forest_path)
            unexpected = sorted(set(untrusted) - set(TRUSTED_FOREST_TYPES))
            if unexpected:
                raise TextxferError(f"{forest_path}: contains unexpected types {unexpected}; refusing to load it")
            model.forest_ = sio.load(forest_path, trusted=list(untrusted))
        except TextxferError:
            raise
        except Exception as exc:  # skops raises assorted errors for corrupt files
            raise TextxferError(f"{forest_path}: cannot read the forest ({exc}); re-train or restore the folder") from None
        from sklearn.ensemble import RandomForestClassifier

        if not isinstance(model.forest_, RandomForestClassifier):
            raise TextxferError(f"{forest_path}: holds a {type(model.forest_).__name__}, not a RandomForestClassifier")
        classes = model.forest_.classes_
        expected = (len(classes) == len(model.labels) and all(set(map(int, c)) <= {0, 1} for c in classes)
                    if model.labels.multi_label else list(classes) == list(range(len(model.labels))))
        if not expected:
            raise TextxferError(f"{forest_path}: the forest's classes do not match the manifest's labels")
        return model


def label_token(name: str) -> str:
    """The helper token that stands for label ``name`` in word2vec training sentences."""
    return f"__textxfer_label__{name}__"


def with_label_tokens(tokens: list[str], markers: list[str], every: int) -> list[str]:
    """``tokens`` with a label marker before every ``every``-th token and at the end; a row with several labels
    takes its ``markers`` in turn, a row with none gets no marker."""
    if not markers:
        return list(tokens)
    out, placed = [], 0
    for position, token in enumerate(tokens):
        if position % every == 0:
            out.append(markers[placed % len(markers)])
            placed += 1
        out.append(token)
    out.append(markers[placed % len(markers)])
    return out


def _parts(dataset: TextDataset) -> list[list[str]]:
    """The texts of each side of a dataset's rows: one list, or two for text pairs."""
    return [dataset.texts, dataset.pairs] if dataset.pairs is not None else [dataset.texts]


def _combine(embedded: list[tuple[np.ndarray, int]]) -> tuple[np.ndarray, int]:
    """One side's text vectors as they are; two sides' as :func:`pair_features`. With how many rows had a side
    without a known word."""
    if len(embedded) == 1:
        return embedded[0]
    (a, _), (b, _) = embedded
    empty = int(((np.abs(a).sum(axis=1) == 0) | (np.abs(b).sum(axis=1) == 0)).sum())
    return pair_features(a, b), empty


def pair_features(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The forest's features of text pairs from their two averaged vectors: ``[a, b, a·b, |a − b|]`` (element-wise;
    InferSent's matching features, Conneau et al., 2017): the texts themselves, where they agree and where they
    differ."""
    return np.hstack([a, b, a * b, np.abs(a - b)])


def word_statistics(vocab: list[str], tokens: list[list[str]], y: np.ndarray, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Training-split statistics per vocabulary word: smoothed idf ``[V]`` and log-count ratios ``[K, V]``.

    idf is ``log((1 + N) / (1 + df)) + 1``. The log-count ratio of a word for class k is the smoothed log
    share of class-k documents containing it minus the same for all other classes (NB-SVM, Wang &
    Manning 2012): positive for words typical of k, negative for words typical of the rest. ``y``: a class id
    per text, or for multi-label texts a 0/1 ``[N, K]`` matrix — then "the rest" of label k is the texts
    without it (one-vs-rest), since a text may carry several labels or none.
    """
    index = {word: i for i, word in enumerate(vocab)}
    document_frequency = np.zeros(len(vocab))
    class_counts = np.zeros((n_classes, len(vocab)))
    multi_label = y.ndim == 2
    for text_tokens, label in zip(tokens, y):
        ids = [index[t] for t in set(text_tokens) if t in index]
        document_frequency[ids] += 1
        for k in (label.nonzero()[0] if multi_label else (label,)):
            class_counts[k, ids] += 1
    idf = np.log((1 + len(tokens)) / (1 + document_frequency)) + 1
    smoothed = class_counts + 1
    # The rest of class k: the other classes' counts; for multi-label rows (a text may be in several classes,
    # or none), the texts without label k.
    others = (document_frequency - class_counts + 1) if multi_label else smoothed.sum(axis=0) - smoothed + 1
    log_ratio = (np.log(smoothed / smoothed.sum(axis=1, keepdims=True))
                 - np.log(others / others.sum(axis=1, keepdims=True)))
    return idf, log_ratio


def word_weights(idf: np.ndarray, log_ratio: np.ndarray, weighting: str) -> np.ndarray:
    """One averaging weight per word: ``mean`` 1; ``tfidf`` idf; ``nb`` the largest absolute log-count
    ratio; ``nb-tfidf`` idf × (0.1 + that) — label-separating words dominate, neutral ones still count."""
    discrimination = np.abs(log_ratio).max(axis=0)
    weights = {"mean": np.ones_like(idf), "tfidf": idf, "nb": discrimination, "nb-tfidf": idf * (0.1 + discrimination)}
    return weights[weighting].astype(np.float32)


def _workers(n_jobs: int) -> int:
    import os

    return max(1, os.cpu_count() or 1) if n_jobs < 0 else max(1, n_jobs)

