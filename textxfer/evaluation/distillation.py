"""``textxfer distill``: a smaller, faster student trained on a teacher run's soft labels, scored on its split.

1. The teacher (a run folder of any kind: fine-tuned, baseline, ensemble, ONNX export, calibrated or not) is loaded,
   and its own split is read again from its ``split.json`` — the student is scored on exactly the teacher's rows.
2. ``--unlabelled`` texts are read and checked as self-training reads them (:mod:`textxfer.data.unlabelled`): a
   validation or test text among them is refused; a training text is counted once.
3. The teacher gives its calibrated class probabilities for every training text and every unlabelled text. Its
   training labels are not used: the student learns what the teacher predicts.
4. The student trains on them (:data:`textxfer.distill.students.STUDENTS`) and is scored on validation and test like any run; the run folder
   is an ordinary one of the student's kind (``finetune``, ``static`` or ``baseline``), with a ``distillation``
   record in ``report.json`` (the teacher, the texts, the loss, and how often the student agrees with the teacher on
   the test texts).

The students, their losses and why: :mod:`textxfer.distill.students`.
"""

from __future__ import annotations

import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

from textxfer.data.dataset import DataOptions, PreparedData, TextDataset, load_data
from textxfer.distill.students import DistillConfig, distillation_texts, train_student
from textxfer.distill.teacher import check_teacher, soft_labels
from textxfer.errors import TextxferError


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

