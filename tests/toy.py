"""Small models and kernels shared by the tests."""

from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxinv.core.protocol import Attack


def linear_apply(env, x):
    """Softmax regression logits: ``x[B, H, W, C] -> [B, K]``."""
    return x.reshape(x.shape[0], -1) @ env["w"] + env["b"]


def linear_env(shape=(8, 8, 1), k=10, seed=1):
    d = shape[0] * shape[1] * shape[2]
    return {"w": 0.3 * jax.random.normal(jax.random.key(seed), (d, k)), "b": jnp.zeros(k)}


class S(NamedTuple):
    x: jax.Array
    loss: jax.Array
    t: jax.Array


class I(NamedTuple):  # noqa: E742
    loss: jax.Array


def poison_attack(bad_class: int, bad_step: int) -> Attack:
    """A random walk that turns NaN for chains of ``bad_class`` at step ``bad_step``."""

    def init(key, target, env):
        x = jax.random.normal(key, (3,))
        return S(x, jnp.sum(x**2), jnp.zeros((), jnp.int32))

    def step(key, s, target, env):  # the target is an argument, not part of the state
        x = s.x + 0.1 * jax.random.normal(key, (3,))
        t = s.t + 1
        bad = (jnp.asarray(target, jnp.int32) == bad_class) & (t >= bad_step)
        x = jnp.where(bad, jnp.nan, x)
        loss = jnp.sum(x**2)
        return S(x, loss, t), I(loss)

    return Attack(init, step)
