"""Zeroth-order gradient estimators (jaxinv.attacks.estimators) against jax.grad."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxinv.attacks import estimators as zo

# name -> factory(n); steps small enough that smoothing/difference bias is negligible
MAKERS = {
    "nes": lambda n: zo.nes(n, 1e-2),
    "nes_plain": lambda n: zo.nes(n, 1e-2, antithetic=False),
    "spsa": lambda n: zo.spsa(n, 1e-2),
    "coordinate": lambda n: zo.coordinate(n, 1e-2),
}


def smooth(dim, seed=0):
    """f(x) = sum(sin(A x)) + 0.5 x^T Q x on x of shape [dim // 8, 8], batched over axis 0."""
    ka, kq, kx = jax.random.split(jax.random.key(seed), 3)
    a = jax.random.normal(ka, (dim, dim)) / jnp.sqrt(dim)
    m = jax.random.normal(kq, (dim, dim)) / jnp.sqrt(dim)
    q = m @ m.T / dim + 0.1 * jnp.eye(dim)

    def f(xb):
        z = xb.reshape(xb.shape[0], -1)
        return jnp.sin(z @ a.T).sum(-1) + 0.5 * jnp.einsum("bi,ij,bj->b", z, q, z)

    return f, jax.random.normal(kx, (dim // 8, 8))


def softmax_ce(seed=1):
    """Cross-entropy of class 3 under a linear softmax model, on an 8x8x1 'image'."""
    kw, kb, kx = jax.random.split(jax.random.key(seed), 3)
    w = jax.random.normal(kw, (64, 10)) / 8.0
    b = 0.1 * jax.random.normal(kb, (10,))

    def f(xb):
        logits = xb.reshape(xb.shape[0], -1) @ w + b
        return -jax.nn.log_softmax(logits)[:, 3]

    return f, jax.random.uniform(kx, (8, 8, 1))


PROBLEMS = {"smooth": lambda: smooth(64), "softmax_ce": softmax_ce}


def _grad(f, x):
    return jax.grad(lambda y: f(y[None])[0])(x)


def _estimates(est, f, x, n_keys):
    keys = jax.random.split(jax.random.key(42), n_keys)
    return jax.jit(jax.vmap(lambda k: est(k, f, x)[0]))(keys)


@pytest.mark.parametrize("problem", sorted(PROBLEMS))
@pytest.mark.parametrize("name", sorted(MAKERS))
def test_mean_estimate_matches_grad(name, problem):
    f, x = PROBLEMS[problem]()
    true = _grad(f, x)
    g = _estimates(MAKERS[name](64), f, x, 256).mean(0)
    assert g.shape == x.shape and g.dtype == jnp.float32
    cos = jnp.vdot(g, true) / (jnp.linalg.norm(g) * jnp.linalg.norm(true))
    rel = jnp.linalg.norm(g - true) / jnp.linalg.norm(true)
    assert cos > 0.95, (name, problem, float(cos))
    assert rel < 0.3, (name, problem, float(rel))


@pytest.mark.parametrize("name", sorted(MAKERS))
def test_error_shrinks_with_n(name):
    f, x = smooth(256, seed=3)
    true = _grad(f, x).ravel()
    ests = [MAKERS[name](n) for n in (8, 64, 512)]
    keys = jax.random.split(jax.random.key(42), 32)
    gs = jax.jit(jax.vmap(lambda k: [e(k, f, x)[0].ravel() for e in ests]))(keys)  # one compile
    errs = [float(jnp.mean(jnp.linalg.norm(g - true, axis=-1)) / jnp.linalg.norm(true)) for g in gs]
    print(name, "mean relative error at n=8/64/512:", [round(e, 4) for e in errs])
    assert errs[0] > errs[1] > errs[2], (name, errs)
    assert errs[2] < errs[0] / 3, (name, errs)


@pytest.mark.parametrize("name", sorted(MAKERS))
def test_num_queries_exact(name):
    f0, x = smooth(64)
    seen = []

    def f(xb):  # runs at trace time: record every batch sent to the oracle
        seen.append(xb.shape[0])
        return f0(xb)

    est = MAKERS[name](16)
    _, q = est(jax.random.key(0), f, x)
    assert isinstance(q, int) and seen == [q] == [zo.num_queries(est)]
    assert q == (17 if name == "nes_plain" else 16)
    seen.clear()
    jax.jit(lambda k, y: est(k, f, y)[0])(jax.random.key(1), x)
    assert seen == [q]


@pytest.mark.parametrize("name", sorted(MAKERS))
def test_jit_vmap_agree_with_loop_and_pure(name):
    f, x0 = softmax_ce()
    est = MAKERS[name](16)
    keys = jax.random.split(jax.random.key(7), 3)
    xs = x0[None] + 0.1 * jnp.arange(3.0).reshape(3, 1, 1, 1)
    g, q = jax.jit(jax.vmap(est, (0, None, 0)), static_argnums=1)(keys, f, xs)
    loop = [est(keys[i], f, xs[i])[0] for i in range(3)]
    assert g.shape == xs.shape and np.all(np.asarray(q) == zo.num_queries(est))
    np.testing.assert_allclose(g, jnp.stack(loop), rtol=1e-4, atol=1e-5)
    # purity: same key -> identical estimate; different key -> different
    np.testing.assert_array_equal(est(keys[0], f, xs[0])[0], loop[0])
    assert not np.allclose(est(keys[1], f, xs[0])[0], loop[0])


def test_get_and_alias():
    est = zo.get("spsa", n=32, scale=1e-2)
    assert zo.num_queries(est) == 32 and set(zo.ESTIMATORS) == {"nes", "spsa", "coordinate"}
    assert zo.num_queries(zo.get("nes", n=10, sigma=0.1, antithetic=False)) == 11


@pytest.mark.parametrize(
    ("build", "arg"),
    [
        (lambda: zo.nes(1, 0.1), "n"),
        (lambda: zo.nes(7, 0.1), "n"),
        (lambda: zo.spsa(2.5, 0.1), "n"),
        (lambda: zo.coordinate(5, 0.1), "n"),
        (lambda: zo.nes(8, 0.0), "sigma"),
        (lambda: zo.spsa(8, -1.0), "c"),
        (lambda: zo.coordinate(8, 0), "h"),
        (lambda: zo.get("fd", n=8, h=0.1), "name"),
        (lambda: zo.get("nes", n=8), "sigma"),
        (lambda: zo.get("spsa", n=8, c=0.1, sigma=0.1), "sigma"),
        (lambda: zo.coordinate(200, 0.1)(jax.random.key(0), smooth(64)[0], smooth(64)[1]), "n"),
    ],
)
def test_bad_arguments(build, arg):
    with pytest.raises(ValueError, match=arg):
        build()
