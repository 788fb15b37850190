"""Model zoo: Flax classifiers returning ``(logits, features)``, and ``Classifier``.

Every classifier maps NHWC float32 images in [0, 1] to ``(logits, features)``
(``features`` = penultimate activations). Attack kernels take the pure
``apply_logits(module)`` and receive the variables in their ``env`` argument.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import cache, partial
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import numpy as np

from jaxinv.models.classifiers import (
    ACTIVATIONS,
    ARCHS,
    MLP,
    VGG,
    LeNet,
    ResNet,
    SoftmaxRegression,
    create,
    init_variables,
)
from jaxinv.models.layers import Conv, conv2d_same, max_pool_2x2


def check_input(meta: dict, shape: Sequence[int]) -> None:
    """Raise ``ValueError`` unless ``shape`` is ``[N, *meta['input_shape']]``.

    Example:
        >>> check_input({"input_shape": [8, 8, 1]}, (5, 8, 8, 1))  # fine
        >>> check_input({"input_shape": [8, 8, 1]}, (5, 28, 28, 1))
        Traceback (most recent call last):
        ValueError: model ? trained on ? expects images [N, 8, 8, 1] (NHWC), got [5, 28, 28, 1]
    """
    want = tuple(int(d) for d in meta["input_shape"])
    if len(shape) != 4 or tuple(shape[1:]) != want:
        raise ValueError(f"model {meta.get('arch', '?')} trained on {meta.get('dataset', '?')} "
                         f"expects images [N, {', '.join(map(str, want))}] (NHWC), got "
                         f"{list(shape)}")


def describe(meta: dict) -> str:
    """How errors name a model: ``model <arch> trained on <dataset>``.

    Example:
        >>> describe({"arch": "cnn", "dataset": "digits"})
        'model cnn trained on digits'
    """
    return f"model {meta.get('arch', '?')} trained on {meta.get('dataset', '?')}"


def check_finite(what: str, values: np.ndarray, name: str) -> None:
    """Raise ``FloatingPointError`` naming ``name`` if ``values`` holds NaN or inf.

    Example:
        >>> check_finite("logits", np.zeros((2, 3)), "model cnn trained on digits")  # fine
        >>> check_finite("logits", np.array([[0.0, np.nan]]), "model cnn trained on digits")
        Traceback (most recent call last):
        FloatingPointError: model cnn trained on digits: non-finite logits (1 NaN, 0 inf in 1 of ...
    """
    values = np.asarray(values)
    finite = np.isfinite(values)
    if finite.all():
        return
    nan = int(np.isnan(values).sum())
    bad_rows = int((~finite.reshape(len(values), -1)).any(1).sum()) if values.ndim else 1
    raise FloatingPointError(
        f"{name}: non-finite {what} ({nan} NaN, {int((~finite).sum()) - nan} inf in "
        f"{bad_rows} of {len(values) if values.ndim else 1} samples); its weights are probably "
        f"NaN/inf (diverged or damaged): retrain it")


@cache
def apply_logits(module: nn.Module) -> Callable[[Any, jax.Array], jax.Array]:
    """Pure ``f(variables, x) -> logits`` (eval mode) for ``module``; not jitted.

    Cached per module, so building a kernel twice reuses the same function.

    Example:
        >>> f = apply_logits(clf.module)  # clf: a trained digits CNN, x: 16 of its images
        >>> jax.jit(f)(clf.variables, x).shape
        (16, 10)
        >>> apply_logits(clf.module) is f
        True
    """
    return lambda variables, x: module.apply(variables, x)[0]


@cache
def apply_features(module: nn.Module) -> Callable[[Any, jax.Array], jax.Array]:
    """Pure ``f(variables, x) -> features`` (penultimate activations, eval mode).

    Example:
        >>> apply_features(clf.module)(clf.variables, x).shape
        (16, 128)
    """
    return lambda variables, x: module.apply(variables, x)[1]


@partial(jax.jit, static_argnums=0)
def _apply(module: nn.Module, variables: Any, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    return module.apply(variables, x)


class Classifier(NamedTuple):
    """A trained classifier: Flax ``module``, its ``variables`` and ``meta``.

    ``variables`` is ``{'params': ..., 'batch_stats': ...?}``; ``meta`` holds ``arch``,
    ``arch_kwargs``, ``num_classes``, ``input_shape`` (H, W, C), ``dataset``,
    ``test_accuracy``... (see ``jaxinv.training.classifier.fit``).

    Example:
        ``clf`` below was made by ``jaxinv.training.fit("digits", "cnn", workdir)``;
        ``jaxinv.training.load_classifier(workdir)`` reads it back.

        >>> clf.meta["arch"], clf.meta["dataset"], clf.meta["input_shape"]
        ('cnn', 'digits', [8, 8, 1])
        >>> clf.logits(x).shape, clf.features(x).shape
        ((16, 10), (16, 128))
        >>> f = apply_logits(clf.module)  # what attack kernels take; variables go in env
        >>> f(clf.variables, x).shape
        (16, 10)
    """

    module: nn.Module
    variables: Any
    meta: dict

    def apply_logits(self, variables: Any, x: jax.Array) -> jax.Array:
        """Pure ``(variables, x) -> logits``; same as ``apply_logits(self.module)``.

        Example:
            >>> clf.apply_logits(clf.variables, x).shape
            (16, 10)
        """
        return apply_logits(self.module)(variables, x)

    def logits(self, x: np.ndarray, batch: int = 2048) -> np.ndarray:
        """Eval-mode logits ``[N, K]`` for images ``[N, H, W, C]`` (host in, host out).

        Example:
            >>> logits = clf.logits(x, batch=8)  # two batches of 8
            >>> type(logits).__name__, logits.shape
            ('ndarray', (16, 10))
        """
        return self._run(x, batch)[0]

    def features(self, x: np.ndarray, batch: int = 2048) -> np.ndarray:
        """Eval-mode penultimate features ``[N, D]`` (host in, host out).

        Example:
            >>> clf.features(x).shape
            (16, 128)
        """
        return self._run(x, batch)[1]

    def outputs(self, x: np.ndarray, batch: int = 2048) -> tuple[np.ndarray, np.ndarray]:
        """Eval-mode ``(logits [N, K], features [N, D])`` from one forward pass.

        Example:
            >>> logits, features = clf.outputs(x)
            >>> logits.shape, features.shape
            ((16, 10), (16, 128))
        """
        return self._run(x, batch)

    def _run(self, x: np.ndarray, batch: int) -> tuple[np.ndarray, np.ndarray]:
        x = np.asarray(x, np.float32)
        check_input(self.meta, x.shape)
        if not np.isfinite(x).all():
            raise ValueError(f"{describe(self.meta)}: input images hold "
                             f"{int((~np.isfinite(x)).sum())} non-finite pixel values (NaN/inf)")
        outs = in_batches(lambda xb: _apply(self.module, self.variables, xb), x, batch)
        logits, features = (np.concatenate(o)[:len(x)] for o in zip(*outs, strict=True))
        check_finite("logits", logits, describe(self.meta))
        check_finite("features", features, describe(self.meta))
        return logits, features


def in_batches(fn: Callable[[np.ndarray], Any], x: np.ndarray, batch: int) -> list:
    """``fn`` on ``x`` in chunks of ``batch`` rows, the last one zero-padded (one compiled
    shape); all dispatched, then fetched with one host sync. Returns the host outputs per
    chunk: the caller concatenates them and drops the padded rows past ``len(x)``.

    Example:
        >>> outs = in_batches(lambda xb: jax.numpy.asarray(xb) * 2, np.ones((5, 3)), 2)
        >>> len(outs), float(np.concatenate(outs)[:5].sum())
        (3, 30.0)
    """
    n = len(x)
    if n > batch and n % batch:
        x = np.concatenate([x, np.zeros((batch - n % batch, *x.shape[1:]), x.dtype)])
    return jax.device_get([fn(x[i:i + batch]) for i in range(0, max(len(x), 1), batch)])


__all__ = [
    "ACTIVATIONS", "ARCHS", "MLP", "VGG", "Classifier", "Conv", "LeNet", "ResNet",
    "SoftmaxRegression", "apply_features", "apply_logits", "check_finite", "check_input",
    "conv2d_same", "create", "describe", "in_batches", "init_variables", "max_pool_2x2",
]
