"""The students of ``textxfer distill`` (:mod:`textxfer.distill.students`), made from a teacher run; the workflow that
trains and scores them is :mod:`textxfer.evaluation.distillation`."""
