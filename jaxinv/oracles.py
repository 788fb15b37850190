"""Oracles: what the attacker sees of the target model, as pure functions.

An :class:`Oracle` is ``query(key, env, x[B, H, W, C]) -> response`` plus its ``kind``
(the threat model). Attacks call it inside their jitted ``step`` on a batch of inputs of
ONE chain; ``env`` carries the model variables, ``key`` drives randomised defenses.

Black-box attacks do not call an oracle themselves: they are ask/tell kernels
(:class:`jaxinv.base.BlackBox`), and :func:`jaxinv.base.as_attack` puts an oracle
between ``ask`` and ``tell`` for in-process runs (an HTTP client takes its place for
remote ones, :func:`jaxinv.remote.run_remote`). Query budgets are per chain and exact:
a kernel counts ``queries`` in its ``State`` and sets ``done`` when the next step would
overspend. :func:`spend` is the same rule for kernels that call an oracle inside
``step``.

Example:
    >>> oracle = score(apply_logits(module), defense=defenses.parse("topk:3"))
    >>> probs = oracle.query(jax.random.key(0), variables, x)  # [B, K], top-3 only
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxinv.defenses import Defense, identity

KINDS = ("white-box", "gray-box", "score", "label")
_INT32_MAX = 2**31 - 1

Apply = Callable[[Any, jax.Array], jax.Array]


class Oracle(NamedTuple):
    """The attacker's access to the target: ``query(key, env, x[B, ...]) -> response``.

    ``kind`` is one of :data:`KINDS`: ``"white-box"`` (logits, differentiable),
    ``"gray-box"`` (features), ``"score"`` (defended probabilities ``[B, K]``) or
    ``"label"`` (int32 labels ``[B]``).

    Example:
        >>> oracle = label(apply_logits(module))
        >>> oracle.kind, oracle.query(key, variables, x).dtype
        ('label', dtype('int32'))
    """

    kind: str
    query: Callable[[jax.Array, Any, jax.Array], jax.Array]


def _check_fn(name: str, fn: object) -> None:
    if not callable(fn):
        raise ValueError(f"{name}: expected a callable (variables, x) -> array, received {fn!r}")


def _check_defense(defense: object) -> None:
    if not isinstance(defense, Defense):
        raise ValueError(f"defense: expected a jaxinv.defenses.Defense (e.g. "
                         f"defenses.parse('topk:3')), received {defense!r}")


def _probs(apply_logits: Apply, env: Any, x: jax.Array) -> jax.Array:
    logits = apply_logits(env, x)
    return jax.nn.softmax(logits.astype(jnp.promote_types(logits.dtype, jnp.float32)), -1)


def white_box(apply_logits: Apply) -> Oracle:
    """White-box access: the logits ``[B, K]``, differentiable with ``jax.grad``.

    Example:
        >>> oracle = white_box(apply_logits(module))
        >>> g = jax.grad(lambda x: oracle.query(key, variables, x)[:, 3].sum())(x)
    """
    _check_fn("apply_logits", apply_logits)
    return Oracle("white-box", lambda key, env, x: apply_logits(env, x))


def gray_box(apply_features: Apply) -> Oracle:
    """Gray-box access: intermediate features / embeddings ``[B, D]``.

    Example:
        >>> oracle = gray_box(apply_features(module))
        >>> feats = oracle.query(key, variables, x)
    """
    _check_fn("apply_features", apply_features)
    return Oracle("gray-box", lambda key, env, x: apply_features(env, x))


def score(apply_logits: Apply, defense: Defense | None = None) -> Oracle:
    """Score (black-box) access: ``defense.apply(key, softmax(logits))``, ``[B, K]``.

    Probabilities are computed in at least float32. The attack must treat the response
    as a black box (it is not meant to be differentiated).

    Example:
        >>> oracle = score(apply_logits(module), defense=defenses.round_to(2))
        >>> probs = oracle.query(jax.random.key(0), variables, x)
    """
    _check_fn("apply_logits", apply_logits)
    defense = identity() if defense is None else defense
    _check_defense(defense)
    return Oracle("score", lambda key, env, x: defense.apply(key, _probs(apply_logits, env, x)))


def label(apply_logits: Apply, defense: Defense | None = None) -> Oracle:
    """Label-only access: int32 ``argmax`` of the defended probabilities, ``[B]``.

    Example:
        >>> oracle = label(apply_logits(module))
        >>> labels = oracle.query(key, variables, x)  # int32 [B]
    """
    _check_fn("apply_logits", apply_logits)
    defense = identity() if defense is None else defense
    _check_defense(defense)

    def query(key: jax.Array, env: Any, x: jax.Array) -> jax.Array:
        return defense.apply(key, _probs(apply_logits, env, x)).argmax(-1).astype(jnp.int32)

    return Oracle("label", query)


def spend(used: jax.Array, n: int, budget: int | None) -> tuple[jax.Array, jax.Array]:
    """Try to spend ``n`` queries: ``(allowed, new_used)``, pure and jit-safe.

    ``allowed`` (bool scalar) iff ``used + n <= budget`` (``budget=None``: unlimited);
    ``new_used = used + n`` when allowed, else ``used`` unchanged. ``n`` and ``budget``
    are static Python ints, checked here.

    Example:
        >>> allowed, queries = spend(state.queries, 33, budget=1000)
        >>> new_state = tree_where(allowed, new_state, frozen_state)
    """
    if not isinstance(n, int) or isinstance(n, bool) or not 0 <= n <= _INT32_MAX:
        raise ValueError(f"spend n: expected an int in [0, {_INT32_MAX}], received {n!r}")
    if budget is not None and (not isinstance(budget, int) or isinstance(budget, bool)
                               or not 0 <= budget <= _INT32_MAX):
        raise ValueError(f"spend budget: expected None or an int in [0, {_INT32_MAX}], "
                         f"received {budget!r}")
    used = jnp.asarray(used)
    new = used + jnp.asarray(n, used.dtype)
    if budget is None:
        return jnp.ones((), jnp.bool_), new
    # compare as budget - used >= n: no int32 overflow for any valid budget
    allowed = jnp.asarray(budget, used.dtype) - used >= n
    return allowed, jnp.where(allowed, new, used)


__all__ = ["KINDS", "Oracle", "gray_box", "label", "score", "spend", "white_box"]
