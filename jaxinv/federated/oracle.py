"""The gradient-sharing oracle: what a federated-learning client sends to the server.

A client holding a batch ``(x[B, H, W, C], y[B])`` of a model ``apply_fn(variables, x) ->
logits`` shares either its parameter gradient (FedSGD, ``local_steps=0``) or its FedAvg
update ``params_0 - params_k`` after ``k`` full-batch SGD steps at ``lr``. Labels are ints
``[B]`` or soft labels ``[B, K]`` (DLG's dummy labels), so the attacker's dummy update is
the same function as the victim's. :func:`shared_updates` vmaps it over victims; the
updates are the driver's *targets*, one per victim, never closed over.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxinv.core.compiler import compile_once

Apply = Callable[[Any, jax.Array], jax.Array]


def soft_cross_entropy(logits: jax.Array, y: jax.Array) -> jax.Array:
    """Mean cross-entropy of ``logits [B, K]`` against int labels ``[B]`` or label
    distributions ``[B, K]``.

    Example:
        >>> float(soft_cross_entropy(jnp.zeros((2, 4)), jnp.array([0, 3])))  # log 4
        1.3862943649291992
    """
    logp = jax.nn.log_softmax(logits.astype(jnp.float32))
    if y.ndim == logits.ndim:
        return -jnp.mean(jnp.sum(y * logp, axis=-1))
    return -jnp.mean(jnp.take_along_axis(logp, y.astype(jnp.int32)[:, None], -1))


def client_update(apply_fn: Apply, variables: dict, x: jax.Array, y: jax.Array, *,
                  local_steps: int = 0, lr: float = 1e-4) -> Any:
    """What one client shares: the gradient of its mean loss w.r.t. ``variables["params"]``
    (``local_steps=0``), or the FedAvg update ``params_0 - params_k`` after ``local_steps``
    full-batch SGD steps at ``lr`` (Geiping et al.'s FedAvg setting). Differentiable in
    ``x`` and ``y`` to any order (the attacks match it on dummy data).

    Example:
        >>> from jaxinv.models import apply_logits, create, init_variables
        >>> m = create("dlg-lenet", 10); v = init_variables(m, (28, 28, 1))
        >>> g = client_update(apply_logits(m), v, jnp.zeros((1, 28, 28, 1)), jnp.array([3]))
        >>> g["Dense_0"]["kernel"].shape
        (588, 10)
    """
    params = variables["params"]
    rest = {k: v for k, v in variables.items() if k != "params"}

    def loss(p):
        return soft_cross_entropy(apply_fn({"params": p, **rest}, x), y)

    if local_steps == 0:
        return jax.grad(loss)(params)

    def sgd(p, _):
        return jax.tree.map(lambda a, g: a - lr * g, p, jax.grad(loss)(p)), None

    final, _ = jax.lax.scan(sgd, params, None, length=local_steps)
    return jax.tree.map(jnp.subtract, params, final)


def shared_updates(apply_fn: Apply, variables: dict, x: np.ndarray, y: np.ndarray, *,
                   local_steps: int = 0, lr: float = 1e-4) -> tuple[Any, np.ndarray]:
    """Every victim's shared update, ``x [V, B, H, W, C]``, ``y [V, B]`` -> a pytree with
    leading axis ``V`` (host NumPy) and ``finite [V]``: ``False`` flags a victim whose
    update holds NaN/inf (a broken model or input), to be reported, never averaged in.

    Example:
        >>> from jaxinv.models import apply_logits, create, init_variables
        >>> m = create("dlg-lenet", 10); v = init_variables(m, (28, 28, 1))
        >>> g, ok = shared_updates(apply_logits(m), v, np.zeros((3, 1, 28, 28, 1)),
        ...                        np.zeros((3, 1), int))
        >>> g["Conv_0"]["kernel"].shape, ok.tolist()
        ((3, 5, 5, 1, 12), [True, True, True])
    """
    x, y = np.asarray(x, np.float32), np.asarray(y)
    if x.ndim != 5 or y.shape[:2] != x.shape[:2]:
        raise ValueError(f"victim batches must be x [V, B, H, W, C] and y [V, B] (or "
                         f"[V, B, K]), got x {x.shape} and y {y.shape}")
    if local_steps < 0 or (local_steps and not lr > 0):
        raise ValueError(f"local_steps must be >= 0 and lr > 0, got {local_steps}, {lr}")
    one = lambda v, xb, yb: client_update(apply_fn, v, xb, yb, local_steps=local_steps, lr=lr)
    # the weights are an argument, not constants folded into the program (slow to compile)
    updates = compile_once(jax.jit(jax.vmap(one, (None, 0, 0))), variables, x, y)(
        variables, x, y)
    return jax.tree.map(np.asarray, updates), finite_victims(updates)


def finite_victims(updates: Any) -> np.ndarray:
    """``[V]`` bool: which victims' updates are entirely finite.

    Example:
        >>> finite_victims({"w": np.array([[1.0, 2.0], [np.nan, 0.0]])}).tolist()
        [True, False]
    """
    leaves = jax.tree.leaves(updates)
    ok = [np.isfinite(np.asarray(a)).reshape(len(a), -1).all(1) for a in leaves]
    return np.logical_and.reduce(ok)


def fedavg(updates: Any, weights: np.ndarray | None = None) -> Any:
    """The server's weighted mean of client updates (leading axis ``V``); raises on a
    client whose update is not finite instead of averaging NaN into the model.

    Example:
        >>> fedavg({"w": np.array([[1.0], [3.0]])})["w"].tolist()
        [2.0]
    """
    ok = finite_victims(updates)
    if not ok.all():
        raise FloatingPointError(f"client update(s) {np.flatnonzero(~ok).tolist()} hold "
                                 "NaN/inf; drop or inspect them before averaging")
    n = len(ok)
    w = np.full(n, 1.0 / n) if weights is None else np.asarray(weights, float) / np.sum(weights)
    return jax.tree.map(lambda a: np.tensordot(w, np.asarray(a), axes=1), updates)


def check_update_tree(updates: Any, params: Any, batched: bool = True) -> None:
    """Raise ``ValueError`` naming the first leaf where ``updates`` (leading axis ``V`` when
    ``batched``) does not match the model's ``params`` in structure or shape.

    Example:
        >>> check_update_tree({"w": np.zeros((2, 3))}, {"w": np.zeros(3)})
        >>> check_update_tree({"w": np.zeros((2, 4))}, {"w": np.zeros(3)})
        Traceback (most recent call last):
        ValueError: gradient leaf ['w'] has shape (4,) per victim; the model's parameter has (3,)
    """
    want = jax.tree_util.tree_flatten_with_path(params)[0]
    got, got_def = jax.tree_util.tree_flatten_with_path(updates)
    if jax.tree.structure(params) != got_def:
        names = lambda t: sorted(jax.tree_util.keystr(p) for p, _ in t)
        missing = sorted(set(names(want)) - set(names(got)))
        extra = sorted(set(names(got)) - set(names(want)))
        raise ValueError(f"gradient pytree does not match the model's parameters: missing "
                         f"{missing[:3]}, unexpected {extra[:3]}")
    for (path, w), (_, g) in zip(want, got, strict=True):
        shape = np.shape(g)[1:] if batched else np.shape(g)
        if tuple(shape) != tuple(np.shape(w)):
            raise ValueError(f"gradient leaf {_keys(path)} has shape {tuple(shape)} per victim; "
                             f"the model's parameter has {tuple(np.shape(w))}")


def _keys(path) -> list[str]:
    return [str(getattr(k, "key", getattr(k, "idx", k))) for k in path]


__all__ = ["check_update_tree", "client_update", "fedavg", "finite_victims",
           "shared_updates", "soft_cross_entropy"]
