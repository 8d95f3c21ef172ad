"""Out-of-fold probabilities for every audited text: no text is scored by a model that saw its label.

The default auditor is cheap: the frozen encoder's features (what ``--strategy head-only`` reads: the input of the
classifier's last linear layer), computed once, standardised, and a logistic regression per fold — its strength C
chosen on the data's own train/validation split, as the head-only fit chooses it (:mod:`textxfer.transformer.head_fit`).
Any model kind can audit instead (``--model baseline``, ``--model finetune`` with its flags): one fit per fold.
Folds are stratified (iteratively for multi-label rows) and seeded.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from textxfer.data.dataset import TextDataset
from textxfer.data.labels import LabelSet


def fold_indices(labels: LabelSet, targets: np.ndarray, folds: int, seed: int) -> list[np.ndarray]:
    """The held-out row indices of each of ``folds`` stratified folds (multi-label: iterative stratification)."""
    if labels.multi_label:
        from iterstrat.ml_stratifiers import MultilabelStratifiedKFold

        splitter = MultilabelStratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    else:
        from sklearn.model_selection import StratifiedKFold

        smallest = int(np.bincount(targets, minlength=len(labels))[np.bincount(targets, minlength=len(labels)) > 0].min())
        splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
        if smallest < folds:  # a class rarer than the folds: plain shuffled folds (sklearn would warn and skew)
            from sklearn.model_selection import KFold

            splitter = KFold(n_splits=folds, shuffle=True, random_state=seed)
    return [held for _, held in splitter.split(np.zeros((len(targets), 1)), targets)]


def frozen_features(config, dataset: TextDataset, labels: LabelSet, progress: bool = False):
    """``(features, model)``: what the classifier's last linear layer of ``config.model``, prepared as for a fit on
    ``dataset``'s texts, receives for each of them (float32, rows in ``dataset`` order), and that prepared model
    (its tokenizer and max length say how much of each text was read)."""
    from textxfer.transformer.head_fit import last_linear
    from textxfer.transformer.pipeline import FinetuneClassifier
    from textxfer.transformer.strategies import head_module
    from textxfer.transformer.training import classifier_inputs

    model = FinetuneClassifier(config)
    model.labels, model.shape = labels, dataset.shape
    model.prepare(dataset.inputs, progress)
    features = classifier_inputs(model, dataset.inputs, last_linear(head_module(model.model_)), config.feature_cache,
                                 progress)
    return features.reshape(len(dataset), -1), model


def regression_out_of_fold(features: np.ndarray, targets: np.ndarray, labels: LabelSet, held_out: list[np.ndarray],
                           c: float, seed: int, progress: bool = False) -> np.ndarray:
    """Out-of-fold probabilities of an L2 logistic regression (strength ``c``; multi-label: one per label) on
    standardised ``features``: each fold's rows scored by a regression fitted on the other folds."""
    from tqdm.auto import tqdm

    from textxfer.transformer.head_fit import estimator, fit_labels, label_probabilities

    x = _standardised(features)
    out = np.zeros((len(x), len(labels)))
    for held in tqdm(held_out, desc="audit folds", unit="fold", leave=False, disable=not progress):
        fit = np.setdiff1d(np.arange(len(x)), held)
        if labels.multi_label:
            out[held] = label_probabilities(fit_labels(c, x[fit], targets[fit], False, seed), x[held])
        else:
            model = estimator(c, False, seed).fit(x[fit], targets[fit])
            out[np.ix_(held, model.classes_)] = model.predict_proba(x[held])  # a class absent from a fold: 0
    return out


def choose_strength(features: np.ndarray, targets: np.ndarray, labels: LabelSet, is_validation: np.ndarray,
                    seed: int) -> tuple[float, str]:
    """The regression strength C as ``--strategy head-only`` chooses it: on the data's own validation rows
    (``is_validation``), else by cross-validation on the rest."""
    from textxfer.transformer.head_fit import choose_c, choose_c_multilabel

    x = _standardised(features)
    fit, held = ~is_validation, is_validation
    if labels.multi_label:
        c, _, how = choose_c_multilabel(x[fit], targets[fit], x[held] if held.any() else None, targets[held], False, seed)
    else:
        c, _, how = choose_c(x[fit], targets[fit], x[held] if held.any() else None, targets[held], len(labels), False,
                             seed)
    return c, how


def model_out_of_fold(make_model: Callable, dataset: TextDataset, labels: LabelSet, held_out: list[np.ndarray],
                      progress: bool = False, log=print) -> np.ndarray:
    """Out-of-fold probabilities of any model kind: ``make_model()`` fitted on the other folds, per fold."""
    out = np.zeros((len(dataset), len(labels)))
    for number, held in enumerate(held_out, start=1):
        fit = np.setdiff1d(np.arange(len(dataset)), held)
        log(f"audit: fold {number}/{len(held_out)}: training on {len(fit):,} texts, scoring {len(held):,}")
        model = make_model().fit(dataset.take(list(fit)), None, labels=labels, progress=progress)
        out[held] = model.predict_proba(dataset.take(list(held)).inputs)
    return out


def _standardised(features: np.ndarray) -> np.ndarray:
    x = np.asarray(features, dtype=np.float64)
    scale = x.std(axis=0)
    scale[scale == 0] = 1.0
    return (x - x.mean(axis=0)) / scale
