"""Defense matrix: calibration, utility, the matrix files, and the CLI."""

import json

import numpy as np
import pytest

from jaxinv.workflows.defense_matrix import defend_matrix, expected_calibration_error, utility


def test_expected_calibration_error():
    y = np.array([0, 1, 1, 0])
    assert expected_calibration_error(np.eye(2)[y], y) == 0.0  # sure and right
    assert expected_calibration_error(np.eye(2)[1 - y], y) == 1.0  # sure and wrong
    p = np.array([[0.6, 0.4]] * 4)  # 60% sure of class 0, right half the time
    assert expected_calibration_error(p, y) == pytest.approx(0.1)
    with pytest.raises(ValueError, match="probs"):
        expected_calibration_error(np.ones(3), y)


def test_utility_of_defended_outputs(models):
    from jaxinv import data
    from jaxinv.training.classifier import load_classifier

    clf = load_classifier(models / "target")
    x, y = data.load("digits", "test")
    none, label = utility(clf, "none", x, y), utility(clf, "label", x, y)
    assert none["test_accuracy"] == label["test_accuracy"] > 0.9  # same argmax
    # one-hot outputs claim certainty: their ECE is exactly the error rate
    assert label["ece"] == pytest.approx(1 - label["test_accuracy"])
    assert none["ece"] != label["ece"]
    assert utility(clf, "noise:0.5", x, y)["test_accuracy"] < none["test_accuracy"]


def test_defend_matrix_writes_json_and_markdown(models, tmp_path, capsys):
    from jaxinv.cli import main

    out = tmp_path / "dm"
    assert main(["defend-matrix", "--target", str(models / "target"), "--eval-model",
                 str(models / "evaluator"), "--out", str(out), "--defenses", "none;label",
                 "--chains", "1", "--steps", "3", "--classes", "0,1",
                 "--options", '{"zo": {"queries_per_step": 10}, "label-only": {"spheres": 8}}'
                 ]) == 0
    rec = json.loads((out / "defense_matrix.json").read_text())
    assert [r["defense"] for r in rec["rows"]] == ["none", "label"]
    zo = rec["rows"][0]["attacks"]["zo"]
    assert zo["queries_per_chain"] == 3 * 11 and zo["queries_total"] == 2 * 3 * 11
    assert rec["rows"][1]["attacks"]["label-only"]["queries_per_chain"] == 3 * 9
    md = (out / "defense_matrix.md").read_text()
    assert md.count("\n") == 4 and "`label`" in md and "zo top-1" in md
    assert "`label`" in capsys.readouterr().out
    # cells are reused: a second call runs nothing new and gives the same matrix
    again = defend_matrix(models / "target", models / "evaluator", out,
                          defense_list=("none", "label"), chains=1, steps=3, classes=[0, 1],
                          options=rec["options"], progress=False)
    assert again["rows"] == rec["rows"]
    with pytest.raises(ValueError, match="unknown"):
        defend_matrix(models / "target", models / "evaluator", out, defense_list=("bogus",))
