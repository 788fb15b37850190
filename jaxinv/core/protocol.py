"""The kernel protocol every attack follows (v2).

An attack is a set of pure functions on ONE chain, in the spirit of optax's
``GradientTransformation`` and blackjax's ``SamplingAlgorithm``. The chain's *target*
(a class index, a probability vector, a victim's gradient pytree...) and ``env`` (model
and generator parameters) are explicit arguments of every function: they travel as data,
the driver shards or replicates them, and they never ride in ``State``.

White-box and fused black-box kernels, :class:`Attack`:

* ``init(key, target, env) -> State``
* ``step(key, state, target, env) -> (State, Info)``

Black-box kernels in ask/tell form, :class:`BlackBox` (the same kernel in-process, via
:func:`as_attack`, or over HTTP, via :func:`jaxinv.core.remote.run_remote`):

* ``init(key, target, env) -> State`` (no query)
* ``ask(key, state, target, env) -> Queries(x, z)``: ``x [Q, *input]`` is what is sent
  to the oracle, ``z`` the attacker-side points it decodes from (or ``None``);
* ``tell(key, state, target, queries, answers, env) -> (State, Info)``: receives the
  queries it asked, so it neither redraws nor re-decodes.

Conventions the driver relies on: ``State`` is a NamedTuple of arrays with ``x`` (the
iterate the driver keeps and judges) and ``loss`` (float32 scalar, the cost of ``x``);
an optional bool ``done`` freezes the chain. ``Info`` is a NamedTuple of per-step
values holding ``loss``, optionally ``confidence``. Every kernel records the options
it was built with in ``config`` (a JSON-able dict), which keys resumable runs.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

PyTree = Any
Env = Any


class Attack(NamedTuple):
    """A kernel on one chain: ``init(key, target, env)``, ``step(key, state, target, env)``.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from jaxinv.attacks import mi_face
        >>> f = lambda env, x: x.reshape(len(x), -1) @ env
        >>> attack = mi_face(f, (2, 2, 1), loss="neg_log_p")
        >>> env = jnp.eye(4, 3)
        >>> s = attack.init(jax.random.key(0), 1, env)
        >>> s, info = attack.step(jax.random.key(1), s, 1, env)
        >>> s.x.shape
        (2, 2, 1)
    """

    init: Callable[[jax.Array, PyTree, Env], PyTree]
    step: Callable[[jax.Array, PyTree, PyTree, Env], tuple[PyTree, PyTree]]
    config: dict | None = None
    validate: Callable[[PyTree, Env], None] | None = None  # host-side check of the targets


class Queries(NamedTuple):
    """What ``ask`` returns: ``x`` goes to the oracle, ``z`` stays with the attacker."""

    x: jax.Array
    z: jax.Array | None = None


class BlackBox(NamedTuple):
    """A black-box kernel in ask/tell form on one chain.

    ``kind`` is the oracle it needs (``"score"``: probabilities ``[Q, K]``; ``"label"``:
    int32 labels ``[Q]``); ``num_queries`` the static ``Q`` of one step. ``State`` also
    counts ``queries`` and sets ``done`` when the next step would overspend the budget.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from jaxinv.attacks import zo_inversion
        >>> bb = zo_inversion((2, 2, 1), queries_per_step=4)
        >>> s = bb.init(jax.random.key(0), 1, None)
        >>> q = bb.ask(jax.random.key(1), s, 1, None)
        >>> q.x.shape
        (5, 2, 2, 1)
        >>> s, info = bb.tell(jax.random.key(1), s, 1, q, jnp.full((5, 3), 1 / 3), None)
        >>> int(s.queries)
        5
    """

    init: Callable[[jax.Array, PyTree, Env], PyTree]
    ask: Callable[[jax.Array, PyTree, PyTree, Env], Queries]
    tell: Callable[..., tuple[PyTree, PyTree]]
    kind: str
    num_queries: int
    config: dict | None = None
    validate: Callable[[PyTree, Env], None] | None = None


class OracleEnv(NamedTuple):
    """``env`` of an in-process black-box attack: the oracle's and the attacker's."""

    oracle: Env
    attack: Env = None


def as_attack(blackbox: BlackBox, oracle: Any) -> Attack:
    """The in-process ``Attack`` of a black-box kernel: ``ask``, query ``oracle``, ``tell``.

    Its ``env`` is an :class:`OracleEnv`: ``oracle`` (the target's variables) and
    ``attack`` (the attacker's own arrays, e.g. a generator; default ``None``). A plain
    ``env`` is taken as ``OracleEnv(env)``.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from jaxinv import oracles
        >>> from jaxinv.attacks import zo_inversion
        >>> f = lambda env, x: x.reshape(len(x), -1) @ env
        >>> attack = as_attack(zo_inversion((2, 2, 1), queries_per_step=4), oracles.score(f))
        >>> s = attack.init(jax.random.key(0), 1, jnp.eye(4, 3))
        >>> s, info = attack.step(jax.random.key(1), s, 1, jnp.eye(4, 3))
        >>> int(s.queries)
        5
    """
    if not isinstance(blackbox, BlackBox):
        raise TypeError(f"as_attack wants a BlackBox (ask/tell kernel), got {blackbox!r}")
    if oracle.kind != blackbox.kind:
        raise ValueError(f"this attack needs a {blackbox.kind!r} oracle, got kind "
                         f"{oracle.kind!r}")

    def split(env):
        return env if isinstance(env, OracleEnv) else OracleEnv(env)

    def init(key, target, env):
        return blackbox.init(key, target, split(env).attack)

    def step(key, state, target, env):
        env = split(env)
        k_ask, k_query = jax.random.split(key)
        q = blackbox.ask(k_ask, state, target, env.attack)
        answers = oracle.query(k_query, env.oracle, q.x)
        return blackbox.tell(k_ask, state, target, q, answers, env.attack)

    shape = (blackbox.config or {}).get("input_shape")
    logits = getattr(oracle, "logits", None)

    def validate(targets, env):
        if blackbox.validate is not None:
            blackbox.validate(targets, split(env).attack)
        if shape is not None and logits is not None:  # class targets of a known model
            k = lambda e: jax.eval_shape(
                logits, e, jax.ShapeDtypeStruct((1, *shape), jnp.float32)).shape[-1]
            class_targets(k)(targets, split(env).oracle)

    config = {**(blackbox.config or {}), "oracle": getattr(oracle, "config", oracle.kind)}
    return Attack(init, step, config, validate)


def class_targets(num_classes: Callable[[Env], int]) -> Callable[[PyTree, Env], None]:
    """A ``validate`` for kernels whose targets are class indices: integers in
    ``[0, num_classes(env))``, one-line ``ValueError`` otherwise.

    Example:
        >>> check = class_targets(lambda env: 10)
        >>> check([3, 9], None)
        >>> check([3, 99], None)
        Traceback (most recent call last):
        ValueError: targets: class 99 out of range for a 10-class model (valid: 0..9)
    """

    def validate(targets, env):
        import numpy as np

        t = np.asarray(targets)
        if t.dtype == object or not np.issubdtype(t.dtype, np.integer) or t.ndim != 1:
            raise ValueError(f"targets: expected a 1-D array of class indices, got {t.dtype}"
                             f"{t.shape}")
        k = int(num_classes(env))
        bad = t[(t < 0) | (t >= k)]
        if bad.size:
            raise ValueError(f"targets: class {int(bad[0])} out of range for a {k}-class model"
                             f" (valid: 0..{k - 1})")

    return validate


def jsonable(v: Any) -> Any:
    """A JSON-able stand-in for an option value (callables by qualified name).

    Example:
        >>> jsonable((0.0, 1.0)), jsonable(abs)
        ([0.0, 1.0], 'abs')
    """
    if isinstance(v, bool | int | float | str | type(None)):
        return v
    if isinstance(v, list | tuple):
        return [jsonable(e) for e in v]
    if isinstance(v, dict):
        return {str(k): jsonable(e) for k, e in v.items()}
    if isinstance(v, jax.core.Tracer):
        return "<traced>"
    if hasattr(v, "shape") and hasattr(v, "tolist") and getattr(v, "size", 2) <= 64:
        return jsonable(v.tolist())
    if hasattr(v, "config") and isinstance(v.config, dict):
        return v.config
    return getattr(v, "__qualname__", None) or type(v).__name__


def factory(fn: Callable) -> Callable:
    """Decorate an attack factory: the kernel it returns records its options in ``config``.

    ``config = {"attack": fn.__name__, **options}`` (defaults included), so a resumed run
    with another setting (``lr``, ``momentum``...) is refused. A factory that overrides
    options (a preset) returns ``kernel._replace(config={"resolved": {...}})`` and those
    values are recorded instead.

    Example:
        >>> @factory
        ... def my_attack(input_shape, *, lr=0.1):
        ...     return Attack(lambda k, t, e: None, lambda k, s, t, e: (s, None))
        >>> my_attack((8, 8, 1)).config
        {'attack': 'my_attack', 'input_shape': [8, 8, 1], 'lr': 0.1}
    """
    sig = inspect.signature(fn)

    @functools.wraps(fn)
    def build(*args, **kwargs):
        bound = sig.bind(*args, **kwargs)
        bound.apply_defaults()
        kernel = fn(*args, **kwargs)
        options = {k: jsonable(v) for k, v in bound.arguments.items() if k != "kwargs"}
        options.update({k: jsonable(v) for k, v in bound.arguments.get("kwargs", {}).items()})
        resolved = (kernel.config or {}).get("resolved", {})  # values the factory settled on
        return kernel._replace(config={"attack": fn.__name__, **options, **resolved})

    return build


def check_state(state: PyTree) -> None:
    """Raise ``TypeError`` unless ``state`` follows the driver's conventions.

    Example:
        >>> import jax.numpy as jnp
        >>> from typing import NamedTuple
        >>> class S(NamedTuple):
        ...     x: jnp.ndarray
        ...     loss: jnp.ndarray
        >>> check_state(S(jnp.zeros(3), jnp.float32(0)))
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
        >>> import jax.numpy as jnp
        >>> tree_where(jnp.bool_(True), {"a": 1.0}, {"a": 2.0})["a"]
        Array(1., dtype=float32, weak_type=True)
    """
    return jax.tree.map(lambda a, b: jnp.where(pred, a, b), on_true, on_false)


def healthy(state: PyTree) -> jax.Array:
    """True iff ``state.x`` and ``state.loss`` are finite and no float leaf holds NaN.

    ``inf`` elsewhere is allowed (kernels use it as a sentinel, e.g. ``best = inf``).

    Example:
        >>> import jax.numpy as jnp
        >>> from typing import NamedTuple
        >>> class S(NamedTuple):
        ...     x: jnp.ndarray
        ...     loss: jnp.ndarray
        >>> bool(healthy(S(jnp.zeros(3), jnp.float32(jnp.nan))))
        False
    """
    ok = [jnp.all(jnp.isfinite(state.x)), jnp.isfinite(state.loss)]
    ok += [~jnp.any(jnp.isnan(leaf)) for leaf in jax.tree.leaves(state)
           if jnp.issubdtype(jnp.asarray(leaf).dtype, jnp.inexact)]
    return jnp.all(jnp.stack(ok))


def budget_rule(queries: jax.Array, per_step: int, budget: int | None,
                stopped: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The one query-budget rule: ``(budget_exhausted, done)`` after a step.

    A chain is done if ``stopped`` or if the next step (``per_step`` queries) would
    overspend ``budget`` (``None``: unlimited); so no chain ever spends over its budget.

    Example:
        >>> import jax.numpy as jnp
        >>> [bool(v) for v in budget_rule(jnp.int32(90), 11, 100, jnp.bool_(False))]
        [True, True]
    """
    if budget is None:
        return jnp.bool_(False), stopped
    broke = jnp.asarray(budget, queries.dtype) - queries < per_step
    return broke & ~stopped, stopped | broke


def check_budget(budget: int | None, per_step: int) -> None:
    """Raise unless ``budget`` (queries per chain, or ``None``) pays for one step.

    Example:
        >>> check_budget(100, 11)
    """
    if budget is not None and (isinstance(budget, bool) or not isinstance(budget, int)
                               or not per_step <= budget <= 2**31 - 1):
        raise ValueError(f"budget must be an int that pays for one step ({per_step} "
                         f"queries) and fits int32 query counters, got {budget!r}")
