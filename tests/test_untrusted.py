"""Loading a model folder someone else made never runs code from it and never reads outside it.

Every case plants a payload that would create a marker file if it ever ran, checks that textxfer refuses
the folder with a one-line ``TextxferError`` (and exit code 2 / one stderr line through the CLI), and that
the marker does not exist afterwards.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
from pathlib import Path

import pytest

from textxfer import classifier
from textxfer.cli import main
from textxfer.errors import TextxferError
from textxfer.data.labels import LabelSet
from textxfer.core.manifest import MANIFEST_NAME


class Payload:
    """Unpickling this object runs ``exec``: it would create the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        import builtins

        return builtins.exec, (f"open({str(self.marker)!r}, 'w').close()",)


@pytest.fixture
def marker(tmp_path: Path) -> Path:
    path = tmp_path / "pwned"
    yield path
    assert not path.exists(), "a payload planted in the model folder was executed"


def plant_pickle(path: Path, marker: Path) -> None:
    path.write_bytes(pickle.dumps({"weight": Payload(marker)}))


def plant_remote_code(folder: Path, marker: Path, config_name: str = "config.json") -> None:
    """A config asking for code shipped in the folder; importing that code would create the marker."""
    (folder / "evil.py").write_text(f"open({str(marker)!r}, 'w').close()\n"
                                    "from transformers import BertModel as EvilModel\n", encoding="utf-8")
    path = folder / config_name
    config = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    config["auto_map"] = {"AutoModel": "evil.EvilModel", "AutoModelForSequenceClassification": "evil.EvilModel",
                          "AutoTokenizer": ["evil.EvilModel", None], "AutoConfig": "evil.EvilModel"}
    path.write_text(json.dumps(config), encoding="utf-8")


def edit_manifest(folder: Path, change) -> None:
    path = folder / MANIFEST_NAME
    manifest = json.loads(path.read_text(encoding="utf-8"))
    change(manifest)
    path.write_text(json.dumps(manifest), encoding="utf-8")


def copy_of(source: Path, tmp_path: Path, name: str = "model") -> Path:
    return Path(shutil.copytree(source, tmp_path / name))


def refused(folder: Path, *fragments: str, capsys=None) -> str:
    """Assert ``classifier.load`` and ``textxfer predict`` both refuse ``folder`` with a one-line error."""
    with pytest.raises(TextxferError) as caught:
        classifier.load(folder)
    message = str(caught.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, message
    if capsys is not None:
        capsys.readouterr()
        assert main(["predict", "--model", str(folder), "--no-progress", "很好"]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("textxfer: error:") and "\n" not in err, err
        for fragment in fragments:
            assert fragment in err, err
    return message


def labels() -> LabelSet:
    return LabelSet.from_labels(["negative", "positive"])


# -- base models used for fine-tuning ---------------------------------------------------------------

def pickle_only_base(tiny_bert: Path, tmp_path: Path, marker: Path) -> Path:
    folder = copy_of(tiny_bert, tmp_path, "base")
    (folder / "model.safetensors").unlink()
    plant_pickle(folder / "pytorch_model.bin", marker)
    return folder


def test_base_model_with_pickle_weights_is_refused(tiny_bert, tmp_path, marker):
    from textxfer.transformer.models import load_for_training

    folder = pickle_only_base(tiny_bert, tmp_path, marker)
    with pytest.raises(TextxferError) as caught:
        load_for_training(str(folder), labels())
    message = str(caught.value)
    assert str(folder) in message and "--allow-pickle-weights" in message and "\n" not in message


def test_finetune_cli_refuses_pickle_base_model(tiny_bert, sample_csv, tmp_path, marker, capsys):
    folder = pickle_only_base(tiny_bert, tmp_path, marker)
    code = main(["finetune", "--data", str(sample_csv), "--model", str(folder), "--output", str(tmp_path / "out"),
                 "--no-progress", "--epochs", "1", "--checkpoint-dir", str(tmp_path / "ckpt")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "--allow-pickle-weights" in err and "\n" not in err, err


def test_allow_pickle_weights_lifts_the_refusal(tiny_bert, tmp_path):
    """With the explicit flag a (benign) .bin base model loads; the malicious one is never unpickled here."""
    import torch
    from safetensors.torch import load_file

    from textxfer.transformer.models import load_for_training

    folder = copy_of(tiny_bert, tmp_path, "base")
    state = load_file(str(folder / "model.safetensors"))
    (folder / "model.safetensors").unlink()
    torch.save(state, folder / "pytorch_model.bin")
    tokenizer, model, _ = load_for_training(str(folder), labels(), allow_pickle_weights=True)
    assert model.config.num_labels == 2
    assert torch.equal(model.bert.embeddings.word_embeddings.weight, state["embeddings.word_embeddings.weight"])


def test_finetune_config_flags_default_off():
    from textxfer.transformer.pipeline import FinetuneConfig

    config = FinetuneConfig()
    assert config.trust_remote_code is False and config.allow_pickle_weights is False


@pytest.mark.parametrize("config_name", ["config.json", "tokenizer_config.json"])
def test_base_model_asking_for_remote_code_is_refused(tiny_bert, tmp_path, marker, config_name):
    from textxfer.transformer.models import load_for_training

    folder = copy_of(tiny_bert, tmp_path, "base")
    plant_remote_code(folder, marker, config_name)
    with pytest.raises(TextxferError) as caught:
        load_for_training(str(folder), labels())
    message = str(caught.value)
    assert "--trust-remote-code" in message and str(folder) in message and "\n" not in message


def test_base_model_naming_pickle_weights_in_config_is_refused(tiny_bert, tmp_path, marker):
    """transformers honours ``transformers_weights: adapter_model.bin`` even with ``use_safetensors=True``."""
    from textxfer.transformer.models import load_for_training

    folder = copy_of(tiny_bert, tmp_path, "base")
    plant_pickle(folder / "adapter_model.bin", marker)
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    (folder / "config.json").write_text(json.dumps({**config, "transformers_weights": "adapter_model.bin"}))
    with pytest.raises(TextxferError, match="--allow-pickle-weights"):
        load_for_training(str(folder), labels())


# -- saved fine-tuned folders -----------------------------------------------------------------------

def test_saved_folder_with_pickle_instead_of_safetensors_is_refused(trained_models, tmp_path, marker, capsys):
    folder = copy_of(trained_models["finetune"], tmp_path)
    (folder / "model.safetensors").unlink()
    plant_pickle(folder / "pytorch_model.bin", marker)
    refused(folder, "model.safetensors", capsys=capsys)  # the manifest lists it: missing
    edit_manifest(folder, lambda m: m["files"].update(weights="pytorch_model.bin"))
    refused(folder, "pickle", "never unpickles", str(folder), capsys=capsys)  # a manifest rewritten to list the pickle


def test_saved_folder_asking_for_remote_code_is_refused(trained_models, tmp_path, marker, capsys):
    folder = copy_of(trained_models["finetune"], tmp_path)
    plant_remote_code(folder, marker)
    edit_manifest(folder, lambda m: m["config"].update(trust_remote_code=True, allow_pickle_weights=True))
    refused(folder, "auto_map", "never runs code", capsys=capsys)


def test_saved_folder_naming_pickle_weights_in_config_is_refused(trained_models, tmp_path, marker):
    folder = copy_of(trained_models["finetune"], tmp_path)
    plant_pickle(folder / "adapter_model.bin", marker)
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    (folder / "config.json").write_text(json.dumps({**config, "transformers_weights": "adapter_model.bin"}))
    refused(folder, "adapter_model.bin")


# -- baseline (skops) -------------------------------------------------------------------------------

class Custom:
    """A class that is not part of a forest."""

    def __init__(self) -> None:
        self.value = 1


@pytest.mark.parametrize("extra", [os.system, Custom()], ids=["function", "custom-class"])
def test_forest_with_unexpected_types_is_refused(trained_models, tmp_path, capsys, extra):
    from textxfer.core.imports import skops_io

    sio = skops_io()
    folder = copy_of(trained_models["baseline"], tmp_path)
    forest = sio.load(folder / "forest.skops", trusted=["sklearn.tree._tree.Tree"])
    forest.extra_ = extra  # still a RandomForestClassifier: only the type allow-list can catch it
    (folder / "forest.skops").write_bytes(sio.dumps(forest))
    refused(folder, "unexpected types", capsys=capsys)


def test_forest_file_that_is_not_a_forest_is_refused(trained_models, tmp_path):
    from textxfer.core.imports import skops_io

    folder = copy_of(trained_models["baseline"], tmp_path)
    (folder / "forest.skops").write_bytes(skops_io().dumps({"not": "a forest"}))
    refused(folder, "not a RandomForestClassifier")


def test_vectors_with_mismatched_shapes_are_refused(trained_models, tmp_path):
    folder = copy_of(trained_models["baseline"], tmp_path)
    (folder / "vocab.json").write_text(json.dumps(["only", "three", "words"]), encoding="utf-8")
    refused(folder, "do not match")
    (folder / "vectors.safetensors").write_bytes(pickle.dumps([1, 2, 3]))
    refused(folder, "cannot read the word vectors")


# -- manifests ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["../../x", "/etc/passwd", "sub/../../x", "..", "a\\..\\x"])
def test_manifest_file_names_outside_the_folder_are_refused(trained_models, tmp_path, capsys, name):
    folder = copy_of(trained_models["baseline"], tmp_path)
    edit_manifest(folder, lambda m: m["files"].update(forest=name))
    refused(folder, "outside the model folder", capsys=capsys)


def test_manifest_file_that_links_outside_is_refused(trained_models, tmp_path, capsys):
    folder = copy_of(trained_models["baseline"], tmp_path)
    outside = tmp_path / "outside.skops"
    shutil.move(folder / "forest.skops", outside)
    (folder / "forest.skops").symlink_to(outside)
    refused(folder, "outside the model folder", capsys=capsys)


def test_manifest_link_inside_the_folder_is_accepted(trained_models, tmp_path):
    folder = copy_of(trained_models["baseline"], tmp_path)
    shutil.move(folder / "forest.skops", folder / "real.skops")
    (folder / "forest.skops").symlink_to("real.skops")
    assert classifier.load(folder).predict_proba(["很好"]).shape == (1, 2)


def test_manifest_from_a_newer_format_is_refused(trained_models, tmp_path, capsys):
    folder = copy_of(trained_models["finetune"], tmp_path)
    edit_manifest(folder, lambda m: m.update(format_version=99))
    refused(folder, "newer", capsys=capsys)


# -- ONNX exports -----------------------------------------------------------------------------------

ONNX_MISSING = "needs the optional ONNX packages: pip install 'textxfer[onnx]'"


# Session-scoped and named first by each test, so a missing package skips before the models are trained.
@pytest.fixture(scope="session")
def onnx_package():
    """The ``onnx`` package (builds the test graphs; the external-data check parses with it); skip without it."""
    return pytest.importorskip("onnx", reason=f"onnx is not installed; this test {ONNX_MISSING}")


@pytest.fixture(scope="session")
def onnx_runtime(onnx_package):
    """``onnxruntime`` as well (loading an ONNX folder needs both; without them the refusals under test are
    never reached); skip without it."""
    return pytest.importorskip("onnxruntime", reason=f"onnxruntime is not installed; this test {ONNX_MISSING}")


def onnx_graph(path: Path, location: str) -> None:
    """A one-node graph (Identity of an initializer) whose initializer lives in external data ``location``."""
    import onnx
    from onnx import TensorProto, helper

    weight = helper.make_tensor("weight", TensorProto.FLOAT, [2], [0.0, 0.0])
    weight.ClearField("float_data")
    weight.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", "8")):
        weight.external_data.add(key=key, value=value)
    graph = helper.make_graph([helper.make_node("Identity", ["weight"], ["logits"])], "g",
                              [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["b", "s"])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [2])], [weight])
    onnx.save(helper.make_model(graph), str(path))


def onnx_folder(trained_models, tmp_path: Path, location: str) -> Path:
    folder = copy_of(trained_models["finetune"], tmp_path)
    (folder / "model.safetensors").unlink()
    onnx_graph(folder / "model.onnx", location)
    edit_manifest(folder, lambda m: (m.update(kind="onnx"), m["files"].update(weights="model.onnx"),
                                     m["files"].pop("trainer_log", None)))
    return folder


@pytest.fixture
def no_session(monkeypatch, onnx_runtime):
    """Fail the test if an ONNX Runtime session is created (that is when external data would be read)."""

    def forbidden(*args, **kwargs):
        raise AssertionError("an InferenceSession was created for a refused graph")

    monkeypatch.setattr(onnx_runtime, "InferenceSession", forbidden)


@pytest.mark.parametrize("location", ["../../etc/passwd", "/etc/passwd", "sub/../../x", "..\\secret"])
def test_onnx_external_data_outside_the_folder_is_refused(onnx_runtime, trained_models, tmp_path, capsys, no_session,
                                                         location):
    folder = onnx_folder(trained_models, tmp_path, location)
    refused(folder, "outside the model folder", capsys=capsys)


def test_onnx_external_data_linking_outside_is_refused(onnx_runtime, trained_models, tmp_path, no_session):
    folder = onnx_folder(trained_models, tmp_path, "weights.data")
    (tmp_path / "secret").write_bytes(b"\0" * 8)
    (folder / "weights.data").symlink_to(tmp_path / "secret")
    refused(folder, "outside the model folder")


def test_onnx_external_data_inside_the_folder_passes_the_check(onnx_package, tmp_path):
    from textxfer.transformer.onnx_pipeline import check_external_data

    onnx_graph(tmp_path / "model.onnx", "weights.data")
    (tmp_path / "weights.data").write_bytes(b"\0" * 8)
    check_external_data(tmp_path / "model.onnx")  # no error


def test_onnx_folder_asking_for_remote_code_is_refused(onnx_runtime, trained_models, tmp_path, marker, no_session):
    folder = onnx_folder(trained_models, tmp_path, "weights.data")
    plant_remote_code(folder, marker, "tokenizer_config.json")
    refused(folder, "auto_map", "never runs code")


MANIFEST_CORRUPTIONS = {  # manifest change → words of the one-line error (which also names textxfer.json)
    "labels a list": (lambda m: m.__setitem__("labels", ["a", "b"]), "'labels.names' must list at least 2"),
    "label names a string": (lambda m: m["labels"].__setitem__("names", "ab"), "got 'ab'"),  # was: labels 'a', 'b'
    "label names numbers": (lambda m: m["labels"].__setitem__("names", [1, 2]), "got [1, 2]"),
    "one label": (lambda m: m["labels"].__setitem__("names", ["a"]), "at least 2 label names"),
    "duplicate labels": (lambda m: m["labels"].__setitem__("names", ["a", "a"]), "duplicate label names"),
    "label kind": (lambda m: m["labels"].__setitem__("kind", "float"), "label kind must be 'str' or 'int'"),
    "version true": (lambda m: m.__setitem__("format_version", True), "no integer format_version"),
    "config option unknown": (lambda m: m["config"].__setitem__("bogus", 1), "unknown BaselineConfig option(s) ['bogus']"),
    "config value a string": (lambda m: m["config"].__setitem__("n_estimators", "100"),
                              "option 'n_estimators' must be a whole number"),
}


@pytest.mark.parametrize("case", sorted(MANIFEST_CORRUPTIONS))
def test_every_manifest_field_is_checked(case, trained_models, tmp_path):
    import copy

    change, words = MANIFEST_CORRUPTIONS[case]
    folder = tmp_path / "model"
    shutil.copytree(trained_models["baseline"], folder)
    manifest = copy.deepcopy(json.loads((folder / "textxfer.json").read_text(encoding="utf-8")))
    change(manifest)
    (folder / "textxfer.json").write_text(json.dumps(manifest), encoding="utf-8")
    with pytest.raises(TextxferError) as error:
        classifier.load(folder)
    message = str(error.value)
    assert words in message and "textxfer.json" in message and "\n" not in message


LEGACY = Path(__file__).parent / "data" / "legacy_models"  # committed model folders of every kind (no training)


def set_labels(names: list[str], kind: str = "str"):
    return lambda manifest, folder: manifest.__setitem__("labels", {"names": names, "kind": kind})


def without_id2label(manifest: dict, folder: Path) -> None:
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    config.pop("id2label"), config.pop("label2id")
    (folder / "config.json").write_text(json.dumps(config), encoding="utf-8")


# Manifest fields each valid alone but not together: (model kind, change(manifest, folder), words of the one-line
# error besides textxfer.json — the fields that disagree). Before the whole-manifest check each of these loaded and
# then crashed in predict (int() of a label name, a tensor size, an index), loaded and silently mapped class ids to
# the wrong labels or read files the manifest does not list, or failed with a message naming neither file nor field.
MANIFEST_DISAGREEMENTS = {
    "int label kind, word names": ("baseline", set_labels(["negative", "positive"], "int"),
                                   ["labels.kind is 'int'", "labels.names ['negative', 'positive']"]),
    "int label kind, word names (onnx)": ("onnx", set_labels(["negative", "positive"], "int"),
                                          ["labels.kind is 'int'", "labels.names"]),
    "int label kind, word names (ensemble)": ("ensemble", set_labels(["negative", "positive"], "int"),
                                              ["labels.kind is 'int'", "labels.names"]),
    "int label kind, zero-padded names": ("baseline", set_labels(["01", "1"], "int"),
                                          ["labels.kind is 'int'", "['01', '1']", "not all whole numbers"]),
    "int labels out of numeric order": ("baseline", set_labels(["10", "9"], "int"),
                                        ["labels.names ['10', '9']", "labels.kind 'int'", "['9', '10']"]),
    "str labels out of order": ("baseline", set_labels(["positive", "negative"]),
                                ["labels.names ['positive', 'negative']", "labels.kind 'str'", "wrong labels"]),
    "baseline without files.forest": ("baseline", lambda m, f: m["files"].pop("forest"),
                                      ["kind 'baseline'", "lacks files.forest"]),
    "baseline listing files.weights": ("baseline", lambda m, f: m["files"].update(weights="forest.skops"),
                                       ["kind 'baseline'", "lists files.weights"]),
    "baseline folder as kind onnx": ("baseline", lambda m, f: m.update(kind="onnx"),
                                     ["kind 'onnx'", "lacks files.config, files.weights", "lists files.forest"]),
    "fine-tuned folder as kind onnx": ("finetune", lambda m, f: m.update(kind="onnx"),
                                       ["kind 'onnx'", "lists files.trainer_log"]),
    "fine-tuned folder as kind ensemble": ("finetune", lambda m, f: m.update(kind="ensemble"),
                                           ["kind 'ensemble'", "lacks files.members"]),
    "onnx without files.config, 3 labels": ("onnx", lambda m, f: (m["files"].pop("config"),
                                                                   set_labels(["a", "negative", "positive"])(m, f)),
                                            ["kind 'onnx'", "lacks files.config"]),
    "3 labels, 2 model outputs": ("finetune", set_labels(["a", "negative", "positive"]),
                                  ["labels.names has 3 labels", "2 outputs", "id2label"]),
    "3 labels, 2 model outputs (onnx)": ("onnx", set_labels(["a", "negative", "positive"]),
                                         ["labels.names has 3 labels", "2 outputs", "id2label"]),
    "model config without id2label (onnx)": ("onnx", lambda m, f: (without_id2label(m, f),
                                                                    set_labels(["a", "negative", "positive"])(m, f)),
                                             ["files.config config.json has no id2label", "3 labels.names"]),
    "max length beyond the model's positions": ("finetune", lambda m, f: m["config"].update(resolved_max_length=1000),
                                                ["config.resolved_max_length 1000", "64 positions",
                                                 "max_position_embeddings 64"]),
    "max length beyond the model's positions (onnx)": ("onnx", lambda m, f: m["config"].update(resolved_max_length=65),
                                                       ["config.resolved_max_length 65", "max_position_embeddings"]),
    "max length not a number": ("finetune", lambda m, f: m["config"].update(resolved_max_length="long"),
                                ["'config.resolved_max_length' must be a whole number", "'long'"]),
    "config of another kind": ("baseline", lambda m, f: m.__setitem__(
        "config", json.loads((LEGACY / "finetune" / MANIFEST_NAME).read_text(encoding="utf-8"))["config"]),
                               ["textxfer.json config", "unknown BaselineConfig option(s)", "'learning_rate'"]),
}


@pytest.mark.parametrize("case", sorted(MANIFEST_DISAGREEMENTS))
def test_manifest_fields_that_disagree_are_refused(case, tmp_path, capsys):
    kind, change, words = MANIFEST_DISAGREEMENTS[case]
    folder = copy_of(LEGACY / kind, tmp_path)
    manifest = json.loads((folder / MANIFEST_NAME).read_text(encoding="utf-8"))
    change(manifest, folder)
    (folder / MANIFEST_NAME).write_text(json.dumps(manifest), encoding="utf-8")
    message = refused(folder, str(folder / MANIFEST_NAME), *words, capsys=capsys)
    assert str(folder / MANIFEST_NAME) in message


def test_the_legacy_folders_pass_the_whole_manifest_check(tmp_path):
    """The unchanged folders of every kind are consistent: each refusal above comes from its one change."""
    from textxfer.core.manifest import read_manifest

    for kind in ("baseline", "finetune", "onnx", "ensemble"):
        assert read_manifest(copy_of(LEGACY / kind, tmp_path, kind))["kind"] == kind
