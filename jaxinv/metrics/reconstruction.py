"""Per-victim reconstruction metrics for gradient leakage (reconstruction vs the victim's
own image, not vs a class): MSE, PSNR, SSIM, feature distance and exact recovery.

A victim's batch comes back in any order, so :func:`match` pairs reconstructions with
victim images by the assignment of least total MSE (Hungarian, scipy) before scoring.
LPIPS is not computed: its JAX ports and the ``lpips`` package need network weights
downloaded at first use, which this toolkit's offline machines cannot do.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy.optimize import linear_sum_assignment

from jaxinv.metrics.classlevel import psnr, ssim

EXACT_MSE = 1e-3  # DLG/iDLG's success criterion


def match(rec: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Reorder each victim's reconstructions ``[V, B, H, W, C]`` to best match ``truth``
    (least total MSE); ``B = 1`` is returned as is.

    Example:
        >>> t = np.stack([np.zeros((2, 2, 1)), np.ones((2, 2, 1))])[None]
        >>> match(t[:, ::-1], t)[0, :, 0, 0, 0].tolist()
        [0.0, 1.0]
    """
    rec, truth = np.asarray(rec, np.float32), np.asarray(truth, np.float32)
    if rec.shape != truth.shape or rec.ndim != 5:
        raise ValueError(f"reconstructions and victims must be [V, B, H, W, C] of one shape, "
                         f"got {rec.shape} and {truth.shape}")
    if rec.shape[1] == 1:
        return rec
    out = np.empty_like(rec)
    for v in range(len(rec)):  # host-side bookkeeping after the attack, V small matrices
        cost = ((rec[v][:, None] - truth[v][None]) ** 2).reshape(rec.shape[1], rec.shape[1],
                                                                 -1).mean(-1)
        r, c = linear_sum_assignment(cost)
        out[v, c] = rec[v, r]
    return out


def per_image(rec: np.ndarray, truth: np.ndarray,
              features: Callable[[np.ndarray], np.ndarray] | None = None
              ) -> dict[str, np.ndarray]:
    """Scores ``[V, B]`` of matched reconstructions vs victims (both ``[V, B, H, W, C]``
    in ``[0, 1]``): ``mse``, ``psnr`` and ``ssim`` (of the reconstruction clipped to
    ``[0, 1]``), ``exact`` (MSE < 1e-3) and, with ``features`` (images -> vectors),
    ``feature_dist`` (squared distance).

    Example:
        >>> t = np.full((2, 1, 8, 8, 1), 0.5)
        >>> s = per_image(t + np.array([0.0, 0.1])[:, None, None, None, None], t)
        >>> s["exact"].tolist(), [round(float(v), 4) for v in s["mse"].ravel()]
        ([[True], [False]], [0.0, 0.01])
    """
    rec, truth = match(rec, truth), np.asarray(truth, np.float32)
    v, b = rec.shape[:2]
    flat_r, flat_t = rec.reshape(v * b, *rec.shape[2:]), truth.reshape(v * b, *rec.shape[2:])
    mse = ((flat_r - flat_t) ** 2).reshape(v * b, -1).mean(-1)
    clipped = np.clip(flat_r, 0.0, 1.0)
    p = np.minimum(psnr(clipped, flat_t), 100.0)  # identical images: cap inf (strict JSON)
    out = {"mse": mse, "psnr": p, "ssim": ssim(clipped, flat_t), "exact": mse < EXACT_MSE}
    if features is not None:
        fr, ft = np.asarray(features(clipped)), np.asarray(features(flat_t))
        out["feature_dist"] = ((fr - ft) ** 2).reshape(v * b, -1).sum(-1)
    return {k: np.asarray(a).reshape(v, b) for k, a in out.items()}


def summarize(scores: dict[str, np.ndarray], ok: np.ndarray | None = None) -> dict[str, float]:
    """Means over victims' images (``ok [V]`` false: excluded, counted in ``flagged``),
    median PSNR, and ``exact_recovery_rate`` (fraction of images with MSE < 1e-3).

    Example:
        >>> s = {"mse": np.array([[0.0], [0.5]]), "psnr": np.array([[100.0], [3.0]]),
        ...      "exact": np.array([[True], [False]])}
        >>> summarize(s)["exact_recovery_rate"]
        0.5
    """
    v = len(next(iter(scores.values())))
    ok = np.ones(v, bool) if ok is None else np.asarray(ok, bool)
    out: dict[str, float] = {"victims": int(ok.sum()), "flagged": int((~ok).sum())}
    if not ok.any():
        return out
    for k, a in scores.items():
        a = np.asarray(a, np.float64)[ok]
        name = "exact_recovery_rate" if k == "exact" else f"{k}_mean"
        out[name] = float(a.mean())
    if "psnr" in scores:
        out["psnr_median"] = float(np.median(np.asarray(scores["psnr"])[ok]))
    return out


__all__ = ["EXACT_MSE", "match", "per_image", "summarize"]
