"""Training: a pure :class:`TrainState` and ``make_step`` from which every loop is built.

* :func:`fit` / :func:`load_classifier`: one classifier from a dataset name (targets and
  evaluation models), orbax checkpoints and resume.
* :func:`fit_many`: M classifiers at once by ``vmap`` (seeds, per-model data masks).
"""

from jaxinv.training.classifier import DEFAULT, DEFAULTS, accuracy, fit, load_classifier
from jaxinv.training.many import ManyResult, fit_many, unstack
from jaxinv.training.step import (
    TrainState,
    classifier_loss,
    init_state,
    make_step,
    shift,
    variables_of,
)

__all__ = ["DEFAULT", "DEFAULTS", "ManyResult", "TrainState", "accuracy", "classifier_loss",
           "fit", "fit_many", "init_state", "load_classifier", "make_step", "shift",
           "unstack", "variables_of"]
