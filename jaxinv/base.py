"""The kernel protocol every attack follows.

An attack is a pair of pure functions on ONE chain, in the spirit of optax's
``GradientTransformation(init, update)`` and blackjax's ``SamplingAlgorithm``:

* ``init(key, target, env) -> State``
* ``step(key, state, env) -> (State, Info)``

``target`` is the class to invert (an int32 scalar); ``env`` carries the large
arrays (model parameters) so swapping the target model never retraces. The
driver (:func:`jaxinv.run.run_chains`) vmaps, chunks, shards and checkpoints.

Conventions the driver relies on:

* ``State`` is a NamedTuple of arrays with fields ``x`` (the current iterate)
  and ``loss`` (the attack cost of ``x``, float32 scalar); an optional ``done``
  (bool scalar) freezes the chain once its stopping rule fires.
* ``Info`` is a NamedTuple of per-step scalars; it must hold ``loss`` and may
  hold ``confidence`` (target-class probability), shown by the progress bar.

Black-box attacks are written in ask/tell form, :class:`BlackBox`, so the same kernel
runs in-process (:func:`as_attack` wraps it with an in-jit oracle into an ``Attack``)
and against a remote API (:func:`jaxinv.remote.run_remote` sends ``ask``'s queries over
HTTP and feeds the answers to ``tell``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

PyTree = Any
Env = Any


class Attack(NamedTuple):
    """A model-inversion attack as two pure functions on one chain.

    Example:
        >>> attack = jaxinv.attacks.mi_face(apply_fn, input_shape=(8, 8, 1))
        >>> state = attack.init(jax.random.key(0), jnp.int32(3), env)
        >>> state, info = attack.step(jax.random.key(1), state, env)
    """

    init: Callable[[jax.Array, jax.Array, Env], PyTree]
    step: Callable[[jax.Array, PyTree, Env], tuple[PyTree, PyTree]]


class BlackBox(NamedTuple):
    """A black-box attack in ask/tell form, pure functions on ONE chain.

    * ``init(key, target) -> State``: makes no query;
    * ``ask(key, state) -> queries [num_queries, *input_shape]``;
    * ``tell(key, state, responses) -> (State, Info)`` with the SAME ``key`` as ``ask``
      (so ``tell`` can redraw the directions ``ask`` used) and ``responses`` what an oracle
      of ``kind`` returns for the queries: probabilities ``[Q, K]`` (``"score"``) or int32
      labels ``[Q]`` (``"label"``).

    ``State`` follows the ``Attack`` conventions plus ``queries`` (int32, answered so far)
    and ``budget_exhausted``; ``tell`` sets ``done`` when the next step would overspend,
    so a driver sends queries only for chains that are not ``done``.

    Example:
        >>> bb = zo_inversion((8, 8, 1), queries_per_step=20)
        >>> s = bb.init(key, jnp.int32(3))
        >>> s, info = bb.tell(key, s, oracle.query(k2, env, bb.ask(key, s)))
    """

    init: Callable[[jax.Array, jax.Array], PyTree]
    ask: Callable[[jax.Array, PyTree], jax.Array]
    tell: Callable[[jax.Array, PyTree, jax.Array], tuple[PyTree, PyTree]]
    kind: str
    num_queries: int


def as_attack(blackbox: BlackBox, oracle: Any) -> Attack:
    """The in-process ``Attack`` of a black-box kernel: ``ask``, query ``oracle``, ``tell``.

    Example:
        >>> attack = as_attack(zo_inversion((8, 8, 1)), oracles.score(apply_logits(module)))
        >>> res = run_chains(attack, jnp.arange(10), variables, chains=8, steps=100)
    """
    if not isinstance(blackbox, BlackBox):
        raise TypeError(f"as_attack wants a BlackBox (ask/tell kernel), got {blackbox!r}")
    if oracle.kind != blackbox.kind:
        raise ValueError(f"this attack needs a {blackbox.kind!r} oracle, got kind "
                         f"{oracle.kind!r}")

    def init(key: jax.Array, target: jax.Array, env: Env) -> PyTree:
        return blackbox.init(key, target)

    def step(key: jax.Array, state: PyTree, env: Env) -> tuple[PyTree, PyTree]:
        k_ask, k_query = jax.random.split(key)
        responses = oracle.query(k_query, env, blackbox.ask(k_ask, state))
        return blackbox.tell(k_ask, state, responses)

    return Attack(init, step)


def check_state(state: PyTree) -> None:
    """Raise ``TypeError`` unless ``state`` follows the driver's conventions.

    Example:
        >>> check_state(attack.init(key, jnp.int32(0), env))
    """
    for field in ("x", "loss"):
        if not hasattr(state, field):
            raise TypeError(
                f"attack State must have a '{field}' field (got {type(state).__name__} "
                f"with fields {getattr(state, '_fields', '?')})"
            )
    loss = state.loss  # an array or a ShapeDtypeStruct (from jax.eval_shape)
    if getattr(loss, "shape", None) != () or getattr(loss, "dtype", None) != jnp.float32:
        raise TypeError(f"State.loss must be a float32 scalar, got {loss.dtype}{loss.shape}")


def tree_where(pred: jax.Array, on_true: PyTree, on_false: PyTree) -> PyTree:
    """Select between two pytrees of the same structure with a scalar predicate.

    Example:
        >>> tree_where(jnp.bool_(True), state_new, state_old)  # -> state_new
    """
    return jax.tree.map(lambda a, b: jnp.where(pred, a, b), on_true, on_false)


def healthy(state: PyTree) -> jax.Array:
    """True iff ``state.x`` and ``state.loss`` are finite and no leaf holds NaN.

    ``inf`` elsewhere is allowed (kernels use it as a sentinel, e.g. ``best = inf``).

    Example:
        >>> healthy(attack.init(key, jnp.int32(0), env))
        Array(True, dtype=bool)
    """
    ok = [jnp.all(jnp.isfinite(state.x)), jnp.isfinite(state.loss)]
    ok += [~jnp.any(jnp.isnan(leaf)) for leaf in jax.tree.leaves(state)
           if jnp.issubdtype(jnp.asarray(leaf).dtype, jnp.inexact)]
    return jnp.all(jnp.stack(ok))
