"""What the in-process and the remote drivers share: the chain layout, keys, targets,
the run fingerprint and the per-chain bookkeeping (best iterate, frozen chains).

Chain ``i`` of a run over ``T`` targets with ``C`` chains each (and, for a sweep, ``H``
hyper-parameter settings) works on target ``(i // C) % T`` with setting ``i // (T C)``
and key ``fold_in(key(seed), i % (T C))``; step keys are ``fold_in(chain_key, t)``. Nothing of
this depends on the number of devices or on ``chunk``, so a run resumes on any mesh.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxinv.core.protocol import Attack, PyTree, check_state, healthy, jsonable, tree_where


class Carry(NamedTuple):
    """Per-chain driver state (leading axis: chains)."""

    state: PyTree  # the attack's State
    best_x: jax.Array  # lowest-loss iterate seen so far
    best_loss: jax.Array  # its loss
    failed: jax.Array  # bool: a step went non-finite; the chain is frozen


class RunResult(NamedTuple):
    """What a driver returns (host NumPy, leading axes ``[targets, chains]``, or
    ``[settings, targets, chains]`` for a sweep). ``info`` leaves: ``[steps_run, ...]``."""

    state: PyTree
    x_init: np.ndarray
    best_x: np.ndarray
    best_loss: np.ndarray
    failed: np.ndarray
    info: PyTree
    steps_run: int
    timing: dict[str, float]


class Layout(NamedTuple):
    """The chain layout of a run (host-side, static)."""

    num_targets: int
    chains: int
    settings: int  # sweep size H (1: no sweep)
    shape: tuple[int, ...]  # leading result axes

    @property
    def n(self) -> int:
        return self.settings * self.num_targets * self.chains

    def target_index(self) -> np.ndarray:
        return (np.arange(self.n) // self.chains % self.num_targets).astype(np.int32)

    def key_index(self) -> np.ndarray:
        """Chain keys do not depend on the setting: a sweep runs every setting from the
        same starts (common random numbers) and equals separate runs."""
        return (np.arange(self.n) % (self.num_targets * self.chains)).astype(np.int32)

    def setting_index(self) -> np.ndarray:
        return (np.arange(self.n) // (self.num_targets * self.chains)).astype(np.int32)


def check_targets(targets: PyTree) -> tuple[PyTree, int]:
    """Targets as a pytree of host arrays with one common leading axis ``T >= 1``.

    Example:
        >>> check_targets([0, 1, 2])[1]
        3
    """
    if isinstance(targets, list | tuple | range) and all(
            isinstance(t, int | np.integer) for t in targets):
        targets = np.asarray(list(targets), np.int32)
    leaves = jax.tree.leaves(targets)
    if not leaves:
        raise ValueError("targets: expected a pytree of arrays with a leading axis, got an "
                         "empty pytree")
    leaves = [np.asarray(a) for a in leaves]
    sizes = {a.shape[0] if a.ndim else None for a in leaves}
    if None in sizes or len(sizes) != 1 or 0 in sizes:
        raise ValueError(f"targets: every leaf needs the same non-empty leading axis, got "
                         f"shapes {[a.shape for a in leaves]}")
    for a in leaves:
        if a.dtype == object or not (np.issubdtype(a.dtype, np.number) or a.dtype == bool):
            raise ValueError(f"targets: leaves must be numeric arrays, got dtype {a.dtype}")
        if np.issubdtype(a.dtype, np.inexact) and not np.all(np.isfinite(a)):
            raise ValueError("targets: contain NaN or inf")
    host = jax.tree.unflatten(jax.tree.structure(targets), leaves)
    return host, sizes.pop()


def check_counts(**counts: Any) -> None:
    """Raise unless every count is a positive int.

    Example:
        >>> check_counts(chains=4, steps=10)
    """
    for name, v in counts.items():
        if isinstance(v, bool) or not isinstance(v, int | np.integer) or v < 1:
            raise ValueError(f"{name} must be a positive int, got {v!r}")


def check_sweep(sweep: dict[str, Any] | None) -> tuple[dict[str, np.ndarray], int]:
    """Sweep values as 1-D float32/int arrays of one length ``H``.

    Example:
        >>> check_sweep({"lr": [0.1, 0.2]})[1]
        2
    """
    if not sweep:
        return {}, 1
    out = {k: np.asarray(v) for k, v in sweep.items()}
    sizes = {v.shape for v in out.values()}
    if len(sizes) != 1 or len(next(iter(sizes))) != 1 or next(iter(sizes))[0] < 1:
        raise ValueError(f"sweep: expected 1-D value lists of one length, got "
                         f"{ {k: v.shape for k, v in out.items()} }")
    return out, int(next(iter(sizes))[0])


def kernel_for(attack: Attack | Callable[..., Attack], sweep: dict[str, np.ndarray],
               ) -> Callable[[dict], Attack]:
    """``hp -> Attack``: the attack itself, or for a sweep the factory called with ``hp``."""
    if not sweep:
        if not isinstance(attack, Attack):
            raise TypeError(f"expected an Attack (init, step), got {attack!r}; pass a factory "
                            "only together with sweep=")
        return lambda hp: attack
    if isinstance(attack, Attack) or not callable(attack):
        raise TypeError("with sweep=, pass the attack factory (e.g. functools.partial("
                        "mi_face, apply_fn, shape)), called as factory(**setting) per chain")
    return lambda hp: attack(**hp)


def chain_keys(seed: int, index: jax.Array) -> jax.Array:
    """Chain keys ``fold_in(key(seed), i)`` for the key indices ``index``.

    Example:
        >>> chain_keys(0, jnp.arange(4)).shape
        (4,)
    """
    base = jax.random.key(seed)
    return jax.vmap(lambda i: jax.random.fold_in(base, i))(index)


def fingerprint(kernel: Attack, *, layout: Layout, targets: PyTree, seed: int,
                sweep: dict[str, np.ndarray], config: dict | None) -> dict:
    """What must match for a checkpoint to be resumed: every option that changes results
    (kernel options, targets, chains, seed, sweep, the caller's config), nothing else.

    Example:
        >>> from jaxinv.attacks import mi_face
        >>> attack = mi_face(lambda env, x: x.reshape(len(x), -1) @ env, (2, 2, 1))
        >>> fp = fingerprint(attack, layout=Layout(3, 2, 1, (3, 2)), targets=np.arange(3),
        ...                  seed=0, sweep={}, config=None)
        >>> sorted(fp)
        ['chains', 'config', 'kernel', 'num_targets', 'seed', 'sweep', 'targets']
    """
    digest = hashlib.sha256()
    for a in jax.tree.leaves(targets):
        a = np.ascontiguousarray(a)
        digest.update(f"{a.dtype}{a.shape}".encode())
        digest.update(a.tobytes())
    kcfg = kernel.config if kernel.config is not None else {
        "step": getattr(kernel.step, "__qualname__", "?")}
    return json.loads(json.dumps({
        "kernel": jsonable(kcfg), "targets": digest.hexdigest()[:16],
        "num_targets": layout.num_targets, "chains": layout.chains, "seed": int(seed),
        "sweep": {k: v.tolist() for k, v in sweep.items()}, "config": jsonable(config)},
        allow_nan=False))


def probe(kernel: Attack, target: PyTree, env: PyTree) -> None:
    """Check the kernel's State on one chain (abstractly) before any work.

    Example:
        >>> from jaxinv.attacks import mi_face
        >>> attack = mi_face(lambda env, x: x.reshape(len(x), -1) @ env, (2, 2, 1))
        >>> probe(attack, 0, jnp.eye(4, 3))  # silent: the State follows the conventions
    """
    check_state(jax.eval_shape(kernel.init, jax.random.key(0), target, env))


def init_carry(kernel: Attack, key: jax.Array, target: PyTree, env: PyTree) -> Carry:
    """A chain's first carry: its state, best so far = the start, failed if non-finite.

    Example:
        >>> from jaxinv.attacks import mi_face
        >>> attack = mi_face(lambda env, x: x.reshape(len(x), -1) @ env, (2, 2, 1))
        >>> bool(init_carry(attack, jax.random.key(0), 1, jnp.eye(4, 3)).failed)
        False
    """
    state = kernel.init(key, target, env)
    return Carry(state, state.x, state.loss, ~healthy(state))


def accept(carry: Carry, new_state: PyTree) -> Carry:
    """Take a chain's new state unless it is done or failed; track its best iterate and
    freeze it (``failed``) if the new state is non-finite.

    Example:
        >>> from jaxinv.attacks import mi_face
        >>> attack = mi_face(lambda env, x: x.reshape(len(x), -1) @ env, (2, 2, 1))
        >>> carry = init_carry(attack, jax.random.key(0), 1, jnp.eye(4, 3))
        >>> state, _ = attack.step(jax.random.key(1), carry.state, 1, jnp.eye(4, 3))
        >>> bool(accept(carry, state).best_loss <= carry.best_loss)
        True
    """
    done = getattr(carry.state, "done", jnp.bool_(False))
    finite = healthy(new_state)
    active = ~carry.failed & ~done
    moved = active & finite
    state = tree_where(moved, new_state, carry.state)
    improved = moved & (new_state.loss < carry.best_loss)
    best_x = jnp.where(improved, new_state.x, carry.best_x)
    best_loss = jnp.where(improved, new_state.loss, carry.best_loss)
    failed = carry.failed | (active & ~finite)
    return Carry(state, best_x, best_loss, failed)


def gather(tree: PyTree, i: jax.Array) -> PyTree:
    """Row ``i`` of every leaf (one chain's target or setting)."""
    return jax.tree.map(lambda a: a[i], tree)


def unflatten(layout: Layout, tree: PyTree, axis: int = 0) -> PyTree:
    """Host arrays with a chain axis of length >= n at ``axis`` -> the result axes."""

    def one(a):
        a = np.asarray(a)
        a = np.take(a, np.arange(layout.n), axis=axis)
        return a.reshape(a.shape[:axis] + layout.shape + a.shape[axis + 1:])

    return jax.tree.map(one, tree)


def check_init(failed: np.ndarray, n: int) -> None:
    """Raise if chains start non-finite (a model returning NaN/inf)."""
    bad = int(np.sum(np.asarray(failed)[:n]))
    if bad:
        raise FloatingPointError(
            f"{bad} of {n} chains start with a non-finite state (NaN/inf in the initial "
            "iterate or its loss): the target model returns non-finite outputs. Check the "
            "model variables in env and the input range.")
