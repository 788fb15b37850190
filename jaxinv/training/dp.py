"""DP-SGD (Abadi et al. 2016): Poisson-sampled batches, per-example clipping, Gaussian noise
on the *sum*, accounting by Google's ``dp-accounting`` (PLD or RDP; never hand-written).

Follows jax_privacy's pitfalls list: noise is calibrated to the sum of clipped gradients
(sensitivity ``clip`` under add/remove-one adjacency) and added before dividing by the
*expected* batch size; the accountant's event is the Poisson-subsampled Gaussian the
sampler really runs; models with state shared across examples (batch norm) are refused.

Poisson batches have a random size; a jitted step needs a fixed one, so each step samples
every example with probability ``q`` and gathers the sampled ones into ``max_batch``
slots (padding has weight 0). ``max_batch`` is the binomial quantile at ``1 - 1e-12``,
so a step drops sampled examples (an event the accountant does not model) with
probability below 1e-12.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxinv.core import rng
from jaxinv.models.layers import patch_weight_grads

ACCOUNTANTS = ("pld", "rdp")


class DPConfig(NamedTuple):
    """A DP-SGD setting: ``noise_multiplier`` sigma (noise std ``sigma * clip`` on the sum),
    ``clip`` C, ``sampling_rate`` q, ``steps`` T, ``max_batch`` physical slots, and
    ``microbatch`` (:func:`private_grad`'s; not part of the guarantee)."""

    noise_multiplier: float
    clip: float
    sampling_rate: float
    steps: int
    max_batch: int
    microbatch: int | str | None = "auto"


def check(epsilon: float, delta: float, sampling_rate: float = 0.01) -> None:
    """Raise ``ValueError`` naming the bad parameter.

    Example:
        >>> check(3.0, 1e-5, 0.01)
        >>> check(0.0, 1e-5)
        Traceback (most recent call last):
        ...
        ValueError: DP: epsilon must be > 0, got 0.0
    """
    if not epsilon > 0 or not np.isfinite(epsilon):
        raise ValueError(f"DP: epsilon must be > 0, got {epsilon}")
    if not 0 < delta < 1:
        raise ValueError(f"DP: delta must lie in (0, 1), got {delta}")
    if not 0 < sampling_rate <= 1:
        raise ValueError(f"DP: the sampling rate (batch / dataset size) must lie in (0, 1], "
                         f"got {sampling_rate}")


def _dpa():
    try:
        import dp_accounting
    except ImportError:
        raise ImportError("DP-SGD accounting needs dp-accounting: pip install 'jaxinv[dp]'"
                          ) from None
    return dp_accounting


def _event(noise_multiplier: float, sampling_rate: float, steps: int):
    dp_accounting = _dpa()

    return dp_accounting.SelfComposedDpEvent(dp_accounting.PoissonSampledDpEvent(
        sampling_rate, dp_accounting.GaussianDpEvent(noise_multiplier)), steps)


def _accountant(name: str):
    dp_accounting = _dpa()
    # dp-accounting logs a warning per fractional RDP order whose series it drops (at
    # q ~ 0.1); the epsilon is still a valid bound over the remaining orders
    logging.getLogger("absl").setLevel(logging.ERROR)
    if name == "pld":
        return dp_accounting.pld.PLDAccountant()
    if name == "rdp":
        return dp_accounting.rdp.RdpAccountant()
    raise ValueError(f"DP: unknown accountant {name!r}; choose one of {ACCOUNTANTS}")


def epsilon_spent(noise_multiplier: float, sampling_rate: float, steps: int, delta: float,
                  accountant: str = "pld") -> float:
    """The epsilon at ``delta`` of ``steps`` Poisson-sampled Gaussian steps.

    Example:
        >>> round(epsilon_spent(1.1, 256 / 60000, 60000 // 256 * 60, 1e-5, "rdp"), 2)
        2.59
    """
    check(1.0, delta, sampling_rate)
    if not noise_multiplier > 0 or steps < 1:
        raise ValueError(f"DP: need noise_multiplier > 0 and steps >= 1, got "
                         f"{noise_multiplier}, {steps}")
    acc = _accountant(accountant)
    return float(acc.compose(_event(noise_multiplier, sampling_rate, steps)).get_epsilon(delta))


def calibrate(epsilon: float, delta: float, sampling_rate: float, steps: int,
              accountant: str = "pld") -> float:
    """The smallest noise multiplier whose ``steps`` steps spend at most ``epsilon`` at
    ``delta`` (``dp_accounting.calibrate_dp_mechanism``).

    Example:
        >>> s = calibrate(3.0, 1e-5, 256 / 60000, 60000 // 256 * 60, "rdp")
        >>> round(s, 2), epsilon_spent(s, 256 / 60000, 60000 // 256 * 60, 1e-5, "rdp") <= 3.0
        (1.01, True)
    """
    dp_accounting = _dpa()
    check(epsilon, delta, sampling_rate)
    if steps < 1:
        raise ValueError(f"DP: steps must be >= 1, got {steps}")
    def solve(name, bracket):
        return float(dp_accounting.calibrate_dp_mechanism(
            lambda: _accountant(name), lambda s: _event(s, sampling_rate, steps), epsilon,
            delta, bracket, tol=1e-3))

    # RDP first (cheap at any sigma); PLD is tighter, so its sigma lies below RDP's: a
    # bracket keeps PLD away from tiny sigmas, whose discretisation needs gigabytes
    rdp = solve("rdp", dp_accounting.LowerEndpointAndGuess(1e-3, 1.0))
    return rdp if accountant == "rdp" else solve(
        "pld", dp_accounting.ExplicitBracketInterval(rdp / 4, rdp))


def max_batch(n: int, sampling_rate: float) -> int:
    """Physical batch slots: the binomial ``(n, q)`` quantile at ``1 - 1e-12``.

    Example:
        >>> max_batch(60000, 256 / 60000)
        376
    """
    from scipy.stats import binom

    return int(min(n, binom.ppf(1 - 1e-12, n, sampling_rate)))


def poisson_batch(key: jax.Array, n: int, sampling_rate: float, slots: int
                  ) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Indices ``[slots]``, 0/1 weights and the true sampled count of one Poisson batch.

    Example:
        >>> idx, w, count = poisson_batch(jax.random.key(0), 1000, 0.1, 150)
        >>> idx.shape, int(w.sum()) == int(count)
        ((150,), True)
    """
    take = jax.random.uniform(key, (n,)) < sampling_rate
    (idx,) = jnp.nonzero(take, size=slots, fill_value=0)
    count = take.sum()
    return idx, (jnp.arange(slots) < count).astype(jnp.float32), count


def private_grad(per_example_loss: Callable, params: Any, batch: Any, weights: jax.Array,
                 key: jax.Array, *, clip: float, noise_multiplier: float,
                 expected_batch: float, microbatch: int | str | None = None,
                 patch_grads: bool | None = None) -> tuple[Any, jax.Array]:
    """``(sum_i w_i clip(g_i) + N(0, (sigma C)^2 I)) / expected_batch`` and the number of
    clipped examples; ``per_example_loss(params, example) -> scalar``, ``w_i`` 0 (padding)
    or 1. ``microbatch``: per-example gradients of that many examples at a time, summed by a
    ``scan`` (``None``: the whole batch in one ``vmap``; ``"auto"``: :func:`auto_microbatch`).
    Dense per-example gradients of a whole batch leave the CPU's caches: on this 2-core CPU
    a 784-256-5 MLP at batch 300 ran 19x faster with ``microbatch=1``; on accelerators the
    full ``vmap`` is the usual choice. ``patch_grads``: convolution weight gradients as
    im2col + matmul (:func:`~jaxinv.models.layers.patch_weight_grads`; ``None``: on CPU,
    where the MNIST CNN at batch 256 ran 10x faster with it, 1684 vs 162 examples/s).

    Example:
        >>> loss = lambda p, ex: jnp.sum((p["w"] * ex[0] - ex[1]) ** 2)
        >>> batch = (jnp.ones((4, 3)), jnp.zeros((4, 3)))
        >>> g, clipped = private_grad(loss, {"w": jnp.ones(3)}, batch, jnp.ones(4),
        ...                           jax.random.key(0), clip=1.0, noise_multiplier=0.0,
        ...                           expected_batch=4.0)
        >>> round(float(jnp.linalg.norm(g["w"])), 5), int(clipped)  # each |g_i| 3.46 -> 1
        (1.0, 4)
    """
    leaves, tree = jax.tree.flatten(params)
    if microbatch == "auto":
        microbatch = auto_microbatch(sum(a.size for a in leaves), len(weights))
    if patch_grads is None:
        patch_grads = jax.default_backend() == "cpu"
    with patch_weight_grads(patch_grads):  # read while the gradients are traced
        summed, clipped = _summed(per_example_loss, params, batch, weights, clip, microbatch)
    leaves = jax.tree.leaves(summed)
    keys = jax.random.split(key, len(leaves))
    noisy = [(s + noise_multiplier * clip * rng.normal(k, s.shape, s.dtype))
             / expected_batch for s, k in zip(leaves, keys, strict=True)]
    return jax.tree.unflatten(tree, noisy), clipped


def _summed(per_example_loss: Callable, params: Any, batch: Any, weights: jax.Array,
            clip: float, microbatch: int | None) -> tuple[Any, jax.Array]:
    """:func:`_clipped_sum` over the whole batch, or over microbatches summed by a scan."""
    if microbatch is None:
        return _clipped_sum(per_example_loss, params, batch, weights, clip)
    pad = -len(weights) % microbatch
    grow = lambda a: jnp.concatenate([a, jnp.zeros((pad, *a.shape[1:]), a.dtype)])
    split = lambda a: grow(a).reshape(-1, microbatch, *a.shape[1:])

    def body(acc, chunk):
        s, c = _clipped_sum(per_example_loss, params, *chunk, clip)
        return (jax.tree.map(jnp.add, acc[0], s), acc[1] + c), None

    zero = (jax.tree.map(jnp.zeros_like, params), jnp.zeros((), jnp.int32))
    return jax.lax.scan(body, zero, jax.tree.map(split, (batch, weights)))[0]


def _clipped_sum(per_example_loss: Callable, params: Any, batch: Any, weights: jax.Array,
                 clip: float) -> tuple[Any, jax.Array]:
    """``sum_i w_i clip(g_i)`` (a tree like ``params``) and the number of clipped examples."""
    grads = jax.vmap(jax.grad(per_example_loss), in_axes=(None, 0))(params, batch)
    grads = jax.tree.map(lambda g: g * weights.reshape((-1,) + (1,) * (g.ndim - 1)), grads)
    leaves, tree = jax.tree.flatten(grads)
    summed, clipped = optax.per_example_global_norm_clip(leaves, clip)
    return jax.tree.unflatten(tree, summed), jnp.asarray(clipped, jnp.int32)




def setting(dp: dict, n: int, batch_size: int, epochs: int,
            steps: int | None = None) -> tuple[DPConfig, dict]:
    """Resolve a ``fit(dp=...)`` request ``{"epsilon", "delta", "clip"=1, "accountant"=
    "pld", "microbatch"="auto"}`` (or an explicit ``"noise_multiplier"``; microbatch:
    :func:`private_grad`'s) for ``n`` examples, expected batch
    ``batch_size`` and ``epochs`` epochs of ``n // batch_size`` steps (or ``steps`` in all,
    when given); returns the config
    and the guarantee recorded in ``model.json`` (epsilon by both accountants).

    Example:
        >>> cfg, meta = setting({"epsilon": 3.0, "delta": 1e-5}, 1000, 50, 5)
        >>> cfg.steps, meta["epsilon"] <= 3.0
        (100, True)
    """
    unknown = set(dp) - {"epsilon", "delta", "clip", "accountant", "noise_multiplier",
                         "microbatch"}
    if unknown:
        raise ValueError(f"DP: unknown settings {sorted(unknown)}")
    delta, clip = float(dp.get("delta", 1e-5)), float(dp.get("clip", 1.0))
    accountant = dp.get("accountant", "pld")
    q, steps = batch_size / n, steps or epochs * max(n // batch_size, 1)
    if not clip > 0:
        raise ValueError(f"DP: clip must be > 0, got {clip}")
    if dp.get("noise_multiplier") is not None:
        sigma = float(dp["noise_multiplier"])
        check(1.0, delta, q)
    else:
        if "epsilon" not in dp:
            raise ValueError("DP: give epsilon (with delta) or noise_multiplier")
        sigma = calibrate(float(dp["epsilon"]), delta, q, steps, accountant)
    cfg = DPConfig(sigma, clip, q, steps, max_batch(n, q), _microbatch(dp.get("microbatch")))
    meta = {"epsilon": epsilon_spent(sigma, q, steps, delta, accountant), "delta": delta,
            "accountant": accountant,
            "epsilon_" + ("rdp" if accountant == "pld" else "pld"): epsilon_spent(
                sigma, q, steps, delta, "rdp" if accountant == "pld" else "pld"),
            "target_epsilon": dp.get("epsilon"), "noise_multiplier": sigma, "clip": clip,
            "sampling_rate": q, "steps": steps, "sampling": "poisson",
            "adjacency": "add/remove one example", "max_batch": cfg.max_batch}
    return cfg, meta


AUTO_FLOATS = 2 ** 22  # per-example gradients of a batch above this (16 MB): one at a time


def auto_microbatch(n_params: int, batch: int) -> int | None:
    """``"auto"``'s microbatch: 1 on CPU when a batch's dense per-example gradients exceed
    :data:`AUTO_FLOATS` floats, else (and on accelerators) ``None``, the whole batch.

    Example:
        >>> auto_microbatch(203_530, 256), auto_microbatch(650, 64)  # an MLP; softmax
        (1, None)
    """
    big = n_params * batch > AUTO_FLOATS
    return 1 if big and jax.default_backend() == "cpu" else None


def _microbatch(value: Any) -> int | str | None:
    if value in (None, "auto"):
        return "auto"
    if value == "all":
        return None
    if not (isinstance(value, int) and value >= 1):
        raise ValueError(f"DP: microbatch must be an int >= 1, 'all' or 'auto', got {value!r}")
    return value


__all__ = ["ACCOUNTANTS", "AUTO_FLOATS", "DPConfig", "auto_microbatch", "calibrate", "check",
           "epsilon_spent", "max_batch", "poisson_batch", "private_grad", "setting"]
