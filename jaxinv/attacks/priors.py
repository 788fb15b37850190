"""Image priors (regularisers) and ``Process`` hooks shared by attacks.

A prior is ``x -> scalar`` on one image ``[H, W, C]``; a process is ``x -> x``
applied after each update (MI-Face's ``Process``).
"""

from __future__ import annotations

from collections.abc import Callable

import dm_pix as pix
import jax
import jax.numpy as jnp

Process = Callable[[jax.Array], jax.Array]


def total_variation(x: jax.Array) -> jax.Array:
    """Anisotropic TV: mean |vertical diffs| + mean |horizontal diffs| (inversefed's form).

    Example:
        >>> total_variation(jnp.zeros((8, 8, 1)))
        Array(0., dtype=float32)
    """
    dv = jnp.abs(x[1:, :, :] - x[:-1, :, :])
    dh = jnp.abs(x[:, 1:, :] - x[:, :-1, :])
    return (jnp.mean(dv) if dv.size else 0.0) + (jnp.mean(dh) if dh.size else 0.0)


def mean_square(x: jax.Array) -> jax.Array:
    """Mean squared pixel value.

    Example:
        >>> mean_square(jnp.ones((2, 2, 1)))
        Array(1., dtype=float32)
    """
    return jnp.mean(jnp.square(x))


def make(tv: float = 0.0, l2: float = 0.0) -> Callable[[jax.Array, object], jax.Array] | None:
    """The weighted image prior ``(x, env) -> tv * TV(x) + l2 * L2(x)``, or ``None`` if both
    weights are 0 (the form :func:`~jaxinv.attacks.gradient_inversion` takes).

    Example:
        >>> float(make(tv=1.0)(jnp.zeros((4, 4, 1)), None))
        0.0
    """
    if not tv and not l2:
        return None

    def prior(x, env=None):
        c = 0.0
        if tv:
            c = c + tv * total_variation(x)
        if l2:
            c = c + l2 * mean_square(x)
        return c

    return prior


l2 = mean_square


def identity(x: jax.Array) -> jax.Array:
    """The default ``Process``: leaves the iterate unchanged.

    Example:
        >>> img = jnp.zeros((2, 2, 1))
        >>> identity(img) is img
        True
    """
    return x


def denoise(sigma: float = 0.5) -> Process:
    """Gaussian-blur denoiser (dm-pix), a cheap stand-in for MI-Face's NL-means step.

    Example:
        >>> process = denoise(0.6)
        >>> process(jnp.zeros((8, 8, 1))).shape
        (8, 8, 1)
    """
    if sigma <= 0:
        raise ValueError(f"denoise sigma must be > 0, got {sigma}")
    size = max(3, 2 * round(2 * sigma) + 1)
    return lambda x: pix.gaussian_blur(x, sigma, size)


def sharpen(amount: float = 0.5, sigma: float = 1.0) -> Process:
    """Unsharp mask: ``x + amount * (x - blur(x))``.

    Example:
        >>> process = compose(denoise(0.5), sharpen(0.3))  # MI-Face's denoise+sharpen
    """
    blur = denoise(sigma)
    return lambda x: x + amount * (x - blur(x))


def compose(*processes: Process) -> Process:
    """Apply processes left to right.

    Example:
        >>> img = jnp.zeros((8, 8, 1))
        >>> compose(denoise(0.5), sharpen())(img).shape
        (8, 8, 1)
    """

    def run(x):
        for p in processes:
            x = p(x)
        return x

    return run


PROCESSES: dict[str, Callable[..., Process]] = {
    "identity": lambda: identity,
    "denoise": denoise,
    "denoise+sharpen": lambda sigma=0.5, amount=0.3: compose(denoise(sigma), sharpen(amount)),
}


def get_process(name: str, **kwargs) -> Process:
    """Look up a named process (``identity``, ``denoise``, ``denoise+sharpen``).

    Example:
        >>> callable(get_process("denoise", sigma=0.6))
        True
    """
    if name not in PROCESSES:
        raise ValueError(f"unknown process {name!r}; choose one of {sorted(PROCESSES)}")
    return PROCESSES[name](**kwargs)
