"""Training on the embedded digits: learns, resumes exactly, saves and loads."""

import json

import jax
import numpy as np
import pytest

from jaxinv import data
from jaxinv.training.classifier import fit, load_classifier


def _params(clf):
    return jax.tree.leaves(jax.device_get(clf.variables))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("digits_cnn")
    return workdir, fit("digits", "cnn", workdir, epochs=6, progress=False)


def test_fit_learns_digits(trained):
    workdir, clf = trained
    # chance is 0.10; 6 epochs reach ~0.95 (the 25-epoch default reaches ~0.98)
    assert clf.meta["test_accuracy"] > 0.9, clf.meta
    assert clf.meta["train_accuracy"] > 0.9
    meta = json.loads((workdir / "model.json").read_text())
    assert meta["epochs"] == 6 and meta["input_shape"] == [8, 8, 1]
    assert meta["num_classes"] == 10 and meta["versions"]["jax"] == jax.__version__


def test_load_classifier_round_trip(trained):
    workdir, clf = trained
    loaded = load_classifier(workdir)
    x, _ = data.load("digits", "test")
    np.testing.assert_array_equal(loaded.logits(x), clf.logits(x))
    np.testing.assert_array_equal(loaded.features(x[:7]), clf.features(x[:7]))
    assert loaded.meta == json.loads((workdir / "model.json").read_text())


@pytest.mark.parametrize("arch,kwargs", [
    ("cnn", {}),
    ("vgg", {"arch_kwargs": {"blocks": [[8]], "dense": 16}, "augment": 1}),  # BatchNorm
])
def test_resume_equals_straight_run(tmp_path, arch, kwargs):
    opts = dict(progress=False, batch_size=256, **kwargs)
    fit("digits", arch, tmp_path / "a", epochs=2, **opts)
    resumed = fit("digits", arch, tmp_path / "a", epochs=4, **opts)
    straight = fit("digits", arch, tmp_path / "b", epochs=4, **opts)
    assert resumed.meta["epochs"] == straight.meta["epochs"] == 4
    for a, b in zip(_params(resumed), _params(straight), strict=True):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match=r"other settings.*lr"):
        fit("digits", arch, tmp_path / "a", epochs=5, **{**opts, "lr": 0.5})


def test_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nowhere.*jaxinv train --dataset D --arch A"):
        load_classifier(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="unknown arch 'transformer'"):
        fit("digits", "transformer", tmp_path / "t", progress=False)
    with pytest.raises(ValueError, match="epochs must be >= 1"):
        fit("digits", "cnn", tmp_path / "t", epochs=0, progress=False)


def test_cli_batch_size_defaults_to_the_dataset_defaults(monkeypatch):
    """`jaxinv train` without --batch-size uses DEFAULTS (ORL: 32), not a CLI constant."""
    from jaxinv import cli
    from jaxinv.training import classifier

    seen = {}
    monkeypatch.setattr(classifier, "fit", lambda *a, **kw: seen.update(kw) or (_ for _ in ()
                        ).throw(ValueError("stop")))
    assert cli.main(["train", "--dataset", "orl_faces", "--arch", "cnn", "--workdir", "x"]) == 2
    assert seen["batch_size"] is None
    assert classifier._settings("orl_faces", "cnn", batch_size=None,
                                weight_decay=1e-4)["batch_size"] == 32
    for arch in ("cnn", "resnet", "vgg", "mlp"):
        assert ("fashion_mnist", arch) in classifier.DEFAULTS
