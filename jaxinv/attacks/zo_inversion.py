"""Score-based black-box inversion: optax steps on zeroth-order gradient estimates.

The attacker sees only probabilities (possibly defended). It is a :class:`BlackBox`:
each step ``ask`` sends ONE batch, the current point followed by the estimator's points
(:mod:`jaxinv.zo`), and ``tell`` turns the answers into the cost ``-log p_y`` (or
``1 - p_y``) of the current point and a gradient estimate, adds the exact gradient of the
white-box priors (TV, L2: they need no model) and takes an optax step. ``State.x`` and
``State.loss`` are the last point answered; ``State.z`` is the next one to query.
Queries are counted per chain; a chain whose budget cannot pay for the next step stops
and is flagged ``budget_exhausted``.

The search runs in a parameter space ``z`` with ``x = decode(z)``: identity for pixels,
a generator for latent-space attacks.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxinv import zo
from jaxinv.attacks import priors
from jaxinv.base import BlackBox

LOSSES = ("neg_log_p", "one_minus_p")
NOT_QUERIED = 1e9  # State.loss before the first answer (finite: the driver needs that)


class ZOState(NamedTuple):
    x: jax.Array  # decode of the last point answered: what the driver keeps and judges
    z: jax.Array  # the next point to query
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


def check_budget(budget: int | None, per_step: int) -> None:
    """Raise unless ``budget`` (queries per chain, or ``None``) pays for one step."""
    if budget is not None and (not isinstance(budget, int) or budget < per_step):
        raise ValueError(f"budget must be an int that pays for one step ({per_step} "
                         f"queries), got {budget!r}")


def after_step(queries: jax.Array, per_step: int, budget: int | None,
               stopped: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(budget_exhausted, done)`` after a step: done if ``stopped`` or the next step
    would overspend ``budget``."""
    if budget is None:
        return jnp.bool_(False), stopped
    broke = jnp.asarray(budget, queries.dtype) - queries < per_step
    return broke & ~stopped, stopped | broke


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
    decode: Callable[[jax.Array], jax.Array] | None = None,
    z_shape: tuple[int, ...] | None = None,
    box: tuple[float, float] | None = (0.0, 1.0),
) -> BlackBox:
    """Build the score-based zeroth-order inversion kernel (ask/tell, ``kind="score"``).

    Args:
      input_shape: ``(H, W, C)`` of one image (``decode``'s output).
      estimator: ``"nes"``, ``"spsa"`` or ``"coordinate"`` (:mod:`jaxinv.zo`).
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
      decode: ``z -> x`` (default identity); ``z_shape`` its input shape (default
        ``input_shape``).
      box: range ``z`` is clipped to after each step, and the queried points too (a
        real API accepts only valid images), or ``None``.

    Example:
        >>> bb = zo_inversion((8, 8, 1), queries_per_step=20)
        >>> attack = as_attack(bb, oracles.score(apply_logits(clf.module)))
        >>> res = run_chains(attack, jnp.arange(10), clf.variables, chains=16, steps=300)
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
    decode = decode or (lambda z: z)
    z_shape = tuple(z_shape or input_shape)

    def prior(z):
        x = decode(z)
        return (tv * priors.total_variation(x) if tv else 0.0) + (l2 * priors.l2(x) if l2
                                                                     else 0.0)

    def init_fn(key, target):
        if init == "zero":
            z = jnp.zeros(z_shape, jnp.float32)
        else:
            z = jax.random.uniform(key, z_shape, jnp.float32, *init_range)
        return ZOState(decode(z), z, jnp.float32(NOT_QUERIED), jnp.float32(0.0),
                       jnp.asarray(target, jnp.int32), opt.init(z), jnp.int32(0),
                       jnp.int32(0), jnp.bool_(False), jnp.bool_(False))

    def ask(key, state):
        pts = jnp.concatenate([state.z[None], est.points(key, state.z)])
        return jax.vmap(decode)(jnp.clip(pts, *box) if box is not None else pts)

    def tell(key, state, probs):
        p = probs[:, state.target].astype(jnp.float32)
        c = -jnp.log(jnp.maximum(p, 1e-12)) if loss == "neg_log_p" else 1.0 - p
        g = est.combine(key, state.z, c[1:])
        g = g + jax.grad(prior)(state.z) if (tv or l2) else g
        updates, opt_state = opt.update(g, state.opt_state, state.z)
        z = optax.apply_updates(state.z, updates)
        z = jnp.clip(z, *box) if box is not None else z
        t, queries = state.t + 1, state.queries + per_step
        exhausted, done = after_step(queries, per_step, budget,
                                     (t >= max_steps) | (p[0] >= stop_level))
        new = ZOState(decode(state.z), z, jnp.float32(c[0] + prior(state.z)), p[0],
                      state.target, opt_state, queries, t, exhausted, done)
        return new, ZOInfo(new.loss, new.confidence, new.queries)

    return BlackBox(init_fn, ask, tell, "score", per_step)


__all__ = ["ZOInfo", "ZOState", "after_step", "check_budget", "zo_inversion"]
