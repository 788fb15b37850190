"""Oracles (jaxinv.oracles): kinds, shapes, dtypes, jit/vmap safety; the budget rule
(jaxinv.core.protocol.budget_rule / check_budget) every black-box kernel applies."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxinv import defenses, oracles
from jaxinv.core.protocol import budget_rule, check_budget

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


def test_budget_rule_exact_under_scan():
    def body(carry, _):  # a kernel's step (3 queries), then the rule; done chains freeze
        used, _, done = carry
        new_used = used + 3
        new = (new_used, *budget_rule(new_used, 3, 10, jnp.bool_(False)))
        carry = jax.tree.map(lambda a, b: jnp.where(done, a, b), carry, new)
        return carry, carry

    init = (jnp.int32(0), jnp.bool_(False), jnp.bool_(False))
    (used, _, done), (trace, exhausted, dones) = jax.jit(
        lambda c: jax.lax.scan(body, c, None, length=6))(init)
    np.testing.assert_array_equal(trace, [3, 6, 9, 9, 9, 9])  # a 4th step would overspend
    np.testing.assert_array_equal(dones, [False, False, True, True, True, True])
    np.testing.assert_array_equal(exhausted, [False, False, True, True, True, True])
    assert int(used) == 9 and used.dtype == jnp.int32 and bool(done)


def test_budget_rule_edges():
    f = jnp.bool_(False)
    assert [bool(v) for v in budget_rule(jnp.int32(7), 3, 10, f)] == [False, False]  # 10 ok
    assert [bool(v) for v in budget_rule(jnp.int32(8), 3, 10, f)] == [True, True]
    assert [bool(v) for v in budget_rule(jnp.int32(10), 3, 10, f)] == [True, True]
    # a chain stopped for another reason is done, but not flagged budget_exhausted
    assert [bool(v) for v in budget_rule(jnp.int32(8), 3, 10, jnp.bool_(True))] == [False, True]
    assert [bool(v) for v in budget_rule(jnp.int32(2), 3, 10, jnp.bool_(True))] == [False, True]
    # unlimited: never exhausted, done only when stopped
    for stopped in (False, True):
        exhausted, done = budget_rule(jnp.int32(2**31 - 2), 100, None, jnp.bool_(stopped))
        assert not bool(exhausted) and bool(done) == stopped
        assert exhausted.shape == done.shape == ()
    # no int32 overflow: ``used + per_step`` would wrap here
    big = 2**31 - 1
    assert [bool(v) for v in budget_rule(jnp.int32(big - 9), 5, big, f)] == [False, False]
    assert [bool(v) for v in budget_rule(jnp.int32(big - 4), 5, big, f)] == [True, True]
    assert [bool(v) for v in jax.jit(lambda q: budget_rule(q, 5, big, f))(
        jnp.int32(big - 4))] == [True, True]
    exhausted, done = jax.vmap(lambda q, s: budget_rule(q, 4, 10, s))(
        jnp.array([0, 6, 7, 7], jnp.int32), jnp.array([False, False, False, True]))
    np.testing.assert_array_equal(exhausted, [False, False, True, False])
    np.testing.assert_array_equal(done, [False, False, True, True])


def test_check_budget():
    for budget in (None, 3, 10, 2**31 - 1):
        check_budget(budget, 3)
    for budget in (-1, 0, 2, 1.5, 3.0, 10.0, "10", True):
        with pytest.raises(ValueError, match="budget"):
            check_budget(budget, 3)


def test_check_budget_refuses_budgets_over_int32():
    with pytest.raises(ValueError, match="budget"):
        check_budget(2**31, 3)
