"""Membership inference: statistics, LiRA, ROC metrics, the workflow (planted canaries are
found far above chance; RMIA and Shokri et al.'s attack in :mod:`test_membership_attacks`)
and the CLI."""

import json

import jax
import numpy as np
import pytest

from jaxinv import data
from jaxinv.cli import main
from jaxinv.membership import lira as L
from jaxinv.membership import metrics as R
from jaxinv.membership.scores import logit_confidence, neg_loss
from jaxinv.workflows.membership import membership


def test_logit_confidence_is_stable_and_matches_probabilities():
    logits = np.array([[3.0, 1.0, -2.0], [0.0, 0.0, 0.0], [80.0, 0.0, -5.0]])
    y = np.array([0, 2, 0])
    p = np.exp(logits[:2]) / np.exp(logits[:2]).sum(1, keepdims=True)
    want = np.log(p[[0, 1], y[:2]]) - np.log(1 - p[[0, 1], y[:2]])
    got = logit_confidence(logits, y)
    np.testing.assert_allclose(got[:2], want, rtol=1e-10)
    assert got[2] == pytest.approx(80 - np.log1p(np.exp(-5.0)), rel=1e-12)  # p_y rounds to 1
    np.testing.assert_allclose(neg_loss(logits[:2], y[:2]), np.log(p[[0, 1], y[:2]]))


@pytest.mark.parametrize("logits, labels, match", [
    (np.zeros((2, 3)), np.array([0, 3]), "labels must lie"),
    (np.zeros((2, 3)), np.array([0]), "must match labels"),
    (np.array([[np.nan, 0.0]]), np.array([0]), "NaN"),
])
def test_score_inputs_are_checked(logits, labels, match):
    with pytest.raises(ValueError, match=match):
        logit_confidence(logits, labels)


def test_roc_metrics_on_known_cases():
    s, m = np.array([4.0, 3.0, 2.0, 1.0]), np.array([1, 1, 0, 0])
    assert R.summary(s, m) == {"auc": 1.0, "tpr_at_0.1%_fpr": 1.0, "tpr_at_1%_fpr": 1.0,
                               "balanced_accuracy": 1.0, "members": 2, "non_members": 2}
    assert R.summary(-s, m)["auc"] == 0.0
    tied = R.roc(np.ones(4), m)  # one threshold: chance, nothing at FPR 0
    assert R.auc(tied) == 0.5 and R.tpr_at_fpr(tied, 1e-3) == 0.0
    rng = np.random.default_rng(0)
    r = R.summary(rng.normal(size=4000), rng.integers(0, 2, 4000))
    assert abs(r["auc"] - 0.5) < 0.03 and r["tpr_at_1%_fpr"] < 0.03
    for bad, match in ((np.ones(3), "differ in size"), (np.ones(4) * np.nan, "NaN")):
        with pytest.raises(ValueError, match=match):
            R.roc(bad, m)
    with pytest.raises(ValueError, match="both members and non-members"):
        R.roc(s, np.ones(4))


def test_keep_masks_balance_every_example():
    k = L.keep_masks(16, 100, seed=3)
    assert k.shape == (16, 100) and (k.sum(0) == 8).all()
    assert 40 <= k.sum(1).min() and k.sum(1).max() <= 60  # about half of the data per model
    assert not (L.keep_masks(16, 100, seed=4) == k).all()
    with pytest.raises(ValueError, match="at least 2 models"):
        L.keep_masks(1, 10)


def test_lira_follows_the_gaussian_likelihood_ratio():
    from scipy.stats import norm

    rng = np.random.default_rng(1)
    keep = L.keep_masks(8, 30)
    stats = rng.normal(size=(8, 30)) + 2.0 * keep
    obs = rng.normal(size=30)
    mu_in = np.array([np.median(stats[keep[:, j], j]) for j in range(30)])
    sd_out = np.array([np.std(stats[~keep[:, j], j]) for j in range(30)])
    mu_out = np.array([np.median(stats[~keep[:, j], j]) for j in range(30)])
    sd_in = np.array([np.std(stats[keep[:, j], j]) for j in range(30)])
    want = norm.logpdf(obs, mu_in, sd_in) - norm.logpdf(obs, mu_out, sd_out)
    np.testing.assert_allclose(L.lira(obs, stats, keep), want, rtol=1e-9)
    np.testing.assert_allclose(L.lira(obs, stats, keep, mode="offline"),
                               -norm.logpdf(obs, mu_out, sd_out), rtol=1e-9)
    one = L.lira(obs, stats, keep, mode="offline", offline_test="one-sided")
    np.testing.assert_allclose(one, norm.logcdf((obs - mu_out) / sd_out), rtol=1e-9)
    fixed = L.lira(obs, stats, keep, fix_variance=True)
    glob_in = np.std(stats[keep])
    glob_out = np.std(stats[~keep])
    np.testing.assert_allclose(fixed, norm.logpdf(obs, mu_in, glob_in)
                               - norm.logpdf(obs, mu_out, glob_out), rtol=1e-9)
    np.testing.assert_array_equal(L.lira(obs, stats, keep, mode="global"), obs)


def test_stacked_logits_in_chunks_equal_one_batch():
    from jaxinv.models import create, init_variables
    from jaxinv.workflows.membership import stacked_logits
    m = create("softmax", 3)
    v = jax.tree.map(lambda *a: np.stack(a), *[init_variables(m, (2, 2, 1), s) for s in (0, 1)])
    x = np.random.default_rng(0).random((10, 2, 2, 1), np.float32)
    whole = stacked_logits(m, v, x)
    assert whole.shape == (2, 10, 3)
    np.testing.assert_allclose(stacked_logits(m, v, x, batch=4), whole, atol=1e-6)


def test_lira_errors_name_the_problem():
    keep = np.array([[1, 0], [1, 1]], bool)
    stats = np.zeros((2, 2))
    with pytest.raises(ValueError, match="example 0 has no OUT shadow"):
        L.lira(np.zeros(2), stats, keep)
    with pytest.raises(ValueError, match=r"\[S, N\]"):
        L.lira(np.zeros(3), stats, keep)
    with pytest.raises(ValueError, match="mode 'both'"):
        L.lira(np.zeros(2), stats, ~np.eye(2, dtype=bool) | np.eye(2, dtype=bool)[::-1],
               mode="both")
    with pytest.raises(ValueError, match="NaN"):
        L.lira(np.array([np.nan, 0.0]), stats, keep)
    with pytest.raises(ValueError, match="at least 2 others"):
        L.leave_one_out(stats, keep, 1)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("mia") / "run"
    rec = membership(out, examples=300, canaries=20, models=8, targets=8, epochs=60,
                     progress=False)
    return out, rec


def test_planted_canaries_are_found_far_above_chance(run):
    out, rec = run
    planted, ordinary = rec["metrics_canaries"], rec["metrics"]
    # measured: canary AUC 0.977 and TPR 0.44 at 1% FPR (online, fixed variance); ordinary
    # digits 0.68 / 0.03; chance is 0.5 / 0.01
    assert planted["lira_online_fixed_variance"]["auc"] > 0.9
    assert planted["lira_online_fixed_variance"]["tpr_at_1%_fpr"] > 0.2
    assert ordinary["lira_online_fixed_variance"]["auc"] > 0.6
    assert ordinary["lira_online_fixed_variance"]["auc"] > ordinary["loss"]["auc"] - 0.02
    assert planted["lira_online"]["members"] + planted["lira_online"]["non_members"] == 8 * 20
    # measured: RMIA 0.726 (0.995 on canaries), offline 0.700 (0.984), Shokri et al. 0.619
    # (0.887): RMIA beats LiRA with 7 references, as its paper reports for few references
    for name, low, low_canary in (("rmia", 0.68, 0.95), ("rmia_offline", 0.65, 0.9),
                                  ("shokri", 0.55, 0.8)):
        assert ordinary[name]["auc"] > low and planted[name]["auc"] > low_canary, name
    assert ordinary["rmia"]["auc"] > ordinary["lira_online_fixed_variance"]["auc"]
    assert rec["models"]["train_accuracy_mean"] > rec["models"]["test_accuracy_mean"]
    arrays = np.load(out / "scores.npz")
    assert arrays["keep"].shape == (8, 320) and (arrays["keep"].sum(0) == 4).all()
    assert arrays["score_lira_online"].shape == (8, 320)
    assert arrays["score_rmia"].shape == arrays["score_shokri"].shape == (8, 320)
    assert arrays["test_true_class_probability"].shape == (8, 360)  # RMIA's z: the test split
    np.testing.assert_allclose(arrays["true_class_probability"], np.exp(arrays["neg_loss"]))
    again = R.summary(arrays["score_lira_online"][:, :300], arrays["keep"][:, :300])
    assert again["auc"] == pytest.approx(rec["metrics"]["lira_online"]["auc"])
    assert (out / "roc.png").stat().st_size > 1000


def test_results_are_strict_json_and_a_rerun_resumes(run):
    out, rec = run
    text = (out / "results.json").read_text()
    assert "NaN" not in text and json.loads(text)["metrics"] == rec["metrics"]
    assert {"rmia", "rmia_offline", "shokri"} <= set(rec["metrics"])
    again = membership(out, examples=300, canaries=20, models=8, targets=8, epochs=60,
                       progress=False)
    assert again["metrics"] == rec["metrics"]  # the models came back from the checkpoint
    with pytest.raises(ValueError, match="other settings"):
        membership(out, examples=300, canaries=20, models=8, targets=8, epochs=60,
                   lr=0.1, progress=False)


@pytest.mark.parametrize("kw, match", [({"models": 2}, "at least 2 shadows"),
                                       ({"examples": 10**6}, "examples must lie"),
                                       ({"targets": 9, "models": 8}, "need targets")])
def test_bad_settings_are_clear_errors(kw, match, tmp_path):
    with pytest.raises(ValueError, match=match):
        membership(tmp_path, **kw)


def test_cli_membership(tmp_path, capsys):
    out = tmp_path / "cli"
    assert main(["membership", "--out", str(out), "--examples", "100", "--models", "4",
                 "--epochs", "2", "--compare-sequential"]) == 0
    printed = json.loads(capsys.readouterr().out.splitlines()[0])
    timing = json.loads((out / "results.json").read_text())["timing"]
    assert timing["together_s"] > 0 and timing["one_by_one_s"] > 0
    assert set(printed) == {"lira_online", "lira_online_fixed_variance", "lira_offline",
                            "lira_offline_fixed_variance", "global_threshold", "loss", "rmia",
                            "rmia_offline", "shokri"}
    assert all(0 <= v["auc"] <= 1 for v in printed.values())
    assert main(["membership", "--out", str(tmp_path / "bad"), "--models", "2"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("jaxinv membership: error:") and "\n" not in err


def test_membership_with_a_training_time_defense(tmp_path):
    from jaxinv.workflows.membership import membership

    rec = membership(tmp_path / "bido", examples=60, models=4, epochs=2, batch_size=20,
                     progress=False, defense="bido:lambda_x=2,lambda_y=20")
    assert rec["config"]["defense"]["name"] == "bido"
    assert 0 <= rec["metrics"]["rmia"]["auc"] <= 1


def test_membership_under_distillation_trains_one_teacher_per_model(tmp_path):
    from jaxinv.models import create
    from jaxinv.training.many import fit_many
    from jaxinv.workflows.membership import membership, stacked_logits

    rec = membership(tmp_path / "d", model="softmax", examples=80, models=4, epochs=30,
                     batch_size=20, progress=False, defense="distill:temperature=2")
    assert rec["config"]["defense"]["name"] == "distill"
    assert rec["config"]["defense"]["teacher"] == str(tmp_path / "d" / "teachers")
    assert (tmp_path / "d" / "teachers").is_dir() and 0 <= rec["metrics"]["rmia"]["auc"] <= 1
    x, y = data.load("digits", "train")
    m = create("softmax", 10)
    halves = np.arange(80)[None] < np.array([[40], [80]])
    halves[1, :40] = False  # teacher 0 sees images 0-39, teacher 1 images 40-79
    teachers = fit_many(m, x[:80], y[:80], seeds=[0, 1], masks=halves, epochs=30,
                        batch_size=20, progress=False).variables
    mixed = jax.tree.map(lambda a: a[::-1], teachers)  # student 0 learns from teacher 1
    students = fit_many(m, x[:80], y[:80], seeds=[5, 6], masks=halves, epochs=30,
                        batch_size=20, progress=False, defense="distill:teacher=t,hard=0",
                        teachers=mixed).variables
    t, o, s = (stacked_logits(m, v, x[80:400]).argmax(-1) for v in (mixed, teachers, students))
    assert (s == t).mean() > (s == o).mean()  # each student follows the teacher it was given
    with pytest.raises(ValueError, match="distill needs teachers="):
        fit_many(m, x[:80], y[:80], seeds=[0], progress=False, defense="distill:teacher=t")


def test_released_logits_are_what_the_output_defense_leaves():
    from jaxinv.workflows.membership import FLOOR, released_logits

    logits = np.random.default_rng(0).normal(size=(3, 50, 10)) * 3
    np.testing.assert_array_equal(released_logits(logits, ""), logits)
    label = np.exp(released_logits(logits, "label"))
    np.testing.assert_allclose(label.max(-1), 1.0)  # one-hot, zeros floored
    assert (label.argmax(-1) == logits.argmax(-1)).all()
    assert np.isclose(label, FLOOR).sum() == 3 * 50 * 9
    rounded = np.exp(released_logits(logits, "round:1"))
    assert set(np.round(rounded[rounded > 2 * FLOOR], 6)) <= {round(k / 10, 6) for k in range(11)}
    with pytest.raises(ValueError, match="defense"):
        released_logits(logits, "bogus")
