"""Score-based black-box inversion: optax steps on zeroth-order gradient estimates.

The attacker sees only probabilities (possibly defended). It is a :class:`BlackBox`:
each step ``ask`` sends ONE batch, the current point followed by the estimator's points
(:mod:`jaxinv.attacks.estimators`), and ``tell`` turns the answers into the cost ``-log p_y`` (or
``1 - p_y``) of the current point and a gradient estimate, adds the exact gradient of the
white-box priors (TV, L2: they need no model) and takes an optax step. ``State.x`` and
``State.loss`` are the last point answered; ``State.z`` is the next one to query.
``tell`` reads the estimator's directions off the queries it asked (no redraw) and the
decoded current point off the answered batch (no re-decode).
Queries are counted per chain; a chain whose budget cannot pay for the next step stops
and is flagged ``budget_exhausted``.

The search runs in a parameter space ``z`` with ``x = decode(z)``: identity for pixels,
a generator for latent-space attacks (``decode(z, env)``, the generator's variables in
``env``, one decode per query).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxinv.attacks import estimators as zo
from jaxinv.attacks import priors
from jaxinv.core import rng
from jaxinv.core.protocol import BlackBox, Queries, budget_rule, check_budget, factory

LOSSES = ("neg_log_p", "one_minus_p")
NOT_QUERIED = 1e9  # State.loss before the first answer (finite: the driver needs that)


class ZOState(NamedTuple):
    x: jax.Array  # decode of the last point answered: what the driver keeps and judges
    z: jax.Array  # the next point to query
    loss: jax.Array
    confidence: jax.Array  # p_y of the last point answered, as the (defended) oracle said
    opt_state: Any
    queries: jax.Array
    t: jax.Array
    budget_exhausted: jax.Array
    done: jax.Array


class ZOInfo(NamedTuple):
    loss: jax.Array
    confidence: jax.Array
    queries: jax.Array


@factory
def zo_inversion(
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
    decode: Callable[[jax.Array, Any], jax.Array] | None = None,
    z_shape: tuple[int, ...] | None = None,
    box: tuple[float, float] | None = (0.0, 1.0),
) -> BlackBox:
    """Build the score-based zeroth-order inversion kernel (ask/tell, ``kind="score"``).

    Args:
      input_shape: ``(H, W, C)`` of one image (``decode``'s output).
      estimator: ``"nes"``, ``"spsa"`` or ``"coordinate"`` (:mod:`jaxinv.attacks.estimators`).
      queries_per_step: queries of one gradient estimate; a step sends one more (the
        current point), ``BlackBox.num_queries`` in all.
      smoothing: the estimator's step (NES sigma, SPSA c, finite-difference h).
      optimizer: an optax transformation (default ``optax.adam(lr)``).
      loss: ``"neg_log_p"`` (``-log max(p_y, 1e-12)``) or ``"one_minus_p"``.
      max_steps: stop after this many steps.
      budget: queries per chain (``None``: unlimited).
      stop_confidence: stop once ``p_y`` reaches it (1.0: never).
      tv, l2: weights of the total-variation and L2 priors on ``x`` (exact gradients).
      init: ``"random"`` (uniform on ``init_range``) or ``"zero"``; in ``z`` space.
      decode: ``(z, env) -> x`` (default identity; ``env`` is the attacker's, e.g. a
        generator's variables); ``z_shape`` its input shape (default ``input_shape``).
      box: range ``z`` is clipped to after each step, and the queried points too (a
        real API accepts only valid images), or ``None``.

    Example:
        >>> bb = zo_inversion((2, 2, 1), queries_per_step=4)
        >>> bb.num_queries, bb.kind
        (5, 'score')
    """
    if loss not in LOSSES:
        raise ValueError(f"unknown loss {loss!r}; choose one of {LOSSES}")
    if estimator not in zo.ESTIMATORS:
        raise ValueError(f"unknown estimator {estimator!r}; choose one of "
                         f"{sorted(zo.ESTIMATORS)}")
    if init not in ("random", "zero"):
        raise ValueError(f"unknown init {init!r}; choose 'random' or 'zero'")
    if not 0 < stop_confidence <= 1 or max_steps < 1:
        raise ValueError(f"need 0 < stop_confidence <= 1 and max_steps >= 1, got "
                         f"{stop_confidence!r}, {max_steps!r}")
    est = zo.get(estimator, n=queries_per_step, scale=smoothing)
    per_step = zo.num_queries(est) + 1
    check_budget(budget, per_step)
    stop_level = stop_confidence if stop_confidence < 1 else float("inf")  # 1.0: never
    opt = optimizer or optax.adam(lr)
    decode = decode or (lambda z, env: z)
    z_shape = tuple(z_shape or input_shape)
    prior_x = priors.make(tv=tv, l2=l2)
    clip = (lambda z: jnp.clip(z, *box)) if box is not None else (lambda z: z)

    def init_fn(key, target, env):
        if init == "zero":
            z = jnp.zeros(z_shape, jnp.float32)
        else:
            z = rng.uniform(key, z_shape, jnp.float32, *init_range)
        return ZOState(decode(z, env), z, jnp.float32(NOT_QUERIED), jnp.float32(0.0),
                       opt.init(z), jnp.int32(0), jnp.int32(0), jnp.bool_(False),
                       jnp.bool_(False))

    def ask(key, state, target, env):
        pts = jnp.concatenate([state.z[None], est.points(key, state.z)])
        return Queries(jax.vmap(lambda z: decode(z, env))(clip(pts)), pts)

    def tell(key, state, target, queries, probs, env):
        del key  # the directions are read off the queries
        p = probs[:, jnp.asarray(target, jnp.int32)].astype(jnp.float32)
        c = -jnp.log(jnp.maximum(p, 1e-12)) if loss == "neg_log_p" else 1.0 - p
        g = est.combine_points(state.z, queries.z[1:], c[1:])
        prior_c = jnp.float32(0.0)
        if prior_x is not None:
            prior_c, pg = jax.value_and_grad(lambda z: prior_x(decode(z, env)))(state.z)
            g = g + pg
        updates, opt_state = opt.update(g, state.opt_state, state.z)
        z = clip(optax.apply_updates(state.z, updates))
        t, used = state.t + 1, state.queries + per_step
        exhausted, done = budget_rule(used, per_step, budget,
                                      (t >= max_steps) | (p[0] >= stop_level))
        new = ZOState(queries.x[0], z, jnp.float32(c[0] + prior_c), p[0], opt_state, used, t,
                      exhausted, done)
        return new, ZOInfo(new.loss, new.confidence, new.queries)

    return BlackBox(init_fn, ask, tell, "score", per_step)


__all__ = ["ZOInfo", "ZOState", "zo_inversion"]
