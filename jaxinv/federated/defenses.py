"""Defenses a client applies to its update before sharing it: ``(key, update) -> update``.

``noise:STD`` adds ``N(0, STD^2)`` to every entry (DLG's Gaussian defense); ``dp:C,M``
clips the whole update to L2 norm ``C`` and adds ``N(0, (M C)^2)`` (the Gaussian mechanism
of DP-FedAvg, one client's step; no accounting here); ``prune:R`` zeroes the fraction ``R``
of smallest-magnitude entries of every tensor (DLG's gradient pruning). Larger batches and
more local steps are oracle settings (:func:`jaxinv.federated.shared_updates`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxinv.core import rng

UpdateDefense = Callable[[jax.Array, Any], Any]
KINDS = ("none", "noise", "dp", "prune")


def gaussian(std: float) -> UpdateDefense:
    """Add ``N(0, std^2)`` to every entry.

    Example:
        >>> g = gaussian(0.1)(jax.random.key(0), {"w": jnp.zeros(1000)})
        >>> 0.09 < float(jnp.std(g["w"])) < 0.11
        True
    """
    _positive("noise std", std, zero_ok=True)

    return lambda key, update: _add_noise(key, update, std)


def clip_and_noise(clip: float, multiplier: float) -> UpdateDefense:
    """Clip the update to global L2 norm ``clip``, then add ``N(0, (multiplier clip)^2)``.

    Example:
        >>> g = clip_and_noise(1.0, 0.0)(jax.random.key(0), {"w": jnp.full(4, 3.0)})
        >>> round(float(jnp.linalg.norm(g["w"])), 4)
        1.0
    """
    _positive("clip norm", clip)
    _positive("noise multiplier", multiplier, zero_ok=True)

    def apply(key, update):
        norm = jnp.sqrt(sum(jnp.sum(jnp.square(a)) for a in jax.tree.leaves(update)))
        scale = jnp.minimum(1.0, clip / jnp.maximum(norm, 1e-12))
        return _add_noise(key, jax.tree.map(lambda a: a * scale, update),
                               multiplier * clip)

    return apply


def _add_noise(key: jax.Array, update: Any, std: jax.Array | float) -> Any:
    leaves, tree = jax.tree.flatten(update)
    keys = jax.random.split(key, len(leaves))
    return jax.tree.unflatten(tree, [a + std * rng.normal(k, a.shape, a.dtype)
                                     for k, a in zip(keys, leaves, strict=True)])


def prune(rate: float) -> UpdateDefense:
    """Zero the ``rate`` fraction of smallest-magnitude entries of every tensor.

    Example:
        >>> prune(0.5)(None, {"w": jnp.array([0.1, -3.0, 0.2, 4.0])})["w"].tolist()
        [0.0, -3.0, 0.0, 4.0]
    """
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"prune rate must be in [0, 1), got {rate!r}")

    def one(a):
        cut = jnp.quantile(jnp.abs(a).ravel(), rate)
        return jnp.where(jnp.abs(a) > cut, a, 0.0) if rate > 0 else a

    return lambda key, update: jax.tree.map(one, update)


def none() -> UpdateDefense:
    """Share the update as it is.

    Example:
        >>> none()(None, {"w": 1.0})
        {'w': 1.0}
    """
    return lambda key, update: update


def parse(spec: str | None) -> UpdateDefense:
    """``"none"``, ``"noise:STD"``, ``"dp:CLIP,MULTIPLIER"`` or ``"prune:RATE"``.

    Example:
        >>> parse("prune:0.5")(None, {"w": jnp.array([1.0, 2.0])})["w"].tolist()
        [0.0, 2.0]
    """
    spec = (spec or "none").strip()
    kind, _, arg = spec.partition(":")
    try:
        vals = [float(v) for v in arg.split(",")] if arg else []
    except ValueError:
        raise ValueError(f"bad update defense {spec!r}: arguments must be numbers") from None
    want = {"none": 0, "noise": 1, "dp": 2, "prune": 1}
    if kind not in want:
        raise ValueError(f"unknown update defense {kind!r}; choose one of {KINDS}")
    if len(vals) != want[kind]:
        raise ValueError(f"update defense {kind!r} takes {want[kind]} number(s), got {spec!r}")
    return {"none": none, "noise": gaussian, "dp": clip_and_noise, "prune": prune}[kind](*vals)


def apply_defense(defense: UpdateDefense, updates: Any, seed: int = 0) -> Any:
    """Apply ``defense`` to every victim's update (leading axis ``V``), one key each.

    Example:
        >>> out = apply_defense(prune(0.5), {"w": np.array([[1.0, 2.0], [4.0, 3.0]])})
        >>> np.asarray(out["w"]).tolist()
        [[0.0, 2.0], [4.0, 0.0]]
    """
    n = len(jax.tree.leaves(updates)[0])
    keys = jax.random.split(jax.random.key(seed), n)
    out = jax.jit(jax.vmap(defense))(keys, jax.tree.map(jnp.asarray, updates))
    return jax.tree.map(np.asarray, out)


def _positive(name: str, v: float, zero_ok: bool = False) -> None:
    if not (v >= 0 if zero_ok else v > 0) or not np.isfinite(v):
        raise ValueError(f"{name} must be {'>= 0' if zero_ok else '> 0'}, got {v!r}")


__all__ = ["apply_defense", "clip_and_noise", "gaussian", "none", "parse", "prune"]
