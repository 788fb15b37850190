"""Gradient leakage: reconstruct a federated client's batch from the update it shared.

One chain is one victim x one restart; its *target* is a :class:`Victim` (the shared
update as a pytree, and the labels when known), ``env`` the model's variables. DLG, iDLG
and Inverting Gradients are configurations of
:func:`~jaxinv.attacks.gradient_inversion.gradient_inversion` whose cost is a distance
between the victim's update and the update the dummy batch produces
(:func:`jaxinv.federated.client_update`, FedSGD or FedAvg, differentiated twice).

* :func:`dlg` (Zhu et al. 2019): dummy images and soft labels ``softmax(y')``, both from
  ``N(0, 1)``, L2 gradient distance, L-BFGS.
* :func:`idlg` (Zhao et al. 2020): DLG with the label read off the last layer's gradient
  (:func:`label_from_update`); only the images are optimised.
* :func:`inverting_gradients` (Geiping et al. 2020): cosine distance + anisotropic TV,
  Adam on signed gradients with step decay at 3/8, 5/8, 7/8, box projection; restarts
  (chains) are scored by final loss.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxinv.attacks import stops as S
from jaxinv.attacks.gradient_inversion import gradient_inversion
from jaxinv.core import rng
from jaxinv.core.protocol import Attack, factory
from jaxinv.federated.oracle import check_update_tree, client_update

DISTANCES = ("l2", "cosine")
LABELS = ("optimise", "given")


class Victim(NamedTuple):
    """One victim as a chain target: its shared ``update`` (a pytree like the model's
    params) and ``labels [B]`` (int32; used when the attack is built with
    ``labels="given"``, from :func:`batch_labels` or the truth)."""

    update: Any
    labels: jax.Array


def l2_distance(a: Any, b: Any) -> jax.Array:
    """DLG's distance: sum over all tensors of the squared difference.

    Example:
        >>> float(l2_distance({"w": jnp.ones(3)}, {"w": jnp.zeros(3)}))
        3.0
    """
    return sum(jnp.sum(jnp.square(u - v)) for u, v in zip(jax.tree.leaves(a),
                                                           jax.tree.leaves(b), strict=True))


def cosine_distance(a: Any, b: Any) -> jax.Array:
    """Inverting Gradients' distance: ``1 - <a, b> / (|a| |b|)`` over all tensors at once.

    Example:
        >>> float(cosine_distance({"w": jnp.ones(3)}, {"w": -jnp.ones(3)}))
        2.0
    """
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    dot = sum(jnp.sum(u * v) for u, v in zip(la, lb, strict=True))
    na = jnp.sqrt(sum(jnp.sum(jnp.square(u)) for u in la))
    nb = jnp.sqrt(sum(jnp.sum(jnp.square(v)) for v in lb))
    return 1.0 - dot / jnp.maximum(na * nb, 1e-20)


def anisotropic_tv(x: jax.Array) -> jax.Array:
    """``mean|dx| + mean|dy|`` of images ``[..., H, W, C]`` (``inversefed/metrics.py``).

    Example:
        >>> float(anisotropic_tv(jnp.array([[[0.0], [1.0]], [[0.0], [1.0]]])))
        1.0
    """
    dx = jnp.mean(jnp.abs(x[..., :, 1:, :] - x[..., :, :-1, :]))
    dy = jnp.mean(jnp.abs(x[..., 1:, :, :] - x[..., :-1, :, :]))
    return dx + dy


def head_update(update: Any, num_classes: int) -> jax.Array:
    """The last layer's kernel ``[features, K]`` in an update: the 2-D leaf with ``K``
    columns (the last such leaf in flatten order if several).

    Example:
        >>> head_update({"Conv_0": {"kernel": jnp.zeros((5, 5, 1, 12))},
        ...              "Dense_0": {"kernel": jnp.zeros((588, 10))}}, 10).shape
        (588, 10)
    """
    heads = [a for a in jax.tree.leaves(update) if a.ndim == 2 and a.shape[-1] == num_classes]
    if not heads:
        raise ValueError(f"no 2-D last-layer kernel with {num_classes} columns in the update")
    return heads[-1]


def label_from_update(update: Any, num_classes: int) -> jax.Array:
    """iDLG's rule: the class whose last-layer gradient column sums lowest (the only
    negative one for one example with non-negative features and cross-entropy).

    Example:
        >>> g = {"Dense_0": {"kernel": jnp.array([[0.1, -0.3, 0.2], [0.2, -0.1, 0.0]])}}
        >>> int(label_from_update(g, 3))
        1
    """
    return jnp.argmin(jnp.sum(head_update(update, num_classes), axis=0)).astype(jnp.int32)


def batch_labels(update: Any, num_classes: int, batch: int) -> jax.Array:
    """Labels of a batch of ``batch`` distinct classes: the ``batch`` classes whose
    last-layer gradient columns sum lowest, sorted (GradInversion's rule; ``batch=1`` is
    :func:`label_from_update`). Exact while each true class's column stays negative; it can
    turn positive when the other images also favour that class (an untrained ``dlg-lenet``
    on digits, batches of 4 distinct labels: 60 of 64 labels right, ``tests``), and
    repeated labels are recovered only in part.

    Example:
        >>> g = {"k": jnp.array([[0.3, -0.2, 0.1, -0.4]])}
        >>> batch_labels(g, 4, 2).tolist()
        [1, 3]
    """
    sums = jnp.sum(head_update(update, num_classes), axis=0)
    return jnp.sort(jnp.argsort(sums)[:batch]).astype(jnp.int32)


def victims_validator(num_classes: int, batch: int) -> Callable[[Victim, Any], None]:
    """``validate(targets, env)``: the updates match the model in ``env`` and the labels
    are ``[V, batch]`` ints in range; one-line ``ValueError`` otherwise."""

    def validate(targets, env):
        if not isinstance(targets, Victim):
            raise ValueError(f"targets must be a Victim(update, labels), got "
                             f"{type(targets).__name__}")
        check_update_tree(targets.update, env["params"])
        y = np.asarray(targets.labels)
        if y.ndim != 2 or y.shape[1] != batch or not np.issubdtype(y.dtype, np.integer):
            raise ValueError(f"victim labels must be int [V, {batch}], got {y.dtype}{y.shape}")
        if y.size and (y.min() < 0 or y.max() >= num_classes):
            raise ValueError(f"victim labels out of range 0..{num_classes - 1}")

    return validate


def _cost(apply_fn, distance, labels, local_steps, local_lr):
    dist = {"l2": l2_distance, "cosine": cosine_distance}[distance]

    def cost(d, target, env):
        y = jax.nn.softmax(d["y"]) if labels == "optimise" else target.labels
        dummy = client_update(apply_fn, env, d["x"], y, local_steps=local_steps, lr=local_lr)
        return dist(dummy, target.update)

    return cost


def _check(distance, labels, batch, steps, input_shape):
    if distance not in DISTANCES:
        raise ValueError(f"unknown distance {distance!r}; choose one of {DISTANCES}")
    if labels not in LABELS:
        raise ValueError(f"unknown labels {labels!r}; choose one of {LABELS}")
    if len(input_shape) != 3 or min(input_shape) < 1:
        raise ValueError(f"input_shape must be (H, W, C), got {input_shape!r}")
    if batch < 1 or steps < 1:
        raise ValueError(f"batch and steps must be >= 1, got {batch}, {steps}")


@factory
def gradient_matching(
    apply_fn: Callable,
    input_shape: tuple[int, ...],
    num_classes: int,
    *,
    batch: int = 1,
    distance: str = "l2",
    labels: str = "optimise",
    optimizer: str = "lbfgs",
    lr: float = 1.0,
    steps: int = 300,
    tv: float = 0.0,
    box: tuple[float, float] | None = None,
    init_scale: float = 1.0,
    tol: float = 0.0,
    local_steps: int = 0,
    local_lr: float = 1e-4,
    memory_size: int = 100,
    linesearch: bool | str = True,
) -> Attack:
    """The gradient-matching kernel behind DLG, iDLG and Inverting Gradients.

    Args:
      apply_fn: ``(variables, x) -> logits``; ``env`` holds the victim model's variables.
      input_shape, num_classes: the model's image shape ``(H, W, C)`` and classes ``K``.
      batch: images per victim ``B`` (the chain's iterate is ``[B, H, W, C]``).
      distance: ``"l2"`` (DLG) or ``"cosine"`` (Inverting Gradients) between updates.
      labels: ``"optimise"`` soft dummy labels ``softmax(y')`` with the images (DLG), or
        use the target's ``labels`` (iDLG's analytic label, or known labels).
      optimizer: ``"lbfgs"`` (optax's L-BFGS, history ``memory_size``) or
        ``"signed-adam"`` (Adam at ``lr`` on ``sign(grad)``, x0.1 at 3/8, 5/8, 7/8 of
        ``steps``).
      steps: iterations (the decay schedule and the stop rule use it).
      tv: weight of the anisotropic TV prior.
      box: clip the images into ``(low, high)`` after each step (``None``: no box).
      init_scale: dummy images and labels start from ``N(0, init_scale^2)``.
      tol: a chain stops once its cost is below ``tol`` (DLG's code: 1e-6; 0 never).
      local_steps, local_lr: the client's FedAvg setting the victim's update came from
        (``local_steps=0``: FedSGD gradients).
      memory_size, linesearch: L-BFGS history (100: torch's default, which DLG's code
        uses) and step rule: ``True``/``"zoom"``, optax's zoom line search (several
        gradient evaluations per step); ``"backtracking"``, Armijo backtracking from
        ``lr`` (about one evaluation per step); ``False``, DLG's code (torch's L-BFGS:
        fixed step ``lr``), fastest per step but it diverges on some victims (DLG, 300
        steps, MNIST: 5 of 16 victims recovered without line search, 30 of 32 with zoom;
        iDLG, 2000 steps, CIFAR-10: 10% of 256 chains diverged).

    Example:
        >>> from jaxinv.models import apply_logits, create, init_variables
        >>> from jaxinv.federated import client_update
        >>> m = create("dlg-lenet", 10); v = init_variables(m, (8, 8, 1))
        >>> x = jax.random.uniform(jax.random.key(1), (1, 8, 8, 1)); y = jnp.array([4])
        >>> target = Victim(client_update(apply_logits(m), v, x, y), y)
        >>> attack = gradient_matching(apply_logits(m), (8, 8, 1), 10, labels="given")
        >>> s, step = attack.init(jax.random.key(0), target, v), jax.jit(attack.step)
        >>> for t in range(30):
        ...     s, info = step(jax.random.key(t), s, target, v)
        >>> bool(jnp.mean((s.x - x) ** 2) < 1e-3)
        True
    """
    _check(distance, labels, batch, steps, input_shape)
    shape = (batch, *input_shape)
    cost = _cost(apply_fn, distance, labels, local_steps, local_lr)

    def init(key, target, env):
        kx, ky = jax.random.split(key)
        z = {"x": init_scale * rng.normal(kx, shape, jnp.float32)}
        if labels == "optimise":
            z["y"] = init_scale * rng.normal(ky, (batch, num_classes), jnp.float32)
        return z

    if optimizer == "lbfgs":
        opt = _lbfgs(lr, memory_size, linesearch)
    elif optimizer == "signed-adam":
        decay = {int(steps * f): 0.1 for f in (3 / 8, 5 / 8, 7 / 8)}
        opt = optax.chain(optax.scale_by_sign(),
                          optax.adam(optax.piecewise_constant_schedule(lr, decay)))
    else:
        raise ValueError(f"unknown optimizer {optimizer!r}; choose 'lbfgs' or 'signed-adam'")
    project = None
    if box is not None:
        lo, hi = box
        project = lambda z: {**z, "x": jnp.clip(z["x"], lo, hi)}
    stop = S.any_of(S.max_steps(steps), S.below(tol)) if tol > 0 else S.max_steps(steps)
    prior = (lambda x, env: tv * anisotropic_tv(x)) if tv else None
    return gradient_inversion(cost, opt, init=init, prior=prior, project=project, stop=stop,
                              view=lambda d: d["x"],
                              validate=victims_validator(num_classes, batch))


def _lbfgs(lr: float, memory_size: int, linesearch: bool | str):
    if linesearch is True or linesearch == "zoom":
        return optax.lbfgs(memory_size=memory_size)
    if linesearch == "backtracking":
        ls = optax.scale_by_backtracking_linesearch(max_backtracking_steps=20,
                                                    max_learning_rate=lr)
        return optax.lbfgs(memory_size=memory_size, linesearch=ls)
    if linesearch is False or linesearch is None:
        return optax.lbfgs(lr, memory_size=memory_size, linesearch=None)
    raise ValueError(f"linesearch {linesearch!r}: want True/'zoom', 'backtracking' or False")


def dlg(apply_fn: Callable, input_shape: tuple[int, ...], num_classes: int, *,
        batch: int = 1, steps: int = 300, **kw: Any) -> Attack:
    """DLG: L2 matching of images and soft labels by L-BFGS, stop below 1e-6.

    Example:
        >>> from jaxinv.models import apply_logits, create
        >>> dlg(apply_logits(create("dlg-lenet", 10)), (28, 28, 1), 10).config["labels"]
        'optimise'
    """
    kw = {"tol": 1e-6, **kw}
    return gradient_matching(apply_fn, input_shape, num_classes, batch=batch, steps=steps,
                             distance="l2", labels="optimise", optimizer="lbfgs", **kw)


def idlg(apply_fn: Callable, input_shape: tuple[int, ...], num_classes: int, *,
         batch: int = 1, steps: int = 300, **kw: Any) -> Attack:
    """iDLG: DLG with the label given (read off the update by :func:`batch_labels`).

    Example:
        >>> from jaxinv.models import apply_logits, create
        >>> idlg(apply_logits(create("dlg-lenet", 10)), (28, 28, 1), 10).config["labels"]
        'given'
    """
    kw = {"tol": 1e-6, **kw}
    return gradient_matching(apply_fn, input_shape, num_classes, batch=batch, steps=steps,
                             distance="l2", labels="given", optimizer="lbfgs", **kw)


def inverting_gradients(apply_fn: Callable, input_shape: tuple[int, ...], num_classes: int,
                        *, batch: int = 1, steps: int = 4000, tv: float = 1e-4,
                        lr: float = 0.1, box: tuple[float, float] | None = (0.0, 1.0),
                        **kw: Any) -> Attack:
    """Inverting Gradients: cosine matching + TV, signed Adam with step decay, box.

    Defaults are the CLI's CIFAR setting (4000 iterations, TV 1e-4, lr 0.1). The box is
    the pixel range ``[0, 1]`` (the papers' code boxes the *normalised* range; jaxinv's
    models take ``[0, 1]`` pixels).

    Example:
        >>> from jaxinv.models import apply_logits, create
        >>> ig = inverting_gradients(apply_logits(create("resnet", 10)), (32, 32, 3), 10)
        >>> ig.config["distance"], ig.config["optimizer"]
        ('cosine', 'signed-adam')
    """
    return gradient_matching(apply_fn, input_shape, num_classes, batch=batch, steps=steps,
                             distance="cosine", labels="given", optimizer="signed-adam",
                             lr=lr, tv=tv, box=box, **kw)


ATTACKS = {"dlg": dlg, "idlg": idlg, "ig": inverting_gradients}

__all__ = ["ATTACKS", "Victim", "anisotropic_tv", "batch_labels", "cosine_distance", "dlg",
           "gradient_matching", "head_update", "idlg", "inverting_gradients",
           "l2_distance", "label_from_update", "victims_validator"]
