"""Label-only inversion by boundary repulsion, after BREP-MI (Kahla et al., CVPR 2022).

The attacker sees only the predicted label. A chain first searches for a start point the
target labels ``y`` (batches of samples from ``start``). It then grows a sphere around
its point: it queries ``N`` points at radius ``R`` and, if more than ``threshold`` of them
keep the label, records the point and sets ``R <- growth R``; otherwise it steps away from
the points that left the class, ``g = mean_n(w_n u_n) / R`` with ``w_n = -1`` outside,
``0`` inside, by ``min(R / 3, max_step)``, and keeps the step only if the new point is
still labelled ``y``. A larger radius means a point deeper inside the class: the result
is the point recorded at the last radius increase (``State.loss = -R``).

It is a :class:`BlackBox` of ``kind="label"`` with one batch of ``N + 1`` queries per
step: the candidate point and the sphere around it (checked together: when the
candidate is rejected, the sphere answers are discarded and the sphere is redrawn around
the last accepted point). The search runs in ``z`` with ``x = decode(z)``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxinv.attacks import priors
from jaxinv.attacks.zo_inversion import NOT_QUERIED
from jaxinv.core import rng
from jaxinv.core.protocol import BlackBox, Queries, budget_rule, check_budget, factory

STARTS = ("uniform", "blobs", "normal")


class BREPState(NamedTuple):
    x: jax.Array  # decode of the point recorded at the last radius increase (or the start)
    z: jax.Array  # the current point, labelled y once found
    cand: jax.Array  # the next point to check (== z after a rejection or radius increase)
    loss: jax.Array  # -(radius recorded); NOT_QUERIED before a start point is found
    sphere_share: jax.Array  # share of the last sphere that kept the label
    radius: jax.Array
    found: jax.Array
    since_increase: jax.Array
    queries: jax.Array
    t: jax.Array
    budget_exhausted: jax.Array
    done: jax.Array


class BREPInfo(NamedTuple):
    loss: jax.Array
    sphere_share: jax.Array
    radius: jax.Array
    found: jax.Array
    queries: jax.Array


def _sampler(start: str, z_shape: tuple[int, ...], init_range: tuple[float, float],
             box: tuple[float, float] | None) -> Callable[[jax.Array, int], jax.Array]:
    lo, hi = init_range

    def sample(key: jax.Array, n: int) -> jax.Array:
        if start == "normal":
            z = rng.normal(key, (n, *z_shape), jnp.float32)
        elif start == "uniform":
            z = rng.uniform(key, (n, *z_shape), jnp.float32, lo, hi)
        else:  # blobs: low-resolution uniform noise, upsampled (smooth random images)
            h, w = z_shape[0], z_shape[1]
            small = rng.uniform(key, (n, max(h // 4, 2), max(w // 4, 2), *z_shape[2:]),
                                       jnp.float32, lo, hi)
            z = jax.image.resize(small, (n, *z_shape), "linear")
        return jnp.clip(z, *box) if box is not None else z

    return sample


def _check(start, spheres, radius, growth, threshold, max_step, max_steps, patience) -> None:
    if start not in STARTS:
        raise ValueError(f"unknown start {start!r}; choose one of {STARTS}")
    if not isinstance(spheres, int) or spheres < 2:
        raise ValueError(f"spheres must be an int >= 2, got {spheres!r}")
    if not radius > 0 or not growth > 1 or not 0 < threshold < 1 or not max_step > 0:
        raise ValueError(f"need radius > 0, growth > 1, 0 < threshold < 1, max_step > 0; got "
                         f"{radius!r}, {growth!r}, {threshold!r}, {max_step!r}")
    if max_steps < 1 or patience < 1:
        raise ValueError(f"need max_steps >= 1 and patience >= 1, got {max_steps}, {patience}")


def _repulsion(pts: jax.Array, cand: jax.Array, inside: jax.Array, radius: jax.Array,
               normalize: bool) -> jax.Array:
    """BREP's repulsion direction ``mean_n(w_n u_n)`` from the sphere points ``pts``
    around ``cand`` (``w_n = -1`` outside the class, 0 inside; ``u_n`` unit-radius)."""
    u = (pts - cand) / radius  # the (clipped) unit-radius directions
    g = jnp.tensordot(jnp.where(inside, 0.0, -1.0), u, axes=1) / pts.shape[0]
    if normalize:
        g = g / jnp.maximum(jnp.sqrt(jnp.sum(g * g)), 1e-12)
    return g


@factory
def brep_mi(
    input_shape: tuple[int, ...],
    *,
    spheres: int = 32,
    radius: float = 1.0,
    growth: float = 1.3,
    threshold: float = 0.75,
    max_step: float = 3.0,
    patience: int = 1000,
    max_radius: float | None = None,
    max_steps: int = 10_000,
    budget: int | None = None,
    normalize: bool = True,
    tv: float = 0.0,
    l2: float = 0.0,
    start: str = "blobs",
    init_range: tuple[float, float] = (0.0, 0.5),
    decode: Callable[[jax.Array, object], jax.Array] | None = None,
    z_shape: tuple[int, ...] | None = None,
    box: tuple[float, float] | None = (0.0, 1.0),
) -> BlackBox:
    """Build the label-only boundary-repulsion kernel (ask/tell, ``kind="label"``).

    Args:
      input_shape: ``(H, W, C)`` of one image (``decode``'s output).
      spheres: ``N``, points on the sphere per step (a step sends ``N + 1`` queries).
      radius: initial sphere radius ``R`` (L2, in ``z`` units; BREP used 2.0 in a GAN
        latent, 1.0 is the pixel-space default the README's runs use).
      growth: factor on ``R`` when more than ``threshold`` of a sphere keeps the label.
      max_step: cap of the step length ``min(R / 3, max_step)``.
      max_radius: the chain stops once ``R`` reaches it (default: the diagonal of ``box``
        in ``z``, beyond which every sphere point is clipped to the box: growing further
        measures nothing; ``inf`` without a box).
      patience: stop after this many steps without a radius increase.
      max_steps: stop after this many steps (search steps included).
      budget: queries per chain (``None``: unlimited).
      normalize: unit-length repulsion steps (jaxinv's addition, needed in pixel space);
        ``False`` is BREP's raw step.
      tv, l2: weights of the total-variation and L2 priors: each step also descends their
        exact gradient (per pixel, so weights do not depend on the image size).
      start: start-point search distribution: ``"blobs"`` (smooth random images, values in
        ``init_range``), ``"uniform"`` (on ``init_range``) or ``"normal"`` (``N(0, I)``,
        BREP's latent prior); samples are clipped to ``box``.
      decode: ``(z, env) -> x`` (default identity; ``env`` is the attacker's, e.g. a
        generator's variables); ``z_shape`` its input shape.
      box: range of ``z`` (queries and steps are clipped to it), or ``None``. BREP's
        latent space uses ``(-1.5, 1.5)``.

    Example:
        >>> bb = brep_mi((28, 28, 1), spheres=32, radius=2.0)
        >>> bb.num_queries, bb.kind
        (33, 'label')
    """
    _check(start, spheres, radius, growth, threshold, max_step, max_steps, patience)
    per_step = spheres + 1
    check_budget(budget, per_step)
    decode = decode or (lambda z, env: z)
    z_shape = tuple(z_shape or input_shape)
    sample = _sampler(start, z_shape, init_range, box)
    clip = (lambda z: jnp.clip(z, *box)) if box is not None else (lambda z: z)
    size = int(jnp.prod(jnp.asarray(z_shape)))
    r_max = float(max_radius if max_radius is not None else
                  (size ** 0.5 * (box[1] - box[0]) if box is not None else float("inf")))

    prior_x = priors.make(tv=tv, l2=l2)

    def points(key, state):
        eps = rng.normal(key, (spheres, *z_shape), jnp.float32)
        norm = jnp.sqrt(jnp.sum(eps.reshape(spheres, -1) ** 2, -1))
        on_sphere = clip(state.cand + eps * (state.radius / norm).reshape(-1, *[1] * len(z_shape)))
        return jnp.where(state.found, jnp.concatenate([state.cand[None], on_sphere]),
                         sample(key, per_step))

    def init_fn(key, target, env):
        z = sample(key, 1)[0]
        f32 = jnp.float32
        return BREPState(decode(z, env), z, z, f32(NOT_QUERIED), f32(0.0), f32(radius),
                         jnp.bool_(False), jnp.int32(0), jnp.int32(0), jnp.int32(0),
                         jnp.bool_(False), jnp.bool_(False))

    def ask(key, state, target, env):
        pts = points(key, state)
        return Queries(jax.vmap(lambda z: decode(z, env))(pts), pts)

    def tell(key, state, target, queries, labels, env):
        del key  # the points are the queries
        pts, xs = queries.z, queries.x
        inside = labels == jnp.asarray(target, jnp.int32)
        # search phase: the first candidate labelled y becomes the start point
        hit = jnp.argmax(inside)
        just_found = ~state.found & inside[hit]
        # repulsion phase
        accepted = state.found & inside[0]
        c = inside[1:]
        share = jnp.mean(c.astype(jnp.float32))
        grow = accepted & (share > threshold)
        g = _repulsion(pts[1:], state.cand, c, state.radius, normalize)
        if prior_x is not None:
            g = g - size * jax.grad(lambda z: prior_x(decode(z, env)))(state.cand)
        stepped = clip(state.cand + jnp.minimum(state.radius / 3, max_step) * g)
        z = jnp.where(accepted, state.cand, state.z)
        cand = jnp.where(accepted & ~grow, stepped, z)
        new_radius = jnp.where(grow, jnp.minimum(state.radius * growth, r_max), state.radius)
        loss = jnp.where(grow, -state.radius, state.loss)
        x = jnp.where(grow, xs[0], state.x)  # grow implies z == cand == pts[0]
        # merge the phases
        z = jnp.where(just_found, pts[hit], z)
        cand = jnp.where(just_found, pts[hit], cand)
        x = jnp.where(just_found, xs[hit], x)
        loss = jnp.where(just_found, jnp.float32(0.0), loss)
        found = state.found | just_found
        since = jnp.where(grow | ~found, 0, state.since_increase + 1)
        t, used = state.t + 1, state.queries + per_step
        exhausted, done = budget_rule(used, per_step, budget, (t >= max_steps)
                                      | (since >= patience) | (new_radius >= r_max))
        share = jnp.where(state.found, share, state.sphere_share)
        new = BREPState(x, z, cand, loss.astype(jnp.float32), share, new_radius, found, since,
                        used, t, exhausted, done)
        return new, BREPInfo(new.loss, share, new_radius, found, used)

    return BlackBox(init_fn, ask, tell, "label", per_step)


__all__ = ["STARTS", "BREPInfo", "BREPState", "brep_mi"]
