"""Conditional generator ``G(z, c)`` for network inversion and TLDR (SPECS 2b, 2c).

``ConditionalGenerator(out_shape, num_classes, conditioning)`` maps latents ``z [N, z_dim]``
and a condition to images ``[N, H, W, C]``: dense to ``H/4 x W/4 x 4w`` with BatchNorm and
LeakyReLU(0.2), two 2x upsampling stages (the first followed by BatchNorm, LeakyReLU and
dropout) (stride-2 transposed convolutions by
default, as in the papers; ``upsample="subpixel"`` swaps in the sub-pixel convolution of
:mod:`jaxinv.models.gan`, whose generator pass differentiates 3x faster on XLA:CPU), then ``output``
(``"linear"``: unbounded, the pixel-range loss keeps it in range, ``"sigmoid"``: [0, 1]).

Conditioning (SPECS 2b; the matrix form is the third-party reimplementations' reading):

* ``"label"``: the one-hot label is concatenated to ``z``;
* ``"vector"``: a soft vector ``softmax(r)``, ``r ~ N(0, I_K)``, its entries swapped so that
  the argmax is the label, concatenated to ``z``;
* ``"matrix"``: a K x K hot matrix (row and column ``y`` set to 1) concatenated as an extra
  channel to the first feature map, resized to K x K and back;
* ``"vector-matrix"``: both of the last two.

:func:`conditions` draws ``(vector, matrix)`` for labels; the vector is also the target of
the KL loss (the hot vector for ``label`` and ``matrix``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxinv.core.compiler import init_once
from jaxinv.models.gan import Z_DIM, pixel_shuffle
from jaxinv.models.layers import Conv

CONDITIONING = ("label", "vector", "matrix", "vector-matrix")
OUTPUTS = ("linear", "sigmoid")
UPSAMPLE = ("transpose", "subpixel")


def check_conditioning(conditioning: str) -> str:
    """``conditioning`` if known, else a one-line ``ValueError``.

    Example:
        >>> check_conditioning("vector")
        'vector'
    """
    if conditioning not in CONDITIONING:
        raise ValueError(f"unknown conditioning {conditioning!r}: use one of {CONDITIONING}")
    return conditioning


def conditions(key: jax.Array, labels: jax.Array, num_classes: int, conditioning: str
               ) -> tuple[jax.Array, jax.Array]:
    """``(vector [N, K], matrix [N, K, K])`` conditioning ``labels`` (argmax vector = label).

    Example:
        >>> v, m = conditions(jax.random.key(0), jnp.array([2, 0]), 4, "vector")
        >>> v.argmax(-1).tolist(), v.sum(-1).round(4).tolist(), m.shape
        ([2, 0], [1.0, 1.0], (2, 4, 4))
    """
    check_conditioning(conditioning)
    hot = jax.nn.one_hot(labels, num_classes)
    if conditioning in ("vector", "vector-matrix"):
        soft = jax.nn.softmax(jax.random.normal(key, hot.shape), -1)
        top = jnp.argmax(soft, -1)
        rows = jnp.arange(len(labels))
        # swap the largest entry into the label's position: argmax == label, a permutation
        vec = soft.at[rows, labels].set(soft[rows, top]).at[rows, top].set(soft[rows, labels])
    else:
        vec = hot
    matrix = jnp.maximum(hot[:, :, None], hot[:, None, :])  # row y and column y are 1
    return vec, matrix


class ConditionalGenerator(nn.Module):
    """``G(z, vector, matrix) -> x [N, H, W, C]``; ``H`` and ``W`` multiples of 4.

    Example:
        >>> g = ConditionalGenerator((28, 28, 1), 10, "vector-matrix", width=8)
        >>> v, m = conditions(jax.random.key(1), jnp.arange(2), 10, "vector-matrix")
        >>> x, var = g.init_with_output(jax.random.key(0), jnp.zeros((2, 100)), v, m)
        >>> x.shape, sorted(var)
        ((2, 28, 28, 1), ['batch_stats', 'params'])
    """

    out_shape: Sequence[int]
    num_classes: int
    conditioning: str = "label"
    width: int = 32
    dropout: float = 0.3
    output: str = "linear"
    upsample: str = "transpose"

    @nn.compact
    def __call__(self, z: jax.Array, vector: jax.Array, matrix: jax.Array,
                 train: bool = False) -> jax.Array:
        check_generator_options(self.out_shape, self.conditioning, self.output, self.upsample)
        h, w, c = self.out_shape
        k, n = self.num_classes, z.shape[0]
        uses_vector = self.conditioning in ("label", "vector", "vector-matrix")
        bn = lambda: nn.BatchNorm(use_running_average=not train, momentum=0.9)
        drop = lambda x: nn.Dropout(self.dropout, deterministic=not train)(x)
        act = lambda x: nn.leaky_relu(x, 0.2)
        x = jnp.concatenate([z, vector], -1) if uses_vector else z
        x = nn.Dense(h // 4 * (w // 4) * 4 * self.width)(x)
        x = act(bn()(x)).reshape(n, h // 4, w // 4, 4 * self.width)
        if self.conditioning in ("matrix", "vector-matrix"):
            x = jax.image.resize(x, (n, k, k, x.shape[-1]), "bilinear")
            x = jnp.concatenate([x, matrix[..., None].astype(x.dtype)], -1)
            x = act(Conv(4 * self.width, (3, 3))(x))
            x = jax.image.resize(x, (n, h // 4, w // 4, x.shape[-1]), "bilinear")
        x = drop(act(bn()(self._up(2 * self.width, x))))
        x = self._up(c, x)
        return nn.sigmoid(x) if self.output == "sigmoid" else x

    def _up(self, features: int, x: jax.Array) -> jax.Array:
        if self.upsample == "subpixel":
            return pixel_shuffle(Conv(4 * features, (3, 3))(x))
        return nn.ConvTranspose(features, (4, 4), strides=(2, 2), padding="SAME")(x)


def check_generator_options(out_shape: Sequence[int], conditioning: str, output: str,
                            upsample: str) -> None:
    """One-line ``ValueError`` for options :class:`ConditionalGenerator` cannot take.

    Example:
        >>> check_generator_options((8, 8, 1), "label", "linear", "transpose")
    """
    check_conditioning(conditioning)
    if output not in OUTPUTS:
        raise ValueError(f"unknown generator output {output!r}: use one of {OUTPUTS}")
    if upsample not in UPSAMPLE:
        raise ValueError(f"unknown upsample {upsample!r}: use one of {UPSAMPLE}")
    if len(out_shape) != 3 or out_shape[0] % 4 or out_shape[1] % 4:
        raise ValueError(f"conditional generator: images must be [H, W, C] with H and W "
                         f"multiples of 4, got {list(out_shape)}")


def init_generator(module: ConditionalGenerator, seed: int = 0, z_dim: int = Z_DIM) -> Any:
    """Variables ``{"params", "batch_stats"}`` of ``module`` (jitted initialisation).

    Example:
        >>> v = init_generator(ConditionalGenerator((8, 8, 1), 10, width=4))
        >>> sorted(v)
        ['batch_stats', 'params']
    """
    k = module.num_classes

    def init(key):
        return module.init(key, jnp.zeros((1, z_dim)), jnp.zeros((1, k)), jnp.zeros((1, k, k)))

    return init_once(init, jax.random.key(seed))


__all__ = ["CONDITIONING", "ConditionalGenerator", "check_conditioning",
           "check_generator_options", "conditions", "init_generator"]
