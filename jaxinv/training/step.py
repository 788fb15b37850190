"""The pure training step every loop is built from.

``make_step(per_example_loss, tx)`` turns a per-example loss into a jittable
``step(state, batch, weights, key) -> (state, metrics)`` on a :class:`TrainState`. The
classifier loop (:func:`jaxinv.training.fit`), ``fit_many`` (M models by ``vmap``) and
the coming GAN, encoder, generator and DP-SGD loops use it; ``weights`` (0/1 per
example) carry data masks and padding, so a masked-out example contributes nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

PerExampleLoss = Callable[[Any, Any, Any, jax.Array], tuple[jax.Array, tuple[dict, Any]]]


class TrainState(NamedTuple):
    """``params`` (trained), ``rest`` (other collections, e.g. batch statistics),
    ``opt_state`` and ``step`` (int32)."""

    params: Any
    rest: Any
    opt_state: Any
    step: jax.Array


def init_state(variables: dict, tx: optax.GradientTransformation) -> TrainState:
    """A :class:`TrainState` from Flax ``variables``.

    Example:
        >>> s = init_state({"params": {"w": jnp.zeros(2)}}, optax.sgd(0.1))
        >>> int(s.step)
        0
    """
    params = variables["params"]
    rest = {c: v for c, v in variables.items() if c != "params"}
    return TrainState(params, rest, tx.init(params), jnp.zeros((), jnp.int32))


def variables_of(state: TrainState) -> dict:
    """Flax variables ``{"params": ..., **rest}`` of a state.

    Example:
        >>> s = init_state({"params": {"w": jnp.zeros(2)}}, optax.sgd(0.1))
        >>> sorted(variables_of(s))
        ['params']
    """
    return {"params": state.params, **state.rest}


def make_step(per_example_loss: PerExampleLoss, tx: optax.GradientTransformation
              ) -> Callable[..., tuple[TrainState, dict]]:
    """A pure ``step(state, batch, weights, key) -> (state, metrics)``.

    ``per_example_loss(params, rest, batch, key) -> (losses[B], (metrics, new_rest))``
    with ``metrics`` a dict of per-example values ``[B]``; the step minimises
    ``sum(weights * losses) / max(sum(weights), 1)`` with ``tx`` and returns the same
    weighted means of ``loss`` and every metric, and ``live`` (1.0, or 0.0 for a batch
    with no weight, which leaves the state unchanged). Not jitted (the caller jits or
    vmaps it).

    Example:
        >>> def loss(params, rest, batch, key):
        ...     x, y = batch
        ...     return (x @ params["w"] - y) ** 2, ({}, rest)
        >>> step = jax.jit(make_step(loss, optax.sgd(0.1)))
        >>> s = init_state({"params": {"w": jnp.zeros(2)}}, optax.sgd(0.1))
        >>> s, m = step(s, (jnp.eye(2), jnp.ones(2)), jnp.ones(2), jax.random.key(0))
        >>> float(m["loss"])
        1.0
    """

    def objective(params, rest, batch, weights, key):
        losses, (metrics, new_rest) = per_example_loss(params, rest, batch, key)
        w = weights.astype(losses.dtype)
        mean = lambda v: jnp.sum(w * v) / jnp.maximum(jnp.sum(w), 1)
        return mean(losses), ({k: mean(v) for k, v in metrics.items()}, new_rest)

    grad = jax.value_and_grad(objective, has_aux=True)

    def step(state, batch, weights, key):
        (loss, (metrics, rest)), g = grad(state.params, state.rest, batch, weights, key)
        updates, opt_state = tx.update(g, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        new = TrainState(params, rest, opt_state, state.step + 1)
        live = jnp.sum(weights) > 0  # an all-padding batch leaves the state unchanged
        new = jax.tree.map(lambda a, b: jnp.where(live, a, b), new, state)
        return new, {"loss": loss, **metrics, "live": live.astype(jnp.float32)}

    return step


def classifier_loss(module: Any, augment: int = 0) -> PerExampleLoss:
    """Per-example softmax cross-entropy of a Flax classifier returning
    ``(logits, features)``; ``metrics["acc"]`` is per-example correctness. ``augment``: random
    shifts of up to that many pixels (zero fill).

    Example:
        >>> from jaxinv.models import create, init_variables
        >>> module = create("softmax", 10)
        >>> params = init_variables(module, (8, 8, 1))["params"]
        >>> x, y = jnp.zeros((4, 8, 8, 1)), jnp.arange(4)
        >>> losses, (m, rest) = classifier_loss(module)(params, {}, (x, y), jax.random.key(0))
        >>> losses.shape, m["acc"].shape
        ((4,), (4,))
    """

    def loss(params, rest, batch, key):
        x, y = batch
        x = shift(key, x, augment) if augment else x
        variables = {"params": params, **rest}
        if rest:  # BatchNorm statistics
            (logits, _), new = module.apply(variables, x, train=True, mutable=list(rest))
        else:
            (logits, _), new = module.apply(variables, x, train=True), rest
        losses = optax.softmax_cross_entropy_with_integer_labels(logits, y)
        acc = (jnp.argmax(logits, -1) == y).astype(jnp.float32)
        return losses, ({"acc": acc}, {**rest, **new})

    return loss


def shift(key: jax.Array, x: jax.Array, pad: int) -> jax.Array:
    """Shift each image by up to ``pad`` pixels in each direction (zero fill).

    Example:
        >>> shift(jax.random.key(0), jnp.ones((2, 4, 4, 1)), 1).shape
        (2, 4, 4, 1)
    """
    n, h, w, c = x.shape
    xp = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    off = jax.random.randint(key, (n, 2), 0, 2 * pad + 1)
    crop = lambda im, o: jax.lax.dynamic_slice(im, (o[0], o[1], 0), (h, w, c))
    return jax.vmap(crop)(xp, off)
