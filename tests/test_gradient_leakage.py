"""Gradient leakage (DLG, iDLG, Inverting Gradients): the federated oracle against plain
``jax.grad`` and hand-run SGD, the analytic label rule, the update defenses, the im2col
convolution against ``lax.conv``, the reconstruction metrics, and the workflow (recovery
vs a random baseline, flagged NaN victims, run directory, CLI, resume, bad inputs), on
sklearn digits (8x8) and tiny random inputs.

The workflow runs share one shape (8 victims of 1 image, 40 iDLG steps) so that XLA
compiles the attack once per session; reruns hit the compilation cache.
"""

import functools
import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxinv import data
from jaxinv.attacks.gradient_matching import (
    Victim,
    batch_labels,
    gradient_matching,
    head_update,
    idlg,
    label_from_update,
)
from jaxinv.cli import main
from jaxinv.core import run_chains
from jaxinv.evaluation.report import write_report
from jaxinv.federated import (
    check_update_tree,
    client_update,
    fedavg,
    finite_victims,
    shared_updates,
)
from jaxinv.federated import defenses as D
from jaxinv.metrics import reconstruction as R
from jaxinv.models import Classifier, apply_logits, create
from jaxinv.models.layers import conv2d_patches
from jaxinv.workflows import gradient_leakage as GL
from jaxinv.workflows.gradient_leakage import gradient_leakage, victim_batches

# every iDLG workflow run below: one compiled attack for the whole file
IDLG = dict(attack="idlg", dataset="digits", victims=8, steps=40, progress=False)


@functools.cache
def lenet(shape=(8, 8, 1), seed=0):
    """DLG's LeNet at initialisation for ``shape`` images: ``(apply_fn, variables)``."""
    m = create("dlg-lenet", 10)
    return apply_logits(m), jax.jit(m.init)(jax.random.key(seed), jnp.zeros((1, *shape)))


# jitted (the oracle is differentiated op by op otherwise: slow on CPU)
update = jax.jit(client_update, static_argnums=0, static_argnames="local_steps")


def reference_loss(f, variables, x, y):
    """Mean integer-label cross-entropy, written independently of the oracle."""
    logits = f(variables, x)
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, y))


def close(a, b, rtol=1e-5, atol=1e-6):
    """Two pytrees of the same structure are elementwise close."""
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(u), np.asarray(v), rtol=rtol, atol=atol)


def strict_json(path):
    """Parse ``path`` as strict JSON: NaN/Infinity are errors."""
    def refuse(c):
        raise ValueError(f"non-finite constant {c} in {path}")
    return json.loads(path.read_text(), parse_constant=refuse)


@pytest.fixture(scope="module")
def digits():
    return data.load("digits")


@pytest.fixture(scope="module")
def idlg_run(tmp_path_factory):
    """One iDLG run on 8 digits victims, with the driver's result (for ``x_init``)."""
    out = tmp_path_factory.mktemp("idlg") / "run"
    seen = {}
    orig = GL.run_chains
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(GL, "run_chains", lambda *a, **kw: seen.setdefault("res", orig(*a, **kw)))
        rec = gradient_leakage(out, **IDLG)
    return out, rec, seen["res"]


# ---------------------------------------------------------------------------- 1. oracle


def tiny(v, x):
    """A two-layer model with a non-trainable collection (cheap to compile)."""
    h = jnp.tanh(x.reshape(len(x), -1) @ v["params"]["w1"] * v["consts"]["scale"])
    return h @ v["params"]["w2"] + v["params"]["b"]


def tiny_variables(seed=0):
    k1, k2, k3 = jax.random.split(jax.random.key(seed), 3)
    return {"params": {"w1": jax.random.normal(k1, (64, 16)) / 8,
                       "w2": jax.random.normal(k2, (16, 10)),
                       "b": 0.1 * jax.random.normal(k3, (10,))},
            "consts": {"scale": jnp.float32(1.5)}}


def tiny_grad(v, x, y):
    """``jax.grad`` of the mean cross-entropy of ``tiny``, written independently."""
    rest = {"consts": v["consts"]}
    return jax.grad(lambda p: reference_loss(tiny, {"params": p, **rest}, x, y))(v["params"])


@pytest.mark.parametrize("batch", [1, 4])
def test_oracle_is_grad_of_mean_cross_entropy(batch):
    v = tiny_variables()
    x = jax.random.uniform(jax.random.key(batch), (batch, 8, 8, 1))
    y = jnp.arange(batch, dtype=jnp.int32) * 2 + 1
    want = jax.jit(tiny_grad)(v, x, y)
    got = update(tiny, v, x, y)
    assert sorted(got) == ["b", "w1", "w2"]  # the params only, not the "consts" collection
    close(got, want)
    # soft labels: one-hot rows give the same gradient, a distribution its own
    close(update(tiny, v, x, jax.nn.one_hot(y, 10)), want)
    q = jax.nn.softmax(jax.random.normal(jax.random.key(9), (batch, 10)))
    soft = jax.jit(jax.grad(lambda p: -jnp.mean(jnp.sum(
        q * jax.nn.log_softmax(tiny({"params": p, "consts": v["consts"]}, x)), -1))))
    close(update(tiny, v, x, q), soft(v["params"]))
    assert float(jnp.abs(want["w2"]).max()) > 1e-3  # not trivially zero


def test_shared_updates_is_per_victim_client_update():
    v = tiny_variables()
    x = np.asarray(jax.random.uniform(jax.random.key(3), (3, 2, 8, 8, 1)))
    y = np.array([[0, 1], [2, 3], [9, 9]])
    for steps in (0, 2):
        got, ok = shared_updates(tiny, v, x, y, local_steps=steps, lr=0.1)
        assert ok.tolist() == [True] * 3
        assert all(isinstance(a, np.ndarray) for a in jax.tree.leaves(got))
        for i in range(3):
            one = update(tiny, v, x[i], y[i], local_steps=steps, lr=0.1)
            close(jax.tree.map(lambda a, i=i: a[i], got), one, rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="x \\[V, B, H, W, C\\]"):
        shared_updates(tiny, v, x[0], y[0])
    with pytest.raises(ValueError, match="local_steps must be >= 0"):
        shared_updates(tiny, v, x, y, local_steps=-1)


def test_fedavg_update_is_k_manual_sgd_steps():
    v = tiny_variables()
    x = jax.random.uniform(jax.random.key(5), (4, 8, 8, 1))
    y = jnp.array([1, 4, 7, 8])
    k, lr = 3, 0.5
    grad = jax.jit(lambda p: tiny_grad({**v, "params": p}, x, y))
    p = v["params"]
    for _ in range(k):
        p = jax.tree.map(lambda a, g: a - lr * g, p, grad(p))
    want = jax.tree.map(jnp.subtract, v["params"], p)
    got = update(tiny, v, x, y, local_steps=k, lr=lr)
    close(got, want, rtol=1e-4, atol=1e-6)
    close(update(tiny, v, x, y, local_steps=1, lr=lr),
          jax.tree.map(lambda g: lr * g, grad(v["params"])), rtol=1e-4, atol=1e-6)
    # and it is not just k times the first gradient (the steps really are sequential)
    naive = jax.tree.map(lambda g: k * lr * g, grad(v["params"]))
    diff = max(float(jnp.abs(a - b).max()) for a, b in zip(jax.tree.leaves(got),
                                                           jax.tree.leaves(naive), strict=True))
    assert diff > 1e-3


# ------------------------------------------------------------------------ 2. label rule


def test_label_rule_on_hand_made_last_layer_gradient():
    rng = np.random.default_rng(0)
    feats = rng.uniform(0.1, 1.0, (3, 6))  # non-negative features (sigmoid/ReLU outputs)
    logits = rng.normal(size=(3, 5))
    p = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    for y in ([2], [0, 3, 4]):
        b = len(y)
        grad = feats[:b].T @ (p[:b] - np.eye(5)[y]) / b  # d mean-CE / d kernel [F, K]
        update = {"Conv_0": {"kernel": jnp.ones((5, 5, 1, 5))},  # a 4-D leaf is never the head
                  "Dense_0": {"bias": jnp.zeros(5), "kernel": jnp.asarray(grad)}}
        assert head_update(update, 5).shape == (6, 5)
        assert batch_labels(update, 5, b).tolist() == sorted(y)
        if b == 1:
            assert int(label_from_update(update, 5)) == y[0]
    with pytest.raises(ValueError, match="no 2-D last-layer kernel with 7 columns"):
        head_update({"k": jnp.zeros((3, 5))}, 7)


def test_label_rule_on_real_lenet_updates(digits):
    x_all, y_all = digits
    f, v = lenet()
    first = [int(np.flatnonzero(y_all == c)[0]) for c in range(10)]
    upd, ok = shared_updates(f, v, x_all[first][:, None], y_all[first][:, None])
    assert ok.all()
    one = jax.vmap(lambda u: label_from_update(u, 10))(upd)
    assert np.asarray(one).tolist() == list(range(10))  # all 10 classes at batch 1
    got = jax.vmap(lambda u: batch_labels(u, 10, 1))(upd)
    assert np.asarray(got)[:, 0].tolist() == list(range(10))


def lenet_batches(digits, victims=16, batch=4):
    """Real dlg-lenet updates of batches of distinct digits, the rule's labels, the truth
    and whether the rule's sufficient condition holds for every label of a batch: a true
    class c (of image i0) has a negative column sum iff sum_i p_ic S_i < S_i0 (S_i: the
    sum of image i's non-negative features; other columns are always positive)."""
    x_all, y_all = digits
    m = create("dlg-lenet", 10)
    _, v = lenet()
    idx = victim_batches(y_all, victims, batch, seed=1)
    x, y = x_all[idx], y_all[idx]
    upd, _ = shared_updates(apply_logits(m), v, x, y)
    got = np.asarray(jax.vmap(lambda u: batch_labels(u, 10, batch))(upd))
    logits, feats = jax.jit(jax.vmap(lambda xb: m.apply(v, xb)))(x)
    p, s = np.asarray(jax.nn.softmax(logits)), np.asarray(feats).sum(-1)  # [V, B, K], [V, B]
    col = np.einsum("vbk,vb->vk", p, s)
    cond = np.array([all(col[i, c] < s[i, j] for j, c in enumerate(y[i]))
                     for i in range(victims)])
    return got, np.sort(y, -1), cond


def test_batch_label_rule_is_exact_when_its_condition_holds(digits):
    got, truth, cond = lenet_batches(digits)
    exact = (got == truth).all(1)
    assert cond.sum() >= 8  # not vacuous (measured: 13 of 16 batches)
    assert exact[cond].all()
    assert (got == truth).mean() >= 0.9  # measured 60 of 64 labels over all 16 batches


# -------------------------------------------------------------------- 3. recovery works


def test_idlg_recovers_victims_far_above_random_baseline(idlg_run, digits):
    out, rec, res = idlg_run
    m = rec["metrics"]
    arrays = np.load(out / "reconstructions.npz")
    truth = arrays["victims"]
    assert truth.shape == (8, 1, 8, 8, 1) and m["steps_run"] == 40
    assert m["label_accuracy"] == 1.0
    # measured 8/8 exact (MSE < 1e-3; 7/8 with linesearch=False); a random or initial
    # image is never exact
    assert m["exact_recovery_rate"] >= 0.75
    start = R.per_image(res.x_init[:, 0], truth)  # the attack's own dummy images
    rand = R.per_image(np.random.default_rng(0).uniform(size=truth.shape), truth)
    after = R.per_image(arrays["x"], truth)
    assert not start["exact"].any() and not rand["exact"].any()
    assert R.summarize(start)["exact_recovery_rate"] == 0.0
    assert m["exact_recovery_rate"] == pytest.approx(after["exact"].mean())
    assert np.all(after["mse"] < start["mse"])  # every victim moved towards its image
    assert np.median(after["psnr"]) > np.median(rand["psnr"]) + 30
    # the stored reconstructions are the driver's best iterates, victims the dataset's images
    np.testing.assert_allclose(arrays["x"], res.best_x[:, 0])
    x_all, y_all = digits
    np.testing.assert_array_equal(truth[:, 0], x_all[arrays["victim_index"][:, 0]])
    np.testing.assert_array_equal(arrays["labels"][:, 0], y_all[arrays["victim_index"][:, 0]])


def test_dlg_with_linesearch_recovers_images_and_labels(tmp_path):
    kw = {"attack": "dlg", "dataset": "digits", "victims": 8, "steps": 40, "linesearch": True,
          "progress": False}
    rec = gradient_leakage(tmp_path / "dlg", **kw)
    m = rec["metrics"]
    assert m["exact_recovery_rate"] >= 0.75  # measured 7/8
    assert m["label_accuracy"] >= 0.75  # labels optimised as soft labels, measured 1.0
    arrays = np.load(tmp_path / "dlg" / "reconstructions.npz")
    assert (arrays["recovered_labels"] == arrays["labels"]).mean() >= 0.75
    rand = R.per_image(np.random.default_rng(1).uniform(size=arrays["victims"].shape),
                       arrays["victims"])
    assert m["psnr_mean"] > float(np.mean(rand["psnr"])) + 25
    # a second attempt for every victim (same shapes: compiled once); the lower loss wins
    twice = gradient_leakage(tmp_path / "twice", retry_above=0.0, **kw)
    b = np.load(tmp_path / "twice" / "reconstructions.npz")
    assert (m["retried_victims"], twice["metrics"]["retried_victims"]) == (0, 8)
    assert np.all(b["best_loss"] <= arrays["best_loss"])
    assert np.any(b["best_loss"] < arrays["best_loss"])
    same = b["best_loss"] == arrays["best_loss"]  # where the first attempt won, it is kept
    np.testing.assert_array_equal(b["x"][same], arrays["x"][same])
    assert not np.array_equal(b["x"][~same], arrays["x"][~same])
    assert (tmp_path / "twice" / "retry" / "chains").is_dir()


@pytest.mark.parametrize("rule", ["backtracking", False])
def test_lbfgs_step_rules_recover_a_victim(rule):
    m = create("dlg-lenet", 10)
    v = m.init(jax.random.key(0), jnp.zeros((1, 8, 8, 1)))
    x = jax.random.uniform(jax.random.key(1), (1, 8, 8, 1))
    y = jnp.array([3])
    target = Victim(client_update(apply_logits(m), v, x, y), y)
    attack = gradient_matching(apply_logits(m), (8, 8, 1), 10, labels="given", linesearch=rule)
    init = attack.init(jax.random.key(2), target, v)
    step = jax.jit(attack.step)
    s = init
    for t in range(40):
        s, _ = step(jax.random.key(t), s, target, v)
    assert float(jnp.mean((s.x - x) ** 2)) < 1e-3 < float(jnp.mean((init.x - x) ** 2))


def test_unknown_lbfgs_step_rule_is_an_error():
    with pytest.raises(ValueError, match="linesearch 'wolfe'"):
        gradient_matching(lambda v, x: x, (8, 8, 1), 10, linesearch="wolfe")


# ----------------------------------------------------------------- 4. NaN victims flagged


def test_finite_victims_and_fedavg_refuse_nan():
    u = {"a": np.ones((3, 2)), "b": {"c": np.ones((3, 2, 2))}}
    u["b"]["c"][1, 0, 1] = np.nan
    assert finite_victims(u).tolist() == [True, False, True]
    u["a"][2, 0] = np.inf
    assert finite_victims(u).tolist() == [True, False, False]
    with pytest.raises(FloatingPointError, match=r"client update\(s\) \[1, 2\]"):
        fedavg(u)
    ok = {"w": np.array([[1.0, 0.0], [3.0, 4.0]])}
    assert fedavg(ok)["w"].tolist() == [2.0, 2.0]
    assert fedavg(ok, np.array([3.0, 1.0]))["w"].tolist() == [1.5, 1.0]


def test_model_with_nan_poisons_every_victim_and_raises(tmp_path, monkeypatch):
    orig = GL.victim_model

    def poisoned(*a, **kw):
        clf = orig(*a, **kw)
        params = jax.tree.map(np.array, clf.variables["params"])  # writable copies
        params["Conv_0"]["kernel"][0, 0, 0, 0] = np.nan
        return Classifier(clf.module, {"params": params}, clf.meta)

    monkeypatch.setattr(GL, "victim_model", poisoned)
    with pytest.raises(FloatingPointError, match="every victim's update is non-finite"):
        gradient_leakage(tmp_path / "nan", **IDLG)
    assert not (tmp_path / "nan").exists()


# the victim's NaN image is drawn into grid.png as it is (numpy warns on the uint8 cast)
@pytest.mark.filterwarnings("ignore:invalid value encountered in cast:RuntimeWarning")
def test_one_nan_victim_is_flagged_not_attacked(tmp_path, monkeypatch, digits):
    x_all, y_all = digits
    bad = 3
    # 9 victims, one broken: the 8 attacked ones have the shape of every other run here
    idx = victim_batches(y_all, 9, 1, seed=0, distinct=False)
    x_bad = x_all.copy()
    x_bad[idx[bad, 0], 2, 5, 0] = np.nan  # one pixel of one victim's image
    monkeypatch.setattr(data, "load", lambda *a, **kw: (x_bad, y_all))
    attacked = {}
    orig = GL.run_chains
    monkeypatch.setattr(GL, "run_chains", lambda kernel, targets, *a, **kw: attacked.setdefault(
        "res", orig(kernel, attacked.setdefault("targets", targets), *a, **kw)))
    out = tmp_path / "one"
    rec = gradient_leakage(out, **{**IDLG, "victims": 9})
    keep = np.delete(np.arange(9), bad)
    np.testing.assert_array_equal(attacked["targets"].labels[:, 0], y_all[idx[keep, 0]])
    m = rec["metrics"]
    assert m["flagged_victims"] == [bad]
    assert m["flagged"] == 1 and m["victims"] == 8
    assert np.isfinite(m["psnr_mean"]) and m["exact_recovery_rate"] >= 0.75
    assert m["per_victim"]["psnr"][bad] is None or not np.isfinite(m["per_victim"]["psnr"][bad])
    arrays = np.load(out / "reconstructions.npz")
    assert arrays["finite"].tolist() == [i != bad for i in range(9)]
    assert arrays["recovered_labels"][bad].tolist() == [-1]
    assert np.isnan(arrays["best_loss"][bad]) and np.isfinite(np.delete(arrays["best_loss"],
                                                                         bad)).all()
    strict_json(out / "results.json")  # NaN scores of the flagged victim are nulls


# -------------------------------------------------------------- 5. update tree mismatches


def test_check_update_tree_names_the_problem():
    params = {"Conv_0": {"kernel": np.zeros((5, 5, 1, 12)), "bias": np.zeros(12)},
              "Dense_0": {"kernel": np.zeros((48, 10)), "bias": np.zeros(10)}}
    good = jax.tree.map(lambda a: np.zeros((2, *a.shape)), params)
    check_update_tree(good, params)
    check_update_tree(params, params, batched=False)
    missing = {"Conv_0": dict(good["Conv_0"]), "Dense_0": {"kernel": good["Dense_0"]["kernel"]}}
    extra = {**good, "Dense_1": {"kernel": np.zeros((2, 3))}}
    wrong = {**good, "Dense_0": {**good["Dense_0"], "kernel": np.zeros((2, 48, 9))}}
    cases = [(missing, r"missing \[\"\['Dense_0'\]\['bias'\]\"\], unexpected \[\]"),
             (extra, r"unexpected \[\"\['Dense_1'\]\['kernel'\]\"\]"),
             (wrong, r"gradient leaf \['Dense_0', 'kernel'\] has shape \(48, 9\) per victim; "
                     r"the model's parameter has \(48, 10\)")]
    for bad, msg in cases:
        with pytest.raises(ValueError, match=msg) as e:
            check_update_tree(bad, params)
        assert "\n" not in str(e.value)


def test_run_chains_refuses_mismatched_victims_before_any_work(tmp_path):
    f, v = lenet()
    y = np.array([[1], [2]], np.int32)
    upd = jax.tree.map(lambda a: np.zeros((2, *a.shape), np.float32), v["params"])
    def no_work(*a):
        raise AssertionError("the kernel ran on targets it should have refused")

    kernel = idlg(f, (8, 8, 1), 10, steps=5)._replace(init=no_work, step=no_work)
    wrong = jax.tree.map(lambda a: a, upd)
    wrong["Dense_0"]["kernel"] = np.zeros((2, 48, 9), np.float32)
    cases = [(Victim(wrong, y), "gradient leaf \\['Dense_0', 'kernel'\\]"),
             (Victim({"Conv_0": upd["Conv_0"]}, y), "does not match the model's parameters"),
             (Victim(upd, np.array([[1, 2], [3, 4]], np.int32)), "labels must be int \\[V, 1\\]"),
             (Victim(upd, np.array([[1], [10]], np.int32)), "out of range 0..9"),
             (Victim(upd, y.astype(np.float32)), "labels must be int"),
             (upd, "targets must be a Victim")]
    for i, (targets, msg) in enumerate(cases):
        work = tmp_path / f"w{i}"
        with pytest.raises(ValueError, match=msg) as e:
            run_chains(kernel, targets, v, steps=5, workdir=work, progress=False)
        assert "\n" not in str(e.value)
        assert not work.exists()  # refused before initialising, running or checkpointing


# ------------------------------------------------------------------------- 6. defenses


def test_prune_zeroes_the_smallest_fraction_of_every_tensor():
    rng = np.random.default_rng(0)
    u = {"a": jnp.asarray(rng.normal(size=(10, 100))),
         "b": jnp.asarray(100 * rng.normal(size=1000))}  # another scale: pruned on its own
    for rate in (0.0, 0.5, 0.9):
        out = D.prune(rate)(None, u)
        for k in u:
            a, o = np.asarray(u[k]).ravel(), np.asarray(out[k]).ravel()
            zero = o == 0
            assert zero.mean() == pytest.approx(rate, abs=0.002)
            np.testing.assert_array_equal(o[~zero], a[~zero])  # kept entries unchanged
            if rate:
                assert np.abs(a[~zero]).min() >= np.abs(a[zero]).max()
    for bad in (-0.1, 1.0):
        with pytest.raises(ValueError, match="prune rate must be in"):
            D.prune(bad)


def test_gaussian_and_clip_and_noise():
    u = {"a": jnp.zeros(200_000), "b": {"c": jnp.full((100, 100), 2.0)}}
    g = D.gaussian(0.3)(jax.random.key(0), u)
    noise = np.concatenate([np.asarray(g["a"]), np.asarray(g["b"]["c"]).ravel() - 2.0])
    assert np.std(noise) == pytest.approx(0.3, rel=0.01)
    assert abs(np.mean(noise)) < 0.005
    assert abs(np.corrcoef(noise[:100_000], noise[100_000:200_000])[0, 1]) < 0.02
    norm = lambda t: float(np.sqrt(sum(np.sum(np.square(a)) for a in jax.tree.leaves(t))))
    clipped = D.clip_and_noise(1.0, 0.0)(jax.random.key(0), u)  # |u| = 200 -> 1
    assert norm(clipped) == pytest.approx(1.0, rel=1e-5)
    np.testing.assert_allclose(clipped["b"]["c"], 2.0 / 200.0, rtol=1e-5)  # a scaling
    small = {"w": jnp.array([0.3, 0.4])}
    np.testing.assert_allclose(D.clip_and_noise(1.0, 0.0)(jax.random.key(0), small)["w"],
                               [0.3, 0.4], rtol=1e-6)  # inside the ball: unchanged
    dp = D.clip_and_noise(0.5, 2.0)(jax.random.key(1), {"w": jnp.zeros(100_000)})
    assert np.std(np.asarray(dp["w"])) == pytest.approx(1.0, rel=0.02)  # std = 2.0 * 0.5
    with pytest.raises(ValueError, match="noise std must be >= 0"):
        D.gaussian(-1.0)
    with pytest.raises(ValueError, match="clip norm must be > 0"):
        D.clip_and_noise(0.0, 1.0)


def test_parse_defense_specs():
    u = {"w": jnp.arange(1.0, 11.0)}
    assert D.parse(None)(None, u) is u and D.parse("none")(None, u) is u
    assert int((np.asarray(D.parse("prune:0.7")(None, u)["w"]) == 0).sum()) == 7
    std = np.std(np.asarray(D.parse("noise:0.5")(jax.random.key(0),
                                                 {"w": jnp.zeros(50_000)})["w"]))
    assert std == pytest.approx(0.5, rel=0.03)
    got = D.parse("dp:1,0")(jax.random.key(0), u)
    assert float(jnp.linalg.norm(got["w"])) == pytest.approx(1.0, rel=1e-5)
    for spec, msg in [("blur:1", "unknown update defense 'blur'"),
                      ("noise", "takes 1 number"), ("dp:1", "takes 2 number"),
                      ("prune:0.1,0.2", "takes 1 number"), ("noise:abc", "must be numbers"),
                      ("noise:-1", "noise std must be >= 0"), ("prune:2", "prune rate")]:
        with pytest.raises(ValueError, match=msg) as e:
            D.parse(spec)
        assert "\n" not in str(e.value)


def test_apply_defense_draws_independent_noise_per_victim():
    u = {"w": np.zeros((4, 5000), np.float32), "b": np.zeros((4, 3), np.float32)}
    out = D.apply_defense(D.gaussian(1.0), u, seed=0)
    w = out["w"]
    assert w.shape == (4, 5000) and isinstance(w, np.ndarray)
    c = np.corrcoef(w)
    assert np.abs(c[~np.eye(4, dtype=bool)]).max() < 0.1  # victims' noise uncorrelated
    np.testing.assert_array_equal(D.apply_defense(D.gaussian(1.0), u, seed=0)["w"], w)
    assert not np.allclose(D.apply_defense(D.gaussian(1.0), u, seed=1)["w"], w)
    pruned = D.apply_defense(D.prune(0.5), {"w": np.array([[1.0, 2.0], [4.0, 3.0]])})
    assert pruned["w"].tolist() == [[0.0, 2.0], [4.0, 0.0]]  # per victim


def test_prune_defense_lowers_recovery(idlg_run, tmp_path):
    # prune, not noise: apply_defense(gaussian) takes ~9 s to compile on XLA:CPU for
    # DLG's LeNet (vmapped threefry over 8 leaves), prune:0.9 well under 1 s
    _, rec, _ = idlg_run
    clean = rec["metrics"]
    pruned = gradient_leakage(tmp_path / "prune", **IDLG, defense="prune:0.9")["metrics"]
    # measured: PSNR 56.3 dB -> 5.6 dB, exact 8/8 -> 0/8 (noise:0.1: 4.3 dB, 0/8)
    assert pruned["psnr_mean"] < clean["psnr_mean"] - 20
    assert pruned["exact_recovery_rate"] < clean["exact_recovery_rate"] - 0.5
    assert pruned["label_accuracy"] == 1.0  # the largest last-layer entries survive
    cfg = strict_json(tmp_path / "prune" / "results.json")["config"]
    assert cfg["defense"] == "prune:0.9"


# ------------------------------------------------------------ 7. im2col convolution


CONV_CASES = [((2, 9, 9, 3), (5, 5, 3, 4), 1, (2, 2)),
              ((1, 8, 8, 1), (5, 5, 1, 12), 2, (2, 2)),  # DLG's LeNet's first layer
              ((2, 7, 6, 2), (3, 5, 2, 3), 2, (0, 2)),
              ((2, 28, 28, 1), (5, 5, 1, 4), 2, "SAME"),  # the WGAN-GP critic's layers
              ((2, 7, 6, 2), (4, 3, 2, 3), 2, "SAME"),
              ((1, 11, 10, 2), (5, 4, 2, 3), 3, (1, 2))]


def lax_conv(x, k, stride, padding):
    pads = padding if padding == "SAME" else [(p, p) for p in padding]
    return jax.lax.conv_general_dilated(x, k, (stride, stride), pads,
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                        precision=jax.lax.Precision.HIGHEST)


@pytest.mark.parametrize("method", ["patches", "space_to_depth", "conv_patches"])
@pytest.mark.parametrize("xs,ks,stride,padding", CONV_CASES)
def test_conv2d_patches_matches_lax_conv_to_second_order(xs, ks, stride, padding, method):
    if method == "space_to_depth" and stride == 1:
        pytest.skip("space_to_depth applies to strided convolutions")
    option = {} if method == "patches" else {method: True}
    kx, kk, kt = jax.random.split(jax.random.key(sum(xs) + stride), 3)
    x = jax.random.uniform(kx, xs)
    k = jax.random.normal(kk, ks)
    target = jax.random.normal(kt, ks)

    @functools.partial(jax.jit, static_argnums=0)
    def derivatives(conv, x, k):
        """The output, d loss/d(x, kernel), and d/dx |d loss/d kernel - target|^2 (DLG)."""
        first = jax.grad(lambda x, k: jnp.sum(jnp.sin(conv(x, k))), argnums=(0, 1))(x, k)

        def match(x):
            g = jax.grad(lambda k: jnp.sum(jax.nn.sigmoid(conv(x, k)) ** 2))(k)
            return jnp.sum((g - target) ** 2)

        return conv(x, k), first, jax.grad(match)(x)

    y, first, second = derivatives(
        lambda x, k: conv2d_patches(x, k, stride, padding, **option), x, k)
    y_r, first_r, second_r = derivatives(lambda x, k: lax_conv(x, k, stride, padding), x, k)
    assert y.shape == y_r.shape
    np.testing.assert_allclose(y, y_r, rtol=1e-4, atol=1e-5)
    for a, b in zip(first, first_r, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
    scale = float(jnp.abs(second_r).max())
    assert scale > 1e-3
    np.testing.assert_allclose(second, second_r, rtol=1e-3, atol=1e-3 * scale)


def test_conv2d_patches_rejects_wrong_channels():
    with pytest.raises(ValueError, match=r"x must be \[N, H, W, 3\]"):
        conv2d_patches(jnp.ones((1, 8, 8, 2)), jnp.ones((3, 3, 3, 4)))


class ConvLeNet(nn.Module):
    """DLG's LeNet with ``nn.Conv`` (PyTorch's ``padding=2``) for the same parameters."""

    @nn.compact
    def __call__(self, x):
        for i, s in enumerate((2, 2, 1)):
            x = nn.sigmoid(nn.Conv(12, (5, 5), s, padding=((2, 2), (2, 2)),
                                   precision=jax.lax.Precision.HIGHEST, name=f"Conv_{i}")(x))
        f = x.reshape(x.shape[0], -1)
        return nn.Dense(10)(f), f


@pytest.mark.parametrize("shape", [(8, 8, 1)])  # the shape of every workflow run here
def test_dlg_lenet_equals_an_nn_conv_reference(shape):
    model, ref = create("dlg-lenet", 10), ConvLeNet()
    _, v = lenet(shape)
    ref_v = jax.eval_shape(ref.init, jax.random.key(0), jnp.zeros((1, *shape)))
    assert jax.tree.map(np.shape, ref_v) == jax.tree.map(np.shape, v)
    x = jax.random.uniform(jax.random.key(1), (2, *shape))
    y = jnp.array([3, 7])

    @functools.partial(jax.jit, static_argnums=0)
    def outputs(module, v, x, y):
        logits, feats = module.apply(v, x)
        return logits, feats, client_update(lambda vv, xx: module.apply(vv, xx)[0], v, x, y)

    (lo, fe, g), (lo_r, fe_r, g_r) = outputs(model, v, x, y), outputs(ref, v, x, y)
    np.testing.assert_allclose(fe, fe_r, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(lo, lo_r, rtol=1e-4, atol=1e-4)
    close(g, g_r, rtol=1e-3, atol=1e-5)
    assert float(jnp.abs(g["Conv_0"]["kernel"]).max()) > 1e-4


# ------------------------------------------------------------------ 8. metrics


def test_match_undoes_a_permutation():
    rng = np.random.default_rng(0)
    truth = rng.uniform(size=(3, 4, 8, 8, 1)).astype(np.float32)
    perms = [rng.permutation(4) for _ in range(3)]
    rec = np.stack([truth[v][p] for v, p in enumerate(perms)]) + 0.01
    assert not np.allclose(rec, truth + 0.01)
    np.testing.assert_allclose(R.match(rec, truth), truth + 0.01, rtol=1e-6)
    np.testing.assert_array_equal(R.match(rec[:, :1], truth[:, :1]), rec[:, :1])  # B = 1
    with pytest.raises(ValueError, match="one shape"):
        R.match(rec, truth[:, :3])
    s = R.per_image(rec, truth)
    assert np.allclose(s["mse"], 1e-4) and s["exact"].all()  # scored after matching


def test_per_image_scores_and_psnr_cap():
    t = np.random.default_rng(1).uniform(0.2, 0.8, (3, 2, 8, 8, 1)).astype(np.float32)
    rec = t + np.array([0.0, 0.1, 0.02])[:, None, None, None, None].astype(np.float32)
    feats = lambda x: x.reshape(len(x), -1)[:, :4]
    s = R.per_image(rec, t, features=feats)
    assert set(s) == {"mse", "psnr", "ssim", "exact", "feature_dist"}
    assert all(a.shape == (3, 2) for a in s.values())
    assert s["psnr"][0].tolist() == [100.0, 100.0]  # identical: capped, not inf
    np.testing.assert_allclose(s["psnr"][1], 20.0, rtol=1e-4)  # MSE 0.01
    np.testing.assert_allclose(s["mse"][2], 4e-4, rtol=1e-3)
    assert s["exact"].tolist() == [[True, True], [False, False], [True, True]]
    np.testing.assert_allclose(s["ssim"][0], 1.0, rtol=1e-5)
    np.testing.assert_allclose(s["feature_dist"][1], 4 * 0.01, rtol=1e-3)
    # a reconstruction outside [0, 1] is clipped for PSNR/SSIM but not for MSE
    over = R.per_image(np.full((1, 1, 8, 8, 1), 3.0), np.ones((1, 1, 8, 8, 1)))
    assert over["mse"][0, 0] == pytest.approx(4.0) and over["psnr"][0, 0] == 100.0


def test_summarize_excludes_flagged_victims():
    s = {"mse": np.array([[0.0, 0.0], [np.nan, np.nan], [0.5, 0.1]]),
         "psnr": np.array([[100.0, 100.0], [np.nan, np.nan], [3.0, 10.0]]),
         "exact": np.array([[True, True], [False, False], [False, False]])}
    out = R.summarize(s, np.array([True, False, True]))
    assert out["victims"] == 2 and out["flagged"] == 1
    assert out["exact_recovery_rate"] == 0.5
    assert out["mse_mean"] == pytest.approx(0.15) and out["psnr_mean"] == pytest.approx(53.25)
    assert out["psnr_median"] == pytest.approx(55.0)
    assert R.summarize(s, np.zeros(3, bool)) == {"victims": 0, "flagged": 3}


# -------------------------------------------------------------- 9. run directory and CLI


def test_run_directory(idlg_run):
    out, rec, _ = idlg_run
    disk = strict_json(out / "results.json")
    assert disk["attack"] == "idlg" and disk["metrics"]["steps_run"] == 40
    assert disk["metrics"]["exact_recovery_rate"] == rec["metrics"]["exact_recovery_rate"]
    cfg = disk["config"]
    assert (cfg["dataset"], cfg["model"], cfg["victims"], cfg["batch"]) == ("digits",
                                                                          "dlg-lenet", 8, 1)
    assert cfg["kernel"]["labels"] == "given" and cfg["target_meta"]["arch"] == "dlg-lenet"
    assert len(disk["metrics"]["per_victim"]["psnr"]) == 8
    arrays = np.load(out / "reconstructions.npz")
    assert arrays["x"].shape == arrays["victims"].shape == (8, 1, 8, 8, 1)
    assert np.isfinite(arrays["x"]).all()
    for k in ("labels", "recovered_labels", "mse", "psnr", "ssim", "exact"):
        assert arrays[k].shape == (8, 1), k
    np.testing.assert_array_equal(arrays["recovered_labels"], arrays["labels"])
    assert (out / "grid.png").stat().st_size > 0
    from PIL import Image

    assert Image.open(out / "grid.png").size[1] > Image.open(out / "grid.png").size[0]  # 8 rows
    page = write_report(out)
    assert page.is_file() and "idlg" in page.read_text()


def test_cli_attack_idlg(idlg_run, tmp_path, capsys):
    _, rec, _ = idlg_run
    out = tmp_path / "cli"
    assert main(["attack", "idlg", "--dataset", "digits", "--victims", "8", "--steps", "40",
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert json.loads(printed.splitlines()[0])["label_accuracy"] == 1.0
    m = strict_json(out / "results.json")["metrics"]
    for k in ("exact_recovery_rate", "label_accuracy", "steps_run"):  # same run as the API's
        assert m[k] == rec["metrics"][k], k
    assert m["psnr_mean"] == pytest.approx(rec["metrics"]["psnr_mean"], rel=1e-4)
    assert main(["attack", "idlg", "--dataset", "digits", "--defense", "blur:1",
                 "--out", str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("jaxinv attack: error:") and "blur" in err and "\n" not in err
    with pytest.raises(SystemExit):  # argparse: the step rules are choices
        main(["attack", "idlg", "--linesearch", "wolfe", "--out", str(tmp_path / "bad")])
    assert "invalid choice: 'wolfe'" in capsys.readouterr().err


# ---------------------------------------------------------------------------- 10. resume


def test_rerun_resumes_and_other_settings_are_refused(idlg_run, capsys):
    out, rec, _ = idlg_run
    again = gradient_leakage(out, **IDLG)
    assert "resuming from step 40" in capsys.readouterr().err
    assert again["timing"]["steps_timed"] == 0  # nothing recomputed
    assert again["metrics"] == rec["metrics"]
    for change in ({"defense": "prune:0.9"}, {"steps": 50}):
        with pytest.raises(ValueError, match="holds a checkpoint of a different run") as e:
            gradient_leakage(out, **{**IDLG, **change})
        assert "\n" not in str(e.value)
    assert strict_json(out / "results.json")["metrics"] == rec["metrics"]  # untouched


# ------------------------------------------------------------------------ 11. bad inputs


@pytest.mark.parametrize("kw,msg", [
    ({"attack": "gan"}, "unknown attack 'gan'"),
    ({"labels": "guess"}, "labels must be one of"),
    ({"victims": 0}, "victims and batch must be >= 1"),
    ({"batch": 11}, "batch 11 > 10 classes"),
    ({"defense": "noise:x"}, "arguments must be numbers"),
    ({"victims": 2000}, "victim batches"),
])
def test_bad_workflow_inputs(tmp_path, kw, msg):
    with pytest.raises(ValueError, match=msg) as e:
        gradient_leakage(tmp_path / "bad", **{**IDLG, **kw})
    assert "\n" not in str(e.value)
    assert not (tmp_path / "bad").exists()


def test_bad_kernel_options():
    f, _ = lenet()
    for kw, msg in [({"distance": "l1"}, "unknown distance"), ({"labels": "x"}, "unknown labels"),
                    ({"steps": 0}, "must be >= 1"), ({"optimizer": "sgd"}, "unknown optimizer")]:
        with pytest.raises(ValueError, match=msg):
            gradient_matching(f, (8, 8, 1), 10, **kw)
    with pytest.raises(ValueError, match="input_shape must be"):
        gradient_matching(f, (8, 8), 10)
