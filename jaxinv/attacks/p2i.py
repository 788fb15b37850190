"""P2I, Prediction-to-Image (Liu et al., ECCV 2024; SPECS 1): the pure pieces.

P2I learns once, from public data, a map from the target's prediction vector to the
generator's latent, then inverts any class with one forward pass and no new query:

1. **One-time queries** (:func:`query_generator`, :func:`query_images`): the target's
   probabilities on ``N`` generator samples ``G(z)``, ``z ~ N(0, I)``, and on the public
   images, batched and exact (every image is sent once; ``N + |public|`` queries in all).
   :func:`select_top` keeps, per class, the top-n samples by that class's probability
   (P2I's priority queue); :func:`collect_pairs` builds the encoder's training set.
   Probabilities are stored, and the log is taken at encoding time
   (:func:`jaxinv.models.encoder.log_input`; SPECS' code-quirk note).
2. **The encoder** (:mod:`jaxinv.models.encoder`, trained by
   :mod:`jaxinv.training.encoder`).
3. **Aligned ensemble attack** (:func:`shift_prediction`, :func:`aligned_ensemble`,
   :func:`invert_classes`, host wrapper :func:`p2i_attack`): for class ``k``, the
   top-``ensemble_n`` public predictions for ``k`` are shifted toward ``k`` (``delta =
   0.035`` where ``p_k < 0.965``, mass-preserving), encoded, and their latents averaged
   with weights ``p'_k``; ``x* = G(z*)``. No query.

Scaled to jaxinv's data (5-10 classes instead of 1000; each deviation is a parameter):
P2I keeps 10 pairs per class for training (10,000 of 100,000 seeds: 10%); with 5-10
classes that is far too few pairs to train an encoder, so the training set keeps
:func:`default_per_class` = ``max(10, round(0.1 * n / K))`` per class of each query set
(the same 10% ratio), while the attack keeps P2I's ``ensemble_n = 10``. A sample that
tops several classes' queues is kept once per queue, as with P2I's per-class queues.
To give the evaluation more than one image per class, :func:`invert_classes` can return
``samples`` images per class: index 0 is P2I's full ensemble, index ``s > 0`` the same
weighted average over a random half (``ceil(n / 2)``) of the ``n`` top predictions
(:func:`subset_weights`; not in P2I).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxinv.models.encoder import log_input

DELTA = 0.035  # P2I ensemble_attack.py
THRESHOLD = 0.965
ENSEMBLE_N = 10
KEEP_FRACTION = 0.1  # P2I: top-10 of 1000 classes from 100,000 seeds


class Pairs(NamedTuple):
    """The encoder's training set: synthetic pairs (probabilities ``p_syn [Ns, K]`` of
    ``G(z_syn)``, latents ``z_syn [Ns, z_dim]``) and public pairs (``p_pub [Np, K]``,
    images ``x_pub [Np, H, W, C]``). Probabilities, not log-probabilities."""

    p_syn: np.ndarray
    z_syn: np.ndarray
    p_pub: np.ndarray
    x_pub: np.ndarray


def _chunked(f: Callable, key: jax.Array, xs: jax.Array, batch: int) -> jax.Array:
    """``f(key_i, xs[chunk_i])`` over chunks of ``batch`` rows (``lax.map``), the last
    partial chunk in one extra call: every row is processed exactly once, no padding."""
    n = xs.shape[0]
    m, r = divmod(n, batch)
    keys = jax.random.split(key, m + 1)
    outs = []
    if m:
        chunks = xs[:m * batch].reshape(m, batch, *xs.shape[1:])
        out = jax.lax.map(lambda a: f(a[0], a[1]), (keys[:m], chunks))
        outs.append(out.reshape(m * batch, *out.shape[2:]))
    if r:
        outs.append(f(keys[m], xs[m * batch:]))
    return jnp.concatenate(outs) if len(outs) > 1 else outs[0]


def query_images(oracle: Any, key: jax.Array, env: Any, x: jax.Array,
                 batch: int = 1024) -> jax.Array:
    """The target's answers ``[N, K]`` on images ``x [N, H, W, C]``: ``oracle.query`` (a
    :class:`jaxinv.oracles.Oracle`, ``env`` its variables) on chunks of ``batch`` images;
    exactly ``N`` queries. Pure, not jitted.

    Example:
        >>> from jaxinv import oracles
        >>> from jaxinv.models import apply_logits
        >>> p = query_images(oracles.score(apply_logits(module)), key, variables, x, batch=5)
        >>> p.shape, bool(jnp.allclose(p.sum(-1), 1, atol=1e-5))
        ((16, 10), True)
    """
    if batch < 1:
        raise ValueError(f"query_images: batch must be >= 1, got {batch}")
    return _chunked(lambda k, xb: oracle.query(k, env, xb), key, x, batch)


def query_generator(oracle: Any, decode: Callable, key: jax.Array, env: dict, n: int,
                    z_dim: int, batch: int = 1024) -> tuple[jax.Array, jax.Array]:
    """``n`` latents ``z ~ N(0, I)`` and the target's answers on ``decode(z)``:
    ``(z [n, z_dim], p [n, K])``, exactly ``n`` queries. ``decode(z, env["G"])`` maps ONE
    latent to an image (:func:`jaxinv.models.gan.decoder`); ``env["target"]`` holds the
    oracle's variables. Images are made and queried chunk by chunk (``batch``) and not
    kept: :func:`collect_pairs` keeps the latents of the selected ones. Pure, not jitted.

    Example:
        >>> from jaxinv import oracles
        >>> from jaxinv.models import apply_logits
        >>> from jaxinv.models.gan import decoder, random_gan
        >>> gan = random_gan((8, 8, 1), width=4)
        >>> env = {"target": variables, "G": gan.variables["G"]}
        >>> z, p = query_generator(oracles.score(apply_logits(module)), decoder(gan.generator),
        ...                        key, env, 7, 100, batch=4)
        >>> z.shape, p.shape
        ((7, 100), (7, 10))
    """
    if n < 1 or batch < 1:
        raise ValueError(f"query_generator: n and batch must be >= 1, got {n}, {batch}")
    kz, kq = jax.random.split(key)
    z = jax.random.normal(kz, (n, z_dim))
    gen = jax.vmap(decode, in_axes=(0, None))
    p = _chunked(lambda k, zb: oracle.query(k, env["target"], gen(zb, env["G"])), kq, z, batch)
    return z, p


def select_top(p: jax.Array, n: int) -> jax.Array:
    """Per class, the indices of the ``n`` rows of ``p [N, K]`` with the highest
    probability of that class, best first: ``[K, n]`` (P2I's per-class priority queue).

    Example:
        >>> p = jnp.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
        >>> select_top(p, 2)
        Array([[0, 2],
               [1, 2]], dtype=int32)
    """
    if not 1 <= n <= p.shape[0]:
        raise ValueError(f"select_top: n must be in [1, {p.shape[0]}] (the number of "
                         f"predictions), got {n}")
    return jax.lax.top_k(jnp.asarray(p).T, n)[1]


def default_per_class(n: int, k: int) -> int:
    """Training pairs kept per class from ``n`` queried samples of ``k`` classes:
    P2I's ratio (10 per class of 1000 from 100,000 seeds: 10%), at least 10, at most ``n``.

    Example:
        >>> default_per_class(20_000, 5), default_per_class(500, 10)
        (400, 10)
    """
    return min(n, max(ENSEMBLE_N, round(KEEP_FRACTION * n / k)))


def collect_pairs(z: Any, p_syn: Any, x_pub: Any, p_pub: Any,
                  per_class: int | None = None) -> Pairs:
    """The encoder's training set from the one-time queries: per class, the top
    ``per_class`` synthetic samples (latents ``z``, answers ``p_syn``) and the top
    ``per_class`` public images (``x_pub``, answers ``p_pub``), by that class's
    probability. ``None``: :func:`default_per_class` of each set. Host arrays out.

    Example:
        >>> p = jax.nn.softmax(jax.random.normal(key, (50, 4)) * 3)
        >>> pairs = collect_pairs(jnp.zeros((50, 100)), p, x[:16], p[:16], per_class=3)
        >>> pairs.z_syn.shape, pairs.p_syn.shape, pairs.x_pub.shape
        ((12, 100), (12, 4), (12, 8, 8, 1))
    """
    p_syn, p_pub = np.asarray(p_syn, np.float32), np.asarray(p_pub, np.float32)
    if p_syn.ndim != 2 or p_pub.ndim != 2 or p_syn.shape[1] != p_pub.shape[1]:
        raise ValueError(f"collect_pairs: p_syn and p_pub must be [N, K] with the same K, got "
                         f"{list(p_syn.shape)} and {list(p_pub.shape)}")
    if len(z) != len(p_syn) or len(x_pub) != len(p_pub):
        raise ValueError(f"collect_pairs: {len(z)} latents for {len(p_syn)} answers, "
                         f"{len(x_pub)} public images for {len(p_pub)} answers")
    k = p_syn.shape[1]
    n_syn = per_class or default_per_class(len(p_syn), k)
    n_pub = per_class or default_per_class(len(p_pub), k)
    i_syn = np.asarray(select_top(p_syn, min(n_syn, len(p_syn)))).reshape(-1)
    i_pub = np.asarray(select_top(p_pub, min(n_pub, len(p_pub)))).reshape(-1)
    return Pairs(p_syn[i_syn], np.asarray(z, np.float32)[i_syn], p_pub[i_pub],
                 np.asarray(x_pub, np.float32)[i_pub])


def shift_prediction(p: jax.Array, k: jax.Array, delta: float = DELTA,
                     threshold: float = THRESHOLD) -> jax.Array:
    """P2I's prediction alignment of ONE probability vector ``p [K]`` toward class ``k``:
    if ``p_k < threshold``, ``p'_k = p_k + delta`` and ``p'_j = p_j - delta p_j / (1 - p_k)``
    (the mass taken from the others in proportion: the sum stays 1); else ``p' = p``.

    Example:
        >>> q = shift_prediction(jnp.array([0.5, 0.3, 0.2]), 1)
        >>> [round(float(v), 4) for v in q], round(float(q.sum()), 6)
        ([0.475, 0.335, 0.19], 1.0)
        >>> shift_prediction(jnp.array([0.01, 0.99]), 1)  # confident: left alone
        Array([0.01, 0.99], dtype=float32)
    """
    p = jnp.asarray(p, jnp.float32)
    pk = p[k]
    rest = p - delta * p / jnp.maximum(1 - pk, 1e-12)
    shifted = rest.at[k].set(pk + delta)
    return jnp.where(pk < threshold, shifted, p)


def aligned_ensemble(encode: Callable, env: Any, p_top: jax.Array, k: jax.Array,
                     weights: jax.Array | None = None, delta: float = DELTA,
                     threshold: float = THRESHOLD) -> jax.Array:
    """P2I's aligned ensemble latent for class ``k`` from predictions ``p_top [n, K]``:
    ``w_i = encode(env, log p'_i)``, ``c_i = p'_ik`` (times ``weights [n]``, 0/1, for a
    subset), ``z* = sum c_i w_i / sum c_i``. ``encode(variables, v [n, K]) -> [n, z_dim]``
    (:func:`jaxinv.models.encoder.encoder_fn`). Pure; no query.

    Example:
        >>> encode = lambda env, v: v @ env  # a toy linear "encoder" K=2 -> 3
        >>> p_top = jnp.array([[0.1, 0.9], [0.5, 0.5]])
        >>> aligned_ensemble(encode, jnp.ones((2, 3)), p_top, 1).shape
        (3,)
    """
    shifted = jax.vmap(shift_prediction, (0, None, None, None))(p_top, k, delta, threshold)
    w = encode(env, log_input(shifted))
    c = shifted[:, k] * (1.0 if weights is None else weights)
    return jnp.sum(c[:, None] * w, 0) / jnp.maximum(jnp.sum(c), 1e-12)


def subset_weights(key: jax.Array, samples: int, n: int) -> jax.Array:
    """0/1 weights ``[samples, n]`` over the ``n`` top predictions: row 0 keeps all (P2I's
    ensemble), each other row a random ``ceil(n / 2)`` of them.

    Example:
        >>> w = subset_weights(key, 3, 10)
        >>> w.shape, w.sum(1).tolist()
        ((3, 10), [10.0, 5.0, 5.0])
    """
    keep = -(-n // 2)
    ranks = jax.vmap(lambda k: jnp.argsort(jax.random.uniform(k, (n,))))(
        jax.random.split(key, samples))
    w = (ranks < keep).astype(jnp.float32)
    return w.at[0].set(1.0)


def invert_classes(encode: Callable, decode: Callable, env: dict, p_public: jax.Array,
                   classes: jax.Array, key: jax.Array, *, ensemble_n: int = ENSEMBLE_N,
                   samples: int = 1, delta: float = DELTA, threshold: float = THRESHOLD
                   ) -> tuple[jax.Array, jax.Array]:
    """The aligned ensemble attack on every class of ``classes [T]``: images
    ``x [T, samples, H, W, C]`` and latents ``z [T, samples, z_dim]``. For class ``k`` the
    ensemble runs over the ``ensemble_n`` public predictions ``p_public [Np, K]`` (the
    stored one-time answers) with the highest ``p_k``; sample 0 is the full ensemble,
    the others random halves (:func:`subset_weights`, key ``fold_in(key, k)``).
    ``env = {"E": encoder variables, "G": generator variables}``, ``encode`` as in
    :func:`aligned_ensemble`, ``decode(z, env["G"])`` of ONE latent. Pure, not jitted;
    no query.

    Example:
        >>> from jaxinv.models.encoder import encoder_fn, random_encoder
        >>> from jaxinv.models.gan import decoder, random_gan
        >>> gan, enc = random_gan((8, 8, 1), width=4), random_encoder(10, (8, 8, 1), width=4)
        >>> p = jax.nn.softmax(jax.random.normal(key, (40, 10)))
        >>> env = {"E": enc.variables, "G": gan.variables["G"]}
        >>> xs, zs = invert_classes(encoder_fn(enc.module), decoder(gan.generator), env, p,
        ...                         jnp.array([3, 7]), key, samples=4)
        >>> xs.shape, zs.shape
        ((2, 4, 8, 8, 1), (2, 4, 100))
    """
    top = select_top(p_public, ensemble_n)[classes]  # [T, n]

    def one_class(k, idx):
        w = subset_weights(jax.random.fold_in(key, k), samples, ensemble_n)
        z = jax.vmap(lambda wi: aligned_ensemble(encode, env["E"], p_public[idx], k, wi,
                                                 delta, threshold))(w)
        return jax.vmap(decode, (0, None))(z, env["G"]), z

    return jax.vmap(one_class)(classes, top)


def p2i_attack(encoder: Any, gan: Any, p_public: Any, classes: Any, *,
               ensemble_n: int = ENSEMBLE_N, samples: int = 1, delta: float = DELTA,
               threshold: float = THRESHOLD, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Host wrapper of :func:`invert_classes` for a trained
    :class:`~jaxinv.models.encoder.Encoder` and :class:`~jaxinv.models.gan.GAN`, with
    argument checks; one jitted call, no query. Returns host ``(x, z)``.

    Example:
        >>> from jaxinv.models.encoder import random_encoder
        >>> from jaxinv.models.gan import random_gan
        >>> gan, enc = random_gan((8, 8, 1), width=4), random_encoder(10, (8, 8, 1), width=4)
        >>> p = jax.nn.softmax(jax.random.normal(key, (40, 10)))
        >>> p2i_attack(enc, gan, p, [0, 1, 2], samples=2)[0].shape
        (3, 2, 8, 8, 1)
        >>> p2i_attack(enc, gan, p[:, :5], [0])
        Traceback (most recent call last):
        ValueError: p2i_attack: the encoder takes 10-class predictions, the public ...
    """
    from jaxinv.models.encoder import encoder_fn
    from jaxinv.models.gan import decoder

    p_public = jnp.asarray(p_public, jnp.float32)
    k_enc = int(encoder.meta["num_classes"])
    if p_public.ndim != 2 or p_public.shape[1] != k_enc:
        k = p_public.shape[-1] if p_public.ndim == 2 else list(p_public.shape)
        raise ValueError(f"p2i_attack: the encoder takes {k_enc}-class predictions, the public "
                         f"predictions have {k} classes (train the encoder on this target's "
                         "answers)")
    if int(encoder.meta["z_dim"]) != int(gan.meta["z_dim"]):
        raise ValueError(f"p2i_attack: encoder z_dim {encoder.meta['z_dim']} differs from the "
                         f"generator's {gan.meta['z_dim']}")
    classes = np.asarray(classes, np.int32).reshape(-1)
    if not classes.size or classes.min() < 0 or classes.max() >= k_enc:
        raise ValueError(f"p2i_attack: classes {classes.tolist()} out of range for "
                         f"{k_enc} classes")
    if not 1 <= ensemble_n <= p_public.shape[0] or samples < 1:
        raise ValueError(f"p2i_attack: need 1 <= ensemble_n <= {p_public.shape[0]} (public "
                         f"predictions) and samples >= 1, got {ensemble_n}, {samples}")
    if not 0 <= delta < 1 or not 0 < threshold <= 1:
        raise ValueError(f"p2i_attack: need 0 <= delta < 1 and 0 < threshold <= 1, got "
                         f"{delta}, {threshold}")
    run = jax.jit(lambda env, p, c, key: invert_classes(
        encoder_fn(encoder.module), decoder(gan.generator), env, p, c, key,
        ensemble_n=ensemble_n, samples=samples, delta=delta, threshold=threshold))
    env = {"E": encoder.variables, "G": gan.variables["G"]}
    x, z = run(env, p_public, jnp.asarray(classes), jax.random.key(seed))
    return np.asarray(x), np.asarray(z)


__all__ = ["DELTA", "ENSEMBLE_N", "KEEP_FRACTION", "THRESHOLD", "Pairs", "aligned_ensemble",
           "collect_pairs", "default_per_class", "invert_classes", "p2i_attack",
           "query_generator", "query_images", "select_top", "shift_prediction",
           "subset_weights"]
