"""``textxfer distill``: a smaller, faster student trained on a teacher run's soft labels, scored on its split.

1. The teacher (a run folder of any kind: fine-tuned, baseline, ensemble, ONNX export, calibrated or not) is loaded,
   and its own split is read again from its ``split.json`` — the student is scored on exactly the teacher's rows.
2. ``--unlabelled`` texts are read and checked as self-training reads them (:mod:`textxfer.data.unlabelled`): a
   validation or test text among them is refused; a training text is counted once.
3. The teacher gives its calibrated class probabilities for every training text and every unlabelled text. Its
   training labels are not used: the student learns what the teacher predicts.
4. The student trains on them (:data:`STUDENTS`) and is scored on validation and test like any run; the run folder
   is an ordinary one of the student's kind (``finetune``, ``static`` or ``baseline``), with a ``distillation``
   record in ``report.json`` (the teacher, the texts, the loss, and how often the student agrees with the teacher on
   the test texts).

The losses, and why: the shallow student (its word embeddings frozen, :mod:`textxfer.distill.shallow`) minimises
cross-entropy against the teacher's probabilities — KL(teacher ‖
student) up to a constant, at temperature 1 because the teacher's probabilities are already calibrated on validation
(Hinton's softening temperature exists to spread over-confident probabilities). The static student's linear head
minimises the squared error on the teacher's logits, solved exactly (:mod:`textxfer.static.pipeline`). The baseline
student's forest takes hard labels only: it trains on the teacher's most probable class.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from textxfer.data.dataset import DataOptions, PreparedData, TextDataset, load_data
from textxfer.distill.teacher import check_teacher, encoder_folder, soft_labels
from textxfer.errors import TextxferError

STUDENTS = {
    "shallow": "the teacher's fine-tuned transformer with every k-th layer kept (--keep-every), trained on its "
               "probabilities; exportable to int8 ONNX",
    "static": "static token vectors distilled from the teacher's encoder, averaged per text, and a linear head fitted "
              "to the teacher's logits — no transformer at prediction",
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
    learning_rate: float = field(default=1e-4, metadata={"help": "shallow student: peak learning rate"})
    batch_size: int = field(default=16, metadata={"help": "shallow student: texts per step"})
    seed: int = field(default=42, metadata={"help": "random seed"})

    def __post_init__(self) -> None:
        if self.student not in STUDENTS:
            raise TextxferError(f"unknown --student {self.student!r}; choose one of {list(STUDENTS)}")
        if self.keep_every < 1:
            raise TextxferError(f"--keep-every must be at least 1, got {self.keep_every}")
        if not self.epochs > 0 or not self.learning_rate > 0 or self.batch_size < 1:
            raise TextxferError("--epochs and --learning-rate must be above 0 and --batch-size at least 1")


def distill(config: DistillConfig, options: DataOptions, output: str | Path, progress: bool = True, log=print,
            teacher_labels: np.ndarray | None = None):
    """Train ``config.student`` from ``config.teacher`` on the teacher's split (``options.split`` defaults to it;
    ``options.data`` may say where its data file is now) and write the run folder ``output``; returns the runner's
    ``RunResult``. ``teacher_labels``: the teacher's probabilities for :func:`distillation_texts`, when a caller
    distilling several students from one teacher has them already."""
    from textxfer.core.runs import check_writable
    from textxfer.evaluation.runner import describe_data

    if not config.teacher:
        raise TextxferError("--teacher: name the teacher's run folder")
    check_teacher(config.teacher)
    check_writable(output)
    if options.split is None:
        options = replace(options, split=str(Path(config.teacher) / "split.json"))
    data = load_data(options)
    describe_data(data, log)
    return distill_prepared(config, data, output, progress, log, teacher_labels)


def distill_prepared(config: DistillConfig, data: PreparedData, output: str | Path, progress: bool = True, log=print,
                     teacher_labels: np.ndarray | None = None):
    """:func:`distill` on data already loaded: the teacher's split (a study's distillation cell: its teacher cell's
    subset), with ``data.unlabelled`` checked against it."""
    from textxfer.evaluation.runner import score_and_write
    from textxfer.registry import load

    teacher_folder = Path(config.teacher)
    manifest = check_teacher(teacher_folder)
    teacher = load(teacher_folder)
    if list(teacher.labels.names) != list(data.labels.names):
        raise TextxferError(f"--teacher {teacher_folder}: labels {list(teacher.labels.names)} differ from the data's "
                            f"{list(data.labels.names)}; distil on the teacher's own split")
    texts, record = distillation_texts(data)
    log(f"distill: the teacher ({manifest['kind']}, {teacher_folder}) labels {len(texts):,} texts "
        f"({record['training_texts']:,} training + {record['unlabelled_texts']:,} unlabelled)")
    started = time.perf_counter()
    targets = soft_labels(teacher, texts, progress) if teacher_labels is None else np.asarray(teacher_labels)
    if targets.shape != (len(texts), len(data.labels)):
        raise TextxferError(f"teacher_labels of shape {targets.shape} for {len(texts)} texts and {len(data.labels)} labels")
    record["teacher_seconds"] = round(time.perf_counter() - started, 2)
    predicted = targets.argmax(axis=1)
    if len(np.unique(predicted)) < 2:
        raise TextxferError(f"--teacher {teacher_folder}: it gives every one of the {len(texts):,} texts the class "
                            f"{data.labels.names[predicted[0]]!r}, so there is nothing to distil; train a better "
                            "teacher (its report.json: model_check)")
    hard = [data.labels.value(data.labels.names[i]) for i in predicted]
    pseudo = TextDataset(texts, hard, list(range(1, len(texts) + 1)), "the teacher's labels")
    teacher_test = teacher.predict_proba(data.test.inputs).argmax(axis=1) if len(data.test) else None
    del teacher  # not held in memory while the student trains
    started = time.perf_counter()
    student, details = train_student(config, manifest, teacher_folder, pseudo, targets, data, progress, log)
    fit_seconds = time.perf_counter() - started
    record |= {"teacher": str(teacher_folder), "teacher_kind": manifest["kind"], "student": config.student,
               "settings": asdict(config), **details, "student_seconds": round(fit_seconds, 2)}
    known = {}
    if teacher_test is not None:
        known["test"] = student.raw_proba(data.test.inputs)  # scored once: the temperature never moves the argmax
        record["test_agreement_with_teacher"] = round(float(np.mean(known["test"].argmax(axis=1) == teacher_test)), 6)
    extra_data = {"distilled_from": {"teacher": str(teacher_folder), "kind": manifest["kind"],
                                     **({"unlabelled": {"source": data.unlabelled.origin,
                                                        "sha256": data.unlabelled.fingerprint}}
                                        if data.unlabelled is not None else {})}}
    result = score_and_write(student, data, output, fit_seconds + record["teacher_seconds"], log, known,
                             extra_report={"distillation": record}, extra_data=extra_data)
    if "test_agreement_with_teacher" in record:
        log(f"distill: the {config.student} student agrees with the teacher on "
            f"{record['test_agreement_with_teacher']:.1%} of the {len(data.test):,} test texts")
    return result


def finished_distillation(folder: Path, config: DistillConfig, data: PreparedData) -> bool:
    """Whether ``folder`` holds a finished distillation of ``config`` on ``data``'s rows with its unlabelled texts (a
    study reuses it)."""
    import json

    from textxfer.core.manifest import read_manifest
    from textxfer.data.splits import differing_part, read_split_file

    try:
        record = json.loads((Path(folder) / "report.json").read_text(encoding="utf-8"))["distillation"]
        manifest, split = read_manifest(folder), read_split_file(Path(folder) / "split.json")
    except (OSError, ValueError, KeyError, TypeError, TextxferError):
        return False
    unlabelled = ((manifest.get("data") or {}).get("distilled_from") or {}).get("unlabelled", {}).get("sha256")
    wanted = data.unlabelled.fingerprint if data.unlabelled is not None else None
    return (record.get("settings") == asdict(config) and unlabelled == wanted
            and differing_part(split, data.split_record, list(data.split_record["splits"])) is None)


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

        log(f"distill: static token vectors from {source}, and a linear head fitted to the teacher's logits")
        student = StaticClassifier(StaticConfig(model=str(source), seed=config.seed))
        student.fit(pseudo, data.validation, labels=data.labels, progress=progress, soft_targets=targets)
        return student, {"encoder": str(source), "loss": "squared error on the teacher's logits (ridge, closed form)"}
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
