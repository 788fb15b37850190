"""Oracles (jaxinv.oracles): kinds, shapes, dtypes, jit/vmap safety and exact budgets."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxinv import defenses, oracles
from jaxinv.oracles import spend

KEY = jax.random.key(0)
B, H, W, C, K = 5, 4, 4, 1, 3


def apply(env, x):  # a tiny linear "model": logits = flatten(x) @ w
    return x.reshape(len(x), -1) @ env["w"]


ENV = {"w": jax.random.normal(jax.random.key(1), (H * W * C, K))}
X = jax.random.uniform(jax.random.key(2), (B, H, W, C))


@pytest.mark.parametrize(("oracle", "kind", "shape", "dtype"), [
    (oracles.white_box(apply), "white-box", (B, K), jnp.float32),
    (oracles.gray_box(lambda env, x: x.reshape(len(x), -1)), "gray-box", (B, H * W * C),
     jnp.float32),
    (oracles.score(apply), "score", (B, K), jnp.float32),
    (oracles.score(apply, defenses.parse("topk:1")), "score", (B, K), jnp.float32),
    (oracles.label(apply), "label", (B,), jnp.int32),
])
def test_kinds_shapes_dtypes(oracle, kind, shape, dtype):
    assert oracle.kind == kind and kind in oracles.KINDS
    out = oracle.query(KEY, ENV, X)
    assert out.shape == shape and out.dtype == dtype


def test_responses():
    logits = apply(ENV, X)
    np.testing.assert_array_equal(oracles.white_box(apply).query(KEY, ENV, X), logits)
    probs = oracles.score(apply).query(KEY, ENV, X)
    np.testing.assert_allclose(probs, jax.nn.softmax(logits), rtol=1e-6)
    np.testing.assert_array_equal(oracles.label(apply).query(KEY, ENV, X), logits.argmax(-1))
    rounded = oracles.score(apply, defenses.round_to(1)).query(KEY, ENV, X)
    np.testing.assert_allclose(rounded, jnp.round(probs, 1))
    # the defense's randomness comes from the query key
    noisy = oracles.label(apply, defenses.gaussian_noise(1.0))
    labels = jnp.stack([noisy.query(jax.random.key(i), ENV, X) for i in range(4)])
    assert labels.dtype == jnp.int32 and (labels != labels[0]).any()
    bf16 = oracles.score(lambda env, x: apply(env, x).astype(jnp.bfloat16)).query(KEY, ENV, X)
    assert bf16.dtype == jnp.float32


def test_white_box_differentiable():
    oracle = oracles.white_box(apply)
    g = jax.grad(lambda x: oracle.query(KEY, ENV, x)[:, 2].sum())(X)
    np.testing.assert_allclose(g, jnp.broadcast_to(ENV["w"][:, 2].reshape(H, W, C), X.shape),
                               rtol=1e-6)


@pytest.mark.parametrize("oracle", [
    oracles.white_box(apply), oracles.score(apply, defenses.parse("noise:0.1,topk:2")),
    oracles.label(apply, defenses.parse("rsig:0.1,0.5")),
])
def test_jit_vmap_over_chains(oracle):
    keys = jax.random.split(KEY, 2)
    xs = jax.random.uniform(jax.random.key(3), (2, B, H, W, C))  # 2 chains x batch B
    fast = jax.jit(jax.vmap(oracle.query, in_axes=(0, None, 0)))(keys, ENV, xs)
    plain = jnp.stack([oracle.query(k, ENV, x) for k, x in zip(keys, xs, strict=True)])
    np.testing.assert_allclose(fast, plain, rtol=1e-5, atol=1e-6)
    assert fast.dtype == plain.dtype


def test_factory_checks():
    with pytest.raises(ValueError, match="apply_logits: expected a callable"):
        oracles.score("model")
    with pytest.raises(ValueError, match=r"defense: expected a jaxinv\.defenses\.Defense"):
        oracles.label(apply, defense="topk:1")


def test_spend_budget_exact_under_scan():
    def body(used, _):
        allowed, used = spend(used, 3, 10)
        return used, allowed

    used, allowed = jax.jit(lambda u: jax.lax.scan(body, u, None, length=6))(jnp.int32(0))
    np.testing.assert_array_equal(allowed, [True, True, True, False, False, False])
    assert int(used) == 9 and used.dtype == jnp.int32


def test_spend_edges():
    ok, used = spend(jnp.int32(7), 3, 10)  # exactly reaches the budget
    assert bool(ok) and int(used) == 10
    ok, used = spend(jnp.int32(8), 3, 10)
    assert not bool(ok) and int(used) == 8
    ok, used = spend(jnp.int32(5), 100, None)  # unlimited
    assert bool(ok) and int(used) == 105 and ok.shape == ()
    ok, used = spend(jnp.int32(2**31 - 10), 5, 2**31 - 1)  # no int32 overflow in the test
    assert bool(ok) and int(used) == 2**31 - 5
    ok, used = jax.vmap(lambda u: spend(u, 4, 10))(jnp.array([0, 6, 7], jnp.int32))
    np.testing.assert_array_equal(ok, [True, True, False])
    np.testing.assert_array_equal(used, [4, 10, 7])
    for n, budget in [(-1, 10), (1.5, 10), (3, -1), (3, 2**31), (3, 2.0)]:
        with pytest.raises(ValueError, match=r"spend (n|budget): expected"):
            spend(jnp.int32(0), n, budget)
