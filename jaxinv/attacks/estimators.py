"""Zeroth-order gradient estimators: the gradient of a black-box loss from function values only.

An estimator is a pure function ``estimator(key, f, x) -> (g, num_queries)``:

- ``f: x[B, *shape] -> values[B]`` scores a whole batch in ONE call (one query batch to the
  oracle per step), ``x`` is one point of any shape;
- ``g`` has the shape and dtype of ``x`` (all arithmetic is float32; ``f``'s outputs are cast);
- ``num_queries`` is a static Python int: the batch size sent to ``f``. It is also known before
  any call as :func:`num_queries` ``(estimator)``, so drivers can budget outside jit.

Each estimator also comes in ask/tell halves, for oracles outside jit (an HTTP API):
``estimator.points(key, x) -> pts[num_queries, *shape]`` and
``estimator.combine(key, x, f(pts)) -> g``; the estimator is ``combine(key, x, f(points(key, x)))``.
``estimator.combine_points(x, pts, f(pts))`` reads the directions off the points instead of
redrawing them (what an ask/tell kernel's ``tell`` uses).

Estimators are built by factories that close over static settings (``nes``, ``spsa``,
``coordinate``; or ``get(name, **kw)``). They contain no Python loop over directions, no host
sync, and compose with ``jit`` and ``vmap`` (over chains: keys ``[N]``, points ``[N, ...]``).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from jaxinv.core import rng

Array = jax.Array
Estimator = Callable[[Array, Callable[[Array], Array], Array], tuple[Array, int]]


def _check(n: int, step: float, step_name: str, pairs: bool) -> None:
    if not isinstance(n, int) or isinstance(n, bool) or n < 2:
        raise ValueError(f"n: expected an int >= 2 (number of queries), got {n!r}")
    if pairs and n % 2:
        raise ValueError(f"n: expected an even int (antithetic pairs), got {n!r}")
    if not isinstance(step, int | float) or isinstance(step, bool) or not step > 0:
        raise ValueError(f"{step_name}: expected a float > 0, got {step!r}")


def _finish(points: Callable, combine: Callable, queries: int, name: str,
            combine_points: Callable) -> Estimator:
    def estimate(key: Array, f: Callable, x: Array) -> tuple[Array, int]:
        return combine(key, x, f(points(key, x))), queries

    estimate.num_queries = queries  # type: ignore[attr-defined]
    estimate.points = points  # type: ignore[attr-defined]
    estimate.combine = combine  # type: ignore[attr-defined]
    estimate.combine_points = combine_points  # type: ignore[attr-defined]
    estimate.__name__ = estimate.__qualname__ = name
    return estimate


def _values(v: Array, n: int) -> Array:
    return jnp.asarray(v).astype(jnp.float32).reshape(n)


def _weigh(w: Array, dirs: Array) -> Array:
    """``sum_i w_i dirs_i`` for ``w [m]``, ``dirs [m, *shape]``."""
    return jnp.tensordot(w, dirs, axes=1)


def _antithetic(draw: Callable, step: float, scale: Callable, n: int, name: str) -> Estimator:
    """Estimators on ``[x + step*d_i; x - step*d_i]``: ``g = sum_i scale(x) (f+ - f-) d_i``."""

    def points(key: Array, x: Array) -> Array:
        x32 = jnp.asarray(x, jnp.float32)
        d = draw(key, x32)
        return jnp.concatenate([x32 + step * d, x32 - step * d])

    def combine(key: Array, x: Array, values: Array) -> Array:
        x32 = jnp.asarray(x, jnp.float32)
        d = draw(key, x32)
        v = _values(values, n).reshape(2, n // 2)
        return _weigh((v[0] - v[1]) * scale(x32), d).astype(jnp.result_type(x))

    def combine_points(x: Array, pts: Array, values: Array) -> Array:
        x32 = jnp.asarray(x, jnp.float32)
        d = (pts[: n // 2] - pts[n // 2:]) / (2.0 * step)  # the directions, not redrawn
        v = _values(values, n).reshape(2, n // 2)
        return _weigh((v[0] - v[1]) * scale(x32), d).astype(jnp.result_type(x))

    return _finish(points, combine, n, name, combine_points)


def nes(n: int, sigma: float, antithetic: bool = True) -> Estimator:
    """NES / Gaussian smoothing (Ilyas et al. 2018), ``u_i ~ N(0, I)``.

    Antithetic: ``n/2`` pairs ``x +- sigma u_i``,
    ``g = 1/(2 sigma n/2) sum_i (f(x+sigma u_i) - f(x-sigma u_i)) u_i``; ``n`` queries (even).
    Otherwise: ``g = 1/(sigma n) sum_i (f(x+sigma u_i) - f(x)) u_i``; ``n + 1`` queries (the
    baseline ``f(x)`` rides in the same batch).

    Example:
        >>> g, q = nes(64, 1e-2)(jax.random.key(0), lambda b: (b**2).sum(-1), jnp.ones(8))
    """
    _check(n, sigma, "sigma", pairs=antithetic)
    m = n // 2 if antithetic else n
    draw = lambda key, x: rng.normal(key, (m, *x.shape), jnp.float32)
    if antithetic:
        return _antithetic(draw, sigma, lambda x: 1.0 / (2.0 * sigma * m), n, "nes")

    def points(key: Array, x: Array) -> Array:
        x32 = jnp.asarray(x, jnp.float32)
        return jnp.concatenate([x32 + sigma * draw(key, x32), x32[None]])

    def combine(key: Array, x: Array, values: Array) -> Array:
        x32 = jnp.asarray(x, jnp.float32)
        v = _values(values, n + 1)
        return _weigh((v[:m] - v[m]) / (sigma * m), draw(key, x32)).astype(jnp.result_type(x))

    def combine_points(x: Array, pts: Array, values: Array) -> Array:
        x32 = jnp.asarray(x, jnp.float32)
        v = _values(values, n + 1)
        u = (pts[:m] - x32) / sigma
        return _weigh((v[:m] - v[m]) / (sigma * m), u).astype(jnp.result_type(x))

    return _finish(points, combine, n + 1, "nes", combine_points)


def spsa(n: int, c: float) -> Estimator:
    """SPSA (Spall 1992): ``n/2`` Rademacher directions ``d_i``, antithetic, ``n`` queries.

    ``g = mean_i (f(x + c d_i) - f(x - c d_i)) / (2c) * d_i`` (``1/d_i = d_i`` since ``d_i = +-1``).

    Example:
        >>> g, q = spsa(64, 1e-2)(jax.random.key(0), lambda b: (b**2).sum(-1), jnp.ones(8))
    """
    _check(n, c, "c", pairs=True)
    m = n // 2
    draw = lambda key, x: rng.rademacher(key, (m, *x.shape), jnp.float32)
    return _antithetic(draw, c, lambda x: 1.0 / (2.0 * c * m), n, "spsa")


def coordinate(n: int, h: float) -> Estimator:
    """Random-coordinate central differences: ``n/2`` coordinates (no replacement), ``n`` queries.

    Each chosen partial is ``(f(x + h e_j) - f(x - h e_j)) / (2h)``. Scaling: the sparse vector of
    partials is multiplied by ``d / (n/2)`` (``d = x.size``), so the estimate is UNBIASED for the
    full gradient (up to the O(h^2) difference error): ``E[d/m sum_{j in S} g_j e_j] = g``. Plain
    partials (no scaling) would instead be a ``m/d``-shrunk gradient. Needs ``n/2 <= x.size``.

    Example:
        >>> g, q = coordinate(8, 1e-3)(jax.random.key(0), lambda b: (b**2).sum(-1), jnp.ones(8))
    """
    _check(n, h, "h", pairs=True)
    m = n // 2

    def draw(key: Array, x: Array) -> Array:
        if m > x.size:
            raise ValueError(f"n: expected n/2 <= x.size = {x.size} (coordinates drawn without "
                             f"replacement), got n={n}")
        idx = jax.random.choice(key, x.size, (m,), replace=False)
        return jax.nn.one_hot(idx, x.size, dtype=jnp.float32).reshape(m, *x.shape)

    return _antithetic(draw, h, lambda x: x.size / (2.0 * h * m), n, "coordinate")


ESTIMATORS: dict[str, Callable[..., Estimator]] = {
    "nes": nes, "spsa": spsa, "coordinate": coordinate}
_STEP = {"nes": "sigma", "spsa": "c", "coordinate": "h"}


def get(name: str, **kw: Any) -> Estimator:
    """Build the estimator ``name`` with keyword settings; ``scale=`` aliases its step argument
    (``sigma`` for nes, ``c`` for spsa, ``h`` for coordinate).

    Example:
        >>> est = get("spsa", n=32, scale=1e-2)
        >>> num_queries(est)
        32
    """
    if name not in ESTIMATORS:
        raise ValueError(f"name: expected one of {sorted(ESTIMATORS)}, got {name!r}")
    if "scale" in kw:
        kw[_STEP[name]] = kw.pop("scale")
    params = inspect.signature(ESTIMATORS[name]).parameters
    unknown = sorted(set(kw) - set(params))
    missing = [p for p, v in params.items() if v.default is v.empty and p not in kw]
    if unknown or missing:
        raise ValueError(f"{name}: expected arguments {list(params)} (or scale), got "
                         f"{sorted(kw)} (unknown {unknown}, missing {missing})")
    return ESTIMATORS[name](**kw)


def num_queries(estimator: Estimator) -> int:
    """Queries one call of ``estimator`` sends to ``f`` (static; known before calling it).

    Example:
        >>> num_queries(nes(10, 0.1, antithetic=False))
        11
    """
    return estimator.num_queries  # type: ignore[attr-defined]
