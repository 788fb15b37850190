"""LiRA (Carlini et al., S&P 2022): per-example Gaussian likelihood ratio tests on the
logit-confidence statistic, from shadow models trained on random halves of the data.

Conventions of the reference code (``tensorflow/privacy/research/mi_lira_2021``): means are
medians over shadows, spreads are standard deviations (``ddof=0``) plus 1e-30; every score
here is *higher = member* (the code's ``-prediction``).
"""

from __future__ import annotations

import numpy as np
from scipy.stats import norm

MODES = ("online", "offline", "global")


def keep_masks(models: int, n: int, seed: int = 0) -> np.ndarray:
    """``[models, n]`` membership: each example is IN for exactly half of the models (rounded
    down), chosen at random, so every example has both IN and OUT shadows.

    Example:
        >>> k = keep_masks(4, 6)
        >>> k.shape, k.sum(0).tolist()
        ((4, 6), [2, 2, 2, 2, 2, 2])
    """
    if models < 2 or n < 1:
        raise ValueError(f"keep_masks: need at least 2 models and 1 example, got {models}, {n}")
    rng = np.random.default_rng(seed)
    ranks = np.argsort(rng.random((models, n)), axis=0)
    return ranks < models // 2


def _check(obs, stats, keep) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    obs, stats, keep = np.asarray(obs, np.float64), np.asarray(stats, np.float64), \
        np.asarray(keep, bool)
    if stats.ndim != 2 or keep.shape != stats.shape or obs.shape != stats.shape[1:]:
        raise ValueError(f"lira: want shadow statistics [S, N], keep [S, N] and target "
                         f"statistics [N]; got {stats.shape}, {keep.shape}, {obs.shape}")
    if not (np.isfinite(stats).all() and np.isfinite(obs).all()):
        raise ValueError("lira: statistics hold NaN or inf")
    return obs, stats, keep


def _fit(stats: np.ndarray, where: np.ndarray, fix_variance: bool, side: str):
    if not where.any(0).all():
        j = int(np.flatnonzero(~where.any(0))[0])
        raise ValueError(f"lira: example {j} has no {side} shadow model; train more shadows "
                         "or use keep_masks")
    masked = np.where(where, stats, np.nan)
    mu = np.nanmedian(masked, 0)
    sd = np.nanstd(masked) if fix_variance else np.nanstd(masked, 0)
    return mu, sd + 1e-30


def lira(obs: np.ndarray, stats: np.ndarray, keep: np.ndarray, *, mode: str = "online",
         fix_variance: bool = False, offline_test: str = "two-sided") -> np.ndarray:
    """Membership scores (higher = member) of the target's statistics ``obs [N]``, given
    shadow statistics ``stats [S, N]`` and their membership ``keep [S, N]``.

    ``online``: ``log N(obs; mu_in, s_in) - log N(obs; mu_out, s_out)``. ``offline``: OUT
    shadows only; ``offline_test="two-sided"`` is the reference code's ``-log N(obs; mu_out,
    s_out)``, ``"one-sided"`` the paper's test ``log Phi((obs - mu_out) / s_out)`` [the two
    differ; which the paper's numbers used is unverified]. ``global``: ``obs`` itself (one
    threshold for all examples). ``fix_variance``: one spread per group over all examples
    (recommended under 64 shadows; the code's fixed-variance online test uses the IN spread
    for both groups, here each group has its own).

    Example:
        >>> stats = np.array([[5.0, 0.0], [1.0, 4.0], [5.2, 0.2], [0.8, 4.2]])
        >>> keep = np.array([[1, 0], [0, 1], [1, 0], [0, 1]], bool)
        >>> s = lira(np.array([5.1, 0.1]), stats, keep)
        >>> bool(s[0] > 0 > s[1])  # example 0 looks IN, example 1 OUT
        True
    """
    obs, stats, keep = _check(obs, stats, keep)
    if mode == "global":
        return obs
    mu_out, sd_out = _fit(stats, ~keep, fix_variance, "OUT")
    if mode == "online":
        mu_in, sd_in = _fit(stats, keep, fix_variance, "IN")
        return norm.logpdf(obs, mu_in, sd_in) - norm.logpdf(obs, mu_out, sd_out)
    if mode == "offline":
        if offline_test == "two-sided":
            return -norm.logpdf(obs, mu_out, sd_out)
        if offline_test == "one-sided":
            return norm.logcdf((obs - mu_out) / sd_out)
        raise ValueError(f"lira: offline_test {offline_test!r}: want 'two-sided' or 'one-sided'")
    raise ValueError(f"lira: mode {mode!r}: want one of {MODES}")


def leave_one_out(stats: np.ndarray, keep: np.ndarray, targets: list[int] | int,
                  **kw) -> np.ndarray:
    """Attack each model in ``targets`` with all the *other* models as shadows (the
    reference code's protocol); ``[len(targets), N]`` scores, members ``keep[targets]``.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> keep = keep_masks(8, 50)
        >>> stats = rng.normal(size=(8, 50)) + 3 * keep  # members score 3 higher
        >>> s = leave_one_out(stats, keep, 2, fix_variance=True)
        >>> from jaxinv.membership.metrics import summary
        >>> summary(s, keep[:2])["auc"] > 0.9
        True
    """
    stats, keep = np.asarray(stats, np.float64), np.asarray(keep, bool)
    targets = list(range(targets)) if isinstance(targets, int) else list(targets)
    if not targets or max(targets) >= len(stats) or len(stats) - 1 < 2:
        raise ValueError(f"leave_one_out: targets {targets} must index {len(stats)} models, "
                         "with at least 2 others as shadows")
    rest = lambda t: np.arange(len(stats)) != t
    return np.stack([lira(stats[t], stats[rest(t)], keep[rest(t)], **kw) for t in targets])


__all__ = ["MODES", "keep_masks", "leave_one_out", "lira"]
