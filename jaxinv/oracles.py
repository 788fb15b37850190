"""Oracles: what the attacker sees of the target model, as pure functions.

An :class:`Oracle` is ``query(key, env, x[B, H, W, C]) -> response`` plus its ``kind``
(the threat model). Attacks call it inside their jitted ``step`` on a batch of inputs of
ONE chain; ``env`` carries the model variables, ``key`` drives randomised defenses.

Black-box attacks do not call an oracle themselves: they are ask/tell kernels
(:class:`jaxinv.core.protocol.BlackBox`), and :func:`jaxinv.core.protocol.as_attack` puts an oracle
between ``ask`` and ``tell`` for in-process runs (an HTTP client takes its place for
remote ones, :func:`jaxinv.core.remote.run_remote`). Query budgets are per chain and exact:
a kernel counts ``queries`` in its ``State`` and sets ``done`` when the next step would
overspend (:func:`jaxinv.core.protocol.budget_rule`, the one rule).

Example:
    >>> from jaxinv import defenses
    >>> from jaxinv.models import apply_logits
    >>> oracle = score(apply_logits(module), defense=defenses.parse("topk:3"))
    >>> probs = oracle.query(key, variables, x)  # x: 16 digits images
    >>> probs.shape, (probs > 0).sum(-1).max()  # [B, K], top-3 only
    ((16, 10), Array(3, dtype=int32))
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxinv.defenses import Defense, identity

KINDS = ("white-box", "gray-box", "score", "label")

Apply = Callable[[Any, jax.Array], jax.Array]


class Oracle(NamedTuple):
    """The attacker's access to the target: ``query(key, env, x[B, ...]) -> response``.

    ``kind`` is one of :data:`KINDS`: ``"white-box"`` (logits, differentiable),
    ``"gray-box"`` (features), ``"score"`` (defended probabilities ``[B, K]``) or
    ``"label"`` (int32 labels ``[B]``).

    Example:
        >>> from jaxinv.models import apply_logits
        >>> oracle = label(apply_logits(module))
        >>> oracle.kind, oracle.query(key, variables, x).dtype
        ('label', dtype('int32'))
    """

    kind: str
    query: Callable[[jax.Array, Any, jax.Array], jax.Array]
    logits: Apply | None = None  # the undefended model, for host-side checks (class count)


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
        >>> from jaxinv.models import apply_logits
        >>> oracle = white_box(apply_logits(module))
        >>> oracle.query(key, variables, x).shape
        (16, 10)
        >>> g = jax.grad(lambda x: oracle.query(key, variables, x)[:, 3].sum())(x)
        >>> g.shape  # d logit_3 / d x, one per input pixel
        (16, 8, 8, 1)
    """
    _check_fn("apply_logits", apply_logits)
    return Oracle("white-box", lambda key, env, x: apply_logits(env, x), apply_logits)


def gray_box(apply_features: Apply) -> Oracle:
    """Gray-box access: intermediate features / embeddings ``[B, D]``.

    Example:
        >>> from jaxinv.models import apply_features
        >>> oracle = gray_box(apply_features(module))
        >>> oracle.query(key, variables, x).shape  # the CNN's 128 penultimate features
        (16, 128)
    """
    _check_fn("apply_features", apply_features)
    return Oracle("gray-box", lambda key, env, x: apply_features(env, x))


def score(apply_logits: Apply, defense: Defense | None = None) -> Oracle:
    """Score (black-box) access: ``defense.apply(key, softmax(logits))``, ``[B, K]``.

    Probabilities are computed in at least float32. The attack must treat the response
    as a black box (it is not meant to be differentiated).

    Example:
        >>> from jaxinv import defenses
        >>> from jaxinv.models import apply_logits
        >>> oracle = score(apply_logits(module), defense=defenses.round_to(2))
        >>> probs = oracle.query(key, variables, x)
        >>> probs.shape, bool(jnp.all(probs == probs.round(2)))
        ((16, 10), True)
    """
    _check_fn("apply_logits", apply_logits)
    defense = identity() if defense is None else defense
    _check_defense(defense)
    return Oracle("score", lambda key, env, x: defense.apply(key, _probs(apply_logits, env, x)),
                  apply_logits)


def label(apply_logits: Apply, defense: Defense | None = None) -> Oracle:
    """Label-only access: int32 ``argmax`` of the defended probabilities, ``[B]``.

    Example:
        >>> from jaxinv.models import apply_logits
        >>> oracle = label(apply_logits(module))
        >>> labels = oracle.query(key, variables, x)
        >>> labels.shape, labels.dtype
        ((16,), dtype('int32'))
    """
    _check_fn("apply_logits", apply_logits)
    defense = identity() if defense is None else defense
    _check_defense(defense)

    def query(key: jax.Array, env: Any, x: jax.Array) -> jax.Array:
        return defense.apply(key, _probs(apply_logits, env, x)).argmax(-1).astype(jnp.int32)

    return Oracle("label", query, apply_logits)


__all__ = ["KINDS", "Oracle", "gray_box", "label", "score", "white_box"]
