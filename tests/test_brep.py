"""Label-only boundary repulsion: protocol, start search, budgets, and that it works."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from toy import linear_apply, linear_env

from jaxinv import defenses, oracles, results
from jaxinv.attacks import brep_mi
from jaxinv.base import as_attack
from jaxinv.run import run_chains

ENV = linear_env()
KEY = jax.random.key(0)
ORACLE = oracles.label(linear_apply)


def test_ask_tell_shapes_purity_and_jit():
    bb = brep_mi((8, 8, 1), spheres=8, radius=0.5, tv=0.1)
    assert bb.kind == "label" and bb.num_queries == 9
    s0 = bb.init(KEY, jnp.int32(3))
    q = bb.ask(KEY, s0)
    assert q.shape == (9, 8, 8, 1) and float(q.min()) >= 0 and float(q.max()) <= 1
    s1, info = bb.tell(KEY, s0, ORACLE.query(KEY, ENV, q))
    chex.assert_trees_all_equal_shapes_and_dtypes(s0, s1)
    attack = as_attack(bb, ORACLE)
    chex.assert_trees_all_equal(attack.step(KEY, s0, ENV), attack.step(KEY, s0, ENV))
    chex.assert_trees_all_close(attack.step(KEY, s0, ENV)[0],
                                jax.jit(attack.step)(KEY, s0, ENV)[0])
    assert int(s1.queries) == 9 and int(info.queries) == 9


def test_search_finds_a_start_point_of_the_target_label(models):
    from jaxinv.models import apply_logits
    from jaxinv.train import load_classifier

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


def test_runs_behind_defenses():
    for spec in ("round:1", "topk:1", "noise:0.05"):
        attack = as_attack(brep_mi((8, 8, 1), spheres=8),
                           oracles.label(linear_apply, defenses.parse(spec)))
        s, _ = jax.jit(attack.step)(KEY, attack.init(KEY, jnp.int32(1), ENV), ENV)
        assert np.isfinite(float(s.loss)), spec


def test_recovers_classes_random_inits_do_not(models):
    from jaxinv.models import apply_logits
    from jaxinv.train import load_classifier

    target, evaluator = (load_classifier(models / n) for n in ("target", "evaluator"))
    bb = brep_mi((8, 8, 1), radius=0.5, normalize=True, init_range=(0.0, 0.5), max_steps=150)
    res = run_chains(as_attack(bb, oracles.label(apply_logits(target.module))), np.arange(10),
                     target.variables, chains=6, steps=150, progress=False)
    after = results.judge(evaluator, res.best_x, np.arange(10))["top1"]
    before = results.judge(evaluator, res.x_init, np.arange(10))["top1"]
    assert before < 0.3 and after > before + 0.35, (before, after)
    assert (res.state.queries <= 150 * 33).all()
