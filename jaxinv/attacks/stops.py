"""Stopping rules for :func:`~jaxinv.attacks.gradient_inversion`, as small pure pieces.

A :class:`Stop` is ``init(loss) -> state`` and ``update(state, loss, t) -> (state, done)``
on one chain; ``any_of`` composes them (the chain stops when one fires). The driver
freezes a chain once its ``State.done`` is set.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp


class Stop(NamedTuple):
    """A stopping rule: ``init(loss) -> state``, ``update(state, loss, t) -> (state, done)``.

    Example:
        >>> rule = any_of(below(0.01), max_steps(100))
        >>> s = rule.init(jnp.float32(1.0))
        >>> s, done = rule.update(s, jnp.float32(0.001), jnp.int32(1))
        >>> bool(done)
        True
    """

    init: Callable[[jax.Array], Any]
    update: Callable[[Any, jax.Array, jax.Array], tuple[Any, jax.Array]]


def never() -> Stop:
    """Never stops (the run's ``steps`` bound it).

    Example:
        >>> bool(never().update((), jnp.float32(0), jnp.int32(9))[1])
        False
    """
    return Stop(lambda loss: (), lambda s, loss, t: (s, jnp.bool_(False)))


def below(gamma: float) -> Stop:
    """Stop once the cost is ``<= gamma`` (MI-Face's success rule).

    Example:
        >>> bool(below(0.5).update((), jnp.float32(0.4), jnp.int32(1))[1])
        True
    """
    return Stop(lambda loss: (), lambda s, loss, t: (s, loss <= gamma))


def max_steps(n: int) -> Stop:
    """Stop after ``n`` steps (MI-Face's alpha).

    Example:
        >>> bool(max_steps(3).update((), jnp.float32(1), jnp.int32(3))[1])
        True
    """
    return Stop(lambda loss: (), lambda s, loss, t: (s, t >= n))


def no_improvement(beta: int) -> Stop:
    """Stop when ``c(x_t) >= max(c(x_{t-1}), ..., c(x_{t-beta}))`` (MI-Face's rule).

    Keeps the last ``beta`` costs in a ring buffer (``+inf`` until ``beta`` are known).

    Example:
        >>> rule = no_improvement(2)
        >>> s = rule.init(jnp.float32(1.0))
        >>> s, done = rule.update(s, jnp.float32(2.0), jnp.int32(1))
        >>> bool(done)
        False
    """
    if not isinstance(beta, int) or beta < 1:
        raise ValueError(f"beta must be a positive int, got {beta!r}")

    def init(loss):
        return jnp.full((beta,), jnp.inf, jnp.float32).at[0].set(loss)

    def update(recent, loss, t):
        done = loss >= jnp.max(recent)
        return recent.at[t % beta].set(loss), done

    return Stop(init, update)


def any_of(*rules: Stop) -> Stop:
    """Stop when any rule fires.

    Example:
        >>> rule = any_of(no_improvement(100), below(0.01), max_steps(5000))
    """

    def init(loss):
        return tuple(r.init(loss) for r in rules)

    def update(states, loss, t):
        out = [r.update(s, loss, t) for r, s in zip(rules, states, strict=True)]
        done = jnp.bool_(False)
        for _, d in out:
            done = done | d
        return tuple(s for s, _ in out), done

    return Stop(init, update)
