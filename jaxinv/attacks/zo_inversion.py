"""Score-based black-box inversion: optax steps on zeroth-order gradient estimates.

The attacker sees only what an :class:`jaxinv.oracles.Oracle` of kind ``"score"``
returns (probabilities, possibly defended). Each step estimates the gradient of the
cost ``-log p_y`` (or ``1 - p_y``) with a :mod:`jaxinv.zo` estimator from one batch of
queries, adds the exact gradient of the white-box priors (TV, L2: they need no model),
takes an optax step and queries the new point once. Queries are counted per chain; a
chain whose budget cannot pay for the next step stops and is flagged.

The search runs in a parameter space ``z`` with ``x = decode(z)``: identity for pixels,
a generator for latent-space attacks.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxinv import oracles, zo
from jaxinv.attacks import priors
from jaxinv.base import Attack, tree_where

LOSSES = ("neg_log_p", "one_minus_p")


class ZOState(NamedTuple):
    x: jax.Array  # decode(z), what the driver keeps and judges
    z: jax.Array
    loss: jax.Array
    confidence: jax.Array
    target: jax.Array
    opt_state: Any
    queries: jax.Array
    t: jax.Array
    budget_exhausted: jax.Array
    done: jax.Array


class ZOInfo(NamedTuple):
    loss: jax.Array
    confidence: jax.Array
    queries: jax.Array


def zo_inversion(
    oracle: oracles.Oracle,
    input_shape: tuple[int, ...],
    *,
    estimator: str = "nes",
    queries_per_step: int = 50,
    smoothing: float = 0.01,
    optimizer: optax.GradientTransformation | None = None,
    lr: float = 0.05,
    loss: str = "neg_log_p",
    max_steps: int = 1000,
    budget: int | None = None,
    stop_confidence: float = 1.0,
    tv: float = 0.0,
    l2: float = 0.0,
    init: str = "random",
    init_range: tuple[float, float] = (0.0, 0.25),
    decode: Callable[[jax.Array], jax.Array] | None = None,
    z_shape: tuple[int, ...] | None = None,
    box: tuple[float, float] | None = (0.0, 1.0),
) -> Attack:
    """Build the score-based zeroth-order inversion kernel.

    Args:
      oracle: a ``"score"`` oracle, ``query(key, env, x[B, ...]) -> probs[B, K]``.
      input_shape: ``(H, W, C)`` of one image (``decode``'s output).
      estimator: ``"nes"``, ``"spsa"`` or ``"coordinate"`` (:mod:`jaxinv.zo`).
      queries_per_step: queries of one gradient estimate (one more queries the new point).
      smoothing: the estimator's step (NES sigma, SPSA c, finite-difference h).
      optimizer: an optax transformation (default ``optax.adam(lr)``).
      loss: ``"neg_log_p"`` (``-log max(p_y, 1e-12)``) or ``"one_minus_p"``.
      max_steps: stop after this many steps.
      budget: queries per chain (``None``: unlimited); the initial query counts.
      stop_confidence: stop once ``p_y`` reaches it (1.0: never).
      tv, l2: weights of the total-variation and L2 priors on ``x`` (exact gradients).
      init: ``"random"`` (uniform on ``init_range``) or ``"zero"``; in ``z`` space.
      decode: ``z -> x`` (default identity); ``z_shape`` its input shape (default
        ``input_shape``).
      box: range ``z`` is clipped to after each step, or ``None``.

    Example:
        >>> attack = zo_inversion(oracles.score(apply_logits(clf.module)), (8, 8, 1))
        >>> res = run_chains(attack, jnp.arange(10), clf.variables, chains=16, steps=300)
    """
    if oracle.kind != "score":
        raise ValueError(f"zo_inversion needs a 'score' oracle, got kind {oracle.kind!r}")
    if loss not in LOSSES:
        raise ValueError(f"unknown loss {loss!r}; choose one of {LOSSES}")
    if estimator not in zo.ESTIMATORS:
        raise ValueError(f"unknown estimator {estimator!r}; choose one of "
                         f"{sorted(zo.ESTIMATORS)}")
    if init not in ("random", "zero"):
        raise ValueError(f"unknown init {init!r}; choose 'random' or 'zero'")
    if budget is not None and budget < queries_per_step + 2:
        raise ValueError(f"budget must pay for one step ({queries_per_step + 2} queries "
                         f"with the initial one), got {budget}")
    if not 0 < stop_confidence <= 1 or max_steps < 1:
        raise ValueError(f"need 0 < stop_confidence <= 1 and max_steps >= 1, got "
                         f"{stop_confidence!r}, {max_steps!r}")
    est = zo.get(estimator, n=queries_per_step, scale=smoothing)
    n_est = zo.num_queries(est)
    opt = optimizer or optax.adam(lr)
    decode = decode or (lambda z: z)
    z_shape = tuple(z_shape or input_shape)

    def prior(z):
        x = decode(z)
        return (tv * priors.total_variation(x) if tv else 0.0) + (l2 * priors.l2(x) if l2
                                                                     else 0.0)

    def cost(probs, target):
        p = probs[..., target].astype(jnp.float32)
        c = -jnp.log(jnp.maximum(p, 1e-12)) if loss == "neg_log_p" else 1.0 - p
        return c, p

    def evaluate(key, z, target, env):
        c, p = cost(oracle.query(key, env, decode(z)[None])[0], target)
        return c + prior(z), p

    def init_fn(key, target, env):
        target = jnp.asarray(target, jnp.int32)
        k_init, k_q = jax.random.split(key)
        if init == "zero":
            z = jnp.zeros(z_shape, jnp.float32)
        else:
            z = jax.random.uniform(k_init, z_shape, jnp.float32, *init_range)
        c, p = evaluate(k_q, z, target, env)
        return ZOState(decode(z), z, jnp.float32(c), p, target, opt.init(z), jnp.int32(1),
                       jnp.int32(0), jnp.bool_(False), jnp.bool_(False))

    def step_fn(key, state, env):
        k_est, k_q1, k_q2 = jax.random.split(key, 3)
        allowed, queries = oracles.spend(state.queries, n_est + 1, budget)

        def f(zb):  # one batch of queries: the model part of the cost
            return cost(oracle.query(k_q1, env, jax.vmap(decode)(zb)), state.target)[0]

        g, _ = est(k_est, f, state.z)
        g = g + jax.grad(prior)(state.z) if (tv or l2) else g
        updates, opt_state = opt.update(g, state.opt_state, state.z)
        z = optax.apply_updates(state.z, updates)
        z = jnp.clip(z, *box) if box is not None else z
        c, p = evaluate(k_q2, z, state.target, env)
        t = state.t + 1
        new = ZOState(decode(z), z, jnp.float32(c), p, state.target, opt_state, queries, t,
                      state.budget_exhausted, (t >= max_steps) | (p >= stop_confidence))
        stopped = state._replace(budget_exhausted=jnp.bool_(True), done=jnp.bool_(True))
        new = tree_where(allowed, new, stopped)
        return new, ZOInfo(new.loss, new.confidence, new.queries)

    return Attack(init_fn, step_fn)


__all__ = ["ZOInfo", "ZOState", "zo_inversion"]
