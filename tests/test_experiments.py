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
