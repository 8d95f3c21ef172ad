"""Fine-tune a BERT/RoBERTa-family encoder for classification on the Hugging Face ``Trainer``."""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from textxfer.transformer import loss_curve
from textxfer.transformer.batch_size import parse as parse_batch_size
from textxfer.transformer.contrastive import MULTILABEL_PAIRS, PAIR_ITERATIONS
from textxfer.transformer.devices import PRECISIONS
from textxfer.data.augment import AUGMENTATIONS, augment
from textxfer.data.dataset import TextDataset
from textxfer.transformer.encoding import LONG_TEXT_POLICIES, choose_max_length, encode, prediction_batches
from textxfer.errors import TextxferError
from textxfer.data.labels import LabelSet
from textxfer.transformer.loss_curve import TRAINER_LOG
from textxfer.core.calibration import CALIBRATION_HELP, CALIBRATIONS, check_calibration
from textxfer.core.manifest import build_manifest, write_manifest
from textxfer.core.contract import ClassifierBase
from textxfer.core.thresholds import THRESHOLD_HELP, check_threshold
from textxfer.transformer.pooling import POOLINGS
from textxfer.transformer.schedules import SCHEDULES
from textxfer.transformer.strategies import STRATEGIES

HEAD_SOLVERS = ("logistic", "trainer")


@dataclass
class FinetuneConfig:
    """Settings of the fine-tuning pipeline (the usual ``TrainingArguments`` plus transfer options)."""

    model: str = field(default="multilingual-e5-small", metadata={"help": "hub id, local folder, or a bundled encoder (see `textxfer models`)"})
    strategy: str = field(default="auto", metadata={"help": "auto (with a validation split and up to 1,000 training texts: the candidates head-only, contrastive and, from 100 texts, freeze-embeddings are trained within --time-budget and the cheapest within one standard error of the best validation macro-F1 is kept; else by training-set size; see README) | full | freeze-embeddings | head-only | gradual-unfreeze | contrastive (SetFit-style: the body tuned on same/different-label pairs, then a fitted head)", "choices": ("auto", *STRATEGIES)})
    time_budget: float | None = field(default=None, metadata={"help": "--strategy auto: minutes its search over strategies may take; a candidate whose estimated cost does not fit what is left is not tried (default: 15 on the CPU, 30 on a GPU)"})
    layer_lr_decay: float = field(default=1.0, metadata={"help": "learning rate × this per layer below the top (1: same rate everywhere)"})
    max_length: int | None = field(default=None, metadata={"help": "max tokens per text (default: 99th percentile of the training and validation texts, capped at the model's limit)"})
    pooling: str = field(default="auto", metadata={"help": "what the classifier reads: auto (mean for sentence-embedding encoders such as the bundled ones, else cls) | cls (the first token, BERT's pooler) | mean (token states averaged over the attention mask)", "choices": POOLINGS})
    text_prefix: str = field(default="auto", metadata={"help": "a string put before every text in training and prediction: auto ('query: ' for E5 encoders such as the default, as their authors advise for classification; else none) | none | the string"})
    attention_dropout: float | None = field(default=0.0, metadata={"help": "dropout on the attention probabilities while the encoder trains (0: PyTorch's fused attention runs, keeping no score matrices — on the CPU 2.2× less memory and faster steps at 512 tokens; none: the model's own, 0.1 for BERT)"})
    augment: str = field(default="none", metadata={"help": "training-text augmentation: none | word-dropout (each word dropped with probability 0.1) | word-swap (neighbouring words swapped); --augment-copies altered copies of each training text are added (see README for what it measured)", "choices": AUGMENTATIONS})
    augment_copies: int = field(default=1, metadata={"help": "altered copies of each training text with --augment"})
    long_text: str = field(default="head-tail", metadata={"help": "truncate (keep the start) | head-tail (keep start and end)", "choices": LONG_TEXT_POLICIES})
    epochs: float | None = field(default=None, metadata={"help": "training epochs (default: 2, raised with little data to reach --min-steps; a number given here is trained as given)"})
    max_steps: int = field(default=-1, metadata={"help": "stop after this many optimizer steps (-1: use --epochs)"})
    learning_rate: float = field(default=5e-5, metadata={"help": "peak learning rate"})
    head_learning_rate: float | None = field(default=None, metadata={"help": "peak learning rate of the classifier head and pooler (often newly initialised; discriminative rates); default: 20× --learning-rate (at most 1e-3) while the step floor binds, else --learning-rate"})
    head_solver: str = field(default="logistic", metadata={"help": "how --strategy head-only fits the head: logistic (regularised logistic regression on the cached features, strength chosen on validation) | trainer (the Trainer, --epochs at the head rate)", "choices": HEAD_SOLVERS})
    pair_iterations: int = field(default=PAIR_ITERATIONS, metadata={"help": "--strategy contrastive: pairs per text = 2 × this (one same-label, one other-label partner per iteration; SetFit's 20)"})
    multilabel_pairs: str = field(default="shared-label", metadata={"help": "--strategy contrastive with multi-label texts: shared-label (a text's same-side partner has one of its labels, its other-side partner none of them) | label-set (each distinct set of labels is one class, as SetFit pairs them); see BENCHMARKS.md", "choices": MULTILABEL_PAIRS})
    pair_learning_rate: float = field(default=2e-5, metadata={"help": "--strategy contrastive: peak learning rate of the body on the pairs (SetFit's 2e-5)"})
    feature_cache: str | None = field(default=None, metadata={"help": "folder caching the frozen features of --strategy head-only (reused by runs of the same model, texts and max length)"})
    min_steps: int = field(default=150, metadata={"help": "a floor on optimizer steps: with little data the epochs are raised until training takes at least this many steps (0: off)"})
    batch_size: int | str = field(default="auto", metadata={"help": "training texts per device and step: auto (16 on the CPU; on a GPU sized by tokens per step, steps per epoch and free memory, with the learning rate scaled by √(batch/16); see README) | a number (the learning rate as given)"})
    eval_batch_size: int = field(default=64, metadata={"help": "evaluation / prediction batch size"})
    gradient_accumulation: int = field(default=1, metadata={"help": "gradient accumulation steps"})
    lr_scheduler: str = field(default="linear", metadata={"help": "learning-rate schedule after the warm-up: linear | cosine | cosine-with-restarts (one cosine per epoch) | polynomial (power 2) | constant | constant-with-warmup | reduce-on-plateau (halve the rate when validation macro-F1 does not improve; needs validation)", "choices": tuple(SCHEDULES)})
    warmup: float = field(default=0.06, metadata={"help": "warm-up: a ratio of all steps if < 1, else a step count"})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay (not on biases / norms)"})
    class_weighted: bool = field(default=False, metadata={"help": "weight the loss by inverse class frequency (multi-label: each label's positives by its negatives ÷ positives)"})
    threshold: float | None = field(default=None, metadata={"help": THRESHOLD_HELP})
    calibration: str = field(default="temperature", metadata={"help": CALIBRATION_HELP, "choices": CALIBRATIONS})
    eval_strategy: str = field(default="auto", metadata={"help": "when to evaluate and save: auto (every epoch; every min-steps/3 steps while the step floor binds) | epoch | steps | no", "choices": ("auto", "epoch", "steps", "no")})
    eval_steps: int = field(default=200, metadata={"help": "evaluate/save every N steps with --eval-strategy steps"})
    early_stopping: int = field(default=2, metadata={"help": "stop after N evaluations without validation macro-F1 gain (0: off); the best model is kept"})
    logging_steps: int = field(default=50, metadata={"help": "log the training loss every N steps"})
    group_by_length: bool = field(default=True, metadata={"help": "batch texts of similar length together (less padding)"})
    precision: str = field(default="auto", metadata={"help": "of training and of scoring afterwards: auto (bf16 on a GPU, fp16 where it lacks bf16, fp32 on the CPU) | fp32 | bf16 | fp16", "choices": PRECISIONS})
    compile: bool = field(default=False, metadata={"help": "torch.compile the model for training (through the Trainer; a GPU option — its gain is not measured yet, see BENCHMARKS.md)"})
    max_train_samples: int | None = field(default=None, metadata={"help": "train on a stratified subset of this many texts (CPU budgets)"})
    checkpoint_dir: str | None = field(default=None, metadata={"help": "where checkpoints go (default: <output>.checkpoints)"})
    resume: bool = field(default=False, metadata={"help": "continue from the last checkpoint in the checkpoint folder"})
    seed: int = field(default=42, metadata={"help": "random seed"})
    trust_remote_code: bool = field(default=False, metadata={"help": "run Python code shipped with a hub model (auto_map in config.json); only for models you trust"})
    allow_pickle_weights: bool = field(default=False, metadata={"help": "load .bin/.pt pickle weights of a base model (can run code); default: safetensors only"})

    def __post_init__(self) -> None:
        check_threshold(self.threshold)
        check_calibration(self.calibration)
        if self.strategy not in ("auto", *STRATEGIES):
            raise TextxferError(f"unknown strategy {self.strategy!r}; choose one of {['auto', *STRATEGIES]}")
        if self.long_text not in LONG_TEXT_POLICIES:
            raise TextxferError(f"unknown long-text policy {self.long_text!r}; choose one of {list(LONG_TEXT_POLICIES)}")
        if self.text_prefix is None:  # JSON null, or "none" read as a null by `study`'s variant settings
            self.text_prefix = "none"
        if not isinstance(self.text_prefix, str):
            raise TextxferError(f"text_prefix must be a string (auto, none or the prefix), got {self.text_prefix!r}")
        if self.pooling not in POOLINGS:
            raise TextxferError(f"unknown pooling {self.pooling!r}; choose one of {list(POOLINGS)}")
        if self.head_solver not in HEAD_SOLVERS:
            raise TextxferError(f"unknown head solver {self.head_solver!r}; choose one of {list(HEAD_SOLVERS)}")
        if self.lr_scheduler not in SCHEDULES:
            raise TextxferError(f"unknown learning-rate schedule {self.lr_scheduler!r}; choose one of {list(SCHEDULES)}")
        if self.precision not in PRECISIONS:
            raise TextxferError(f"unknown precision {self.precision!r}; choose one of {list(PRECISIONS)}")
        if not 0 < self.layer_lr_decay <= 1:
            raise TextxferError(f"layer_lr_decay must be in (0, 1], got {self.layer_lr_decay}")
        self.batch_size = parse_batch_size(self.batch_size)
        for name in ("eval_batch_size", "gradient_accumulation"):
            if getattr(self, name) < 1:
                raise TextxferError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("learning_rate", "head_learning_rate", "pair_learning_rate"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise TextxferError(f"{name} must be above 0, got {value}")
        if self.attention_dropout is not None and not 0 <= self.attention_dropout < 1:
            raise TextxferError(f"attention_dropout must be in [0, 1) or none, got {self.attention_dropout}")
        if self.time_budget is not None and not self.time_budget > 0:
            raise TextxferError(f"time_budget must be above 0 minutes, got {self.time_budget}")
        if self.augment not in AUGMENTATIONS:
            raise TextxferError(f"unknown augmentation {self.augment!r}; choose one of {list(AUGMENTATIONS)}")
        if self.augment_copies < 1:
            raise TextxferError(f"augment_copies must be at least 1, got {self.augment_copies}")
        if self.multilabel_pairs not in MULTILABEL_PAIRS:
            raise TextxferError(f"unknown multilabel_pairs {self.multilabel_pairs!r}; choose one of {list(MULTILABEL_PAIRS)}")
        if self.pair_iterations < 1:
            raise TextxferError(f"pair_iterations must be at least 1, got {self.pair_iterations}")
        if self.min_steps < 0:
            raise TextxferError(f"min_steps must be 0 (off) or more, got {self.min_steps}")
        if self.epochs is not None and self.epochs <= 0 and self.max_steps <= 0:
            raise TextxferError("set --epochs > 0 or --max-steps > 0")


class FinetuneClassifier(ClassifierBase):
    """A transformer classifier following the shared ``Classifier`` contract."""

    kind = "finetune"
    follows_device = True
    fitted_attribute = "model_"
    explanation_methods = ("integrated-gradients", "occlusion")

    def __init__(self, config: FinetuneConfig | None = None) -> None:
        self.config = config or FinetuneConfig()

    # -- training -------------------------------------------------------------------------------
    def fit(self, train: TextDataset, validation: TextDataset | None = None, labels: LabelSet | None = None,
            progress: bool = False, soft_targets: np.ndarray | None = None) -> "FinetuneClassifier":
        """Fine-tune on ``train``; ``validation`` drives early stopping and best-model selection (and, for multi-label
        texts, each label's threshold). Text pairs are read as one input each (:func:`encoding.encode`); multi-label
        texts train sigmoid outputs with binary cross-entropy. ``soft_targets``: a teacher's probabilities, one row
        per training text, trained on instead of the labels (``textxfer distill``)."""
        from textxfer.transformer.training import train_model

        cfg = self.config
        if soft_targets is not None and (cfg.max_train_samples or cfg.augment != "none"):
            raise TextxferError("training on a teacher's probabilities keeps every training text as it is: leave out "
                                "--max-train-samples and --augment")
        self.labels = self.begin_fit(train, labels)
        train = _subset(train, cfg.max_train_samples, cfg.seed)
        given = len(train)
        train = augment(train, cfg.augment, cfg.augment_copies, cfg.seed)  # "none": unchanged
        has_validation = validation is not None and len(validation) > 0
        length_stats = self.prepare(train.inputs + (validation.inputs if has_validation else []), progress)
        self._encoded = {}  # tokenized texts, kept for this fit only
        try:
            self.log_history_, train_stats = train_model(self, train, validation if has_validation else None, progress,
                                                         soft_targets)
        finally:
            del self._encoded
        self.end_fit(validation if has_validation else None, cfg.threshold, cfg.calibration)
        augmented = {"augmented": {"method": cfg.augment, "copies": cfg.augment_copies, "texts_added": len(train) - given}}
        self.fit_stats_ = {"train_texts": len(train), "base_model": self.source_, **length_stats, **train_stats,
                           **(augmented if cfg.augment != "none" else {}),
                           "loss_curve": loss_curve.summary(self.log_history_)}
        return self

    def prepare(self, length_texts: list, progress: bool = False) -> dict:
        """Everything a fit does before training, for ``self.labels``: the pretrained model with a new head, its
        pooling, text prefix and max length (from ``length_texts``: the training *and* validation inputs, no labels
        used), on this process's GPU when there is one. Returns the length statistics. (``textxfer audit`` reads
        frozen features of a model prepared this way.)"""
        from contextlib import nullcontext

        from transformers import set_seed

        from textxfer.transformer import pooling, text_prefix
        from textxfer.transformer.models import load_for_training, quiet_progress, resolve_model

        cfg = self.config
        # The new classifier head is drawn from torch's global generator as the model loads, before the Trainer
        # seeds anything: seed it here, or two fits with one --seed differ by what ran earlier in the process.
        set_seed(cfg.seed)
        with nullcontext() if progress else quiet_progress():  # no "Loading weights" bar without progress
            self.tokenizer_, self.model_, self.source_ = load_for_training(
                cfg.model, self.labels, trust_remote_code=cfg.trust_remote_code,
                allow_pickle_weights=cfg.allow_pickle_weights)
        chosen, pooling_why = pooling.choose(cfg.pooling, cfg.model, resolve_model(cfg.model), self.model_)
        pooling.install(self.model_, chosen)  # recorded in the model's config (pooling.of)
        # Token lengths of the training *and* validation texts: with few training texts their own 99th percentile
        # is just the longest one (one 512-token review among 32 made every step several times slower), while the
        # validation texts make it a stable estimate.
        self.text_prefix_, prefix_why = text_prefix.choose(cfg.text_prefix, cfg.model)
        self.input_choices_ = [why for why in (pooling_why, prefix_why) if why]  # announced with the recipe
        length_texts = text_prefix.apply(self.text_prefix_, list(length_texts))
        self.max_length_, length_stats = choose_max_length(self.tokenizer_, self.model_.config, length_texts, cfg.max_length)
        length_stats["length_texts"] = len(length_texts)
        # On this process's GPU when there is one (the Trainer's device too), so that frozen features, the
        # validation and test scoring and a fitted head's feature extraction all run there.
        self.to_device("auto", cfg.precision)
        return length_stats

    def encode(self, texts: Sequence) -> dict[str, list[list[int]]]:
        """Model inputs for ``texts`` (or ``(text, second text)`` pairs) under this model's max length and long-text
        policy (during a fit, each list of texts is tokenized once: ``--strategy auto``'s candidates share it)."""
        prefix = getattr(self, "text_prefix_", "")
        memo = getattr(self, "_encoded", None)
        if memo is None:
            return encode(self.tokenizer_, texts, self.max_length_, self.config.long_text, prefix)
        key = (hash(tuple(texts)), len(texts), self.max_length_, self.config.long_text, prefix)
        if key not in memo:
            memo[key] = encode(self.tokenizer_, texts, self.max_length_, self.config.long_text, prefix)
        return memo[key]

    # -- inference ------------------------------------------------------------------------------
    def to_device(self, device: str = "auto", precision: str = "auto") -> "FinetuneClassifier":
        """Predict on ``device`` (auto | cpu | cuda | cuda:N; auto: this process's GPU when one is visible) in
        ``precision`` (auto: bf16 on a GPU, fp16 where it lacks bf16, fp32 on the CPU). The weights stay fp32:
        a GPU runs the forward pass under autocast, so writing the model afterwards saves it unchanged."""
        from textxfer.transformer import devices

        self._check_fitted()
        target = devices.resolve(device)
        self.precision_ = devices.inference_precision(target, precision)
        self.model_.to(target)
        return self

    @property
    def device(self) -> str:
        """Where the model predicts (``cpu`` or ``cuda:N``)."""
        self._check_fitted()
        return str(next(self.model_.parameters()).device)

    @property
    def precision(self) -> str:
        """The precision of prediction: ``bf16``/``fp16`` (autocast) on a GPU, ``fp32`` on the CPU."""
        from textxfer.transformer import devices

        return getattr(self, "precision_", None) or devices.inference_precision(self.device)

    @property
    def base_model(self) -> str | None:
        """The pretrained checkpoint this model was fine-tuned from."""
        return getattr(self, "source_", None)

    def raw_proba(self, texts: Sequence) -> np.ndarray:
        """Class probabilities (columns in ``labels`` order; each label's own sigmoid for a multi-label model),
        batched by length, in input order."""
        import torch

        from textxfer.transformer import devices

        self._check_fitted()
        texts = self.check_inputs(texts)
        model, device = self.model_.eval(), self.device
        squash = torch.sigmoid if self.labels.multi_label else (lambda logits: torch.softmax(logits, dim=-1))
        with torch.inference_mode(), devices.autocast(device, self.precision):
            return self.batched_proba(texts, lambda batch: squash(model(**batch).logits.double()).cpu().numpy())

    def word_contributions(self, inputs: list, label_ids: np.ndarray, words: list, method: str,
                           probabilities: np.ndarray) -> list[np.ndarray]:
        """Integrated gradients on the input embeddings (:mod:`textxfer.transformer.gradients`), or occlusion."""
        if method == "integrated-gradients":
            from textxfer.transformer.gradients import integrated_gradients

            return integrated_gradients(self, inputs, label_ids, words)
        return super().word_contributions(inputs, label_ids, words, method, probabilities)

    def batches(self, texts: Sequence[str]):
        """Yield ``(row indices, padded model inputs on the model's device)``, shortest texts first (on a GPU
        batches hold up to a token budget, see :func:`textxfer.transformer.encoding.prediction_batches`)."""
        device = next(self.model_.parameters()).device
        for rows, batch in prediction_batches(self.tokenizer_, self.encode(texts), self.predict_batch_size,
                                              device.type == "cuda", "pt"):
            yield rows, {k: t.to(device) for k, t in batch.items()}

    # -- persistence ----------------------------------------------------------------------------

    def write(self, folder: Path, data_info: dict | None = None) -> None:
        """Write weights (safetensors), tokenizer, trainer log and manifest into an empty ``folder``."""
        self._check_fitted()
        from textxfer.transformer.models import quiet_progress

        with quiet_progress():
            self.model_.save_pretrained(folder)
            self.tokenizer_.save_pretrained(folder)
        (folder / TRAINER_LOG).write_text(json.dumps(getattr(self, "log_history_", []), indent=1), encoding="utf-8")
        files = {"config": "config.json", "weights": "model.safetensors", "trainer_log": TRAINER_LOG}
        if (folder / "tokenizer.json").exists():
            files["tokenizer"] = "tokenizer.json"
        config = {**asdict(self.config), "resolved_max_length": self.max_length_, "base_model": self.source_,
                  "resolved_text_prefix": self.text_prefix_}
        write_manifest(folder, build_manifest(self.kind, self.labels, config, data_info or {}, files, self.task_info(),
                                              self.calibration))

    @classmethod
    def from_manifest(cls, folder: Path, manifest: dict, labels: LabelSet, device: str = "auto",
                      precision: str = "auto", load_member=None) -> "FinetuneClassifier":
        """A saved fine-tuned model (safetensors weights only) on ``device`` (see :meth:`to_device`)."""
        from textxfer.core.config import from_dict
        from textxfer.transformer.models import check_saved_config, load_saved

        check_saved_config(folder, manifest)
        config = dict(manifest["config"])
        max_length, source = config.pop("resolved_max_length", None), config.pop("base_model", None)
        prefix = config.pop("resolved_text_prefix", "")  # absent: saved before prefixes existed
        model = cls(from_dict(FinetuneConfig, config, source=f"{folder}/textxfer.json config"))
        model.labels = labels
        model.tokenizer_, model.model_ = load_saved(folder, model.labels)
        model.max_length_ = int(max_length or 512)
        model.source_ = source
        model.text_prefix_ = prefix if isinstance(prefix, str) else ""
        return model.to_device(device, precision)


def _subset(dataset: TextDataset, size: int | None, seed: int) -> TextDataset:
    """A stratified (multi-label: iteratively stratified), seeded subset of ``size`` texts (all of them when ``size``
    is None or larger)."""
    if size is None or size >= len(dataset):
        return dataset
    from textxfer.data.splits import multilabel_split, stratified_split

    keep_share = size / len(dataset)
    split = multilabel_split if dataset.shape.multi_label else stratified_split
    assignment = split(dataset.inputs, dataset.labels, 0.0, 1 - keep_share, seed)
    return dataset.take([i for i, part in enumerate(assignment) if part == "train"])


def remove_checkpoints(folder: str | Path | None) -> None:
    """Delete a checkpoint folder once its run has been saved."""
    if folder:
        shutil.rmtree(folder, ignore_errors=True)
