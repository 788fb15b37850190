"""RMIA (Zarifzadeh, Liu, Shokri, ICML 2024, "Low-Cost High-Power Membership Inference
Attacks"): compare the target's likelihood ratio on ``x`` with its ratios on population
examples ``z`` that no model trained on.

Read in ``privacytrustlab/ml_privacy_meter``: the paper's code, ``research/2024_rmia/main.py``
(``aggregate_signals``, commit d32734161a3395211fe5f3cd461932290b1fafbe, which the repository's
``research/2024_rmia/README.md`` points to), and the maintained library's
``modules/mia/attacks/rmia.py`` (``run_rmia``, commit e384af8fd9319b8eeb1303aa82474df1441e3c59).
With ``p(v|θ)`` the softmax probability of the true label of ``v`` under model ``θ``:

- ``Pr(x)`` is a mean of ``p(x|θ_ref)`` over reference models. Online (paper code): the
  first ``k`` reference models with ``x`` IN and the first ``k`` with ``x`` OUT (balanced),
  averaged with ``scipy.stats.trim_mean(proportiontocut=trim)``. Offline: the first ``k``
  OUT models, then ``Pr(x) = (1 + a) / 2 * mean_OUT + (1 - a) / 2``.
- ``ratio(v) = p(v|θ_target) / Pr(v)`` and ``score(x) = mean_z [ratio(x) / ratio(z) > gamma]``
  (strict ``>``; both codes).

Constants (parameters of :func:`rmia`): the defaults ``gamma=1`` and ``trim=0`` (plain mean)
are the library's, which uses the same signal as here; the paper code's configs use
``gamma=2`` and ``trim=0.2``, with ``a=0.3`` for CIFAR-10 (the default here, not tuned for
other data) and ``a=0.6`` for CIFAR-100. The library tunes ``a`` by attacking a paired
reference model (grid 0, 0.1, ..., 1); the paper code's README says ``a=1`` (plain OUT mean)
when unknown.

Differences from the paper code: the signal is the plain softmax at temperature 1 (the
paper's best configs use a Taylor soft-margin softmax at temperature 2,
``sm_taylor_softmax_relative``; the library uses the plain softmax); no augmented queries;
``k`` is the largest count every example has (the code fixes it to half of
``num_ref_models``); the population ``z`` is passed in and assumed OUT for every model, as in
the library (which uses the test split). The paper code takes the target's own non-member
training examples as ``z`` (chosen with the target's membership labels) and adjusts the
scores of those ``x`` that are also ``z``. ``Pr(z)`` is the same estimator over all reference
models (none trained on ``z``). The score is monotone in ``ratio(x)``, so ``z`` and ``gamma``
only set its resolution: with ratios near 1 (little overfitting), ``gamma=2`` can give every
``x`` the score 0.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import trim_mean

MODES = ("online", "offline")


def _check(name: str, arr, ndim: int) -> np.ndarray:
    arr = np.asarray(arr, np.float64)
    if arr.ndim != ndim:
        raise ValueError(f"rmia: {name} must have {ndim} dimensions, got shape {arr.shape}")
    if not np.isfinite(arr).all() or (arr < 0).any():
        raise ValueError(f"rmia: {name} holds NaN, inf or negative probabilities")
    return arr


def _first(keep: np.ndarray, k: int) -> np.ndarray:
    """Per column, the first ``k`` rows (in model order) where ``keep`` is true."""
    return keep & (np.cumsum(keep, 0) <= k)


def _pr(ref: np.ndarray, keep: np.ndarray | None, mode: str, a: float,
        trim: float) -> np.ndarray:
    """``Pr(v)`` per column of ``ref [S, N]``; ``keep [S, N]`` marks the models trained on
    the column (``None``: none were, all ``S`` models are used)."""
    if keep is None:
        vals = ref
    else:
        n_in, n_out = int(keep.sum(0).min()), int((~keep).sum(0).min())
        k = min(n_in, n_out) if mode == "online" else n_out
        if k == 0:
            side = "OUT" if n_out == 0 else "IN"
            raise ValueError(f"rmia: some example has no {side} reference model ({mode} "
                             "mode); train more models or use keep_masks")
        sel = _first(~keep, k) | (_first(keep, k) if mode == "online" else False)
        rows = np.argsort(~sel, axis=0, kind="stable")[:int(sel[:, 0].sum())]
        vals = np.take_along_axis(ref, rows, 0)
    m = trim_mean(vals, trim, axis=0)
    m = m if mode == "online" else (1 + a) / 2 * m + (1 - a) / 2
    return np.maximum(m, np.finfo(np.float64).tiny)


def rmia(px: np.ndarray, ref_px: np.ndarray, keep: np.ndarray, pz: np.ndarray,
         ref_pz: np.ndarray, *, mode: str = "online", a: float = 0.3, gamma: float = 1.0,
         trim: float = 0.0) -> np.ndarray:
    """RMIA scores in [0, 1] (higher = member) of the target's true-label probabilities
    ``px [N]``, from reference probabilities ``ref_px [S, N]`` with membership ``keep [S, N]``,
    and the population's ``pz [Z]`` (target) and ``ref_pz [S, Z]`` (references; no model
    trained on ``z``). See the module docstring for the formula and its source.

    Example:
        >>> ref = np.array([[0.9, 0.3], [0.4, 0.8], [0.9, 0.3], [0.4, 0.8]])
        >>> keep = np.array([[1, 0], [0, 1], [1, 0], [0, 1]], bool)
        >>> pz, ref_pz = np.array([0.5, 0.6, 0.4]), np.full((4, 3), 0.5)
        >>> rmia(np.array([0.9, 0.3]), ref, keep, pz, ref_pz).tolist()
        [1.0, 0.0]
    """
    if mode not in MODES:
        raise ValueError(f"rmia: mode {mode!r}: want one of {MODES}")
    if not 0 <= a <= 1:
        raise ValueError(f"rmia: offline coefficient a must lie in [0, 1], got {a}")
    if not (np.isfinite(gamma) and gamma > 0):
        raise ValueError(f"rmia: gamma must be a positive number, got {gamma}")
    if not 0 <= trim < 0.5:
        raise ValueError(f"rmia: trim must lie in [0, 0.5), got {trim}")
    px, ref_px, pz, ref_pz = (_check("px", px, 1), _check("ref_px", ref_px, 2),
                              _check("pz", pz, 1), _check("ref_pz", ref_pz, 2))
    keep = np.asarray(keep, bool)
    if (keep.shape != ref_px.shape or px.shape != ref_px.shape[1:]
            or ref_pz.shape != (len(ref_px), len(pz)) or not (px.size and pz.size)):
        raise ValueError(f"rmia: want px [N > 0], ref_px and keep [S, N], pz [Z > 0], ref_pz "
                         f"[S, Z]; got {px.shape}, {ref_px.shape}, {keep.shape}, {pz.shape}, "
                         f"{ref_pz.shape}")
    ratio_x = px / _pr(ref_px, keep, mode, a, trim)
    ratio_z = np.sort(pz / _pr(ref_pz, None, mode, a, trim))
    # ratio_x / ratio_z > gamma  <=>  ratio_z < ratio_x / gamma: count with a sorted ratio_z
    return np.searchsorted(ratio_z, ratio_x / gamma, side="left") / len(ratio_z)


def leave_one_out(p: np.ndarray, keep: np.ndarray, pz: np.ndarray, targets: list[int] | int,
                  **kw) -> np.ndarray:
    """Attack each model in ``targets`` with all the *other* models as references;
    ``p [M, N]`` and ``pz [M, Z]`` are every model's true-label probabilities on the
    population and on the ``z`` examples. ``[len(targets), N]`` scores, members
    ``keep[targets]``; ``kw`` go to :func:`rmia`.

    Example:
        >>> from jaxinv.membership.lira import keep_masks
        >>> from jaxinv.membership.metrics import summary
        >>> rng = np.random.default_rng(0)
        >>> keep = keep_masks(8, 200)
        >>> easy = rng.uniform(0.2, 0.9, 200)  # each example's own difficulty
        >>> p = np.clip(easy + 0.1 * keep + rng.normal(0, 0.02, (8, 200)), 0.01, 1)
        >>> pz = np.clip(rng.uniform(0.2, 0.9, 50) + rng.normal(0, 0.02, (8, 50)), 0.01, 1)
        >>> summary(leave_one_out(p, keep, pz, 2), keep[:2])["auc"] > 0.9
        True
    """
    p, pz, keep = np.asarray(p, np.float64), np.asarray(pz, np.float64), np.asarray(keep, bool)
    targets = list(range(targets)) if isinstance(targets, int) else list(targets)
    if p.ndim != 2 or pz.ndim != 2 or len(pz) != len(p):
        raise ValueError(f"rmia: want p [M, N] and pz [M, Z] over the same models, got "
                         f"{p.shape} and {pz.shape}")
    if not targets or min(targets) < 0 or max(targets) >= len(p) or len(p) - 1 < 2:
        raise ValueError(f"rmia: targets {targets} must index {len(p)} models, with at least "
                         "2 others as references")
    rest = lambda t: np.arange(len(p)) != t
    return np.stack([rmia(p[t], p[rest(t)], keep[rest(t)], pz[t], pz[rest(t)], **kw)
                     for t in targets])


__all__ = ["MODES", "leave_one_out", "rmia"]
