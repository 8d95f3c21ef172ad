"""``textxfer study``: nested stratified subsets, typed variants, a resumable grid of run folders, the report."""

from __future__ import annotations

import json
import re
import os
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from textxfer.cli import main
from textxfer.errors import TextxferError
from textxfer.baseline.pipeline import BaselineConfig
from textxfer.transformer.pipeline import FinetuneConfig
from textxfer.evaluation.study import Variant, nested_order, parse_sizes, parse_variant
from textxfer.evaluation.study_report import interval, study_markdown, summarise

CLASSES = {"baseline": BaselineConfig, "finetune": FinetuneConfig}
FAST = ["--baseline-vector-size", "16", "--baseline-min-count", "1", "--baseline-n-estimators", "20",
        "--baseline-n-jobs", "1"]


def test_nested_order_gives_stratified_nested_prefixes():
    labels = ["a"] * 70 + ["b"] * 20 + ["c"] * 10
    order = nested_order(labels, seed=3)
    assert sorted(order) == list(range(100))
    for size in (10, 20, 35, 50, 100):
        counts = Counter(labels[i] for i in order[:size])
        for label, total in (("a", 70), ("b", 20), ("c", 10)):
            assert abs(counts[label] - size * total / 100) <= 1, (size, counts)
    assert set(order[:20]) < set(order[:50])  # nested by construction: a prefix of the same order
    assert nested_order(labels, seed=3) == order and nested_order(labels, seed=4) != order


def test_variants_are_typed_by_the_pipeline_config():
    variant = parse_variant("finetune:strategy=head-only, layer_lr_decay=0.9,min-steps=150", CLASSES)
    assert variant.pipeline == "finetune"
    assert variant.settings == {"strategy": "head-only", "layer_lr_decay": 0.9, "min_steps": 150}
    assert variant.slug == "finetune-strategy=head-only-layer_lr_decay=0.9-min-steps=150"
    assert parse_variant("finetune:head_learning_rate=none", CLASSES).settings == {"head_learning_rate": None}
    assert parse_variant("baseline", CLASSES) == Variant("baseline", "baseline")
    for bad, message in [("setfit", "unknown pipeline"), ("finetune:epocs=3", "unknown FinetuneConfig option"),
                         ("finetune:epochs=three", "expected a float"), ("finetune:strategy", "not name=value"),
                         ("baseline:seed=3", "set by the study itself"),
                         ("finetune:class_weighted=maybe", "expected true or false")]:
        with pytest.raises(TextxferError, match=message):
            parse_variant(bad, CLASSES)


def test_sizes():
    assert parse_sizes(["300", "all", "100", "100"], 1000) == [100, 300, 1000]
    with pytest.raises(TextxferError, match="outside 2..1000"):
        parse_sizes(["5000"], 1000)
    with pytest.raises(TextxferError, match="whole number"):
        parse_sizes(["lots"], 1000)


def test_interval_is_the_t_interval_of_the_mean():
    from scipy import stats

    values = [0.80, 0.84, 0.82]
    got = interval(values)
    low, high = stats.t.interval(0.95, 2, loc=np.mean(values), scale=stats.sem(values))
    assert got["mean"] == pytest.approx(0.82) and got["sd"] == pytest.approx(0.02)
    assert got["ci95"] == pytest.approx([low, high])
    assert interval([0.7]) == {"mean": 0.7, "sd": 0.0, "ci95": None, "n": 1}


@pytest.fixture(scope="module")
def study_run(tmp_path_factory, sample_csv):
    output = tmp_path_factory.mktemp("study") / "out"
    argv = ["study", "--data", str(sample_csv), "--output", str(output), "--no-progress", "--variants", "baseline",
            "baseline:n_estimators=5", "--sizes", "40", "all", "90", "--seeds", "2", *FAST]
    assert main(argv) == 0
    return output, argv


def test_study_writes_one_run_folder_per_cell_on_nested_subsets(study_run):
    output, _ = study_run
    study = json.loads((output / "study.json").read_text(encoding="utf-8"))
    train_size = study["train_size"]
    assert study["sizes"] == [40, 90, train_size] and study["seeds"] == [42, 43] and len(study["cells"]) == 12
    split = json.loads((output / "split.json").read_text())
    for cell in study["cells"]:
        folder = output / cell["folder"]
        rows = json.loads((folder / "split.json").read_text())["splits"]
        assert len(rows["train"]["rows"]) == cell["size"]
        assert rows["test"]["rows"] == split["splits"]["test"]["rows"]  # one test split for every cell
        metrics = json.loads((folder / "metrics.json").read_text())
        assert cell["test"]["accuracy"] == metrics["test"]["accuracy"]
        manifest = json.loads((folder / "textxfer.json").read_text())
        assert manifest["config"]["seed"] == cell["seed"]
        assert manifest["config"]["n_estimators"] == (5 if cell["variant"] == "baseline:n_estimators=5" else 20)
    trained = {(c["variant"], c["size"], c["seed"]): set(json.loads((output / c["folder"] / "split.json").read_text())
                                                       ["splits"]["train"]["rows"]) for c in study["cells"]}
    for variant in ("baseline", "baseline:n_estimators=5"):
        for seed in (42, 43):
            assert trained[(variant, 40, seed)] < trained[(variant, 90, seed)]  # nested per seed
        assert trained[(variant, 40, 42)] != trained[(variant, 40, 43)]
    assert trained[("baseline", 40, 42)] == trained[("baseline:n_estimators=5", 40, 42)]  # same subsets per seed
    entry = study["summary"]["baseline"]["90"]
    values = [c["test"]["accuracy"] for c in study["cells"] if c["variant"] == "baseline" and c["size"] == 90]
    assert entry["accuracy"]["mean"] == pytest.approx(np.mean(values)) and entry["cells"] == 2
    assert study["summary"]["baseline"][str(train_size)]["accuracy"]["mean"] >= 0.9  # the fixture is learnable
    markdown = (output / "study.md").read_text(encoding="utf-8")
    assert "| training texts | `baseline` | `baseline:n_estimators=5` |" in markdown
    assert any(line.startswith("| 40 | ") and "±" in line and "[" in line for line in markdown.splitlines())
    assert (output / "learning_curve.png").read_bytes().startswith(b"\x89PNG")


def test_the_calibration_table_averages_each_cells_report(study_run):
    output, _ = study_run
    study = json.loads((output / "study.json").read_text(encoding="utf-8"))
    markdown = (output / "study.md").read_text(encoding="utf-8")
    assert "## Calibration on the test split" in markdown
    for variant in study["variants"]:
        for size in study["sizes"]:
            cells = [c for c in study["cells"] if c["variant"] == variant and c["size"] == size]
            reports = [json.loads((output / c["folder"] / "report.json").read_text())["calibration"] for c in cells]
            entry = study["calibration"][variant][str(size)]
            for when in ("before", "after"):
                assert entry["ece"][when]["mean"] == pytest.approx(np.mean([r["splits"]["test"][when]["ece"]
                                                                            for r in reports]), abs=1e-9)
            assert entry["temperature"]["mean"] == pytest.approx(np.mean([r["temperature"] for r in reports]))
            assert entry["ece"]["after"]["n"] == len(cells) == 2
            row = (f"| `{variant}` | {size:,} | {entry['temperature']['mean']:.3g} | "
                   f"{entry['ece']['before']['mean']:.4f} → {entry['ece']['after']['mean']:.4f} ± ")
            assert row in markdown


def test_study_resumes_finished_cells_and_retrains_changed_ones(study_run, tmp_path, capsys):
    import shutil

    shared, argv = study_run
    output = tmp_path / "copy"  # the module's study stays as it was for the other tests
    shutil.copytree(shared, output)
    argv = [str(output) if a == str(shared) else a for a in argv]
    stamps = {p: p.stat().st_mtime_ns for p in output.glob("cells/*/*/metrics.json")}
    assert main(argv) == 0
    assert "12 cells, 12 already finished" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in output.glob("cells/*/*/metrics.json")} == stamps
    changed = [a if a != "baseline:n_estimators=5" else "baseline:n_estimators=6" for a in argv]
    changed[changed.index("--sizes") + 1: changed.index("--seeds")] = ["40"]
    changed[changed.index("--seeds") + 1] = "3"
    assert main(changed) == 0
    printed = capsys.readouterr().out
    assert "6 cells, 2 already finished" in printed  # baseline at 40 texts, seeds 42 and 43
    assert re.search(r"estimate: 4 cell\(s\) to train; 1 of them ≈ \d+\.\d min \(from the finished cells' recorded "
                     r"times\); no estimate yet for baseline:n_estimators=6", printed)


def test_paired_tests_come_from_the_cells_saved_test_predictions(study_run, sample_csv):
    from textxfer.data.dataset import DataOptions, load_data
    from textxfer.evaluation.report import mcnemar

    output, _ = study_run
    study = json.loads((output / "study.json").read_text(encoding="utf-8"))
    data = load_data(DataOptions(data=str(sample_csv)))
    truth = np.asarray(data.labels.encode(data.test.labels))
    correct = {}
    for cell in study["cells"]:
        saved = json.loads((output / cell["folder"] / "predictions.json").read_text())
        assert saved["splits"]["test"]["rows"] == data.test.rows
        predicted = np.asarray(saved["splits"]["test"]["predicted"])
        assert np.mean(predicted == truth) == pytest.approx(cell["test"]["accuracy"])  # aligned with the rows
        correct[(cell["variant"], cell["size"], cell["seed"])] = predicted == truth
    for size in study["sizes"]:
        entry = study["paired"][str(size)]
        means = {v: study["summary"][v][str(size)]["accuracy"]["mean"] for v in study["variants"]}
        assert means[entry["best"]] == max(means.values())
        (other,) = [v for v in study["variants"] if v != entry["best"]]
        expected = mcnemar(np.concatenate([correct[(entry["best"], size, s)] for s in (42, 43)]),
                           np.concatenate([correct[(other, size, s)] for s in (42, 43)]))
        got = entry["tests"][other]
        assert {k: got[k] for k in ("n", "a_only_correct", "b_only_correct", "method", "significant")} == \
            {k: expected[k] for k in ("n", "a_only_correct", "b_only_correct", "method", "significant")}
        assert got["p_value"] == pytest.approx(expected["p_value"]) and got["n"] == 2 * len(truth)
    markdown = (output / "study.md").read_text(encoding="utf-8")
    assert "## Best variant against each other one" in markdown and "## In words" in markdown
    assert study["findings"] and all(f"At {n:,} texts `" in " ".join(study["findings"]) for n in study["sizes"])


def test_a_one_variant_study_compares_sizes_not_variants(study_run, tmp_path, capsys):
    """One variant has no other to be best against: no McNemar table, no "is best" sentences, its curve instead."""
    import shutil

    source, argv = study_run
    output = shutil.copytree(source, tmp_path / "one")
    one = [a if a != str(source) else str(output) for a in argv]
    one = one[:one.index("--variants") + 1] + ["baseline"] + one[one.index("--sizes"):]
    assert main(one) == 0
    study = json.loads((output / "study.json").read_text(encoding="utf-8"))
    for cell in study["cells"]:  # every cell reused, not trained again
        assert (output / cell["folder"] / "metrics.json").read_bytes() == (source / cell["folder"] / "metrics.json").read_bytes()
    markdown = (output / "study.md").read_text(encoding="utf-8")
    assert study["variants"] == ["baseline"] and "Best variant against each other one" not in markdown
    assert " is best " not in markdown and not any(" is best " in line for line in study["findings"])
    means = [study["summary"]["baseline"][str(n)]["accuracy"]["mean"] for n in study["sizes"]]
    points = ", ".join(f"{n:,} texts {m:.4f}" for n, m in zip(study["sizes"], means))
    assert f"- `baseline` mean test accuracy: {points}; " in markdown
    dips = any(b < a for a, b in zip(means, means[1:]))
    assert ("it dips from" in markdown) == dips and ("it never dips" in markdown) == (not dips)


def test_the_curve_sentence_names_each_dip():
    from textxfer.evaluation.study_report import findings

    summary = {"v": {"32": {"accuracy": {"mean": 0.7}}, "128": {"accuracy": {"mean": 0.65}},
                     "500": {"accuracy": {"mean": 0.8}}}}
    study = {"variants": ["v"], "pipelines": ["finetune"], "sizes": [32, 128, 500], "summary": summary, "paired": {}}
    assert findings(study) == ["`v` mean test accuracy: 32 texts 0.7000, 128 texts 0.6500, 500 texts 0.8000; "
                               "it dips from 32 to 128 texts."]


def test_findings_say_where_fine_tuning_overtakes_the_baseline():
    from textxfer.evaluation.study_report import findings

    def entry(accuracy):
        return {"accuracy": {"mean": accuracy}}

    summary = {"baseline": {"32": entry(0.60), "128": entry(0.70), "1000": entry(0.78)},
               "finetune": {"32": entry(0.55), "128": entry(0.74), "1000": entry(0.85)}}
    within = {"significant": False}
    paired = {"32": {"best": "baseline", "tests": {"finetune": within}},
              "128": {"best": "finetune", "tests": {"baseline": within}},
              "1000": {"best": "finetune", "tests": {"baseline": {"significant": True}}}}
    study = {"variants": ["baseline", "finetune"], "pipelines": ["baseline", "finetune"], "sizes": [32, 128, 1000],
             "summary": summary, "paired": paired}
    lines = findings(study)
    assert lines[0] == ("Fine-tuning's best variant is ahead of the best baseline in mean test accuracy from 128 "
                        "training texts on.")
    assert lines[1] == ("At 32 texts `baseline` is best (0.6000); within noise of it (McNemar, pooled over seeds, "
                        "p ≥ 0.05): `finetune`.")
    assert lines[3] == "At 1,000 texts `finetune` is best (0.8500); significantly below it: `baseline`."
    summary["finetune"]["1000"] = entry(0.70)
    assert findings(study)[0] == "Fine-tuning does not stay ahead of the baseline at the largest sizes studied."


FULL = "finetune:strategy=full,learning_rate=0.003,warmup=0,early_stopping=0"


def test_finetune_variant_cells_each_in_their_own_process(tmp_path, sample_csv, tiny_bert):
    output = tmp_path / "ft"
    ensemble = f"ensemble:{FULL}+finetune:strategy=head-only"
    assert main(["study", "--data", str(sample_csv), "--output", str(output), "--no-progress", "--variants",
                 ensemble, FULL, "finetune:strategy=head-only",
                 "--sizes", "60", "--seeds", "1", "--finetune-model", str(tiny_bert),  # default epochs: the floor raises them
                 "--finetune-batch-size", "8"]) == 0
    study = json.loads((output / "study.json").read_text(encoding="utf-8"))
    combined, full, head = sorted(study["cells"], key=lambda c: c["variant"])
    assert full["pipeline"] == "finetune" and full["size"] == 60 and isinstance(full["degenerate"], bool)
    assert (output / full["folder"] / "model.safetensors").is_file()
    # the ensemble cell: the two cells of its size and seed, their model files hard-linked (no second copy)
    assert combined["pipeline"] == "ensemble" and combined["variant"] == ensemble
    linked = output / combined["folder"] / "members" / "1-finetune" / "model.safetensors"
    assert linked.stat().st_ino == (output / full["folder"] / "model.safetensors").stat().st_ino
    assert not (linked.parent / "metrics.json").exists()  # the member's model files, not its run records
    gain = study["ensembles"][ensemble]["60"]
    best = max((full, head), key=lambda c: c["test"]["accuracy"])
    assert gain["best_member"] == best["variant"]
    assert gain["gain"]["mean"] == pytest.approx(combined["test"]["accuracy"] - best["test"]["accuracy"])
    # training against validation loss, per evaluation (the step floor's schedule: every 50 steps), in study.json/.md
    curve = full["loss_curve"]
    log = json.loads((output / full["folder"] / "trainer_log.json").read_text(encoding="utf-8"))
    assert [p["step"] for p in curve["evaluations"]] == [e["step"] for e in log if "eval_loss" in e]
    assert len(curve["evaluations"]) >= 2
    assert all(p["training_loss"] > 0 and p["validation_loss"] > 0 for p in curve["evaluations"])
    assert "loss_curve" not in head  # a fitted head logs no evaluations
    markdown = (output / "study.md").read_text(encoding="utf-8")
    assert "## What the ensembles add" in markdown and "## Training and validation loss" in markdown
    assert f"| `{FULL}` | 60 | 42 | {len(curve['evaluations'])} |" in markdown
    assert not (output / ".checkpoints").exists() or not any((output / ".checkpoints").iterdir())
    report = json.loads((output / head["folder"] / "report.json").read_text(encoding="utf-8"))
    assert report["fit"]["head_fit"]["chosen_by"] == "validation macro-F1"
    assert len(list((output / ".features").glob("*.safetensors"))) == 2  # the head-only cell's cached features


def _write_pid(path):
    Path(path).write_text(str(os.getpid()))


def _fail():
    raise TextxferError("this cell failed")


def _hog_and_die(mib):
    """Hold ``mib`` MiB (touched, so resident) for a moment, then die as the out-of-memory killer kills."""
    import signal
    import time

    block = bytearray(mib * 2**20)
    for i in range(0, len(block), 4096):
        block[i] = 1
    time.sleep(0.8)
    os.kill(os.getpid(), signal.SIGKILL)


def test_a_cell_in_a_child_process_runs_elsewhere_and_its_errors_come_back(tmp_path):
    from textxfer.evaluation.isolation import in_child_process

    in_child_process(_write_pid, tmp_path / "pid")
    assert int((tmp_path / "pid").read_text()) != os.getpid()
    with pytest.raises(TextxferError, match="this cell failed"):
        in_child_process(_fail)


def test_a_child_killed_by_the_os_comes_back_as_one_error_with_its_peak_memory():
    from textxfer.evaluation.isolation import ChildKilled, in_child_process

    with pytest.raises(ChildKilled) as caught:
        in_child_process(_hog_and_die, 300)
    assert caught.value.exit_code == -9
    assert 300 <= caught.value.peak_mib < 600  # the 300 MiB it held, seen from outside before it died
    assert "killed by SIGKILL" in caught.value.how and "out-of-memory killer" in caught.value.how
    assert "at a peak of 0.3 GB resident" in caught.value.how


def test_a_killed_cell_is_one_line_and_the_study_goes_on(tmp_path, sample_csv, tiny_bert, monkeypatch, capsys):
    """One fine-tuning cell's child is killed: the study logs one line naming the cell, its peak memory and what
    to change, reports the other cells (the variant's mean over the seeds left), and a second run retrains only it."""
    from textxfer.evaluation import study as study_module
    from textxfer.evaluation.isolation import ChildKilled

    victim = "n40-seed43"
    ran = []

    def fake_child(function, *arguments):  # in this process; the victim "dies" before training
        folder = Path(arguments[-1])
        ran.append(folder.name)
        if folder.name == victim:
            raise ChildKilled(-9, 5.2 * 1024)
        function(*arguments)

    monkeypatch.setattr(study_module, "in_child_process", fake_child)
    output = tmp_path / "killed"
    argv = ["study", "--data", str(sample_csv), "--output", str(output), "--no-progress", "--variants",
            "ensemble:baseline+finetune:strategy=head-only", "baseline", "finetune:strategy=head-only",
            "--sizes", "40", "--seeds", "2", "--finetune-model", str(tiny_bert), *FAST]
    assert main(argv) == 0
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if victim in line]
    killed = [line for line in lines if "killed by SIGKILL" in line]
    assert len(killed) == 1, lines
    assert "finetune:strategy=head-only" in killed[0] and "at a peak of 5.2 GB" in killed[0]
    assert "--max-length" in killed[0] and "--batch-size" in killed[0] and "study goes on" in killed[0]
    study = json.loads((output / "study.json").read_text(encoding="utf-8"))
    left_out = {(f["variant"], f["seed"]) for f in study["failed_cells"]}
    # the ensemble of that seed needs the killed member: left out too, saying why
    assert left_out == {("finetune:strategy=head-only", 43), ("ensemble:baseline+finetune:strategy=head-only", 43)}
    assert len(study["cells"]) == 4 and study["failed_cells"][0]["peak_mib"] == round(5.2 * 1024)
    head = study["summary"]["finetune:strategy=head-only"]["40"]["accuracy"]
    kept = [c for c in study["cells"] if c["variant"] == "finetune:strategy=head-only"]
    assert head["n"] == 1 and head["mean"] == pytest.approx(kept[0]["test"]["accuracy"])
    markdown = (output / "study.md").read_text(encoding="utf-8")
    assert "## Cells left out" in markdown and victim in markdown.split("## Cells left out")[1]
    assert any("2 of 6 cells did not finish" in line for line in out.splitlines())
    # Nothing else is lost: a second run trains the killed cell (and its ensemble) only
    monkeypatch.setattr(study_module, "in_child_process", lambda function, *a: (ran.append(Path(a[-1]).name), function(*a)))
    ran.clear()
    assert main(argv) == 0
    assert ran == [victim]
    study = json.loads((output / "study.json").read_text(encoding="utf-8"))
    assert len(study["cells"]) == 6 and not study["failed_cells"]


def test_degenerate_cells_are_flagged_in_the_report():
    variants = [Variant("finetune", "finetune")]
    records = [{"variant": "finetune", "pipeline": "finetune", "size": 32, "seed": s, "folder": f"cells/finetune/n32-seed{s}",
                "test": {"accuracy": 0.58, "macro_f1": 0.37}, "degenerate": s == 1, "fit_seconds": 1.0} for s in (1, 2)]
    summary = summarise(records, variants, [32])
    assert summary["finetune"]["32"]["degenerate_cells"] == 1
    study = {"variants": ["finetune"], "sizes": [32], "seeds": [1, 2], "train_size": 100, "test_size": 50,
             "cells": records, "summary": summary, "paired": {"32": {"best": "finetune", "tests": {}}},
             "findings": []}
    markdown = study_markdown(study)
    assert "0.5800 ± 0.0000 [0.580, 0.580] ⚠ 1/2 degenerate" in markdown
    assert "- `finetune`, 32 texts, seed 1: `cells/finetune/n32-seed1`" in markdown


def test_ensemble_variants_combine_the_cells_of_each_size_and_seed(tmp_path, sample_csv, capsys):
    output = tmp_path / "ens"
    argv = ["study", "--data", str(sample_csv), "--output", str(output), "--no-progress", "--variants",
            "ensemble:baseline+baseline:n_estimators=5", "baseline", "baseline:n_estimators=5",
            "--sizes", "40", "90", "--seeds", "2", *FAST]
    assert main(argv) == 0
    study = json.loads((output / "study.json").read_text(encoding="utf-8"))
    cells = {(c["variant"], c["size"], c["seed"]): c for c in study["cells"]}
    assert len(cells) == 12 and study["variants"][0] == "ensemble:baseline+baseline:n_estimators=5"
    for size in (40, 90):
        for seed in (42, 43):
            folder = output / cells[("ensemble:baseline+baseline:n_estimators=5", size, seed)]["folder"]
            manifest = json.loads((folder / "textxfer.json").read_text(encoding="utf-8"))
            assert manifest["kind"] == "ensemble" and sum(manifest["config"]["chosen_weights"]) == pytest.approx(1)
            trained_on = json.loads((folder / "split.json").read_text())["splits"]["train"]["rows"]
            member = output / cells[("baseline", size, seed)]["folder"]
            assert trained_on == json.loads((member / "split.json").read_text())["splits"]["train"]["rows"]
            assert (folder / "members" / "1-baseline" / "forest.skops").stat().st_ino == \
                (member / "forest.skops").stat().st_ino
    assert "`ensemble:baseline+baseline:n_estimators=5` against its best member" in " ".join(study["findings"])
    capsys.readouterr()
    stamps = {p: p.stat().st_mtime_ns for p in output.glob("cells/*/*/metrics.json")}
    assert main(argv) == 0  # everything finished: nothing is rebuilt
    assert "12 cells, 12 already finished" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in output.glob("cells/*/*/metrics.json")} == stamps
    import shutil

    shutil.rmtree(output / cells[("baseline", 40, 43)]["folder"])  # a member cell to retrain …
    assert main(argv) == 0
    assert "12 cells, 10 already finished" in capsys.readouterr().out  # … and its ensemble with it
    rebuilt = output / cells[("ensemble:baseline+baseline:n_estimators=5", 40, 43)]["folder"] / "metrics.json"
    assert rebuilt.stat().st_mtime_ns != stamps[rebuilt]


def refused_study(argv: list[str], capsys, *fragments: str) -> str:
    """Assert that ``textxfer study`` refuses ``argv`` with exit code 2 and one ``textxfer: error:`` line."""
    capsys.readouterr()
    code = main(["study", *argv])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("textxfer: error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in err, err
    return err


def test_ensemble_variant_refusals(sample_csv, tmp_path, capsys):
    for variants, message in [(["ensemble:baseline", "baseline"], "ensemble:<variant>+<variant>"),
                              (["ensemble:baseline+finetune", "baseline"], "not among --variants"),
                              (["ensemble:baseline+baseline", "baseline"], "names a member twice"),
                              (["ensemble:baseline+ensemble:x+y", "baseline"], "plain variants")]:
        refused_study(["--data", str(sample_csv), "--output", str(tmp_path / "study"), "--variants", *variants,
                       "--sizes", "40"], capsys, message, variants[0])
        assert not (tmp_path / "study").exists()


def test_study_refuses_a_repeated_variant(sample_csv, tmp_path, capsys):
    refused_study(["--data", str(sample_csv), "--output", str(tmp_path / "study"), "--variants", "baseline",
                   "baseline", "--sizes", "40"], capsys,
                  "--variants: ['baseline', 'baseline'] name the same variant twice")
    assert not (tmp_path / "study").exists()  # refused before any cell was trained



def test_the_estimate_scales_fine_tuning_by_planned_steps_not_texts(tmp_path):
    from textxfer.evaluation.study import Cell, estimate, planned_work

    variant = Variant("finetune", "finetune")
    done = Cell(variant, 32, 42)
    folder = tmp_path / "done"
    folder.mkdir()
    (folder / "report.json").write_text(json.dumps({"timing": {"fit_seconds": 300.0, "evaluate_seconds": 60.0}}))
    config = FinetuneConfig(pooling="cls")  # the defaults with first-token pooling: a 150-step floor at batch 16
    work = lambda cell: planned_work(cell, config)  # noqa: E731
    assert work(done) == 150 and work(Cell(variant, 500, 42)) == 160 and work(Cell(variant, 13_891, 42)) == 1738
    line = estimate([Cell(variant, 500, 43)], {done: folder}, work)
    assert "1 of them ≈ 6.3 min" in line  # 2 s per step × 160 steps + 60 s of scoring, not 300 s × 500/32
    head = Cell(Variant("finetune", "finetune:strategy=head-only"), 128, 42)
    assert planned_work(head, FinetuneConfig(strategy="head-only")) == 128
    # The defaults on the bundled (mean-pooled) encoder fit a head from 65 to 128 texts: work grows with the texts;
    # below 65 the pair stage comes first: its steps (2 × 20 pairs per text / batch 16).
    assert planned_work(Cell(variant, 100, 42), FinetuneConfig()) == 100
    assert planned_work(Cell(variant, 32, 42), FinetuneConfig()) == 80


def test_a_run_from_before_a_setting_existed_counts_as_what_it_did_then(trained_models, tmp_path):
    """An older manifest without ``pooling`` / ``text_prefix`` was first-token pooled with no prefix: reused for
    ``cls`` / ``none``, not for ``auto``."""
    import json
    import shutil
    from dataclasses import replace

    from textxfer.core.config import from_dict
    from textxfer.data.dataset import DataOptions, load_data
    from textxfer.transformer.pipeline import FinetuneConfig
    from textxfer.evaluation.runner import finished_run

    folder = tmp_path / "old"
    shutil.copytree(trained_models["finetune"], folder)
    manifest = json.loads((folder / "textxfer.json").read_text(encoding="utf-8"))
    config = from_dict(FinetuneConfig, {k: v for k, v in manifest["config"].items()
                                        if k not in ("resolved_max_length", "base_model", "resolved_text_prefix")})
    data = load_data(DataOptions(split=str(folder / "split.json")))
    assert finished_run(folder, "finetune", config, data)
    del manifest["config"]["pooling"], manifest["config"]["text_prefix"]
    (folder / "textxfer.json").write_text(json.dumps(manifest), encoding="utf-8")
    assert finished_run(folder, "finetune", replace(config, pooling="cls", text_prefix="none"), data)
    assert not finished_run(folder, "finetune", replace(config, pooling="auto", text_prefix="none"), data)
    assert not finished_run(folder, "finetune", replace(config, pooling="cls", text_prefix="auto"), data)


def test_a_finished_cell_whose_automatic_choices_changed_is_trained_again(tmp_path, monkeypatch):
    """Same settings, another recipe after an upgrade (auto's rule moved, the pooling rule, auto now searching on
    validation): not reused. A cell whose strategy a search chose stands whatever it chose."""
    from textxfer.transformer import auto_choice, recipe
    from textxfer.evaluation.study import Cell, same_automatic_choices

    folder = tmp_path / "cell"
    folder.mkdir()

    def recorded(strategy, pooling, search=None):
        (folder / "report.json").write_text(json.dumps({"fit": {"recipe": {"strategy": strategy, "pooling": pooling,
                                                                           **({"search": search} if search else {})}}}))

    searched = Cell(Variant("finetune", "finetune"), 100, 42)  # auto searches at 100 texts (a study has validation)
    recorded("head-only", "mean")  # chosen by the old rule, before the search
    assert not same_automatic_choices(folder, searched, FinetuneConfig())
    recorded("contrastive", "mean", {"winner": "contrastive"})
    assert same_automatic_choices(folder, searched, FinetuneConfig())
    recorded("contrastive", "cls", {"winner": "contrastive"})  # trained before mean pooling
    assert not same_automatic_choices(folder, searched, FinetuneConfig())
    # Above the search's range the rule by size decides, as before
    large = Cell(Variant("finetune", "finetune"), auto_choice.SEARCH_UP_TO + 100, 42)
    monkeypatch.setattr(recipe, "HEAD_ONLY_BELOW", 10**6)
    recorded("head-only", "mean")
    assert same_automatic_choices(folder, large, FinetuneConfig())
    monkeypatch.setattr(recipe, "HEAD_ONLY_BELOW", 50)  # the rule moved: the cell now fine-tunes
    assert not same_automatic_choices(folder, large, FinetuneConfig())
    recorded("freeze-embeddings", "cls")  # trained before mean pooling
    assert not same_automatic_choices(folder, large, FinetuneConfig())
    assert same_automatic_choices(folder, large, FinetuneConfig(pooling="cls"))
    (folder / "report.json").write_text("{}")  # no recipe recorded: trained again
    assert not same_automatic_choices(folder, large, FinetuneConfig(pooling="cls"))
    # A self-trained cell (--unlabelled) that kept its second model records that model's recipe, made for the
    # labelled plus pseudo-labelled texts (past the search's bound: the rule by size): it stands.
    small = Cell(Variant("finetune", "finetune"), 128, 42)
    monkeypatch.setattr(recipe, "HEAD_ONLY_BELOW", 129)
    (folder / "report.json").write_text(json.dumps({
        "fit": {"recipe": {"strategy": "freeze-embeddings", "pooling": "mean"}, "train_texts": 1128},
        "self_training": {"kept": "with"}}))
    assert same_automatic_choices(folder, small, FinetuneConfig())
    (folder / "report.json").write_text(json.dumps({
        "fit": {"recipe": {"strategy": "freeze-embeddings", "pooling": "mean"}, "train_texts": 128},
        "self_training": {"kept": "without"}}))  # kept the first model: its recipe must come from a search
    assert not same_automatic_choices(folder, small, FinetuneConfig())
    assert same_automatic_choices(folder, Cell(Variant("baseline", "baseline"), 64, 42), None)


def test_distill_variants_learn_from_their_teacher_cells_and_are_rebuilt_with_them(tmp_path, sample_csv, capsys):
    output = tmp_path / "distil"
    argv = ["study", "--data", str(sample_csv), "--output", str(output), "--no-progress", "--variants", "baseline",
            "distill:baseline@baseline", "--sizes", "40", "90", "--seeds", "1", *FAST]
    assert main(argv) == 0
    study = json.loads((output / "study.json").read_text(encoding="utf-8"))
    cells = {(c["variant"], c["size"]): c for c in study["cells"]}
    assert len(cells) == 4
    for size in (40, 90):
        student, teacher = (output / cells[(v, size)]["folder"] for v in ("distill:baseline@baseline", "baseline"))
        record = json.loads((student / "report.json").read_text(encoding="utf-8"))["distillation"]
        assert record["teacher"] == str(teacher) and record["training_texts"] == size
        assert json.loads((student / "textxfer.json").read_text(encoding="utf-8"))["kind"] == "baseline"
        rows = [json.loads((f / "split.json").read_text())["splits"]["train"]["rows"] for f in (student, teacher)]
        assert rows[0] == rows[1]
    capsys.readouterr()
    assert main(argv) == 0  # everything finished: nothing is rebuilt
    assert "4 cells, 4 already finished" in capsys.readouterr().out
    import shutil

    shutil.rmtree(output / cells[("baseline", 40)]["folder"])  # a teacher cell to retrain …
    assert main(argv) == 0
    assert "4 cells, 2 already finished" in capsys.readouterr().out  # … and its student with it


def test_distill_variant_refusals(sample_csv, tmp_path, capsys):
    for variants, message in [(["distill:tiny", "baseline"], "distill:<student>"),
                              (["distill:static@finetune", "baseline"], "not among --variants"),
                              (["distill:static,teacher=x", "baseline"], "not a name=value setting"),
                              (["distill:static,keep_every=x", "baseline"], "keep_every='x'")]:
        refused_study(["--data", str(sample_csv), "--output", str(tmp_path / "study"), "--variants", *variants,
                       "--sizes", "40"], capsys, message, variants[0])
        assert not (tmp_path / "study").exists()
