"""The shadow-model attack of Shokri, Stronati, Song and Shmatikov (S&P 2017, "Membership
Inference Attacks against Machine Learning Models"): one binary attack classifier per class,
trained on the shadow models' prediction vectors of that class's examples labelled IN / OUT,
then applied to the target model's prediction vectors.

As in the authors' code (``csong27/membership-inference``, ``attack.py`` and
``classifier.py``, commit f0222b50ecf9c8529e791cd979db22fa920290e6): the features are the full
softmax vector, unsorted (``sort=True`` sorts it in decreasing order, like the
class-agnostic features of Salem et al., NDSS 2019, who keep the top three); the attack model
is softmax regression by default there (``--attack_model softmax``; here
``classifier="logistic"``, scikit-learn's ``LogisticRegression``) or a one-hidden-layer
network (``"nn"``: 50 tanh units, Adam at learning rate 0.01, batch 100, 50 epochs; here
``classifier="mlp"``, scikit-learn's ``MLPClassifier`` with those settings), both with that
code's L2 weight 1e-6 on the mean loss. Their shadows train on data disjoint from the
target's; here every model is a shadow of the others (the LiRA protocol of
:func:`leave_one_out`). The score is the attack model's membership probability.
"""

from __future__ import annotations

import warnings

import numpy as np

CLASSIFIERS = ("logistic", "mlp")


def _classifier(name: str, rows: int, seed: int, l2: float = 1e-6):
    """scikit-learn's penalties set to ``l2 * ||W||^2`` added to the mean (batch) loss."""
    if name == "logistic":
        from sklearn.linear_model import LogisticRegression

        return LogisticRegression(C=1 / (2 * rows * l2), max_iter=1000)
    from sklearn.neural_network import MLPClassifier

    return MLPClassifier(hidden_layer_sizes=(50,), activation="tanh", solver="adam",
                         alpha=2 * min(rows, 100) * l2, learning_rate_init=0.01, batch_size=100,
                         max_iter=50, random_state=seed)


def _check(probs, labels) -> tuple[np.ndarray, np.ndarray]:
    probs, labels = np.asarray(probs, np.float64), np.asarray(labels)
    if labels.ndim != 1 or probs.ndim < 2 or probs.shape[-2] != len(labels):
        raise ValueError(f"shokri: want prediction vectors [..., N, K] and labels [N], got "
                         f"{probs.shape} and {labels.shape}")
    if not np.isfinite(probs).all():
        raise ValueError("shokri: prediction vectors hold NaN or inf")
    if labels.size and not (0 <= labels.min() and labels.max() < probs.shape[-1]):
        raise ValueError(f"shokri: labels must lie in [0, {probs.shape[-1]})")
    return probs, labels.astype(np.int64)


def shokri(probs: np.ndarray, labels: np.ndarray, shadow_probs: np.ndarray,
           shadow_keep: np.ndarray, *, classifier: str = "logistic", sort: bool = False,
           balance: bool = True, seed: int = 0) -> np.ndarray:
    """Membership probabilities (higher = member) of the target's prediction vectors
    ``probs [N, K]`` on examples with ``labels [N]``, from the shadow models' vectors
    ``shadow_probs [S, N, K]`` on the same examples and their membership ``shadow_keep [S, N]``:
    for each class, an attack classifier fit on that class's shadow rows.

    ``balance`` keeps, per example, as many IN rows as OUT rows (the first in model order).
    Without it, shadows sharing the target's examples leak its membership: with
    :func:`~jaxinv.membership.lira.keep_masks` an example IN for the target is IN for fewer of
    the others, and a classifier that recognises examples learns the *opposite* (on the tests'
    synthetic data without any membership signal: AUC 0.43 unbalanced, 0.50 balanced).

    Example:
        >>> rng = np.random.default_rng(0)
        >>> keep = rng.random((6, 40)) < 0.5
        >>> conf = np.where(keep, 0.95, 0.6) + rng.normal(0, 0.03, (6, 40))  # p of the label
        >>> probs = np.stack([conf, 1 - conf], -1)  # every example has label 0
        >>> s = shokri(probs[0], np.zeros(40, int), probs[1:], keep[1:])
        >>> bool(s[keep[0]].min() > s[~keep[0]].max())
        True
    """
    if classifier not in CLASSIFIERS:
        raise ValueError(f"shokri: classifier {classifier!r}: want one of {CLASSIFIERS}")
    from sklearn.exceptions import ConvergenceWarning

    probs, labels = _check(probs, labels)
    shadow_probs, _ = _check(shadow_probs, labels)
    shadow_keep = np.asarray(shadow_keep, bool)
    if (probs.ndim != 2 or shadow_probs.shape[1:] != probs.shape
            or shadow_keep.shape != shadow_probs.shape[:2]):
        raise ValueError(f"shokri: want probs [N, K], shadow_probs [S, N, K], shadow_keep "
                         f"[S, N]; got {probs.shape}, {shadow_probs.shape}, {shadow_keep.shape}")
    if sort:
        probs, shadow_probs = -np.sort(-probs, -1), -np.sort(-shadow_probs, -1)
    use = np.ones(shadow_keep.shape, bool)
    if balance:
        k = np.minimum(shadow_keep.sum(0), (~shadow_keep).sum(0))
        use = ((shadow_keep & (np.cumsum(shadow_keep, 0) <= k))
               | (~shadow_keep & (np.cumsum(~shadow_keep, 0) <= k)))
    scores = np.zeros(len(labels))
    for c in np.unique(labels):
        mine = labels == c
        rows = use & mine
        x, y = shadow_probs[rows], shadow_keep[rows]
        if y.all() or not y.any():
            raise ValueError(f"shokri: class {c} needs shadow examples both IN and OUT; train "
                             "more shadow models or use keep_masks")
        model = _classifier(classifier, len(y), seed)
        with warnings.catch_warnings():  # the authors' fixed epoch budget, not convergence
            warnings.simplefilter("ignore", category=ConvergenceWarning)
            model.fit(x, y)
        scores[mine] = model.predict_proba(probs[mine])[:, 1]
    return scores


def leave_one_out(probs: np.ndarray, labels: np.ndarray, keep: np.ndarray,
                  targets: list[int] | int, **kw) -> np.ndarray:
    """Attack each model in ``targets`` with all the *other* models as shadows; ``probs
    [M, N, K]`` are every model's prediction vectors, ``keep [M, N]`` their membership.
    ``[len(targets), N]`` scores, members ``keep[targets]``; ``kw`` go to :func:`shokri`.

    Example:
        >>> from jaxinv.membership.lira import keep_masks
        >>> from jaxinv.membership.metrics import summary
        >>> rng = np.random.default_rng(1)
        >>> keep = keep_masks(6, 60)
        >>> conf = np.where(keep, 0.9, 0.7) + rng.normal(0, 0.1, (6, 60))
        >>> probs = np.stack([conf, 1 - conf], -1)
        >>> summary(leave_one_out(probs, np.zeros(60, int), keep, 2), keep[:2])["auc"] > 0.8
        True
    """
    probs, keep = np.asarray(probs, np.float64), np.asarray(keep, bool)
    targets = list(range(targets)) if isinstance(targets, int) else list(targets)
    if probs.ndim != 3 or keep.shape != probs.shape[:2]:
        raise ValueError(f"shokri: want probs [M, N, K] and keep [M, N], got {probs.shape} "
                         f"and {keep.shape}")
    if not targets or min(targets) < 0 or max(targets) >= len(probs) or len(probs) - 1 < 2:
        raise ValueError(f"shokri: targets {targets} must index {len(probs)} models, with at "
                         "least 2 others as shadows")
    rest = lambda t: np.arange(len(probs)) != t
    return np.stack([shokri(probs[t], labels, probs[rest(t)], keep[rest(t)], **kw)
                     for t in targets])


__all__ = ["CLASSIFIERS", "leave_one_out", "shokri"]
