"""The generic white-box kernel: gradient descent on any differentiable cost.

``gradient_inversion(loss, optimizer, init=...)`` optimises a variable ``z`` with any
optax transformation; ``x = decode(z, env)`` is what the target sees (identity for
pixels, a generator for latent attacks), ``loss(x, target, env)`` any cost (a class's
``-log p``, a gradient-matching distance, ...), ``prior(x, env)`` terms add to it,
``project(z)`` runs after each update (box, clip, a Process), ``stop`` ends a chain.
MI-Face, GMI, DLG and Inverting Gradients are configurations of it.

A step costs one ``value_and_grad`` (and one decode): ``State`` keeps the gradient at
``z`` so ``(x, loss)`` always belong together for the driver's best-iterate tracking.
Hyper-parameters closed over (``lr``...) may be traced arrays, so a sweep is a batch
axis (``run_chains(..., sweep={"lr": [...]})``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxinv.attacks import stops as S
from jaxinv.core import rng
from jaxinv.core.protocol import Attack, factory

Init = Callable[[jax.Array, Any, Any], jax.Array]


class GIState(NamedTuple):
    x: jax.Array  # view(decode(z)): the iterate the driver keeps and judges
    z: Any  # the optimisation variable (an array or a pytree)
    loss: jax.Array  # cost at z (loss + prior)
    grad: Any  # its gradient, used by the next step
    aux: dict  # the loss's auxiliary scalars (e.g. confidence)
    opt_state: Any
    stop_state: Any
    t: jax.Array
    done: jax.Array


class GIInfo(NamedTuple):
    loss: jax.Array
    grad_norm: jax.Array
    aux: dict


def uniform(shape: tuple[int, ...], low: float = 0.0, high: float = 1.0) -> Init:
    """Start uniform on ``[low, high)``.

    Example:
        >>> uniform((2, 2, 1), 0, 0.25)(jax.random.key(0), 3, None).shape
        (2, 2, 1)
    """
    shape = tuple(int(s) for s in shape)
    return lambda key, target, env: rng.uniform(key, shape, jnp.float32, low, high)


def zeros(shape: tuple[int, ...]) -> Init:
    """Start at zero (MI-Face's ``x0 = 0``).

    Example:
        >>> float(zeros((2,))(jax.random.key(0), 3, None).sum())
        0.0
    """
    shape = tuple(int(s) for s in shape)
    return lambda key, target, env: jnp.zeros(shape, jnp.float32)


def normal(shape: tuple[int, ...], scale: float = 1.0) -> Init:
    """Start from ``N(0, scale^2 I)`` (GAN latents, DLG's dummy data).

    Example:
        >>> normal((3,))(jax.random.key(0), 0, None).shape
        (3,)
    """
    shape = tuple(int(s) for s in shape)
    return lambda key, target, env: scale * rng.normal(key, shape, jnp.float32)


def _with_aux(loss: Callable, has_aux: bool) -> Callable:
    if has_aux:
        return loss
    return lambda x, target, env: (loss(x, target, env), {})


@factory
def gradient_inversion(
    loss: Callable[[jax.Array, Any, Any], Any],
    optimizer: optax.GradientTransformation,
    *,
    init: Init,
    decode: Callable[[jax.Array, Any], jax.Array] | None = None,
    prior: Callable[[jax.Array, Any], jax.Array] | None = None,
    project: Callable[[jax.Array], jax.Array] | None = None,
    stop: S.Stop | None = None,
    has_aux: bool = False,
    validate: Callable[[Any, Any], None] | None = None,
    view: Callable[[Any], jax.Array] | None = None,
) -> Attack:
    """Build a white-box kernel that minimises ``loss(decode(z), target, env) + prior``.

    Args:
      loss: ``(x, target, env) -> cost`` (float32 scalar), or ``(cost, aux)`` with a dict
        of scalars when ``has_aux`` (``aux["confidence"]`` feeds the progress bar).
      optimizer: any optax transformation; one needing ``value_fn`` (``optax.lbfgs``)
        receives ``value``, ``grad`` and ``value_fn``.
      init: ``(key, target, env) -> z0`` (:func:`uniform`, :func:`zeros`, :func:`normal`).
      decode: ``(z, env) -> x`` (default identity).
      prior: ``(x, env) -> scalar`` added to the cost (:func:`jaxinv.attacks.priors.make`).
      project: ``z -> z`` after each update (a pixel box, a latent clip, a Process).
      stop: a :class:`jaxinv.attacks.stops.Stop` (default: never).
      view: ``decoded -> x``, the array the driver keeps and judges when the decoded
        variable is a pytree (DLG optimises ``{"x": images, "y": label logits}`` and
        keeps ``x``); default identity.
      validate: ``(targets, env) -> None``, raising ``ValueError`` on targets the loss
        cannot take (the driver calls it before any work), e.g.
        :func:`jaxinv.core.protocol.class_targets`.

    Example:
        >>> import optax
        >>> f = lambda x, target, env: jnp.sum((x - target) ** 2)
        >>> attack = gradient_inversion(f, optax.adam(0.1), init=zeros((3,)))
        >>> s = attack.init(jax.random.key(0), jnp.ones(3), None)
        >>> for t in range(100):
        ...     s, info = attack.step(jax.random.key(t), s, jnp.ones(3), None)
        >>> bool(s.loss < 1e-2)
        True
    """
    loss_aux = _with_aux(loss, has_aux)
    decode = decode or (lambda z, env: z)
    view = view or (lambda d: d)
    stop = stop or S.never()
    extra = isinstance(optimizer, optax.GradientTransformationExtraArgs)

    def cost(z, target, env):
        d = decode(z, env)
        x = view(d)
        c, aux = loss_aux(d, target, env)
        if prior is not None:
            c = c + prior(x, env)
        return jnp.asarray(c, jnp.float32), (x, aux)

    value_and_grad = jax.value_and_grad(cost, has_aux=True)

    def init_fn(key, target, env):
        z = init(key, target, env)
        (c, (x, aux)), g = value_and_grad(z, target, env)
        return GIState(x, z, c, g, aux, _strong(optimizer.init(z)), stop.init(c),
                       jnp.zeros((), jnp.int32), jnp.zeros((), jnp.bool_))

    def step_fn(key, state, target, env):
        del key  # deterministic given the state
        kw = {}
        if extra:
            kw = {"value": state.loss, "grad": state.grad,
                  "value_fn": lambda z: cost(z, target, env)[0]}
        updates, opt_state = optimizer.update(state.grad, state.opt_state, state.z, **kw)
        z = optax.apply_updates(state.z, updates)
        z = project(z) if project is not None else z
        (c, (x, aux)), g = value_and_grad(z, target, env)
        t = state.t + 1
        stop_state, done = stop.update(state.stop_state, c, t)
        new = GIState(x, z, c, g, aux, opt_state, stop_state, t, done)
        return new, GIInfo(c, optax.tree_utils.tree_norm(g), aux)

    return Attack(init_fn, step_fn, None, validate)


def _strong(tree: Any) -> Any:
    """``tree`` with weak-typed leaves made strong: optax's L-BFGS starts with weak scalars
    that its update returns strong, so a step jitted on the initial state would compile twice."""
    return jax.tree.map(lambda a: jnp.asarray(a, a.dtype)
                        if getattr(a, "weak_type", False) else a, tree)


__all__ = ["GIInfo", "GIState", "gradient_inversion", "normal", "uniform", "zeros"]
