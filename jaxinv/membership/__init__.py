"""Membership inference: per-example statistics (:mod:`.scores`), LiRA (:mod:`.lira`), RMIA
(:mod:`.rmia`), Shokri et al.'s per-class attack models (:mod:`.shokri`) and ROC metrics
(:mod:`.metrics`). The workflow is :func:`jaxinv.workflows.membership.membership`."""

from jaxinv.membership import rmia, shokri
from jaxinv.membership.lira import keep_masks, leave_one_out
from jaxinv.membership.metrics import ROC, auc, balanced_accuracy, roc, summary, tpr_at_fpr
from jaxinv.membership.scores import logit_confidence, neg_loss, softmax, true_class_probability

__all__ = ["ROC", "auc", "balanced_accuracy", "keep_masks", "leave_one_out", "logit_confidence",
           "neg_loss", "rmia", "roc", "shokri", "softmax", "summary", "tpr_at_fpr",
           "true_class_probability"]
