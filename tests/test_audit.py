"""``textxfer audit``: flipped labels are found out-of-fold, the other findings land on their planted rows, and the
input is never modified."""

from __future__ import annotations

import csv
import hashlib
import json
import random

import numpy as np
import pytest

from conftest import make_rows, write_csv
from textxfer.audit import crossfit, findings
from textxfer.cli import main
from textxfer.data.labels import LabelSet
from textxfer.errors import TextxferError

FAST_BASELINE = ["--baseline-vector-size", "16", "--baseline-min-count", "1", "--baseline-n-estimators", "30",
                 "--baseline-n-jobs", "1"]
OTHER = {"positive": "negative", "negative": "positive"}


def _flipped(tmp_path, n: int = 300, share: float = 0.05, seed: int = 3):
    """The fixture reviews with ``share`` of their labels flipped (seeded); returns the file and the flipped rows."""
    rows = make_rows(n)
    flipped = sorted(random.Random(seed).sample(range(n), round(share * n)))
    for i in flipped:
        rows[i] = (rows[i][0], OTHER[rows[i][1]])
    return write_csv(tmp_path / "flipped.csv", rows), {i + 1 for i in flipped}


def _read_csv(path):
    with open(path, encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def test_flipped_labels_lead_the_audit_and_the_test_split_is_left_alone(tmp_path, capsys):
    path, flipped = _flipped(tmp_path)
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    output = tmp_path / "audit"
    assert main(["audit", "--data", str(path), "--output", str(output), "--model", "baseline", "--no-progress",
                 "--fix-file", str(tmp_path / "fixed.csv"), *FAST_BASELINE]) == 0
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before  # the input is never modified
    rows = _read_csv(output / "audit.csv")
    split = json.loads((output / "audit.json").read_text(encoding="utf-8"))
    test_rows = {int(r["row"]) for r in rows if r["split"] == "test"}
    assert test_rows == set()  # the test split is never audited
    from textxfer.data.dataset import DataOptions, load_data

    data = load_data(DataOptions(data=str(path)))
    audited_flips = flipped - set(data.test.rows)
    k = len(audited_flips)
    top = [int(r["row"]) for r in rows[:k]]
    precision = len(set(top) & audited_flips) / k
    assert precision >= 0.7, (precision, top, sorted(audited_flips))
    # most suspect first: the contradicted labels by the out-of-fold probability of the given label, lowest first
    issues = [float(r["score"]) for r in rows if r["reason"].startswith("label-issue")]
    assert issues == sorted(issues) and rows[0]["reason"].startswith("label-issue")
    assert all(r["suggested_label"] == OTHER[r["given_label"]] for r in rows[:k] if int(r["row"]) in audited_flips)
    assert split["audited"] == len(data.train) + len(data.validation) and split["test_rows"] == len(data.test)
    assert split["auditor"]["out_of_fold_accuracy"] >= 0.85
    # the fix file: every input row, with the reasons of exactly the suspect rows
    fixed = _read_csv(tmp_path / "fixed.csv")
    assert len(fixed) == 300 and list(fixed[0]) == ["text", "label", "suspect"]
    marked = {i + 1: r["suspect"] for i, r in enumerate(fixed) if r["suspect"]}
    assert marked == {int(r["row"]): r["reason"] for r in rows}
    out = capsys.readouterr().out
    assert f"audit: {len(rows):,} of {split['audited']:,} texts suspect" in out
    markdown = (output / "audit.md").read_text(encoding="utf-8")
    assert f"| label-issue | {split['counts']['label-issue']:,} |" in markdown and "## The " in markdown


def test_planted_problems_land_on_their_rows(tmp_path, tiny_bert):
    rows = make_rows(160)
    rows[10] = (rows[20][0], OTHER[rows[20][1]])  # row 11: row 21's text under the other label
    rows[30] = ("！！！……", rows[30][1])  # row 31: no letter or digit
    rows[40] = ("The room was clean and the staff were kind, we would stay again", rows[40][1])  # row 41: English
    rows[50] = (rows[50][0] + "很" * 600, rows[50][1])  # row 51: longer than the tiny BERT reads
    rows[60] = (rows[60][0], "Positive" if rows[60][1] == "positive" else "Negative")  # row 61: a capital
    path = write_csv(tmp_path / "planted.csv", rows)
    output = tmp_path / "audit"
    assert main(["audit", "--data", str(path), "--output", str(output), "--no-progress", "--test-size", "0",
                 "--finetune-model", str(tiny_bert)]) == 0
    reasons = {int(r["row"]): r["reason"].split("; ") for r in _read_csv(output / "audit.csv")}
    assert "duplicate-conflict" in reasons[11] and "duplicate-conflict" in reasons[21]
    assert "empty" in reasons[31]
    assert "other-script" in reasons[41]
    assert "overlong" in reasons[51]
    assert "label-case" in reasons[61] and "thin-class" in reasons[61]  # 'Positive' is also a class of one text
    entry = next(r for r in _read_csv(output / "audit.csv") if int(r["row"]) == 61)
    assert entry["suggested_label"] == rows[60][1].lower()
    auditor = json.loads((output / "audit.json").read_text(encoding="utf-8"))["auditor"]  # the default: three views
    assert auditor["model"] == "auto" and set(auditor["out_of_fold_accuracy_per_view"]) == {"regression", "neighbours",
                                                                                            "ngrams"}
    assert "nearest-neighbour" in auditor["description"] and "character 1–3-grams" in auditor["description"]


def test_out_of_fold_probabilities_never_see_the_rows_own_label():
    # Flipping one row's label must leave its own out-of-fold probabilities unchanged (the folds held fixed), and
    # change those of rows in other folds (the label does reach the models that score them).
    rng = np.random.default_rng(0)
    features = rng.normal(size=(120, 6))
    targets = (features[:, 0] + 0.3 * rng.normal(size=120) > 0).astype(int)
    labels = LabelSet(("a", "b"))
    held_out = [np.arange(i, 120, 4) for i in range(4)]
    first = crossfit.regression_out_of_fold(features, targets, labels, held_out, 1.0, 0)
    changed = targets.copy()
    changed[0] = 1 - changed[0]
    second = crossfit.regression_out_of_fold(features, changed, labels, held_out, 1.0, 0)
    assert np.array_equal(first[held_out[0]], second[held_out[0]])
    assert not np.allclose(first[held_out[1]], second[held_out[1]])
    assert np.mean(first.argmax(axis=1) == targets) > 0.8  # and it learns


def test_the_other_cheap_views_never_see_the_rows_own_label_and_learn():
    # The neighbour vote and the n-gram regression: the same check as above, and each must learn (a vote that
    # counted its own row, or reversed its weights, fails one of the two).
    rng = np.random.default_rng(0)
    features = rng.normal(size=(120, 6))
    targets = (features[:, 0] + 0.3 * rng.normal(size=120) > 0).astype(int)
    labels = LabelSet(("a", "b"))
    held_out = [np.arange(i, 120, 4) for i in range(4)]
    changed = targets.copy()
    changed[0] = 1 - changed[0]
    vote = crossfit.neighbour_out_of_fold(features, targets, labels, held_out, neighbours=10)
    revote = crossfit.neighbour_out_of_fold(features, changed, labels, held_out, neighbours=10)
    assert np.array_equal(vote[held_out[0]], revote[held_out[0]]) and not np.allclose(vote, revote)
    assert np.allclose(vote.sum(axis=1), 1) and vote.min() > 0 and np.mean(vote.argmax(axis=1) == targets) >= 0.75
    texts = [("好 " if t else "差 ") + " ".join(rng.choice(["房间", "服务", "早餐", "位置"], size=3)) for t in targets]
    grams = crossfit.ngram_features(texts)
    first = crossfit.regression_out_of_fold(grams, targets, labels, held_out, 1.0, 0)
    second = crossfit.regression_out_of_fold(grams, changed, labels, held_out, 1.0, 0)
    assert np.array_equal(first[held_out[0]], second[held_out[0]])
    assert np.mean(first.argmax(axis=1) == targets) > 0.95
    multi = np.column_stack([targets, 1 - targets, targets])  # multi-label: each label's own vote
    both = crossfit.neighbour_out_of_fold(features, multi, LabelSet(("a", "b", "c"), multi_label=True), held_out,
                                          neighbours=10)
    assert both.shape == (120, 3) and np.allclose(both[:, 0], both[:, 2]) and np.allclose(both[:, 0] + both[:, 1], 1)
    assert np.mean((both[:, 0] > 0.5) == targets) >= 0.75


def test_label_issues_rank_the_contradicted_rows_first_single_and_multi_label():
    rng = np.random.default_rng(1)
    targets = rng.integers(0, 3, size=200)
    probabilities = np.full((200, 3), 0.05)
    probabilities[np.arange(200), targets] = 0.9
    wrong = [5, 50, 150]
    for i in wrong:  # the model is sure of another class
        probabilities[i] = 0.05
        probabilities[i, (targets[i] + 1) % 3] = 0.9
    flags, scores, ranked = findings.label_issues(targets, probabilities, ["x", "y", "z"], multi_label=False)
    assert sorted(ranked) == wrong and set(flags) == set(wrong)
    assert flags[50].suggested == ["x", "y", "z"][(targets[50] + 1) % 3] and scores[50] == pytest.approx(0.05)
    spread = probabilities.copy()  # row 7's given label gets the least probability, the other two split the rest
    spread[7] = 0.49
    spread[7, targets[7]] = 0.02
    _, _, ranked = findings.label_issues(targets, spread, ["x", "y", "z"], multi_label=False)
    assert ranked[0] == 7  # flagged, and first (cleanlab's default filter skips it: no class is confident for it)
    assert sorted(ranked) == sorted(wrong + [7])  # and the lowest-self-confidence filter alone would drop one of those
    indicators = np.zeros((200, 3), dtype=int)
    indicators[np.arange(200), targets] = 1
    sure = indicators * 0.9 + 0.05  # each label's probability agrees with the given set…
    sure[wrong] = 1 - sure[wrong]  # …except on the planted rows, where every label's is reversed
    flags, _, ranked = findings.label_issues(indicators, sure, ["x", "y", "z"], multi_label=True)
    assert sorted(ranked) == wrong
    assert flags[5].suggested == "|".join(n for j, n in enumerate("xyz") if j != targets[5])


def test_duplicates_scripts_and_text_problems():
    assert findings.normalised("  Hello, WORLD!! 🙂") == findings.normalised("hello world") == "helloworld"
    keys = [findings.normalised(t) for t in ["好酒店！", "好酒店", "差", "差。", "一般"]]
    flags = findings.conflicting_duplicates(keys, ["pos", "neg", "neg", "neg", "pos"], [1, 2, 3, 4, 5], None)
    assert set(flags) == {0, 1}  # 3 and 4 repeat each other under one label: no conflict
    features = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.001], [-1.0, 0.0]])
    near = findings.conflicting_duplicates(["a", "b", "c", "d"], ["x", "x", "y", "y"], [1, 2, 3, 4], features, 0.99)
    assert set(near) == {0, 2}
    assert [findings.script_of(t) for t in ["iPhone很好用", "Привет мир", "房间 clean and quiet", "🙂"]] == \
        ["CJK", "CYRILLIC", "LATIN", None]
    texts = ["房间很好"] * 9 + ["good room"]
    assert {i: f.reason for i, f in findings.text_problems(texts, None, None).items()} == {9: "other-script"}
    mixed = ["房间很好"] * 6 + ["good room"] * 4  # no script holds 80 %: nothing is "other"
    assert findings.text_problems(mixed, None, None) == {}


def test_audit_refusals_are_one_line(tmp_path, sample_csv):
    cases = [(["--folds", "1"], "--folds must be at least 2"),
             (["--fix-file", str(sample_csv)], "the input is never modified")]
    for extra, fragment in cases:
        with pytest.raises(TextxferError, match=fragment) as caught:
            from textxfer.audit.run import audit
            from textxfer.data.dataset import DataOptions

            audit(DataOptions(data=str(sample_csv)), tmp_path / "a", "baseline",
                  folds=int(extra[1]) if extra[0] == "--folds" else 5,
                  fix_file=extra[1] if extra[0] == "--fix-file" else None, progress=False, log=lambda *_: None)
        assert "\n" not in str(caught.value)


def test_multi_label_and_pair_data_are_audited_in_their_own_shape(tmp_path, tiny_bert):
    from conftest import make_multilabel_rows, make_pair_rows

    tags = write_csv(tmp_path / "tags.csv", make_multilabel_rows(200), header=("text", "tags"))
    assert main(["audit", "--data", str(tags), "--label-column", "tags", "--label-separator", "|", "--model", "baseline",
                 "--output", str(tmp_path / "ml"), "--no-progress", *FAST_BASELINE]) == 0
    rows = _read_csv(tmp_path / "ml" / "audit.csv")
    names = {"clean", "noisy", "value"}
    issues = [r for r in rows if "label-issue" in r["reason"]]
    assert issues and all(set(filter(None, r["suggested_label"].split("|"))) <= names for r in issues)
    assert all(r["suggested_label"] != r["given_label"] for r in issues)
    pairs = write_csv(tmp_path / "pairs.csv", make_pair_rows(120), header=("text", "second", "label"))
    assert main(["audit", "--data", str(pairs), "--text-pair-column", "second", "--output", str(tmp_path / "pairs"),
                 "--no-progress", "--finetune-model", str(tiny_bert)]) == 0
    header = list(_read_csv(tmp_path / "pairs" / "audit.csv")[0])
    assert header[:4] == ["split", "row", "text", "second_text"]
