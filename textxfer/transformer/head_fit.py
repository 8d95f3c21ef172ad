"""Feature extraction that really fits: the classifier's last linear layer fitted to convergence on
cached, frozen encoder features.

``--strategy head-only`` (with ``--head-solver logistic``, the default) runs the frozen model once per
text, keeps what its classifier's *last* ``Linear`` layer receives (BERT: the pooled output; RoBERTa:
the head's dense + tanh output), and fits an L2-regularised logistic regression on it (scikit-learn,
lbfgs, features standardised). The strength ``C`` is chosen on validation macro-F1 over a grid (no
validation split: stratified cross-validation on the training texts). The fitted weights — with the
standardisation folded in — are written into that ``Linear`` layer, so the result is an ordinary
fine-tuned folder: predict, serve and export work unchanged.
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


def _estimator(c: float, class_weighted: bool, seed: int):
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=c, max_iter=3000, class_weight="balanced" if class_weighted else None,
                              random_state=seed)


def _macro_f1(y_true: np.ndarray, y_pred: np.ndarray, num_labels: int) -> float:
    from sklearn.metrics import f1_score

    return float(f1_score(y_true, y_pred, labels=list(range(num_labels)), average="macro", zero_division=0))


def choose_c(train_x, train_y, validation_x, validation_y, num_labels: int, class_weighted: bool, seed: int):
    """``(C, scores, how)``: the C of the best validation macro-F1 (the smaller C on ties); without
    validation texts, of the best stratified k-fold cross-validated macro-F1 on the training texts
    (k = min(5, smallest class)); C = 1 when a class has a single training text."""
    scores = []
    if validation_x is not None and len(validation_x):
        for c in C_GRID:
            predicted = _estimator(c, class_weighted, seed).fit(train_x, train_y).predict(validation_x)
            scores.append({"C": c, "validation_macro_f1": round(_macro_f1(validation_y, predicted, num_labels), 6),
                           "validation_accuracy": round(float(np.mean(predicted == validation_y)), 6)})
        best = max(scores, key=lambda s: s["validation_macro_f1"])  # max keeps the first of equal scores
        return best["C"], scores, "validation macro-F1"
    folds = int(min(5, np.bincount(train_y)[np.bincount(train_y) > 0].min()))
    if folds < 2:
        return 1.0, scores, "default C = 1 (a class has a single training text, so no cross-validation)"
    from sklearn.model_selection import StratifiedKFold, cross_val_score

    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    for c in C_GRID:
        f1 = cross_val_score(_estimator(c, class_weighted, seed), train_x, train_y, cv=splitter, scoring="f1_macro")
        scores.append({"C": c, "cv_macro_f1": round(float(np.mean(f1)), 6)})
    best = max(scores, key=lambda s: s["cv_macro_f1"])
    return best["C"], scores, f"{folds}-fold cross-validated macro-F1 on the training texts"


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
    if len(set(train_y.tolist())) < 2:
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
    c, scores, how = choose_c(train_standard, train_y, validation_standard,
                              None if validation_y is None else np.asarray(validation_y), num_labels,
                              cfg.class_weighted, cfg.seed)
    model = _estimator(c, cfg.class_weighted, cfg.seed).fit(train_standard, train_y)
    weight, bias = linear_weights(model, scaler.mean_, scale, num_labels)
    with torch.no_grad():
        linear.weight.copy_(torch.as_tensor(weight, dtype=linear.weight.dtype))
        linear.bias.copy_(torch.as_tensor(bias, dtype=linear.bias.dtype))
    chosen = next((s for s in scores if s["C"] == c), {})
    best_f1 = chosen.get("validation_macro_f1")
    stats = {"strategy": "head-only", "head_solver": "logistic", "precision": "fp32",
             "device": str(next(classifier.model_.parameters()).device), "world_size": 1, "steps": 0,
             "train_seconds": round(time.perf_counter() - started, 2), "encode_seconds": round(encode_seconds, 2),
             "train_samples_per_second": None, "best_validation_macro_f1": best_f1,
             "trainable_parameters_at_end": int(linear.weight.numel() + linear.bias.numel()),
             "resumed_from": None,
             "head_fit": {"solver": "logistic regression (lbfgs, L2, standardised features)", "C": c,
                          "chosen_by": how, "features": int(train_x.shape[1]),
                          "iterations": int(np.max(model.n_iter_)), "grid": scores}}
    return scores, stats


def describe(stats: dict) -> str:
    """One line announcing the fitted head."""
    fit = stats["head_fit"]
    score = f" (validation macro-F1 {stats['best_validation_macro_f1']:.4f})" if stats["best_validation_macro_f1"] is not None else ""
    return (f"head-only: logistic regression on {fit['features']} frozen features per text, C = {fit['C']:.3g} "
            f"chosen by {fit['chosen_by']}{score}, {fit['iterations']} lbfgs iterations; written into the classifier layer")
