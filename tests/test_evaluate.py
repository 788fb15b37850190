"""`jaxinv evaluate` end to end on a digits MI-Face run: reconstructions leak, noise does not."""

import json
import shutil

import numpy as np
import pytest

from jaxinv.cli import main
from jaxinv.evaluation.evaluate import evaluate
from jaxinv.workflows.invert import invert

KEYS = ("knn_dist", "feature_dist", "fid_eval", "precision", "recall", "density", "coverage",
        "psnr", "ssim", "per_sample", "per_class_eval")


@pytest.fixture(scope="module")
def run(models, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "mi-face"
    invert("mi-face", models / "target", models / "evaluator", out, chains=12, steps=150,
           options={"loss": "neg_log_p", "init": "random", "init_range": (0.0, 0.25),
                    "lr": 0.05, "tv": 0.05}, progress=False)
    return out


def _variant(run, dest, x):
    shutil.copytree(run, dest)
    rec = dict(np.load(dest / "reconstructions.npz"))
    rec["x"] = x.astype(np.float32)
    np.savez(dest / "reconstructions.npz", **rec)
    return dest


def test_reconstructions_are_closer_to_private_data_than_their_inits(models, run, tmp_path):
    noise = _variant(run, tmp_path / "noise", np.load(run / "reconstructions.npz")["x_init"])
    m = evaluate(run, models / "evaluator", "digits:train", progress=False)["metrics"]
    m0 = evaluate(noise, models / "evaluator", "digits:train", progress=False)["metrics"]
    assert all(k in m for k in KEYS)
    assert m["knn_dist"] < 0.5 * m0["knn_dist"]
    assert m["fid_eval"] < m0["fid_eval"]
    assert m["psnr"] > m0["psnr"]
    assert set(m["per_class_eval"]) == {str(c) for c in range(10)}
    ps = np.load(run / "per_sample.npz")
    assert ps["score"].shape == ps["labels"].shape == (1437,)  # digits train split
    assert ps["exposed_x"].shape[1:] == ps["exposed_rec"].shape[1:] == (8, 8, 1)
    assert list(ps["exposed_index"]) == m["per_sample"]["most_exposed"]
    assert ps["dist_pixel"].shape == (1437,) and m["per_sample"]["pixel_dist_mean"] > 0


def test_memorised_samples_are_found_exposed(models, run, tmp_path):
    from jaxinv import data

    xp, yp = data.load("digits", "train")
    x = np.load(run / "reconstructions.npz")["x"].copy()  # [10, 12, 8, 8, 1]
    leaked = []
    for c in range(10):  # the attack "memorised" 3 training images of every class
        idx = np.flatnonzero(yp == c)[:3]
        x[c, :3] = np.clip(xp[idx] + 0.01, 0, 1)
        leaked += list(idx)
    leak = _variant(run, tmp_path / "leak", x)
    m = evaluate(leak, models / "evaluator", "digits:train", progress=False)["metrics"]
    score = np.load(leak / "per_sample.npz")["score"]
    assert np.mean(score[leaked] > 0) >= 0.9  # copies are found
    assert np.mean(np.delete(score, leaked) > 0) < 0.02  # almost nothing else is
    assert m["per_sample"]["resilient_fraction"] < 1 - 27 / 1437


def test_cli_evaluate_and_errors(models, run, tmp_path, capsys):
    assert main(["evaluate", "--run", str(run), "--eval-model", str(models / "evaluator"),
                 "--private", "digits:train"]) == 0
    out = capsys.readouterr().out
    assert "resilient" in out and "knn_dist" in out
    assert "per_sample" in json.loads((run / "results.json").read_text())["metrics"]
    assert main(["evaluate", "--run", str(tmp_path), "--eval-model", str(models / "evaluator"),
                 "--private", "digits:train"]) == 2
    assert "results.json is missing" in capsys.readouterr().err
    assert main(["evaluate", "--run", str(run), "--eval-model", str(models / "evaluator"),
                 "--private", "digits"]) == 2
    assert "DATASET:SPLIT" in capsys.readouterr().err
    other = tmp_path / "other.npz"  # 28x28 images: no real dataset needed
    np.savez(other, x_train=np.zeros((4, 28, 28, 1), np.uint8), y_train=np.arange(4) % 2,
             x_test=np.zeros((4, 28, 28, 1), np.uint8), y_test=np.arange(4) % 2)
    with pytest.raises(ValueError, match="images"):
        evaluate(run, models / "evaluator", f"{other}:test", progress=False)


def test_fid_inception_with_user_weights_and_missing_file(models, run, tmp_path):
    from jaxinv.models import inception

    weights = tmp_path / "incep.npz"
    np.savez(weights, **inception.to_torch_state_dict(inception.random_variables(0)))
    m = evaluate(run, models / "evaluator", "digits:train", inception=weights,
                 inception_max=3, progress=False)["metrics"]
    assert m["fid_inception_samples"] == [3, 3] and np.isfinite(m["fid_inception"])
    with pytest.raises(FileNotFoundError, match="pt_inception"):
        evaluate(run, models / "evaluator", "digits:train", inception=tmp_path / "no.pth")


def test_few_chains_per_class_lower_prdc_k_with_a_note(models, run, tmp_path):
    x = np.load(run / "reconstructions.npz")["x"]
    four = _variant(run, tmp_path / "four", x[:, :4])  # 4 chains per class: k=5 impossible
    m = evaluate(four, models / "evaluator", "digits:train", progress=False)["metrics"]
    assert m["prdc_k"] == 3 and "lowered" in m["prdc_note"]
    assert 0 <= m["coverage"] <= 1
    one = _variant(run, tmp_path / "one", x[:, :1])
    m = evaluate(one, models / "evaluator", "digits:train", progress=False)["metrics"]
    assert m["precision"] is None and "skipped" in m["prdc_note"]


def test_nearest_identity_rate_needs_no_evaluator(models, run, tmp_path):
    from jaxinv import data, metrics

    xp, yp = data.load("digits", "train")
    copies = np.stack([xp[yp == c][:3] for c in range(10)])  # real images: rate 1
    assert metrics.nearest_identity_rate(copies.reshape(-1, 8, 8, 1), np.repeat(np.arange(10),
                                         3), xp, yp) == 1.0
    noise = np.random.default_rng(0).random((200, 8, 8, 1))
    assert metrics.nearest_identity_rate(noise, np.arange(200) % 10, xp, yp) < 0.3
    m = evaluate(run, models / "evaluator", "digits:train", progress=False)["metrics"]
    assert 0 <= m["nearest_identity_top1"] <= 1
