"""Per-example statistics a membership attack reads off a model's logits."""

from __future__ import annotations

import numpy as np
from scipy.special import logsumexp


def _check(logits: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    logits = np.asarray(logits, np.float64)
    labels = np.asarray(labels)
    if logits.ndim < 2 or logits.shape[:-1] != labels.shape:
        raise ValueError(f"membership scores: logits [..., K] must match labels [...], got "
                         f"{logits.shape} and {labels.shape}")
    if not np.isfinite(logits).all():
        raise ValueError("membership scores: logits hold NaN or inf (a diverged model?)")
    if labels.size and not (0 <= labels.min() and labels.max() < logits.shape[-1]):
        raise ValueError(f"membership scores: labels must lie in [0, {logits.shape[-1]})")
    return logits, labels.astype(np.int64)


def logit_confidence(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """LiRA's statistic ``log p_y - log sum_{j != y} p_j``, computed from logits without
    forming probabilities (stable where ``p_y`` rounds to 1).

    Example:
        >>> logit_confidence(np.array([[2.0, 0.0, 0.0]]), np.array([0])).round(3)
        array([1.307])
    """
    logits, labels = _check(logits, labels)
    own = np.take_along_axis(logits, labels[..., None], -1)[..., 0]
    others = np.where(np.arange(logits.shape[-1]) == labels[..., None], -np.inf, logits)
    return own - logsumexp(others, axis=-1)


def neg_loss(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Minus the cross-entropy of each example (the LOSS attack's score: higher = member).

    Example:
        >>> neg_loss(np.array([[0.0, 0.0]]), np.array([1])).round(4)
        array([-0.6931])
    """
    logits, labels = _check(logits, labels)
    own = np.take_along_axis(logits, labels[..., None], -1)[..., 0]
    return own - logsumexp(logits, axis=-1)


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Prediction vectors ``softmax(logits / temperature)`` over the last axis (Shokri et al.'s
    attack features; RMIA's ``Pr(x|θ)`` is the true label's entry).

    Example:
        >>> softmax(np.array([[0.0, np.log(3.0)]])).round(4)
        array([[0.25, 0.75]])
    """
    if not temperature > 0:
        raise ValueError(f"softmax: temperature must be positive, got {temperature}")
    logits = np.asarray(logits, np.float64) / temperature
    if logits.ndim < 1 or not np.isfinite(logits).all():
        raise ValueError("softmax: logits hold NaN or inf (a diverged model?)")
    return np.exp(logits - logsumexp(logits, axis=-1, keepdims=True))


def true_class_probability(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """The softmax probability of each example's label (RMIA's ``Pr(x|θ)``): ``exp`` of
    :func:`neg_loss`.

    Example:
        >>> true_class_probability(np.array([[0.0, np.log(3.0)]]), np.array([1])).round(4)
        array([0.75])
    """
    return np.exp(neg_loss(logits, labels))


__all__ = ["logit_confidence", "neg_loss", "softmax", "true_class_probability"]
