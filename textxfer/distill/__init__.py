"""``textxfer distill``: students trained on a teacher run's soft labels (:mod:`textxfer.distill.run`)."""
