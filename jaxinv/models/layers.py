"""Layers formulated for speed on every backend.

``max_pool_2x2`` is a reshape + max reduction: its backward pass is a cheap
equality mask instead of XLA's select-and-scatter (which ``nn.max_pool`` lowers to
and which dominates a CNN's input-gradient step on CPU). Same result as VALID
2x2/stride-2 max pooling; odd trailing rows/columns are dropped, as VALID does.
"""

import jax


def max_pool_2x2(x: jax.Array) -> jax.Array:
    """2x2 max pooling with stride 2 on ``[..., H, W, C]`` (VALID: odd edges cropped).

    Example:
        >>> max_pool_2x2(jnp.arange(16.0).reshape(1, 4, 4, 1))[0, ..., 0]
        Array([[ 5.,  7.],
               [13., 15.]], dtype=float32)
    """
    *lead, h, w, c = x.shape
    h2, w2 = h // 2, w // 2
    x = x[..., : 2 * h2, : 2 * w2, :]
    return x.reshape(*lead, h2, 2, w2, 2, c).max(axis=(-4, -2))
