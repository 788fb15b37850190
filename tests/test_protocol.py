"""Protocol v2: any target pytree through one driver, sweeps as a batch axis, resumable
on another device count, fingerprints that cover every result-changing option."""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from toy import linear_apply, linear_env

from jaxinv import gradient_inversion, make_mesh, run_chains
from jaxinv.attacks import mi_face, normal, uniform

ENV = linear_env()


def net(p, x):
    return jax.nn.sigmoid(x @ p["w1"] + p["b1"]) @ p["w2"] + p["b2"]


def victim_grad(p, x, y):
    ce = lambda p: optax.softmax_cross_entropy_with_integer_labels(net(p, x[None]), y[None]).sum()
    return jax.grad(ce)(p)


def test_dlg_shaped_targets_are_gradient_pytrees():
    """One chain per victim; the target is the victim's gradient of a 2-layer net."""
    k = jax.random.split(jax.random.key(0), 4)
    params = {"w1": jax.random.uniform(k[0], (8, 16), minval=-0.5, maxval=0.5),
              "b1": jnp.zeros(16), "w2": jax.random.uniform(k[1], (16, 3), minval=-0.5,
                                                            maxval=0.5), "b2": jnp.zeros(3)}
    xs = jax.random.uniform(k[2], (24, 8))
    ys = jax.random.randint(k[3], (24,), 0, 3)
    targets = {"grad": jax.vmap(lambda x, y: victim_grad(params, x, y))(xs, ys), "y": ys}

    def match(x, target, env):
        g = victim_grad(env, x, target["y"])
        return sum(jnp.sum((a - b) ** 2) for a, b in
                   zip(jax.tree.leaves(g), jax.tree.leaves(target["grad"]), strict=True))

    attack = gradient_inversion(match, optax.lbfgs(), init=normal((8,)))
    res = run_chains(attack, targets, params, steps=60, progress=False)
    mse = ((res.best_x[:, 0] - np.asarray(xs)) ** 2).mean(-1)
    assert res.best_x.shape == (24, 1, 8)
    assert np.all(mse < 1e-3), mse
    random_mse = ((res.x_init[:, 0] - np.asarray(xs)) ** 2).mean(-1)
    assert np.all(random_mse > 1e-2)


def test_p2i_shaped_targets_are_probability_vectors():
    """The target is a probability vector; the attack finds an input the model maps to it."""
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(10) * 0.3, size=6).astype(np.float32)

    def kl(x, p, env):
        logq = jax.nn.log_softmax(linear_apply(env, x[None])[0])
        return jnp.sum(p * (jnp.log(jnp.maximum(p, 1e-12)) - logq))

    attack = gradient_inversion(kl, optax.adam(0.05), init=uniform((8, 8, 1), 0, 1))
    res = run_chains(attack, probs, ENV, chains=2, steps=300, progress=False)
    assert res.best_x.shape == (6, 2, 8, 8, 1)
    assert np.median(res.best_loss) < 0.05 < np.median(res.info.loss[0])


def test_lr_sweep_equals_separate_runs():
    lrs = [0.01, 0.05, 0.2, 0.5]
    swept = run_chains(partial(mi_face, linear_apply, (8, 8, 1)), np.arange(3), ENV,
                       chains=2, steps=20, sweep={"lr": lrs}, progress=False)
    assert swept.best_x.shape == (4, 3, 2, 8, 8, 1)
    for i, lr in enumerate(lrs):
        one = run_chains(mi_face(linear_apply, (8, 8, 1), lr=lr), np.arange(3), ENV, chains=2,
                         steps=20, progress=False)
        # the same computation; a traced lr only changes XLA's constant folding
        np.testing.assert_allclose(swept.best_x[i], one.best_x, atol=1e-6)
        np.testing.assert_allclose(swept.best_loss[i], one.best_loss, rtol=1e-5)


def test_checkpoint_on_eight_devices_resumes_on_one(tmp_path):
    attack = mi_face(linear_apply, (8, 8, 1), lr=0.5, beta=1000)
    kw = dict(chains=3, segment=5, progress=False)  # 30 chains: padded to 32 on 8 devices
    straight = run_chains(attack, np.arange(10), ENV, steps=20, mesh=make_mesh(), **kw)
    run_chains(attack, np.arange(10), ENV, steps=10, mesh=make_mesh(), workdir=tmp_path,
               chunk=2, **kw)
    one = make_mesh(jax.devices()[:1])
    resumed = run_chains(attack, np.arange(10), ENV, steps=20, mesh=one, workdir=tmp_path, **kw)
    np.testing.assert_array_equal(straight.best_x, resumed.best_x)
    np.testing.assert_array_equal(straight.info.loss, resumed.info.loss)


@pytest.mark.parametrize("change", [dict(lr=0.2), dict(momentum_like_tv=0.1)])
def test_changing_a_kernel_option_refuses_the_workdir(tmp_path, change):
    run_chains(mi_face(linear_apply, (8, 8, 1), lr=0.5), np.arange(2), ENV, chains=2, steps=4,
               workdir=tmp_path, progress=False)
    opts = {"lr": 0.5, **change}
    if "momentum_like_tv" in opts:
        opts["tv"] = opts.pop("momentum_like_tv")
    with pytest.raises(ValueError, match=r"different run.*kernel"):
        run_chains(mi_face(linear_apply, (8, 8, 1), **opts), np.arange(2), ENV, chains=2,
                   steps=4, workdir=tmp_path, progress=False)


def test_target_per_chain_sharded_equals_replicated():
    """chains=1 shards the targets with the chains; chains>1 replicates and indexes them."""
    attack = mi_face(linear_apply, (8, 8, 1), lr=0.5)
    targets = np.repeat(np.arange(10), 2)
    one_each = run_chains(attack, targets, ENV, chains=1, steps=6, progress=False)
    two_each = run_chains(attack, np.arange(10), ENV, chains=2, steps=6, progress=False)
    assert one_each.best_x.shape == (20, 1, 8, 8, 1)
    # different chain keys, same targets: both raise the class probability from the start
    for r in (one_each, two_each):
        assert np.mean(r.best_loss < r.info.loss[0]) > 0.9


def test_bad_targets_and_sweeps_are_clear():
    attack = mi_face(linear_apply, (8, 8, 1))
    with pytest.raises(ValueError, match="leading axis"):
        run_chains(attack, {"a": np.zeros(3), "b": np.zeros(4)}, ENV, steps=2, progress=False)
    with pytest.raises(ValueError, match="NaN"):
        run_chains(attack, np.array([0.5, np.nan]), ENV, steps=2, progress=False)
    with pytest.raises(TypeError, match="factory"):
        run_chains(attack, [0], ENV, steps=2, sweep={"lr": [0.1]}, progress=False)
    with pytest.raises(ValueError, match="sweep"):
        run_chains(partial(mi_face, linear_apply, (8, 8, 1)), [0], ENV, steps=2,
                   sweep={"lr": [0.1, 0.2], "tv": [0.1]}, progress=False)


def test_class_targets_out_of_range_are_refused_by_the_python_api():
    from jaxinv import as_attack, oracles
    from jaxinv.attacks import brep_mi, zo_inversion

    for attack in (mi_face(linear_apply, (8, 8, 1)),
                   as_attack(zo_inversion((8, 8, 1)), oracles.score(linear_apply)),
                   as_attack(brep_mi((8, 8, 1)), oracles.label(linear_apply))):
        for bad in ([99], [-1], [0.5]):
            with pytest.raises(ValueError, match="targets"):
                run_chains(attack, bad, ENV, steps=2, progress=False)
