"""Sample-level leakage: which private training samples an attack reconstructs.

``ddcs_proxy`` is a *provisional* stand-in for DDCS (Li et al., AAAI 2025, SPECS 3): the
paper's exact formula was not available, so the score below follows its two stated
ingredients (distance to the nearest reconstruction, diversity/coverage) and is named
a proxy everywhere it is reported.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from jaxinv.metrics.distances import knn_radius, nearest


class SampleScores(NamedTuple):
    """Per private sample: ``dist`` to its nearest same-class reconstruction, ``hits``
    (reconstructions whose nearest private sample it is), ``tau`` (its k-NN radius in
    its class), ``score`` in [0, 1], and ``nearest_rec`` (index of that reconstruction).

    Example:
        >>> s = ddcs_proxy(np.array([[0.0], [1.0]]), [0, 0], np.array([[0.1]]), [0], k=1)
        >>> s._fields
        ('dist', 'hits', 'tau', 'score', 'nearest_rec')
        >>> s.hits, s.nearest_rec
        (array([1, 0], dtype=int32), array([0, 0], dtype=int32))
    """

    dist: np.ndarray
    hits: np.ndarray
    tau: np.ndarray
    score: np.ndarray
    nearest_rec: np.ndarray


def ddcs_proxy(priv_feats, priv_labels, rec_feats, rec_labels, *, k: int = 5,
               **kw) -> SampleScores:
    """Per-sample leakage score (a DDCS proxy), for every private sample ``x`` of class c:

    ``score(x) = 1[dist(x) < tau(x)] * hits(x) / |R_c| * exp(-dist(x) / tau(x))``, where
    ``dist(x)`` = Euclidean feature distance to the nearest reconstruction of class c,
    ``hits(x)`` = number of class-c reconstructions whose nearest class-c private sample
    is ``x``, ``tau(x)`` = distance from ``x`` to its k-th nearest class-c private sample.
    Samples of classes without reconstructions score 0 (``dist`` = inf). Score 0 means
    *resilient*. Invariant to the order of the reconstructions (up to exact ties).

    Example:
        >>> priv_f = np.array([[0.0], [1.0], [2.0], [10.0], [11.0], [12.0]])  # 1-d features
        >>> priv_y = np.array([0, 0, 0, 1, 1, 1])
        >>> rec_f, rec_y = np.array([[0.1], [0.2]]), np.array([0, 0])  # 2 of class 0
        >>> s = ddcs_proxy(priv_f, priv_y, rec_f, rec_y, k=1)
        >>> s.hits, s.dist.round(3), s.tau
        (array([2, 0, 0, 0, 0, 0], dtype=int32),
         array([0.1, 0.8, 1.8, inf, inf, inf], dtype=float32),
         array([1., 1., 1., 1., 1., 1.], dtype=float32))
        >>> s.score.round(3)  # 2/2 * exp(-0.1 / 1) for sample 0; class 1 was not attacked
        array([0.905, 0.   , 0.   , 0.   , 0.   , 0.   ], dtype=float32)
        >>> float((s.score == 0).mean())  # fraction of resilient samples
        0.8333333333333334
    """
    priv_labels, rec_labels = np.asarray(priv_labels), np.asarray(rec_labels)
    d2, near = nearest(priv_feats, rec_feats, query_labels=priv_labels, ref_labels=rec_labels,
                       desc="private -> reconstructions", **kw)
    dist = np.sqrt(d2)
    _, owner = nearest(rec_feats, priv_feats, query_labels=rec_labels, ref_labels=priv_labels,
                       desc="reconstructions -> private", **kw)
    hits = np.bincount(owner[owner >= 0], minlength=len(priv_labels)).astype(np.int32)
    tau = knn_radius(priv_feats, k, labels=priv_labels, **kw)
    n_rec = np.bincount(rec_labels, minlength=int(priv_labels.max()) + 1)[priv_labels]
    with np.errstate(divide="ignore", invalid="ignore"):
        score = np.where((dist < tau) & (n_rec > 0),
                         hits / np.maximum(n_rec, 1) * np.exp(-dist / tau), 0.0)
    return SampleScores(dist, hits, tau, np.nan_to_num(score).astype(np.float32), near)


def summarize(scores: SampleScores, labels, top: int = 16) -> dict:
    """Headline numbers of a :func:`ddcs_proxy` result: resilient fraction, ``exposed``
    (samples with a score above 0) out of ``samples``, mean and max score, the ``top``
    most exposed sample indices, and per-class resilient fraction and mean score.

    Example:
        >>> priv_f = np.array([[0.0], [1.0], [2.0], [10.0], [11.0], [12.0]])
        >>> priv_y = np.array([0, 0, 0, 1, 1, 1])
        >>> s = ddcs_proxy(priv_f, priv_y, np.array([[0.1], [0.2]]), np.array([0, 0]), k=1)
        >>> out = summarize(s, priv_y, top=3)
        >>> out["resilient_fraction"], out["score_max"], out["most_exposed"]
        (0.833..., 0.904..., [0])
        >>> out["per_class"]["1"]
        {'resilient_fraction': 1.0, 'score_mean': 0.0}
    """
    labels = np.asarray(labels)
    order = np.argsort(-scores.score, kind="stable")[:top]
    order = order[scores.score[order] > 0]
    per_class = {str(int(c)): {"resilient_fraction": float(np.mean(scores.score[labels == c]
                                                                    == 0)),
                               "score_mean": float(np.mean(scores.score[labels == c]))}
                 for c in np.unique(labels)}
    return {"resilient_fraction": float(np.mean(scores.score == 0)),
            "exposed": int(np.sum(scores.score > 0)), "samples": int(scores.score.size),
            "score_mean": float(np.mean(scores.score)),
            "score_max": float(np.max(scores.score)),
            "most_exposed": [int(i) for i in order],
            "per_class": per_class}


__all__ = ["SampleScores", "ddcs_proxy", "summarize"]
