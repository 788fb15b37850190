"""Experiment configs: every config's :smoke variant runs end to end through experiments/main.py."""

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]


def _main():
    spec = importlib.util.spec_from_file_location("exp_main", ROOT / "experiments" / "main.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("config", ["mi_face_orl.py", "mi_face_mnist.py"])
def test_smoke_config_runs(config, tmp_path):
    from jaxinv import data

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
