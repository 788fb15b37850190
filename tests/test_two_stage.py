"""The two-stage report: membership scores joined with inversion leakage, per member."""

import json

import numpy as np
import pytest

from jaxinv.cli import main
from jaxinv.evaluation.evaluate import evaluate
from jaxinv.evaluation.results import write_run
from jaxinv.training import load_classifier
from jaxinv.workflows.membership import membership, population
from jaxinv.workflows.two_stage import export_target, two_stage


@pytest.fixture(scope="module")
def mia(tmp_path_factory):
    out = tmp_path_factory.mktemp("two") / "mia"
    membership(out, examples=200, models=4, targets=2, epochs=10, progress=False)
    return out


def test_planted_reconstructions_are_joined_to_the_right_members(mia, tmp_path):
    target = export_target(mia, tmp_path / "t0")
    clf = load_classifier(target)
    members = np.load(target / "members.npz")
    keep = np.load(mia / "scores.npz")["keep"][0]
    x, _ = population("digits", 200)
    assert np.array_equal(members["member_index"], np.flatnonzero(keep))
    assert np.array_equal(members["x_train"], x[keep])  # the model's own training set
    assert clf.meta["train_accuracy"] > 0.5
    # an inversion "run" whose reconstructions are copies of 4 members of class 0 and 1
    chosen = {c: np.flatnonzero(members["y_train"] == c)[:4] for c in (0, 1)}
    rec = np.stack([members["x_train"][chosen[c]] for c in (0, 1)])
    write_run(tmp_path / "run", {"config": {}, "metrics": {}}, {"x": rec, "y": np.array([0, 1])})
    evaluate(tmp_path / "run", target, f"{target}/members.npz:train", progress=False)
    r = two_stage(mia, tmp_path / "run", attack="lira_online_fixed_variance")
    planted = set(members["member_index"][np.r_[chosen[0], chosen[1]]].tolist())
    top = {t["index"] for t in r["top_exposed"][:8]}
    assert top == planted  # the copied members are the most exposed ones
    assert r["members_evaluated"] == int(np.isin(members["y_train"], [0, 1]).sum())
    assert 0 <= r["flagged"] <= r["members_evaluated"] and r["exposed"] >= 8
    assert set(r["both_index"]) <= planted | {t["index"] for t in r["top_exposed"]}
    saved = json.loads((tmp_path / "run" / "two_stage.json").read_text())
    assert saved["both"] == r["both"] and (tmp_path / "run" / "two_stage.png").exists()
    with pytest.raises(ValueError, match="no attack 'bogus'"):
        two_stage(mia, tmp_path / "run", attack="bogus")
    with pytest.raises(ValueError, match="was not attacked"):
        two_stage(mia, tmp_path / "run", target=3)
    with pytest.raises(FileNotFoundError, match=r"per_sample\.npz"):
        two_stage(mia, tmp_path)


def test_cli_two_stage_export_and_errors(mia, tmp_path, capsys):
    assert main(["two-stage", "--membership", str(mia), "--export", str(tmp_path / "t1"),
                 "--target", "1"]) == 0
    assert load_classifier(tmp_path / "t1").meta["membership_target"] == 1
    assert main(["two-stage", "--membership", str(mia)]) == 2
    assert "give --export DIR or --run R" in capsys.readouterr().err
    assert main(["two-stage", "--membership", str(tmp_path / "none"), "--export",
                 str(tmp_path / "t2")]) == 2
    assert "jaxinv membership" in capsys.readouterr().err
