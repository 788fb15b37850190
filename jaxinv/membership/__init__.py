"""Membership inference: per-example statistics (:mod:`.scores`), LiRA (:mod:`.lira`) and
ROC metrics (:mod:`.metrics`). The workflow is :func:`jaxinv.workflows.membership.membership`."""

from jaxinv.membership.lira import keep_masks, leave_one_out
from jaxinv.membership.metrics import ROC, auc, balanced_accuracy, roc, summary, tpr_at_fpr
from jaxinv.membership.scores import logit_confidence, neg_loss

__all__ = ["ROC", "auc", "balanced_accuracy", "keep_masks", "leave_one_out", "logit_confidence",
           "neg_loss", "roc", "summary", "tpr_at_fpr"]
