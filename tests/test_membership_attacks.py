"""RMIA and Shokri et al.'s shadow-model attack on synthetic signals: planted membership is
found far above chance, no signal gives chance, RMIA matches a direct computation of its
formula, and bad input is a one-line error."""

import numpy as np
import pytest
from scipy.stats import trim_mean

from jaxinv.membership import lira as L
from jaxinv.membership import metrics as R
from jaxinv.membership import rmia as RM
from jaxinv.membership import shokri as SH
from jaxinv.membership.scores import neg_loss, softmax, true_class_probability


def _population(models=8, n=400, z=150, effect=0.1, seed=0):
    """True-label probabilities: each example has its own difficulty; members gain
    ``effect``; the ``z`` examples are never trained on."""
    rng = np.random.default_rng(seed)
    keep = L.keep_masks(models, n, seed)
    easy, easy_z = rng.uniform(0.1, 0.85, n), rng.uniform(0.1, 0.85, z)
    p = np.clip(easy + effect * keep + rng.normal(0, 0.03, (models, n)), 1e-3, 1)
    pz = np.clip(easy_z + rng.normal(0, 0.03, (models, z)), 1e-3, 1)
    return p, keep, pz


def _direct(px, ref, keep, pz, ref_pz, mode, a, gamma, trim):
    """RMIA written out example by example (the module docstring's formula)."""
    def pr(vals):
        m = trim_mean(np.asarray(vals), trim)
        return m if mode == "online" else (1 + a) / 2 * m + (1 - a) / 2

    k_in, k_out = keep.sum(0).min(), (~keep).sum(0).min()
    k = min(k_in, k_out) if mode == "online" else k_out
    ratio_x = []
    for j in range(len(px)):
        outs = [ref[s, j] for s in range(len(ref)) if not keep[s, j]][:k]
        ins = [ref[s, j] for s in range(len(ref)) if keep[s, j]][:k]
        ratio_x.append(px[j] / pr(outs + ins if mode == "online" else outs))
    ratio_z = [pz[i] / pr(ref_pz[:, i]) for i in range(len(pz))]
    return np.array([np.mean([rx / rz > gamma for rz in ratio_z]) for rx in ratio_x])


@pytest.mark.parametrize("mode, a, gamma, trim", [("online", 0.3, 1.0, 0.0),
                                                  ("online", 0.3, 1.5, 0.25),
                                                  ("offline", 0.3, 1.0, 0.0),
                                                  ("offline", 0.7, 2.0, 0.2)])
def test_rmia_matches_a_direct_computation(mode, a, gamma, trim):
    rng = np.random.default_rng(2)
    keep = L.keep_masks(9, 12, seed=2)[1:]  # 8 references: 3 or 4 IN per example
    ref, px = rng.uniform(0.05, 1, (8, 12)), rng.uniform(0.05, 1, 12)
    ref_pz, pz = rng.uniform(0.05, 1, (8, 30)), rng.uniform(0.05, 1, 30)
    got = RM.rmia(px, ref, keep, pz, ref_pz, mode=mode, a=a, gamma=gamma, trim=trim)
    want = _direct(px, ref, keep, pz, ref_pz, mode, a, gamma, trim)
    np.testing.assert_array_equal(got, want)
    assert 0 < got.mean() < 1


def test_rmia_hand_computed_case():
    # online: Pr(x) = mean of all 4 references (2 IN, 2 OUT); offline: the 2 OUT ones, then
    # (1 + a) / 2 * mean + (1 - a) / 2
    ref = np.array([[0.8, 0.2], [0.4, 0.6], [0.6, 0.2], [0.2, 0.4]])
    keep = np.array([[1, 0], [0, 1], [1, 0], [0, 1]], bool)
    pz, ref_pz = np.array([0.5, 1.0, 0.25]), np.full((4, 3), 0.5)  # ratio(z): 1, 2, 0.5
    px = np.array([0.75, 0.3])  # online ratio(x): 0.75 / 0.5 = 1.5, 0.3 / 0.35 = 0.86
    np.testing.assert_allclose(RM.rmia(px, ref, keep, pz, ref_pz), [2 / 3, 1 / 3])
    np.testing.assert_allclose(RM.rmia(px, ref, keep, pz, ref_pz, gamma=2.5), [1 / 3, 0])
    # offline, a = 1: Pr(x) = 0.3, 0.2 -> ratios 2.5, 1.5; Pr(z) = 0.5 -> 1, 2, 0.5
    np.testing.assert_allclose(RM.rmia(px, ref, keep, pz, ref_pz, mode="offline", a=1.0),
                               [1, 2 / 3])


def test_rmia_finds_planted_members_and_calibrates_difficulty():
    p, keep, pz = _population()
    online = RM.leave_one_out(p, keep, pz, 8)
    offline = RM.leave_one_out(p, keep, pz, 8, mode="offline", a=1.0)
    assert online.shape == (8, 400) and ((0 <= online) & (online <= 1)).all()
    auc_on, auc_off = R.summary(online, keep)["auc"], R.summary(offline, keep)["auc"]
    raw = R.summary(p, keep)["auc"]  # one threshold on p for every example: weak
    assert auc_on > 0.95 and auc_off > 0.9 and raw < 0.7, (auc_on, auc_off, raw)
    np.testing.assert_array_equal(RM.leave_one_out(p, keep, pz, [3])[0], online[3])
    none, keep0, pz0 = _population(effect=0.0, seed=1)
    for mode in RM.MODES:
        assert abs(R.summary(RM.leave_one_out(none, keep0, pz0, 8, mode=mode),
                             keep0)["auc"] - 0.5) < 0.04


@pytest.mark.parametrize("kw, match", [
    ({"mode": "both"}, "mode 'both'"),
    ({"a": 1.5}, r"a must lie in \[0, 1\]"),
    ({"a": np.nan}, r"a must lie in \[0, 1\]"),
    ({"gamma": 0.0}, "gamma must be a positive"),
    ({"gamma": np.inf}, "gamma must be a positive"),
    ({"trim": 0.5}, r"trim must lie in \[0, 0.5\)"),
])
def test_rmia_bad_options(kw, match):
    p, keep, pz = _population(models=4, n=10, z=5)
    with pytest.raises(ValueError, match=match):
        RM.rmia(p[0], p[1:], keep[1:], pz[0], pz[1:], **kw)


def test_rmia_bad_inputs():
    p, keep, pz = _population(models=4, n=10, z=5)
    args = [p[0], p[1:], keep[1:], pz[0], pz[1:]]
    for i, bad, match in ((0, p[0, :9], r"want px \[N > 0\]"), (4, pz[1:, :4], "ref_pz"),
                          (2, keep[1:, :9], "keep"), (3, pz[0, :0], r"pz \[Z > 0\]"),
                          (1, p[1], "ref_px must have 2 dimensions"),
                          (0, np.where(np.arange(10) == 3, np.nan, p[0]), "px holds NaN"),
                          (4, -pz[1:], "negative")):
        with pytest.raises(ValueError, match=match):
            RM.rmia(*[bad if j == i else arg for j, arg in enumerate(args)])
    all_in = keep[1:].copy()
    all_in[:, 4] = True
    with pytest.raises(ValueError, match="no OUT reference model"):
        RM.rmia(p[0], p[1:], all_in, pz[0], pz[1:], mode="offline")
    all_out = keep[1:].copy()
    all_out[:, 4] = False
    with pytest.raises(ValueError, match="no IN reference model"):
        RM.rmia(p[0], p[1:], all_out, pz[0], pz[1:])
    RM.rmia(p[0], p[1:], all_out, pz[0], pz[1:], mode="offline")  # offline needs no IN
    with pytest.raises(ValueError, match="same models"):
        RM.leave_one_out(p, keep, pz[:3], 1)
    with pytest.raises(ValueError, match="at least 2 others"):
        RM.leave_one_out(p, keep, pz, [4])


def _vectors(models=8, n=300, k=4, effect=0.5, seed=0, flip=False):
    """Softmax vectors from logits: members' true-class logit gains ``effect * 8``;
    ``flip``: class 1's members *lose* it (only a per-class attack model can use both)."""
    rng = np.random.default_rng(seed)
    keep = L.keep_masks(models, n, seed)
    labels = rng.integers(0, k, n)
    logits = rng.normal(0, 1, (models, n, k)) + rng.normal(0, 1.5, (1, n, k))
    gain = 8 * effect * np.where(flip & (labels == 1), -1, 1)
    logits[np.arange(models)[:, None], np.arange(n), labels] += 2 + gain * keep
    return softmax(logits), labels, keep


def test_shokri_finds_planted_members_per_class():
    probs, labels, keep = _vectors()
    s = SH.leave_one_out(probs, labels, keep, 8)
    assert s.shape == (8, 300) and ((0 <= s) & (s <= 1)).all()
    assert R.summary(s, keep)["auc"] > 0.85
    probs, labels, keep = _vectors(flip=True, seed=3)  # class 1: members are *less* sure
    s = SH.leave_one_out(probs, labels, keep, 8)
    one = labels == 1
    assert R.summary(s[:, one], keep[:, one])["auc"] > 0.85
    assert R.summary(s[:, ~one], keep[:, ~one])["auc"] > 0.85
    for kw in ({"classifier": "mlp"}, {"sort": True}):
        s = SH.leave_one_out(probs, labels, keep, [0, 1], **kw)
        assert R.summary(s, keep[:2])["auc"] > 0.75, kw
    probs, labels, keep = _vectors(effect=0.0, seed=1)
    assert abs(R.summary(SH.leave_one_out(probs, labels, keep, 8), keep)["auc"] - 0.5) < 0.03
    # without balancing, the shadows' share of IN rows betrays the target's membership
    leaky = SH.leave_one_out(probs, labels, keep, 8, balance=False)
    assert R.summary(leaky, keep)["auc"] < 0.47


def test_shokri_bad_inputs():
    probs, labels, keep = _vectors(models=4, n=20)
    args = [probs[0], labels, probs[1:], keep[1:]]
    for i, bad, match in ((2, probs[1:, :19], "want prediction vectors"),
                          (3, keep[1:, :19], "want probs"),
                          (2, probs[1:, :, :3], "labels must lie"),
                          (1, labels[:19], r"labels \[N\]"), (1, labels + 4, "labels must lie"),
                          (0, np.full((20, 4), np.nan), "NaN")):
        with pytest.raises(ValueError, match=match):
            SH.shokri(*[bad if j == i else arg for j, arg in enumerate(args)])
    with pytest.raises(ValueError, match="classifier 'svm'"):
        SH.shokri(*args, classifier="svm")
    for bad_keep in (np.ones((3, 20), bool), keep[1:] & False):
        with pytest.raises(ValueError, match=f"class {labels.min()} needs shadow examples both"):
            SH.shokri(probs[0], labels, probs[1:], bad_keep, balance=False)
    with pytest.raises(ValueError, match="both IN and OUT"):  # balanced: no rows left
        SH.shokri(probs[0], labels, probs[1:], np.ones((3, 20), bool))
    with pytest.raises(ValueError, match="at least 2 others"):
        SH.leave_one_out(probs[:2], labels, keep[:2], 1)
    with pytest.raises(ValueError, match=r"\[M, N, K\]"):
        SH.leave_one_out(probs[0], labels, keep, 1)


def test_softmax_and_true_class_probability():
    logits = np.array([[3.0, 1.0, -2.0], [800.0, 0.0, 0.0]])
    p = softmax(logits)
    np.testing.assert_allclose(p.sum(-1), 1)
    np.testing.assert_allclose(p[0], np.exp(logits[0]) / np.exp(logits[0]).sum())
    np.testing.assert_allclose(true_class_probability(logits, np.array([0, 1])),
                               [p[0, 0], np.exp(neg_loss(logits[1:], np.array([1])))[0]])
    np.testing.assert_allclose(softmax(logits[:1], 2.0), softmax(logits[:1] / 2))
    with pytest.raises(ValueError, match="temperature must be positive"):
        softmax(logits, 0.0)
    with pytest.raises(ValueError, match="NaN"):
        softmax(np.array([np.nan, 0.0]))
