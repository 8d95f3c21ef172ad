"""Which distilled student to pick, in words (``textxfer models``, the serve page, the README say the same).

The figures are ``scripts/bench_distill.py``'s (BENCHMARKS.md, "Distilled students"): 2 CPU cores, the teacher the
bundled encoder fine-tuned at ``make demo``'s budget, the students trained on its labels of the training split.
"""

from __future__ import annotations

# student → when to pick it (kept short: it is printed as one line each)
PICK = {
    "shallow": "the accuracy of the teacher, faster: 3 of its 12 layers; exported to int8 ONNX (`textxfer export "
               "--quantize int8`) it is the one within 1.5 points — see BENCHMARKS.md for its speed",
    "static": "the most texts per second and the least memory, with no transformer at prediction (a night's "
              "millions of texts, a small server); a few points under the teacher",
    "baseline": "the word2vec + RandomForest baseline taught by the teacher's labels: as fast as the static student "
                "and further below the teacher; pick static unless you need a forest",
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
