"""The students of ``textxfer distill`` and how each is trained from a teacher's labels (the workflow that loads the
teacher, scores the student and writes its run folder: :mod:`textxfer.evaluation.distillation`).

The losses, and why: the shallow student (its word embeddings frozen, :mod:`textxfer.distill.shallow`) minimises
cross-entropy against the teacher's probabilities — KL(teacher ‖ student) up to a constant, at temperature 1 because
the teacher's probabilities are already calibrated on validation (Hinton's softening temperature exists to spread
over-confident probabilities). The static student's linear head minimises the squared error on the teacher's logits,
solved exactly, before its table and head are tuned together (:mod:`textxfer.static.pipeline`). The baseline
student's forest takes hard labels only: it trains on the teacher's most probable class.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from textxfer.data.dataset import PreparedData, TextDataset
from textxfer.distill.teacher import encoder_folder
from textxfer.errors import TextxferError

STUDENTS = {
    "shallow": "the teacher's fine-tuned transformer with every k-th layer kept (--keep-every), trained on its "
               "probabilities; exportable to int8 ONNX",
    "static": "static token vectors distilled from the teacher's encoder, averaged per text, and a linear head fitted "
              "to the teacher's logits, then tuned with the vectors — no transformer at prediction",
    "baseline": "the word2vec + RandomForest baseline trained on the teacher's most probable labels",
}


@dataclass
class DistillConfig:
    """Settings of a distillation (the data options, --unlabelled among them, are the usual flags)."""

    teacher: str | None = field(default=None, metadata={"help": "the teacher's run folder (any kind: finetune, baseline, ensemble, onnx); its split.json is the student's split"})
    student: str = field(default="shallow", metadata={"help": "shallow | static | baseline: " + "; ".join(f"{k}: {v}" for k, v in STUDENTS.items()), "choices": tuple(STUDENTS)})
    keep_every: int = field(default=4, metadata={"help": "shallow student: keep every k-th transformer layer counted from the top (4: 3 of 12 layers)"})
    encoder: str | None = field(default=None, metadata={"help": "the fine-tuned model (or encoder) a shallow or static student is made from (default: the teacher's own: itself, an export's source, an ensemble's fine-tuned member)"})
    epochs: float = field(default=2.0, metadata={"help": "shallow student: training epochs over the teacher-labelled texts"})
    learning_rate: float = field(default=3e-4, metadata={"help": "shallow student: peak learning rate (3e-4: above 1e-4 by 0.5 validation points on the sample reviews and 2.6 on the THUCNews headlines, one seed each; see BENCHMARKS.md)"})
    batch_size: int = field(default=16, metadata={"help": "shallow student: texts per step"})
    seed: int = field(default=42, metadata={"help": "random seed"})

    def __post_init__(self) -> None:
        if self.student not in STUDENTS:
            raise TextxferError(f"unknown --student {self.student!r}; choose one of {list(STUDENTS)}")
        if self.keep_every < 1:
            raise TextxferError(f"--keep-every must be at least 1, got {self.keep_every}")
        if not self.epochs > 0 or not self.learning_rate > 0 or self.batch_size < 1:
            raise TextxferError("--epochs and --learning-rate must be above 0 and --batch-size at least 1")


def distillation_texts(data: PreparedData) -> tuple[list[str], dict]:
    """The texts the teacher labels: the training texts, then the unlabelled ones that are not training texts."""
    from textxfer.data.unlabelled import without

    if data.train.pairs is not None:
        raise TextxferError("distillation takes single texts, not text pairs")
    texts, dropped = (without(data.unlabelled, data.train.texts) if data.unlabelled is not None else ([], 0))
    record = {"training_texts": len(data.train), "unlabelled_texts": len(texts),
              "unlabelled_dropped_as_training_texts": dropped}
    return list(data.train.texts) + texts, record


def train_student(config: DistillConfig, manifest: dict, teacher_folder: Path, pseudo: TextDataset,
                  targets: np.ndarray, data: PreparedData, progress: bool, log):
    """``(fitted student, record)`` of ``config.student`` trained on ``pseudo`` (the teacher-labelled texts) and
    ``targets`` (their probabilities); validation is the split's own, with its true labels."""
    if config.student == "baseline":
        from textxfer.baseline.pipeline import BaselineClassifier, BaselineConfig

        log("distill: training the baseline on the teacher's most probable labels")
        student = BaselineClassifier(BaselineConfig(seed=config.seed))
        student.fit(pseudo, data.validation, labels=data.labels, progress=progress)
        return student, {"loss": "the forest's own (Gini) on the teacher's most probable class"}
    source = Path(config.encoder) if config.encoder else encoder_folder(teacher_folder, manifest)
    if source is None:
        raise TextxferError(f"--teacher {teacher_folder}: a {manifest['kind']} model has no transformer encoder to "
                            f"make a {config.student} student from; pass --encoder (a fine-tuned run folder or an "
                            "encoder) or use --student baseline")
    if config.student == "static":
        from textxfer.static.pipeline import StaticClassifier, StaticConfig

        log(f"distill: static token vectors from {source}, a linear head fitted to the teacher's logits, both tuned")
        student = StaticClassifier(StaticConfig(model=str(source), seed=config.seed))
        student.fit(pseudo, data.validation, labels=data.labels, progress=progress, soft_targets=targets)
        return student, {"encoder": str(source), "loss": "squared error on the teacher's logits (ridge, closed form), "
                                                         "then cross-entropy against its probabilities while the "
                                                         "vectors and head are tuned"}
    return _shallow(config, source, pseudo, targets, data, progress, log)


def _shallow(config: DistillConfig, source: Path, pseudo: TextDataset, targets: np.ndarray, data: PreparedData,
             progress: bool, log):
    """The shallow student (:mod:`textxfer.distill.shallow`) trained with the ``Trainer`` on the soft labels."""
    from textxfer.core.manifest import read_manifest
    from textxfer.distill.shallow import write_student
    from textxfer.registry import load
    from textxfer.transformer import pooling
    from textxfer.transformer.pipeline import FinetuneClassifier, FinetuneConfig

    if read_manifest(source)["kind"] != "finetune":
        raise TextxferError(f"--encoder {source}: a shallow student is cut from a fine-tuned run folder "
                            "(`textxfer finetune`); pass one")
    made_from = load(source, device="cpu")
    with tempfile.TemporaryDirectory(prefix="textxfer-student-") as scratch:
        kept = write_student(made_from.model_, made_from.tokenizer_, config.keep_every, Path(scratch))
        log(f"distill: shallow student of layers {kept['layers_kept']} of {kept['teacher_layers']} "
            f"({kept['parameters']['student']:,} parameters, teacher {kept['parameters']['teacher']:,}), trained on the "
            "teacher's probabilities")
        settings = FinetuneConfig(
            model=scratch, strategy="freeze-embeddings", epochs=config.epochs, learning_rate=config.learning_rate,
            batch_size=config.batch_size, seed=config.seed, min_steps=0,
            max_length=made_from.max_length_, text_prefix=made_from.text_prefix_ or "none",
            pooling=pooling.of(made_from.model_), long_text=made_from.config.long_text,
            calibration=made_from.config.calibration)
        del made_from
        student = FinetuneClassifier(settings)
        student.fit(pseudo, data.validation, labels=data.labels, progress=progress, soft_targets=targets)
    student.config.model = str(source)  # the scratch folder is gone: record what the student was cut from
    student.source_ = f"{source} (layers {', '.join(map(str, kept['layers_kept']))} of {kept['teacher_layers']})"
    student.fit_stats_["base_model"] = student.source_
    return student, {"encoder": str(source), **kept,
                     "loss": "cross-entropy against the teacher's probabilities (KL + a constant), temperature 1"}
