"""Chunked nearest-neighbour primitives in jitted JAX (squared Euclidean distances).

Every function walks ``queries`` in chunks from the host (one jitted call per chunk,
a progress bar between calls) and, inside the call, ``refs`` in chunks with
``lax.scan`` keeping running minima, so memory is ``O(chunk * ref_chunk)`` whatever the
sizes: 60,000 x 10,000 distances need a few hundred MiB.

``labels`` restrict each query to the refs of its own label (class-conditional metrics).
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

QUERY_CHUNK = 2048
REF_CHUNK = 4096


def _sq_dists(q: jax.Array, r: jax.Array) -> jax.Array:
    d = jnp.sum(q * q, 1)[:, None] + jnp.sum(r * r, 1)[None, :] - 2.0 * (q @ r.T)
    return jnp.maximum(d, 0.0)


def _prepare(queries, refs, query_labels, ref_labels, ref_chunk):
    q = np.asarray(queries, np.float32).reshape(len(queries), -1)
    r = np.asarray(refs, np.float32).reshape(len(refs), -1)
    if q.shape[1] != r.shape[1]:
        raise ValueError(f"queries and refs differ in dimension: {q.shape[1]} vs {r.shape[1]}")
    if len(r) == 0 or len(q) == 0:
        raise ValueError(f"need at least one query and one ref, got {len(q)} and {len(r)}")
    if (query_labels is None) != (ref_labels is None):
        raise ValueError("give both query_labels and ref_labels, or neither")
    ql = np.zeros(len(q), np.int32) if query_labels is None else np.asarray(query_labels, np.int32)
    rl = np.zeros(len(r), np.int32) if ref_labels is None else np.asarray(ref_labels, np.int32)
    if ql.shape != (len(q),) or rl.shape != (len(r),):
        raise ValueError(f"labels must be [N]: got {ql.shape} for {len(q)} queries, "
                         f"{rl.shape} for {len(r)} refs")
    rc = min(ref_chunk, len(r))
    pad = -len(r) % rc
    r = np.concatenate([r, np.zeros((pad, r.shape[1]), np.float32)])
    rl = np.concatenate([rl, np.full(pad, -1, np.int32)])  # -1: never a query's label
    return q, ql, r.reshape(-1, rc, r.shape[1]), rl.reshape(-1, rc)


def _blocks(q_all, ql_all, chunk, fn, progress, desc):
    """Run ``fn(q_chunk, ql_chunk)`` over query chunks (last one padded), concatenate."""
    n = len(q_all)
    c = min(chunk, max(n, 1))
    pad = -n % c
    q_all = np.concatenate([q_all, np.zeros((pad, q_all.shape[1]), np.float32)])
    ql_all = np.concatenate([ql_all, np.zeros(pad, np.int32)])
    starts = range(0, len(q_all), c)
    if progress:
        from tqdm.auto import tqdm
        starts = tqdm(starts, desc=desc, unit="chunk", leave=False)
    outs = [fn(q_all[i:i + c], ql_all[i:i + c]) for i in starts]  # async dispatch
    outs = jax.device_get(outs)
    return jax.tree.map(lambda *a: np.concatenate(a)[:n], *outs)


@partial(jax.jit, static_argnames="k")
def _topk_block(q, ql, r, rl, offset, k):
    """Running k smallest squared distances (and ref indices) over ref chunks."""

    def body(best, xs):
        rc, rlc, off = xs
        d = jnp.where(ql[:, None] == rlc[None, :], _sq_dists(q, rc), jnp.inf)
        idx = off + jnp.arange(rc.shape[0])
        cand_d = jnp.concatenate([best[0], d], 1)
        cand_i = jnp.concatenate([best[1], jnp.broadcast_to(idx, d.shape)], 1)
        neg, pos = jax.lax.top_k(-cand_d, k)
        return (-neg, jnp.take_along_axis(cand_i, pos, 1)), None

    init = (jnp.full((q.shape[0], k), jnp.inf), jnp.full((q.shape[0], k), -1, jnp.int32))
    (d, i), _ = jax.lax.scan(body, init, (r, rl, offset))
    return d, i


def knn(queries, refs, k: int = 1, *, query_labels=None, ref_labels=None,
        chunk: int = QUERY_CHUNK, ref_chunk: int = REF_CHUNK, progress: bool = False,
        desc: str = "knn") -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` nearest refs of every query: squared distances and indices, ``[Q, k]``.

    With labels, only refs of the query's label count (``inf`` / ``-1`` where a label has
    fewer than ``k`` refs). Ties go to the lower ref index.

    Example:
        >>> d2, idx = knn(np.array([[0.0], [5.0]]), np.array([[1.0], [4.0], [9.0]]))
        >>> d2[:, 0], idx[:, 0]
        (array([1., 1.], dtype=float32), array([0, 1], dtype=int32))
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    q, ql, r, rl = _prepare(queries, refs, query_labels, ref_labels, ref_chunk)
    offset = jnp.arange(r.shape[0], dtype=jnp.int32) * r.shape[1]
    r, rl = jnp.asarray(r), jnp.asarray(rl)
    return _blocks(q, ql, chunk, lambda a, b: _topk_block(a, b, r, rl, offset, k),
                   progress, desc)


def nearest(queries, refs, **kw) -> tuple[np.ndarray, np.ndarray]:
    """Squared distance to, and index of, the nearest ref of every query: ``[Q]``, ``[Q]``.

    Example:
        >>> nearest(np.zeros((2, 3)), np.ones((4, 3)))[0]
        array([3., 3.], dtype=float32)
    """
    d2, idx = knn(queries, refs, 1, **kw)
    return d2[:, 0], idx[:, 0]


def knn_radius(x, k: int = 5, *, labels=None, **kw) -> np.ndarray:
    """Euclidean distance from every row of ``x`` to its ``k``-th nearest other row
    (of the same label): the PRDC radius ``r_k``. ``inf`` if there are not ``k`` others.

    Example:
        >>> knn_radius(np.array([[0.0], [1.0], [3.0]]), k=1)
        array([1., 1., 2.], dtype=float32)
    """
    d2, _ = knn(x, x, k + 1, query_labels=labels, ref_labels=labels, desc="knn radius", **kw)
    return np.sqrt(d2[:, k])


@jax.jit
def _within_block(q, ql, r, rl, radii):
    def body(acc, xs):
        rc, rlc, rad = xs
        d2 = _sq_dists(q, rc)
        hit = (ql[:, None] == rlc[None, :]) & (d2 < jnp.square(rad)[None, :])
        return acc + jnp.sum(hit, 1, dtype=jnp.int32), None

    acc, _ = jax.lax.scan(body, jnp.zeros(q.shape[0], jnp.int32), (r, rl, radii))
    return acc


def count_within(queries, refs, radii, *, query_labels=None, ref_labels=None,
                 chunk: int = QUERY_CHUNK, ref_chunk: int = REF_CHUNK,
                 progress: bool = False) -> np.ndarray:
    """For every query, how many refs ``i`` lie strictly within ``radii[i]`` of it.

    Example:
        >>> count_within(np.array([[0.0]]), np.array([[1.0], [3.0]]), np.array([2.0, 2.0]))
        array([1], dtype=int32)
    """
    radii = np.asarray(radii, np.float32)
    if radii.shape != (len(refs),):
        raise ValueError(f"radii must be [{len(refs)}] (one per ref), got {radii.shape}")
    q, ql, r, rl = _prepare(queries, refs, query_labels, ref_labels, ref_chunk)
    rad = np.concatenate([radii, np.zeros(r.size // r.shape[2] - len(radii), np.float32)])
    r, rl, rad = jnp.asarray(r), jnp.asarray(rl), jnp.asarray(rad.reshape(rl.shape))
    return _blocks(q, ql, chunk, lambda a, b: _within_block(a, b, r, rl, rad), progress,
                   "count within")


__all__ = ["count_within", "knn", "knn_radius", "nearest"]
