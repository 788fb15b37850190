"""MI-Face end to end on digits: works-test, CLI contract and errors, quickstart notebook."""

import json
import os
from pathlib import Path

import numpy as np
import pytest

from jaxinv.cli import main
from jaxinv.workflows.invert import invert

REQUIRED = ("attack_acc_top1", "attack_acc_top5", "init_acc_top1", "target_confidence",
            "per_class")


def test_mi_face_recovers_classes_random_inits_do_not(models, tmp_path):
    rec = invert("mi-face", models / "target", models / "evaluator", tmp_path, chains=8,
                 steps=60, options={"loss": "neg_log_p", "init": "random", "lr": 0.1},
                 progress=False)
    m = rec["metrics"]
    assert m["init_acc_top1"] < 0.3  # random noise: the evaluator is near chance
    assert m["attack_acc_top1"] > m["init_acc_top1"] + 0.4
    assert m["target_confidence"] > 0.9
    assert m["chains_failed"] == 0


def test_cli_attack_writes_the_contract(models, tmp_path):
    out = tmp_path / "run"
    code = main(["attack", "mi-face", "--target", str(models / "target"), "--eval-model",
                 str(models / "evaluator"), "--chains", "3", "--steps", "10", "--out", str(out),
                 "--classes", "1,7", "--loss", "neg_log_p"])
    assert code == 0
    rec = json.loads((out / "results.json").read_text())
    for key in ("config", "seed", "versions", "metrics", "timing"):
        assert key in rec
    for key in REQUIRED:
        assert key in rec["metrics"]
    assert set(rec["metrics"]["per_class"]) == {"1", "7"}
    assert rec["timing"]["wall_s"] > 0 and rec["timing"]["compile_s"] > 0
    z = np.load(out / "reconstructions.npz")
    assert z["x"].shape == (2, 3, 8, 8, 1) and z["y"].tolist() == [1, 7]
    assert (out / "grid.png").stat().st_size > 100
    # rerunning the same command resumes from the finished checkpoint: same numbers
    assert main(["attack", "mi-face", "--target", str(models / "target"), "--eval-model",
                 str(models / "evaluator"), "--chains", "3", "--steps", "10", "--out", str(out),
                 "--classes", "1,7", "--loss", "neg_log_p"]) == 0
    again = json.loads((out / "results.json").read_text())
    assert again["metrics"]["attack_acc_top1"] == rec["metrics"]["attack_acc_top1"]


def test_cli_errors_are_clear(models, tmp_path, capsys):
    assert main(["train", "--dataset", "nosuch", "--arch", "cnn", "--workdir",
                 str(tmp_path / "w")]) == 2
    assert "nosuch" in capsys.readouterr().err
    assert main(["attack", "mi-face", "--target", str(tmp_path / "missing"), "--eval-model",
                 str(models / "evaluator"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "missing" in err and "jaxinv train" in err
    assert main(["attack", "mi-face", "--target", str(models / "target"), "--eval-model",
                 str(models / "evaluator"), "--out", str(tmp_path / "o"), "--classes", "12"]) == 2
    assert "out of range" in capsys.readouterr().err


def test_wrong_image_shape_is_a_clear_error(models):
    from jaxinv.training.classifier import load_classifier

    clf = load_classifier(models / "target")
    with pytest.raises(ValueError, match="expects images"):
        clf.logits(np.zeros((2, 28, 28, 1), np.float32))


@pytest.mark.parametrize("name, expect", [("quickstart", "evaluator top-1"),
                                          ("generative", "one-time queries"),
                                          ("network_inversion", "training vs held-out"),
                                          ("gradient_leakage", "exact recovery 1.00"),
                                          ("membership", "RDP says")])
def test_notebook_runs(name, expect, tmp_path):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    nb = nbformat.read(Path(__file__).parents[1] / "colab" / f"{name}.ipynb", as_version=4)
    os.environ.update(JAXINV_SMOKE="1", JAXINV_NB_WORK=str(tmp_path / "work"))
    try:
        nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                                resources={"metadata": {"path": str(tmp_path)}}).execute()
    finally:
        for k in ("JAXINV_SMOKE", "JAXINV_NB_WORK"):
            os.environ.pop(k, None)
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                   for o in c.get("outputs", []))
    assert expect in text


def test_demo_runs(tmp_path, capsys):
    from jaxinv.workflows.demo import demo

    rec = demo(tmp_path, chains=20, steps=30)
    m = rec["metrics"]
    assert m["attack_acc_top1"] > 0.6 > 0.3 > m["init_acc_top1"]
    assert (tmp_path / "mi-face" / "grid.png").exists()
    assert "evaluator top-1 on reconstructions" in capsys.readouterr().out


def test_attack_options_come_from_the_factory_signature(capsys):
    with pytest.raises(SystemExit):
        main(["attack", "mi-face", "--help"])
    out = capsys.readouterr().out
    for flag in ("--lr", "--max-steps", "--beta", "--gamma", "--tv", "--paper", "--init-range",
                 "--process", "--loss"):
        assert flag in out, flag
    with pytest.raises(SystemExit):
        main(["attack", "label-only", "--help"])
    out = capsys.readouterr().out
    assert "--no-normalize" in out and "--defense" in out and "--spheres" in out


def test_several_evaluators_and_a_weak_one_warns(models, tmp_path, capsys):
    from jaxinv.training import fit

    weak = fit("digits", "softmax", tmp_path / "weak", epochs=1, limit=64, progress=False)
    assert weak.meta["test_accuracy"] < 0.9
    rec = invert("mi-face", models / "target", [models / "evaluator", tmp_path / "weak"],
                 tmp_path / "run", chains=2, steps=5, progress=False)
    per = rec["metrics"]["per_evaluator"]
    assert list(per) == [str(models / "evaluator"), str(tmp_path / "weak")]
    assert per[str(models / "evaluator")]["attack_acc_top1"] == rec["metrics"]["attack_acc_top1"]
    assert "is weak" in capsys.readouterr().err
    assert len(rec["metrics"]["evaluator_warnings"]) == 1


def test_nan_target_fails_the_black_box_run_with_one_line(models, tmp_path, capsys):
    import shutil

    import jax
    import orbax.checkpoint as ocp

    from jaxinv.training import load_classifier

    bad = tmp_path / "nan_target"
    shutil.copytree(models / "target", bad)
    clf = load_classifier(bad)
    params = jax.tree.map(np.array, clf.variables)  # writable copies
    last = sorted(k for k in params["params"] if k.startswith("Dense"))[-1]
    params["params"][last]["bias"][3] = np.nan  # one NaN bias, as in the audit
    with ocp.StandardCheckpointer() as ckptr:
        ckptr.save(bad / "variables", params, force=True)
    code = main(["attack", "zo", "--target", str(bad), "--eval-model", str(models / "evaluator"),
                 "--chains", "1", "--steps", "3", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and "non-finite" in err[-1] and "cnn" in err[-1]


def test_black_box_metrics_have_their_own_names(models, tmp_path):
    rec = invert("label-only", models / "target", models / "evaluator", tmp_path / "lo",
                 chains=2, steps=4, options={"spheres": 4}, progress=False)
    m = rec["metrics"]
    assert 0 <= m["target_confidence"] <= 1  # the undefended target on the returned iterate
    assert {"sphere_share", "chains_without_start", "queries_total"} <= set(m)
    assert "observed_confidence" not in m
    started = m["attack_acc_top1_started"]
    assert started is None or 0 <= started <= 1
    rec = invert("zo", models / "target", models / "evaluator", tmp_path / "zo", chains=1,
                 steps=2, options={"queries_per_step": 4, "defense": "round:1"}, progress=False)
    assert 0 <= rec["metrics"]["observed_confidence"] <= 1 and "sphere_share" not in rec["metrics"]
