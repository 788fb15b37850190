"""GMI, "The Secret Revealer" (Zhang et al., CVPR 2020), as a configuration of
:func:`~jaxinv.attacks.gradient_inversion.gradient_inversion` in a GAN's latent space.

Cost ``L(z) = -D(G(z)) + lam * CE(T(G(z)), y)`` (the critic keeps ``G(z)`` realistic, the
cross-entropy makes the target see class ``y``); SGD with Nesterov momentum on ``z``,
``z0 ~ N(0, I)``, ``z`` clipped to ``[-clip, clip]`` after each step, 1500 steps
(SPECS 4b, from GMI's ``Celeba/attack.py``). Restarts are chains; GMI keeps, per class,
the restart whose image has the highest target logit ``T(G(z))_y``: the kernel reports
it (``aux["logit"]``) and :func:`jaxinv.workflows.invert.invert` selects with it.

``env`` is a :class:`GMIEnv` ``(target, G, D)`` of variables, built by :func:`gmi_env`
from the target's variables and a trained :class:`~jaxinv.models.gan.GAN`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxinv.attacks import stops as S
from jaxinv.attacks.gradient_inversion import gradient_inversion, normal
from jaxinv.core.protocol import Attack, class_targets, factory
from jaxinv.models.gan import critic_fn, decoder


class GMIEnv(NamedTuple):
    """``env`` of :func:`gmi`: the target's, the generator's and the critic's variables."""

    target: Any
    G: Any
    D: Any


def gmi_env(target_variables: Any, gan: Any) -> GMIEnv:
    """The :class:`GMIEnv` of a target and a :class:`~jaxinv.models.gan.GAN` prior.

    Example:
        >>> from jaxinv.models.gan import random_gan
        >>> env = gmi_env(variables, random_gan((8, 8, 1), width=4))
        >>> env._fields
        ('target', 'G', 'D')
    """
    return GMIEnv(target_variables, gan.variables["G"], gan.variables["D"])


def _check(input_shape, z_dim, lam, lr, momentum, clip, max_steps) -> None:
    if len(input_shape) != 3 or min(input_shape) < 1:
        raise ValueError(f"input_shape must be (H, W, C), got {input_shape!r}")
    if not isinstance(z_dim, int) or z_dim < 1:
        raise ValueError(f"z_dim must be a positive int, got {z_dim!r}")
    for name, v, ok in (("lam", lam, lambda v: v >= 0), ("lr", lr, lambda v: v > 0),
                        ("momentum", momentum, lambda v: 0 <= v < 1),
                        ("clip", clip, lambda v: v > 0), ("max_steps", max_steps,
                                                          lambda v: v >= 1)):
        if not isinstance(v, jax.core.Tracer) and not ok(v):
            raise ValueError(f"gmi: {name} out of range, got {v!r}")


def _validate(logits_fn, decode, input_shape, z_dim) -> Callable[[Any, Any], None]:
    def num_classes(env):
        x = jax.ShapeDtypeStruct((1, *input_shape), jnp.float32)
        return jax.eval_shape(logits_fn, env.target, x).shape[-1]

    check_classes = class_targets(num_classes)

    def validate(targets, env):
        if not isinstance(env, GMIEnv):
            raise ValueError(f"gmi: env must be a GMIEnv (gmi_env(target_variables, gan)), "
                             f"got {type(env).__name__}")
        try:
            out = jax.eval_shape(decode, jax.ShapeDtypeStruct((z_dim,), jnp.float32), env.G)
        except Exception as e:  # wrong z_dim for these variables, or not a generator's
            raise ValueError(f"gmi: the generator does not take latents of size {z_dim} "
                             f"({type(e).__name__})") from None
        if tuple(out.shape) != tuple(input_shape):
            raise ValueError(f"gmi: the generator outputs images of shape {tuple(out.shape)} "
                             f"but the target takes {tuple(input_shape)}")
        check_classes(targets, env)

    return validate


@factory
def gmi(
    logits_fn: Callable,
    input_shape: tuple[int, ...],
    *,
    generator: Any,
    critic: Any,
    z_dim: int = 100,
    lam: float = 100.0,
    lr: float = 0.02,
    momentum: float = 0.9,
    nesterov: bool = True,
    clip: float = 1.0,
    max_steps: int = 1500,
    stop: S.Stop | None = None,
) -> Attack:
    """Build the GMI kernel: gradient descent on ``-D(G(z)) + lam * CE(T(G(z)), y)``.

    Args:
      logits_fn: ``(variables, x[B, H, W, C]) -> logits[B, K]`` of the target
        (:func:`jaxinv.models.apply_logits`); its variables are ``env.target``.
      input_shape: ``(H, W, C)`` of one image (the generator must output it).
      generator, critic: the GAN prior's Flax modules (:class:`jaxinv.models.gan.GAN`'s
        ``generator`` and ``critic``); their variables are ``env.G`` and ``env.D``.
      z_dim: latent size (the GAN's ``meta["z_dim"]``).
      lam: weight of the identity (cross-entropy) term (GMI: 100).
      lr, momentum, nesterov: SGD on ``z`` (GMI: 0.02, 0.9, Nesterov; 0.01 on MNIST).
        ``lr`` may be a traced array (sweeps).
      clip: ``z`` is clipped to ``[-clip, clip]`` after each step (GMI: 1).
      max_steps: iterations (GMI: 1500).
      stop: an extra :class:`~jaxinv.attacks.stops.Stop` rule (default: none).

    ``aux`` (per step, in ``Info``): ``confidence`` (target ``p_y``), ``logit`` (target
    logit of ``y``, GMI's restart selection) and ``critic`` (``D(G(z))``).

    Example:
        >>> from jaxinv.models import apply_logits
        >>> from jaxinv.models.gan import random_gan
        >>> gan = random_gan((8, 8, 1), width=4)
        >>> attack = gmi(apply_logits(module), (8, 8, 1), generator=gan.generator,
        ...              critic=gan.critic, max_steps=5)
        >>> env = gmi_env(variables, gan)
        >>> s = attack.init(key, 3, env)
        >>> s, info = attack.step(key, s, 3, env)
        >>> s.z.shape, s.x.shape, sorted(info.aux)
        ((100,), (8, 8, 1), ['confidence', 'critic', 'logit'])
        >>> attack.config["lam"], attack.config["generator"]
        (100.0, 'Generator')
    """
    input_shape = tuple(int(s) for s in input_shape)
    _check(input_shape, z_dim, lam, lr, momentum, clip, max_steps)
    decode_g, score = decoder(generator), critic_fn(critic)

    def decode(z, env):
        return decode_g(z, env.G)

    def cost(x, y, env):
        logits = logits_fn(env.target, x[None])[0].astype(jnp.float32)
        y = jnp.asarray(y, jnp.int32)
        logp = jax.nn.log_softmax(logits)[y]
        d = score(env.D, x).astype(jnp.float32)
        return -d - lam * logp, {"confidence": jnp.exp(logp), "logit": logits[y], "critic": d}

    rule = S.max_steps(max_steps)
    return gradient_inversion(
        cost, optax.sgd(lr, momentum or None, nesterov=nesterov), has_aux=True,
        init=normal((z_dim,)), decode=decode, project=lambda z: jnp.clip(z, -clip, clip),
        stop=rule if stop is None else S.any_of(stop, rule),
        validate=_validate(logits_fn, decode_g, input_shape, z_dim))


__all__ = ["GMIEnv", "gmi", "gmi_env"]
