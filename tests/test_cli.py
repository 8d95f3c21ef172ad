"""The command line end to end, in subprocesses, on the small fixture."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

FAST = ["--vector-size", "16", "--epochs", "5", "--min-count", "1", "--n-estimators", "20", "--n-jobs", "1"]


def textxfer(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "textxfer.cli", *map(str, args)], capture_output=True,
                          text=True, cwd=cwd, timeout=300)


def test_baseline_end_to_end_and_split_reuse(tmp_path, reviews_csv):
    out = tmp_path / "run1"
    result = textxfer("baseline", "--data", reviews_csv, "--output", out, "--no-progress", *FAST)
    assert result.returncode == 0, result.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["test"]["n"] == 24 and metrics["test"]["accuracy"] >= 0.9
    assert "accuracy" in result.stdout and "test" in result.stdout
    again = textxfer("baseline", "--split", out / "split.json", "--output", tmp_path / "run2", "--no-progress", *FAST)
    assert again.returncode == 0, again.stderr
    assert json.loads((tmp_path / "run2" / "split.json").read_text())["splits"] == \
        json.loads((out / "split.json").read_text())["splits"]
    # one worker + the same seed: the same model in another process, so the same metrics
    assert json.loads((tmp_path / "run2" / "metrics.json").read_text()) == metrics


def test_config_file_and_flags(tmp_path, reviews_csv):
    config = tmp_path / "run.json"
    config.write_text(json.dumps({"data": str(reviews_csv), "n_estimators": 7, "vector_size": 12, "epochs": 2,
                                  "min_count": 1, "n_jobs": 1}))
    result = textxfer("baseline", "--config", config, "--vector-size", "10", "--output", tmp_path / "r", "--no-progress")
    assert result.returncode == 0, result.stderr
    manifest = json.loads((tmp_path / "r" / "textxfer.json").read_text())
    assert manifest["config"]["n_estimators"] == 7 and manifest["config"]["vector_size"] == 10
    config.write_text(json.dumps({"data": str(reviews_csv), "n_trees": 7}))
    bad = textxfer("baseline", "--config", config, "--output", tmp_path / "r2")
    assert bad.returncode == 2 and "unknown option(s) ['n_trees']" in bad.stderr


def test_errors_are_one_line_without_traceback(tmp_path, reviews_csv):
    result = textxfer("baseline", "--data", reviews_csv, "--label-column", "sentiment", "--output", tmp_path / "x")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("textxfer: error:") and "'sentiment'" in lines[0]
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "x").exists()


def test_help_and_baseline_do_not_import_torch(tmp_path, reviews_csv):
    code = (
        "import sys; from textxfer.cli import main; "
        f"main(['baseline', '--data', {str(reviews_csv)!r}, '--output', {str(tmp_path / 'o')!r}, '--no-progress', "
        + ", ".join(repr(a) for a in FAST) + "]); "
        "from textxfer import classifier; classifier.load(" + repr(str(tmp_path / "o")) + "); "
        "assert 'torch' not in sys.modules, 'torch was imported'"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("settings, message", [
    ({"n_estimators": "100"}, "option 'n_estimators' must be a whole number, got the string '100'"),
    ({"max_depth": 2.5}, "option 'max_depth' must be a whole number or none, got float 2.5"),
    ({"sg": "yes"}, "option 'sg' must be true or false, got the string 'yes'"),
    ({"n_jobs": True}, "option 'n_jobs' must be a whole number, got bool True"),
    ({"test_size": "0.2"}, "option 'test_size' must be a number, got the string '0.2'"),
    ({"text_column": 3}, "option 'text_column' must be a string, got int 3"),
])
def test_config_values_of_the_wrong_type_are_one_line(tmp_path, reviews_csv, capsys, settings, message):
    from textxfer.cli import main

    config = tmp_path / "run.json"
    config.write_text(json.dumps({"data": str(reviews_csv), **settings}))
    assert main(["baseline", "--config", str(config), "--output", str(tmp_path / "r"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and f"{config}: {message}" in err and not (tmp_path / "r").exists()


def test_config_sections_of_compare_are_type_checked_too(tmp_path, reviews_csv, capsys):
    from textxfer.cli import main

    config = tmp_path / "cmp.json"
    config.write_text(json.dumps({"data": str(reviews_csv), "finetune": {"epochs": "2"}}))
    assert main(["compare", "--config", str(config), "--output", str(tmp_path / "c"), "--no-progress"]) == 2
    assert f"{config} (finetune): option 'epochs' must be a number or none, got the string '2'" in capsys.readouterr().err


def _help(command: str) -> str:
    import contextlib
    import io

    from textxfer.cli import build_parser

    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        build_parser().parse_args([command, "--help"])
    return " ".join(out.getvalue().split())  # argparse wraps lines


@pytest.mark.parametrize("command", ["baseline", "finetune", "compare", "study"])
def test_help_says_each_default_once_and_shows_the_choices(command):
    text = _help(command)
    assert "(default:" in text
    assert not re.search(r"default:[^)]*\) \(default:", text)  # no flag says its default twice
    if command in ("baseline", "compare"):
        assert "{mean,tfidf,nb,nb-tfidf}" in text and "nb (by how strongly" in text  # the default is explained
    if command in ("finetune", "compare", "study"):
        assert "{auto,full,freeze-embeddings,head-only,gradual-unfreeze,contrastive}" in text


def test_none_is_accepted_where_the_help_offers_it(tmp_path):
    from textxfer.cli import build_parser

    args = build_parser().parse_args(["baseline", "--max-depth", "none", "--max-features", "0.5"])
    assert args.max_depth is None and args.max_features == "0.5"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["baseline", "--n-estimators", "none"])  # not optional: refused


def test_hyphenated_keys_work_in_compare_sections(tmp_path):
    from textxfer.core.config import read_config_file

    config = tmp_path / "c.json"
    config.write_text(json.dumps({"validation-size": 0.2, "baseline": {"n-estimators": 7}, "finetune": {"max-steps": 3}}))
    assert read_config_file(str(config)) == {"validation_size": 0.2, "baseline": {"n_estimators": 7},
                                             "finetune": {"max_steps": 3}}
    yaml_config = tmp_path / "c.yaml"
    yaml_config.write_text("baseline:\n  n-estimators: 7\n")
    assert read_config_file(str(yaml_config)) == {"baseline": {"n_estimators": 7}}


def test_config_file_errors_are_one_line(tmp_path):
    from textxfer.core.config import read_config_file
    from textxfer.errors import TextxferError

    broken = tmp_path / "broken.yaml"
    broken.write_text("baseline:\n  n-estimators: [7\n")
    with pytest.raises(TextxferError) as error:
        read_config_file(str(broken))
    assert "\n" not in str(error.value) and "broken.yaml: not a valid config file at line 3, column 1" in str(error.value)
    latin = tmp_path / "latin.json"
    latin.write_bytes('{"n_estimators": 5, "note": "caf\u00e9"}'.encode("latin-1"))
    with pytest.raises(TextxferError, match=r"latin.json: a config file must be UTF-8 text \(byte 0xe9 at offset 32"):
        read_config_file(str(latin))


def test_predict_names_its_batch_apart_from_training():
    from textxfer.cli import build_parser

    args = build_parser().parse_args(["predict", "--model", "m", "--predict-batch-size", "8", "x"])
    assert args.predict_batch_size == 8
    with pytest.raises(SystemExit):
        build_parser().parse_args(["predict", "--model", "m", "--batch-size", "8", "x"])
