"""The XLA options jaxinv compiles its programs with, chosen by backend.

On XLA:CPU, fusions are emitted by XLA's classic LLVM-IR emitters instead of its MLIR ones
(``xla_cpu_use_fusion_emitters=false``): the same operations (rounded differently in the
last bits), compiled in about half the time, and steps ran as fast
(``benchmarks/emitters.py``). ``run_chains`` compiles every step and initialisation with
them, and the training loops use :func:`jit`; the TLDR inverters keep XLA's options (a
member trained by ``vmap`` beside others drifted further from a lone run). Every other
backend compiles with XLA's defaults. A jaxlib whose XLA no longer knows the flag gets its
defaults too (checked once per process), and so does every program when the environment
variable ``JAXINV_XLA_DEFAULTS=1`` is set (to compare, or to rule jaxinv's choice out).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from functools import cache
from typing import Any

import jax
import jax.numpy as jnp

CPU_OPTIONS: dict[str, Any] = {"xla_cpu_use_fusion_emitters": False}


def compiler_options(extra: dict | None = None) -> dict | None:
    """XLA compile options for a program on the default backend, ``extra`` on top (it
    overrides); ``None`` when there are none. Pass to ``Lowered.compile`` (or use :func:`jit`:
    ``jax.jit(compiler_options=...)`` fails when called inside another jit).

    Example:
        >>> opts = compiler_options({"xla_backend_optimization_level": 1})
        >>> opts["xla_backend_optimization_level"]
        1
        >>> jax.jit(lambda x: x + 1, compiler_options=compiler_options())(1.0).item()
        2.0
    """
    cpu = jax.default_backend() == "cpu" and os.environ.get("JAXINV_XLA_DEFAULTS") != "1"
    opts = dict(_cpu_options()) if cpu else {}
    opts.update(extra or {})
    return opts or None


def jit(fn: Callable, **kwargs: Any) -> Callable:
    """``jax.jit(fn, **kwargs)`` compiled with :func:`compiler_options` when called at top
    level; inside another trace (``jax.jit``, ``vmap``...), where JAX takes no compile
    options, it is the plain ``jax.jit(fn, **kwargs)`` and the outer program's options apply.

    Example:
        >>> f = jit(lambda x: 2 * x)
        >>> f(1.0).item(), jax.jit(lambda x: f(x) + 1)(1.0).item()
        (2.0, 3.0)
    """
    plain = jax.jit(fn, **kwargs)
    opts = compiler_options()
    if opts is None:
        return plain
    tuned = jax.jit(fn, compiler_options=opts, **kwargs)

    @functools.wraps(fn)
    def call(*args, **kw):
        if traced((args, kw)):
            return plain(*args, **kw)
        try:
            return tuned(*args, **kw)
        except ValueError as e:  # traced with constant arguments only
            if "top-level" not in str(e):
                raise
            return plain(*args, **kw)

    return call


def traced(tree: Any) -> bool:
    """Whether any leaf of ``tree`` is a tracer (we are inside a JAX transformation).

    Example:
        >>> seen = []
        >>> _ = jax.jit(lambda x: seen.append(traced(x)) or x)(1.0)
        >>> traced(1.0), seen
        (False, [True])
    """
    return any(isinstance(a, jax.core.Tracer) for a in jax.tree.leaves(tree))


@cache
def _cpu_options() -> dict:
    """:data:`CPU_OPTIONS` if this jaxlib's XLA:CPU accepts them, else none."""
    try:
        jax.jit(lambda x: x + 1).lower(jnp.zeros(1)).compile(CPU_OPTIONS)
    except Exception:  # an XLA that dropped the flag: keep its defaults
        return {}
    return CPU_OPTIONS


def compile_once(fn: Any, *args: Any) -> Any:
    """``fn`` (jitted) compiled for ``args``, for a call made once per run (initialisation).
    On XLA:CPU with LLVM's optimisation off: it compiles 3-5x faster (a CNN's init 2.6 s ->
    0.5 s) and runs slower, which a one-off call does not feel; elsewhere as usual. Under a
    transformation (traced ``args``, e.g. ``jax.eval_shape``) nothing is compiled: ``fn``.

    Example:
        >>> f = compile_once(jax.jit(lambda x: x + 1), jnp.zeros(3))
        >>> f(jnp.zeros(3)).tolist()
        [1.0, 1.0, 1.0]
    """
    if traced(args):
        return fn
    cpu = jax.default_backend() == "cpu"
    return fn.lower(*args).compile(
        compiler_options({"xla_backend_optimization_level": 0} if cpu else None))


def init_once(fn: Callable, *args: Any) -> Any:
    """``fn(*args)`` run once, compiled by :func:`compile_once` (Flax ``init``: eagerly, every
    op compiles on its own; at XLA's default level, a GAN's init compiled for seconds).

    Example:
        >>> init_once(lambda k: jax.random.normal(k, (2,)), jax.random.key(0)).shape
        (2,)
    """
    return compile_once(jax.jit(fn), *args)(*args)

