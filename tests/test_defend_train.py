"""Training-time defenses (``fit(defense=...)``, jaxinv.training.defenses): the losses equal
their formulas, each defense trains on digits and changes what it should, bad settings fail
with one-line errors."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxinv import data
from jaxinv.training import defenses as D
from jaxinv.training.classifier import fit, load_classifier

OPTS = {"arch_kwargs": {"hidden": (64,), "activation": "relu"}, "epochs": 4,
        "batch_size": 32, "progress": False}
X, Y = data.load("digits", "train")
XT, YT = data.load("digits", "test")


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    """An undefended digits MLP (test accuracy ~0.89): baseline and distillation teacher."""
    workdir = tmp_path_factory.mktemp("plain")
    return workdir, fit("digits", "mlp", workdir, **OPTS)


def _confidence(clf):
    return float(jax.nn.softmax(clf.logits(X)).max(-1).mean())


def _np_hsic(a, b, sigma):
    """trace(K H L H) / (n - 1)^2 written out in numpy (sigma 0: median heuristic)."""
    def gram(v):
        v = v.reshape(len(v), -1).astype(np.float64)
        d2 = ((v[:, None] - v[None]) ** 2).sum(-1)
        if sigma:
            return np.exp(-d2 / (2 * sigma**2 * v.shape[1]))
        return np.exp(-d2 / (2 * np.median(d2[np.triu_indices(len(v), 1)])))

    n = len(a)
    h = np.eye(n) - np.ones((n, n)) / n
    return np.trace(gram(a) @ h @ gram(b) @ h) / (n - 1) ** 2


def test_smoothed_ce_and_ramp_formulas():
    logits = jax.random.normal(jax.random.key(0), (6, 10))
    y = jnp.arange(6)
    logp = np.asarray(jax.nn.log_softmax(logits))
    for a in (-0.05, 0.1):
        target = (1 - a) * np.eye(10)[np.arange(6)] + a / 10
        np.testing.assert_allclose(D.smoothed_ce(logits, y, a), -(target * logp).sum(-1),
                                   rtol=1e-5)
    np.testing.assert_allclose(D.smoothed_ce(logits, y, 0.0),
                               optax.softmax_cross_entropy_with_integer_labels(logits, y),
                               rtol=1e-6)
    ramp = [float(D.negls_alpha(s, 100, -0.05, warmup=0.2, start=0.5)) for s in (0, 49, 60, 70, 99)]
    np.testing.assert_allclose(ramp, [0, 0, -0.025, -0.05, -0.05], atol=1e-7)
    assert float(D.negls_alpha(10, 100, -0.05)) == pytest.approx(-0.05)  # no ramp


def test_negls_trains_and_moves_confidence(plain, tmp_path):
    _, base = plain
    neg = fit("digits", "mlp", tmp_path / "neg", defense="negls:alpha=-0.1,start=0,warmup=0",
              **OPTS)
    pos = fit("digits", "mlp", tmp_path / "pos", defense={"name": "negls", "alpha": 0.1,
                                                        "start": 0, "warmup": 0}, **OPTS)
    # negative smoothing: more confident than plain training; positive: less
    assert _confidence(neg) > _confidence(base) > _confidence(pos)
    assert neg.meta["test_accuracy"] > 0.8 and pos.meta["test_accuracy"] > 0.8
    saved = json.loads((tmp_path / "neg" / "model.json").read_text())
    assert saved["defense"] == {"name": "negls", "alpha": -0.1, "warmup": 0.0, "start": 0.0}


def test_distill_loss_formula():
    s, t = jax.random.normal(jax.random.key(1), (2, 5, 4))
    y = jnp.arange(5) % 4
    p, q = np.asarray(jax.nn.softmax(t / 3)), np.asarray(jax.nn.softmax(s / 3))
    kl = 9 * (p * np.log(p / q)).sum(-1)
    np.testing.assert_allclose(D.distill_loss(s, t, y, 3.0), kl, rtol=1e-4, atol=1e-6)
    ce = optax.softmax_cross_entropy_with_integer_labels(s, y)
    np.testing.assert_allclose(D.distill_loss(s, t, y, 3.0, hard=0.25), 0.75 * kl + 0.25 * ce,
                               rtol=1e-4, atol=1e-6)


def test_distill_student_agrees_with_teacher(plain, tmp_path):
    teacher_dir, teacher = plain
    student = fit("digits", "mlp", tmp_path / "s", defense={"name": "distill",
                                                           "teacher": teacher_dir}, **OPTS)
    agree = np.mean(student.logits(XT).argmax(-1) == teacher.logits(XT).argmax(-1))
    assert agree > 0.85, agree
    assert student.meta["defense"]["teacher"] == str(teacher_dir)
    with pytest.raises(ValueError, match=r"teacher .* 10 classes; this run has \[8, 8, 1\] with 5"):
        D.load_teacher(D.parse(f"distill:teacher={teacher_dir}"), (8, 8, 1), 5)


def test_mid_vib_kl_shrinks_with_beta_and_still_classifies(tmp_path):
    kls = []
    for beta in (1e-3, 0.1):
        clf = fit("digits", "mlp", tmp_path / str(beta),
                  defense={"name": "mid", "beta": beta, "k": 32}, **OPTS)
        assert clf.meta["arch"] == "vib" and clf.meta["test_accuracy"] > 0.6  # chance 0.1
        _, sown = clf.module.apply(clf.variables, X, train=True, mutable=["intermediates"],
                                   rngs={"vib": jax.random.key(0)})
        kls.append(float(D.gaussian_kl(*(sown["intermediates"][k][0]
                                          for k in ("mean", "std"))).mean()))
    assert 0 < kls[1] < kls[0], kls
    loaded = load_classifier(tmp_path / "0.1")  # rebuilt from model.json's arch_kwargs
    assert loaded.meta["arch_kwargs"] == {"base": "mlp", "k": 32,
                                          "base_kwargs": {"hidden": [64], "activation": "relu"}}
    np.testing.assert_array_equal(loaded.logits(XT), clf.logits(XT))  # eval: the mean


def test_gaussian_kl_formula():
    mean, std = jax.random.normal(jax.random.key(2), (2, 3, 4))
    std = jnp.abs(std) + 0.1
    want = np.sum(0.5 * (mean**2 + std**2 - 1) - np.log(std), -1)
    np.testing.assert_allclose(D.gaussian_kl(mean, std), want, rtol=1e-5)


@pytest.mark.parametrize("sigma", [0.0, 0.7])
def test_hsic_matches_numpy_and_masks(sigma):
    a = jax.random.normal(jax.random.key(3), (12, 5))
    b = a[:, :3] ** 2 + 0.3 * jax.random.normal(jax.random.key(4), (12, 3))
    hsic = jax.jit(D.hsic, static_argnums=2)
    np.testing.assert_allclose(hsic(a, b, sigma), _np_hsic(np.asarray(a), np.asarray(b),
                                                           sigma), rtol=1e-4)
    w = jnp.array([1, 0, 1, 1, 0, 1, 1, 1, 0, 1, 1, 1.0])  # masked rows must not count
    keep = np.asarray(w) > 0
    np.testing.assert_allclose(hsic(a, b, sigma, w),
                               _np_hsic(np.asarray(a)[keep], np.asarray(b)[keep], sigma),
                               rtol=1e-4)


def test_bido_loss_ignores_masked_examples():
    from jaxinv.models import create, init_variables

    module = create("mlp", 10, hidden=(16,))
    params = init_variables(module, (8, 8, 1))["params"]
    loss = D.loss_fn(module, D.parse("bido:lambda_x=50,lambda_y=50"))(0)
    w = jnp.array([1.0, 1, 1, 1, 1, 0])

    @jax.jit
    def objective(x):
        losses = loss(params, {}, (x, jnp.asarray(Y[:6]), w), jax.random.key(0))[0]
        return jnp.sum(w * losses) / jnp.sum(w)

    other = X[:6].copy()
    other[5] = 1 - other[5]  # change only the masked example
    assert float(objective(X[:6])) == pytest.approx(float(objective(other)), rel=1e-6)


def test_bido_lowers_input_dependence(plain, tmp_path):
    _, base = plain
    bido = fit("digits", "mlp", tmp_path / "b", defense="bido:lambda_x=100,lambda_y=100",
               **OPTS)
    h_base, h_bido = (float(D.hsic(XT, c.features(XT))) for c in (base, bido))
    assert h_bido < 0.95 * h_base, (h_bido, h_base)  # measured ~0.0085 vs ~0.0102
    assert bido.meta["test_accuracy"] > 0.8


def test_defense_with_dp_trains(tmp_path):  # mid + DP works too, but compiles for ~20 s
    clf = fit("digits", "mlp", tmp_path, epochs=1, limit=256, progress=False,
              arch_kwargs={"hidden": (16,)}, defense="negls:start=0,warmup=0",
              dp={"noise_multiplier": 1.0, "delta": 1e-5})
    assert clf.meta["dp"]["noise_multiplier"] == 1.0 and clf.meta["defense"]["name"] == "negls"


@pytest.mark.parametrize("defense,match", [
    ("nope", r"^defense: unknown name 'nope'; valid: negls, distill, mid, bido$"),
    ({"alpha": -0.1}, r"unknown name None"),
    ({"name": "negls", "beta": 1}, r"defense negls: unknown option\(s\) \['beta'\]"),
    ("distill:teacher=t,temperature=-2", r"temperature must be > 0, got -2.0"),
    ("distill", r"teacher must be a trained classifier directory"),
    ("distill:teacher=t,hard=2", r"hard must be in \[0, 1\]"),
    ("negls:alpha=1.5", r"alpha must be < 1"),
    ("negls:alpha=abc", r"alpha must be a number, got 'abc'"),
    ("negls:alpha=nan", r"alpha must be < 1, got nan"),
    ("negls:warmup=2", r"warmup must be in \[0, 1\]"),
    ("negls:alpha", r"expected name:option=value"),
    ({"name": "mid", "k": 2.5}, r"k must be an integer, got 2.5"),
    ({"name": "mid", "k": 0}, r"k must be >= 1"),
    ({"name": "mid", "beta": True}, r"beta must be a number"),
    ("bido:lambda_x=-1", r"lambda_x must be >= 0"),
    (["negls"], r"expected a dict or"),
])
def test_bad_defenses(tmp_path, defense, match):
    with pytest.raises(ValueError, match=match) as e:
        fit("digits", "mlp", tmp_path, defense=defense, progress=False)
    assert "\n" not in str(e.value)


def test_refused_combinations(plain, tmp_path):
    with pytest.raises(ValueError, match=r"defense bido: .* cannot be combined with DP-SGD"):
        fit("digits", "mlp", tmp_path, defense="bido", dp={"epsilon": 3.0}, progress=False)
    with pytest.raises(ValueError, match="arch 'vib' is built by defense mid"):
        fit("digits", "vib", tmp_path, defense="mid", progress=False)
    workdir, _ = plain  # resuming with another defense
    with pytest.raises(ValueError, match=r"other settings.*'defense': \(None, \{'name': 'negls'"):
        fit("digits", "mlp", workdir, defense="negls", **{**OPTS, "epochs": 5})


def test_cli_defense(tmp_path, capsys):
    from jaxinv.cli import main

    args = ["train", "--dataset", "digits", "--arch", "mlp", "--epochs", "1", "--limit", "256"]
    assert main([*args, "--workdir", str(tmp_path / "a"), "--defense",
                 "negls:alpha=-0.1,warmup=0.5"]) == 0
    meta = json.loads((tmp_path / "a" / "model.json").read_text())
    assert meta["defense"] == {"name": "negls", "alpha": -0.1, "warmup": 0.5, "start": 0.5}
    assert "defense: name=negls, alpha=-0.1" in capsys.readouterr().out
    assert main([*args, "--workdir", str(tmp_path / "b"), "--defense", "mid:beta=-1"]) == 2
    err = capsys.readouterr().err
    assert err == "jaxinv train: error: defense mid: beta must be >= 0, got -1.0\n"
