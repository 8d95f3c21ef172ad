"""Training and scoring runs on one split: the runner, the degenerate-model guard, ``compare`` (with its
ensemble column), ``textxfer ensemble``, ``study``, and their reports."""
