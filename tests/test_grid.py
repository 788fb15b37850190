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
    assert 0 <= rows["label"]["attacks"]["lira"]["lira_auc"] <= 1  # on released labels
    assert 0 <= rows["negls"]["attacks"]["lira"]["lira_auc"] <= 1
    assert 0 <= rows["none"]["attacks"]["mi-face"]["attack_acc_top1"] <= 1
    meta = json.loads((tmp_path / "targets" / "negls" / "model.json").read_text())
    assert meta["defense"]["name"] == "negls"
    table = (tmp_path / "grid.md").read_text()
    assert "| label | output |" in table and "n/a" in table
    lira = json.loads((tmp_path / "cells" / "label" / "lira" / "results.json").read_text())
    assert lira["config"]["output"] == "label"
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


def test_grid_with_a_split_runs_gmi_and_p2i_behind_output_defenses(tmp_path):
    from jaxinv.training import fit
    from jaxinv.training.gan import public_images, train_gan

    train_gan(public_images("digits", "classes:5-9"), tmp_path / "gan", steps=2, width=4,
              progress=False)
    fit("digits", "softmax", tmp_path / "embed", epochs=1, split="classes:5-9",
        side="public", progress=False)
    fit("digits", "softmax", tmp_path / "eval", epochs=1, split="classes:0-4", progress=False)
    g = grid("digits", tmp_path / "g", arch="softmax", eval_arch="softmax",
             defenses=("none", "label"), attacks=("gmi", "zo-latent", "p2i"),
             train={"epochs": 1},
             run={"chains": 1, "steps": 2, "classes": [0, 1], "gmi": {"steps": 3},
                  "options": {"p2i": {"n_samples": 40, "steps": 2, "width": 4,
                                      "samples": 2, "public_max": 40}}},
             generator=str(tmp_path / "gan"), split="classes:0-4",
             embed=str(tmp_path / "embed"), public="classes:5-9",
             evaluator=str(tmp_path / "eval"), progress=False)
    label = g["rows"][1]
    target = json.loads((tmp_path / "g" / "targets" / "none" / "model.json").read_text())
    assert target["split"] == "classes:0-4" and target["num_classes"] == 5
    assert label["attacks"]["gmi"] is None  # white-box
    assert 0 <= label["attacks"]["p2i"]["attack_acc_top1"] <= 1  # P2I reads released outputs
    p2i_run = json.loads((tmp_path / "g" / "cells" / "label" / "p2i" / "results.json")
                         .read_text())
    assert p2i_run["config"]["options"]["defense"] == "label"
    gmi_run = json.loads((tmp_path / "g" / "cells" / "none" / "gmi" / "results.json")
                         .read_text())
    assert gmi_run["config"]["steps"] == 3  # the per-attack override
    zo = json.loads((tmp_path / "g" / "cells" / "none" / "zo-latent" / "results.json")
                    .read_text())
    assert zo["attack"] == "zo" and zo["config"]["generator"] == str(tmp_path / "gan")


def test_grid_p2i_needs_its_assets(tmp_path):
    with pytest.raises(ValueError, match="p2i needs embed="):
        grid("digits", tmp_path, attacks=("p2i",), generator="gan", progress=False)
    with pytest.raises(ValueError, match="need generator="):
        grid("digits", tmp_path, attacks=("zo-latent",), progress=False)
    with pytest.raises(ValueError, match=r"unknown attacks \['mi-face-latent'\]"):
        grid("digits", tmp_path, attacks=("mi-face-latent",), progress=False)
