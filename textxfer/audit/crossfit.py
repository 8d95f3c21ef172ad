"""Out-of-fold probabilities for every audited text: no text is scored by a model that saw its label.

The cheap views, each fitted per fold on label-free features computed once for all texts:

- the frozen encoder's features (what ``--strategy head-only`` reads: the input of the classifier's last linear
  layer), standardised, and a logistic regression whose strength C is chosen on the data's own train/validation
  split, as the head-only fit chooses it (:mod:`textxfer.transformer.head_fit`);
- the same features, and a vote of the :data:`NEIGHBOURS` most similar texts of the other folds (cosine of the
  centred features), each weighted by ``exp(SHARPNESS · cosine)``;
- character 1–3-grams (TF-IDF, fitted on all audited texts: it reads no label) and a logistic regression, C chosen
  as above.

The default auditor averages the three (``scripts/bench_audit_views.py`` measured each alone and together). Any model
kind can audit instead (``--model baseline``, ``--model finetune`` with its flags): one fit per fold. Folds are
stratified (iteratively for multi-label rows) and seeded.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from textxfer.data.dataset import TextDataset
from textxfer.data.labels import LabelSet

NEIGHBOURS = 25  # texts of the other folds that vote on a text's label in the neighbour view
SHARPNESS = 10.0  # a neighbour's vote weighs exp(SHARPNESS · cosine): the nearest count most
NGRAM_FEATURES = 200_000  # the most frequent character 1–3-grams kept


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


def ngram_features(texts: list[str]):
    """Each text's character 1–3-grams (within words; sub-linear TF-IDF; the :data:`NGRAM_FEATURES` most frequent,
    seen in at least two texts) as a sparse float32 matrix — fitted on these texts alone, without their labels."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    vectorizer = TfidfVectorizer(analyzer="char_wb", ngram_range=(1, 3), min_df=2, sublinear_tf=True,
                                 max_features=NGRAM_FEATURES, dtype=np.float32)
    return vectorizer.fit_transform(texts)


def neighbour_out_of_fold(features: np.ndarray, targets: np.ndarray, labels: LabelSet, held_out: list[np.ndarray],
                          neighbours: int = NEIGHBOURS, sharpness: float = SHARPNESS, chunk: int = 1024) -> np.ndarray:
    """Out-of-fold probabilities of a similarity-weighted vote: each text's ``neighbours`` nearest texts of the other
    folds (cosine of the centred ``features``) vote for their labels, a vote weighing ``exp(sharpness · cosine)``;
    every class (multi-label: every label's yes and no) gets half an average vote, so no probability is 0.
    ``targets``: class indices, or multi-label 0/1 rows. Rows are scored ``chunk`` at a time (bounded memory)."""
    x = np.asarray(features, dtype=np.float32)
    x = x - x.mean(axis=0)
    x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    votes_of = np.asarray(targets, dtype=np.float32) if labels.multi_label else \
        np.eye(len(labels), dtype=np.float32)[targets]
    out = np.zeros((len(x), len(labels)))
    for held in held_out:
        fit = np.setdiff1d(np.arange(len(x)), held)
        k = min(neighbours, len(fit))
        for start in range(0, len(held), chunk):
            rows = held[start:start + chunk]
            similarity = x[rows] @ x[fit].T
            nearest = np.argpartition(-similarity, k - 1, axis=1)[:, :k]
            weight = np.exp(sharpness * (np.take_along_axis(similarity, nearest, axis=1) - 1.0))  # ≤ 1: no overflow
            votes = np.einsum("rk,rkl->rl", weight, votes_of[fit][nearest])
            prior = 0.5 * weight.mean(axis=1, keepdims=True)
            total = weight.sum(axis=1, keepdims=True) + prior * (2 if labels.multi_label else len(labels))
            out[rows] = (votes + prior) / total
    return out


def regression_out_of_fold(features, targets: np.ndarray, labels: LabelSet, held_out: list[np.ndarray],
                           c: float, seed: int, progress: bool = False) -> np.ndarray:
    """Out-of-fold probabilities of an L2 logistic regression (strength ``c``; multi-label: one per label) on
    ``features`` (dense: standardised first; sparse n-grams as they are): each fold's rows scored by a regression
    fitted on the other folds."""
    from tqdm.auto import tqdm

    from textxfer.transformer.head_fit import estimator, fit_labels, label_probabilities

    x = _prepared(features)
    out = np.zeros((x.shape[0], len(labels)))
    for held in tqdm(held_out, desc="audit folds", unit="fold", leave=False, disable=not progress):
        fit = np.setdiff1d(np.arange(x.shape[0]), held)
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

    x = _prepared(features)
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


def _prepared(features):
    """Dense features standardised; a sparse matrix (n-grams) as it is."""
    from scipy import sparse

    if sparse.issparse(features):
        return features.tocsr()
    x = np.asarray(features, dtype=np.float64)
    scale = x.std(axis=0)
    scale[scale == 0] = 1.0
    return (x - x.mean(axis=0)) / scale
