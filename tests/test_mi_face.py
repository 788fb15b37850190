"""MI-Face kernel: protocol properties, stopping rules, priors and processes."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from toy import linear_apply, linear_env

from jaxinv.attacks import mi_face, priors

ENV = linear_env()
KEY = jax.random.key(0)


def make(**kw):
    # explicit: the tests below were written for these (the pre-v2 defaults of init_range
    # and tv), not for mi_face's current defaults, which test_defaults_and_paper_setting checks
    args = dict(loss="neg_log_p", init="random", lr=0.5, init_range=(0.0, 1.0), tv=0.0)
    args.update(kw)
    return mi_face(linear_apply, (8, 8, 1), **args)


def test_step_preserves_shapes_and_dtypes():
    attack = make(tv=0.1, l2=0.01)
    s0 = attack.init(KEY, jnp.int32(3), ENV)
    s1, info = attack.step(KEY, s0, jnp.int32(3), ENV)
    chex.assert_trees_all_equal_shapes_and_dtypes(s0, s1)
    assert s0.loss.dtype == jnp.float32 and s0.x.shape == (8, 8, 1)
    assert info.loss.shape == () and np.isfinite(info.loss)
    assert s1.aux["confidence"].shape == () and info.aux["confidence"].shape == ()
    assert "target" not in s0._fields  # protocol v2: the target is an argument of step


def test_purity_and_jit_agree():
    attack = make()
    s0 = attack.init(KEY, jnp.int32(2), ENV)
    a, _ = attack.step(KEY, s0, jnp.int32(2), ENV)
    b, _ = attack.step(KEY, s0, jnp.int32(2), ENV)
    c, _ = jax.jit(attack.step)(KEY, s0, jnp.int32(2), ENV)
    chex.assert_trees_all_equal(a, b)
    chex.assert_trees_all_close(a, c, rtol=1e-6, atol=1e-6)


def test_step_follows_the_target_it_is_given():
    attack = make()
    s0 = attack.init(KEY, jnp.int32(2), ENV)
    # a step moves along the gradient kept in the state, then scores the new point for
    # the target it is given: its cost, confidence and gradient (hence the next move)
    a, _ = attack.step(KEY, s0, jnp.int32(2), ENV)
    b, _ = attack.step(KEY, s0, jnp.int32(7), ENV)
    probs = jax.nn.softmax(linear_apply(ENV, b.x[None]))[0]
    np.testing.assert_allclose(a.aux["confidence"], probs[2], rtol=1e-5)
    np.testing.assert_allclose(b.aux["confidence"], probs[7], rtol=1e-5)
    assert not np.allclose(a.grad, b.grad)
    a, _ = attack.step(KEY, a, jnp.int32(2), ENV)
    b, _ = attack.step(KEY, b, jnp.int32(7), ENV)
    assert not np.allclose(a.x, b.x)


def test_one_trace_for_new_targets_and_params():
    attack = make()
    step = jax.jit(chex.assert_max_traces(attack.step, n=1))
    for seed, target in ((0, 1), (1, 5), (2, 9)):
        env = linear_env(seed=seed)
        s = attack.init(jax.random.key(seed), jnp.int32(target), env)
        step(KEY, s, jnp.int32(target), env)


def test_gradient_steps_raise_target_confidence():
    attack = make(init="zero", loss="one_minus_p", lr=1.0)
    s = attack.init(KEY, jnp.int32(4), ENV)
    p0 = s.aux["confidence"]
    step = jax.jit(attack.step)
    for _ in range(30):
        s, _ = step(KEY, s, jnp.int32(4), ENV)
    assert s.aux["confidence"] > p0 + 0.3
    assert s.x.min() >= 0 and s.x.max() <= 1  # box projection


def test_gamma_stops_on_success():
    attack = make(gamma=-np.log(0.9))  # stop once p_y >= 0.9
    s = attack.init(KEY, jnp.int32(0), ENV)
    step = jax.jit(attack.step)
    for _ in range(200):
        s, _ = step(KEY, s, jnp.int32(0), ENV)
        if s.done:
            break
    assert s.done and s.aux["confidence"] >= 0.9 and s.t < 200


def test_max_steps_stops():
    attack = make(max_steps=3)
    s = attack.init(KEY, jnp.int32(0), ENV)
    for _ in range(3):
        s, _ = attack.step(KEY, s, jnp.int32(0), ENV)
    assert s.done and s.t == 3


def test_no_improvement_rule():
    # lr=0 never moves: the cost equals the max of the last beta costs at step beta
    attack = make(lr=1e-30, beta=4)
    s = attack.init(KEY, jnp.int32(0), ENV)
    flags = []
    for _ in range(6):
        s, _ = attack.step(KEY, s, jnp.int32(0), ENV)
        flags.append(bool(s.done))
    assert flags[:3] == [False, False, False] and flags[3]


def test_priors_and_processes():
    x = jax.random.uniform(KEY, (8, 8, 1))
    assert priors.total_variation(jnp.ones((8, 8, 1))) == 0
    assert priors.total_variation(x) > 0.1
    blurred = priors.denoise(1.0)(x)
    assert priors.total_variation(blurred) < priors.total_variation(x)
    sharp = priors.get_process("denoise+sharpen")(x)
    assert sharp.shape == x.shape
    smooth = make(tv=1.0, process=priors.denoise(0.8))
    s = smooth.init(KEY, jnp.int32(0), ENV)
    for _ in range(5):
        s, _ = smooth.step(KEY, s, jnp.int32(0), ENV)
    assert priors.total_variation(s.x) < priors.total_variation(
        make().init(KEY, jnp.int32(0), ENV).x)


def test_init_range_bounds_random_inits():
    keys = jax.random.split(KEY, 16)
    x = jax.vmap(lambda k: make(init_range=(0, 0.25)).init(k, jnp.int32(0), ENV).x)(keys)
    assert float(x.min()) >= 0.0 and 0.2 < float(x.max()) <= 0.25
    assert not np.allclose(x[0], x[1])  # distinct chains, unlike the zero init


def test_defaults_and_paper_setting():
    default = mi_face(linear_apply, (8, 8, 1))
    cfg = default.config
    assert (cfg["loss"], cfg["lr"], cfg["init"], cfg["init_range"], cfg["tv"]) == (
        "neg_log_p", 0.05, "random", [0.0, 0.25], 0.05)
    s = default.init(KEY, jnp.int32(3), ENV)
    assert 0 <= float(s.x.min()) and 0.2 < float(s.x.max()) <= 0.25
    neg_log_p = -jnp.log(s.aux["confidence"])
    assert float(s.loss) > float(neg_log_p) + 1e-4  # the TV prior is on
    # paper=True: 1 - p, lr 0.1, x0 = 0, no prior, whatever else is passed
    paper = mi_face(linear_apply, (8, 8, 1), paper=True, lr=0.7, tv=1.0)
    explicit = mi_face(linear_apply, (8, 8, 1), loss="one_minus_p", lr=0.1, init="zero",
                       tv=0.0, l2=0.0)
    s = paper.init(KEY, jnp.int32(3), ENV)
    assert float(jnp.abs(s.x).max()) == 0.0
    np.testing.assert_allclose(s.loss, 1.0 - s.aux["confidence"], rtol=1e-6)
    for _ in range(3):
        s, _ = paper.step(KEY, s, jnp.int32(3), ENV)
    e = explicit.init(KEY, jnp.int32(3), ENV)
    for _ in range(3):
        e, _ = explicit.step(KEY, e, jnp.int32(3), ENV)
    chex.assert_trees_all_close(s, e, rtol=1e-6, atol=1e-7)
    assert float(jnp.abs(s.x).max()) > 0  # it moved


@pytest.mark.parametrize("kw, msg", [
    (dict(loss="bogus"), "loss"), (dict(init="ones"), "init"), (dict(lr=0), "lr"),
    (dict(beta=0), "beta"), (dict(init_range=(1, 0)), "init_range")])
def test_bad_arguments(kw, msg):
    with pytest.raises(ValueError, match=msg):
        make(**kw)
    with pytest.raises(ValueError, match="process"):
        priors.get_process("blur")
