"""The sample-level generative framework: fine-tuning the GAN prior with an entropy loss and
natural-gradient steps (jaxinv.training.finetune), on sklearn digits with a tiny GAN."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxinv import cli, data
from jaxinv.models import Classifier, create, init_variables
from jaxinv.models.gan import decoder
from jaxinv.training.classifier import fit, load_classifier
from jaxinv.training.finetune import (
    finetune_env,
    finetune_gan,
    make_finetune_step,
    ngd_diagonal,
    per_example_loss,
    sample_stats,
)
from jaxinv.training.gan import load_gan, train_gan
from jaxinv.training.step import init_state

CLASSES = [0, 1, 2, 3, 4]
# one setting for every fine-tuning run below: the jitted step compiles once
SETTINGS = {"batch_size": 32, "lr": 1e-3, "checkpoint_every": 10, "grid_every": 20,
            "progress": False}
STEPS = 40


def small_target(arch="mlp"):
    """An untrained digits-shaped classifier: cheap to compile, enough for exact-math tests."""
    module = create(arch, 10, hidden=(32,)) if arch == "mlp" else create(arch, 10)
    return Classifier(module, init_variables(module, (8, 8, 1), seed=1),
                      {"num_classes": 10, "input_shape": [8, 8, 1]})


def assert_trees_equal(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(u, v)


@pytest.fixture(scope="module")
def prior(tmp_path_factory):
    """A tiny GAN on the public half of digits and a target CNN on the private half."""
    root = tmp_path_factory.mktemp("finetune")
    x, y = data.load("digits", "train")
    train_gan(data.subset(x, y, "sample:0.5", "public").x, root / "gan", steps=60, width=8,
              n_critic=2, progress=False, checkpoint_every=60, grid_every=60)
    fit("digits", "cnn", root / "target", split="sample:0.5", epochs=5, progress=False)
    return root, load_gan(root / "gan"), load_classifier(root / "target")


@pytest.fixture(scope="module")
def tuned(prior):
    """A straight fine-tuning run of STEPS steps."""
    root, gan, target = prior
    out = finetune_gan(gan, target, CLASSES, root / "tuned", steps=STEPS, **SETTINGS)
    return root / "tuned", out


def test_finetune_makes_target_confident_and_keeps_coverage(prior, tuned):
    _, gan, target = prior
    _, out = tuned
    stats = out.meta["finetune_stats"]
    before, after = stats["before"], stats["after"]
    assert before == sample_stats(gan, target, CLASSES, seed=2)  # the prior, on the same z
    assert after["objective"] < before["objective"] - 0.1
    assert after["confidence"] > before["confidence"] + 0.05
    assert after["in_classes"] > before["in_classes"]  # the target sees attacked classes
    # all attacked classes stay covered: the mean prediction keeps a high entropy
    assert after["coverage"] >= before["coverage"] and after["coverage_entropy"] > 0.85
    curve = np.array(out.meta["finetune_curves"]["objective"])
    assert out.meta["finetune_curves"]["step"] == list(range(10, STEPS + 1, 10))
    assert curve[-1] < curve[0]
    assert out.meta["finetune_settings"]["ngd"] is True
    # the critic is copied unchanged, the generator moved
    assert_trees_equal(out.variables["D"], gan.variables["D"])
    moved = jax.tree.map(lambda a, b: jnp.max(jnp.abs(a - b)), out.variables["G"]["params"],
                         gan.variables["G"]["params"])
    assert min(float(v) for v in jax.tree.leaves(moved)) > 0


def test_load_gan_reads_the_finetuned_dir(prior, tuned):
    _, gan, target = prior
    workdir, out = tuned
    back = load_gan(workdir)
    assert_trees_equal(back.variables, out.variables)
    m = back.meta
    assert m["out_shape"] == gan.meta["out_shape"] and m["z_dim"] == gan.meta["z_dim"]
    assert m["finetune_classes"] == CLASSES
    assert m["finetuned_from"]["steps"] == gan.meta["steps"]
    assert m["finetune_target"]["dataset"] == "digits"
    assert m["finetune_target"]["num_classes"] == target.meta["num_classes"]
    x = jax.vmap(decoder(back.generator), (0, None))(jnp.zeros((2, 100)), back.variables["G"])
    assert x.shape == (2, 8, 8, 1)
    assert (workdir / "samples" / "step_000000.png").exists()
    assert (workdir / "samples" / f"step_{STEPS:06d}.png").exists()
    json.loads((workdir / "gan.json").read_text())  # strict JSON


def test_resume_equals_straight_run(prior, tuned, tmp_path):
    _, gan, target = prior
    _, straight = tuned
    finetune_gan(gan, target, CLASSES, tmp_path, steps=STEPS // 2, **SETTINGS)
    resumed = finetune_gan(gan, target, CLASSES, tmp_path, steps=STEPS, **SETTINGS)
    assert_trees_equal(resumed.variables, straight.variables)
    assert resumed.meta["finetune_curves"] == straight.meta["finetune_curves"]
    with pytest.raises(ValueError, match="other settings"):
        finetune_gan(gan, target, CLASSES, tmp_path, steps=STEPS, **{**SETTINGS, "seed": 1})


def test_ngd_diagonal_is_g_over_fisher_plus_damping():
    lr, damping, decay = 0.5, 0.1, 0.9
    tx = ngd_diagonal(lr, damping, decay)
    g1, f1 = {"w": jnp.array([1.0, -2.0, 0.5])}, {"w": jnp.array([0.2, 4.0, 0.0])}
    g2, f2 = {"w": jnp.array([0.3, 1.0, -1.0])}, {"w": jnp.array([1.0, 0.5, 2.0])}
    update = jax.jit(tx.update)
    state = tx.init(g1)
    u1, state = update(g1, state, fisher=f1)
    # the first step's bias-corrected estimate is the sample itself
    np.testing.assert_allclose(u1["w"], -lr * g1["w"] / (f1["w"] + damping), rtol=1e-6)
    u2, state = update(g2, state, fisher=f2)
    f_hat = (decay * (1 - decay) * f1["w"] + (1 - decay) * f2["w"]) / (1 - decay ** 2)
    np.testing.assert_allclose(u2["w"], -lr * g2["w"] / (f_hat + damping), rtol=1e-6)
    assert int(state.count) == 2
    # pure: the same inputs give identical outputs, the input state is not consumed
    s0 = tx.init(g1)
    a, sa = update(g1, s0, fisher=f1)
    b, sb = update(g1, s0, fisher=f1)
    np.testing.assert_array_equal(a["w"], b["w"])
    np.testing.assert_array_equal(sa.fisher["w"], sb.fisher["w"])
    # momentum: heavy ball on the natural gradient
    txm = ngd_diagonal(lr, damping, 0.0, momentum=0.5)
    m1, sm = txm.update(g1, txm.init(g1), fisher=f1)
    m2, _ = txm.update(g1, sm, fisher=f1)
    np.testing.assert_allclose(m2["w"], 1.5 * m1["w"], rtol=1e-6)
    with pytest.raises(ValueError, match="fisher"):
        tx.update(g1, tx.init(g1))
    with pytest.raises(ValueError, match="damping"):
        ngd_diagonal(0.1, damping=0.0)


def test_per_example_losses_average_to_the_batch_objective(prior):
    """Mean of the per-example gradients == gradient of the batch objective
    ``mean H(p_i) - H(mean p) - rw * mean D``, so the Fisher uses the true gradient pieces."""
    gan, target = prior[1], small_target()
    ew, dw, rw = 0.7, 1.3, 0.2
    f = per_example_loss(gan, target, CLASSES, entropy_weight=ew, diversity_weight=dw,
                         realism_weight=rw)
    env = finetune_env(gan, target)
    z = jax.random.normal(jax.random.key(1), (16, 100))
    params = gan.variables["G"]["params"]

    def probs(p):
        x = gan.generator.apply({"params": p, **env["g_rest"]}, z)
        return jax.nn.softmax(target.apply_logits(target.variables, x)[:, jnp.array(CLASSES)])

    def batch_objective(p):
        x = gan.generator.apply({"params": p, **env["g_rest"]}, z)
        q = probs(p)
        h = -jnp.sum(q * jnp.log(q), -1)
        mean_q = jnp.mean(q, 0)
        return (ew * jnp.mean(h) + dw * jnp.sum(mean_q * jnp.log(mean_q))
                - rw * jnp.mean(gan.critic.apply(gan.variables["D"], x)))

    log_pbar = jnp.log(jnp.mean(probs(params), 0))
    per_example = jax.vmap(jax.value_and_grad(lambda p, zi: f(p, env, zi, log_pbar)[0]),
                           (None, 0))
    values, grads = jax.jit(per_example)(params, z)
    value, want = jax.jit(jax.value_and_grad(batch_objective))(params)
    np.testing.assert_allclose(jnp.mean(values), value, rtol=1e-5)
    for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(jnp.mean(a, 0), b, rtol=1e-3, atol=1e-6)


@pytest.mark.parametrize("ngd", [True, False])
def test_step_is_pure_and_keeps_shapes(prior, ngd):
    gan, target = prior[1], small_target("softmax")
    step, tx = make_finetune_step(gan, target, [1, 7], batch_size=8, ngd=ngd,
                                  anchor_weight=0.1)
    g = gan.variables["G"]
    state, env, key = init_state(g, tx), finetune_env(gan, target), jax.random.key(0)
    jstep = jax.jit(step)
    a, ma = jstep(state, env, g["params"], key)
    b, mb = jstep(state, env, g["params"], key)
    assert_trees_equal((a, ma), (b, mb))
    assert jax.tree.structure(a) == jax.tree.structure(state)
    for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(state), strict=True):
        assert u.shape == v.shape and u.dtype == v.dtype
    assert all(np.isfinite(float(v)) for v in ma.values())
    assert isinstance(a.opt_state, tuple) and int(a.step) == 1
    if not ngd:  # the ablation is plain Adam
        assert isinstance(a.opt_state[0], optax.ScaleByAdamState)


def test_bad_inputs_give_one_line_errors(prior, tmp_path):
    root, gan, target = prior
    cases = [
        (gan, [3, 12], "out of range for the target's 10 classes"),
        (gan, [4], ">= 2 distinct"),
        (gan, [1, 1, 2], ">= 2 distinct"),
        (gan._replace(meta={**gan.meta, "out_shape": [12, 12, 1]}), CLASSES,
         "generator outputs [12, 12, 1] images but the target takes [8, 8, 1]"),
    ]
    for g, classes, msg in cases:
        with pytest.raises(ValueError) as e:
            finetune_gan(g, target, classes, tmp_path / "x", steps=1, progress=False)
        assert msg in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(ValueError, match="prior's own directory"):
        finetune_gan(gan, target, CLASSES, root / "gan", steps=1, source=root / "gan")
    with pytest.raises(ValueError, match="loss weights"):
        finetune_gan(gan, target, CLASSES, tmp_path / "x", realism_weight=-1.0)


def test_cli(prior, tuned, tmp_path, capsys, monkeypatch):
    root, _, _ = prior
    monkeypatch.setenv("JAXINV_NO_COMPILATION_CACHE", "1")
    argv = ["finetune-gan", "--generator", str(root / "gan"), "--target", str(root / "target"),
            "--classes", "0-4", "--workdir", str(tmp_path / "g2"), "--steps", "20",
            "--batch-size", "32", "--lr", "1e-3", "--checkpoint-every", "10", "--grid-every", "20"]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "confidence" in out and "--generator" in out
    meta = load_gan(tmp_path / "g2").meta
    assert meta["finetuned_from"]["dir"] == str(root / "gan")
    # the first 20 steps of the straight run (same settings): the same generator
    assert meta["finetune_curves"]["objective"] == (
        tuned[1].meta["finetune_curves"]["objective"][:2])
    bad = [*argv[:5], "--classes", "0-11", *argv[7:]]
    assert cli.main(bad) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "out of range" in err
