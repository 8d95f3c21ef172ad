"""Feature extraction that really fits: the classifier's last linear layer fitted to convergence on
cached, frozen encoder features.

``--strategy head-only`` (with ``--head-solver logistic``, the default) runs the frozen model once per
text, keeps what its classifier's *last* ``Linear`` layer receives (BERT: the pooled output; RoBERTa:
the head's dense + tanh output), and fits an L2-regularised logistic regression on it (scikit-learn,
lbfgs, features standardised). The strength ``C`` is chosen on validation macro-F1 over a grid (no
validation split: stratified cross-validation on the training texts). The fitted weights — with the
standardisation folded in — are written into that ``Linear`` layer, so the result is an ordinary
fine-tuned folder: predict, serve and export work unchanged.

Multi-label texts get one logistic regression per label (one-vs-rest, one shared ``C``), each label's weights
written into its own output of the layer, whose sigmoid is then that regression's probability. ``C`` is chosen by
validation micro-F1 at thresholds tuned on validation (what the finished model is judged by), or without a
validation split by the same figure over 3-fold out-of-fold probabilities.
"""

from __future__ import annotations

import time

import numpy as np

from textxfer.errors import TextxferError

# Regularisation strengths tried (ties go to the smaller C: the stronger regularisation).
C_GRID = tuple(float(c) for c in np.logspace(-4, 2, 13))
ABSENT_CLASS_BIAS = -30.0  # a class with no training text is never predicted


def last_linear(head):
    """The last ``torch.nn.Linear`` inside the classifier ``head`` (the head itself when it is one)."""
    import torch

    linears = [m for m in head.modules() if isinstance(m, torch.nn.Linear)]
    if not linears or linears[-1].bias is None:
        raise TextxferError(f"{type(head).__name__}: no linear layer with a bias in the classifier head; "
                            "use --head-solver trainer")
    return linears[-1]


def estimator(c: float, class_weighted: bool, seed: int):
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=c, max_iter=3000, class_weight="balanced" if class_weighted else None,
                              random_state=seed)


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray, num_labels: int) -> float:
    from sklearn.metrics import f1_score

    return float(f1_score(y_true, y_pred, labels=list(range(num_labels)), average="macro", zero_division=0))


def choose_c(train_x, train_y, validation_x, validation_y, num_labels: int, class_weighted: bool, seed: int):
    """``(C, scores, how)``: the C of the best validation macro-F1 (the smaller C on ties); without
    validation texts, of the best stratified k-fold cross-validated macro-F1 on the training texts
    (k = min(5, smallest class)); C = 1 when a class has a single training text."""
    scores = []
    if validation_x is not None and validation_x.shape[0]:
        for c in C_GRID:
            predicted = estimator(c, class_weighted, seed).fit(train_x, train_y).predict(validation_x)
            scores.append({"C": c, "validation_macro_f1": round(macro_f1(validation_y, predicted, num_labels), 6),
                           "validation_accuracy": round(float(np.mean(predicted == validation_y)), 6)})
        best = max(scores, key=lambda s: s["validation_macro_f1"])  # max keeps the first of equal scores
        return best["C"], scores, "validation macro-F1"
    folds = int(min(5, np.bincount(train_y)[np.bincount(train_y) > 0].min()))
    if folds < 2:
        return 1.0, scores, "default C = 1 (a class has a single training text, so no cross-validation)"
    from sklearn.model_selection import StratifiedKFold, cross_val_score

    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    for c in C_GRID:
        f1 = cross_val_score(estimator(c, class_weighted, seed), train_x, train_y, cv=splitter, scoring="f1_macro")
        scores.append({"C": c, "cv_macro_f1": round(float(np.mean(f1)), 6)})
    best = max(scores, key=lambda s: s["cv_macro_f1"])
    return best["C"], scores, f"{folds}-fold cross-validated macro-F1 on the training texts"


def fit_labels(c: float, x: np.ndarray, targets: np.ndarray, class_weighted: bool, seed: int) -> list:
    """One fitted regression per label column of 0/1 ``targets`` — or, for a label that is always 0 (1) in them,
    the constant ``False`` (``True``)."""
    return [estimator(c, class_weighted, seed).fit(x, column) if 0 < column.sum() < len(column) else bool(column[0])
            for column in targets.T]


def label_probabilities(models: list, x: np.ndarray) -> np.ndarray:
    return np.column_stack([m.predict_proba(x)[:, 1] if not isinstance(m, bool) else np.full(x.shape[0], float(m))
                            for m in models])


def choose_c_multilabel(train_x, targets, validation_x, validation_targets, class_weighted: bool, seed: int):
    """:func:`choose_c` for multi-label ``targets`` (``(n, labels)`` 0/1): by validation micro-F1 at thresholds tuned
    on validation, or without validation texts by that figure over 3-fold out-of-fold probabilities."""
    from textxfer.core.thresholds import tuned_micro_f1

    scores = []
    if validation_x is not None and validation_x.shape[0]:
        for c in C_GRID:
            probabilities = label_probabilities(fit_labels(c, train_x, targets, class_weighted, seed), validation_x)
            scores.append({"C": c, "validation_micro_f1": round(tuned_micro_f1(validation_targets, probabilities), 6)})
        best = max(scores, key=lambda s: s["validation_micro_f1"])
        return best["C"], scores, "validation micro-F1 (thresholds tuned on validation)"
    if len(targets) < 6:
        return 1.0, scores, "default C = 1 (too few training texts for cross-validation)"
    from sklearn.model_selection import KFold

    folds = list(KFold(n_splits=3, shuffle=True, random_state=seed).split(train_x))
    for c in C_GRID:
        out_of_fold = np.zeros(targets.shape)
        for fit_rows, held_rows in folds:
            models = fit_labels(c, train_x[fit_rows], targets[fit_rows], class_weighted, seed)
            out_of_fold[held_rows] = label_probabilities(models, train_x[held_rows])
        scores.append({"C": c, "cv_micro_f1": round(tuned_micro_f1(targets, out_of_fold), 6)})
    best = max(scores, key=lambda s: s["cv_micro_f1"])
    return best["C"], scores, "3-fold cross-validated micro-F1 on the training texts"


def label_weights(models: list, mean: np.ndarray, scale: np.ndarray, features: int) -> tuple[np.ndarray, np.ndarray]:
    """``(weight (labels × features), bias)`` whose sigmoid is each label's regression probability on *raw* features
    (the standardisation folded in); a constant label gets bias ±:data:`ABSENT_CLASS_BIAS`."""
    weight, bias = np.zeros((len(models), features)), np.zeros(len(models))
    for j, model in enumerate(models):
        if isinstance(model, bool):
            bias[j] = -ABSENT_CLASS_BIAS if model else ABSENT_CLASS_BIAS
            continue
        weight[j] = model.coef_[0] / scale
        bias[j] = model.intercept_[0] - weight[j] @ mean
    return weight, bias


def linear_weights(model, mean: np.ndarray, scale: np.ndarray, num_labels: int) -> tuple[np.ndarray, np.ndarray]:
    """``(weight (labels × features), bias)`` of a ``Linear`` layer computing the fitted logistic
    regression's decision function on *raw* features (the standardisation folded in). Binary: ±half the
    decision function, so the softmax equals the regression's probability."""
    coef, intercept = model.coef_ / scale, model.intercept_ - (model.coef_ / scale) @ mean
    weight = np.zeros((num_labels, coef.shape[1]))
    bias = np.full(num_labels, ABSENT_CLASS_BIAS)
    classes = [int(c) for c in model.classes_]
    if len(classes) == 2:
        weight[classes[0]], weight[classes[1]] = -coef[0] / 2, coef[0] / 2
        bias[classes[0]], bias[classes[1]] = -intercept[0] / 2, intercept[0] / 2
    else:
        weight[classes], bias[classes] = coef, intercept
    return weight, bias


def fit_head(classifier, train_texts, train_y, validation_texts, validation_y, features) -> tuple[list, dict]:
    """Fit ``classifier.model_``'s last head layer by logistic regression; returns ``(log, stats)``.

    ``features(texts, module)`` gives what ``module`` receives for each text (frozen model, cached).
    """
    import torch
    from sklearn.preprocessing import StandardScaler

    from textxfer.transformer.strategies import head_module

    cfg, num_labels = classifier.config, len(classifier.labels)
    train_y = np.asarray(train_y)
    multi = train_y.ndim == 2
    if not multi and len(set(train_y.tolist())) < 2:
        raise TextxferError("--strategy head-only needs training texts of at least two classes")
    linear = last_linear(head_module(classifier.model_))
    started = time.perf_counter()
    train_x = features(train_texts, linear)
    validation_x = features(validation_texts, linear) if validation_texts else None
    encode_seconds = time.perf_counter() - started
    scaler = StandardScaler().fit(train_x)
    scale = np.where(scaler.scale_ > 0, scaler.scale_, 1.0)
    train_standard = (train_x - scaler.mean_) / scale
    validation_standard = None if validation_x is None else (validation_x - scaler.mean_) / scale
    validation_y = None if validation_y is None else np.asarray(validation_y)
    if multi:
        c, scores, how = choose_c_multilabel(train_standard, train_y, validation_standard, validation_y,
                                             cfg.class_weighted, cfg.seed)
        models = fit_labels(c, train_standard, train_y, cfg.class_weighted, cfg.seed)
        weight, bias = label_weights(models, scaler.mean_, scale, train_x.shape[1])
        iterations = max([int(np.max(m.n_iter_)) for m in models if not isinstance(m, bool)], default=0)
    else:
        c, scores, how = choose_c(train_standard, train_y, validation_standard, validation_y, num_labels,
                                  cfg.class_weighted, cfg.seed)
        model = estimator(c, cfg.class_weighted, cfg.seed).fit(train_standard, train_y)
        weight, bias = linear_weights(model, scaler.mean_, scale, num_labels)
        iterations = int(np.max(model.n_iter_))
    with torch.no_grad():
        linear.weight.copy_(torch.as_tensor(weight, dtype=linear.weight.dtype))
        linear.bias.copy_(torch.as_tensor(bias, dtype=linear.bias.dtype))
    chosen = next((s for s in scores if s["C"] == c), {})
    metric = "micro_f1" if multi else "macro_f1"
    best_f1 = chosen.get(f"validation_{metric}")
    stats = {"strategy": "head-only", "head_solver": "logistic", "precision": "fp32",
             "device": str(next(classifier.model_.parameters()).device), "world_size": 1, "steps": 0,
             "train_seconds": round(time.perf_counter() - started, 2), "encode_seconds": round(encode_seconds, 2),
             "train_samples_per_second": None, f"best_validation_{metric}": best_f1,
             "trainable_parameters_at_end": int(linear.weight.numel() + linear.bias.numel()),
             "resumed_from": None,
             "head_fit": {"solver": "logistic regression (lbfgs, L2, standardised features"
                                    + ("; one per label)" if multi else ")"), "C": c,
                          "chosen_by": how, "features": int(train_x.shape[1]), "iterations": iterations,
                          "per_label": multi, "grid": scores}}
    return scores, stats


def describe(stats: dict) -> str:
    """One line announcing the fitted head."""
    fit = stats["head_fit"]
    name, value = next(((k, v) for k, v in stats.items() if k.startswith("best_validation_")), ("", None))
    score = f" (validation {name.split('_')[-2]}-F1 {value:.4f})" if value is not None else ""
    per_label = " per label" if fit.get("per_label") else ""
    return (f"head-only: logistic regression{per_label} on {fit['features']} frozen features per text, C = {fit['C']:.3g} "
            f"chosen by {fit['chosen_by']}{score}, {fit['iterations']} lbfgs iterations; written into the classifier layer")
