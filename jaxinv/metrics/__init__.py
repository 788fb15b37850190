"""Leakage metrics: class-level (accuracy, KNN/feature distance, FID, PRDC, PSNR/SSIM) and
sample-level (which private training samples are reconstructed: ``ddcs_proxy``).

All pairwise-distance work runs in chunked, jitted JAX (:mod:`jaxinv.metrics.distances`).
"""

from jaxinv.metrics.classlevel import (
    diversity,
    feature_dist,
    fid,
    knn_dist,
    prdc,
    psnr,
    ssim,
)
from jaxinv.metrics.distances import count_within, knn, knn_radius, nearest
from jaxinv.metrics.identity import nearest_correlated, nearest_identity_rate
from jaxinv.metrics.samplelevel import SampleScores, ddcs_proxy, summarize

__all__ = [
    "SampleScores", "count_within", "ddcs_proxy", "diversity", "feature_dist", "fid", "knn",
    "knn_dist", "knn_radius", "nearest", "nearest_correlated", "nearest_identity_rate", "prdc",
    "psnr", "ssim", "summarize",
]
