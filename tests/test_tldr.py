"""Conditional network inversion and TLDR (SPECS 2): the loss terms against hand-computed
values, the conditional generator, training (works, resume, vmap members), the
training-likeness diagnostics, the workflow and the CLI, on sklearn digits."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxinv import data
from jaxinv.attacks.inversion_losses import (
    PRESETS,
    TERMS,
    TLDR_TERMS,
    Weights,
    cosine_similarity,
    cross_entropy,
    inversion_losses,
    kl_divergence,
    orthogonality,
    pixel_range,
    total_variation,
    weight_grad_norm,
    weights_from,
)
from jaxinv.cli import main
from jaxinv.metrics.classlevel import diversity
from jaxinv.metrics.traininglike import (
    likeness_summary,
    membership_auc,
    membership_score,
    training_likeness,
)
from jaxinv.models import Classifier, create, init_variables
from jaxinv.models.conditional import (
    CONDITIONING,
    ConditionalGenerator,
    check_generator_options,
    conditions,
    init_generator,
)
from jaxinv.training.classifier import fit, load_classifier
from jaxinv.training.inverter import (
    check_target,
    generate,
    load_inverter,
    random_inverter,
    target_digest,
    train_inverter,
)
from jaxinv.workflows.network_inversion import (
    PRESET_CONDITIONING,
    sample_classes,
    write_member_run,
)

# one setting for every small-target run below (resume, members): one compiled step shape
SMALL = dict(width=4, batch_size=8, lr=1e-3, checkpoint_every=3, upsample="subpixel",
             progress=False)


def small_target(seed=1, classes=10):
    """An untrained digits-shaped MLP: cheap to compile, enough for exact-math tests."""
    module = create("mlp", classes, hidden=(16,))
    return Classifier(module, init_variables(module, (8, 8, 1), seed=seed),
                      {"num_classes": classes, "input_shape": [8, 8, 1]})


def linear(v, x):
    """A linear softmax model ``logits = x W + b`` (and its logits as 'features')."""
    logits = x.reshape(len(x), -1) @ v["params"]["w"] + v["params"]["b"]
    return logits, logits


def np_softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def linear_grad_norms(w, b, x, y):
    """Closed form of |grad_(W, b) CE|: dW = x (p - onehot)^T, db = p - onehot (float64)."""
    x = np.asarray(x, np.float64).reshape(len(x), -1)
    r = np_softmax(x @ w + b) - np.eye(w.shape[1])[y]
    per = np.sqrt((r ** 2).sum(1) * (x ** 2).sum(1) + (r ** 2).sum(1))
    gw, gb = x.T @ r / len(x), r.mean(0)  # gradient of the batch-mean loss
    return per, np.sqrt((gw ** 2).sum() + (gb ** 2).sum())


@pytest.fixture(scope="module")
def lin():
    rng = np.random.default_rng(0)
    w, b = rng.normal(size=(6, 3)), rng.normal(size=3)
    v = {"params": {"w": jnp.asarray(w, jnp.float32), "b": jnp.asarray(b, jnp.float32)}}
    x = rng.uniform(0, 1, size=(6, 2, 3, 1))
    y = np.array([0, 1, 2, 0, 1, 2])
    return w, b, v, x, y


# ---------------------------------------------------------------------------- loss terms

def test_kl_and_cross_entropy_by_hand():
    # row 0: c = [.5, .5, 0] (a zero entry: 0 log 0 = 0), softmax([0, ln 2, 0]) = [1, 2, 1]/4
    # row 1: c = [.2, .3, .5] against q = [.5, .25, .25]
    c = np.array([[0.5, 0.5, 0.0], [0.2, 0.3, 0.5]])
    logits = np.log(np.array([[1.0, 2.0, 1.0], [0.5, 0.25, 0.25]]))
    want = [0.5 * np.log(2.0),
            0.2 * np.log(0.2 / 0.5) + 0.3 * np.log(0.3 / 0.25) + 0.5 * np.log(0.5 / 0.25)]
    got = kl_divergence(jnp.asarray(c, jnp.float32), jnp.asarray(logits, jnp.float32))
    np.testing.assert_allclose(got, want, rtol=1e-5)
    assert np.isfinite(np.asarray(got)).all()
    # KL(c || c) = 0 for the hot vector too
    hot = jnp.eye(3)
    assert np.abs(np.asarray(kl_divergence(hot, jnp.log(hot + 1e-30)))).max() < 1e-5
    z = np.array([[1.0, 2.0, 3.0], [1.0, 2.0, 3.0]])
    lse = np.log(np.exp(z[0]).sum())
    np.testing.assert_allclose(cross_entropy(jnp.asarray(z), jnp.array([0, 2])),
                               [lse - 1.0, lse - 3.0], rtol=1e-5)


def test_cosine_and_orthogonality_by_hand():
    # normalised: e1, e2, (e1 + e2)/sqrt2: pair dots 0, 1/sqrt2, 1/sqrt2
    h = jnp.array([[1.0, 0.0], [0.0, 2.0], [3.0, 3.0]])
    np.testing.assert_allclose(cosine_similarity(h), 2 * np.sqrt(2) / 6, rtol=1e-5)
    np.testing.assert_allclose(orthogonality(h), 2 * (0.5 + 0.5) / 9, rtol=1e-5)
    # orthonormal features: 0 and 0; identical ones: 1 and (N^2 - N) / N^2
    assert abs(float(cosine_similarity(jnp.eye(3)))) < 1e-6
    assert abs(float(orthogonality(jnp.eye(3) * 5))) < 1e-6
    np.testing.assert_allclose(cosine_similarity(jnp.ones((4, 3))), 1.0, rtol=1e-5)
    np.testing.assert_allclose(orthogonality(jnp.ones((4, 3))), 12 / 16, rtol=1e-5)
    # [N, H, W, C] features are flattened
    np.testing.assert_allclose(cosine_similarity(h.reshape(3, 1, 2, 1)), 2 * np.sqrt(2) / 6,
                               rtol=1e-5)


def test_total_variation_and_pixel_range_by_hand():
    # [[0, 1, 3], [2, 2, 5]]: vertical diffs 2, 1, 2; horizontal 1, 2, 0, 3
    img = np.array([[0.0, 1.0, 3.0], [2.0, 2.0, 5.0]])
    x = jnp.asarray(np.stack([img, np.full_like(img, 7.0)])[..., None])  # flat image: 0
    np.testing.assert_allclose(total_variation(x, reduce="sum"), [4 + 1 + 4 + 1 + 4 + 0 + 9, 0])
    np.testing.assert_allclose(total_variation(x, squared=False, reduce="sum"),
                               [2 + 1 + 2 + 1 + 2 + 0 + 3, 0])
    # the default averages over the H * W * C = 6 pixels
    np.testing.assert_allclose(total_variation(x), [23 / 6, 0], rtol=1e-6)
    np.testing.assert_allclose(total_variation(x, squared=False), [11 / 6, 0], rtol=1e-6)
    # both directions count: the transposed image has the same variation
    np.testing.assert_allclose(total_variation(jnp.asarray(img.T[None, ..., None]),
                                               reduce="sum"), [23.0])
    # channels add up (and count as pixels in the mean)
    two = jnp.concatenate([x[:1], 2 * x[:1]], -1)
    np.testing.assert_allclose(total_variation(two, reduce="sum"), [23.0 * 5])
    np.testing.assert_allclose(total_variation(two), [23.0 * 5 / 12], rtol=1e-6)
    p = jnp.array([-0.5, 0.2, 1.5, 2.0]).reshape(1, 2, 2, 1)
    np.testing.assert_allclose(pixel_range(p, reduce="sum"), [0.5 + 0.5 + 1.0])
    np.testing.assert_allclose(pixel_range(p), [2.0 / 4])
    np.testing.assert_allclose(pixel_range(p, lo=-1.0, hi=1.6, reduce="sum"), [0.4], rtol=1e-5)
    assert float(pixel_range(jnp.full((1, 2, 2, 1), 0.5))[0]) == 0.0
    for f in (total_variation, pixel_range):
        with pytest.raises(ValueError, match="reduce"):
            f(p, reduce="max")


def test_weight_grad_norm_of_a_linear_softmax_model_is_closed_form(lin):
    w, b, v, x, y = lin
    per, batch = linear_grad_norms(w, b, x, y)
    got = weight_grad_norm(linear_logits, v, jnp.asarray(x, jnp.float32), jnp.asarray(y))
    np.testing.assert_allclose(got, per, rtol=1e-4)
    got = weight_grad_norm(linear_logits, v, jnp.asarray(x, jnp.float32), jnp.asarray(y),
                           mode="batch")
    np.testing.assert_allclose(got, np.full(6, batch), rtol=1e-4)
    # only "params" is differentiated: other collections are passed through unchanged
    scaled = lambda vv, a: linear_logits(vv, a) * vv["consts"]["s"]
    got = weight_grad_norm(scaled, {**v, "consts": {"s": jnp.float32(1.0)}},
                           jnp.asarray(x, jnp.float32), jnp.asarray(y))
    np.testing.assert_allclose(got, per, rtol=1e-4)
    with pytest.raises(ValueError, match="grad mode"):
        weight_grad_norm(linear_logits, v, jnp.asarray(x), jnp.asarray(y), mode="bogus")
    # more examples than are unrolled on CPU (a lax.map): the same closed form
    rng = np.random.default_rng(5)
    xs, ys = rng.uniform(0, 1, size=(40, 2, 3, 1)), rng.integers(0, 3, 40)
    np.testing.assert_allclose(
        weight_grad_norm(linear_logits, v, jnp.asarray(xs, jnp.float32), jnp.asarray(ys)),
        linear_grad_norms(w, b, xs, ys)[0], rtol=1e-4)


def linear_logits(v, x):
    return linear(v, x)[0]


def test_weight_grad_norm_vanishes_at_a_stationary_point_and_is_differentiable_in_x():
    rng = np.random.default_rng(1)
    v = {"params": {"w": jnp.asarray(rng.normal(size=(4, 3)), jnp.float32)}}
    f = lambda vv, a: a.reshape(len(a), -1) @ vv["params"]["w"]  # no bias: grad = x (p-y)^T
    y = jnp.array([0, 1])
    at_zero = weight_grad_norm(f, v, jnp.zeros((2, 2, 2, 1)), y)
    assert float(jnp.max(at_zero)) < 1e-6
    away = weight_grad_norm(f, v, jnp.full((2, 2, 2, 1), 0.5), y)
    assert float(jnp.min(away)) > 0.1
    # a small nonlinear model: d/dx of the summed norms is finite and matches central
    # differences (second-order autodiff through f)
    v2 = {"params": {"a": jnp.asarray(rng.normal(size=(4, 5)), jnp.float32),
                     "c": jnp.asarray(rng.normal(size=(5, 3)), jnp.float32)}}
    g = lambda vv, a: jnp.tanh(a.reshape(len(a), -1) @ vv["params"]["a"]) @ vv["params"]["c"]
    x0 = jnp.asarray(rng.uniform(0.2, 0.8, size=(2, 2, 2, 1)), jnp.float32)
    total = lambda a: jnp.sum(weight_grad_norm(g, v2, a, y))
    grad = jax.grad(total)(x0)
    assert np.isfinite(np.asarray(grad)).all() and float(jnp.abs(grad).max()) > 1e-3
    d = jnp.asarray(rng.normal(size=x0.shape), jnp.float32)
    eps = 1e-2
    fd = (float(total(x0 + eps * d)) - float(total(x0 - eps * d))) / (2 * eps)
    np.testing.assert_allclose(float(jnp.sum(grad * d)), fd, rtol=2e-2, atol=1e-3)


def test_inversion_losses_total_is_the_weighted_sum_and_zero_weights_skip(lin):
    w, b, v, x, y = lin
    x = jnp.asarray(x * 1.6 - 0.3, jnp.float32)  # some pixels out of [0, 1]
    c = jax.nn.softmax(jnp.asarray(np.random.default_rng(2).normal(size=(6, 3)), jnp.float32))
    y = jnp.argmax(c, -1)
    key = jax.random.key(3)
    ws = Weights(*(float(u) for u in np.random.default_rng(4).uniform(0.1, 2.0, len(TERMS))))
    total, terms = inversion_losses(linear, v, x, c, y, key, ws, sigma=0.2)
    assert sorted(terms) == sorted(TERMS) and total.shape == (6,)
    want = sum(getattr(ws, t) * np.asarray(terms[t], np.float64) for t in TERMS)
    np.testing.assert_allclose(total, want, rtol=1e-5)
    # each entry is its term: primed ones on x + sigma * N(0, I) with the given key
    logits = linear_logits(v, x)
    xp = x + 0.2 * jax.random.normal(key, x.shape)
    np.testing.assert_allclose(terms["kl"], kl_divergence(c, logits), rtol=1e-6)
    np.testing.assert_allclose(terms["kl_p"], kl_divergence(c, linear_logits(v, xp)),
                               rtol=1e-5)
    assert not np.allclose(terms["kl_p"], terms["kl"])
    np.testing.assert_allclose(terms["cos"], np.full(6, float(cosine_similarity(logits))),
                               rtol=1e-6)
    np.testing.assert_allclose(terms["pix"], pixel_range(x), rtol=1e-6)
    assert float(jnp.min(terms["pix"])) >= 0 and float(jnp.max(terms["pix"])) > 0
    _, ts = inversion_losses(linear, v, x, c, y, key, ws, sigma=0.2, pixel_reduce="sum",
                             tv_squared=False)
    np.testing.assert_allclose(ts["pix"], terms["pix"] * 6, rtol=1e-5)  # 2x3x1 pixels
    np.testing.assert_allclose(ts["tv"], total_variation(x, squared=False, reduce="sum"),
                               rtol=1e-5)
    # sigma = 0: the primed terms are the plain ones
    _, t0 = inversion_losses(linear, v, x, c, y, key, ws, sigma=0.0)
    np.testing.assert_allclose(t0["ce_p"], t0["ce"], rtol=1e-6)
    # the grad term (grad_examples=None: every example) is the closed form
    np.testing.assert_allclose(terms["grad"], linear_grad_norms(w, b, x, np.asarray(y))[0],
                               rtol=1e-4)
    # a Python 0.0 weight skips its term: zeros, and never computed (no "params" needed)
    skip = ws._replace(grad=0.0, tv=0.0)
    total2, terms2 = inversion_losses(linear, v, x, c, y, key, skip, sigma=0.2)
    assert not np.asarray(terms2["grad"]).any() and not np.asarray(terms2["tv"]).any()
    np.testing.assert_allclose(total2, total - ws.grad * terms["grad"] - ws.tv * terms["tv"],
                               rtol=1e-5)
    no_params = {"p": v["params"]}
    f2 = lambda vv, a: linear({"params": vv["p"]}, a)
    total3, _ = inversion_losses(f2, no_params, x, c, y, key, skip, sigma=0.2)
    np.testing.assert_allclose(total3, total2, rtol=1e-6)
    with pytest.raises(KeyError):  # the grad term, when weighted, needs variables["params"]
        inversion_losses(f2, no_params, x, c, y, key, ws, sigma=0.2)
    # a traced zero weight (vmap over members) computes the term but adds nothing
    traced = jax.jit(lambda g: inversion_losses(linear, v, x, c, y, key,
                                                skip._replace(grad=g), sigma=0.2))
    total4, terms4 = traced(jnp.float32(0.0))
    assert float(jnp.min(terms4["grad"])) > 0
    np.testing.assert_allclose(total4, total2, rtol=1e-5)


def test_grad_examples_subsample_and_batch_mode(lin):
    w, b, v, x, y = lin
    xj = jnp.asarray(x, jnp.float32)
    c, key = jax.nn.one_hot(y, 3), jax.random.key(0)
    only = Weights(**{t: 0.0 for t in TERMS})._replace(grad=1.0)
    per, _ = linear_grad_norms(w, b, x, y)
    total, terms = inversion_losses(linear, v, xj, c, jnp.asarray(y), key, only,
                                    grad_examples=2)
    g = np.asarray(terms["grad"])
    assert not g[2:].any()  # zero beyond the subsample
    np.testing.assert_allclose(g[:2], per[:2] * 6 / 2, rtol=1e-4)  # scaled by N / m
    np.testing.assert_allclose(g.mean(), per[:2].mean(), rtol=1e-4)  # mean = subsample mean
    np.testing.assert_allclose(total, g, rtol=1e-6)
    # grad_examples >= N (or None): every example
    for m in (None, 6, 50):
        _, t = inversion_losses(linear, v, xj, c, jnp.asarray(y), key, only, grad_examples=m)
        np.testing.assert_allclose(t["grad"], per, rtol=1e-4)
    # batch mode: the norm of the gradient of the batch-mean loss, for every example
    _, batch = linear_grad_norms(w, b, x, y)
    _, t = inversion_losses(linear, v, xj, c, jnp.asarray(y), key, only, grad_mode="batch",
                            grad_examples=None)
    np.testing.assert_allclose(t["grad"], np.full(6, batch), rtol=1e-4)
    assert batch < per.mean()  # the mean gradient is shorter than the per-example ones


def test_presets_and_weight_names():
    assert PRESETS["ni"] == Weights(**{t: (0.0 if t in TLDR_TERMS else 1.0) for t in TERMS})
    assert all(getattr(PRESETS["tldr"], t) > 0 for t in TERMS)
    w = weights_from("ni", kl=0.5, grad=2)
    assert w.kl == 0.5 and w.grad == 2.0 and isinstance(w.grad, float) and w.ce == 1.0
    for bad, kw in (("bogus", {}), ("tldr", {"bogus": 1.0}), ("ni", {"grad": 1, "xx": 2})):
        with pytest.raises(ValueError) as e:
            weights_from(bad, **kw)
        assert "\n" not in str(e.value) and ("bogus" in str(e.value) or "xx" in str(e.value))


# ------------------------------------------------------------------ conditions, generator

@pytest.mark.parametrize("kind", CONDITIONING)
def test_conditions(kind):
    labels = jnp.asarray(np.arange(20) % 7)
    vec, mat = conditions(jax.random.key(0), labels, 7, kind)
    vec, mat = np.asarray(vec), np.asarray(mat)
    assert vec.shape == (20, 7) and mat.shape == (20, 7, 7)
    np.testing.assert_array_equal(vec.argmax(-1), np.asarray(labels))
    np.testing.assert_allclose(vec.sum(-1), 1.0, rtol=1e-5)
    want = np.zeros((20, 7, 7))
    for i, lab in enumerate(np.asarray(labels)):
        want[i, lab, :] = want[i, :, lab] = 1
    np.testing.assert_array_equal(mat, want)
    if "vector" in kind:  # soft: not one-hot, every entry positive, the label the largest
        assert vec.max() < 1 and vec.min() > 0
        top2 = np.sort(vec, -1)[:, -2]
        assert (vec[np.arange(20), np.asarray(labels)] > top2).all()
        other, _ = conditions(jax.random.key(1), labels, 7, kind)
        assert not np.allclose(vec, other)  # random
    else:
        np.testing.assert_array_equal(vec, np.eye(7)[np.asarray(labels)])


def test_conditions_reject_unknown_kinds():
    with pytest.raises(ValueError, match="conditioning"):
        conditions(jax.random.key(0), jnp.arange(2), 3, "bogus")


@pytest.mark.parametrize("upsample", ["transpose", "subpixel"])
def test_generator_shapes(upsample):
    z = jnp.zeros((3, 16))
    for kind in CONDITIONING:
        for output in ("linear", "sigmoid"):
            for shape in ((8, 8, 1), (12, 8, 3)):
                g = ConditionalGenerator(shape, 5, kind, width=4, output=output,
                                         upsample=upsample)
                vec, mat = conditions(jax.random.key(1), jnp.array([0, 3, 4]), 5, kind)
                x, var = jax.eval_shape(g.init_with_output, jax.random.key(2), z, vec, mat)
                assert x.shape == (3, *shape) and sorted(var) == ["batch_stats", "params"]


# together these run every conditioning branch (vector concat, matrix channel), both
# upsamplings and both outputs
@pytest.mark.parametrize("kind,upsample,output", [("label", "transpose", "linear"),
                                                  ("vector-matrix", "subpixel", "sigmoid")])
def test_generator_outputs(kind, upsample, output):
    shape = (12, 8, 3) if kind == "label" else (8, 8, 1)  # K x K resizing of 12x8x3: slow
    g = ConditionalGenerator(shape, 5, kind, width=4, output=output, upsample=upsample)
    z = jax.random.normal(jax.random.key(0), (3, 16))

    @jax.jit
    def run(z):
        vec, mat = conditions(jax.random.key(1), jnp.array([0, 3, 4]), 5, kind)
        x, var = g.init_with_output(jax.random.key(2), z, vec, mat)
        # train mode (dropout, BatchNorm statistics); another condition
        xt, _ = g.apply(var, z, vec, mat, train=True, mutable=["batch_stats"],
                        rngs={"dropout": jax.random.key(3)})
        vec2, mat2 = conditions(jax.random.key(1), jnp.array([1, 1, 1]), 5, kind)
        return x, xt, g.apply(var, z, vec2, mat2)

    x, xt, x2 = run(z)
    assert x.shape == xt.shape == x2.shape == (3, *shape)
    if output == "sigmoid":
        assert 0 <= float(x.min()) and float(x.max()) <= 1
    else:
        assert float(x.min()) < 0 and float(x.max()) > 0  # unbounded
    assert not np.allclose(x2, x)  # the condition matters
    assert not np.allclose(xt, x)  # dropout and batch statistics in train mode


def test_generator_option_checks():
    v = init_generator(ConditionalGenerator((8, 8, 1), 10, width=4))
    assert sorted(v) == ["batch_stats", "params"]
    check_generator_options((8, 12, 3), "matrix", "sigmoid", "subpixel")
    for args, msg in ((((8, 8, 1), "bogus", "linear", "transpose"), "conditioning"),
                      (((8, 8, 1), "label", "bogus", "transpose"), "output"),
                      (((8, 8, 1), "label", "linear", "bogus"), "upsample"),
                      (((6, 8, 1), "label", "linear", "transpose"), "multiples of 4"),
                      (((8, 10, 1), "label", "linear", "transpose"), "multiples of 4"),
                      (((8, 8), "label", "linear", "transpose"), "multiples of 4")):
        with pytest.raises(ValueError, match=msg):
            check_generator_options(*args)
    for kw in ({"conditioning": "bogus"}, {"output": "tanh"}):
        with pytest.raises(ValueError):
            random_inverter((8, 8, 1), 10, width=4, **kw)
    with pytest.raises(ValueError, match="multiples of 4"):
        random_inverter((6, 6, 1), 10, width=4)


def test_generator_module_itself_rejects_bad_options():
    """ConditionalGenerator is public: used directly it must not silently ignore options.

    Currently FAILS: models/conditional.py ConditionalGenerator.__call__ never validates its
    fields (only check_generator_options / random_inverter / train_inverter do), so an
    unknown conditioning gives an unconditional generator, out_shape (6, 6, 1) gives 4x4
    images and an unknown output / upsample falls back to linear / transpose."""
    z = jnp.zeros((2, 16))
    vec, mat = conditions(jax.random.key(0), jnp.arange(2), 10, "label")
    silent = []
    for shape, kw in (((8, 8, 1), {"conditioning": "bogus"}), ((6, 6, 1), {}),
                      ((8, 8, 1), {"output": "tanh"}), ((8, 8, 1), {"upsample": "nearest"})):
        g = ConditionalGenerator(shape, 10, width=4, **kw)
        try:
            x = jax.eval_shape(g.init_with_output, jax.random.key(0), z, vec, mat)[0]
        except ValueError:
            continue
        silent.append(f"out_shape={shape} {kw}: no ValueError, images {x.shape}")
    assert not silent, silent


# ----------------------------------------------------------------------------- training

@pytest.fixture(scope="module")
def trained(models, tmp_path_factory):
    """A generator trained with PRESETS["tldr"] (every term) against the digits CNN."""
    target = load_classifier(models / "target")
    inv = train_inverter(target, tmp_path_factory.mktemp("tldr") / "gen",
                         weights=PRESETS["tldr"], steps=150, width=8, batch_size=32, lr=3e-3,
                         upsample="subpixel", grad_examples=4, progress=False)
    return target, inv


def sample_accuracy(target, inv, member=0):
    y = np.repeat(np.arange(10), 20)
    x = generate(inv, y, jax.random.key(7), member=member)
    assert x.shape == (200, 8, 8, 1) and 0 <= x.min() and x.max() <= 1
    hit = np.argmax(target.logits(x), -1) == y
    return hit.mean(), hit.reshape(10, 20).mean(1), x


def eval_losses(target, invs, weights):
    """Mean eval-mode inversion loss (``weights``) of member 0 of each of ``invs`` (same
    module) on one fixed batch of 100 balanced labels."""
    module = invs[0].module
    y = jnp.asarray(np.arange(100) % 10)
    vec, mat = conditions(jax.random.key(11), y, 10, module.conditioning)
    z = jax.random.normal(jax.random.key(12), (100, invs[0].meta["z_dim"]))

    @jax.jit
    def f(gvars):
        x = module.apply(gvars, z, vec, mat)
        return jnp.mean(inversion_losses(target.module.apply, target.variables, x, vec, y,
                                         jax.random.key(13), weights, grad_examples=4)[0])

    return [float(f(inv.member(0))) for inv in invs]


def test_training_lowers_the_loss_and_samples_are_their_class(trained):
    target, inv = trained
    assert inv.members == 1 and inv.meta["steps"] == 150
    assert inv.meta["weights"] == [PRESETS["tldr"]._asdict()]
    assert inv.meta["active_terms"] == list(TERMS)
    untrained = random_inverter((8, 8, 1), 10, width=8, upsample="subpixel")
    before, after = eval_losses(target, [untrained, inv], PRESETS["tldr"])
    assert after < 0.5 * before, (before, after)
    acc, per_class, x = sample_accuracy(target, inv)
    assert acc >= 0.6, (acc, per_class)  # chance: 0.1
    assert (per_class >= 0.3).sum() >= 8, per_class
    assert x.std(0).mean() > 0.02  # samples of a class are not all the same image
    # the untrained generator is near chance
    acc0, _, _ = sample_accuracy(target, untrained)
    assert acc0 < 0.3


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Small-target runs of 6 steps: 2 members together; member 1 alone (seed 1); member 1
    alone again in 3 + 3 steps (resumed)."""
    root = tmp_path_factory.mktemp("resume")
    target = small_target()
    # member 0: every term but the (costly to compile) weight gradient; member 1: plain NI
    ws = [weights_from("tldr", grad=0.0), weights_from("ni", kl=0.5)]
    once = {**SMALL, "checkpoint_every": 6}  # not a setting: fewer saves
    both = train_inverter(target, root / "a", weights=ws, steps=6, **once)
    alone = train_inverter(target, root / "c", weights=ws[1:], seeds=[1], steps=6, **once)
    first = train_inverter(target, root / "b", weights=ws[1:], seeds=[1], steps=3, **SMALL)
    resumed = train_inverter(target, root / "b", weights=ws[1:], seeds=[1], steps=6, **SMALL)
    return root, target, ws, both, first, resumed, alone


def assert_trees_close(a, b, atol=1e-6):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(u, v, atol=atol, rtol=0)


def test_resume_is_exact_and_refuses_other_settings(runs):
    root, target, ws, _, first, resumed, straight = runs
    assert first.meta["steps"] == 3 and resumed.meta["steps"] == 6
    moved = [not np.allclose(p, q) for p, q in
             zip(jax.tree.leaves(first.variables), jax.tree.leaves(resumed.variables),
                 strict=True)]
    assert any(moved)
    assert_trees_close(straight.variables, resumed.variables)
    assert straight.meta["last_metrics"] == resumed.meta["last_metrics"]
    # load_inverter reads back what was trained
    loaded = load_inverter(root / "b")
    assert_trees_close(loaded.variables, resumed.variables, atol=0)
    assert loaded.meta["weights"] == [ws[1]._asdict()] and loaded.meta["seeds"] == [1]
    np.testing.assert_array_equal(generate(loaded, [1, 2], jax.random.key(0)),
                                  generate(resumed, [1, 2], jax.random.key(0)))
    # other weights, other settings, another target (same shape): refused
    cases = ((target, ws[1]._replace(tv=0.5), {}), (target, ws[1], {"lr": 2e-3}),
             (small_target(seed=5), ws[1], {}))
    for tgt, w, kw in cases:
        with pytest.raises(ValueError, match="other settings") as e:
            train_inverter(tgt, root / "b", weights=w, seeds=[1], steps=9, **{**SMALL, **kw})
        assert "\n" not in str(e.value)
    assert target_digest(small_target(seed=5)) != target_digest(target)
    assert target_digest(small_target()) == target_digest(target)
    with pytest.raises(FileNotFoundError):
        load_inverter(root / "nothing")
    (root / "broken").mkdir()
    (root / "broken" / "inverter.json").write_text("{}")
    with pytest.raises(ValueError, match="damaged"):
        load_inverter(root / "broken")


def test_members_by_vmap_equal_separate_runs(runs):
    *_, both, _, _, alone = runs
    assert both.members == 2 and alone.members == 1
    assert alone.meta["seeds"] == [1] and both.meta["seeds"] == [0, 1]
    # the 2-member run computes the TLDR terms for both (traced zero weights for member 1);
    # the lone run skips them; equal up to rounding, which Adam turns into steps of up to lr
    # (1e-3) where a gradient is near zero: bitwise on an AVX-512 CPU, 2.7e-4 apart on one
    # without; a mixed-up member would be off by the initialisations' O(0.1)
    assert_trees_close(both.member(1), alone.member(0), atol=2e-3)
    assert not np.allclose(jax.tree.leaves(both.member(0))[0],
                           jax.tree.leaves(both.member(1))[0])
    np.testing.assert_allclose(both.meta["last_metrics"][1]["loss"],
                               alone.meta["last_metrics"][0]["loss"], rtol=1e-6)
    # the lone run skipped member 1's zero-weight terms; the joint run computed them
    assert alone.meta["last_metrics"][0]["tv"] == 0 < both.meta["last_metrics"][1]["tv"]


def test_train_inverter_bad_arguments(tmp_path):
    target = small_target()
    for kw, msg in (({"weights": []}, "weights"), ({"weights": [Weights(kl=float("nan"))]},
                                                  "finite"),
                    ({"weights": [Weights()] * 2, "seeds": [0, 1, 2]}, "seeds"),
                    ({"steps": 0}, "steps"), ({"lr": 0.0}, "lr"),
                    ({"grad_mode": "bogus"}, "grad_mode"),
                    ({"pixel_reduce": "max"}, "pixel_reduce"),
                    ({"conditioning": "bogus"}, "conditioning")):
        with pytest.raises(ValueError, match=msg):
            train_inverter(target, tmp_path / "x", progress=False, **kw)


def test_check_target_and_write_member_run_refuse_mismatches(tmp_path):
    target = small_target()
    inv = random_inverter((8, 8, 1), 10, members=2, width=4)
    check_target(inv, target)
    # check_target reads the generator's meta (out_shape, num_classes)
    for gen in (inv._replace(meta={**inv.meta, "num_classes": 5}),
                inv._replace(meta={**inv.meta, "out_shape": [12, 8, 1]})):
        with pytest.raises(ValueError, match="generator makes") as e:
            check_target(gen, target)
        assert "\n" not in str(e.value) and "target takes 8x8x1 images of 10 classes" in str(
            e.value)
    with pytest.raises(ValueError, match="generator makes"):
        write_member_run(gen, 0, target, [("t", target)], tmp_path / "run", np.arange(5),
                         samples=2)
    assert not (tmp_path / "run").exists()
    x = sample_classes(inv, np.array([2, 5]), 3, member=1)
    assert x.shape == (2, 3, 8, 8, 1) and 0 <= x.min() and x.max() <= 1


# ------------------------------------------------------------------- training-likeness

@pytest.fixture(scope="module")
def overfit(tmp_path_factory):
    """An MLP fit to the first 100 digits for 200 steps: it memorises them."""
    return fit("digits", "mlp", tmp_path_factory.mktemp("overfit"), epochs=40, batch_size=20,
               lr=3e-3, limit=100, progress=False)


def test_training_likeness_separates_members(overfit):
    x, y = data.load("digits", "train")
    xt, yt = data.load("digits", "test")
    members = training_likeness(overfit, x[:100], y[:100])
    held = training_likeness(overfit, xt[:100], yt[:100])
    for d in (members, held):
        assert sorted(d) == ["confidence", "grad_norm", "perturbation_kl"]
        assert all(v.shape == (100,) for v in d.values())
        assert ((0 <= d["confidence"]) & (d["confidence"] <= 1)).all()
        assert (d["grad_norm"] >= 0).all() and (d["perturbation_kl"] >= 0).all()
    # confidence is the softmax probability of the label (an independent path)
    p = np_softmax(overfit.logits(xt[:100]).astype(np.float64))
    np.testing.assert_allclose(held["confidence"], p[np.arange(100), yt[:100]], atol=1e-5)
    # the training samples are fit more confidently, with smaller weight gradients
    assert members["confidence"].mean() > held["confidence"].mean()
    assert np.median(members["grad_norm"]) < np.median(held["grad_norm"])
    s_in, s_out = membership_score(members, held), membership_score(held, held)
    assert s_in.shape == (100,) and abs(s_out.mean()) < 1e-9
    assert s_in.mean() > 0.3
    auc = membership_auc(s_in, s_out)
    assert auc > 0.6  # 100 vs 100: chance is 0.5 +- 0.04
    assert membership_auc(s_out, s_out) == 0.5
    assert membership_auc(s_out, s_in) == pytest.approx(1 - auc)
    summary = likeness_summary(members, held)
    assert summary["membership_score"] == pytest.approx(s_in.mean())
    assert summary["grad_norm"] == pytest.approx(members["grad_norm"].mean())


def test_training_likeness_chunks_and_bad_inputs(overfit):
    xt, yt = data.load("digits", "test")
    whole = training_likeness(overfit, xt[:70], yt[:70], draws=2)  # 70: two chunks of 64
    part = training_likeness(overfit, xt[64:70], yt[64:70], draws=2)
    assert whole["grad_norm"].shape == (70,)
    np.testing.assert_allclose(whole["confidence"][64:], part["confidence"], rtol=1e-5)
    np.testing.assert_allclose(whole["grad_norm"][64:], part["grad_norm"], rtol=1e-4)
    assert whole["perturbation_kl"].max() > 0
    flat = training_likeness(overfit, xt[:8], yt[:8], draws=2, sigma=0.0)  # no perturbation
    assert np.abs(flat["perturbation_kl"]).max() < 1e-6
    for xs, ys in ((xt[:4, :, :, 0], yt[:4]), (xt[:4], yt[:3]), (xt[:4, :4], yt[:4])):
        with pytest.raises(ValueError, match="training_likeness"):
            training_likeness(overfit, xs, ys)
    with pytest.raises(ValueError):
        training_likeness(overfit, xt[:4], yt[:4], draws=0)
    for a, b in ((np.array([]), np.ones(3)), (np.ones(2), np.array([np.nan]))):
        with pytest.raises(ValueError, match="membership_auc"):
            membership_auc(a, b)
    assert membership_auc(np.array([3.0, 4.0]), np.array([1.0, 2.0])) == 1.0
    assert membership_auc(np.array([3.0, 4.0]), np.array([1.0, 3.0])) == 0.875


def test_diversity_by_hand():
    # class 0: (0,0), (3,4), (6,8): distances 5, 10, 5; class 1: distance 1; class 2 alone
    f = np.array([[0, 0], [3, 4], [6, 8], [1, 1], [1, 2], [9, 9]], float)
    assert diversity(f, [0, 0, 0, 1, 1, 2]) == pytest.approx((20 / 3 + 1) / 2)
    assert diversity(f[:3], [0, 0, 0]) == pytest.approx(20 / 3)
    assert diversity(np.zeros((4, 2)), [0, 0, 1, 1]) == 0.0
    assert np.isnan(diversity(f[:3], [0, 1, 2]))


# ------------------------------------------------------------------------ workflow, CLI

def test_cli_tldr_then_evaluate_then_ni(models, tmp_path, monkeypatch):
    monkeypatch.setenv("JAXINV_NO_COMPILATION_CACHE", "1")
    t = str(models / "evaluator")  # the MLP: a cheap target to compile against
    e = str(models / "target")  # the CNN: 128-d features (the MLP's 3000 make FID slow)
    d = tmp_path / "tldr"
    base = ["--target", t, "--eval-model", e, "--steps", "3", "--samples", "2", "--width", "4",
            "--batch-size", "8", "--upsample", "subpixel", "--grad-examples", "2"]
    assert main(["attack", "tldr", *base, "--out", str(d)]) == 0
    assert sorted(p.name for p in d.iterdir()) == ["generator", "grid.png",
                                                    "reconstructions.npz", "results.json"]
    rec = json.loads((d / "results.json").read_text())
    assert rec["attack"] == "tldr" and rec["config"]["weights"] == PRESETS["tldr"]._asdict()
    assert rec["config"]["generator"]["conditioning"] == PRESET_CONDITIONING["tldr"]
    m = rec["metrics"]
    assert 0 <= m["attack_acc_top1"] <= m["attack_acc_top5"] <= 1
    assert set(m["training_likeness"]) == {"confidence", "perturbation_kl", "grad_norm"}
    assert set(m["per_class"]) == {str(c) for c in range(10)}
    arrays = np.load(d / "reconstructions.npz")
    assert arrays["x"].shape == (10, 2, 8, 8, 1) and 0 <= arrays["x"].min() <= 1
    np.testing.assert_array_equal(arrays["y"], np.arange(10))
    assert load_inverter(d / "generator").meta["steps"] == 3
    assert main(["evaluate", "--run", str(d), "--eval-model", e, "--private", "digits:train",
                 "--limit", "300"]) == 0
    rec = json.loads((d / "results.json").read_text())
    assert np.isfinite(rec["metrics"]["diversity"]) and rec["metrics"]["diversity"] >= 0
    assert "resilient_fraction" in rec["metrics"]["per_sample"]
    assert rec["evaluation"]["limit"] == 300 and rec["evaluation"]["private_samples"] == 300
    assert main(["evaluate", "--run", str(d), "--eval-model", e, "--private", "digits:train",
                 "--limit", "0"]) == 2
    # an unknown loss term: a one-line error, exit 2; a malformed --weights: argparse, 2
    assert main(["attack", "tldr", *base, "--out", str(tmp_path / "x"),
                 "--weights", "bogus=1"]) == 2
    with pytest.raises(SystemExit) as e:
        main(["attack", "tldr", *base, "--out", str(tmp_path / "x"), "--weights", "grad"])
    assert e.value.code == 2
    n = tmp_path / "ni"
    assert main(["attack", "ni", *base, "--out", str(n), "--classes", "1,4",
                 "--weights", "cos=0.5", "--conditioning", "vector"]) == 0
    rec = json.loads((n / "results.json").read_text())
    assert rec["attack"] == "ni" and rec["config"]["generator"]["conditioning"] == "vector"
    assert rec["config"]["weights"] == weights_from("ni", cos=0.5)._asdict()
    assert set(rec["metrics"]["per_class"]) == {"1", "4"}
    assert np.load(n / "reconstructions.npz")["x"].shape == (2, 2, 8, 8, 1)
