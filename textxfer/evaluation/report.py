"""The comparison report: McNemar's test, a Markdown/terminal table, its figures, a disagreements CSV.

Figures are drawn on a bare :class:`matplotlib.figure.Figure` with the Agg canvas (no pyplot, no
global backend switch). Label names in Chinese render with a CJK font when one is installed;
without one the default font is used and matplotlib's "Glyph missing" warnings are silenced.
"""

from __future__ import annotations

import csv
import functools
import itertools
import json
import subprocess
import textwrap
import unicodedata
import warnings
from pathlib import Path
from typing import Callable, Sequence

from textxfer.core.metrics import NO_ROWS, class_f1, format_f1, has_rows
from textxfer.transformer import loss_curve
from textxfer.errors import TextxferError
from textxfer.evaluation import report_calibration as calibration
from textxfer.evaluation import report_multilabel as multilabel

MARKDOWN, CONFUSION_PNG, COSTS_PNG = "comparison.md", "confusion_matrices.png", "metrics_costs.png"
TITLE_CHARACTERS_PER_INCH = 11  # characters of a 10-point title that fit in one inch of axes width
LOG_SCALE_RATIO = 20  # a cost panel whose largest value is this many times its smallest uses a log axis
_CJK_FAMILIES = ("Noto Sans CJK SC", "Noto Sans SC", "Source Han Sans SC", "WenQuanYi Zen Hei",
                 "WenQuanYi Micro Hei", "SimHei", "Microsoft YaHei", "PingFang SC", "Hiragino Sans GB",
                 "Heiti SC", "AR PL UMing CN", "Droid Sans Fallback", "Arial Unicode MS", "Noto Sans CJK JP")


def mcnemar(correct_a: Sequence[bool], correct_b: Sequence[bool], alpha: float = 0.05) -> dict:
    """McNemar's test on paired per-example correctness of model a and model b.

    With b = #(a right, b wrong) and c = #(a wrong, b right): b + c == 0 gives p = 1; b + c < 25
    uses the exact two-sided binomial test (statistic = min(b, c)); otherwise the continuity-corrected
    chi-square statistic max(|b - c| - 1, 0)² / (b + c) with one degree of freedom.
    """
    from scipy.stats import binomtest, chi2

    if len(correct_a) != len(correct_b):
        raise ValueError(f"mcnemar: {len(correct_a)} results for a but {len(correct_b)} for b")
    pairs = [(bool(x), bool(y)) for x, y in zip(correct_a, correct_b)]
    both, a_only = pairs.count((True, True)), pairs.count((True, False))
    b_only, neither = pairs.count((False, True)), pairs.count((False, False))
    total = a_only + b_only
    if total == 0:
        stat, p, method = 0.0, 1.0, "no discordant pairs"
    elif total < 25:
        stat, p, method = float(min(a_only, b_only)), binomtest(a_only, total, 0.5).pvalue, "exact binomial"
    else:
        stat = max(abs(a_only - b_only) - 1, 0) ** 2 / total
        p, method = chi2.sf(stat, 1), "chi-square (continuity-corrected)"
    p = min(float(p), 1.0)
    significant = p < alpha
    return {"n": len(pairs), "both_correct": both, "a_only_correct": a_only, "b_only_correct": b_only,
            "both_wrong": neither, "statistic": float(stat), "p_value": p, "method": method,
            "alpha": float(alpha), "significant": significant,
            "better": ("a" if a_only > b_only else "b") if significant else None}


def mcnemar_pairs(correct: dict[str, Sequence[bool]]) -> dict:
    """McNemar's test for every pair of models (``correct``: name → per-text correctness, in column order).

    Returns ``mcnemar_pairs`` (a list of ``{"a", "b", …test}``, in column order) and ``mcnemar``, the first
    pair's test (baseline against the fine-tuned model in ``compare``).
    """
    pairs = [{"a": a, "b": b, **mcnemar(correct[a], correct[b])} for a, b in itertools.combinations(correct, 2)]
    return {"mcnemar": {k: v for k, v in pairs[0].items() if k not in ("a", "b")} if pairs else None,
            "mcnemar_pairs": pairs}


def _fmt(v: float | None, spec: str) -> str:
    """``v`` formatted with ``spec``, or "n/a" when unknown."""
    return "n/a" if v is None else format(v, spec)


def _fmt4(v: float | None) -> str:
    return _fmt(v, ".4f")


def _rate(v: float | None) -> str:
    return _fmt(v, ",.0f" if v is not None and v >= 100 else ",.1f")


def _p(p: float) -> str:
    return "<1e-300" if p < 1e-300 else f"{p:.3g}"


def _n(k: int, word: str = "text") -> str:
    return f"{k:,} {word}" + ("" if k == 1 else "s")


def _main_rows(comparison: dict) -> list[list[str]]:
    """Header row + rows of the main table: scores (with a b − a column for two models), then costs."""
    models = comparison["models"]
    names = list(models)
    steps = list(zip(range(len(names)), range(1, len(names))))  # each model against the one before it
    rows = [["", *names] + [f"{names[j]} − {names[i]}" for i, j in steps]]
    metrics = [models[n]["metrics"] for n in names]
    if comparison.get("multi_label"):
        scores = multilabel.score_rows(comparison)
    else:
        scores = [(t, [m.get(k) for m in metrics], [_fmt4(m.get(k)) for m in metrics]) for t, k in
                  (("accuracy", "accuracy"), ("macro-F1", "macro_f1"), ("weighted-F1", "weighted_f1"))]
        # A class the test split has no row of has no F1 (0/0): NO_ROWS, not sklearn's 0.0, and no difference.
        scores += [(f"F1[{c}]", [class_f1(m, c) for m in metrics], [format_f1(m, c) for m in metrics])
                   for c in comparison["labels"]]
    if all(models[n].get("calibration") for n in names):  # lower is better: the calibrated probabilities' quality
        scores += [(title, values, [_fmt4(v) for v in values]) for title, values in calibration.score_rows(models)]
    for title, values, cells in scores:
        extra = ["n/a" if values[i] is None or values[j] is None else f"{values[j] - values[i]:+.4f}" for i, j in steps]
        rows.append([title, *cells, *extra])
    for title, get, fmt in _costs():
        rows.append([title, *(fmt(get(models[n])) for n in names)] + [""] * len(steps))
    return rows


def _costs() -> list[tuple[str, Callable[[dict], float | None], Callable[[float | None], str]]]:
    """(title, getter from a model entry, formatter) of the cost rows / panels."""
    one = functools.partial(_fmt, spec=",.1f")
    return [("training time (s)", lambda m: m.get("train_seconds"), one),
            ("predict texts/s", lambda m: m.get("predict_texts_per_second"), _rate),
            ("size on disk (MiB)", lambda m: m["size_bytes"] / 2**20 if m.get("size_bytes") is not None else None, one)]


def _width(s: str) -> int:
    """Terminal columns taken by ``s`` (wide CJK characters count twice)."""
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in s)


def comparison_table(comparison: dict) -> str:
    """The main table as aligned plain text (first column left-aligned, figures right-aligned)."""
    rows = _main_rows(comparison)
    widths = [max(_width(r[i]) for r in rows) for i in range(len(rows[0]))]
    pad = lambda s, w, i: s + " " * (w - _width(s)) if i == 0 else " " * (w - _width(s)) + s  # noqa: E731
    return "\n".join("  ".join(pad(c, w, i) for i, (c, w) in enumerate(zip(r, widths))).rstrip() for r in rows)


def _md_row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"


def mcnemar_sentence(comparison: dict, pair: dict | None = None) -> str:
    """McNemar's result in plain words (second model named first, as in the report): ``pair`` (an entry of
    ``mcnemar_pairs``) or else the first two models' ``mcnemar``."""
    a, b = (pair["a"], pair["b"]) if pair else list(comparison["models"])[:2]
    t = pair or comparison["mcnemar"]
    verdict = "significant" if t["significant"] else "not significant"
    text = (f"{b} is right where {a} is wrong on {_n(t['b_only_correct'])}, the reverse on {t['a_only_correct']:,}; "
            f"{t['method']} p = {_p(t['p_value'])} → the difference is {verdict} at α = {t['alpha']:g}")
    better = {"a": a, "b": b}.get(t.get("better") or "")
    return text + (f": {better} is better." if better else ".")


def comparison_markdown(comparison: dict) -> str:
    """The Markdown report: data line, main table, McNemar, per-class tables, figures, disagreements."""
    models, labels = comparison["models"], comparison["labels"]
    split = comparison.get("split") or {}
    sha = split.get("test_sha256")
    out = ["# Model comparison", "",
           f"Test split: {_n(comparison['test_rows'])}" + (f" from `{split['file']}`" if split.get("file") else "")
           + (f" (test sha256 `{sha[:12]}…`)" if sha else "") + "; labels: " + ", ".join(map(str, labels)) + ".", ""]
    out += [f"- **{n}**: {m.get('description') or n} " + (f"(`{m['folder']}`)" if m.get("folder") else
            f"(not saved as a model; to save it: `{m['build_command']}`)" if m.get("build_command") else "")
            for n, m in models.items()] + [""]
    for n, m in models.items():
        check = m.get("model_check") or {}
        if check.get("degenerate"):
            out += [f"> **Warning: {n} is degenerate** — " + "; ".join(check.get("reasons", [])) + ". Do not trust "
                    "its scores as a fair comparison.", ""]
        if (m.get("loss_curve") or {}).get("overfitting"):
            out += [f"> **Note: {n} — {m['loss_curve']['note']}** (see *Training and validation loss*).", ""]
    rows = _main_rows(comparison)
    out += ["## Scores and costs", "", _md_row(rows[0]), _md_row(["---"] + ["---:"] * (len(rows[0]) - 1))]
    out += [_md_row(r) for r in rows[1:]] + [""]
    out += [f"Costs of {n}: {m['costs_note']}." for n, m in models.items() if m.get("costs_note")] + [""]
    pairs = comparison.get("mcnemar_pairs") or ([None] if comparison.get("mcnemar") else [])
    if pairs and len(models) >= 2:
        out += ["## McNemar's test", ""]
        for pair in pairs:
            t = pair or comparison["mcnemar"]
            heading = [f"### {pair['b']} against {pair['a']}", ""] if len(pairs) > 1 else []
            out += heading + [mcnemar_sentence(comparison, pair), "",
                              f"Both right on {t['both_correct']:,}, both wrong on {t['both_wrong']:,}, of "
                              f"{_n(t['n'])}; statistic = {t['statistic']:.4g}.", ""]
    if comparison.get("bootstrap_pairs"):
        out += ["## Paired bootstrap on micro-F1", "", multilabel.WHY_BOOTSTRAP, ""]
        out += [line for pair in comparison["bootstrap_pairs"] for line in (multilabel.bootstrap_sentence(pair), "")]
    out += _weights_lines(models)
    out += calibration.markdown(models)
    curves = [line for n, m in models.items() if m.get("loss_curve")
              for line in loss_curve.markdown(m["loss_curve"], f"### {n}")]
    if curves:
        out += ["## Training and validation loss", "", "Per evaluation of the fine-tuning run (its Trainer log; "
                "training loss = the mean over the last logged steps).", "", *curves]
    out += ["## Per-class scores", ""]
    for name, m in models.items():
        thresholds = m.get("thresholds")  # multi-label: each label's threshold as applied (tuned, or --threshold)
        head = ["class", "precision", "recall", "F1", "support"] + (["threshold"] if thresholds else [])
        out += [f"### {name} — {m.get('description') or name}", "", _md_row(head),
                _md_row(["---"] + ["---:"] * (len(head) - 1))]
        for j, c in enumerate(labels):
            pc = m["metrics"].get("per_class", {}).get(c, {})
            recall = _fmt4(pc.get("recall")) if has_rows(m["metrics"], c) else NO_ROWS  # 0/0 without rows, as F1
            out.append(_md_row([c, _fmt4(pc.get("precision")), recall, format_f1(m["metrics"], c),
                                f"{pc['support']:,}" if "support" in pc else "n/a"]
                               + ([f"{thresholds[j]:.3f}"] if thresholds else [])))
        out.append("")
    first = (f"![F1 per label]({multilabel.PER_LABEL_PNG})" if comparison.get("multi_label")
             else f"![confusion matrices]({CONFUSION_PNG})")
    out += ["## Figures", "", first, "", f"![metrics and costs]({COSTS_PNG})", ""]
    dis = comparison.get("disagreements")
    if dis:
        out += ["## Disagreements", "", f"[{dis['file']}]({dis['file']}): {_n(dis['rows'], 'test text')} where the "
                "models disagree or both are wrong.", ""]
        why = dis.get("explained")
        if why:
            out += [f"[{why['file']}]({why['file']}): what each model read where the trained models disagree "
                    f"({why['disagreeing']:,} texts; {why['explained']:,} explained by {why['method']}).", ""]
    settings = comparison.get("settings") or {}
    if settings:
        out += ["## Settings", ""]
        for name, cfg in settings.items():
            line = json.dumps(cfg, ensure_ascii=False, sort_keys=True, default=str)
            out.append(f"- {name}: `{line if len(line) <= 300 else line[:299] + '…'}`")
        out.append("")
    return "\n".join(out)


def _weights_lines(models: dict) -> list[str]:
    """How each ensemble column's weights were chosen, with what the choice saw on validation."""
    out = []
    for name, m in models.items():
        selection, weights = m.get("selection") or {}, m.get("weights") or {}
        if not weights:
            continue
        chosen = ", ".join(f"{n} {w:.2f}" for n, w in weights.items())
        out += [f"## Ensemble weights ({name})", "", f"Weights {chosen}: " + (
            f"the lowest validation log loss over {selection.get('grid_points')} grid points; no test row is used."
            if selection.get("method") == "auto" else selection.get("note", selection.get("method", "")) + "."), ""]
        seen = selection.get("validation")
        if seen:
            named = [*zip(weights, seen["members"]), ("equal weights", seen["equal_weights"]),
                     ("chosen weights", seen["chosen"])]
            if "micro_f1" in seen["chosen"]:  # multi-label: micro-F1 at thresholds tuned on validation
                out += [_md_row(["on validation", "micro-F1 (tuned thresholds)", "log loss (binary)"]),
                        _md_row(["---"] + ["---:"] * 2)]
                out += [_md_row([n, _fmt4(f["micro_f1"]), _fmt4(f["log_loss"])]) for n, f in named]
            else:
                out += [_md_row(["on validation", "accuracy", "macro-F1", "log loss"]), _md_row(["---"] + ["---:"] * 3)]
                out += [_md_row([n, _fmt4(f["accuracy"]), _fmt4(f["macro_f1"]), _fmt4(f["log_loss"])]) for n, f in named]
            out.append("")
    return out


@functools.lru_cache(maxsize=1)
def _font_families() -> tuple[str, ...]:
    """DejaVu Sans first, then one installed CJK family (if any) for glyph fallback."""
    from matplotlib import font_manager

    known = {f.name for f in font_manager.fontManager.ttflist}
    cjk = [f for f in _CJK_FAMILIES if f in known]
    try:  # none known by name: ask fontconfig for a Chinese-capable font file and register it
        found = [] if cjk else subprocess.run(["fc-list", ":lang=zh", "file"], capture_output=True, text=True,
                                              timeout=10).stdout.splitlines()
        for path in (f.split(":")[0].strip() for f in found if f.lower().rstrip(": ").endswith(("tf", "ttc"))):
            font_manager.fontManager.addfont(path)
            cjk = [font_manager.FontProperties(fname=path).get_name()]
            break
    except (OSError, subprocess.SubprocessError, RuntimeError, ValueError):
        cjk = []
    return ("DejaVu Sans", *cjk[:1])


def draw_figure(path: Path, figsize: tuple[float, float], paint: Callable):
    """Create a Figure, let ``paint(fig)`` fill it, save it as PNG with the CJK-capable fonts; return it."""
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    with matplotlib.rc_context({"font.family": list(_font_families())}), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"Glyph .* missing from")
        fig = Figure(figsize=figsize, layout="constrained")
        FigureCanvasAgg(fig)
        paint(fig)
        fig.savefig(path, dpi=110)
    return fig


def plot_confusion_matrices(comparison: dict, path: Path | str):
    """The models' confusion matrices side by side: colour = row share, text = count and share; returns the Figure."""
    models, labels = comparison["models"], [str(c) for c in comparison["labels"]]
    k = len(labels)
    side, small = max(3.6, 0.55 * k + 2.2), max(5.0, 10 - 0.25 * k)
    tilt = k > 4 or max(map(_width, labels), default=0) > 8

    def paint(fig):
        for ax, (name, m) in zip(fig.subplots(1, len(models), squeeze=False)[0], models.items()):
            counts = m["metrics"]["confusion_matrix"]
            shares = [[v / sum(r) if sum(r) else 0.0 for v in r] for r in counts]
            ax.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
            for i in range(k):
                for j in range(k):
                    ax.text(j, i, f"{counts[i][j]:,}\n{shares[i][j]:.1%}", ha="center", va="center",
                            fontsize=small, color="white" if shares[i][j] > 0.55 else "black")
            ax.set_xticks(range(k), labels, rotation=45 if tilt else 0, ha="right" if tilt else "center")
            ax.set(yticks=range(k), yticklabels=labels, xlabel="predicted", ylabel="true")
            ax.set_title(_title(name, m, characters=int(side * TITLE_CHARACTERS_PER_INCH)), fontsize=10)

    return draw_figure(Path(path), (side * len(models) + 0.5, side + 0.9), paint)


def _title(name: str, model: dict, characters: int) -> str:
    """A confusion matrix's title: the model's name and description wrapped to ``characters``, then accuracy."""
    description = model.get("description") or ""
    head = f"{name}: {description}" if description and description != name else name
    lines = textwrap.wrap(head, width=max(characters, 12), break_on_hyphens=False) or [name]
    return "\n".join([*lines, f"accuracy {_fmt4(model['metrics'].get('accuracy'))}"])


def plot_metrics_costs(comparison: dict, path: Path | str):
    """Four panels, each on its own scale: accuracy & macro-F1, training time, predict speed, size.

    A cost panel whose values differ by ``LOG_SCALE_RATIO`` or more (a transformer's 42 texts/s beside a
    forest's 13,000) uses a log axis, so every bar stays visible. Returns the Figure.
    """
    models = comparison["models"]
    names = list(models)
    colours = [f"C{i}" for i in range(len(names))]

    def paint(fig):
        axes = fig.subplots(1, 4)
        width = 0.8 / len(names)
        headline = ("micro_f1", "micro-F1") if comparison.get("multi_label") else ("accuracy", "accuracy")
        for i, n in enumerate(names):
            met = models[n]["metrics"]
            xs = [x - 0.4 + width * (i + 0.5) for x in range(2)]
            bars = axes[0].bar(xs, [met.get(headline[0]) or 0.0, met.get("macro_f1") or 0.0], width,
                               color=colours[i], label=n)
            axes[0].bar_label(bars, fmt="%.4f", fontsize=7, padding=2)
        axes[0].set(xticks=[0, 1], xticklabels=[headline[1], "macro-F1"], ylim=(0, 1.25), title="scores")
        axes[0].legend(fontsize=7, loc="upper center", ncols=len(names))
        for ax, (title, get, fmt) in zip(axes[1:], _costs()):
            values = [get(models[n]) for n in names]
            known = [v for v in values if v]
            log = len(known) > 1 and max(known) / min(known) >= LOG_SCALE_RATIO  # else the small bar is invisible
            bars = ax.bar(names, [v or 0.0 for v in values], color=colours, log=log)
            ax.bar_label(bars, labels=[fmt(v) for v in values], fontsize=7, padding=2)
            if log:
                ax.set(ylim=(min(known) / 3, max(known) * 4), title=f"{title}, log scale")
            else:
                ax.set(ylim=(0, max(known or [1.0]) * 1.15), title=title)
            ax.tick_params(axis="both", labelsize=8)
            ax.yaxis.set_major_formatter("{x:,g}")

    return draw_figure(Path(path), (13.0, 3.8), paint)


def write_report(comparison: dict, folder: Path) -> dict[str, str]:
    """Write ``comparison.md`` and the PNGs (confusion matrices or per-label F1, metrics and costs, and the
    reliability diagram when the models carry calibration figures) into ``folder``; return role → file name."""
    folder = Path(folder)
    files = {"markdown": MARKDOWN, **({"per_label_png": multilabel.PER_LABEL_PNG} if comparison.get("multi_label")
                                      else {"confusion_png": CONFUSION_PNG}), "costs_png": COSTS_PNG}
    try:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / MARKDOWN).write_text(comparison_markdown(comparison), encoding="utf-8")
        if comparison.get("multi_label"):
            multilabel.plot_per_label_f1(comparison, folder / multilabel.PER_LABEL_PNG, draw_figure)
        else:
            plot_confusion_matrices(comparison, folder / CONFUSION_PNG)
        plot_metrics_costs(comparison, folder / COSTS_PNG)
        if any(m.get("calibration") for m in comparison["models"].values()):
            calibration.plot_reliability(comparison, folder / calibration.RELIABILITY_PNG, draw_figure)
            files["reliability_png"] = calibration.RELIABILITY_PNG
    except OSError as exc:
        raise TextxferError(f"cannot write the comparison report into {folder}: {exc}") from exc
    return files


def write_disagreements(path: Path | str, texts: Sequence[str], true_labels: Sequence, predictions: dict[str, list],
                        probabilities: dict[str, list] | None = None, rows: list[int] | None = None,
                        second_texts: Sequence[str] | None = None) -> int:
    """CSV of the rows where the models disagree or all are wrong; returns how many rows were written.

    Columns: row, text (and second_text, for text pairs), true_label, ``<model>_label`` and ``<model>_score``
    (probability of the predicted label, 4 decimals — or a string given as is, such as a multi-label row's
    probabilities — empty when unknown) per model, case ("disagree: <model> right" or "both wrong").
    ``rows`` gives each text's row number (default: its index).
    """
    names = list(predictions)
    probabilities = probabilities or {}
    lengths = {len(texts), len(true_labels), *(len(p) for p in predictions.values()),
               *(len(p) for p in probabilities.values()), *([len(rows)] if rows is not None else [])}
    if len(lengths) > 1:
        raise ValueError(f"write_disagreements: sequences of different lengths {sorted(lengths)}")
    pair = ["second_text"] if second_texts is not None else []
    header = ["row", "text", *pair, "true_label"] + [f"{n}_{col}" for n in names for col in ("label", "score")] + ["case"]
    written = 0
    try:
        with open(path, "w", encoding="utf-8", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(header)
            for i, (text, truth) in enumerate(zip(texts, true_labels)):
                preds = [predictions[n][i] for n in names]
                right = [n for n, p in zip(names, preds) if p == truth]
                if len(right) == len(names):
                    continue
                case = ("disagree: " + " & ".join(right) + " right") if right else \
                    ("both wrong" if len(names) == 2 else "all wrong")
                cells = [x for n, p in zip(names, preds) for x in (p, _score_cell(probabilities.get(n), i))]
                second = [second_texts[i]] if second_texts is not None else []
                writer.writerow([rows[i] if rows is not None else i, text, *second, truth, *cells, case])
                written += 1
    except OSError as exc:
        raise TextxferError(f"cannot write {path}: {exc}") from exc
    return written


def _score_cell(scores: Sequence | None, i: int) -> str:
    if scores is None:
        return ""
    return scores[i] if isinstance(scores[i], str) else f"{scores[i]:.4f}"
