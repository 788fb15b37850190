"""P2I's prediction alignment encoder (PAE), scaled to small images.

``PredictionEncoder`` maps log-probability vectors ``v [N, K]`` (the target's prediction,
``log p``) to generator latents ``z [N, z_dim]`` and, for ``kind="conv"``, to the
*pseudo-image* ``u [N, H, W, C]`` it computes on the way. It follows P2I's
``fs_encoder_v2`` (SPECS 1), scaled down:

* P2I: ``Linear(K -> 512x8x8, no bias) -> BN -> ReLU``, five stride-2 transposed
  convolutions to a 256x256 sigmoid pseudo-image, an iResNet-50 whose four stages are
  each average-pooled to 3x3 and concatenated, 18 linear heads to StyleGAN2's W+ (plus the
  average latent w-bar).
* Here (``kind="conv"``): ``Dense(K -> H/4 x W/4 x 4w, no bias) -> BN -> ReLU``, two 2x
  upsampling stages to a sigmoid pseudo-image at the generator's own resolution
  ``(H, W, C)`` (sub-pixel convolutions, as in :class:`jaxinv.models.gan.Generator`, in
  place of transposed ones), then a small conv net of two stages ``[3x3 conv -> BN -> ReLU
  -> 2x2 max-pool]`` (``w``, ``2w`` channels), each stage's map average-pooled to
  ``pool x pool`` (P2I: 3x3) and concatenated, and one dense head to ``z_dim``. The
  GAN prior's latent is ``z ~ N(0, I)``, whose mean (P2I's w-bar) is 0, so the head
  predicts ``z`` directly.
* ``kind="mlp"``: ``Dense(K -> 4w, no bias) -> BN -> ReLU -> Dense(4w) -> BN -> ReLU ->
  Dense(z_dim)``, no pseudo-image (a cheap option, not in P2I).

:class:`Encoder` bundles a module with its variables and ``meta``;
:func:`jaxinv.training.encoder.train_encoder` trains one and
:func:`jaxinv.training.encoder.load_encoder` reads it back.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import cache
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxinv.core.compiler import init_once
from jaxinv.models.gan import Z_DIM, pixel_shuffle
from jaxinv.models.layers import Conv, max_pool_2x2

KINDS = ("conv", "mlp")
LOG_FLOOR = 1e-12  # probabilities are clipped here before the log (no -inf inputs)


def log_input(p: jax.Array) -> jax.Array:
    """The encoder's input from probabilities: ``log(clip(p, 1e-12, 1))``.

    P2I feeds ``log p``; the clip keeps probabilities that underflowed to 0 finite
    (a deviation that only touches ``p < 1e-12``).

    Example:
        >>> log_input(jnp.array([1.0, 0.0])).round(2)
        Array([  0.  , -27.63], dtype=float32)
    """
    return jnp.log(jnp.clip(p, LOG_FLOOR, 1.0))


def _avg_pool_to(x: jax.Array, size: int) -> jax.Array:
    """Adaptive average pooling of ``[N, H, W, C]`` to at most ``size x size`` (an
    anti-aliased linear resize; the identity on maps already that small)."""
    n, h, w, c = x.shape
    if h <= size and w <= size:
        return x
    return jax.image.resize(x, (n, min(h, size), min(w, size), c), "linear", antialias=True)


class PredictionEncoder(nn.Module):
    """P2I's prediction alignment encoder, scaled: ``v [N, K] -> (z [N, z_dim], u)``.

    ``u`` is the pseudo-image ``[N, H, W, C]`` in [0, 1] (``kind="conv"``) or ``None``
    (``kind="mlp"``). ``out_shape`` is the generator's image shape ``(H, W, C)`` (H and W
    multiples of 4). See the module docstring for the layers.

    Example:
        >>> enc = PredictionEncoder((8, 8, 1), width=4)
        >>> (z, u), v = enc.init_with_output(jax.random.key(0), jnp.zeros((2, 10)))
        >>> z.shape, u.shape, sorted(v)
        ((2, 100), (2, 8, 8, 1), ['batch_stats', 'params'])
    """

    out_shape: Sequence[int]
    z_dim: int = Z_DIM
    kind: str = "conv"
    width: int = 16
    pool: int = 3

    @nn.compact
    def __call__(self, v: jax.Array, train: bool = False) -> tuple[jax.Array, Any]:
        h, w, c = self.out_shape
        if self.kind not in KINDS:
            raise ValueError(f"PredictionEncoder: kind must be one of {KINDS}, got "
                             f"{self.kind!r}")
        if h % 4 or w % 4:
            raise ValueError(f"PredictionEncoder: image height and width must be multiples "
                             f"of 4, got {h}x{w}")
        bn = lambda: nn.BatchNorm(use_running_average=not train, momentum=0.9)
        n = v.shape[0]
        if self.kind == "mlp":
            x = nn.relu(bn()(nn.Dense(4 * self.width, use_bias=False)(v)))
            x = nn.relu(bn()(nn.Dense(4 * self.width)(x)))
            return nn.Dense(self.z_dim)(x), None
        x = nn.Dense(h // 4 * (w // 4) * 4 * self.width, use_bias=False)(v)
        x = nn.relu(bn()(x)).reshape(n, h // 4, w // 4, 4 * self.width)
        x = nn.relu(bn()(pixel_shuffle(Conv(4 * 2 * self.width, (3, 3))(x))))
        u = nn.sigmoid(pixel_shuffle(Conv(4 * c, (3, 3))(x)))
        x, pooled = u, []
        for ch in (self.width, 2 * self.width):
            x = max_pool_2x2(nn.relu(bn()(Conv(ch, (3, 3))(x))))
            pooled.append(_avg_pool_to(x, self.pool).reshape(n, -1))
        return nn.Dense(self.z_dim)(jnp.concatenate(pooled, -1)), u


class Encoder(NamedTuple):
    """A trained encoder: ``module``, ``variables`` and ``meta`` (``num_classes``,
    ``out_shape``, ``z_dim``, ``kind``, ``width``, ``pool``, training settings and the
    loss curve).

    Example:
        >>> enc = random_encoder(10, (8, 8, 1), width=4)
        >>> enc.encode(jnp.full((3, 10), 0.1)).shape
        (3, 100)
    """

    module: PredictionEncoder
    variables: Any
    meta: dict

    def encode(self, p: Any) -> jax.Array:
        """Latents ``[N, z_dim]`` of probability vectors ``p [N, K]`` (eval mode; the log
        is taken here, :func:`log_input`).

        Example:
            >>> enc = random_encoder(4, (8, 8, 1), kind="mlp", width=4)
            >>> enc.encode(np.full((2, 4), 0.25)).shape
            (2, 100)
        """
        p = jnp.asarray(p, jnp.float32)
        k = int(self.meta["num_classes"])
        if p.ndim != 2 or p.shape[1] != k:
            raise ValueError(f"Encoder: expects probability vectors [N, {k}], got "
                             f"{list(p.shape)}")
        return jax.jit(encoder_fn(self.module))(self.variables, log_input(p))


@cache
def encoder_fn(module: PredictionEncoder) -> Callable[[Any, jax.Array], jax.Array]:
    """Pure ``encode(variables, v [N, K]) -> z [N, z_dim]`` (eval mode, ``v = log p``).
    Cached per module; not jitted.

    Example:
        >>> enc = random_encoder(10, (8, 8, 1), width=4)
        >>> encoder_fn(enc.module)(enc.variables, jnp.zeros((2, 10))).shape
        (2, 100)
    """
    return lambda variables, v: module.apply(variables, v)[0]


def random_encoder(num_classes: int, out_shape: Sequence[int], z_dim: int = Z_DIM,
                   kind: str = "conv", width: int = 16, pool: int = 3,
                   seed: int = 0) -> Encoder:
    """An untrained :class:`Encoder` for ``K = num_classes`` (tests, and the start of
    training).

    Example:
        >>> random_encoder(5, (28, 28, 1), kind="mlp", width=8).meta["kind"]
        'mlp'
    """
    if num_classes < 2 or min(z_dim, width, pool) < 1:
        raise ValueError(f"random_encoder: need num_classes >= 2 and z_dim, width, pool >= 1, "
                         f"got {num_classes}, {z_dim}, {width}, {pool}")
    out_shape = tuple(int(d) for d in out_shape)
    module = PredictionEncoder(out_shape, z_dim, kind, width, pool)
    variables = init_once(module.init, jax.random.key(seed), jnp.zeros((1, num_classes)))
    meta = {"num_classes": int(num_classes), "out_shape": list(out_shape), "z_dim": z_dim,
            "kind": kind, "width": width, "pool": pool,
            "num_params": int(sum(np.size(p) for p in jax.tree.leaves(variables["params"])))}
    return Encoder(module, variables, meta)


__all__ = ["KINDS", "LOG_FLOOR", "Encoder", "PredictionEncoder", "encoder_fn", "log_input",
           "random_encoder"]
