"""GMI in a GAN prior's latent space on digits: kernel, works-test, selection, CLI, errors.

A small WGAN-GP prior is trained on the public half of digits (``sample:0.5``), the target
(cnn) and the evaluator (mlp) on the private half.
"""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxinv import data
from jaxinv.attacks import gmi, gmi_env, stops
from jaxinv.cli import main
from jaxinv.core import run_chains
from jaxinv.training import fit, load_classifier
from jaxinv.training.gan import train_gan
from jaxinv.workflows.invert import invert, load_generator

SHAPE = (8, 8, 1)


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """GAN prior (public half), target and evaluator (private half)."""
    root = tmp_path_factory.mktemp("gmi")
    x, y = data.load("digits", "train")
    public = data.subset(x, y, "sample:0.5", "public")
    gan = train_gan(public.x, root / "gan", steps=300, width=8, critic_width=8, n_critic=2,
                    batch_size=32, progress=False)
    fit("digits", "cnn", root / "target", epochs=8, split="sample:0.5", progress=False)
    fit("digits", "mlp", root / "evaluator", epochs=20, split="sample:0.5", progress=False)
    return root, gan


@pytest.fixture(scope="module")
def toy(work):
    """A linear 3-class target on 8x8 images and the GAN prior (kernel tests)."""
    w = jax.random.normal(jax.random.key(1), (64, 3)) * 0.1
    return (lambda env, x: x.reshape(len(x), -1) @ env), w, work[1]


def test_kernel_keeps_shapes_is_pure_and_clips_the_latent(toy):
    f, w, gan = toy
    attack = gmi(f, SHAPE, generator=gan.generator, critic=gan.critic, lr=0.5, clip=0.3,
                 stop=stops.max_steps(2))  # an extra stop rule, composed with max_steps
    env = gmi_env(w, gan)
    init, step = jax.jit(attack.init), jax.jit(attack.step)
    s0 = init(jax.random.key(0), 2, env)
    assert s0.z.shape == (100,) and s0.x.shape == SHAPE and s0.loss.dtype == jnp.float32
    assert float(jnp.abs(s0.z).max()) > 0.3  # z0 ~ N(0, I), not yet projected
    s1, info = step(jax.random.key(1), s0, 2, env)
    again, _ = step(jax.random.key(1), s0, 2, env)  # pure: same inputs, same outputs
    assert all(jax.tree.leaves(jax.tree.map(lambda a, b: bool(jnp.all(a == b)), s1, again)))
    assert jax.tree.map(lambda a: (a.shape, a.dtype), s0) == jax.tree.map(
        lambda a: (a.shape, a.dtype), s1)
    assert float(jnp.abs(s1.z).max()) <= 0.3 + 1e-6  # projected to [-clip, clip]
    assert float(jnp.abs(s1.z - s0.z).max()) > 0  # it moved
    assert set(info.aux) == {"confidence", "logit", "critic"}
    logits = f(w, s1.x[None])[0]
    np.testing.assert_allclose(float(info.aux["logit"]), float(logits[2]), rtol=1e-5)
    np.testing.assert_allclose(float(info.aux["confidence"]),
                               float(jax.nn.softmax(logits)[2]), rtol=1e-5)
    assert not bool(s1.done) and bool(step(jax.random.key(2), s1, 2, env)[0].done)


def test_cost_is_prior_plus_lambda_cross_entropy(toy):
    from jaxinv.models.gan import critic_fn

    f, w, gan = toy
    env = gmi_env(w, gan)

    @jax.jit
    def start(lam):  # lam may be traced: a sweep axis
        attack = gmi(f, SHAPE, generator=gan.generator, critic=gan.critic, lam=lam)
        s = attack.init(jax.random.key(0), 1, env)
        d = critic_fn(gan.critic)(gan.variables["D"], s.x)
        return s.loss, -d + lam * -jax.nn.log_softmax(f(w, s.x[None])[0])[1]

    for lam in (0.0, 100.0):
        loss, expected = start(jnp.float32(lam))
        np.testing.assert_allclose(float(loss), float(expected), rtol=1e-5)


def test_gmi_beats_the_priors_random_samples(work, tmp_path):
    work = work[0]
    rec = invert("gmi", work / "target", work / "evaluator", tmp_path, chains=4, steps=100,
                 generator=work / "gan", unroll=1, progress=False)
    m = rec["metrics"]
    # x_init = G(z0), z0 ~ N(0, I): the prior's random samples, labelled with the class
    assert m["init_acc_top1"] < 0.3
    assert m["attack_acc_top1"] > m["init_acc_top1"] + 0.4
    assert m["attack_acc_top1_selected"] >= m["init_acc_top1"] + 0.4
    assert 0 <= m["attack_acc_top1_selected"] <= m["attack_acc_top5_selected"] <= 1
    z = np.load(tmp_path / "reconstructions.npz")
    target = load_classifier(work / "target")
    conf = lambda x: np.asarray(jax.nn.softmax(target.logits(x.reshape(-1, *SHAPE)))).reshape(
        *x.shape[:2], -1)[np.arange(10), :, np.arange(10)]
    assert conf(z["x"]).mean() > conf(z["x_init"]).mean() + 0.3  # target confidence rises
    assert m["target_confidence"] == pytest.approx(conf(z["x"]).mean(), abs=1e-4)
    # per class, the selected restart is the one with the highest target logit
    logits = np.asarray(target.logits(z["x"].reshape(-1, *SHAPE))).reshape(10, 4, -1)
    assert z["selected"].tolist() == logits[np.arange(10), :, np.arange(10)].argmax(1).tolist()
    assert z["curve_logit"].shape == (100, 10)
    assert rec["config"]["generator"] == str((work / "gan").absolute())
    assert rec["config"]["generator_meta"]["out_shape"] == list(SHAPE)


def test_cli_gmi_writes_the_selected_metrics(work, tmp_path, capsys):
    work = work[0]
    out = tmp_path / "run"
    args = ["attack", "gmi", "--target", str(work / "target"), "--eval-model",
            str(work / "evaluator"), "--out", str(out), "--chains", "2", "--steps", "3",
            "--classes", "1,7", "--lam", "50"]
    assert main([*args, "--generator", str(work / "gan")]) == 0
    rec = json.loads((out / "results.json").read_text())
    for key in ("attack_acc_top1", "attack_acc_top1_selected", "attack_acc_top5_selected",
                "init_acc_top1", "target_confidence"):
        assert key in rec["metrics"]
    assert "top1_selected" in rec["metrics"]["per_class"]["7"]
    assert rec["config"]["options"] == {"lam": 50.0}
    assert rec["config"]["generator_meta"]["z_dim"] == 100
    z = np.load(out / "reconstructions.npz")
    assert z["selected"].shape == (2,) and z["x"].shape == (2, 2, *SHAPE)
    assert "attack_acc_top1_selected" in capsys.readouterr().out
    assert main(args) == 2  # no --generator
    assert "latent space: give a generator" in capsys.readouterr().err


def test_bad_generators_are_clear_errors(work, toy, tmp_path):
    work = work[0]
    common = dict(chains=1, steps=1, progress=False)
    with pytest.raises(ValueError, match="gmi attacks in a GAN prior's latent space"):
        invert("gmi", work / "target", work / "evaluator", tmp_path / "a", **common)
    with pytest.raises(FileNotFoundError, match=r"^generator: no GAN in .*nosuch"):
        invert("gmi", work / "target", work / "evaluator", tmp_path / "b",
               generator=tmp_path / "nosuch", **common)
    with pytest.raises(ValueError, match="mi-face attacks in pixel space"):
        invert("mi-face", work / "target", work / "evaluator", tmp_path / "c",
               generator=work / "gan", **common)
    # the 8x8 GAN against a target of 12x12 images (digits, padded)
    pad = lambda a: np.pad(a, ((0, 0), (2, 2), (2, 2), (0, 0)))
    (xa, ya), (xb, yb) = data.load("digits", "train"), data.load("digits", "test")
    np.savez(tmp_path / "d12.npz", x_train=pad(xa), y_train=ya, x_test=pad(xb), y_test=yb)
    fit(str(tmp_path / "d12.npz"), "softmax", tmp_path / "t12", epochs=1, progress=False)
    with pytest.raises(ValueError, match=r"outputs images of shape \(8, 8, 1\) but the "
                       r"target takes \(12, 12, 1\)"):
        invert("gmi", tmp_path / "t12", tmp_path / "t12", tmp_path / "d",
               generator=work / "gan", **common)
    with pytest.raises(ValueError, match=r"\(8, 8, 1\) but the target takes \(28, 28, 1\)"):
        load_generator(work / "gan", (28, 28, 1))
    # the kernel's own check, before any work
    f, w, gan = toy
    attack = gmi(f, (12, 12, 1), generator=gan.generator, critic=gan.critic)
    with pytest.raises(ValueError, match=r"outputs images of shape \(8, 8, 1\) but the "
                       r"target takes \(12, 12, 1\)"):
        run_chains(attack, [0], gmi_env(w, gan), steps=1, progress=False)
    attack = gmi(f, SHAPE, generator=gan.generator, critic=gan.critic, z_dim=32)
    with pytest.raises(ValueError, match="latents of size 32"):
        run_chains(attack, [0], gmi_env(w, gan), steps=1, progress=False)
    with pytest.raises(ValueError, match="GMIEnv"):
        run_chains(attack, [0], w, steps=1, progress=False)
    with pytest.raises(ValueError, match="momentum"):
        gmi(f, SHAPE, generator=gan.generator, critic=gan.critic, momentum=1.5)
