"""Damaged checkpoints: warn, fall back to the newest intact one; none intact: clear error."""

import numpy as np
import pytest
from toy import linear_apply, linear_env

from jaxinv import run_chains
from jaxinv.attacks import mi_face

ATTACK = mi_face(linear_apply, (8, 8, 1), lr=0.5)


def run(workdir=None, steps=20):
    return run_chains(ATTACK, np.arange(3), linear_env(), chains=2, steps=steps, segment=5,
                      workdir=workdir, progress=False)


def _truncate_data(step_dir):
    for f in step_dir.rglob("*"):
        if f.is_file() and f.parent.name == "d":
            f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])


@pytest.mark.parametrize("damage", ["data", "metadata", "info"])
def test_damaged_latest_checkpoint_resumes_from_the_previous(tmp_path, capsys, damage):
    straight = run(steps=30)
    run(tmp_path, steps=20)
    latest = tmp_path / "ckpt" / "20"
    if damage == "data":
        _truncate_data(latest)
    elif damage == "metadata":
        (latest / "default" / "_METADATA").write_text("")
    else:
        info = tmp_path / "info" / "0000000020.npz"
        info.write_bytes(info.read_bytes()[:50])
    resumed = run(tmp_path, steps=30)
    err = capsys.readouterr().err
    assert "damaged" in err and str(latest) in err and "resuming from step 15" in err
    np.testing.assert_array_equal(straight.best_x, resumed.best_x)
    np.testing.assert_array_equal(straight.info.loss, resumed.info.loss)


def test_no_intact_checkpoint_is_one_clear_error(tmp_path):
    run(tmp_path, steps=15)
    for step in (tmp_path / "ckpt").iterdir():
        _truncate_data(step)
    with pytest.raises(ValueError, match=r"no intact checkpoint.*delete"):
        run(tmp_path, steps=20)


def test_damaged_run_config_is_one_clear_error(tmp_path):
    run(tmp_path, steps=5)
    (tmp_path / "run_config.json").write_text("{")
    with pytest.raises(ValueError, match=r"run_config\.json is damaged"):
        run(tmp_path, steps=10)


def test_damaged_training_checkpoint_falls_back(tmp_path, capsys):
    from jaxinv.training import fit

    straight = fit("digits", "softmax", tmp_path / "a", epochs=3, progress=False)
    fit("digits", "softmax", tmp_path / "b", epochs=2, progress=False)
    _truncate_data(tmp_path / "b" / "train_ckpt" / "2")
    resumed = fit("digits", "softmax", tmp_path / "b", epochs=3, progress=False)
    assert "training checkpoint" in capsys.readouterr().err
    np.testing.assert_array_equal(straight.variables["params"]["Dense_0"]["kernel"],
                                  resumed.variables["params"]["Dense_0"]["kernel"])


def test_timing_after_resume_counts_every_call(tmp_path):
    first = run(tmp_path, steps=10)
    second = run(tmp_path, steps=20)
    assert first.timing["steps_timed"] == 10 and second.timing["steps_timed"] == 10
    assert second.timing["run_s_total"] >= first.timing["run_s"] + second.timing["run_s"] - 1e-6
