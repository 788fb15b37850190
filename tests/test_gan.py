"""The GAN prior: pure steps, checkpoints and resume, sample grids, loading, the CLI, and
the public/private splits it is trained on."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxinv import data
from jaxinv.cli import main
from jaxinv.core.compiler import compiler_options
from jaxinv.models.gan import Generator, critic_fn, decoder, pixel_shuffle, random_gan
from jaxinv.training.gan import load_gan, make_iteration, public_images, train_gan
from jaxinv.training.step import init_state

KW = dict(width=4, critic_width=4, batch_size=16, lr=2e-3, progress=False)


@pytest.fixture(scope="module")
def public():
    return public_images("digits", "sample:0.5")


def test_iteration_is_pure_and_trains_both_networks(public):
    gan = random_gan((8, 8, 1), width=4)
    it, tx = make_iteration(gan.generator, gan.critic, batch_size=8, n_critic=3, gp=10.0,
                            lr=1e-3, b1=0.5, b2=0.999, z_dim=100)
    g, d = init_state(gan.variables["G"], tx), init_state(gan.variables["D"], tx)
    f = jax.jit(it, compiler_options=compiler_options())  # the steps' XLA options
    a = f(g, d, jnp.asarray(public), jax.random.key(1))
    b = f(g, d, jnp.asarray(public), jax.random.key(1))
    for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(u, v)  # same inputs, same outputs
    stepwise = it(g, d, jnp.asarray(public), jax.random.key(1))  # a call per step
    for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(stepwise), strict=True):
        np.testing.assert_allclose(u, v, rtol=1e-4, atol=1e-6)
    g2, d2, m = a
    assert int(g2.step) == 1 and int(d2.step) == 3
    moved = lambda s0, s1: any(not np.allclose(p, q) for p, q in
                               zip(jax.tree.leaves(s0.params), jax.tree.leaves(s1.params),
                                   strict=True))
    assert moved(g, g2) and moved(d, d2)
    assert set(m) == {"d_loss", "wasserstein", "gp", "g_loss"}
    assert all(np.isfinite(float(v)) for v in m.values())


def test_training_separates_real_from_noise_and_writes_grids(public, tmp_path):
    gan = train_gan(public, tmp_path, steps=120, grid_every=60, **KW)
    assert sorted(p.name for p in (tmp_path / "samples").iterdir()) == [
        "step_000060.png", "step_000120.png"]
    x = np.asarray(gan.sample(jax.random.key(0), 256))
    assert x.shape == (256, 8, 8, 1) and 0 <= x.min() and x.max() <= 1
    # the mean sample moved from the untrained generator's grey blur to the data's mean image
    x0 = np.asarray(random_gan((8, 8, 1), width=4).sample(jax.random.key(0), 256))
    gap = lambda s: np.sqrt(np.sum((s.mean(0) - public.mean(0)) ** 2))
    assert gap(x) < 0.3 * gap(x0)
    meta = json.loads((tmp_path / "gan.json").read_text())
    assert meta["steps"] == 120 and meta["images_per_s"] > 0 and meta["n_public"] == len(public)


def test_resume_equals_a_straight_run(public, tmp_path):
    straight = train_gan(public, tmp_path / "a", steps=6, checkpoint_every=3, **KW)
    train_gan(public, tmp_path / "b", steps=3, checkpoint_every=3, **KW)
    resumed = train_gan(public, tmp_path / "b", steps=6, checkpoint_every=3, **KW)
    for u, v in zip(jax.tree.leaves(straight.variables), jax.tree.leaves(resumed.variables),
                    strict=True):
        np.testing.assert_allclose(u, v, rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="other settings"):
        train_gan(public, tmp_path / "b", steps=8, **{**KW, "width": 8})
    with pytest.raises(ValueError, match="other settings"):  # other data
        train_gan(public[:-1], tmp_path / "b", steps=8, **KW)


def test_load_gan_round_trip_and_errors(public, tmp_path):
    gan = train_gan(public, tmp_path / "g", steps=2, **KW)
    back = load_gan(tmp_path / "g")
    z = jnp.ones(100)
    np.testing.assert_allclose(decoder(back.generator)(z, back.variables["G"]),
                               decoder(gan.generator)(z, gan.variables["G"]), atol=1e-6)
    assert critic_fn(back.critic)(back.variables["D"], jnp.zeros((8, 8, 1))).shape == ()
    with pytest.raises(FileNotFoundError, match="no GAN in"):
        load_gan(tmp_path / "missing")
    for leaf in (tmp_path / "g" / "variables").rglob("*"):
        if leaf.is_file() and leaf.stat().st_size > 100:
            leaf.write_bytes(b"garbage")
    with pytest.raises(ValueError, match="damaged"):
        load_gan(tmp_path / "g")


def test_bad_inputs_are_named(tmp_path):
    with pytest.raises(ValueError, match="multiples of 4"):
        train_gan(np.zeros((8, 6, 6, 1), np.float32), tmp_path, steps=1, **KW)
    with pytest.raises(ValueError, match=r"\[N, H, W, C\]"):
        train_gan(np.zeros((8, 8, 8), np.float32), tmp_path, steps=1, **KW)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        train_gan(np.full((8, 8, 8, 1), np.nan, np.float32), tmp_path, steps=1, **KW)
    with pytest.raises(ValueError, match="multiples of 4"):
        Generator((6, 6, 1)).init(jax.random.key(0), jnp.zeros((1, 100)))


def test_pixel_shuffle_is_depth_to_space():
    x = jnp.arange(2 * 3 * 3 * 8.0).reshape(2, 3, 3, 8)
    y = pixel_shuffle(x)
    assert y.shape == (2, 6, 6, 2)
    for i, j, di, dj, c in ((0, 0, 0, 1, 1), (2, 1, 1, 0, 0), (1, 2, 1, 1, 1)):
        assert y[1, 2 * i + di, 2 * j + dj, c] == x[1, i, j, (2 * di + dj) * 2 + c]


def test_splits():
    x, y = data.load("digits", "train")
    pub = data.subset(x, y, "classes:5-9", "public")
    assert set(pub.y.tolist()) == {5, 6, 7, 8, 9}
    priv, pub = data.subset(x, y, "sample:0.5", "private"), data.subset(x, y, "sample:0.5",
                                                                        "public")
    assert len(priv.y) + len(pub.y) == len(y)
    assert not {a.tobytes() for a in priv.x} & {a.tobytes() for a in pub.x}
    assert data.parse_classes("0-2,7") == [0, 1, 2, 7]
    for bad in ("classes:x", "sample:2", "halves:1", "classes:"):
        with pytest.raises(ValueError):
            data.subset(x, y, bad)


def test_fit_on_a_protocol_side(tmp_path):
    from jaxinv.training import fit

    clf = fit("digits", "softmax", tmp_path / "a", epochs=1, split="classes:0-4",
              progress=False)
    assert clf.meta["num_classes"] == 5 and clf.meta["split"] == "classes:0-4"
    pub = fit("digits", "softmax", tmp_path / "b", epochs=1, split="sample:0.5",
              side="public", progress=False)
    assert pub.meta["side"] == "public"


def test_train_gan_cli(tmp_path, capsys):
    assert main(["train-gan", "--dataset", "digits", "--public", "classes:5-9", "--workdir",
                 str(tmp_path / "g"), "--steps", "2", "--width", "4", "--critic-width", "4",
                 "--batch-size", "8"]) == 0
    assert "GAN trained on" in capsys.readouterr().out
    assert load_gan(tmp_path / "g").meta["public"] == "classes:5-9"
    assert main(["train-gan", "--dataset", "digits", "--public", "colors:1", "--workdir",
                 str(tmp_path / "h"), "--steps", "1"]) == 2
    assert "unknown split" in capsys.readouterr().err


def test_critic_im2col_on_cpu_equals_nn_conv_elsewhere(monkeypatch):
    """Values and input gradients: CPU im2col (first layer by one convolution), GMI's
    per-image score (slices), ``nn.Conv`` on other backends."""
    import jaxinv.models.gan as gan_module
    x = jax.random.uniform(jax.random.key(0), (4, 28, 28, 1))
    critic = gan_module.Critic(width=8)
    v = critic.init(jax.random.key(1), x)
    input_grad = jax.grad(lambda x: critic.apply(v, x).sum())  # the gradient penalty's
    on_cpu, grad_cpu = critic.apply(v, x), input_grad(x)
    one = gan_module.critic_fn(critic)  # GMI's per-image score: slices, not one convolution
    np.testing.assert_allclose(jax.vmap(one, (None, 0))(v, x), on_cpu, rtol=1e-5, atol=1e-6)
    monkeypatch.setattr(gan_module.jax, "default_backend", lambda: "gpu")
    v_other = critic.init(jax.random.key(1), x)  # nn.Conv: same names, shapes and init
    for a, b in zip(jax.tree.leaves(v), jax.tree.leaves(v_other), strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(critic.apply(v, x), on_cpu, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(input_grad(x), grad_cpu, rtol=1e-4, atol=1e-6)
