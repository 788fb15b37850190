"""Output defenses: pure transforms of released probability vectors.

Every defense maps ``(key, probs[..., K]) -> released[..., K]`` along the last axis, so it
works on one vector, a batch ``[B, K]`` or any leading shape, under ``jit`` and ``vmap``.
Defenses compose left to right with :func:`chain`, like ``optax.chain``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxinv.core import rng


class Defense(NamedTuple):
    """An output defense: ``apply(key, probs[B, K]) -> released[B, K]``, pure and jit-safe.

    Example:
        >>> d = chain(round_to(2), topk(3))
        >>> d.apply(key, jax.nn.softmax(jnp.array([[2.0, 1.0, 0.5, -1.0]])))
        Array([[0.61, 0.22, 0.14, 0.  ]], dtype=float32)
    """

    apply: Callable[[jax.Array, jax.Array], jax.Array]


def _bad(name: str, expected: str, got: object) -> ValueError:
    return ValueError(f"{name}: expected {expected}, received {got!r}")


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_real(v: object) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _renormalise(q: jax.Array) -> jax.Array:
    """``q / sum(q)`` along the last axis; uniform where the row sums to zero."""
    s = q.sum(-1, keepdims=True)
    safe = jnp.where(s > 0, s, 1)
    return jnp.where(s > 0, q / safe, jnp.full_like(q, 1.0 / q.shape[-1]))


def identity() -> Defense:
    """Release the probabilities unchanged (no defense).

    Example:
        >>> probs = jnp.array([[0.2, 0.8]])
        >>> identity().apply(key, probs) is probs
        True
    """
    return Defense(lambda key, probs: probs)


def topk(k: int) -> Defense:
    """Keep the ``k`` largest probabilities and zero the rest.

    The result is NOT renormalised: the released mass is the true top-k mass, as a top-k
    API would show it. Ties are broken towards the lower index (exactly ``k`` entries kept).

    Example:
        >>> topk(2).apply(key, jnp.array([[0.1, 0.6, 0.3]]))
        Array([[0. , 0.6, 0.3]], dtype=float32)
    """
    if not _is_int(k) or k < 1:
        raise _bad("topk k", "an int >= 1", k)

    def apply(key: jax.Array, probs: jax.Array) -> jax.Array:
        if k > probs.shape[-1]:
            raise _bad("topk k", f"<= number of classes {probs.shape[-1]}", k)
        _, idx = jax.lax.top_k(probs, k)
        keep = jax.nn.one_hot(idx, probs.shape[-1], dtype=jnp.int32).sum(-2) > 0
        return jnp.where(keep, probs, jnp.zeros_like(probs))

    return Defense(apply)


def round_to(decimals: int) -> Defense:
    """Round every probability to ``decimals`` decimal places (not renormalised).

    Example:
        >>> round_to(1).apply(key, jnp.array([[0.12, 0.61, 0.27]]))
        Array([[0.1, 0.6, 0.3]], dtype=float32)
    """
    if not _is_int(decimals) or decimals < 0:
        raise _bad("round_to decimals", "an int >= 0", decimals)
    return Defense(lambda key, probs: jnp.round(probs, decimals))


def label_only() -> Defense:
    """Release only the one-hot of the argmax (ties: lowest index).

    Example:
        >>> label_only().apply(key, jnp.array([[0.2, 0.5, 0.3]]))
        Array([[0., 1., 0.]], dtype=float32)
    """
    return Defense(lambda key, probs: jax.nn.one_hot(probs.argmax(-1), probs.shape[-1],
                                                     dtype=probs.dtype))


def gaussian_noise(sigma: float) -> Defense:
    """Add ``N(0, sigma^2)`` noise to each probability, clip to ``[0, 1]``, renormalise.

    A row whose entries all clip to zero is released as the uniform vector. The noise is
    drawn from the ``key`` passed to ``apply``, independently for every entry.

    Example:
        >>> probs = jnp.array([[0.1, 0.6, 0.3], [0.7, 0.2, 0.1]])
        >>> released = gaussian_noise(0.05).apply(key, probs)
        >>> released.shape, released.sum(-1).round(4)  # still probability vectors
        ((2, 3), Array([1., 1.], dtype=float32))
    """
    if not _is_real(sigma) or sigma < 0:
        raise _bad("gaussian_noise sigma", "a float >= 0", sigma)

    def apply(key: jax.Array, probs: jax.Array) -> jax.Array:
        noise = sigma * rng.normal(key, probs.shape, probs.dtype)
        return _renormalise(jnp.clip(probs + noise, 0.0, 1.0))

    return Defense(apply)


def reverse_sigmoid(beta: float, gamma: float, eps: float = 1e-6) -> Defense:
    """Reverse-sigmoid perturbation (Lee et al., "Defending Against NN Model Stealing
    Attacks Using Deceptive Perturbations", IEEE S&P Workshops 2019).

    ``p' = alpha * (p - beta * (sigmoid(gamma * logit(p)) - 1/2))``, with ``alpha`` the
    normaliser making ``p'`` sum to one (the form of the paper and of Orekondy et al.'s
    reimplementation). ``p`` is clipped to ``[eps, 1 - eps]`` inside the logit and ``p'``
    is clipped at 0 before normalising (only needed for ``beta >= 1``). Values change
    but, for small ``beta`` (``beta < 2 / K`` with ``gamma <= 1`` is safe in practice),
    the argmax is preserved, so the top-1 label stays correct.

    Example:
        >>> probs = jnp.array([[0.1, 0.6, 0.3], [0.7, 0.2, 0.1]])
        >>> released = reverse_sigmoid(0.05, 0.5).apply(key, probs)
        >>> released.argmax(-1), probs.argmax(-1)  # the top-1 label is kept
        (Array([1, 0], dtype=int32), Array([1, 0], dtype=int32))
        >>> bool(jnp.abs(released - probs).max() > 0.01)  # the values are not
        True
    """
    if not _is_real(beta) or beta < 0:
        raise _bad("reverse_sigmoid beta", "a float >= 0", beta)
    if not _is_real(gamma) or gamma <= 0:
        raise _bad("reverse_sigmoid gamma", "a float > 0", gamma)
    if not _is_real(eps) or not 0 < eps < 0.5:
        raise _bad("reverse_sigmoid eps", "a float in (0, 0.5)", eps)

    def apply(key: jax.Array, probs: jax.Array) -> jax.Array:
        p = jnp.clip(probs, eps, 1 - eps)
        r = beta * (jax.nn.sigmoid(gamma * (jnp.log(p) - jnp.log1p(-p))) - 0.5)
        return _renormalise(jnp.maximum(probs - r, 0.0))

    return Defense(apply)


def confidence_cutoff(tau: float) -> Defense:
    """High-confidence cut-off: a probability above ``tau`` is released as ``tau``.

    The clipped excess is given back to the other classes in proportion to their
    probabilities (uniformly if they are all zero), so the total mass is kept and the
    released maximum is exactly ``min(max p, tau)``. ``tau`` must lie in ``(0.5, 1]``:
    then at most one class exceeds it and the argmax is preserved.

    Example:
        >>> confidence_cutoff(0.9).apply(key, jnp.array([[0.95, 0.04, 0.01]])).round(4)
        Array([[0.9 , 0.08, 0.02]], dtype=float32)
    """
    if not _is_real(tau) or not 0.5 < tau <= 1:
        raise _bad("confidence_cutoff tau", "a float in (0.5, 1]", tau)

    def apply(key: jax.Array, probs: jax.Array) -> jax.Array:
        capped = probs > tau
        rest = jnp.where(capped, 0.0, probs)
        rest_sum = rest.sum(-1, keepdims=True)
        target = jnp.maximum(probs.sum(-1, keepdims=True) - tau * capped.sum(-1, keepdims=True),
                             0.0)  # mass the uncapped classes share
        n_rest = jnp.maximum((~capped).sum(-1, keepdims=True), 1)
        share = jnp.where(rest_sum > 0, rest / jnp.where(rest_sum > 0, rest_sum, 1),
                          (~capped) / n_rest)
        out = jnp.where(capped, tau, target * share).astype(probs.dtype)
        return jnp.where(capped.any(-1, keepdims=True), out, probs)

    return Defense(apply)


def chain(*defenses: Defense) -> Defense:
    """Apply ``defenses`` left to right; defense ``i`` gets the subkey ``fold_in(key, i)``.

    Example:
        >>> chain(round_to(1), topk(2)).apply(key, jnp.array([[0.12, 0.61, 0.27]]))
        Array([[0. , 0.6, 0.3]], dtype=float32)
        >>> noisy = chain(gaussian_noise(0.01), topk(2))  # the noise uses fold_in(key, 0)
        >>> (noisy.apply(key, jnp.array([[0.1, 0.6, 0.3], [0.7, 0.2, 0.1]])) > 0).sum(-1)
        Array([2, 2], dtype=int32)
    """
    for i, d in enumerate(defenses):
        if not isinstance(d, Defense):
            raise TypeError(f"chain argument {i}: expected a Defense, received {type(d)!r}")
    if not defenses:
        return identity()

    def apply(key: jax.Array, probs: jax.Array) -> jax.Array:
        for i, d in enumerate(defenses):
            probs = d.apply(jax.random.fold_in(key, i), probs)
        return probs

    return Defense(apply)
