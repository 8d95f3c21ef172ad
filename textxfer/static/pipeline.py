"""The static-vector classifier: a text's tokens' static vectors averaged (:mod:`textxfer.static.vectors`), then a
linear head — as cheap to run as the baseline, no transformer at prediction.

The head is first fitted in closed form, then (``tune_epochs``, with a validation split) trained together with the
token vectors by the ``Trainer`` (:mod:`textxfer.static.tuning`):

- on labels (``fit``): a logistic regression, its strength chosen on validation macro-F1 (as ``--strategy head-only``
  chooses it, :func:`textxfer.transformer.head_fit.choose_c`);
- on a teacher's probabilities (``fit(..., soft_targets=P)``, what ``textxfer distill --student static`` does): a
  ridge regression onto the teacher's logits (``log P`` centred per row) — the mean squared error on logits, solved
  in closed form, its strength chosen on validation macro-F1. MSE on logits rather than KL on probabilities because a
  linear head on fixed features then has an exact solution (no training loop, no learning rate), and logits keep
  how sure the teacher was where probabilities near 0 or 1 flatten it. The tuning that follows minimises
  cross-entropy against the same probabilities (or the labels), starting from that head.

Single-label texts only: a pair or multi-label task is refused in one line.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from textxfer.core.calibration import CALIBRATION_HELP, CALIBRATIONS, check_calibration
from textxfer.core.contract import ClassifierBase
from textxfer.core.manifest import build_manifest, write_manifest
from textxfer.data.dataset import TextDataset
from textxfer.data.labels import LabelSet
from textxfer.errors import TextxferError
from textxfer.static.vectors import TokenTable, distinct_ids, encode_tokens, token_ids

TABLE_FILE = "static.safetensors"
RIDGE_GRID = tuple(float(a) for a in np.logspace(-4, 1, 11))  # ridge strengths tried (features are unit vectors)
LOGIT_FLOOR = 1e-6  # a teacher probability below this counts as this in its logits


@dataclass
class StaticConfig:
    """Settings of the static-vector classifier."""

    model: str = field(default="multilingual-e5-small", metadata={"help": "the encoder whose token vectors are distilled: hub id, local folder, bundled encoder, or a fine-tuned textxfer run folder"})
    tune_epochs: int = field(default=4, metadata={"help": "after the head is fitted, train the token table and head together for up to this many epochs with the Trainer, keeping the epoch of best validation macro-F1 (0: the fitted head on the distilled vectors only; needs a validation split)"})
    tune_learning_rate: float = field(default=3e-4, metadata={"help": "learning rate of that tuning"})
    calibration: str = field(default="temperature", metadata={"help": CALIBRATION_HELP, "choices": CALIBRATIONS})
    seed: int = field(default=42, metadata={"help": "random seed"})
    trust_remote_code: bool = field(default=False, metadata={"help": "run Python code shipped with a hub model; only for models you trust"})

    def __post_init__(self) -> None:
        check_calibration(self.calibration)
        if self.tune_epochs < 0 or not self.tune_learning_rate > 0:
            raise TextxferError("tune_epochs must be 0 or more and tune_learning_rate above 0")


class StaticClassifier(ClassifierBase):
    """Static token vectors averaged per text, and a linear head."""

    kind = "static"
    fitted_attribute = "coef_"

    def __init__(self, config: StaticConfig | None = None) -> None:
        self.config = config or StaticConfig()

    # -- training -------------------------------------------------------------------------------
    def fit(self, train: TextDataset, validation: TextDataset | None = None, labels: LabelSet | None = None,
            progress: bool = False, soft_targets: np.ndarray | None = None) -> "StaticClassifier":
        """Distil the token vectors of the training texts from the encoder, then fit the head on ``train``'s labels —
        or, given ``soft_targets`` (rows of class probabilities aligned with ``train``), on those — and tune both (see
        the module docstring)."""
        import time

        started = time.perf_counter()
        self.labels = self.begin_fit(train, labels)
        if not self.shape.single:
            raise TextxferError(f"a static-vector model classifies single texts into one class; this data is "
                                f"{self.shape.describe()} — use `textxfer finetune` or `textxfer baseline`")
        self.tokenizer_, encoder, self.source_ = _load_encoder(self.config)
        train_ids = token_ids(self.tokenizer_, train.texts)  # each text tokenized once for everything below
        ids = distinct_ids(train_ids, self.tokenizer_.unk_token_id)
        self.table_ = TokenTable.centred(ids, encode_tokens(encoder, self.tokenizer_, ids, progress))
        del encoder
        vectors_seconds = time.perf_counter() - started
        x, empty = self.table_.features(train_ids)
        has_validation = validation is not None and len(validation) > 0
        validation_ids = token_ids(self.tokenizer_, validation.texts) if has_validation else []
        vx = self.table_.features(validation_ids)[0] if has_validation else None
        vy = self.labels.encode(validation.labels) if has_validation else None
        if soft_targets is not None:
            self.coef_, self.intercept_, head = _ridge_on_logits(x, np.asarray(soft_targets), vx, vy, len(self.labels))
        else:
            self.coef_, self.intercept_, head = _logistic(x, self.labels.encode(train.labels), vx, vy,
                                                          len(self.labels), self.config.seed)
        if self.config.tune_epochs and has_validation:
            from textxfer.static.tuning import tune

            vectors, self.coef_, self.intercept_, head["tuned"] = tune(
                self.table_, self.coef_, self.intercept_, train_ids,
                soft_targets if soft_targets is not None else self.labels.encode(train.labels), validation_ids, vy,
                self.config.tune_epochs, self.config.tune_learning_rate, self.config.seed, progress)
            self.table_ = TokenTable(self.table_.ids, vectors)
        elif self.config.tune_epochs:
            head["tuned"] = "not tuned: no validation split to pick the epoch on"
        self.end_fit(validation if has_validation else None, None, self.config.calibration)
        self.fit_stats_ = {"train_texts": len(train), "base_model": self.source_, "tokens": len(ids),
                           "dimensions": self.table_.width, "train_texts_without_known_tokens": empty,
                           "vectors_seconds": round(vectors_seconds, 2), "head": head,
                           "fit_seconds": round(time.perf_counter() - started, 2)}
        return self

    # -- inference ------------------------------------------------------------------------------
    def raw_proba(self, texts: Sequence) -> np.ndarray:
        """Softmax of the head over each text's averaged token vectors."""
        self._check_fitted()
        inputs = self.check_inputs(texts)
        if not inputs:
            return np.zeros((0, len(self.labels)))
        logits = self.table_.embed(self.tokenizer_, inputs)[0].astype(np.float64) @ self.coef_.T + self.intercept_
        logits -= logits.max(axis=1, keepdims=True)
        exp = np.exp(logits)
        return exp / exp.sum(axis=1, keepdims=True)

    def input_report(self, texts: Sequence[str]) -> dict:
        """How many texts have no token with a vector (they get the head's bias alone)."""
        self._check_fitted()
        return {"texts_without_known_tokens": self.table_.embed(self.tokenizer_, list(texts))[1]} if len(texts) else {}

    @property
    def base_model(self) -> str | None:
        return getattr(self, "source_", None)

    # -- files ----------------------------------------------------------------------------------
    def write(self, folder: Path, data_info: dict | None = None) -> None:
        """The table and head (safetensors), the tokenizer and the manifest, into the empty ``folder``. The head stays
        float64, as fitted."""
        from safetensors.numpy import save_file

        self._check_fitted()
        arrays = {"token_ids": self.table_.ids, "vectors": self.table_.vectors, "coef": self.coef_.astype(np.float64),
                  "intercept": self.intercept_.astype(np.float64)}
        # C order: scikit-learn's ridge gives a Fortran-ordered coef_, whose raw buffer safetensors would store as is
        save_file({name: np.ascontiguousarray(value) for name, value in arrays.items()}, str(folder / TABLE_FILE))
        self.tokenizer_.save_pretrained(folder)
        files = {"table": TABLE_FILE, "tokenizer": "tokenizer.json", "tokenizer_config": "tokenizer_config.json"}
        config = {**asdict(self.config), "base_model": self.source_}
        write_manifest(folder, build_manifest(self.kind, self.labels, config, data_info or {}, files, self.task_info(),
                                              self.calibration))

    @classmethod
    def from_manifest(cls, folder: Path, manifest: dict, labels: LabelSet, device: str = "auto",
                      precision: str = "auto", load_member=None) -> "StaticClassifier":
        """A saved static-vector model (it runs on the CPU)."""
        from safetensors import SafetensorError
        from safetensors.numpy import load_file
        from transformers import AutoTokenizer

        from textxfer.core.config import from_dict
        from textxfer.transformer.models import check_untrusted_model

        config = dict(manifest["config"])
        source = config.pop("base_model", None)
        model = cls(from_dict(StaticConfig, config, source=f"{folder}/textxfer.json config"))
        model.labels, model.source_ = labels, source
        path = folder / manifest["files"]["table"]
        try:
            arrays = load_file(str(path))
        except (SafetensorError, OSError) as exc:
            raise TextxferError(f"{path}: cannot read the vector table ({exc}); re-train or restore the folder") from None
        missing = {"token_ids", "vectors", "coef", "intercept"} - set(arrays)
        if missing:
            raise TextxferError(f"{path}: lacks {sorted(missing)}; re-train or restore the folder")
        ids, vectors = arrays["token_ids"], arrays["vectors"]
        coef, intercept = arrays["coef"].astype(np.float64), arrays["intercept"].astype(np.float64)
        if (vectors.ndim != 2 or len(ids) != len(vectors) or coef.shape != (len(labels), vectors.shape[1])
                or intercept.shape != (len(labels),)):
            raise TextxferError(f"{path}: the table and head do not fit together or the manifest's "
                                f"{len(labels)} labels; re-train or restore the folder")
        check_untrusted_model(str(folder), local=True, saved=True)
        model.tokenizer_ = AutoTokenizer.from_pretrained(str(folder))
        model.table_, model.coef_, model.intercept_ = TokenTable(ids, vectors), coef, intercept
        return model


def _load_encoder(config: StaticConfig):
    """``(tokenizer, base encoder, name)`` of ``config.model`` (a textxfer run folder: its fine-tuned encoder)."""
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    from textxfer.transformer.models import check_untrusted_model, quiet_progress, resolve_model

    source = resolve_model(config.model)
    local = Path(source).is_dir()
    check_untrusted_model(source, config.trust_remote_code, local=local)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=config.trust_remote_code)
        verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()  # a fine-tuned folder's classifier weights are expected to be left out
        try:
            with quiet_progress():
                encoder = AutoModel.from_pretrained(source, use_safetensors=True,
                                                    trust_remote_code=config.trust_remote_code)
        finally:
            hf_logging.set_verbosity(verbosity)
    except (OSError, ValueError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise TextxferError(f"{config.model}: cannot load the encoder or its tokenizer ({first[:200]}); pass a local "
                            "folder, a bundled encoder (`textxfer models`) or a hub model cached while online") from None
    if not getattr(tokenizer, "is_fast", False):
        raise TextxferError(f"{config.model}: a static-vector model needs a fast (Rust) tokenizer; this model has none")
    return tokenizer, encoder, config.model


def _logistic(x, y, vx, vy, num_labels: int, seed: int):
    """``(coef (labels × d), intercept, record)`` of a logistic regression, C chosen on validation macro-F1."""
    from textxfer.transformer.head_fit import choose_c, estimator

    if len(np.unique(y)) < 2:
        raise TextxferError("the training texts have a single class; a classifier needs at least 2")
    c, scores, how = choose_c(x, y, vx, vy, num_labels, False, seed)
    fitted = estimator(c, False, seed).fit(x, y)
    coef = np.zeros((num_labels, x.shape[1]))
    intercept = np.full(num_labels, -30.0)  # a class with no training text is never predicted
    if len(fitted.classes_) == 2 and fitted.coef_.shape[0] == 1:  # sigmoid(z) = softmax([-z/2, z/2])
        coef[fitted.classes_] = np.vstack([-fitted.coef_[0] / 2, fitted.coef_[0] / 2])
        intercept[fitted.classes_] = [-fitted.intercept_[0] / 2, fitted.intercept_[0] / 2]
    else:
        coef[fitted.classes_], intercept[fitted.classes_] = fitted.coef_, fitted.intercept_
    return coef, intercept, {"solver": "logistic regression on the labels", "C": c, "chosen_by": how}


def _ridge_on_logits(x, soft, vx, vy, num_labels: int):
    """``(coef, intercept, record)`` of a ridge regression onto the teacher's centred log-probabilities, its strength
    of the best validation macro-F1 (the stronger on ties; 1 without validation)."""
    from sklearn.linear_model import Ridge

    from textxfer.transformer.head_fit import macro_f1

    if soft.shape != (x.shape[0], num_labels):
        raise TextxferError(f"soft targets of shape {soft.shape} for {x.shape[0]} texts and {num_labels} labels")
    logits = np.log(np.clip(soft, LOGIT_FLOOR, 1.0))
    logits -= logits.mean(axis=1, keepdims=True)
    scores, alpha, how = [], 1.0, "fixed: no validation split"
    if vx is not None:
        for a in RIDGE_GRID[::-1]:  # strongest first: max keeps the first of equal scores
            predicted = Ridge(alpha=a, solver="svd").fit(x, logits).predict(vx).argmax(axis=1)
            scores.append({"alpha": a, "validation_macro_f1": round(macro_f1(vy, predicted, num_labels), 6),
                           "validation_accuracy": round(float(np.mean(predicted == vy)), 6)})
        alpha = max(scores, key=lambda s: s["validation_macro_f1"])["alpha"]
        how = "validation macro-F1"
    fitted = Ridge(alpha=alpha, solver="svd").fit(x, logits)  # svd: exact where nearly collinear vectors make
    # the default Cholesky solve ill-conditioned (and warn)
    return (np.asarray(fitted.coef_, dtype=np.float64), np.asarray(fitted.intercept_, dtype=np.float64),
            {"solver": "ridge regression onto the teacher's logits (MSE on logits)", "alpha": alpha, "chosen_by": how,
             "scores": scores})
