"""Model zoo: Flax classifiers returning ``(logits, features)``, and ``Classifier``."""

from __future__ import annotations

from functools import partial
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import numpy as np

from jaxinv.models.classifiers import ARCHS, create, init_variables
from jaxinv.models.layers import max_pool_2x2


def check_input(meta: dict, shape: tuple[int, ...]) -> None:
    """Raise ``ValueError`` unless ``shape`` is ``[N, *meta['input_shape']]``.

    Example:
        >>> check_input({"input_shape": [8, 8, 1]}, (5, 8, 8, 1))
    """
    want = tuple(meta["input_shape"])
    if len(shape) != 4 or tuple(shape[1:]) != want:
        raise ValueError(f"model {meta.get('arch', '?')} trained on {meta.get('dataset', '?')} "
                         f"expects images [N, {', '.join(map(str, want))}] (NHWC), got "
                         f"{list(shape)}")


@partial(jax.jit, static_argnums=0)
def _apply(module: nn.Module, variables: Any, x: jax.Array):
    return module.apply(variables, x)


class Classifier(NamedTuple):
    """A trained classifier: Flax ``module``, its ``variables`` and ``meta`` (arch, shapes...).

    Example:
        >>> clf = jaxinv.train.load_classifier("runs/demo/target")
        >>> clf.logits(x).shape, clf.features(x).shape
        ((360, 10), (360, 128))
        >>> attack = mi_face(clf.apply_logits, (8, 8, 1))  # variables go in env
    """

    module: nn.Module
    variables: Any
    meta: dict

    def apply_logits(self, variables: Any, x: jax.Array) -> jax.Array:
        """Pure ``(variables, x) -> logits`` for kernels that take variables in ``env``."""
        return self.module.apply(variables, x)[0]

    def logits(self, x: np.ndarray, batch: int = 2048) -> np.ndarray:
        """Eval-mode logits for a batch of images (host in, host out)."""
        return self._run(x, batch)[0]

    def features(self, x: np.ndarray, batch: int = 2048) -> np.ndarray:
        """Eval-mode penultimate features."""
        return self._run(x, batch)[1]

    def _run(self, x, batch):
        x = np.asarray(x, np.float32)
        check_input(self.meta, x.shape)
        outs = [jax.device_get(_apply(self.module, self.variables, x[i:i + batch]))
                for i in range(0, len(x), batch)]
        return tuple(np.concatenate(o) for o in zip(*outs, strict=True))


__all__ = ["ARCHS", "Classifier", "check_input", "create", "init_variables", "max_pool_2x2"]
