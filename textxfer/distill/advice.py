"""Which distilled student to pick, in words (``textxfer models``, the serve page, the README say the same).

The figures are ``scripts/bench_distill.py``'s (BENCHMARKS.md, "Distilled students"): 2 CPU cores, one seed, the
teacher the bundled encoder fine-tuned at ``make demo``'s budget, the students trained on its labels of the training
split; the ranges span the sample reviews and the THUCNews headlines.
"""

from __future__ import annotations

# student → when to pick it (kept short: it is printed as one line each)
PICK = {
    "shallow": "closest to the teacher (0.9-1.7 points under it at 3.6-3.7x its speed); exported to int8 ONNX "
               "(`textxfer export --quantize int8`) 0.8-1.5 points under at 5.3-6.9x: CPU serving where accuracy "
               "comes first",
    "static": "the most texts per second (114-191x the teacher), the smallest folder (29-35 MiB), no transformer "
              "at prediction; 3.6-3.8 points under the teacher: millions of texts a night, a small server",
    "baseline": "as fast as static, but agrees with the teacher least (0.79-0.88 of the test texts): pick static "
                "unless you want a forest",
}


def lines() -> list[str]:
    """One line per student: ``--student NAME: when to pick it``."""
    return [f"--student {name}: {why}" for name, why in PICK.items()]


def serving_note(kind: str, distillation: dict | None) -> str | None:
    """The serve page's line about speed: what a distilled model is, or for a transformer on the CPU that a student
    can be made from it (None for the cheap kinds)."""
    if distillation:
        agreement = distillation.get("test_agreement_with_teacher")
        share = f"; it agrees with the teacher on {agreement:.1%} of the test texts" if agreement is not None else ""
        return f"a {distillation.get('student')} student distilled from {distillation.get('teacher')}{share}"
    if kind in ("finetune", "onnx", "ensemble"):
        return ("serving on CPUs? `textxfer distill --teacher <this run> --student static` (fastest) or `--student "
                "shallow` then `textxfer export --quantize int8` (closest to this model): see `textxfer models`")
    return None
