"""A non-learned identity check: the nearest private image by normalised correlation.

No evaluation classifier is involved, so the rate cannot be an artefact of a weak or
biased evaluator: a reconstruction "finds" its class if the most correlated private
training image (pixels, each image mean-centred and L2-normalised, all classes
searched) carries that class.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np


def _normalise(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a, np.float32).reshape(len(a), -1)
    a = a - a.mean(1, keepdims=True)
    return a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-8)


@partial(jax.jit, static_argnums=())
def _best(q: jax.Array, r: jax.Array, best: jax.Array, arg: jax.Array, offset: jax.Array):
    c = q @ r.T
    i = jnp.argmax(c, 1)
    v = jnp.take_along_axis(c, i[:, None], 1)[:, 0]
    better = v > best
    return jnp.where(better, v, best), jnp.where(better, i + offset, arg)


def nearest_correlated(queries: np.ndarray, refs: np.ndarray, *, chunk: int = 4096
                       ) -> np.ndarray:
    """Index of the most correlated ``refs`` image for every query (mean-centred,
    normalised pixels; chunked over the references to bound memory).

    Example:
        >>> refs = np.random.default_rng(0).random((5, 4, 4, 1))
        >>> nearest_correlated(refs[[3, 1]] * 2 + 0.1, refs).tolist()
        [3, 1]
    """
    q, r = _normalise(queries), _normalise(refs)
    if q.shape[1] != r.shape[1]:
        raise ValueError(f"queries and refs differ in size: {queries.shape[1:]} vs "
                         f"{refs.shape[1:]}")
    out = []
    for s in range(0, len(q), chunk):
        qs = jnp.asarray(q[s:s + chunk])
        best = jnp.full(len(qs), -jnp.inf)
        arg = jnp.zeros(len(qs), jnp.int32)
        for o in range(0, len(r), chunk):
            best, arg = _best(qs, jnp.asarray(r[o:o + chunk]), best, arg, jnp.int32(o))
        out.append(np.asarray(arg))
    return np.concatenate(out)


def nearest_identity_rate(rec: np.ndarray, rec_labels: np.ndarray, private: np.ndarray,
                          private_labels: np.ndarray) -> float:
    """Share of reconstructions whose most correlated private image has their class.

    Example:
        >>> x = np.random.default_rng(0).random((6, 4, 4, 1)); y = np.arange(6) % 3
        >>> nearest_identity_rate(x + 0.01, y, x, y)
        1.0
    """
    idx = nearest_correlated(rec, private)
    return float(np.mean(np.asarray(private_labels)[idx] == np.asarray(rec_labels)))
