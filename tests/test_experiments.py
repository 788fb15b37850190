"""Experiment configs: every config's :smoke variant runs end to end through experiments/main.py."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from jaxinv import data

ROOT = Path(__file__).parents[1]


def _main():
    spec = importlib.util.spec_from_file_location("exp_main", ROOT / "experiments" / "main.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("config", ["mi_face_orl.py", "mi_face_mnist.py"])
def test_smoke_config_runs(config, tmp_path):
    try:
        data.load("orl_faces" if "orl" in config else "mnist", "test")
    except FileNotFoundError as e:
        pytest.skip(f"real data not available: {e}")
    rec = _main().main([str(ROOT / "experiments" / "configs" / f"{config}:smoke"),
                        "--workdir", str(tmp_path)])
    assert rec["metrics"]["steps_run"] == 5
    assert (tmp_path / f"mi-face_{rec['config']['target_meta']['arch']}" / "results.json").exists()


def test_unknown_variant_is_refused():
    with pytest.raises(ValueError, match="variant"):
        _main().load_config(str(ROOT / "experiments" / "configs" / "mi_face_orl.py:bogus"))


def test_figure_puts_real_images_above_reconstructions(tmp_path):
    spec = importlib.util.spec_from_file_location("figure", ROOT / "experiments" / "figure.py")
    figure = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(figure)
    x = np.random.default_rng(0).random((10, 3, 8, 8, 1), np.float32)
    np.savez(tmp_path / "reconstructions.npz", x=x, y=np.arange(10))
    out = figure.main([str(tmp_path), "--dataset", "digits", "--classes", "4", "--chains", "2",
                       "--out", str(tmp_path / "fig.png")])
    img = np.asarray(Image.open(out))
    assert img.shape == (4 * (3 * 9 + 1), 4 * (4 * 9 + 1))  # 3 rows of 4 classes, scale 4
    xs, ys = data.load("digits", "train")
    first0 = xs[np.flatnonzero(ys == 0)[0], ..., 0]
    np.testing.assert_allclose(img[4:36:4, 4:36:4] / 255, first0, atol=1 / 255)


def _generative():
    path = ROOT / "experiments" / "generative.py"
    spec = importlib.util.spec_from_file_location("exp_generative", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generative_smoke_runs_every_attack_and_writes_the_table(tmp_path):
    gen = _generative()
    rows = gen.main([str(ROOT / "experiments" / "configs" / "generative.py:digits,smoke"),
                     "--workdir", str(tmp_path)])
    assert [r["attack"] for r in rows] == list(gen.load_config(
        str(ROOT / "experiments" / "configs" / "generative.py:digits")).attacks)
    by = {r["attack"]: r for r in rows}
    assert by["mi-face"]["queries"] == 0 and by["gmi"]["queries"] == 0
    assert by["zo-latent"]["queries"] == 5 * 2 * 3 * (4 + 1)  # classes * chains * steps * N+1
    assert by["p2i"]["queries"] == 200 + 200  # generator samples + public images, once
    assert all(0 <= r["resilient"] <= 1 and r["top1"] is not None for r in rows)
    table = (tmp_path / "table.md").read_text()
    assert table.count("\n") == len(rows) + 2 and "| gmi-finetuned |" in table
    assert (tmp_path / "grid.png").exists() and (tmp_path / "gan_finetuned" / "gan.json").exists()
    # a second call reuses every finished run
    assert gen.main([str(ROOT / "experiments" / "configs" / "generative.py:digits,smoke"),
                     "--workdir", str(tmp_path)]) == rows


def test_generative_variant_errors():
    with pytest.raises(ValueError, match="variant"):
        _generative().load_config(str(ROOT / "experiments" / "configs" /
                                      "generative.py:mnist,bogus"))


def test_tldr_smoke_writes_tables_and_grids(tmp_path):
    spec = importlib.util.spec_from_file_location("tldr_exp", ROOT / "experiments" / "tldr.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = module.main([str(ROOT / "experiments" / "configs" / "tldr.py:digits,smoke"),
                       "--workdir", str(tmp_path)])
    assert [r["attack"] for r in out["rows"]] == ["tldr", "ni", "mi-face"]
    assert [r["attack"] for r in out["ablation"]] == ["-grad"]
    for r in out["rows"]:
        assert 0 <= r["top1"] <= 1 and r["private"] == 600 and r["exposed"] >= 0
    like = out["likeness"]["digits"]
    assert set(like) >= {"real train", "real held-out", "tldr", "auc_train_vs_heldout"}
    assert 0 <= like["auc_train_vs_heldout"]["membership_score"] <= 1
    table = (tmp_path / "table.md").read_text()
    assert "| digits | tldr |" in table and "Ablation (digits)" in table
    img = np.asarray(Image.open(tmp_path / "digits" / "grid.png"))
    assert img.shape[0] > 10 * 8 and img.shape[1] > 4 * 8  # 10 classes x (2 samples + 2 nearest)


def test_gradient_leakage_smoke_writes_tables(tmp_path):
    spec = importlib.util.spec_from_file_location("gl_exp", ROOT / "experiments" /
                                                  "gradient_leakage.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = module.main([str(ROOT / "experiments" / "configs" / "gradient_leakage.py:smoke"),
                       "--workdir", str(tmp_path)])
    assert [r["run"] for r in out["rows"]] == ["idlg_digits", "ig_digits_b2"]
    idlg = out["rows"][0]
    assert idlg["exact_recovery_rate"] >= 0.75 and idlg["label_accuracy"] == 1.0
    none, noisy = out["defenses"]
    assert [none["defense"], noisy["defense"]] == ["none", "noise:1e-1"]
    assert noisy["psnr_mean"] < none["psnr_mean"] - 20  # the noise defense stops iDLG
    assert 0 <= noisy["test_accuracy"] <= 1 and 0 <= none["test_accuracy"] <= 1
    table = (tmp_path / "table.md").read_text()
    assert "| idlg_digits | idlg | digits |" in table and "Defenses" in table
    assert (tmp_path / "ig_digits_b2" / "grid.png").exists()


def test_privacy_smoke_writes_tables(tmp_path):
    spec = importlib.util.spec_from_file_location("privacy_exp", ROOT / "experiments" /
                                                  "privacy.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = module.main([str(ROOT / "experiments" / "configs" / "privacy.py:smoke"),
                       "--workdir", str(tmp_path)])
    plain, private = out["dp_mnist"]
    assert plain["target_epsilon"] is None and "noise_multiplier" not in plain
    # the recorded epsilon is what dp-accounting itself computes for the recorded setting
    assert private["epsilon_recorded"] == pytest.approx(private["epsilon_pld_direct"])
    assert private["epsilon_pld_direct"] <= 8.0 <= private["epsilon_rdp_direct"] + 1e-6
    assert [r["target_epsilon"] for r in out["lira_dp"]] == [None, 8.0]
    assert out["lira_dp"][1]["epsilon"] <= 8.0
    assert out["lira_cifar"]["one_by_one_s"] > 0 and out["lira_cifar"]["together_s"] > 0
    assert 0 <= out["lira_cifar"]["rmia_auc"] <= 1
    table = (tmp_path / "table.md").read_text()
    assert "DP-SGD on digits" in table and "LiRA against DP" in table


def test_grid_config_names_only_grid_parameters():
    import inspect

    from jaxinv.workflows.grid import grid, kind

    spec = importlib.util.spec_from_file_location("grid_cfg", ROOT / "experiments" / "configs"
                                                  / "grid.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    cfg = module.get_config("mnist")
    assert set(cfg.grid) <= set(inspect.signature(grid).parameters) - {"out"}
    assert all(kind(d) in ("training", "output") for d in cfg.grid.defenses)
    with pytest.raises(ValueError, match="want mnist"):
        module.get_config("bogus")
