"""The ``ensemble`` model kind: the weighted average of other models' class probabilities.

Members are models of any kind (baseline, fine-tuned, exported ONNX, another ensemble) over one label set
in one order. :meth:`EnsembleClassifier.fit` trains the members that are not trained yet, then sets the
weights — equal, given, or chosen on the validation split only (``textxfer.ensemble.weights``). Written,
each member is an ordinary model folder under ``members/`` (a member loaded from a folder: that folder's
model files, hard-linked where possible, so a study's ensembles take no extra disk), listed in the manifest
with its sha256, and
loaded back through the same safe readers as any model folder (``textxfer.registry.load``, which hands itself
to :meth:`EnsembleClassifier.from_manifest`: the registry sits above every kind, this one included).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from textxfer.ensemble.weights import choose, mix, parse_weights
from textxfer.errors import TextxferError
from textxfer.data.labels import LabelSet
from textxfer.core.calibration import check_calibration
from textxfer.core.manifest import build_manifest, write_manifest
from textxfer.core.contract import ClassifierBase
from textxfer.core.runs import link_model_files
from textxfer.data.tables import file_sha256

MEMBERS_DIR = "members"


@dataclass
class EnsembleConfig:
    """``weights``: ``auto`` (chosen on validation), ``equal``, or one number per member (``"0.7,0.3"``);
    ``calibration``: ``temperature`` (one temperature for the averaged probabilities, fitted on validation) or
    ``none``. The weights are chosen on the members' own calibrated probabilities."""

    weights: str = "auto"
    calibration: str = "temperature"

    def __post_init__(self) -> None:
        check_calibration(self.calibration)


def same_labels(members: Sequence[ClassifierBase], names: Sequence[str] | None = None) -> LabelSet:
    """The members' one label set; members with other labels, or the same labels in another order, or of another
    task shape (multi-label, text pairs) than the first, are refused."""
    for position, member in enumerate(members[1:], start=2):
        where = f" ({names[position - 1]})" if names else ""
        members[0].shape.refuse_other(member.shape, "member 1 of the ensemble", f"member {position}{where} is for "
                                      f"{member.shape.describe()}; an ensemble's members must share one task shape")
    first = members[0].labels
    for position, member in enumerate(members[1:], start=2):
        if member.labels != first:
            other = list(member.labels.names)
            why = "the same labels in another order" if sorted(other) == sorted(first.names) else "other labels"
            where = f" ({names[position - 1]})" if names else ""
            raise TextxferError(f"member {position}{where} has labels {other}, member 1 has {list(first.names)} "
                                f"({why}); an ensemble needs one label set in one order — train the members on one split")
    return first


class EnsembleClassifier(ClassifierBase):
    """A weighted average of ``members``' probabilities (columns in the members' shared label order)."""

    kind = "ensemble"
    follows_device = True  # when a member does (textxfer.classifier.cached looks at the members' kinds)
    fitted_attribute = "weights_"

    def __init__(self, members: Sequence[ClassifierBase] = (), config: EnsembleConfig | None = None) -> None:
        self.members = list(members)
        self.config = config or EnsembleConfig()

    def fit(self, train, validation=None, labels: LabelSet | None = None, progress: bool = False) -> "EnsembleClassifier":
        """Train the members not trained yet (on ``train``), then set the weights on ``validation`` — never test."""
        if len(self.members) < 2:
            raise TextxferError(f"an ensemble needs at least 2 members, got {len(self.members)}")
        how = parse_weights(self.config.weights, len(self.members))  # a bad --weights fails before training
        for member in self.members:
            if not member.fitted:
                member.fit(train, validation, labels=labels, progress=progress)
        shared = same_labels(self.members)
        if labels is not None and labels != shared:
            raise TextxferError(f"the members' labels {list(shared.names)} differ from the data's "
                                f"{list(labels.names)}; train the members on this data's split")
        if train is not None:
            self.members[0].shape.refuse_other(train.shape, "the ensemble's members", "train them on data of this shape")
        has_validation = validation is not None and len(validation) > 0
        return self.fit_on([member.predict_proba(validation.inputs) for member in self.members] if has_validation
                           else None, validation if has_validation else None, how)

    def fit_on(self, probabilities: Sequence[np.ndarray] | None, validation, how=None) -> "EnsembleClassifier":
        """Set the weights, then the temperature of the average (and, multi-label, its thresholds), from the fitted
        members' (calibrated) ``probabilities`` on ``validation`` (None, None: no validation split; equal weights
        unless given) — what :meth:`fit` does once the members are trained, for a caller that has those
        probabilities already (``compare``)."""
        how = parse_weights(self.config.weights, len(self.members)) if how is None else how
        self.labels = same_labels(self.members)
        self.shape, self.thresholds, self.thresholds_from = self.members[0].shape, None, ""  # the members' shape
        y = self.labels.targets(validation.labels) if probabilities is not None else None
        self.weights_, self.selection_ = choose(how, probabilities or [None] * len(self.members), y)
        mixed = mix(probabilities, self.weights_, self.labels.multi_label) if y is not None else None
        self.end_fit(validation if y is not None else None, calibration=self.config.calibration, raw_validation=mixed)
        self.fit_stats_ = {"strategy": "ensemble", "weights": self.weights_, "selection": self.selection_,
                           "members": [self._describe(m) for m in self.members]}
        return self

    def raw_proba(self, texts: Sequence) -> np.ndarray:
        """The weighted average of the members' probabilities (members of weight 0 are not run; multi-label: label
        by label)."""
        self._check_fitted()
        texts = self.check_inputs(texts)
        if len(texts) == 0:
            return np.zeros((0, len(self.labels)))
        used = [(w, m) for w, m in zip(self.weights_, self.members) if w > 0]
        return mix([m.predict_proba(texts) for _, m in used], [w for w, _ in used], self.labels.multi_label)

    @property
    def predict_batch_size(self) -> int | None:  # type: ignore[override]
        """Texts per forward pass of the members that batch (``--predict-batch-size``)."""
        return self.members[0].predict_batch_size if self.members else None

    @predict_batch_size.setter
    def predict_batch_size(self, value: int | None) -> None:
        for member in self.members:
            member.predict_batch_size = value

    @property
    def device(self) -> str:
        return ", ".join(sorted({m.device for m in self.members})) if self.members else "cpu"

    @staticmethod
    def _describe(member: ClassifierBase) -> dict:
        return {"kind": member.kind, "base_model": member.base_model}

    # -- persistence ----------------------------------------------------------------------------
    def write(self, folder: Path, data_info: dict | None = None) -> None:
        """Each member into ``members/<n>-<kind>/`` (its own manifest, safe formats), then the manifest."""
        self._check_fitted()
        entries = []
        for position, member in enumerate(self.members, start=1):
            name = f"{position}-{member.kind}"
            target = folder / MEMBERS_DIR / name
            target.mkdir(parents=True)
            if member.loaded_from is not None and member.loaded_from.is_dir():
                link_model_files(member.loaded_from, target)  # its own files, byte for byte (linked where possible)
            else:
                member.write(target, data_info)
            entries.append({"folder": name, **self._describe(member), "sha256": file_sha256(target)})
        config = {**asdict(self.config), "chosen_weights": self.weights_, "selection": self.selection_,
                  "members": entries}
        write_manifest(folder, build_manifest(self.kind, self.labels, config, data_info or {},
                                              {"members": MEMBERS_DIR}, self.task_info(), self.calibration))

    @classmethod
    def from_manifest(cls, folder: Path, manifest: dict, labels: LabelSet, device: str = "auto",
                      precision: str = "auto", load_member=None) -> "EnsembleClassifier":
        """The saved ensemble; each member folder must be listed, inside ``members/``, unchanged since it was
        written (sha256) and a valid model folder of the ensemble's labels."""
        from textxfer.core.config import from_dict

        where = f"{folder}/textxfer.json"
        if load_member is None:
            raise TextxferError(f"{folder}: an ensemble's members may be of any kind; load it with "
                                "textxfer.classifier.load")
        config = dict(manifest["config"])
        entries, weights = config.pop("members", None), config.pop("chosen_weights", None)
        selection = config.pop("selection", {})
        if not (isinstance(entries, list) and len(entries) >= 2 and all(isinstance(e, dict) for e in entries)):
            raise TextxferError(f"{where}: corrupt manifest ('config.members' must list at least 2 members)")
        if not (isinstance(weights, list) and len(weights) == len(entries)
                and all(isinstance(w, (int, float)) and not isinstance(w, bool) and w >= 0 for w in weights)
                and sum(weights) > 0):
            raise TextxferError(f"{where}: corrupt manifest ('config.chosen_weights' must give one weight ≥ 0 per "
                                f"member, not all 0; got {weights!r:.80})")
        base = (folder / MEMBERS_DIR).resolve()
        members = []
        for entry in entries:
            name = entry.get("folder")
            if not isinstance(name, str) or Path(name).name != name or name in ("", ".", ".."):
                raise TextxferError(f"{where}: member folder {name!r} is not a plain folder name; refusing to load")
            path = folder / MEMBERS_DIR / name
            if path.is_symlink() or base not in path.resolve().parents:
                raise TextxferError(f"{path}: a member folder must lie inside {MEMBERS_DIR}/ (it is a link); "
                                    "refusing to load")
            if not path.is_dir():
                raise TextxferError(f"{path}: member listed in the manifest is missing; restore the folder")
            if file_sha256(path) != entry.get("sha256"):
                raise TextxferError(f"{path}: the member changed since the ensemble was written (sha256 differs); "
                                    "rebuild the ensemble with `textxfer ensemble`")
            members.append(load_member(path, device, precision))
        model = cls(members, from_dict(EnsembleConfig, config, source=f"{where} config"))
        same_labels(members, [e["folder"] for e in entries])
        if members[0].labels != labels:
            raise TextxferError(f"{where}: the members' labels {list(members[0].labels.names)} differ from the "
                                f"manifest's {list(labels.names)}; refusing to load")
        model.labels, model.weights_, model.selection_ = labels, [float(w) for w in weights], selection
        return model
