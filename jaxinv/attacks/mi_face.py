"""MI-Face (Fredrikson, Jha & Ristenpart, CCS 2015) as a configuration of
:func:`~jaxinv.attacks.gradient_inversion.gradient_inversion`.

Cost ``1 - p_y(x)`` (the paper's) or ``-log p_y(x)`` plus TV/L2 priors; plain gradient
steps ``x <- Process(x - lr grad c(x))`` projected to the pixel box; the paper's stopping
rules (no improvement over ``beta`` steps, ``c <= gamma``, ``max_steps``); the driver
returns ``argmin_t c(x_t)`` per chain. Defaults are the setting that works on the
toolkit's data (``-log p``, dark random starts, a little TV); ``paper=True`` gives the
paper's (``1 - p``, ``x0 = 0``, no prior).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax

from jaxinv.attacks import priors
from jaxinv.attacks import stops as S
from jaxinv.attacks.gradient_inversion import gradient_inversion, uniform, zeros
from jaxinv.core.protocol import Attack, class_targets, factory

LOSSES = ("one_minus_p", "neg_log_p")
INITS = ("zero", "random")


def class_cost(apply_fn: Callable, loss: str) -> Callable:
    """``(x, y, env) -> (cost, {"confidence": p_y})`` for one image and class ``y``.

    Example:
        >>> f = lambda env, x: x.reshape(len(x), -1) @ env
        >>> c, aux = class_cost(f, "neg_log_p")(jnp.zeros((2, 2, 1)), 1, jnp.eye(4, 3))
        >>> round(float(aux["confidence"]), 3)
        0.333
    """
    if loss not in LOSSES:
        raise ValueError(f"unknown loss {loss!r}; choose one of {LOSSES}")

    def cost(x, y, env):
        logits = apply_fn(env, x[None])[0]
        logp = jax.nn.log_softmax(logits.astype(jnp.float32))[jnp.asarray(y, jnp.int32)]
        p = jnp.exp(logp)
        return (1.0 - p) if loss == "one_minus_p" else -logp, {"confidence": p}

    return cost


def _check(lr, max_steps, beta, init, init_range, input_shape):
    if init not in INITS:
        raise ValueError(f"unknown init {init!r}; choose one of {INITS}")
    if len(input_shape) != 3 or min(input_shape) < 1:
        raise ValueError(f"input_shape must be (H, W, C), got {input_shape!r}")
    if len(init_range) != 2 or not init_range[0] < init_range[1]:
        raise ValueError(f"init_range must be (low, high) with low < high, got {init_range!r}")
    for name, v in (("lr", lr), ("max_steps", max_steps), ("beta", beta)):
        if not isinstance(v, jax.core.Tracer) and not v > 0:
            raise ValueError(f"{name} must be > 0, got {v!r}")


@factory
def mi_face(
    apply_fn: Callable,
    input_shape: tuple[int, ...],
    *,
    lr: float = 0.05,
    max_steps: int = 5000,
    beta: int = 100,
    gamma: float = 0.01,
    loss: str = "neg_log_p",
    init: str = "random",
    init_range: tuple[float, float] | None = (0.0, 0.25),
    tv: float = 0.05,
    l2: float = 0.0,
    process: priors.Process = priors.identity,
    box: tuple[float, float] | None = (0.0, 1.0),
    paper: bool = False,
) -> Attack:
    """Build the MI-Face kernel.

    Args:
      apply_fn: ``(env, x[B, H, W, C]) -> logits[B, K]``; ``env`` holds the target's
        variables.
      input_shape: ``(H, W, C)`` of one image.
      lr: gradient step (paper: lambda = 0.1); may be a traced array (sweeps).
      max_steps, beta: the paper's alpha (5000) and no-improvement window (100).
      gamma: stop once the cost is <= gamma. The paper's "gamma = 0.99" [MEM in SPECS]
        read as confidence 0.99, i.e. cost 0.01 for ``one_minus_p`` (use ``-log 0.99``
        for ``neg_log_p``).
      loss: ``"neg_log_p"`` (default) or ``"one_minus_p"`` (the paper's).
      init: ``"random"`` (uniform on ``init_range``) or ``"zero"`` (the paper's x0 = 0).
      tv, l2: weights of the total-variation and L2 priors (0 in the paper).
      process: ``x -> x`` after each step (identity; ``priors.denoise`` ...).
      box: pixel range to project onto after each step, or ``None``.
      paper: the paper's setting: ``one_minus_p``, ``lr=0.1``, ``x0 = 0``, no prior
        (overrides those options; ``config`` records the values used).

    Example:
        >>> f = lambda env, x: x.reshape(len(x), -1) @ env
        >>> attack = mi_face(f, (2, 2, 1))
        >>> attack.config["loss"], attack.config["tv"]
        ('neg_log_p', 0.05)
    """
    if paper:
        loss, lr, init, tv, l2 = "one_minus_p", 0.1, "zero", 0.0, 0.0
    input_shape = tuple(int(s) for s in input_shape)
    init_range = tuple(map(float, init_range or box or (0.0, 1.0)))
    _check(lr, max_steps, beta, init, init_range, input_shape)
    beta = min(beta, max_steps)  # the rule needs t >= beta, so a longer window never fires

    def project(x):
        x = process(x)
        return jnp.clip(x, *box) if box is not None else x

    logits_dim = lambda env: jax.eval_shape(
        apply_fn, env, jax.ShapeDtypeStruct((1, *input_shape), jnp.float32)).shape[-1]
    attack = gradient_inversion(
        class_cost(apply_fn, loss), optax.sgd(lr), has_aux=True,
        validate=class_targets(logits_dim),
        init=zeros(input_shape) if init == "zero" else uniform(input_shape, *init_range),
        prior=priors.make(tv=tv, l2=l2), project=project,
        stop=S.any_of(S.no_improvement(beta), S.below(gamma), S.max_steps(max_steps)))
    resolved = {"loss": loss, "lr": lr, "init": init, "tv": tv, "l2": l2} if paper else {}
    return attack._replace(config={"resolved": resolved})


__all__ = ["LOSSES", "class_cost", "mi_face"]
