"""P2I (jaxinv.attacks.p2i, jaxinv.training.encoder, jaxinv.workflows.p2i, `jaxinv p2i`) on
sklearn digits: a tiny GAN on the public half, a target and an evaluator on the private half,
an embedding network on classes 5-9."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxinv import cli, data, oracles
from jaxinv.attacks import p2i as P
from jaxinv.models import apply_logits
from jaxinv.models.encoder import PredictionEncoder, encoder_fn, random_encoder
from jaxinv.models.gan import decoder
from jaxinv.training.classifier import fit, load_classifier
from jaxinv.training.encoder import load_encoder, train_encoder
from jaxinv.training.gan import public_images, train_gan
from jaxinv.workflows.p2i import collect, p2i

N_SAMPLES = 1500
ARGS = {"n_samples": N_SAMPLES, "steps": 150, "width": 8, "kind": "mlp", "samples": 4,
        "train_per_class": 20, "batch_size": 32}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("p2i")
    x, y = data.load("digits", "train")
    gan = train_gan(data.subset(x, y, "sample:0.5", "public").x, root / "gan", steps=200,
                    n_critic=2, width=8, critic_width=8, progress=False, checkpoint_every=200,
                    grid_every=200, meta={"dataset": "digits", "public": "sample:0.5"})
    fit("digits", "cnn", root / "target", epochs=6, split="sample:0.5", progress=False)
    fit("digits", "mlp", root / "eval", epochs=15, split="sample:0.5", progress=False)
    fit("digits", "mlp", root / "embed", epochs=10, split="classes:5-9", progress=False)
    return root, gan


@pytest.fixture(scope="module")
def run(models, tmp_path_factory):
    """One `jaxinv p2i` run through the CLI."""
    root, _ = models
    out = tmp_path_factory.mktemp("p2i_run") / "run"
    mp = pytest.MonkeyPatch()
    mp.setenv("JAXINV_NO_COMPILATION_CACHE", "1")
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in ARGS.items() if k != "kind"]
    code = cli.main(["p2i", "--target", str(root / "target"), "--generator", str(root / "gan"),
                     "--embed-model", str(root / "embed"), "--eval-model", str(root / "eval"),
                     "--dataset", "digits", "--public", "sample:0.5", "--out", str(out),
                     "--encoder", ARGS["kind"], *flags])
    mp.undo()
    assert code == 0
    return out, json.loads((out / "results.json").read_text())


def test_shift_is_mass_preserving_and_leaves_confident_predictions_alone():
    p = jax.nn.softmax(3 * jax.random.normal(jax.random.key(0), (256, 6)), -1)
    k = jax.random.randint(jax.random.key(1), (256,), 0, 6)
    q = jax.jit(jax.vmap(P.shift_prediction))(p, k)
    p, k, q = np.asarray(p), np.asarray(k), np.asarray(q)  # checks on the host: no compiles
    rows = np.arange(256)
    pk, qk = p[rows, k], q[rows, k]
    low = pk < P.THRESHOLD
    assert 10 < int(low.sum()) < 256  # both cases occur
    np.testing.assert_allclose(q.sum(-1), 1.0, atol=1e-6)
    np.testing.assert_allclose(qk[low], pk[low] + P.DELTA, atol=1e-6)
    assert (q >= 0).all()  # threshold = 1 - delta keeps every entry non-negative
    others = np.ones((256, 6), bool)
    others[rows, k] = False
    scale = np.broadcast_to((1 - P.DELTA / (1 - pk))[:, None], p.shape)  # others scaled alike
    np.testing.assert_allclose(q[others & low[:, None]], (p * scale)[others & low[:, None]],
                               rtol=1e-4, atol=1e-9)
    assert (q[~low] == p[~low]).all()  # confident: untouched
    # the ensemble weights are p'_k: a toy linear "encoder" makes the average checkable
    p_top = p[:5]
    z = jax.jit(lambda pt: P.aligned_ensemble(lambda e, v: v @ e, jnp.eye(6), pt, 2))(p_top)
    p2 = p_top[:, 2:3]
    q5 = np.where(p2 < P.THRESHOLD, p_top * (1 - P.DELTA / (1 - p2)), p_top)  # in NumPy
    q5[:, 2] = np.where(p2[:, 0] < P.THRESHOLD, p2[:, 0] + P.DELTA, p2[:, 0])
    want = (q5[:, 2:3] * np.log(q5)).sum(0) / q5[:, 2].sum()
    np.testing.assert_allclose(z, want, rtol=1e-5)


def test_select_top_subsets_and_pairs():
    p = np.asarray(jax.nn.softmax(jax.random.normal(jax.random.key(2), (100, 4)), -1))
    idx = np.asarray(P.select_top(jnp.asarray(p), 7))
    np.testing.assert_array_equal(idx, np.argsort(-p, 0)[:7].T)
    pairs = P.collect_pairs(np.arange(100 * 3.0).reshape(100, 3), p, np.zeros((100, 8, 8, 1)),
                            p, per_class=7)
    assert pairs.p_syn.shape == (28, 4) and pairs.z_syn.shape == (28, 3)
    np.testing.assert_array_equal(pairs.z_syn[:, 0] / 3, idx.reshape(-1))  # latents follow
    assert P.default_per_class(20_000, 5) == 400 and P.default_per_class(50, 10) == 10
    w = np.asarray(P.subset_weights(jax.random.key(0), 5, 10))
    assert (w[0] == 1).all() and (w[1:].sum(1) == 5).all() and len({tuple(r) for r in w}) > 2
    with pytest.raises(ValueError, match="select_top: n must be"):
        P.select_top(jnp.asarray(p), 101)


def test_query_counts_are_exact(models):
    root, gan = models
    target = load_classifier(root / "target")
    rows = []
    count = lambda n: rows.append(int(n))
    base = oracles.score(apply_logits(target.module))

    def query(key, env, x):
        jax.debug.callback(count, x.shape[0])
        return base.query(key, env, x)

    counting = oracles.Oracle("score", query, base.logits)
    env = {"target": target.variables, "G": gan.variables["G"]}
    _, p = jax.jit(lambda k: P.query_generator(counting, decoder(gan.generator), k, env, 37,
                                               100, batch=8))(jax.random.key(0))
    jax.block_until_ready(p)
    assert sum(rows) == 37 and sorted(rows) == [5, 8, 8, 8, 8] and p.shape == (37, 10)
    x = public_images("digits", "sample:0.5")[:23]
    rows.clear()
    p_pub = jax.jit(lambda k, xs: P.query_images(counting, k, target.variables, xs, batch=10))(
        jax.random.key(1), jnp.asarray(x))
    jax.block_until_ready(p_pub)
    assert sum(rows) == 23
    np.testing.assert_allclose(p_pub, jax.nn.softmax(target.logits(x)), atol=1e-5)


def test_cli_run_writes_results_and_counts_queries(run):
    out, rec = run
    m = rec["metrics"]
    n_public = len(public_images("digits", "sample:0.5"))
    assert m["queries_total"] == N_SAMPLES + n_public and m["queries_attack"] == 0
    assert (m["queries_synthetic"], m["queries_public"]) == (N_SAMPLES, n_public)
    assert m["pairs"] == {"synthetic": 200, "public": 200, "train_per_class": 20,
                          "per_class_synthetic": 20, "per_class_public": 20}
    arrays = np.load(out / "reconstructions.npz")
    assert arrays["x"].shape == (10, ARGS["samples"], 8, 8, 1) and list(arrays["y"]) == list(
        range(10))
    assert arrays["ensemble_index"].shape == (10, P.ENSEMBLE_N)
    assert (out / "grid.png").exists() and rec["attack"] == "p2i"
    for key in ("wall_s", "query_s", "encoder_train_s", "attack_s"):
        assert rec["timing"][key] >= 0


def test_encoder_loss_falls(run):
    curve = run[1]["metrics"]["encoder"]["curve"]
    assert curve["step"][-1] == ARGS["steps"]
    assert curve["loss"][-1] < curve["loss"][0], curve["loss"]
    for part in ("image", "id"):  # the terms a latent cannot fully fix fall the most
        assert curve[part][-1] < 0.9 * curve[part][0], (part, curve[part])


def test_attack_beats_random_latents(run):
    m = run[1]["metrics"]
    print({k: m[k] for k in ("attack_acc_top1", "attack_acc_top1_ensemble", "init_acc_top1",
                             "target_confidence", "init_target_confidence")})
    assert m["attack_acc_top1"] > m["init_acc_top1"] + 0.2
    assert m["target_confidence"] > m["init_target_confidence"]
    assert m["chains_failed"] == 0


def test_rerun_reuses_pairs_and_encoder(models, run):
    root, _ = models
    out, rec = run
    again = p2i(root / "target", root / "gan", root / "embed", root / "eval", out,
                dataset="digits", public="sample:0.5", progress=False, **ARGS)
    m = again["metrics"]
    assert m["queries_reused"] and again["timing"]["query_s"] == 0.0
    assert m["queries_total"] == rec["metrics"]["queries_total"]  # made once, reported
    assert m["encoder"]["curve"] == rec["metrics"]["encoder"]["curve"]  # no new step
    assert m["attack_acc_top1"] == rec["metrics"]["attack_acc_top1"]
    enc = load_encoder(out / "encoder")
    assert enc.meta["steps"] == ARGS["steps"] and enc.meta["kind"] == "mlp"
    with pytest.raises(ValueError, match="other settings"):
        collect(None, None, np.zeros((1, 8, 8, 1)), out, {"n_samples": 7}, n_samples=7,
                train_per_class=None, defense="", query_batch=8, seed=0)


def test_bad_inputs(models, tmp_path):
    root, gan = models
    dirs = [root / "target", root / "gan", root / "embed", root / "eval"]
    kw = {"dataset": "digits", "public": "sample:0.5", "progress": False}
    with pytest.raises(FileNotFoundError, match="generator: no GAN in"):
        p2i(dirs[0], tmp_path / "nothing", dirs[2], dirs[3], tmp_path / "o", **kw)
    with pytest.raises(FileNotFoundError, match="embedding network: no trained model"):
        p2i(dirs[0], dirs[1], tmp_path / "nothing", dirs[3], tmp_path / "o", **kw)
    with pytest.raises(ValueError, match="never the evaluation classifier"):
        p2i(dirs[0], dirs[1], dirs[3], dirs[3], tmp_path / "o", **kw)
    with pytest.raises(ValueError, match="P2I is black-box"):
        p2i(dirs[0], dirs[1], dirs[0], dirs[3], tmp_path / "o", **kw)
    enc = random_encoder(10, (8, 8, 1), kind="mlp", width=4)
    p5 = jax.nn.softmax(jax.random.normal(jax.random.key(0), (20, 5)))
    with pytest.raises(ValueError, match="10-class predictions, the public predictions have 5"):
        P.p2i_attack(enc, gan, p5, [0])
    with pytest.raises(ValueError, match="ensemble_n"):
        P.p2i_attack(enc, gan, jnp.ones((4, 10)) / 10, [0], ensemble_n=5)
    with pytest.raises(ValueError, match="Encoder: expects probability vectors"):
        enc.encode(p5)
    pairs = P.Pairs(np.full((4, 10), 0.1), np.zeros((4, 100)), np.full((4, 5), 0.2),
                    np.zeros((4, 8, 8, 1)))
    embed = load_classifier(dirs[2])
    with pytest.raises(ValueError, match="one K"):
        train_encoder(pairs, gan, embed, tmp_path / "e", steps=1, progress=False)
    with pytest.raises(ValueError, match="kind must be one of"):
        PredictionEncoder((8, 8, 1), kind="resnet").init(jax.random.key(0), jnp.zeros((1, 3)))
    assert encoder_fn(enc.module) is encoder_fn(enc.module)
