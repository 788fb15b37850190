"""Random draws of any shape that compile fast: drawn flat, then reshaped.

``jax.random`` (threefry, ``jax_threefry_partitionable``) derives each value from its flat
index, so a flat draw reshaped equals the shaped draw bit for bit. XLA:CPU's compile time
grows with the rank of the draw: bits of shape ``[8, 5, 5, 12, 12]`` compiled in 4.8-5.3 s,
the same 28,800 values flat in 0.27 s (``[64, 28, 28, 1]``: 1.0 s). Kernels draw noise of
rank 4-5 under ``vmap`` (NES directions ``[chains, m, H, W, C]``, per-parameter DP noise), so
they draw through these functions; values are unchanged, on every backend.
"""

from math import prod
from typing import Any

import jax
import jax.numpy as jnp


def normal(key: jax.Array, shape: tuple[int, ...], dtype: Any = jnp.float32) -> jax.Array:
    """``jax.random.normal(key, shape, dtype)``, drawn flat.

    Example:
        >>> k = jax.random.key(0)
        >>> bool((normal(k, (2, 3, 4)) == jax.random.normal(k, (2, 3, 4))).all())
        True
    """
    return jax.random.normal(key, (prod(shape),), dtype).reshape(shape)


def uniform(key: jax.Array, shape: tuple[int, ...], dtype: Any = jnp.float32,
            minval: Any = 0.0, maxval: Any = 1.0) -> jax.Array:
    """``jax.random.uniform(key, shape, dtype, minval, maxval)``, drawn flat (scalar bounds).

    Example:
        >>> k = jax.random.key(0)
        >>> bool((uniform(k, (2, 3, 4), minval=-1) ==
        ...       jax.random.uniform(k, (2, 3, 4), minval=-1)).all())
        True
    """
    return jax.random.uniform(key, (prod(shape),), dtype, minval, maxval).reshape(shape)


def rademacher(key: jax.Array, shape: tuple[int, ...], dtype: Any = int) -> jax.Array:
    """``jax.random.rademacher(key, shape, dtype)`` (+-1), drawn flat.

    Example:
        >>> k = jax.random.key(0)
        >>> bool((rademacher(k, (2, 3, 4)) == jax.random.rademacher(k, (2, 3, 4))).all())
        True
    """
    return jax.random.rademacher(key, (prod(shape),), dtype).reshape(shape)


__all__ = ["normal", "rademacher", "uniform"]
