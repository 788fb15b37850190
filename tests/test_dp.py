"""DP-SGD: clipping, noise on the sum, Poisson batches, accounting against dp-accounting
called directly, bad parameters, and fit(dp=...) / jaxinv train --dp-epsilon end to end."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

pytest.importorskip("dp_accounting")
import dp_accounting

from jaxinv.cli import main
from jaxinv.training import dp as DP
from jaxinv.training.classifier import fit


def _loss(params, ex):
    x, y = ex
    return jnp.sum((x @ params["w"] + params["b"] - y) ** 2)


def test_clipping_bounds_every_per_example_gradient():
    rng = np.random.default_rng(0)
    params = {"w": jnp.asarray(rng.normal(size=(5, 3)), jnp.float32), "b": jnp.zeros(3)}
    x = jnp.asarray(rng.normal(size=(16, 5)) * np.arange(1, 17)[:, None], jnp.float32)
    y = jnp.zeros((16, 3))
    for i in range(16):  # one example at a time: its clipped gradient has norm <= C
        g, _ = DP.private_grad(_loss, params, (x, y), jnp.eye(16)[i], jax.random.key(0),
                               clip=0.5, noise_multiplier=0.0, expected_batch=1.0)
        norm = float(jnp.sqrt(sum(jnp.sum(v ** 2) for v in jax.tree.leaves(g))))
        assert norm <= 0.5 + 1e-5
    g, clipped = DP.private_grad(_loss, params, (x, y), jnp.ones(16), jax.random.key(0),
                                 clip=0.5, noise_multiplier=0.0, expected_batch=16.0)
    assert int(clipped) == 16  # all raw norms exceed 0.5 here
    norm = float(jnp.sqrt(sum(jnp.sum(v ** 2) for v in jax.tree.leaves(g))))
    assert norm <= 0.5 + 1e-5  # the mean of vectors of norm <= C


@pytest.mark.parametrize("microbatch", [1, 3, 16])
def test_microbatches_give_the_same_clipped_sum(microbatch):
    rng = np.random.default_rng(1)
    params = {"w": jnp.asarray(rng.normal(size=(5, 3)), jnp.float32), "b": jnp.ones(3)}
    x = jnp.asarray(rng.normal(size=(16, 5)) * np.arange(1, 17)[:, None], jnp.float32)
    batch, w = (x, jnp.zeros((16, 3))), jnp.ones(16).at[11:].set(0.0)  # 5 padding slots
    kw = dict(clip=2.0, noise_multiplier=0.0, expected_batch=11.0)
    whole, n_whole = DP.private_grad(_loss, params, batch, w, jax.random.key(0), **kw)
    parts, n_parts = DP.private_grad(_loss, params, batch, w, jax.random.key(0),
                                     microbatch=microbatch, **kw)
    for a, b in zip(jax.tree.leaves(whole), jax.tree.leaves(parts), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert int(n_whole) == int(n_parts) > 0


@pytest.mark.parametrize("microbatch", [1, None])
def test_patch_weight_grads_give_the_same_clipped_sum(microbatch):
    from jaxinv.models import create, init_variables
    from jaxinv.training.step import classifier_loss
    module = create("cnn", 3)
    params = init_variables(module, (16, 16, 1), 0)["params"]  # both convs: lax path
    loss = classifier_loss(module)
    per_ex = lambda p, ex: loss(p, {}, (ex[0][None], ex[1][None]), jax.random.key(0))[0][0]
    x = jax.random.normal(jax.random.key(1), (6, 16, 16, 1))
    batch, kw = (x, jnp.arange(6) % 3), dict(clip=0.05, noise_multiplier=0.0,
                                             expected_batch=6.0, microbatch=microbatch)
    ref, n_ref = DP.private_grad(per_ex, params, batch, jnp.ones(6), jax.random.key(0),
                                 patch_grads=False, **kw)
    got, n_got = DP.private_grad(per_ex, params, batch, jnp.ones(6), jax.random.key(0),
                                 patch_grads=True, **kw)
    for a, b in zip(jax.tree.leaves(ref), jax.tree.leaves(got), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-7)
    assert int(n_ref) == int(n_got) > 0
    assert float(jnp.abs(ref["Conv_1"]["kernel"]).max()) > 0  # the conv gradients compared


def test_microbatch_setting_is_checked_and_auto_splits_only_big_gradients():
    sigma = {"noise_multiplier": 1.0}  # no calibration needed here
    assert DP.setting(sigma, 1000, 50, 1)[0].microbatch == "auto"
    assert DP.setting({**sigma, "microbatch": "all"}, 1000, 50, 1)[0].microbatch is None
    assert DP.setting({**sigma, "microbatch": 4}, 1000, 50, 1)[0].microbatch == 4
    with pytest.raises(ValueError, match="microbatch must be"):
        DP.setting({**sigma, "microbatch": 0}, 1000, 50, 1)
    cpu = jax.default_backend() == "cpu"
    assert DP.auto_microbatch(DP.AUTO_FLOATS, 2) == (1 if cpu else None)
    assert DP.auto_microbatch(DP.AUTO_FLOATS, 1) is None


def test_noise_is_added_to_the_sum_with_std_sigma_times_clip():
    params = {"w": jnp.zeros((4, 1)), "b": jnp.zeros(1)}
    batch = (jnp.zeros((8, 4)), jnp.zeros((8, 1)))  # zero gradients: only noise remains
    draws = [DP.private_grad(_loss, params, batch, jnp.ones(8), jax.random.key(s), clip=2.0,
                             noise_multiplier=1.5, expected_batch=8.0)[0]["w"]
             for s in range(200)]
    sd = float(np.std(np.stack(draws)))
    assert sd == pytest.approx(1.5 * 2.0 / 8.0, rel=0.1)  # (sum + N(0, (sC)^2)) / B


def test_padding_examples_contribute_nothing():
    params = {"w": jnp.ones((2, 1)), "b": jnp.zeros(1)}
    x, y = jnp.ones((4, 2)), jnp.zeros((4, 1))
    w = jnp.array([1.0, 1.0, 0.0, 0.0])
    g, _ = DP.private_grad(_loss, params, (x, y), w, jax.random.key(0), clip=100.0,
                           noise_multiplier=0.0, expected_batch=1.0)
    g2, _ = DP.private_grad(_loss, params, (x[:2], y[:2]), jnp.ones(2), jax.random.key(0),
                            clip=100.0, noise_multiplier=0.0, expected_batch=1.0)
    np.testing.assert_allclose(g["w"], g2["w"], rtol=1e-6)


def test_poisson_batches_have_the_sampling_rate():
    counts = [int(DP.poisson_batch(jax.random.key(s), 2000, 0.05, 200)[2]) for s in range(50)]
    assert np.mean(counts) == pytest.approx(100, rel=0.05)
    idx, w, c = DP.poisson_batch(jax.random.key(0), 2000, 0.05, 200)
    assert len(set(np.asarray(idx)[np.asarray(w) > 0].tolist())) == int(c)  # distinct


@pytest.mark.parametrize("accountant", ["pld", "rdp"])
def test_accounting_matches_dp_accounting_called_directly(accountant):
    q, steps, delta = 0.01, 1000, 1e-5
    sigma = DP.calibrate(3.0, delta, q, steps, accountant)
    acc = (dp_accounting.pld.PLDAccountant() if accountant == "pld"
           else dp_accounting.rdp.RdpAccountant())
    event = dp_accounting.SelfComposedDpEvent(dp_accounting.PoissonSampledDpEvent(
        q, dp_accounting.GaussianDpEvent(sigma)), steps)
    eps = acc.compose(event).get_epsilon(delta)
    assert eps == pytest.approx(DP.epsilon_spent(sigma, q, steps, delta, accountant))
    assert 2.9 < eps <= 3.0 + 1e-6  # calibrated to the target, not far below it
    assert DP.epsilon_spent(sigma * 1.2, q, steps, delta, accountant) < eps


@pytest.mark.parametrize("call, match", [
    (lambda: DP.check(0.0, 1e-5), "epsilon must be > 0"),
    (lambda: DP.check(-1.0, 1e-5), "epsilon must be > 0"),
    (lambda: DP.check(1.0, 1.0), "delta must lie in"),
    (lambda: DP.check(1.0, 0.0), "delta must lie in"),
    (lambda: DP.check(1.0, 1e-5, 1.5), "sampling rate"),
    (lambda: DP.calibrate(1.0, 1e-5, 0.01, 0), "steps must be"),
    (lambda: DP.epsilon_spent(1.0, 0.01, 10, 1e-5, "moments"), "unknown accountant"),
    (lambda: DP.setting({"epsilon": 1.0, "clip": 0.0}, 100, 10, 1), "clip must be"),
    (lambda: DP.setting({"epsilon": 1.0, "sigma": 1.0}, 100, 10, 1), "unknown settings"),
    (lambda: DP.setting({"delta": 1e-5}, 100, 10, 1), "give epsilon"),
])
def test_bad_dp_parameters_are_clear_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_fit_with_dp_records_the_guarantee_and_dp_costs_accuracy(tmp_path):
    plain = fit("digits", "softmax", tmp_path / "plain", epochs=10, progress=False)
    private = fit("digits", "softmax", tmp_path / "dp", epochs=10, progress=False,
                  dp={"epsilon": 1.0, "delta": 1e-5})
    g = json.loads((tmp_path / "dp" / "model.json").read_text())["dp"]
    assert g["epsilon"] <= 1.0 and g["epsilon_rdp"] >= g["epsilon"] - 1e-6
    meta = json.loads((tmp_path / "dp" / "model.json").read_text())
    n = round(meta["batch_size"] / g["sampling_rate"])  # the training-set size
    assert g["sampling"] == "poisson" and g["steps"] == 10 * (n // meta["batch_size"])
    assert g["epsilon"] == pytest.approx(DP.epsilon_spent(
        g["noise_multiplier"], g["sampling_rate"], g["steps"], 1e-5, "pld"))
    # measured: softmax on digits 0.93 without DP; at epsilon 1 it drops but beats chance
    assert 0.2 < private.meta["test_accuracy"] < plain.meta["test_accuracy"]
    with pytest.raises(ValueError, match="batch norm"):
        fit("digits", "resnet", tmp_path / "bn", epochs=1, progress=False,
            dp={"epsilon": 1.0})


def test_cli_train_dp(tmp_path, capsys):
    assert main(["train", "--dataset", "digits", "--arch", "softmax", "--epochs", "2",
                 "--workdir", str(tmp_path / "m"), "--dp-epsilon", "3"]) == 0
    out = capsys.readouterr().out
    assert "DP-SGD: (" in out and "-DP by pld" in out
    assert json.loads((tmp_path / "m" / "model.json").read_text())["dp"]["epsilon"] <= 3.0
    assert main(["train", "--dataset", "digits", "--arch", "softmax", "--epochs", "2",
                 "--workdir", str(tmp_path / "bad"), "--dp-epsilon", "-1"]) == 2
    err = capsys.readouterr().err.strip()
    assert "epsilon must be > 0" in err and "\n" not in err


def test_fit_many_dp_respects_masks_and_records_the_guarantee():
    from jaxinv import data
    from jaxinv.models import create
    from jaxinv.training.many import fit_many

    x, y = data.load("digits", "train")
    x, y = x[:600], y[:600]
    masks = np.stack([y < 5, y >= 5])  # model 0 sees digits 0-4 only, model 1 digits 5-9
    res = fit_many(create("softmax", 10), x, y, seeds=[0, 1], masks=masks, epochs=8,
                   batch_size=30, lr=0.05, progress=False,
                   dp={"noise_multiplier": 0.5, "delta": 1e-5})
    logits = np.stack([np.asarray(create("softmax", 10).apply(
        jax.tree.map(lambda a, m=m: a[m], res.variables), x)[0]) for m in range(2)])
    pred = logits.argmax(-1)
    assert (pred[0] < 5).mean() > 0.95 and (pred[1] >= 5).mean() > 0.95
    g, steps = res.dp, 8 * -(-int(masks.sum(1).max()) // 30)
    q = 30 / masks.sum(1).min()  # the largest sampling rate is accounted for
    assert g["steps"] == steps and g["sampling_rate"] == pytest.approx(q)
    assert g["epsilon"] == pytest.approx(DP.epsilon_spent(0.5, q, steps, 1e-5, "pld"))
    with pytest.raises(ValueError, match="sampling rate"):
        fit_many(create("softmax", 10), x, y, seeds=[0, 1], masks=masks, epochs=1,
                 batch_size=400, progress=False, dp={"epsilon": 1.0})


def test_membership_cli_trains_with_dp(tmp_path, capsys):
    out = tmp_path / "mia"
    assert main(["membership", "--out", str(out), "--examples", "60", "--models", "4",
                 "--epochs", "1", "--batch-size", "10", "--dp-epsilon", "8"]) == 0
    rec = json.loads((out / "results.json").read_text())
    assert rec["dp"]["epsilon"] <= 8.0 and rec["config"]["dp"]["epsilon"] == 8.0
    assert 0.0 <= rec["metrics"]["lira_online"]["auc"] <= 1.0
