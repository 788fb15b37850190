"""Membership metrics: ROC, AUC, TPR at a fixed FPR, balanced accuracy (LiRA's protocol)."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class ROC(NamedTuple):
    """False and true positive rates at every distinct threshold, from (0, 0) to (1, 1)."""

    fpr: np.ndarray
    tpr: np.ndarray


def roc(scores: np.ndarray, members: np.ndarray) -> ROC:
    """The ROC of ``scores`` (higher = member) against the 0/1 ``members`` labels
    (scikit-learn's ``roc_curve``; tied scores form one point).

    Example:
        >>> r = roc(np.array([0.9, 0.8, 0.3, 0.1]), np.array([1, 0, 1, 0]))
        >>> r.fpr.tolist(), r.tpr.tolist()
        ([0.0, 0.0, 0.5, 0.5, 1.0], [0.0, 0.5, 0.5, 1.0, 1.0])
    """
    from sklearn.metrics import roc_curve

    s = np.asarray(scores, np.float64).ravel()
    m = np.asarray(members).ravel().astype(bool)
    if s.shape != m.shape:
        raise ValueError(f"roc: scores {s.shape} and members {m.shape} differ in size")
    if not np.isfinite(s).all():
        raise ValueError("roc: scores hold NaN or inf")
    if m.all() or not m.any():
        raise ValueError("roc: need both members and non-members")
    fpr, tpr, _ = roc_curve(m, s, drop_intermediate=False)
    return ROC(fpr, tpr)


def auc(r: ROC) -> float:
    """Area under the ROC (trapezoids).

    Example:
        >>> auc(roc(np.array([2.0, 1.0]), np.array([1, 0])))
        1.0
    """
    from sklearn.metrics import auc as sk_auc

    return float(sk_auc(r.fpr, r.tpr))


def tpr_at_fpr(r: ROC, fpr: float) -> float:
    """The highest TPR among ROC points with FPR at most ``fpr`` (LiRA: ``fpr < 0.001``
    read as ``<=``).

    Example:
        >>> tpr_at_fpr(roc(np.array([3.0, 2.0, 1.0]), np.array([1, 0, 1])), 0.0)
        0.5
    """
    return float(r.tpr[r.fpr <= fpr].max())


def balanced_accuracy(r: ROC) -> float:
    """The best accuracy over thresholds on a balanced set: ``max(1 - (FPR + FNR) / 2)``.

    Example:
        >>> balanced_accuracy(roc(np.array([2.0, 1.0]), np.array([1, 0])))
        1.0
    """
    return float(np.max(1 - (r.fpr + (1 - r.tpr)) / 2))


def summary(scores: np.ndarray, members: np.ndarray) -> dict[str, float]:
    """AUC, TPR at 0.1% and 1% FPR, balanced accuracy and the counts.

    Example:
        >>> summary(np.array([2.0, 1.0]), np.array([1, 0]))["auc"]
        1.0
    """
    r = roc(scores, members)
    m = np.asarray(members).ravel().astype(bool)
    return {"auc": auc(r), "tpr_at_0.1%_fpr": tpr_at_fpr(r, 1e-3),
            "tpr_at_1%_fpr": tpr_at_fpr(r, 1e-2), "balanced_accuracy": balanced_accuracy(r),
            "members": int(m.sum()), "non_members": int((~m).sum())}


__all__ = ["ROC", "auc", "balanced_accuracy", "roc", "summary", "tpr_at_fpr"]
