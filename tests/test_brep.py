"""Label-only boundary repulsion: protocol, start search, budgets, and that it works."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from toy import linear_apply, linear_env

from jaxinv import defenses, oracles
from jaxinv.attacks import brep_mi
from jaxinv.core.driver import run_chains
from jaxinv.core.protocol import Queries, as_attack
from jaxinv.evaluation import results

ENV = linear_env()
KEY = jax.random.key(0)
ORACLE = oracles.label(linear_apply)


def test_ask_tell_shapes_purity_and_jit():
    bb = brep_mi((8, 8, 1), spheres=8, radius=0.5, tv=0.1)
    assert bb.kind == "label" and bb.num_queries == 9
    y = jnp.int32(3)
    s0 = bb.init(KEY, y, None)  # a black-box kernel's env is the attacker's own (None)
    assert "target" not in s0._fields  # protocol v2: the target is an argument
    q = bb.ask(KEY, s0, y, None)
    assert isinstance(q, Queries) and q.x.shape == q.z.shape == (9, 8, 8, 1)
    assert float(q.x.min()) >= 0 and float(q.x.max()) <= 1
    s1, info = bb.tell(KEY, s0, y, q, ORACLE.query(KEY, ENV, q.x), None)
    chex.assert_trees_all_equal_shapes_and_dtypes(s0, s1)
    attack = as_attack(bb, ORACLE)
    chex.assert_trees_all_equal(attack.step(KEY, s0, y, ENV), attack.step(KEY, s0, y, ENV))
    chex.assert_trees_all_close(attack.step(KEY, s0, y, ENV)[0],
                                jax.jit(attack.step)(KEY, s0, y, ENV)[0])
    assert int(s1.queries) == 9 and int(info.queries) == 9


def test_ask_tell_round_trip_equals_the_in_process_step():
    bb = brep_mi((8, 8, 1), spheres=8, radius=0.5, tv=0.1, start="uniform")
    attack = as_attack(bb, ORACLE)
    step = jax.jit(attack.step)
    y = jnp.int32(int(ORACLE.query(KEY, ENV, jnp.full((1, 8, 8, 1), 0.25))[0]))
    s = attack.init(KEY, y, ENV)
    chex.assert_trees_all_equal(s, bb.init(KEY, y, None))
    checked = set()
    for t in range(40):  # by hand == as_attack, in the search phase and after it
        key = jax.random.key(100 + t)
        k_ask, k_query = jax.random.split(key)
        q = bb.ask(k_ask, s, y, None)
        labels = ORACLE.query(k_query, ENV, q.x)
        by_hand, info = bb.tell(k_ask, s, y, q, labels, None)
        new, _ = step(key, s, y, ENV)
        chex.assert_trees_all_close(by_hand, new, rtol=1e-6, atol=1e-6)
        # tell reads the points off the queries: the key plays no part
        chex.assert_trees_all_equal(bb.tell(jax.random.key(7), s, y, q, labels, None)[0],
                                    by_hand)
        if bool(s.found):  # the share of the sphere (queries 1..N) that kept the label
            share = float(jnp.mean(labels[1:] == y))
            assert float(by_hand.sphere_share) == float(info.sphere_share) == share
        checked.add(bool(s.found))
        s = new
    assert checked == {False, True}  # both phases were compared


def test_search_finds_a_start_point_of_the_target_label(models):
    from jaxinv.models import apply_logits
    from jaxinv.training.classifier import load_classifier

    target = load_classifier(models / "target")
    oracle = oracles.label(apply_logits(target.module))
    bb = brep_mi((8, 8, 1), spheres=16, radius=0.5, max_steps=30)
    res = run_chains(as_attack(bb, oracle), np.arange(10), target.variables, chains=2,
                     steps=30, progress=False)
    found = np.asarray(res.state.found)
    assert found.mean() > 0.7
    labels = np.asarray(oracle.query(KEY, target.variables, res.state.z.reshape(-1, 8, 8, 1)))
    wanted = np.repeat(np.arange(10), 2)
    np.testing.assert_array_equal(labels[found.ravel()], wanted[found.ravel()])


def test_budget_is_respected_exactly():
    bb = brep_mi((8, 8, 1), spheres=8, budget=5 * 9 + 4)
    res = run_chains(as_attack(bb, ORACLE), np.arange(2), ENV, chains=2, steps=20,
                     progress=False)
    assert (res.state.queries == 5 * 9).all() and res.state.budget_exhausted.all()


def test_bad_arguments():
    with pytest.raises(ValueError, match="label"):
        as_attack(brep_mi((8, 8, 1)), oracles.score(linear_apply))
    for kw, msg in (({"start": "gan"}, "start"), ({"spheres": 1}, "spheres"),
                    ({"growth": 1.0}, "growth"), ({"budget": 3}, "budget")):
        with pytest.raises(ValueError, match=msg):
            brep_mi((8, 8, 1), **kw)


def test_defaults():
    cfg = brep_mi((8, 8, 1)).config
    assert (cfg["radius"], cfg["normalize"], cfg["init_range"]) == (1.0, True, [0.0, 0.5])
    s = brep_mi((8, 8, 1), start="uniform").init(KEY, jnp.int32(0), None)
    assert float(s.radius) == 1.0 and 0.4 < float(s.z.max()) <= 0.5


def test_runs_behind_defenses():
    for spec in ("round:1", "topk:1", "noise:0.05"):
        attack = as_attack(brep_mi((8, 8, 1), spheres=8),
                           oracles.label(linear_apply, defenses.parse(spec)))
        s, _ = jax.jit(attack.step)(KEY, attack.init(KEY, jnp.int32(1), ENV), jnp.int32(1),
                                    ENV)
        assert np.isfinite(float(s.loss)), spec


def test_recovers_classes_random_inits_do_not(models):
    from jaxinv.models import apply_logits
    from jaxinv.training.classifier import load_classifier

    target, evaluator = (load_classifier(models / n) for n in ("target", "evaluator"))
    bb = brep_mi((8, 8, 1), radius=0.5, normalize=True, init_range=(0.0, 0.5), max_steps=150)
    res = run_chains(as_attack(bb, oracles.label(apply_logits(target.module))), np.arange(10),
                     target.variables, chains=6, steps=150, progress=False)
    after = results.judge(evaluator, res.best_x, np.arange(10))["top1"]
    before = results.judge(evaluator, res.x_init, np.arange(10))["top1"]
    assert before < 0.3 and after > before + 0.35, (before, after)
    assert (res.state.queries <= 150 * 33).all()


def test_radius_is_capped_and_the_chain_stops():
    from jaxinv.attacks import brep_mi as make

    bb = make((8, 8, 1), spheres=4, radius=1.0, growth=2.0, max_radius=3.0)
    s = bb.init(KEY, 1, None)
    # every answer keeps the label: the start is found, then every sphere grows R
    for t in range(12):
        q = bb.ask(jax.random.key(t), s, 1, None)
        s, _ = bb.tell(jax.random.key(t), s, 1, q, jnp.ones(5, jnp.int32), None)
        if s.done:
            break
    assert float(s.radius) == 3.0 and bool(s.done)
