"""Model zoo: shapes on every input size, fast layers equal to the reference ops, errors."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from jaxinv.models import (
    ARCHS,
    Classifier,
    apply_features,
    apply_logits,
    check_input,
    create,
    init_variables,
    layers,
)

SHAPES = [(8, 8, 1), (28, 28, 1), (112, 92, 1)]
FEATURES = {"softmax": None, "mlp": 3000, "cnn": 128, "resnet": 128, "vgg": 256,
            "dlg-lenet": lambda h, w, c: 12 * -(-h // 4) * -(-w // 4)}  # strides 2, 2, 1


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("arch", list(ARCHS))
def test_arch_shapes(arch, shape):
    model = create(arch, 7)
    variables = init_variables(model, shape)
    x = jax.random.uniform(jax.random.key(1), (3, *shape))
    logits, feats = jax.jit(model.apply)(variables, x)
    d = FEATURES[arch] or int(np.prod(shape))
    d = d(*shape) if callable(d) else d
    assert logits.shape == (3, 7) and feats.shape == (3, d)
    assert logits.dtype == jnp.float32 and bool(jnp.isfinite(logits).all())
    mutable = ["batch_stats"] if "batch_stats" in variables else False
    out = model.apply(variables, x, train=True, mutable=mutable)
    logits_t = out[0][0] if mutable else out[0]
    assert logits_t.shape == (3, 7)


@pytest.mark.parametrize("shape", [(2, 8, 8, 3), (2, 7, 9, 2), (5, 4, 4, 1)])
def test_max_pool_matches_flax(shape):
    x = jax.random.normal(jax.random.key(0), shape)  # continuous: no ties
    ref = lambda x: nn.max_pool(x, (2, 2), (2, 2))
    np.testing.assert_array_equal(layers.max_pool_2x2(x), ref(x))
    w = jax.random.normal(jax.random.key(1), ref(x).shape)
    grad = lambda f: jax.grad(lambda x: jnp.sum(w * f(x)))(x)
    np.testing.assert_array_equal(grad(layers.max_pool_2x2), grad(ref))


def test_max_pool_leading_dims():
    x = jax.random.normal(jax.random.key(0), (3, 2, 6, 6, 4))
    out = layers.max_pool_2x2(x)
    assert out.shape == (3, 2, 3, 3, 4)
    np.testing.assert_array_equal(out[1], layers.max_pool_2x2(x[1]))


# (input shape, kernel size, check 2nd order): dense-matrix path, thin-input path,
# XLA path, even kernels
CONVS = [((2, 4, 4, 8), (5, 5), True), ((2, 2, 3, 4), (3, 3), False),
         ((2, 9, 7, 1), (5, 5), True), ((2, 9, 7, 3), (4, 4), False),
         ((2, 9, 7, 6), (3, 3), True), ((2, 10, 8, 5), (4, 2), False)]


@pytest.mark.parametrize("patch", [False, True], ids=["xla-wgrad", "patch-wgrad"])
@pytest.mark.parametrize("shape,ks,second", CONVS)
def test_conv2d_same_matches_lax(shape, ks, second, patch):
    with layers.patch_weight_grads(patch):  # weight gradients as XLA's or as im2col matmuls
        _conv_matches_lax(shape, ks, second)


@pytest.mark.parametrize("patch", [False, True], ids=["xla-wgrad", "patch-wgrad"])
@pytest.mark.parametrize("shape,ks,second", [((2, 9, 7, 6), (3, 3), True),
                                             ((2, 6, 6, 3), (3, 3), False),
                                             ((1, 5, 8, 4), (3, 3), True)])
def test_winograd_conv_matches_lax(shape, ks, second, patch):
    with layers.winograd(), layers.patch_weight_grads(patch):
        _conv_matches_lax(shape, ks, second)


def test_winograd_transforms_correlate():
    d, k = np.random.default_rng(0).normal(size=4), np.array([1.0, -2.0, 0.5])
    got = layers._WA @ ((layers._WG @ k) * (layers._WB @ d))
    np.testing.assert_allclose(got, [d[i:i + 3] @ k for i in range(2)], rtol=1e-6)


def test_winograd_default_rule():
    """"auto" on CPU: 3x3 kernels with >= WINOGRAD_MIN channels on small maps only."""
    def uses_lax(x, k):  # a new function each time: jit's cache does not see the context
        return "convolution" in jax.jit(lambda *a: layers.conv2d_same(*a)).lower(x, k).as_text()

    x, k = jnp.ones((2, 7, 7, 64)), jnp.ones((3, 3, 64, 64))
    assert uses_lax(x, k)  # unset: off outside run_chains
    with pytest.raises(ValueError, match="winograd"), layers.winograd("yes"):
        pass
    with layers.winograd("auto"):
        assert not uses_lax(x, k)
        assert uses_lax(jnp.ones((2, 7, 7, 8)), jnp.ones((3, 3, 8, 8)))  # thin
        assert uses_lax(jnp.ones((2, 28, 28, 64)), k)  # large map
        assert uses_lax(jnp.ones((2, 9, 9, 64)), jnp.ones((5, 5, 64, 64)))  # 3x3 only
        with layers.winograd(False):
            assert uses_lax(x, k)


def _conv_matches_lax(shape, ks, second):
    x = jax.random.normal(jax.random.key(0), shape)
    k = jax.random.normal(jax.random.key(1), (*ks, shape[-1], 5))
    ref = lambda x, k: lax.conv_general_dilated(x, k, (1, 1), "SAME",
                                                dimension_numbers=("NHWC", "HWIO", "NHWC"))

    def close(a, b):  # float32 sums in another order: error relative to the scale (second
        # order with LLVM level 0, as the suite compiles: 1.3e-5 on a 5x5 kernel)
        assert float(jnp.max(jnp.abs(a - b))) <= 3e-5 * float(jnp.max(jnp.abs(b))) + 1e-6

    close(layers.conv2d_same(x, k), ref(x, k))
    g = jax.random.normal(jax.random.key(2), (*shape[:3], 5))
    for a, b in zip(jax.vjp(layers.conv2d_same, x, k)[1](g), jax.vjp(ref, x, k)[1](g),
                    strict=True):
        close(a, b)
    close(jax.jvp(layers.conv2d_same, (x, k), (g[..., :1] + x, k))[1],
          jax.jvp(ref, (x, k), (g[..., :1] + x, k))[1])
    if not second:
        return
    # second order: forward-over-reverse and reverse-over-reverse (gradient matching)
    loss = lambda f: lambda x, k: jnp.sum(jnp.tanh(f(x, k)))
    close(jax.jvp(jax.grad(loss(layers.conv2d_same)), (x, k), (x, k))[1],
          jax.jvp(jax.grad(loss(ref)), (x, k), (x, k))[1])
    gm = lambda f: jax.grad(lambda x: jnp.sum(jax.grad(loss(f), 1)(x, k) ** 2))(x)
    close(gm(layers.conv2d_same), gm(ref))


def test_conv_module_params_like_flax():
    x = jnp.ones((1, 8, 8, 3))
    ours = layers.Conv(4, (5, 5)).init(jax.random.key(0), x)
    theirs = nn.Conv(4, (5, 5)).init(jax.random.key(0), x)
    assert jax.tree.map(jnp.shape, ours) == jax.tree.map(jnp.shape, theirs)
    out = layers.Conv(4, (5, 5)).apply(theirs, x)
    np.testing.assert_allclose(out, nn.Conv(4, (5, 5)).apply(theirs, x), rtol=1e-5, atol=1e-5)


def test_create_errors_and_kwargs():
    with pytest.raises(ValueError, match=r"unknown arch 'lenet'.*softmax, mlp, cnn, resnet, vgg"):
        create("lenet", 10)
    with pytest.raises(ValueError, match=r"unknown option.*'width'.*valid options"):
        create("mlp", 10, width=5)
    with pytest.raises(ValueError, match="num_classes"):
        create("cnn", 1)
    with pytest.raises(ValueError, match="unknown activation"):
        create("mlp", 10, activation="swish2")
    model = create("mlp", 10, hidden=[16, 8], activation="relu")  # lists from JSON
    assert model.hidden == (16, 8)
    hash(model)  # usable as a jit static argument


def _tiny_classifier():
    model = create("cnn", 10, channels=(4,), dense=8)
    variables = init_variables(model, (8, 8, 1))
    meta = {"arch": "cnn", "dataset": "digits", "num_classes": 10, "input_shape": [8, 8, 1]}
    return Classifier(model, variables, meta)


def test_classifier_batched_and_pure_apply():
    clf = _tiny_classifier()
    x = np.random.default_rng(0).random((5, 8, 8, 1), np.float32)
    logits, feats = clf.logits(x), clf.features(x)
    assert isinstance(logits, np.ndarray) and logits.shape == (5, 10) and feats.shape == (5, 8)
    np.testing.assert_allclose(clf.logits(x, batch=2), logits, rtol=1e-6, atol=1e-6)
    both = clf.outputs(x)
    np.testing.assert_array_equal(both[0], logits)
    np.testing.assert_array_equal(both[1], feats)
    f = apply_logits(clf.module)
    assert f is apply_logits(clf.module)  # cached: kernels built twice share it
    np.testing.assert_allclose(jax.jit(f)(clf.variables, x), logits, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(apply_features(clf.module)(clf.variables, x), feats,
                               rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(clf.apply_logits(clf.variables, x), logits, rtol=1e-6,
                               atol=1e-6)


def test_wrong_input_shape_is_a_clear_error():
    clf = _tiny_classifier()
    msg = r"cnn trained on digits expects images \[N, 8, 8, 1\] \(NHWC\), got \[2, 28, 28, 1\]"
    with pytest.raises(ValueError, match=msg):
        clf.logits(np.zeros((2, 28, 28, 1), np.float32))
    with pytest.raises(ValueError, match=r"got \[8, 8, 1\]"):
        clf.features(np.zeros((8, 8, 1), np.float32))
    check_input(clf.meta, (0, 8, 8, 1))
    with pytest.raises(ValueError, match=r"got \[3, 8, 8\]"):
        check_input(clf.meta, (3, 8, 8))
