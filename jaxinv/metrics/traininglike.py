""""Training-likeness" of inputs to a classifier: the three TLDR criteria, measured.

For inputs ``x`` with labels ``y`` and a trained classifier ``f`` (SPECS 2c):

* ``confidence``: ``softmax(f(x))[y]`` (training samples are fit confidently);
* ``perturbation_kl``: mean over ``draws`` Gaussian perturbations ``x' = x + sigma * e`` of
  ``KL(f(x) || f(x'))`` (training samples sit in flat regions: lower is more training-like);
* ``grad_norm``: ``|grad_theta CE(f_theta(x), y)|_2`` per sample (a trained net's loss is
  flat in its weights on its training data: lower is more training-like).

:func:`membership_score` folds the three into one number per sample (a z-score average,
oriented so that higher is more training-like, standardised on a reference set such as
real held-out samples); :func:`membership_auc` is the AUC of a score separating two sets
(training vs held-out samples: how much the criteria reveal membership).
"""

from __future__ import annotations

from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxinv.attacks.inversion_losses import kl_divergence, weight_grad_norm
from jaxinv.core import rng

DIAGNOSTICS = ("confidence", "perturbation_kl", "grad_norm")
CHUNK = 64  # samples per device call (per-sample weight gradients are memory hungry)


@partial(jax.jit, static_argnums=(0, 5))
def _diagnose(module, variables, x, y, key, draws, sigma):
    logits_fn = lambda v, a: module.apply(v, a)[0]
    logits = logits_fn(variables, x)
    logp = jax.nn.log_softmax(logits)
    conf = jnp.exp(jnp.take_along_axis(logp, y[:, None], -1)[:, 0])
    p = jnp.exp(logp)

    def one(k):
        xp = x + sigma * rng.normal(k, x.shape, x.dtype)
        return kl_divergence(p, logits_fn(variables, xp))

    kl = jnp.maximum(jnp.mean(jax.lax.map(one, jax.random.split(key, draws)), 0), 0.0)
    g = weight_grad_norm(logits_fn, variables, x, y)
    return conf, kl, g


def training_likeness(classifier: Any, x: np.ndarray, y: np.ndarray, *, sigma: float = 0.1,
                      draws: int = 8, seed: int = 0) -> dict[str, np.ndarray]:
    """Per-sample ``confidence``, ``perturbation_kl`` and ``grad_norm`` (``[N]`` each) of a
    :class:`jaxinv.models.Classifier` on images ``x [N, H, W, C]`` with labels ``y``.

    Example:
        >>> d = training_likeness(clf, x, y)
        >>> sorted(d), d["grad_norm"].shape
        (['confidence', 'grad_norm', 'perturbation_kl'], (16,))
    """
    x, y = np.asarray(x, np.float32), np.asarray(y, np.int32)
    shape = tuple(classifier.meta["input_shape"])
    if x.ndim != 4 or x.shape[1:] != shape or y.shape != x.shape[:1]:
        raise ValueError(f"training_likeness: want x [N, {', '.join(map(str, shape))}] and y "
                         f"[N]; got {list(x.shape)} and {list(y.shape)}")
    if draws < 1 or sigma < 0:
        raise ValueError(f"training_likeness: draws >= 1 and sigma >= 0, got {draws}, {sigma}")
    out: dict[str, list] = {k: [] for k in DIAGNOSTICS}
    key = jax.random.key(seed)
    for i in range(0, len(x), CHUNK):
        n = len(x[i:i + CHUNK])
        xs = np.concatenate([x[i:i + CHUNK], np.zeros((CHUNK - n, *shape), np.float32)])
        ys = np.concatenate([y[i:i + CHUNK], np.zeros(CHUNK - n, np.int32)])
        r = _diagnose(classifier.module, classifier.variables, xs, ys,
                      jax.random.fold_in(key, i), draws, sigma)
        for k, v in zip(DIAGNOSTICS, r, strict=True):
            out[k].append(np.asarray(v)[:n])
    return {k: np.concatenate(v) if v else np.zeros(0, np.float32) for k, v in out.items()}


def _oriented(d: dict[str, np.ndarray]) -> np.ndarray:
    """``[N, 3]``: higher = more training-like (confidence as a clipped log-odds)."""
    c = np.clip(d["confidence"].astype(np.float64), 1e-12, 1 - 1e-12)
    kl, g = (np.maximum(d[k].astype(np.float64), 0) + 1e-12 for k in ("perturbation_kl",
                                                                        "grad_norm"))
    return np.stack([np.log(c) - np.log1p(-c), -np.log(kl), -np.log(g)], -1)


def membership_score(d: dict[str, np.ndarray], reference: dict[str, np.ndarray]
                     ) -> np.ndarray:
    """One training-likeness score per sample of ``d``: the mean of the three oriented
    diagnostics (log-odds confidence, ``-log perturbation_kl``, ``-log grad_norm``), each
    standardised by the mean and std of ``reference`` (e.g. real held-out samples, so 0 is
    "as training-like as an unseen sample").

    Example:
        >>> d = training_likeness(clf, x, y)
        >>> bool(abs(membership_score(d, d).mean()) < 1e-6)  # standardised by itself: mean 0
        True
    """
    ref = _oriented(reference)
    return np.mean((_oriented(d) - ref.mean(0)) / (ref.std(0) + 1e-12), -1)


def membership_auc(members: np.ndarray, nonmembers: np.ndarray) -> float:
    """AUC of ``score`` separating ``members`` (higher) from ``nonmembers``: the
    Mann-Whitney U statistic over ``|members| * |nonmembers|`` (ties count 1/2).

    Example:
        >>> membership_auc(np.array([3.0, 4.0]), np.array([1.0, 3.0]))
        0.875
    """
    from scipy.stats import mannwhitneyu

    a, b = np.asarray(members, np.float64), np.asarray(nonmembers, np.float64)
    if not len(a) or not len(b) or not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("membership_auc: both sets need >= 1 finite score")
    return float(mannwhitneyu(a, b).statistic / (len(a) * len(b)))


def likeness_summary(d: dict[str, np.ndarray], reference: dict[str, np.ndarray]) -> dict:
    """Means of the diagnostics of ``d`` and of its :func:`membership_score` (vs
    ``reference``), JSON-ready.

    Example:
        >>> d = training_likeness(clf, x, y)
        >>> sorted(likeness_summary(d, d))
        ['confidence', 'grad_norm', 'membership_score', 'perturbation_kl']
    """
    out = {k: float(np.mean(d[k])) for k in DIAGNOSTICS}
    out["membership_score"] = float(np.mean(membership_score(d, reference)))
    return out


__all__ = ["DIAGNOSTICS", "likeness_summary", "membership_auc", "membership_score",
           "training_likeness"]
