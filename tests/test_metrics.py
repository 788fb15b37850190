"""Leakage metrics against ground truth: brute-force NumPy, hand-computed values, scikit-image."""

import numpy as np
import pytest

from jaxinv import metrics

RNG = np.random.default_rng(0)


def brute_d2(a, b):
    return ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)


@pytest.mark.parametrize("chunk, ref_chunk", [(2048, 4096), (7, 5)])
def test_knn_nearest_and_count_within_equal_brute_force(chunk, ref_chunk):
    q, r = RNG.normal(size=(53, 6)), RNG.normal(size=(41, 6))
    ql, rl = RNG.integers(0, 3, 53), RNG.integers(0, 3, 41)
    d2 = brute_d2(q, r)
    d2m = np.where(ql[:, None] == rl[None, :], d2, np.inf)
    kw = {"chunk": chunk, "ref_chunk": ref_chunk}
    got_d, got_i = metrics.knn(q, r, 3, query_labels=ql, ref_labels=rl, **kw)
    np.testing.assert_allclose(got_d, np.sort(d2m, 1)[:, :3], rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(got_i, np.argsort(d2m, 1, kind="stable")[:, :3])
    d, i = metrics.nearest(q, r, **kw)
    np.testing.assert_allclose(d, d2.min(1), rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(i, d2.argmin(1))
    radii = RNG.uniform(1, 3, 41)
    want = (np.sqrt(d2) < radii[None, :]).sum(1)
    np.testing.assert_array_equal(metrics.count_within(q, r, radii, **kw), want)


def test_knn_radius_excludes_self_and_respects_labels():
    x = np.array([[0.0], [1.0], [3.0], [10.0], [10.5]])
    np.testing.assert_allclose(metrics.knn_radius(x, 1), [1, 1, 2, 0.5, 0.5])
    lab = np.array([0, 0, 0, 1, 1])
    np.testing.assert_allclose(metrics.knn_radius(x, 2, labels=lab), [3, 2, 3, np.inf, np.inf])


def test_knn_dist_and_feature_dist_equal_numpy():
    rf, pf = RNG.normal(size=(30, 4)), RNG.normal(size=(50, 4))
    ry, py = RNG.integers(0, 3, 30), RNG.integers(0, 3, 50)
    d2 = np.where(ry[:, None] == py[None, :], brute_d2(rf, pf), np.inf).min(1)
    assert metrics.knn_dist(rf, ry, pf, py) == pytest.approx(d2.mean(), rel=1e-5)
    mask = np.arange(30) % 2 == 0
    assert metrics.knn_dist(rf, ry, pf, py, mask=mask) == pytest.approx(d2[mask].mean(),
                                                                        rel=1e-5)
    cent = {c: pf[py == c].mean(0) for c in range(3)}
    want = np.mean([((f - cent[c]) ** 2).sum() for f, c in zip(rf, ry, strict=True)])
    assert metrics.feature_dist(rf, ry, pf, py) == pytest.approx(want)


def test_fid_is_zero_on_itself_and_grows_with_noise():
    x = RNG.normal(size=(2000, 8))
    assert abs(metrics.fid(x, x)) < 1e-6
    fids = [metrics.fid(x, x + RNG.normal(scale=s, size=x.shape)) for s in (0.1, 0.5, 1.0)]
    assert 0 < fids[0] < fids[1] < fids[2]
    with pytest.raises(ValueError, match="feature sets"):
        metrics.fid(x, x[:, :3])


def test_prdc_hand_computed():
    # 1-D, k=1. real X = 0, 1, 3 -> radii 1, 1, 2; fake Y = 0.5, 10 -> radii 9.5, 9.5.
    real, fake = np.array([[0.0], [1.0], [3.0]]), np.array([[0.5], [10.0]])
    got = metrics.prdc(real, fake, k=1)
    # precision: 0.5 within 1 of X0 -> yes; 10 -> no            = 1/2
    # recall: every X within 9.5 of 0.5                          = 3/3
    # density: 0.5 is inside the balls of X0 and X1 -> 2 / (1*2) = 1
    # coverage: nearest fake to X0 0.5<1 yes, X1 0.5<1 yes, X2 2.5<2 no = 2/3
    assert got == pytest.approx({"precision": 0.5, "recall": 1.0, "density": 1.0,
                                 "coverage": 2 / 3})


def test_prdc_per_class_averages_classes():
    real = np.array([[0.0], [1.0], [3.0], [100.0], [101.0], [103.0]])
    fake = np.array([[0.5], [10.0], [100.5], [110.0]])
    got = metrics.prdc(real, fake, k=1, real_labels=[0, 0, 0, 1, 1, 1],
                       fake_labels=[0, 0, 1, 1])
    assert got["per_class"]["0"] == pytest.approx(got["per_class"]["1"])
    assert got["coverage"] == pytest.approx(2 / 3)


def test_psnr_ssim_agree_with_scikit_image():
    skm = pytest.importorskip("skimage.metrics")
    a = RNG.random((3, 28, 28, 1)).astype(np.float32)
    b = np.clip(a + RNG.normal(scale=0.1, size=a.shape), 0, 1).astype(np.float32)
    want_p = [skm.peak_signal_noise_ratio(x, y, data_range=1.0) for x, y in zip(a, b,
                                                                                 strict=True)]
    want_s = [skm.structural_similarity(x[..., 0], y[..., 0], data_range=1.0,
                                        gaussian_weights=True, sigma=1.5,
                                        use_sample_covariance=False) for x, y in zip(a, b,
                                                                                     strict=True)]
    np.testing.assert_allclose(metrics.psnr(a, b), want_p, atol=1e-3)
    np.testing.assert_allclose(metrics.ssim(a, b), want_s, atol=1e-3)


def test_ddcs_proxy_by_hand_and_order_invariant():
    priv = np.array([[0.0], [1.0], [2.0], [10.0], [11.0], [12.0]])
    py = np.array([0, 0, 0, 1, 1, 1])
    rec = np.array([[0.1], [0.2], [30.0]])
    ry = np.array([0, 0, 1])
    s = metrics.ddcs_proxy(priv, py, rec, ry, k=1)
    np.testing.assert_allclose(s.dist, [0.1, 0.8, 1.8, 20, 19, 18], atol=1e-5)
    np.testing.assert_array_equal(s.hits, [2, 0, 0, 0, 0, 1])
    np.testing.assert_allclose(s.tau, [1, 1, 1, 1, 1, 1])
    # only sample 0 is closer than its radius: 2/2 hits * exp(-0.1)
    np.testing.assert_allclose(s.score, [np.exp(-0.1), 0, 0, 0, 0, 0], rtol=1e-5)
    perm = RNG.permutation(3)
    s2 = metrics.ddcs_proxy(priv, py, rec[perm], ry[perm], k=1)
    np.testing.assert_allclose(s2.score, s.score)
    summary = metrics.summarize(s, py)
    assert summary["resilient_fraction"] == pytest.approx(5 / 6)
    assert summary["most_exposed"] == [0]
    assert summary["per_class"]["1"]["resilient_fraction"] == 1.0


def test_order_invariance_on_random_data():
    pf, py = RNG.normal(size=(200, 5)), RNG.integers(0, 4, 200)
    rf, ry = pf[:60] + RNG.normal(scale=0.05, size=(60, 5)), py[:60]
    s = metrics.ddcs_proxy(pf, py, rf, ry, chunk=16, ref_chunk=32)
    perm = RNG.permutation(60)
    s2 = metrics.ddcs_proxy(pf, py, rf[perm], ry[perm])
    np.testing.assert_allclose(s.score, s2.score, rtol=1e-5)
    assert 0 < np.mean(s.score > 0) < 1


def test_bad_inputs_are_clear():
    with pytest.raises(ValueError, match="dimension"):
        metrics.nearest(np.zeros((2, 3)), np.zeros((2, 4)))
    with pytest.raises(ValueError, match="both"):
        metrics.nearest(np.zeros((2, 3)), np.zeros((2, 3)), query_labels=[0, 1])
    with pytest.raises(ValueError, match="radii"):
        metrics.count_within(np.zeros((2, 3)), np.zeros((2, 3)), np.ones(3))
    with pytest.raises(ValueError, match="more than k"):
        metrics.prdc(np.zeros((3, 2)), np.zeros((9, 2)), k=5)


def test_fid_equals_the_sqrtm_formula():
    import scipy.linalg

    a = RNG.normal(size=(600, 5))
    b = RNG.normal(size=(400, 5)) @ RNG.normal(size=(5, 5)) + 1.0
    sa, sb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    mu = a.mean(0) - b.mean(0)
    want = mu @ mu + np.trace(sa + sb) - 2 * np.trace(np.real(scipy.linalg.sqrtm(sa @ sb)))
    assert metrics.fid(a, b) == pytest.approx(want, rel=1e-9)


def test_fid_with_fewer_samples_than_dimensions_equals_the_sqrtm_formula():
    import scipy.linalg

    a = RNG.normal(size=(12, 40)) * RNG.random(40)  # rank-deficient covariances: the
    b = RNG.normal(size=(30, 40)) + 0.5  # n x n cross-Gram path, in both argument orders
    sa, sb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    mu = a.mean(0) - b.mean(0)
    want = mu @ mu + np.trace(sa + sb) - 2 * np.trace(np.real(scipy.linalg.sqrtm(sa @ sb)))
    assert metrics.fid(a, b) == pytest.approx(want, rel=1e-6)
    assert metrics.fid(b, a) == pytest.approx(want, rel=1e-6)
