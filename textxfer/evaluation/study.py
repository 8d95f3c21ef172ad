"""``textxfer study``: a grid of ordinary run folders — variants × training-set sizes × seeds — on one split.

Every cell trains on a nested, stratified subset of the one training split (for a given seed the
300-text subset contains the 100-text one) and is scored on the same validation and test splits. Each
cell is a normal run folder written atomically by the runner, so an interrupted study resumes: a cell
whose folder holds a finished run of the same settings on the same rows is reused.

A variant is a pipeline with settings: ``baseline``, ``finetune``, ``finetune:strategy=head-only``,
``finetune:strategy=full,layer_lr_decay=0.9``. The cell's seed sets both the subset and the training
seed. :mod:`textxfer.evaluation.study_report` turns the cells into ``study.json``, ``study.md`` and
``learning_curve.png``.
"""

from __future__ import annotations

import copy
import json
import re
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from textxfer.core.config import parse_field
from textxfer.data.dataset import DataOptions, PreparedData, load_data
from textxfer.errors import TextxferError
from textxfer.evaluation.isolation import ChildKilled, in_child_process
from textxfer.evaluation.runner import describe_data, finished_run, run_prepared
from textxfer.data.splits import write_split_file

ENSEMBLE = "ensemble"
DISTILL = "distill"  # a student of another variant's cells (textxfer distill)
DERIVED = (ENSEMBLE, DISTILL)  # variants made from other variants' cells of the same size and seed


@dataclass(frozen=True)
class Variant:
    """A pipeline and the settings that differ from its base config."""

    text: str
    pipeline: str
    settings: dict = field(default_factory=dict, hash=False, compare=False)

    @property
    def slug(self) -> str:
        """The variant as a folder name."""
        return re.sub(r"[^A-Za-z0-9._=-]+", "-", re.sub(r"[:,\s]+", "-", self.text)).strip("-")


@dataclass(frozen=True)
class Cell:
    """One run of the grid: a variant trained on ``size`` texts chosen with ``seed``."""

    variant: Variant
    size: int
    seed: int

    @property
    def folder(self) -> str:
        return f"cells/{self.variant.slug}/n{self.size}-seed{self.seed}"


def parse_variant(text: str, config_classes: dict[str, type]) -> Variant:
    """``"finetune:strategy=head-only,layer_lr_decay=0.9"`` → :class:`Variant` (values typed by the config);
    ``"ensemble:baseline+finetune"`` → the ensemble of two other variants' cells (weights chosen on validation);
    ``"distill:static"``, ``"distill:shallow,keep_every=2@finetune:strategy=full"`` → a student of that kind (with
    ``textxfer distill`` settings) distilled from another variant's cells (after ``@``; default ``finetune``)."""
    pipeline, _, rest = text.strip().partition(":")
    if pipeline == DISTILL:
        return _distill_variant(text)
    if pipeline == ENSEMBLE:
        members = [part.strip() for part in rest.split("+")]
        if len(members) < 2 or not all(members):
            raise TextxferError(f"variant {text!r}: write ensemble:<variant>+<variant>[+…], e.g. "
                                "ensemble:baseline+finetune (each a variant of this study)")
        if any(m.partition(":")[0] == ENSEMBLE for m in members):
            raise TextxferError(f"variant {text!r}: an ensemble's members are plain variants, not ensembles")
        if len(set(members)) < len(members):
            raise TextxferError(f"variant {text!r} names a member twice")
        return Variant(text.strip(), ENSEMBLE, {"members": members})
    if pipeline not in config_classes:
        raise TextxferError(f"variant {text!r}: unknown pipeline {pipeline!r}; start with one of {list(config_classes)}")
    study_sets = "is set by the study itself (use --sizes and --seeds)"
    reserved = {name: study_sets for name in ("seed", "max_train_samples", "checkpoint_dir", "resume")}
    return Variant(text.strip(), pipeline, _settings(text, config_classes[pipeline], rest.split(","), reserved))


def _settings(text: str, config_class: type, items: list[str], reserved: dict[str, str]) -> dict:
    """Variant ``text``'s ``name=value`` items, typed by ``config_class``; a name in ``reserved`` is refused with its
    reason, as is any item that does not parse."""
    settings = {}
    for item in filter(None, (part.strip() for part in items)):
        name, equals, value = item.partition("=")
        if not equals:
            raise TextxferError(f"variant {text!r}: {item!r} is not name=value")
        name = name.strip().replace("-", "_")
        if name in reserved:
            raise TextxferError(f"variant {text!r}: {name} {reserved[name]}")
        try:
            settings[name] = parse_field(config_class, name, value.strip())
        except TextxferError as exc:
            raise TextxferError(f"variant {text!r}: {exc}") from None
    return settings


def _distill_variant(text: str) -> Variant:
    from textxfer.distill.students import STUDENTS, DistillConfig

    rest = text.strip().partition(":")[2]
    student_part, at, teacher = rest.partition("@")
    teacher = teacher.strip() if at else "finetune"
    student, *items = [part.strip() for part in student_part.split(",")]
    if student not in STUDENTS or not teacher or teacher.partition(":")[0] == DISTILL:
        raise TextxferError(f"variant {text!r}: write distill:<student>[,name=value…][@<teacher variant>] with a "
                            f"student of {list(STUDENTS)}, e.g. distill:static or distill:shallow,keep_every=2@finetune")
    reserved = {"teacher": "is not a name=value setting of the student: the teacher variant comes after @",
                "student": "is not a name=value setting of the student: the student comes first, after distill:",
                "seed": "is set by the study itself (use --seeds)"}
    return Variant(text.strip(), DISTILL, {"student": student, "teacher_variant": teacher,
                                           **_settings(text, DistillConfig, items, reserved)})


def parse_sizes(values: list[str], train_size: int) -> list[int]:
    """Sorted distinct training-set sizes; ``all`` is the whole training split."""
    sizes = set()
    for value in values:
        if str(value).lower() == "all":
            sizes.add(train_size)
            continue
        try:
            size = int(value)
        except ValueError:
            raise TextxferError(f"--sizes: {value!r} is not a whole number or 'all'") from None
        if not 2 <= size <= train_size:
            raise TextxferError(f"--sizes: {size} is outside 2..{train_size} (the training split has {train_size} "
                                "texts); use 'all' for the whole split")
        sizes.add(size)
    return sorted(sizes)


def nested_order(labels: list, seed: int) -> list[int]:
    """An order of the training rows whose every prefix is (nearly) stratified, for ``seed``.

    Rows are shuffled within their class; the k-th row of a class of n gets the key (k + u) / n with
    u uniform in [0, 1), and the rows are sorted by key. So the first N rows hold each class in its
    share (±1), and a smaller size's subset is a prefix of a larger one's: the subsets are nested.
    Multi-label rows (tuples of labels) are stratified by their rarest label (rows without a label form one
    class of their own), so every prefix keeps the rare labels in their share — what iterative stratification
    optimises too, but kept nested.
    """
    if labels and isinstance(labels[0], tuple):
        counts = Counter(name for row in labels for name in row)
        labels = [min(row, key=lambda name: (counts[name], name)) if row else "" for row in labels]
    rng = np.random.default_rng(seed)
    keys = np.empty(len(labels))
    for label in sorted(set(labels), key=str):
        rows = np.flatnonzero(np.asarray([lab == label for lab in labels]))
        rows = rng.permutation(rows)
        keys[rows] = (np.arange(len(rows)) + rng.random(len(rows))) / len(rows)
    return [int(i) for i in np.argsort(keys, kind="stable")]


def subset(data: PreparedData, order: list[int], size: int) -> PreparedData:
    """``data`` with its training split cut to the first ``size`` rows of ``order`` (kept in input order)."""
    small = data.train.take(sorted(order[:size]))
    record = copy.deepcopy(data.split_record)
    record["splits"]["train"]["rows"] = small.rows
    record["study_subset"] = {"size": size, "of": len(data.train)}
    return replace(data, train=small, split_record=record, counts={**data.counts, "train": size})


def plan(variants: list[Variant], sizes: list[int], seeds: list[int]) -> list[Cell]:
    """Every cell, smallest sizes first (so a curve fills in from the left); at each size the ensembles come
    after the cells they combine."""
    rank = {DISTILL: 1, ENSEMBLE: 2}  # students after their teachers; ensembles last (they may combine students)
    ordered = sorted(variants, key=lambda v: rank.get(v.pipeline, 0))
    return [Cell(v, n, s) for n in sizes for v in ordered for s in seeds]


def _made_from(variant: Variant) -> list[str]:
    """The variants whose cells ``variant``'s cells are made from (none for a plain variant)."""
    if variant.pipeline == ENSEMBLE:
        return list(variant.settings["members"])
    return [variant.settings["teacher_variant"]] if variant.pipeline == DISTILL else []


def check_members(variants: list[Variant]) -> None:
    """Every ensemble's members and every student's teacher are variants of this study (made from their cells)."""
    texts = {v.text for v in variants}
    for variant in variants:
        missing = [m for m in _made_from(variant) if m not in texts]
        if missing:
            raise TextxferError(f"variant {variant.text!r}: {missing} not among --variants; "
                                f"{'an ensemble combines' if variant.pipeline == ENSEMBLE else 'a student learns from'} "
                                "the study's own cells — add them to --variants")


def member_cells(cell: Cell, variants: list[Variant]) -> list[Cell]:
    """The cells an ensemble cell combines, or a student cell's teacher: those variants' cells of the same size and
    seed."""
    by_text = {v.text: v for v in variants}
    return [Cell(by_text[m], cell.size, cell.seed) for m in _made_from(cell.variant)]


def cell_config(cell: Cell, base: dict[str, object], output: Path):
    """The pipeline config of one cell: the base config, the variant's settings, the cell's seed."""
    if cell.variant.pipeline == ENSEMBLE:
        from textxfer.ensemble.pipeline import EnsembleConfig

        return EnsembleConfig("auto")
    if cell.variant.pipeline == DISTILL:
        from textxfer.distill.students import DistillConfig

        settings = {k: v for k, v in cell.variant.settings.items() if k != "teacher_variant"}
        teacher = Cell(Variant(cell.variant.settings["teacher_variant"], ""), cell.size, cell.seed)
        return DistillConfig(teacher=str(output / teacher.folder), seed=cell.seed, **settings)
    config = replace(base[cell.variant.pipeline], **cell.variant.settings, seed=cell.seed)
    if cell.variant.pipeline == "finetune":
        config = replace(config, max_train_samples=None,
                         checkpoint_dir=str(output / ".checkpoints" / cell.folder.replace("/", "_")),
                         feature_cache=str(output / ".features"))
    return config


def estimate(todo: list[Cell], finished: dict[Cell, Path], work=lambda cell: cell.size) -> str:
    """The time the remaining cells should take, from the finished cells' recorded times: per variant, the
    median training seconds per unit of work × the cell's work, plus the median scoring time. ``work(cell)``
    is the cell's amount of training: its planned optimizer steps for fine-tuning (with a step floor, 32 and
    500 texts can train equally long), its size otherwise. Variants with no finished cell are unknown."""
    measured: dict[str, list[tuple[float, float]]] = {}
    for cell, folder in finished.items():
        try:
            timing = json.loads((folder / "report.json").read_text(encoding="utf-8"))["timing"]
            measured.setdefault(cell.variant.text, []).append((timing["fit_seconds"] / max(work(cell), 1),
                                                               timing["evaluate_seconds"]))
        except (OSError, ValueError, KeyError, TypeError):
            continue
    seconds, unknown = 0.0, sorted({c.variant.text for c in todo if c.variant.text not in measured})
    for cell in todo:
        if cell.variant.text in measured:
            per_unit, scoring = (float(np.median(x)) for x in zip(*measured[cell.variant.text]))
            seconds += per_unit * work(cell) + scoring
    known = len(todo) - sum(c.variant.text in unknown for c in todo)
    line = f"estimate: {len(todo)} cell(s) to train"
    if known:
        line += f"; {known} of them ≈ {seconds / 60:.1f} min (from the finished cells' recorded times)"
    if unknown:
        line += f"; no estimate yet for {', '.join(unknown)} (none of its cells has finished; the progress bar " \
                "estimates as cells finish)"
    return line


def planned_work(cell: Cell, config) -> int:
    """A cell's amount of training for :func:`estimate`: planned optimizer steps (fine-tuning) or texts."""
    if cell.variant.pipeline != "finetune":
        return cell.size
    from textxfer.transformer.pooling import expected
    from textxfer.transformer.recipe import plan as recipe_plan

    record = recipe_plan(config, cell.size, pooling=expected(config.pooling, config.model) or "cls")
    return record["planned_steps"] or cell.size  # a head fitted by regression: its work grows with the texts


def same_automatic_choices(folder: Path, cell: Cell, config) -> bool:
    """Whether a finished fine-tuning cell made the choices today's rules would (same settings can mean
    another recipe after an upgrade: ``--strategy auto``'s threshold, ``--pooling auto``); other cells: True."""
    if cell.variant.pipeline != "finetune":
        return True
    from textxfer.transformer.auto_choice import searches
    from textxfer.transformer.pooling import expected
    from textxfer.transformer.recipe import plan as recipe_plan

    try:
        report = json.loads((folder / "report.json").read_text(encoding="utf-8"))
        recorded = report["fit"]["recipe"]
        # A self-trained cell that kept its second model: that model's recipe, chosen for the labelled plus the
        # pseudo-labelled texts it trained on (--unlabelled), is the one recorded.
        size = (int(report["fit"]["train_texts"]) if (report.get("self_training") or {}).get("kept") == "with"
                else cell.size)
    except (OSError, ValueError, KeyError, TypeError):
        return False
    # A hub model's pooling config is not looked up here (expected → None): the run's own record is trusted.
    pooling = expected(config.pooling, config.model) or recorded.get("pooling", "cls")
    if recorded.get("pooling", "cls") != pooling:
        return False
    if config.strategy == "auto" and searches(size, True) is None:  # a study's cells all have validation
        return bool(recorded.get("search"))  # chosen on validation: any winner of a search stands
    wanted = recipe_plan(config, size, pooling=pooling)["strategy"]
    return recorded.get("strategy") == wanted and not recorded.get("search")


def _classifier(pipeline: str, config):
    if pipeline == "baseline":
        from textxfer.baseline.pipeline import BaselineClassifier

        return BaselineClassifier(config)
    from textxfer.transformer.pipeline import FinetuneClassifier

    return FinetuneClassifier(config)


def run_ensemble_cell(members: list[Path], data: PreparedData, folder: Path) -> None:
    """Combine the finished member cells in ``members`` into an ensemble cell in ``folder`` (weights chosen on
    validation; the members' files are hard-linked, so the cell takes almost no disk)."""
    from textxfer.ensemble.pipeline import EnsembleClassifier, EnsembleConfig
    from textxfer.registry import load

    model = EnsembleClassifier([load(member) for member in members], EnsembleConfig("auto"))
    run_prepared(model, data, folder, progress=False, log=lambda *_: None)


def run_distill_cell(config, data: PreparedData, folder: Path) -> None:
    """Distil a student cell from its finished teacher cell (``config.teacher``) on the teacher's rows."""
    from textxfer.evaluation.distillation import distill_prepared

    distill_prepared(config, data, folder, progress=False, log=lambda *_: None)


def _finished(folder: Path, cell: Cell, config, data: PreparedData) -> bool:
    """Whether ``folder`` holds this cell, finished with today's settings and choices on the same rows."""
    if cell.variant.pipeline == DISTILL:
        from textxfer.evaluation.distillation import finished_distillation

        return finished_distillation(folder, config, data)
    return (finished_run(folder, cell.variant.pipeline, config, data)
            and same_automatic_choices(folder, cell, config))


def run_cell(pipeline: str, config, data: PreparedData, folder: Path) -> None:
    """Train and score one cell into ``folder`` (an ordinary run folder), then drop its checkpoints."""
    run_prepared(_classifier(pipeline, config), data, folder, progress=False, log=lambda *_: None)
    if pipeline == "finetune":
        from textxfer.transformer.pipeline import remove_checkpoints

        remove_checkpoints(config.checkpoint_dir)


class CellSkipped(TextxferError):
    """A cell that cannot run because a cell it needs did not finish."""


def failed_cell(cell: Cell, error: Exception, config) -> dict:
    """The record of a cell that did not finish, with its one line: which cell, what happened, what to change."""
    where = f"study: cell {cell.folder} ({cell.variant.text}, {cell.size:,} texts, seed {cell.seed})"
    if isinstance(error, ChildKilled):
        length = getattr(config, "max_length", None) or "the 99th percentile of the texts, up to 512 tokens"
        line = (f"{where} was {error.how}, so it is left out and the study goes on; rerun the study to retry it, "
                f"with a smaller --max-length (now {length}) or "
                "--batch-size in the variant or base settings, or on a machine with more memory")
        peak = error.peak_mib
    else:
        line, peak = f"{where} is left out: {error}", None
    return {"variant": cell.variant.text, "size": cell.size, "seed": cell.seed, "folder": cell.folder,
            "peak_mib": None if peak is None else round(peak), "line": line}


def run_study(options: DataOptions, variants: list[Variant], sizes: list[str], seeds: int, output: str | Path,
              base: dict[str, object], progress: bool = True, log=print, isolate: bool = True) -> dict:
    """Train and score every cell not yet finished, then write the study report; returns ``study.json``'s dict.

    ``isolate``: each fine-tuning cell runs in a fresh process (spawned), so nothing one cell leaves
    behind — allocator fragmentation, library caches — slows or bloats the next one."""
    from tqdm.auto import tqdm

    from textxfer.evaluation.study_report import cell_record, write_study

    if seeds < 1:
        raise TextxferError(f"--seeds must be at least 1, got {seeds}")
    if not variants:
        raise TextxferError("--variants: name at least one variant (baseline, finetune, finetune:strategy=head-only, …)")
    check_members(variants)
    output = Path(output)
    data = load_data(options)
    describe_data(data, log)
    if not len(data.test):
        raise TextxferError("the test split is empty, so there is nothing to score the cells on; add data or pass --test")
    chosen_sizes = parse_sizes([str(s) for s in sizes], len(data.train))
    seed_list = [options.seed + i for i in range(seeds)]
    cells = plan(variants, chosen_sizes, seed_list)
    output.mkdir(parents=True, exist_ok=True)
    write_split_file(output / "split.json", data.split_record)
    orders = {seed: nested_order(data.train.labels, seed) for seed in seed_list}
    prepared = {(n, s): subset(data, orders[s], n) for n in chosen_sizes for s in seed_list}
    configs = {c: cell_config(c, base, output) for c in cells}
    done = {c for c in cells if _finished(output / c.folder, c, configs[c], prepared[(c.size, c.seed)])}
    # An ensemble or student cell whose member or teacher cells are to be (re)trained is rebuilt from them.
    done -= {c for c in done if c.variant.pipeline in DERIVED and not done.issuperset(member_cells(c, variants))}
    log(f"study: {len(variants)} variant(s) × {len(chosen_sizes)} size(s) {chosen_sizes} × {seeds} seed(s) "
        f"= {len(cells)} cells, {len(done)} already finished; output {output}")
    if len(done) < len(cells):
        log(estimate([c for c in cells if c not in done], {c: output / c.folder for c in done},
                     lambda c: planned_work(c, configs[c])))
    records, failed = [], []
    bar = tqdm(total=len(cells), initial=len(done), unit="cell", disable=not progress, desc="study")
    for cell in cells:
        folder = output / cell.folder
        members = member_cells(cell, variants) if cell.variant.pipeline in DERIVED else []
        if cell not in done:
            bar.set_postfix_str(f"{cell.variant.text} n={cell.size} seed={cell.seed}")
            config = configs[cell]
            lost = [m for m in members if any(f["folder"] == m.folder for f in failed)]
            try:
                if lost:
                    raise CellSkipped(f"its member cell {lost[0].folder} did not finish")
                if cell.variant.pipeline == ENSEMBLE:
                    run_ensemble_cell([output / m.folder for m in members], prepared[(cell.size, cell.seed)], folder)
                elif cell.variant.pipeline == DISTILL:
                    run = in_child_process if isolate and config.student == "shallow" else (lambda f, *a: f(*a))
                    run(run_distill_cell, config, prepared[(cell.size, cell.seed)], folder)
                elif isolate and cell.variant.pipeline == "finetune":
                    in_child_process(run_cell, cell.variant.pipeline, config, prepared[(cell.size, cell.seed)], folder)
                else:
                    run_cell(cell.variant.pipeline, config, prepared[(cell.size, cell.seed)], folder)
            except (ChildKilled, CellSkipped) as exc:
                failed.append(failed_cell(cell, exc, config))
                log(failed[-1]["line"])
                bar.update(1)
                continue
            bar.update(1)
        records.append(cell_record(cell, folder))
    bar.close()
    study = write_study(output, records, variants, chosen_sizes, seed_list, data, failed)
    for line in study["warnings"]:
        log(line)
    return study

