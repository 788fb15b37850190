"""Score-based zeroth-order inversion: protocol, exact budgets, defenses, and that it works."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from toy import linear_apply, linear_env

from jaxinv import defenses, oracles, results
from jaxinv.attacks.zo_inversion import zo_inversion
from jaxinv.run import run_chains

ENV = linear_env()
KEY = jax.random.key(0)


def make(defense=None, **kw):
    args = dict(queries_per_step=20, smoothing=0.01, lr=0.05, max_steps=50)
    args.update(kw)
    return zo_inversion(oracles.score(linear_apply, defense), (8, 8, 1), **args)


def test_step_preserves_shapes_dtypes_and_is_pure():
    attack = make(tv=0.1)
    s0 = attack.init(KEY, jnp.int32(3), ENV)
    s1, info = attack.step(KEY, s0, ENV)
    chex.assert_trees_all_equal_shapes_and_dtypes(s0, s1)
    chex.assert_trees_all_equal(s1, attack.step(KEY, s0, ENV)[0])
    chex.assert_trees_all_close(s1, jax.jit(attack.step)(KEY, s0, ENV)[0], rtol=1e-5,
                                atol=1e-6)
    assert int(s0.queries) == 1 and int(s1.queries) == 1 + 21 and int(info.queries) == 22


def test_budget_is_respected_exactly():
    budget = 1 + 3 * 21 + 10  # the initial query, 3 steps, and too little for a 4th
    res = run_chains(make(budget=budget), np.arange(2), ENV, chains=3, steps=10, segment=5,
                     progress=False)
    assert (res.state.queries == 1 + 3 * 21).all()
    assert res.state.budget_exhausted.all() and res.state.done.all()
    with pytest.raises(ValueError, match="budget"):
        make(budget=5)


def test_runs_against_any_defense_chain():
    for spec in ("round:1", "topk:1", "label", "noise:0.05", "rsig:0.5,0.3,cutoff:0.9"):
        attack = make(defense=defenses.parse(spec))
        s, _ = jax.jit(attack.step)(KEY, attack.init(KEY, jnp.int32(1), ENV), ENV)
        assert np.isfinite(float(s.loss)), spec


def test_bad_arguments():
    with pytest.raises(ValueError, match="score"):
        zo_inversion(oracles.label(linear_apply), (8, 8, 1))
    with pytest.raises(ValueError, match="loss"):
        make(loss="bogus")
    with pytest.raises(ValueError, match=r"estimator|unknown"):
        make(estimator="adam")


def test_recovers_classes_random_inits_do_not(models):
    from jaxinv.models import apply_logits
    from jaxinv.train import load_classifier

    target, evaluator = (load_classifier(models / n) for n in ("target", "evaluator"))
    attack = zo_inversion(oracles.score(apply_logits(target.module)), (8, 8, 1),
                          queries_per_step=40, smoothing=0.05, lr=0.05, max_steps=150,
                          tv=0.05)
    res = run_chains(attack, np.arange(10), target.variables, chains=6, steps=150,
                     progress=False)
    after = results.judge(evaluator, res.best_x, np.arange(10))["top1"]
    before = results.judge(evaluator, res.x_init, np.arange(10))["top1"]
    assert before < 0.3 and after > before + 0.4, (before, after)
    assert (res.state.queries == 1 + 150 * 41).all()


def test_cli_zo_writes_query_counts(models, tmp_path):
    import json

    from jaxinv.cli import main

    out = tmp_path / "zo"
    assert main(["attack", "zo", "--target", str(models / "target"), "--eval-model",
                 str(models / "evaluator"), "--chains", "2", "--steps", "6", "--out", str(out),
                 "--queries-per-step", "10", "--budget", "45", "--defense", "round:2,topk:3",
                 "--classes", "0,1"]) == 0
    m = json.loads((out / "results.json").read_text())["metrics"]
    # 1 initial query + 4 steps of 11 = 45: the 5th step would overspend
    assert m["queries_total"] == 4 * 45 and m["queries_per_chain"] == 45
    assert m["chains_budget_exhausted"] == 4
    assert json.loads((out / "results.json").read_text())["config"]["options"]["defense"] == \
        "round:2,topk:3"
