"""The network-inversion and TLDR loss suite (SPECS 2b, 2c): small pure functions.

A conditional generator is trained against a frozen classifier ``f`` to minimise

    w.kl KL(c || f(x)) + w.ce CE(f(x), y) + w.cos L_cos + w.ortho L_ortho          (2b)
    + w.kl_p KL(c || f(x')) + w.ce_p CE(f(x'), y) + w.tv L_tv + w.pix L_pix      (TLDR)
    + w.grad |grad_theta CE(f_theta(x), y)|_2

with ``x = G(z, c)``, ``y = argmax c`` and ``x' = x + sigma * N(0, I)`` (the paper gives no
noise law or scale: Gaussian, ``sigma`` a parameter). Every weight is a field of
:class:`Weights` (default 1.0, as SPECS advises; the papers report none). ``L_cos`` and
``L_ortho`` are batch terms (mean off-diagonal cosine similarity of the l2-normalised
penultimate features; mean squared deviation of their Gram matrix from the identity);
the rest are per example (``L_tv`` and ``L_pix`` averaged over pixels by default, see
:func:`total_variation`). ``L_grad`` is the norm of the gradient of the classifier's loss
with respect to its *parameters*, one per example (``grad_mode="batch"`` takes the
gradient of the batch-mean loss instead; the paper does not say which); differentiating
it through ``x`` is second-order autodiff through ``f``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxinv.core import rng


class Weights(NamedTuple):
    """Loss weights (a pytree of floats, so several sets can be stacked and ``vmap``-ed);
    every field defaults to 1.0, ``PRESETS`` hold the settled sets.

    Example:
        >>> Weights().tv, PRESETS["tldr"].grad, PRESETS["ni"].grad
        (1.0, 0.1, 0.0)
    """

    kl: float = 1.0
    ce: float = 1.0
    cos: float = 1.0
    ortho: float = 1.0
    kl_p: float = 1.0
    ce_p: float = 1.0
    tv: float = 1.0
    pix: float = 1.0
    grad: float = 1.0


TERMS = Weights._fields
UNROLL_MAX = 16  # per-example weight gradients unrolled on CPU up to this many examples
TLDR_TERMS = ("kl_p", "ce_p", "tv", "pix", "grad")
# The weight-gradient term at 1.0 collapses the generator to blank images (digits and MNIST:
# its norm shrinks with the input); 0.1 is the best of {1, 0.1, 0.01, 0} in the ablation of
# experiments/configs/tldr.py (README). Every other weight stays at SPECS' default 1.0.
PRESETS = {"tldr": Weights(grad=0.1),
           "ni": Weights(**{t: 0.0 for t in TLDR_TERMS})}


def weights_from(preset: str = "tldr", **overrides: float) -> Weights:
    """A preset (``"tldr"``: all terms; ``"ni"``: plain network inversion, no TLDR terms)
    with some weights replaced; unknown names raise a one-line ``ValueError``.

    Example:
        >>> weights_from("tldr", grad=0.0).grad
        0.0
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown loss preset {preset!r}: use one of {sorted(PRESETS)}")
    bad = sorted(set(overrides) - set(TERMS))
    if bad:
        raise ValueError(f"unknown loss weight(s) {bad}: the terms are {list(TERMS)}")
    return PRESETS[preset]._replace(**{k: float(v) for k, v in overrides.items()})


def kl_divergence(c: jax.Array, logits: jax.Array) -> jax.Array:
    """Per-example ``KL(c || softmax(logits))`` (0 log 0 = 0).

    Example:
        >>> float(kl_divergence(jnp.array([[1.0, 0.0]]), jnp.array([[0.0, 0.0]]))[0])
        0.6931...
    """
    return jnp.sum(jax.scipy.special.xlogy(c, c) - c * jax.nn.log_softmax(logits), -1)


def cross_entropy(logits: jax.Array, y: jax.Array) -> jax.Array:
    """Per-example softmax cross-entropy with integer labels.

    Example:
        >>> float(cross_entropy(jnp.array([[0.0, 0.0]]), jnp.array([1]))[0])
        0.6931...
    """
    return optax.softmax_cross_entropy_with_integer_labels(logits, y)


def _normalise(h: jax.Array) -> jax.Array:
    return h / jnp.sqrt(jnp.sum(h ** 2, -1, keepdims=True) + 1e-12)


def cosine_similarity(h: jax.Array) -> jax.Array:
    """``1/(N(N-1)) sum_{i != j} <h_i, h_j>`` of l2-normalised features ``h [N, D]``.

    Example:
        >>> float(cosine_similarity(jnp.array([[1.0, 0.0], [1.0, 1.0]])))
        0.7071...
    """
    h = _normalise(h.reshape(h.shape[0], -1))
    n = h.shape[0]
    gram = h @ h.T
    return (jnp.sum(gram) - jnp.trace(gram)) / max(n * (n - 1), 1)


def orthogonality(h: jax.Array) -> jax.Array:
    """``1/N^2 sum_{i,j} (<h_i, h_j> - 1[i = j])^2`` of l2-normalised features ``h [N, D]``.

    Example:
        >>> round(float(orthogonality(jnp.array([[1.0, 0.0], [1.0, 1.0]]))), 6)
        0.25
    """
    h = _normalise(h.reshape(h.shape[0], -1))
    n = h.shape[0]
    return jnp.sum((h @ h.T - jnp.eye(n, dtype=h.dtype)) ** 2) / n ** 2


def _reduce(v: jax.Array, reduce: str, n: int) -> jax.Array:
    if reduce not in ("mean", "sum"):
        raise ValueError(f"unknown reduce {reduce!r}: use 'mean' or 'sum'")
    return v / n if reduce == "mean" else v


def total_variation(x: jax.Array, squared: bool = True, reduce: str = "mean") -> jax.Array:
    """Per-image total variation of ``x [N, H, W, C]``: squared differences of neighbouring
    pixels (the third-party TLDR code) or absolute ones, summed over the pairs, divided by
    ``H * W * C`` with ``reduce="mean"`` (jaxinv's default: a weight means the same at 8x8
    and 28x28; summed, a 28x28 digit's squared TV of ~100 crushes every other term).

    Example:
        >>> x = jnp.array([0.0, 1.0, 3.0]).reshape(1, 1, 3, 1)
        >>> float(total_variation(x, reduce="sum")[0]), float(total_variation(x)[0])
        (5.0, 1.6666...)
        >>> float(total_variation(x, squared=False, reduce="sum")[0])
        3.0
    """
    dh, dw = jnp.diff(x, axis=1), jnp.diff(x, axis=2)
    f = jnp.square if squared else jnp.abs
    tv = jnp.sum(f(dh), (1, 2, 3)) + jnp.sum(f(dw), (1, 2, 3))
    return _reduce(tv, reduce, math.prod(x.shape[1:]))


def pixel_range(x: jax.Array, lo: float = 0.0, hi: float = 1.0, reduce: str = "mean"
                ) -> jax.Array:
    """Per-image ``relu(x - hi) + relu(lo - x)`` summed over pixels (``reduce="sum"``) or
    averaged (default): zero for images within [lo, hi].

    Example:
        >>> x = jnp.array([-0.5, 0.5, 1.25]).reshape(1, 3, 1, 1)
        >>> float(pixel_range(x, reduce="sum")[0]), float(pixel_range(x)[0])
        (0.75, 0.25)
    """
    v = jnp.sum(jax.nn.relu(x - hi) + jax.nn.relu(lo - x), tuple(range(1, x.ndim)))
    return _reduce(v, reduce, math.prod(x.shape[1:]))


def weight_grad_norm(logits_fn: Callable[[Any, jax.Array], jax.Array], variables: dict,
                     x: jax.Array, y: jax.Array, mode: str = "per_example") -> jax.Array:
    """``|grad_params CE(f(x_i), y_i)|_2`` per example (``mode="batch"``: the norm of the
    gradient of the batch-mean CE, the same value for every example); ``logits_fn(variables,
    x [N, ...]) -> logits``; only ``variables["params"]`` is differentiated. Differentiable in
    ``x`` (second-order autodiff).

    Example:
        >>> f = lambda v, x: x.reshape(len(x), -1) @ v["params"]["w"]
        >>> v = {"params": {"w": jnp.zeros((2, 2))}}
        >>> g = weight_grad_norm(f, v, jnp.array([[0.0, 0.0], [1.0, 0.0]]), jnp.array([0, 0]))
        >>> [round(float(v), 4) for v in g]
        [0.0, 0.7071]
    """
    rest = {k: v for k, v in variables.items() if k != "params"}

    def loss(params, xs, ys):
        return jnp.mean(cross_entropy(logits_fn({"params": params, **rest}, xs), ys))

    def norm(g):
        return jnp.sqrt(sum(jnp.sum(jnp.square(t)) for t in jax.tree.leaves(g)) + 1e-20)

    if mode == "batch":
        return jnp.full(x.shape[:1], norm(jax.grad(loss)(variables["params"], x, y)))
    if mode != "per_example":
        raise ValueError(f"unknown grad mode {mode!r}: use 'per_example' or 'batch'")
    one = lambda xi, yi: norm(jax.grad(loss)(variables["params"], xi[None], yi[None]))
    if jax.default_backend() == "cpu":
        # XLA:CPU runs vmap's per-example conv weight gradients as slow grouped convolutions
        # and conv weight gradients inside loops slowly: unrolled batch-1 passes for a few
        # examples (8: 74 ms vs 259 ms lax.map vs 787 ms vmap, MNIST CNN), else lax.map
        if x.shape[0] <= UNROLL_MAX:
            return jnp.stack([one(x[i], y[i]) for i in range(x.shape[0])])
        return jax.lax.map(lambda a: one(*a), (x, y))
    return jax.vmap(one)(x, y)


def inversion_losses(apply_fn: Callable[[Any, jax.Array], tuple[jax.Array, jax.Array]],
                     variables: dict, x: jax.Array, c: jax.Array, y: jax.Array,
                     key: jax.Array, weights: Weights, *, sigma: float = 0.1,
                     tv_squared: bool = True, pixel_reduce: str = "mean",
                     lo: float = 0.0, hi: float = 1.0,
                     grad_mode: str = "per_example", grad_examples: int | None = None
                     ) -> tuple[jax.Array, dict]:
    """Per-example total loss ``[N]`` and each unweighted term (``[N]``; batch terms
    repeated) for images ``x`` generated under conditions ``c [N, K]``, labels ``y``.
    ``apply_fn(variables, x) -> (logits, features)`` is the frozen classifier. A term
    whose weight is a Python 0.0 is skipped (not computed). ``grad_examples``: compute
    ``L_grad`` on the first that many examples only (it costs about ten forward-backward
    passes per example), scaled by ``N / grad_examples`` and zero elsewhere, so its batch
    mean stays an unbiased estimate (the batch is in random order).

    Example:
        >>> f = lambda v, x: (x.reshape(len(x), -1) @ v["params"]["w"],) * 2
        >>> v = {"params": {"w": jnp.eye(4)[:, :2]}}
        >>> x, c = jnp.ones((3, 2, 2, 1)) * 0.5, jnp.eye(2)[jnp.array([0, 1, 0])]
        >>> loss, terms = inversion_losses(f, v, x, c, c.argmax(-1), jax.random.key(0),
        ...                                Weights())
        >>> loss.shape, sorted(terms) == sorted(TERMS)
        ((3,), True)
    """
    logits, feats = apply_fn(variables, x)
    xp = x + sigma * rng.normal(key, x.shape, x.dtype)
    n = x.shape[0]
    batch = lambda v: jnp.full((n,), v)
    fns = {"kl": lambda: kl_divergence(c, logits), "ce": lambda: cross_entropy(logits, y),
           "cos": lambda: batch(cosine_similarity(feats)),
           "ortho": lambda: batch(orthogonality(feats)),
           "kl_p": lambda: kl_divergence(c, apply_fn(variables, xp)[0]),
           "ce_p": lambda: cross_entropy(apply_fn(variables, xp)[0], y),
           "tv": lambda: total_variation(x, tv_squared, pixel_reduce),
           "pix": lambda: pixel_range(x, lo, hi, pixel_reduce),
           "grad": lambda: _subsampled_grad(apply_fn, variables, x, y, grad_mode,
                                            grad_examples)}
    terms, total = {}, jnp.zeros((n,), x.dtype)
    for name in TERMS:
        w = getattr(weights, name)
        if isinstance(w, float) and w == 0.0:
            terms[name] = jnp.zeros((n,), x.dtype)
            continue
        terms[name] = fns[name]()
        total = total + w * terms[name]
    return total, terms


def _subsampled_grad(apply_fn, variables, x, y, mode, m):
    n = x.shape[0]
    m = n if m is None or m >= n else m
    g = weight_grad_norm(lambda v, a: apply_fn(v, a)[0], variables, x[:m], y[:m], mode)
    return jnp.zeros((n,), g.dtype).at[:m].set(g * (n / m))


__all__ = ["PRESETS", "TERMS", "TLDR_TERMS", "Weights", "cosine_similarity", "cross_entropy",
           "inversion_losses", "kl_divergence", "orthogonality", "pixel_range",
           "total_variation", "weight_grad_norm"]
