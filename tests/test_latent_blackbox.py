"""Score-based (zo) and label-only black-box attacks in a GAN prior's latent space: the
kernels run unchanged with ``decode = G``; query counts stay exact in-process and over
HTTP; latent defaults, options and errors."""

import json

import numpy as np
import pytest

from jaxinv import data
from jaxinv.attacks import REGISTRY
from jaxinv.cli import main
from jaxinv.core import run_remote
from jaxinv.training.classifier import load_classifier
from jaxinv.training.gan import train_gan
from jaxinv.workflows.invert import build_blackbox, invert

ATTACKS = [("zo", {"queries_per_step": 6}, 7), ("label-only", {"spheres": 6}, 7)]


@pytest.fixture(scope="module")
def prior(tmp_path_factory):
    """A GAN prior on the public half of digits (barely trained: these tests count, they
    do not judge image quality) and its directory."""
    root = tmp_path_factory.mktemp("latent")
    x, y = data.load("digits", "train")
    gan = train_gan(data.subset(x, y, "sample:0.5", "public").x, root / "gan", steps=2,
                    width=4, critic_width=4, n_critic=1, batch_size=16, progress=False)
    return gan, root / "gan"


@pytest.fixture(scope="module")
def gan_dir(prior):
    return prior[1]


@pytest.mark.parametrize("attack,options,per_step", ATTACKS)
def test_latent_attack_counts_every_query(models, gan_dir, tmp_path, attack, options,
                                          per_step):
    rec = invert(attack, models / "target", models / "evaluator", tmp_path, chains=2,
                 steps=4, classes=[1, 7], options=options, generator=gan_dir, unroll=1,
                 progress=False)
    m = rec["metrics"]
    assert m["queries_total"] == 2 * 2 * 4 * per_step  # classes * chains * steps * (N + 1)
    assert m["queries_per_chain"] == 4 * per_step
    cfg = rec["config"]
    assert cfg["generator"] == str(gan_dir.absolute())
    assert cfg["generator_meta"]["out_shape"] == [8, 8, 1]
    assert cfg["options"] == options  # what the user gave; the latent defaults beside it
    assert cfg["latent_defaults"] == json.loads(json.dumps(REGISTRY[attack].latent))
    x = np.load(tmp_path / "reconstructions.npz")["x"]
    assert x.shape == (2, 2, 8, 8, 1) and 0 <= x.min() and x.max() <= 1  # G's images


def test_latent_kernels_search_z_and_user_options_win(prior):
    gan = prior[0]
    zo = build_blackbox("zo", (8, 8, 1), 10, {"box": (-2.0, 2.0)}, gan)
    assert zo.config["z_shape"] == [100] and zo.config["box"] == [-2.0, 2.0]
    assert zo.config["init_range"] == [-1.0, 1.0]  # the latent default
    bb = build_blackbox("label-only", (8, 8, 1), 10, {}, gan)
    assert (bb.config["start"], bb.config["radius"], bb.config["box"]) == (
        "normal", 2.0, [-1.5, 1.5])
    pixel = build_blackbox("label-only", (8, 8, 1), 10, {})
    assert pixel.config["z_shape"] is None and pixel.config["box"] == [0.0, 1.0]


@pytest.mark.parametrize("attack,options,per_step", ATTACKS)
def test_remote_latent_attack_matches_the_oracles_count(models, prior, attack, options,
                                                        per_step):
    """run_remote with the generator in env: the oracle counts what it answers."""
    import jax

    clf, gan = load_classifier(models / "target"), prior[0]
    answered = []

    def oracle(x):
        answered.append(len(x))
        return np.asarray(jax.nn.softmax(clf.logits(x)))

    bb = build_blackbox(attack, (8, 8, 1), 3, options, gan)
    res = run_remote(bb, oracle, [2, 5], chains=2, steps=3, env=gan.variables["G"],
                     progress=False)
    assert sum(answered) == int(res.state.queries.sum()) == 2 * 2 * 3 * per_step
    assert res.timing["queries_sent"] == sum(answered)


def test_latent_attack_over_http_equals_in_process(models, gan_dir, tmp_path):
    from jaxinv.http.client import HTTPOracle
    from jaxinv.http.serve import make_app, start_server

    url, stop = start_server(make_app(load_classifier(models / "target")))
    try:
        common = ["--eval-model", str(models / "evaluator"), "--chains", "2", "--steps", "3",
                  "--classes", "3", "--queries-per-step", "6", "--generator", str(gan_dir)]
        assert main(["attack", "zo", "--remote", url, "--out", str(tmp_path / "r"),
                     *common]) == 0
        served = HTTPOracle(url).stats()["queries_total"]
    finally:
        stop()
    assert main(["attack", "zo", "--target", str(models / "target"), "--out",
                 str(tmp_path / "l"), *common]) == 0
    r, loc = (json.loads((tmp_path / d / "results.json").read_text()) for d in ("r", "l"))
    assert r["metrics"]["queries_total"] == served == loc["metrics"]["queries_total"] == 42
    assert r["config"]["generator"] == loc["config"]["generator"] == str(gan_dir.absolute())
    xr, xl = (np.load(tmp_path / d / "reconstructions.npz")["x"] for d in ("r", "l"))
    np.testing.assert_allclose(xr, xl, atol=1e-4)


def test_latent_errors_are_clear(models, gan_dir, tmp_path, capsys):
    args = ["attack", "label-only", "--target", str(models / "target"), "--eval-model",
            str(models / "evaluator"), "--out", str(tmp_path / "o"), "--steps", "1"]
    assert main([*args, "--generator", str(tmp_path / "nosuch")]) == 2
    err = capsys.readouterr().err
    assert "generator: no GAN in" in err and "nosuch" in err and "train-gan" in err
    assert main(["attack", "mi-face", *args[2:], "--generator", str(gan_dir)]) == 2
    assert "pixel space" in capsys.readouterr().err
    with pytest.raises(ValueError, match="generator must be one of"):
        from jaxinv.attacks import register

        register("x", build_blackbox, "score", generator="sometimes")
