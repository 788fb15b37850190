"""Training-time defenses against model inversion and membership inference: the losses of
``fit(defense=...)`` (:func:`jaxinv.training.classifier.fit`) and ``jaxinv train --defense``.

A defense is a dict ``{"name": NAME, option: value, ...}`` or the string
``"NAME:option=value,option=value"``; :func:`parse` checks it and fills in the defaults
(:data:`OPTIONS`). Values marked [unverified] were not checked against the papers' code.

* ``negls``: negative label smoothing (Struppek et al., ICLR 2024): cross-entropy against
  ``(1 - a) onehot + a / K`` with ``a < 0`` (``a > 0``: ordinary label smoothing). ``a``
  is 0 until the fraction ``start`` of the run's steps, then moves linearly to ``alpha``
  over the fraction ``warmup``. The paper ramps the factor up during training; the
  defaults (-0.05, off for the first half, ramp over a quarter) follow a third-party
  reimplementation [unverified]. The ramp is timed by the run's total steps, so
  resuming to more epochs than first asked re-times it.
* ``distill``: a student trained on a ``teacher``'s (a :func:`fit` directory) softened
  outputs, ``T^2 KL(softmax(t / T) || softmax(s / T))``, mixed with the hard-label
  cross-entropy by the weight ``hard``. Under DP-SGD the guarantee covers the student's
  steps only, not the teacher (which may have seen the same data).
* ``mid``: MID (Wang et al., AAAI 2021): the arch is wrapped in
  :class:`~jaxinv.models.classifiers.VIB` (``k`` Gaussian units); loss ``CE + beta
  KL(N(mean, std) || N(0, I))``, the KL summed over the ``k`` units (nats). Defaults k=256,
  beta=0.01 [unverified]. Some MID code samples ``z`` at prediction too; here evaluation
  uses the mean.
* ``bido``: BiDO (Peng et al., KDD 2022): ``CE + lambda_x HSIC(X, Z) - lambda_y HSIC(Y, Z)``
  on each batch, ``Z`` the model's penultimate features only (the paper sums over several
  hidden layers), ``Y`` one-hot, the biased estimator ``trace(K H L H) / (n - 1)^2`` of
  Gaussian Gram matrices (:func:`gaussian_gram`). BiDO's code uses a normalised (CCA-like)
  HSIC, bandwidth ``sigma = 5`` scaled by the dimension (and perhaps a linear kernel on
  ``Y``) [unverified]; with this estimator that bandwidth makes the kernels of [0, 1] images
  almost constant and the penalty negligible, so the default ``sigma = 0`` takes the
  median heuristic per batch (``sigma > 0``: BiDO's fixed bandwidth). Its lambdas (MNIST
  about 2 and 20, the defaults; CelebA 0.05 and 0.5 [unverified]) are far weaker here:
  on digits HSIC values are ~0.02 and lambdas ~100 change the features visibly. A
  cross-example loss: refused with DP-SGD.

Example:
    >>> parse("negls:alpha=-0.1,start=0")
    {'name': 'negls', 'alpha': -0.1, 'warmup': 0.25, 'start': 0.0}
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import optax

from jaxinv.models.classifiers import VIB
from jaxinv.training.step import PerExampleLoss, classifier_loss, shift

OPTIONS: dict[str, dict[str, Any]] = {
    "negls": {"alpha": -0.05, "warmup": 0.25, "start": 0.5},
    "distill": {"teacher": "", "temperature": 4.0, "hard": 0.0},
    "mid": {"beta": 0.01, "k": 256},
    "bido": {"lambda_x": 2.0, "lambda_y": 20.0, "sigma": 0.0},
}
NO_DP = ("bido",)  # cross-example losses: no per-example gradients to clip
_RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "alpha": (lambda v: v < 1, "< 1"), "warmup": (lambda v: 0 <= v <= 1, "in [0, 1]"),
    "start": (lambda v: 0 <= v <= 1, "in [0, 1]"), "temperature": (lambda v: v > 0, "> 0"),
    "hard": (lambda v: 0 <= v <= 1, "in [0, 1]"), "beta": (lambda v: v >= 0, ">= 0"),
    "k": (lambda v: v >= 1, ">= 1"), "lambda_x": (lambda v: v >= 0, ">= 0"),
    "lambda_y": (lambda v: v >= 0, ">= 0"), "sigma": (lambda v: v >= 0, ">= 0"),
    "teacher": (bool, "a trained classifier directory (teacher=DIR)"),
}


def parse(defense: dict | str | None) -> dict | None:
    """The checked defense with every option (``None``, ``""`` and ``"none"``: no defense);
    one-line ``ValueError`` naming the bad name, option or value.

    Example:
        >>> parse({"name": "mid", "beta": 0.1})
        {'name': 'mid', 'beta': 0.1, 'k': 256}
        >>> parse("distill:temperature=-1,teacher=t")
        Traceback (most recent call last):
        ValueError: defense distill: temperature must be > 0, got -1.0
    """
    if defense is None or defense in ("", "none", {"name": "none"}):
        return None
    if isinstance(defense, str):
        defense = _from_string(defense)
    if not isinstance(defense, dict):
        raise ValueError(f"defense: expected a dict or 'name:option=value,...', got "
                         f"{type(defense).__name__}")
    name = defense.get("name")
    if name not in OPTIONS:
        raise ValueError(f"defense: unknown name {name!r}; valid: {', '.join(OPTIONS)}")
    bad = sorted(set(defense) - {"name", *OPTIONS[name]})
    if bad:
        raise ValueError(f"defense {name}: unknown option(s) {bad}; valid: "
                         f"{', '.join(OPTIONS[name])}")
    return {"name": name, **{o: _value(name, o, defense.get(o, d), d)
                             for o, d in OPTIONS[name].items()}}


def _from_string(text: str) -> dict:
    """``"name:a=1,b=2"`` -> ``{"name": "name", "a": "1", "b": "2"}``."""
    name, _, rest = text.partition(":")
    out: dict[str, Any] = {"name": name.strip()}
    for item in filter(None, (s.strip() for s in rest.split(","))):
        key, eq, value = item.partition("=")
        if not eq:
            raise ValueError(f"defense {text!r}: expected name:option=value,..., got {item!r}")
        out[key.strip()] = value.strip()
    return out


def _value(name: str, option: str, value: Any, default: Any) -> Any:
    """``value`` as the type of ``default``, checked by ``_RULES[option]``."""
    kind = {str: "a path", int: "an integer", float: "a number"}[type(default)]
    try:
        if isinstance(value, bool) or value is None:
            raise TypeError
        if isinstance(default, str):
            value = str(Path(value).expanduser().absolute()) if str(value) else ""
        elif isinstance(default, int):
            if float(value) != int(float(value)):
                raise ValueError
            value = int(float(value))
        else:
            value = float(value)
    except (TypeError, ValueError, OverflowError):
        raise ValueError(f"defense {name}: {option} must be {kind}, got {value!r}") from None
    ok, wording = _RULES[option]
    if (not isinstance(value, str) and not math.isfinite(value)) or not ok(value):
        raise ValueError(f"defense {name}: {option} must be {wording}, got {value!r}")
    return value


def check_dp(defense: dict | None) -> None:
    """Raise ``ValueError`` if ``defense`` cannot be trained with DP-SGD.

    Example:
        >>> check_dp(parse("mid"))
        >>> check_dp(parse("bido"))
        Traceback (most recent call last):
        ValueError: defense bido: a loss over the whole batch has no per-example gradients; ...
    """
    if defense and defense["name"] in NO_DP:
        raise ValueError(f"defense {defense['name']}: a loss over the whole batch has no "
                         "per-example gradients; it cannot be combined with DP-SGD (dp=...)")


def arch_for(arch: str, arch_kwargs: dict, defense: dict | None) -> tuple[str, dict]:
    """The arch and options ``fit`` builds: ``mid`` wraps ``arch`` in a ``VIB``.

    Example:
        >>> arch_for("mlp", {"hidden": [64]}, parse("mid:k=32"))
        ('vib', {'base': 'mlp', 'base_kwargs': {'hidden': [64]}, 'k': 32})
    """
    if defense and defense["name"] == "mid":
        return "vib", {"base": arch, "base_kwargs": arch_kwargs, "k": defense["k"]}
    return arch, arch_kwargs


def load_teacher(defense: dict | None, input_shape: tuple, num_classes: int) -> Any:
    """``distill``'s teacher (a :class:`~jaxinv.models.Classifier`) after checking it fits
    the data; ``None`` for other defenses.

    Example:
        >>> load_teacher(parse("negls"), (8, 8, 1), 10) is None
        True
    """
    if not defense or defense["name"] != "distill":
        return None
    from jaxinv.training.classifier import load_classifier

    teacher = load_classifier(defense["teacher"])
    shape, k = teacher.meta["input_shape"], teacher.meta["num_classes"]
    if list(shape) != list(input_shape) or k != num_classes:
        raise ValueError(f"defense distill: teacher {defense['teacher']} takes images {shape} "
                         f"with {k} classes; this run has {list(input_shape)} with "
                         f"{num_classes}")
    return teacher


def negls_alpha(step: jax.Array, total_steps: int, alpha: float, warmup: float = 0.0,
                start: float = 0.0) -> jax.Array:
    """The smoothing factor at ``step``: 0 until the fraction ``start`` of ``total_steps``,
    then linear to ``alpha`` over the fraction ``warmup``, then ``alpha``.

    Example:
        >>> [round(float(negls_alpha(s, 100, -0.1, 0.5, 0.25)), 3) for s in (10, 50, 80)]
        [-0.0, -0.05, -0.1]
    """
    p = jnp.asarray(step, jnp.float32) / max(total_steps, 1)
    if warmup > 0:
        return alpha * jnp.clip((p - start) / warmup, 0.0, 1.0)
    return alpha * (p >= start).astype(jnp.float32)


def smoothed_ce(logits: jax.Array, labels: jax.Array, alpha: jax.Array | float) -> jax.Array:
    """Per-example cross-entropy against ``(1 - alpha) onehot + alpha / K``.

    Example:
        >>> logits, labels = jnp.array([[2.0, 0.0, -1.0]]), jnp.array([0])
        >>> t = jnp.array([1.1 - 0.1 / 3, -0.1 / 3, -0.1 / 3])  # alpha = -0.1
        >>> bool(jnp.allclose(smoothed_ce(logits, labels, -0.1),
        ...                   -jnp.sum(t * jax.nn.log_softmax(logits))))
        True
    """
    k = logits.shape[-1]
    target = (1 - alpha) * jax.nn.one_hot(labels, k) + alpha / k
    return -jnp.sum(target * jax.nn.log_softmax(logits), -1)


def distill_loss(student: jax.Array, teacher: jax.Array, labels: jax.Array,
                 temperature: float = 4.0, hard: float = 0.0) -> jax.Array:
    """Per-example ``(1 - hard) T^2 KL(softmax(t / T) || softmax(s / T)) + hard CE(s, y)``.

    Example:
        >>> s = jnp.array([[1.0, 0.0]])
        >>> distill_loss(s, s, jnp.array([0])).tolist()  # student = teacher
        [0.0]
    """
    t = temperature
    log_p, log_q = jax.nn.log_softmax(teacher / t), jax.nn.log_softmax(student / t)
    soft = t * t * jnp.sum(jnp.exp(log_p) * (log_p - log_q), -1)
    if not hard:
        return soft
    return (1 - hard) * soft + hard * optax.softmax_cross_entropy_with_integer_labels(
        student, labels)


def gaussian_kl(mean: jax.Array, std: jax.Array) -> jax.Array:
    """Per-example ``KL(N(mean, diag std^2) || N(0, I))`` in nats, summed over the last axis.

    Example:
        >>> gaussian_kl(jnp.zeros((2, 4)), jnp.ones((2, 4))).tolist()
        [0.0, 0.0]
        >>> gaussian_kl(jnp.ones((1, 4)), jnp.ones((1, 4))).tolist()  # 4 * 1/2
        [2.0]
    """
    log_std = jnp.log(jnp.maximum(std, 1e-30))  # no -inf (nor NaN gradients) if std underflows
    return 0.5 * jnp.sum(mean * mean + std * std - 1.0, -1) - jnp.sum(log_std, -1)


def gaussian_gram(a: jax.Array, sigma: float = 0.0,
                  weights: jax.Array | None = None) -> jax.Array:
    """Gaussian Gram matrix of the rows of ``a`` (flattened to ``d`` values each):
    ``exp(-|a_i - a_j|^2 / (2 sigma^2 d))`` (BiDO's code's scaling) for ``sigma > 0``;
    for ``sigma = 0`` the median heuristic ``exp(-|a_i - a_j|^2 / (2 m))``, ``m`` the median
    of ``|a_i - a_j|^2`` over the pairs of examples of weight 1 (not differentiated).

    Example:
        >>> gaussian_gram(jnp.array([[0.0], [1.0], [3.0]]))  # m = 4
        Array([[1.        , 0.8824969 , 0.32465246],
               [0.8824969 , 1.        , 0.60653067],
               [0.32465246, 0.60653067, 1.        ]], dtype=float32)
    """
    n, a = a.shape[0], a.reshape(a.shape[0], -1)
    sq = jnp.sum(a * a, -1)
    d2 = jnp.maximum(sq[:, None] + sq[None, :] - 2 * a @ a.T, 0.0)
    if sigma > 0:
        return jnp.exp(-d2 / (2 * sigma * sigma * a.shape[1]))
    live = jnp.ones(n, bool) if weights is None else weights > 0
    pairs = jnp.where(live[:, None] & live[None, :], d2, jnp.nan)[jnp.triu_indices(n, 1)]
    m = jnp.nan_to_num(jnp.nanmedian(pairs)) if n > 1 else jnp.zeros((), d2.dtype)
    return jnp.exp(-d2 / (2 * jax.lax.stop_gradient(jnp.maximum(m, 1e-12))))


def hsic(a: jax.Array, b: jax.Array, sigma: float = 0.0,
         weights: jax.Array | None = None) -> jax.Array:
    """Biased HSIC ``trace(K H L H) / (n - 1)^2`` of the Gaussian Gram matrices
    (:func:`gaussian_gram`) of ``a`` and ``b``; ``weights`` (0/1): only the ``n`` examples of
    weight 1 count.

    Example:
        >>> a = jax.random.normal(key, (16, 3))
        >>> bool(hsic(a, a) > hsic(a, jax.random.normal(jax.random.key(1), (16, 3))))
        True
    """
    w = jnp.ones(a.shape[0], a.dtype) if weights is None else weights.astype(a.dtype)
    n = jnp.sum(w)

    def centred(k):  # H K H over the weighted examples
        m = k @ w / jnp.maximum(n, 1)
        return k - m[:, None] - m[None, :] + (w @ m) / jnp.maximum(n, 1)

    k, l_ = (centred(gaussian_gram(v, sigma, weights)) for v in (a, b))
    return jnp.sum(w[:, None] * w[None, :] * k * l_) / jnp.maximum(n - 1, 1) ** 2


def bido_penalty(x: jax.Array, y: jax.Array, z: jax.Array, num_classes: int,
                 lambda_x: float, lambda_y: float, sigma: float = 0.0,
                 weights: jax.Array | None = None) -> jax.Array:
    """BiDO's batch term ``lambda_x HSIC(X, Z) - lambda_y HSIC(Y, Z)``, ``Y`` one-hot.

    Example:
        >>> x, z = jnp.ones((4, 8, 8, 1)), jnp.zeros((4, 5))  # constant: independent
        >>> float(bido_penalty(x, jnp.arange(4), z, 10, 2.0, 20.0))
        0.0
    """
    onehot = jax.nn.one_hot(y, num_classes)
    return (lambda_x * hsic(x, z, sigma, weights)
            - lambda_y * hsic(onehot, z, sigma, weights))


def _ce(c: dict) -> jax.Array:
    return optax.softmax_cross_entropy_with_integer_labels(c["logits"], c["y"])


def _teacher_logits(c: dict) -> jax.Array:
    return jax.lax.stop_gradient(c["teacher"].apply(c["teacher_variables"], c["x"])[0])


_TERMS: dict[str, Callable[[dict, dict], jax.Array]] = {
    "negls": lambda s, c: smoothed_ce(c["logits"], c["y"], negls_alpha(
        c["step"], c["total_steps"], s["alpha"], s["warmup"], s["start"])),
    "distill": lambda s, c: distill_loss(c["logits"], _teacher_logits(c), c["y"],
                                         s["temperature"], s["hard"]),
    "mid": lambda s, c: _ce(c) + s["beta"] * gaussian_kl(c["sown"]["mean"][0],
                                                          c["sown"]["std"][0]),
    "bido": lambda s, c: _ce(c) + bido_penalty(
        c["x"], c["y"], c["z"], c["logits"].shape[-1], s["lambda_x"], s["lambda_y"],
        s["sigma"], c["weights"]),
}


def loss_fn(module: Any, defense: dict | None, *, augment: int = 0, total_steps: int = 1,
            teacher: Any = None) -> Callable[..., PerExampleLoss]:
    """``at(step, teacher_variables=None) -> per_example_loss`` (for
    :func:`~jaxinv.training.step.make_step`) of ``defense`` (from :func:`parse`; ``None``:
    :func:`~jaxinv.training.step.classifier_loss`). ``teacher``: ``distill``'s teacher
    module, its variables passed to ``at`` (arguments of the jitted step, not constants).
    ``bido`` adds its batch term to every example's loss: a batch ``(x, y, weights)``
    masks examples out of it, ``(x, y)`` counts every one (``fit``: full batches).

    Example:
        >>> from jaxinv.models import create, init_variables
        >>> m = create("mlp", 10, hidden=(16,))
        >>> p = init_variables(m, (8, 8, 1))["params"]
        >>> loss = loss_fn(m, parse("bido"))(0)
        >>> losses, (metrics, rest) = loss(p, {}, (jnp.zeros((4, 8, 8, 1)), jnp.arange(4)), key)
        >>> losses.shape, metrics["acc"].shape
        ((4,), (4,))
    """
    if defense is None:
        plain = classifier_loss(module, augment)
        return lambda step, teacher_variables=None: plain
    if (defense["name"] == "mid") != isinstance(module, VIB):
        raise ValueError(f"defense {defense['name']}: mid needs a VIB model (arch_for), "
                         f"other defenses a plain one; got {type(module).__name__}")
    term = _TERMS[defense["name"]]

    def at(step, teacher_variables=None):
        def loss(params, rest, batch, key):
            x, y = batch[0], batch[1]
            ka, kv = jax.random.split(key)
            x = shift(ka, x, augment) if augment else x
            (logits, z), new = module.apply({"params": params, **rest}, x, train=True,
                                            rngs={"vib": kv}, mutable=[*rest, "intermediates"])
            c = {"x": x, "y": y, "z": z, "logits": logits, "step": step,
                 "weights": batch[2] if len(batch) > 2 else None,
                 "sown": new.get("intermediates", {}), "total_steps": total_steps,
                 "teacher": teacher, "teacher_variables": teacher_variables}
            acc = (jnp.argmax(logits, -1) == y).astype(jnp.float32)
            return term(defense, c), ({"acc": acc}, {r: new[r] for r in rest})

        return loss

    return at


__all__ = ["NO_DP", "OPTIONS", "arch_for", "bido_penalty", "check_dp", "distill_loss",
           "gaussian_gram", "gaussian_kl", "hsic", "load_teacher", "loss_fn", "negls_alpha",
           "parse", "smoothed_ce"]
