"""The attack x defense grid on digits, tiny settings."""

import json

import pytest

from jaxinv.cli import main
from jaxinv.workflows.grid import grid, kind


def test_grid_runs_every_cell_and_resumes(tmp_path):
    kw = dict(arch="mlp", arch_kwargs={"hidden": [32], "activation": "relu"},
              eval_arch="softmax", defenses=("none", "negls", "label"),
              attacks=("mi-face", "lira"), train={"epochs": 5},
              run={"chains": 2, "steps": 20, "classes": [0, 1]},
              lira={"examples": 60, "models": 4, "targets": 1, "epochs": 2, "batch_size": 20},
              progress=False)
    g = grid("digits", tmp_path, **kw)
    rows = {r["defense"]: r for r in g["rows"]}
    assert [r["kind"] for r in g["rows"]] == ["training", "training", "output"]
    # the output defense keeps the undefended target (and its accuracy, for label-only)
    assert rows["label"]["target"] == rows["none"]["target"]
    assert rows["label"]["test_accuracy"] == pytest.approx(rows["none"]["test_accuracy"])
    assert rows["label"]["attacks"]["mi-face"] is None  # white-box: no output-defense cell
    assert rows["label"]["attacks"]["lira"] is None
    assert 0 <= rows["negls"]["attacks"]["lira"]["lira_auc"] <= 1
    assert 0 <= rows["none"]["attacks"]["mi-face"]["attack_acc_top1"] <= 1
    meta = json.loads((tmp_path / "targets" / "negls" / "model.json").read_text())
    assert meta["defense"]["name"] == "negls"
    table = (tmp_path / "grid.md").read_text()
    assert "| label | output |" in table and "n/a" in table
    assert (tmp_path / "grid.png").exists()
    cell = tmp_path / "cells" / "none" / "mi-face" / "results.json"
    stamp = cell.stat().st_mtime
    again = grid("digits", tmp_path, **kw)  # every cell is read back, nothing reruns
    assert cell.stat().st_mtime == stamp
    assert again["rows"][0]["attacks"] == g["rows"][0]["attacks"]


def test_distill_targets_learn_from_the_undefended_one(tmp_path):
    from jaxinv.workflows.grid import _train_options

    spec = _train_options("distill:temperature=2", tmp_path)["defense"]
    assert spec == f"distill:temperature=2,teacher={tmp_path / 'targets' / 'none'}"
    assert _train_options("dp:3", tmp_path) == {"dp": {"epsilon": 3.0, "delta": 1e-5}}


@pytest.mark.parametrize("defense", ["dp:0", "dp:x", "bogus", "negls:beta=1"])
def test_bad_defenses_are_one_line_errors(defense):
    with pytest.raises(ValueError) as e:
        kind(defense)
    assert "\n" not in str(e.value)


def test_cli_grid_refuses_unknown_attacks(tmp_path, capsys):
    assert main(["grid", "--dataset", "digits", "--out", str(tmp_path), "--attacks",
                 "mi-face,bogus"]) == 2
    assert "unknown attacks ['bogus']" in capsys.readouterr().err
