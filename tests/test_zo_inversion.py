"""Score-based zeroth-order inversion: protocol, exact budgets, defenses, and that it works."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from toy import linear_apply, linear_env

from jaxinv import defenses, oracles
from jaxinv.attacks import estimators
from jaxinv.attacks.zo_inversion import zo_inversion
from jaxinv.core.driver import run_chains
from jaxinv.core.protocol import OracleEnv, Queries, as_attack
from jaxinv.core.remote import run_remote
from jaxinv.evaluation import results

ENV = linear_env()
KEY = jax.random.key(0)


def make(defense=None, **kw):
    args = dict(queries_per_step=20, smoothing=0.01, lr=0.05, max_steps=50)
    args.update(kw)
    return as_attack(zo_inversion((8, 8, 1), **args), oracles.score(linear_apply, defense))


def test_step_preserves_shapes_dtypes_and_is_pure():
    attack = make(tv=0.1)
    y = jnp.int32(3)
    s0 = attack.init(KEY, y, ENV)
    s1, info = attack.step(KEY, s0, y, ENV)
    chex.assert_trees_all_equal_shapes_and_dtypes(s0, s1)
    chex.assert_trees_all_equal(s1, attack.step(KEY, s0, y, ENV)[0])
    chex.assert_trees_all_close(s1, jax.jit(attack.step)(KEY, s0, y, ENV)[0], rtol=1e-5,
                                atol=1e-6)
    assert int(s0.queries) == 0 and int(s1.queries) == 21 and int(info.queries) == 21
    assert "target" not in s0._fields  # protocol v2: the target is an argument of step
    # the confidence is the oracle's p_y of the point answered (x), for the step's target
    np.testing.assert_allclose(s1.confidence,
                               jax.nn.softmax(linear_apply(ENV, s1.x[None]))[0, 3], rtol=1e-5)
    other, _ = attack.step(KEY, s0, jnp.int32(7), ENV)
    np.testing.assert_allclose(other.confidence,
                               jax.nn.softmax(linear_apply(ENV, other.x[None]))[0, 7],
                               rtol=1e-5)
    assert not np.allclose(other.z, s1.z)  # and the step descends that target's cost
    # a plain env is the oracle's; OracleEnv(oracle, attack=None) is the same thing
    chex.assert_trees_all_equal(s1, attack.step(KEY, s0, y, OracleEnv(ENV))[0])


def test_budget_is_respected_exactly():
    budget = 3 * 21 + 10  # 3 steps, and too little for a 4th
    res = run_chains(make(budget=budget), np.arange(2), ENV, chains=3, steps=10, segment=5,
                     progress=False)
    assert (res.state.queries == 3 * 21).all()
    assert res.state.budget_exhausted.all() and res.state.done.all()
    with pytest.raises(ValueError, match="budget"):
        make(budget=5)


def test_runs_against_any_defense_chain():
    for spec in ("round:1", "topk:1", "label", "noise:0.05", "rsig:0.5,0.3,cutoff:0.9"):
        attack = make(defense=defenses.parse(spec))
        s, _ = jax.jit(attack.step)(KEY, attack.init(KEY, jnp.int32(1), ENV), jnp.int32(1),
                                    ENV)
        assert np.isfinite(float(s.loss)), spec


def test_bad_arguments():
    with pytest.raises(ValueError, match="score"):
        as_attack(zo_inversion((8, 8, 1)), oracles.label(linear_apply))
    with pytest.raises(ValueError, match="loss"):
        make(loss="bogus")
    with pytest.raises(ValueError, match=r"estimator|unknown"):
        make(estimator="adam")


def test_recovers_classes_random_inits_do_not(models):
    from jaxinv.models import apply_logits
    from jaxinv.training.classifier import load_classifier

    target, evaluator = (load_classifier(models / n) for n in ("target", "evaluator"))
    bb = zo_inversion((8, 8, 1), queries_per_step=40, smoothing=0.05, lr=0.05, max_steps=150,
                      tv=0.05)
    attack = as_attack(bb, oracles.score(apply_logits(target.module)))
    res = run_chains(attack, np.arange(10), target.variables, chains=6, steps=150,
                     progress=False)
    after = results.judge(evaluator, res.best_x, np.arange(10))["top1"]
    before = results.judge(evaluator, res.x_init, np.arange(10))["top1"]
    assert before < 0.3 and after > before + 0.4, (before, after)
    assert (res.state.queries == 150 * 41).all()


def test_cli_zo_writes_query_counts(models, tmp_path):
    import json

    from jaxinv.cli import main

    out = tmp_path / "zo"
    assert main(["attack", "zo", "--target", str(models / "target"), "--eval-model",
                 str(models / "evaluator"), "--chains", "2", "--steps", "6", "--out", str(out),
                 "--queries-per-step", "10", "--budget", "45", "--defense", "round:2,topk:3",
                 "--classes", "0,1"]) == 0
    m = json.loads((out / "results.json").read_text())["metrics"]
    # 4 steps of 11 = 44: the 5th step would overspend
    assert m["queries_total"] == 4 * 44 and m["queries_per_chain"] == 44
    assert m["chains_budget_exhausted"] == 4
    assert json.loads((out / "results.json").read_text())["config"]["options"]["defense"] == \
        "round:2,topk:3"


def test_ask_tell_round_trip_equals_the_in_process_step():
    bb = zo_inversion((8, 8, 1), queries_per_step=20, tv=0.1)
    oracle = oracles.score(linear_apply, defenses.parse("round:3"))
    attack = as_attack(bb, oracle)
    y = jnp.int32(2)
    s0 = bb.init(KEY, y, None)  # a black-box kernel's env is the attacker's own (None)
    chex.assert_trees_all_equal(s0, attack.init(KEY, y, ENV))
    k_ask, k_query = jax.random.split(KEY)  # as as_attack splits the step key
    queries = bb.ask(k_ask, s0, y, None)
    assert isinstance(queries, Queries)
    assert queries.x.shape == (bb.num_queries, 8, 8, 1) == (21, 8, 8, 1)
    assert queries.z.shape == (21, 8, 8, 1)
    answers = oracle.query(k_query, ENV, queries.x)
    s1, info1 = bb.tell(k_ask, s0, y, queries, answers, None)
    s2, info2 = attack.step(KEY, s0, y, ENV)
    chex.assert_trees_all_equal(s1, s2)
    chex.assert_trees_all_equal(info1, info2)
    assert not np.allclose(s1.z, s0.z)  # it moved
    # tell reads the directions off the queries it is given: the key plays no part...
    chex.assert_trees_all_equal(bb.tell(jax.random.key(99), s0, y, queries, answers, None)[0],
                                s1)
    # ...and other queries (same answers) give another step
    other = bb.ask(jax.random.key(99), s0, y, None)
    assert not np.allclose(bb.tell(k_ask, s0, y, other, answers, None)[0].z, s1.z)
    # host round trip (what an HTTP client does): numpy in, numpy out, same state
    host = np.asarray(oracle.query(k_query, ENV, np.asarray(queries.x)))
    back = Queries(*(jnp.asarray(np.asarray(a)) for a in queries))
    chex.assert_trees_all_close(bb.tell(k_ask, s0, y, back, jnp.asarray(host), None)[0], s1)


@pytest.mark.parametrize("name, kw", [
    ("nes", dict(n=8, sigma=0.01)), ("nes", dict(n=8, sigma=0.01, antithetic=False)),
    ("spsa", dict(n=8, c=0.01)), ("coordinate", dict(n=8, h=0.01))])
def test_combine_points_reads_the_directions_off_the_points(name, kw):
    est = estimators.ESTIMATORS[name](**kw)
    x = jax.random.uniform(jax.random.key(1), (4, 4, 1))
    pts = est.points(KEY, x)
    assert pts.shape == (estimators.num_queries(est), 4, 4, 1)
    v = jnp.sum(jnp.sin(3 * pts.reshape(len(pts), -1)), -1)  # a smooth black-box loss
    g = est.combine(KEY, x, v)
    assert g.shape == x.shape and float(jnp.abs(g).max()) > 0.1
    np.testing.assert_allclose(est.combine_points(x, pts, v), g, rtol=1e-4, atol=1e-4)
    # the points decide: those of another key give that key's estimate
    k2 = jax.random.key(5)
    pts2 = est.points(k2, x)
    v2 = jnp.sum(jnp.sin(3 * pts2.reshape(len(pts2), -1)), -1)
    np.testing.assert_allclose(est.combine_points(x, pts2, v2), est.combine(k2, x, v2),
                               rtol=1e-4, atol=1e-4)
    assert not np.allclose(est.combine_points(x, pts2, v2), g, atol=1e-2)


def test_run_remote_equals_run_chains_and_counts_queries(tmp_path):
    bb = zo_inversion((8, 8, 1), queries_per_step=10, max_steps=6, budget=55)
    oracle = oracles.score(linear_apply)
    asked = []

    def query(x):  # a host-side oracle, as an HTTP client is
        asked.append(len(x))
        return np.asarray(oracle.query(KEY, ENV, jnp.asarray(x)))

    local = run_chains(as_attack(bb, oracle), np.arange(2), ENV, chains=3, steps=8,
                       progress=False)
    remote = run_remote(bb, query, np.arange(2), chains=3, steps=8, workdir=tmp_path / "ck",
                        progress=False)
    chex.assert_trees_all_close(remote.best_x, local.best_x, atol=1e-5)
    np.testing.assert_array_equal(remote.state.queries, local.state.queries)
    assert sum(asked) == remote.timing["queries_sent"] == int(remote.state.queries.sum())
    assert (remote.state.queries == 5 * 11).all() and remote.state.budget_exhausted.all()


def test_run_remote_keeps_the_state_on_an_outage_and_resumes(tmp_path):
    bb = zo_inversion((8, 8, 1), queries_per_step=10, max_steps=10)
    oracle = oracles.score(linear_apply)
    calls = {"n": 0}

    def flaky(x):
        calls["n"] += 1
        if calls["n"] == 7:
            raise ConnectionError("server gone")
        return np.asarray(oracle.query(KEY, ENV, jnp.asarray(x)))

    kw = dict(chains=2, steps=10, segment=4, workdir=tmp_path / "ck", progress=False)
    with pytest.raises(ConnectionError) as err:
        run_remote(bb, flaky, np.arange(2), **kw)
    assert "saved" in "".join(getattr(err.value, "__notes__", []))
    resumed = run_remote(bb, flaky, np.arange(2), **kw)
    fresh = run_remote(bb, lambda x: np.asarray(oracle.query(KEY, ENV, jnp.asarray(x))),
                       np.arange(2), **{**kw, "workdir": tmp_path / "fresh"})
    chex.assert_trees_all_close(resumed.state, fresh.state)
    assert calls["n"] == 10 + 1  # 6 answered, 1 failed, then the 4 steps left
    with pytest.raises(ValueError, match="oracle answered"):
        run_remote(bb, lambda x: np.zeros((1, 10)), [0], chains=1, steps=2, progress=False)
