"""Output defenses (jaxinv.defenses): semantics, composition, parsing, jit/vmap safety."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxinv import defenses as D

KEY = jax.random.key(0)
P = jnp.array([[0.10, 0.60, 0.30], [0.50, 0.20, 0.30], [0.33, 0.33, 0.34]], jnp.float32)


def _random_probs(n=512, k=10, seed=1):
    rng = np.random.default_rng(seed)
    z = rng.uniform(0, 6, (n, 1)) * rng.standard_normal((n, k))
    e = np.exp(z - z.max(-1, keepdims=True))
    return jnp.asarray(e / e.sum(-1, keepdims=True), jnp.float32)


def test_identity():
    np.testing.assert_array_equal(D.identity().apply(KEY, P), P)


def test_topk_zeros_and_no_renormalisation():
    out = D.topk(2).apply(KEY, P)  # the 0.33 tie goes to the lower index
    np.testing.assert_allclose(out, [[0, 0.6, 0.3], [0.5, 0, 0.3], [0.33, 0, 0.34]])
    tie = D.topk(1).apply(KEY, jnp.array([[0.4, 0.4, 0.2]]))  # exactly k kept, lowest index
    np.testing.assert_allclose(tie, [[0.4, 0, 0]])
    np.testing.assert_array_equal(D.topk(3).apply(KEY, P), P)
    with pytest.raises(ValueError, match="number of classes"):
        D.topk(4).apply(KEY, P)


def test_round_to():
    out = D.round_to(1).apply(KEY, jnp.array([[0.13, 0.87], [0.449, 0.551]]))
    np.testing.assert_allclose(out, [[0.1, 0.9], [0.4, 0.6]], atol=1e-7)
    np.testing.assert_allclose(D.round_to(0).apply(KEY, P), [[0, 1, 0], [0, 0, 0], [0, 0, 0]])


def test_label_only_one_hot():
    out = D.label_only().apply(KEY, P)
    np.testing.assert_array_equal(out, [[0, 1, 0], [1, 0, 0], [0, 0, 1]])
    assert out.dtype == P.dtype


def test_gaussian_noise_statistics_and_simplex():
    p = jnp.full((4000, 5), 0.2)
    out = D.gaussian_noise(0.05).apply(KEY, p)
    np.testing.assert_allclose(out.sum(-1), 1.0, atol=1e-5)
    assert (out >= 0).all() and (out <= 1).all()
    # little clipping at p=0.2, sigma=0.05: the renormalised noise keeps ~ its scale
    err = np.asarray(out - p)
    assert abs(err.mean()) < 1e-3 and 0.035 < err.std() < 0.05
    np.testing.assert_array_equal(out, D.gaussian_noise(0.05).apply(KEY, p))  # fixed key
    assert not np.array_equal(out, D.gaussian_noise(0.05).apply(jax.random.key(1), p))
    # huge noise: clipped to [0, 1] and renormalised; all-zero rows become uniform
    big = D.gaussian_noise(10.0).apply(KEY, P)
    np.testing.assert_allclose(big.sum(-1), 1.0, atol=1e-5)
    assert (big >= 0).all()
    zero = D.gaussian_noise(0.0).apply(KEY, jnp.zeros((1, 4)))
    np.testing.assert_allclose(zero, [[0.25] * 4])
    np.testing.assert_allclose(D.gaussian_noise(0.0).apply(KEY, P), P / P.sum(-1, keepdims=True))


def test_reverse_sigmoid_keeps_argmax_changes_values():
    p = _random_probs()
    out = D.reverse_sigmoid(0.1, 0.5).apply(KEY, p)  # beta < 2 / K
    np.testing.assert_array_equal(out.argmax(-1), p.argmax(-1))
    np.testing.assert_allclose(out.sum(-1), 1.0, atol=1e-5)
    assert (out >= 0).all()
    assert float(jnp.abs(out - p).max()) > 0.05
    # hand-computed value: p = (0.8, 0.2), beta = 0.5, gamma = 1 -> r = 0.5 * (p - 1/2)
    two = D.reverse_sigmoid(0.5, 1.0).apply(KEY, jnp.array([[0.8, 0.2]]))
    np.testing.assert_allclose(two, [[0.65, 0.35]], atol=1e-5)
    np.testing.assert_allclose(D.reverse_sigmoid(0.0, 1.0).apply(KEY, P),
                               P / P.sum(-1, keepdims=True), atol=1e-6)


def test_confidence_cutoff_caps_at_tau():
    p = jnp.array([[0.95, 0.04, 0.01], [0.5, 0.3, 0.2], [1.0, 0.0, 0.0]])
    out = D.confidence_cutoff(0.9).apply(KEY, p)
    np.testing.assert_allclose(out, [[0.9, 0.08, 0.02], [0.5, 0.3, 0.2], [0.9, 0.05, 0.05]],
                               atol=1e-6)
    q = _random_probs()
    out = D.confidence_cutoff(0.6).apply(KEY, q)
    assert float(out.max()) <= 0.6 + 1e-6
    np.testing.assert_allclose(out.sum(-1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(out.argmax(-1), q.argmax(-1))


def test_chain_order_matters():
    p = jnp.array([[0.30, 0.33, 0.37]])
    # topk first keeps classes 1, 2; rounding first ties classes 0, 1 and topk keeps 0
    a = D.chain(D.topk(2), D.round_to(1)).apply(KEY, p)
    b = D.chain(D.round_to(1), D.topk(2)).apply(KEY, p)
    np.testing.assert_allclose(a, [[0, 0.3, 0.4]], atol=1e-7)
    np.testing.assert_allclose(b, [[0.3, 0, 0.4]], atol=1e-7)
    np.testing.assert_array_equal(D.chain().apply(KEY, P), P)
    # each defense gets fold_in(key, i)
    noisy = D.chain(D.identity(), D.gaussian_noise(0.1)).apply(KEY, P)
    np.testing.assert_array_equal(noisy,
                                  D.gaussian_noise(0.1).apply(jax.random.fold_in(KEY, 1), P))
    with pytest.raises(TypeError, match="Defense"):
        D.chain(D.identity(), "topk")


@pytest.mark.parametrize(("spec", "expected"), [
    ("round:2,topk:3", D.chain(D.round_to(2), D.topk(3))),
    ("label", D.label_only()),
    ("noise:0.05", D.gaussian_noise(0.05)),
    ("rsig:0.7,0.3", D.reverse_sigmoid(0.7, 0.3)),
    ("cutoff:0.9", D.confidence_cutoff(0.9)),
    ("none", D.identity()),
    ("", D.identity()),
    (" Noise:0.1 , rsig:0.1, 0.5 ,topk:2", D.chain(D.gaussian_noise(0.1),
                                                   D.reverse_sigmoid(0.1, 0.5), D.topk(2))),
])
def test_parse_round_trips(spec, expected):
    p = _random_probs(n=8, k=5)
    np.testing.assert_array_equal(D.parse(spec).apply(KEY, p), expected.apply(KEY, p))


@pytest.mark.parametrize(("spec", "match"), [
    ("blur:3", "unknown defense 'blur'.*valid defenses: none, topk:K"),
    ("topk", "takes 1 argument.*'topk:K'"),
    ("topk:x", "bad argument.*'topk:K'"),
    ("topk:2.5", "bad argument"),
    ("rsig:0.7", "takes 2 argument.*'rsig:BETA,GAMMA'"),
    ("label:1", "takes 0 argument"),
    ("round:2,,topk:3", "empty item"),
    ("0.5", "starts with a number"),
    ("noise:", "empty argument"),
    ("topk:0", "topk k: expected an int >= 1, received 0"),
    ("cutoff:0.3", r"tau: expected a float in \(0.5, 1\], received 0.3"),
    ("noise:-1", "sigma: expected a float >= 0"),
    ("noise:nan", "sigma"),
])
def test_parse_errors(spec, match):
    with pytest.raises(ValueError, match=match):
        D.parse(spec)


def test_factory_argument_checks():
    for bad in (lambda: D.topk(1.5), lambda: D.round_to(-1), lambda: D.gaussian_noise("a"),
                lambda: D.reverse_sigmoid(0.1, 0.0), lambda: D.confidence_cutoff(1.5),
                lambda: D.topk(True)):
        with pytest.raises(ValueError, match=r"expected .* received"):
            bad()


@pytest.mark.parametrize("spec", ["none", "topk:2", "round:1", "label", "noise:0.1",
                                  "rsig:0.2,0.5", "cutoff:0.7", "noise:0.05,round:2,topk:3"])
def test_jit_vmap_equals_plain(spec):
    d = D.parse(spec)
    keys = jax.random.split(jax.random.key(3), 2)
    probs = _random_probs(n=2 * 6, k=5).reshape(2, 6, 5)  # 2 chains x batch 6
    plain = jnp.stack([d.apply(k, p) for k, p in zip(keys, probs, strict=True)])
    fast = jax.jit(jax.vmap(d.apply))(keys, probs)
    np.testing.assert_allclose(fast, plain, atol=1e-6)
    assert fast.shape == probs.shape and fast.dtype == probs.dtype
