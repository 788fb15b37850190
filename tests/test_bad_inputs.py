"""Bad input files and non-finite model outputs give one-line errors naming the thing and
the problem; results files are strict JSON (NaN/inf become null, with a reason)."""

import importlib.util
import json
import shutil

import jax
import numpy as np
import pytest

from jaxinv import cli, data
from jaxinv.evaluation import results
from jaxinv.models import Classifier
from jaxinv.training.classifier import accuracy, fit, load_classifier


def _one_line(e: pytest.ExceptionInfo) -> str:
    msg = str(e.value)
    assert "\n" not in msg, msg
    return msg


def _npz(path, **arrays):
    np.savez(path, **arrays)
    return path


def _good(path):
    return _npz(path, x_train=np.zeros((4, 8, 8), np.uint8), y_train=np.arange(4),
                x_test=np.zeros((2, 8, 8), np.uint8), y_test=np.arange(2))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A digits softmax trained for one epoch (workdir, classifier)."""
    workdir = tmp_path_factory.mktemp("tiny")
    return workdir, fit("digits", "softmax", workdir, epochs=1, progress=False)


def _copy(workdir, tmp_path):
    dest = tmp_path / "model"
    shutil.copytree(workdir, dest)
    return dest


# --- dataset files ----------------------------------------------------------------------


def test_truncated_npz(tmp_path):
    path = _good(tmp_path / "d.npz")
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ValueError) as e:
        data.load(path, "train")
    msg = _one_line(e)
    assert str(path) in msg and "truncated or damaged" in msg
    with pytest.raises(ValueError, match="truncated or damaged") as e:
        data.info(str(path))
    assert str(path) in _one_line(e)


def test_damaged_array_inside_npz(tmp_path):
    path = tmp_path / "d.npz"
    np.savez_compressed(path, x=np.random.default_rng(0).random((50, 8, 8)), y=np.arange(50))
    raw = bytearray(path.read_bytes())
    raw[200:260] = bytes(60)  # inside the first member, the central directory intact
    path.write_bytes(bytes(raw))
    with pytest.raises(ValueError) as e:
        data.load(path, "all")
    msg = _one_line(e)
    assert str(path) in msg and "truncated or damaged" in msg


@pytest.mark.parametrize("content", [b"hello, not a zip archive\n", b""])
def test_not_an_npz(tmp_path, content):
    path = tmp_path / "d.npz"
    path.write_bytes(content)
    with pytest.raises(ValueError) as e:
        data.load(path, "train")
    msg = _one_line(e)
    assert str(path) in msg and "not an .npz archive" in msg
    assert "allow_pickle" not in msg


def test_empty_dataset(tmp_path):
    path = _npz(tmp_path / "d.npz", x_train=np.zeros((0, 8, 8), np.uint8),
                y_train=np.zeros(0, np.int64))
    with pytest.raises(ValueError) as e:
        data.load(path, "train")
    msg = _one_line(e)
    assert str(path) in msg and "empty" in msg
    with pytest.raises(ValueError) as e:
        data.info(str(path))
    msg = _one_line(e)
    assert str(path) in msg and "empty" in msg


def test_missing_arrays_and_wrong_dtypes(tmp_path):
    path = _npz(tmp_path / "d.npz", images=np.zeros((3, 8, 8), np.uint8))
    with pytest.raises(ValueError, match=r"split 'train' needs x_train and y_train") as e:
        data.load(path, "train")
    assert str(path) in _one_line(e)
    path = _npz(tmp_path / "e.npz", x=np.zeros((3, 8, 8), np.uint8), y=np.array([0.0, 1, 2]))
    with pytest.raises(ValueError, match="labels must be integers, got dtype float64") as e:
        data.load(path, "all")
    assert str(path) in _one_line(e)
    path = _npz(tmp_path / "f.npz", x=np.zeros((3, 8, 8), np.uint8), y=np.arange(4))
    with pytest.raises(ValueError, match=r"shape \(3,\), one per image") as e:
        data.load(path, "all")
    assert str(path) in _one_line(e)
    path = _npz(tmp_path / "g.npz", x=np.zeros((3, 8), np.uint8), y=np.arange(3))
    with pytest.raises(ValueError, match=r"images must be \[N, H, W\]") as e:
        data.load(path, "all")
    assert str(path) in _one_line(e)


def test_label_out_of_range(tmp_path):
    y = np.arange(4)
    y[1] = 10**8
    path = _npz(tmp_path / "d.npz", x_train=np.zeros((4, 8, 8), np.uint8), y_train=y,
                x_test=np.zeros((2, 8, 8), np.uint8), y_test=np.arange(2))
    with pytest.raises(ValueError) as e:
        data.load(path, "train")
    msg = _one_line(e)
    assert str(path) in msg and "labels out of range" in msg and "100000000" in msg
    assert f"[0, {data.MAX_CLASSES})" in msg
    with pytest.raises(ValueError, match="labels out of range"):  # before any allocation
        fit(str(path), "softmax", tmp_path / "w", epochs=1, progress=False)
    with pytest.raises(ValueError, match="labels out of range"):
        data.info(str(path))
    y[1] = -1
    path = _npz(tmp_path / "n.npz", x=np.zeros((4, 8, 8), np.uint8), y=y)
    with pytest.raises(ValueError, match=r"labels out of range.*min -1"):
        data.load(path, "all")


def test_split_shapes_must_agree(tmp_path):
    path = _npz(tmp_path / "d.npz", x_train=np.zeros((4, 8, 8), np.uint8), y_train=np.arange(4),
                x_test=np.zeros((2, 6, 6), np.uint8), y_test=np.arange(2))
    with pytest.raises(ValueError, match="different shapes") as e:
        data.load(path, "all")
    assert str(path) in _one_line(e)
    with pytest.raises(ValueError, match=r"train images .* but test images"):
        fit(str(path), "softmax", tmp_path / "w", epochs=1, progress=False)


@pytest.mark.parametrize("bad,problem", [(np.nan, "non-finite"), (np.inf, "non-finite"),
                                         (1.5, r"must lie in \[0, 1\]")])
def test_bad_float_pixels(tmp_path, bad, problem):
    x = np.full((3, 8, 8), 0.5, np.float32)
    x[1, 2, 3] = bad
    path = _npz(tmp_path / "d.npz", x=x, y=np.arange(3))
    with pytest.raises(ValueError, match=problem) as e:
        data.load(path, "all")
    assert str(path) in _one_line(e)


def test_integer_pixels_must_lie_in_0_255(tmp_path):
    x = np.full((3, 8, 8), 255, np.int64)
    path = _npz(tmp_path / "ok.npz", x=x, y=np.arange(3))
    assert data.load(path, "all")[0].max() == 1.0  # any integer dtype in 0..255 is fine
    x[0, 0, 0] = 256
    path = _npz(tmp_path / "d.npz", x=x, y=np.arange(3))
    with pytest.raises(ValueError, match=r"integer images must lie in \[0, 255\]") as e:
        data.load(path, "all")
    assert str(path) in _one_line(e)


def test_named_dataset_file_must_match_the_dataset(tmp_path):
    _npz(tmp_path / "mnist.npz", x_train=np.zeros((4, 8, 8), np.uint8), y_train=np.arange(4))
    with pytest.raises(ValueError, match=r"must be \[N, 28, 28, 1\]") as e:
        data.load("mnist", "train", data_dir=tmp_path)
    assert str(tmp_path / "mnist.npz") in _one_line(e)
    _npz(tmp_path / "mnist.npz", x_train=np.zeros((4, 28, 28), np.uint8),
         y_train=np.array([0, 1, 2, 10]))
    with pytest.raises(ValueError, match=r"labels out of range.*\[0, 10\).*10 classes"):
        data.load("mnist", "train", data_dir=tmp_path)


# --- trained models -------------------------------------------------------------------


def test_truncated_variables(tiny, tmp_path):
    workdir = _copy(tiny[0], tmp_path)
    biggest = max((p for p in (workdir / "variables").rglob("*") if p.is_file()),
                  key=lambda p: p.stat().st_size)
    raw = biggest.read_bytes()
    biggest.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ValueError) as e:
        load_classifier(workdir)
    msg = _one_line(e)
    assert str(workdir / "variables") in msg and "damaged" in msg
    assert "jaxinv train --dataset digits --arch softmax" in msg and "restore" in msg


def test_missing_variables(tiny, tmp_path):
    workdir = _copy(tiny[0], tmp_path)
    shutil.rmtree(workdir / "variables")
    with pytest.raises(FileNotFoundError, match="missing") as e:
        load_classifier(workdir)
    assert str(workdir / "variables") in _one_line(e)


@pytest.mark.parametrize("text,problem", [
    ("", "empty"), ('{"arch": "softmax", ', "invalid JSON"), ("[1, 2]", "not an object"),
    ('{"arch": "softmax"}', "missing num_classes"),
    ('{"arch": "transformer", "num_classes": 10, "input_shape": [8, 8, 1], "dataset": "d"}',
     "unknown arch"),
    ('{"arch": "softmax", "num_classes": 10, "input_shape": [8, 8], "dataset": "d"}',
     "input_shape"),
])
def test_damaged_model_json(tiny, tmp_path, text, problem):
    workdir = _copy(tiny[0], tmp_path)
    (workdir / "model.json").write_text(text)
    with pytest.raises(ValueError) as e:
        load_classifier(workdir)
    msg = _one_line(e)
    assert str(workdir / "model.json") in msg and "damaged" in msg and problem in msg
    assert "jaxinv train" in msg


@pytest.mark.skipif(importlib.util.find_spec("torch") is not None, reason="torch is installed")
def test_pth_without_torch(tmp_path):
    from jaxinv.models.inception import load_inception

    path = tmp_path / "pt_inception.pth"
    path.write_bytes(b"not really torch")
    with pytest.raises(ValueError) as e:
        load_inception(path)
    assert isinstance(e.value, ImportError)  # also an ImportError, as before
    msg = _one_line(e)
    assert str(path) in msg and "pip install torch" in msg
    assert "python -m jaxinv.models.inception convert" in msg


def test_damaged_inception_npz(tmp_path):
    from jaxinv.models.inception import load_inception

    path = tmp_path / "w.npz"
    path.write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(ValueError) as e:
        load_inception(path)
    msg = _one_line(e)
    assert str(path) in msg and "truncated" in msg
    np.savez(path, **{"Conv2d_1a_3x3.bn.bias": np.zeros(32, np.float32)})
    with pytest.raises(ValueError, match="missing") as e:
        load_inception(path)
    assert str(path) in _one_line(e)


# --- non-finite model outputs -----------------------------------------------------------


def _nan_model(clf):
    variables = jax.tree.map(lambda v: v * np.nan, clf.variables)
    return Classifier(clf.module, variables, clf.meta)


def test_nan_evaluator_in_judge(tiny):
    bad = _nan_model(tiny[1])
    x, y = data.load("digits", "test")
    rec = np.stack([x[y == 3][:2], x[y == 6][:2]])
    with pytest.raises(FloatingPointError) as e:
        results.judge(bad, rec, np.array([3, 6]))
    msg = _one_line(e)
    assert "softmax trained on digits" in msg and "non-finite logits" in msg

    class Duck:  # not a Classifier: judge checks the logits itself
        def logits(self, x):
            return np.full((len(x), 10), np.nan, np.float32)

    with pytest.raises(FloatingPointError, match="classifier Duck: non-finite logits"):
        results.judge(Duck(), rec, np.array([3, 6]))
    with pytest.raises(FloatingPointError, match="non-finite logits"):
        accuracy(Duck(), x, y)
    with pytest.raises(FloatingPointError, match="softmax trained on digits"):
        accuracy(bad, x, y)
    with pytest.raises(FloatingPointError, match="non-finite logits"):
        bad.features(x[:3])
    assert np.isfinite(tiny[1].logits(x)).all()  # the healthy model is unaffected


def test_nan_input_images(tiny):
    x = np.zeros((2, 8, 8, 1), np.float32)
    x[0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="softmax trained on digits: input images hold 1 non"):
        tiny[1].logits(x)


# --- strict JSON ----------------------------------------------------------------------------


def _strict(text):
    def refuse(c):
        raise AssertionError(f"not strict JSON: {c}")
    return json.loads(text, parse_constant=refuse)


def test_write_json_is_strict(tmp_path):
    record = {"metrics": {"knn_dist": np.float32("nan"), "top1": np.float32(0.5),
                          "fid": float("inf"), "hist": np.array([1.0, np.nan, -np.inf]),
                          "per_class": {"3": {"conf": float("nan")}}},
              "y": np.arange(2, dtype=np.int64), "n": np.int64(3)}
    path = results.write_json(tmp_path / "results.json", record,
                              reasons={"metrics.knn_dist": "nan: no correctly classified "
                                                           "reconstruction"})
    got = _strict(path.read_text())
    m = got["metrics"]
    assert m["knn_dist"] is None and m["fid"] is None and m["top1"] == 0.5
    assert m["hist"] == [1.0, None, None] and m["per_class"]["3"]["conf"] is None
    assert got["y"] == [0, 1] and got["n"] == 3
    assert got["nulls"] == {
        "metrics.knn_dist": "nan: no correctly classified reconstruction",
        "metrics.fid": "not a finite number (inf)",
        "metrics.hist": "2 of 3 values not finite numbers (-inf, nan), first at index 1",
        "metrics.per_class.3.conf": "not a finite number (nan)"}

    # written again (e.g. after evaluate adds metrics): the reasons of values still null
    # stay, those of values now finite go
    got["metrics"]["fid"] = 1.0
    got["metrics"]["new"] = float("nan")
    again = _strict(results.write_json(tmp_path / "results.json", got).read_text())
    assert again["nulls"] == {
        "metrics.new": "not a finite number (nan)",
        "metrics.knn_dist": "nan: no correctly classified reconstruction",
        "metrics.hist": "2 of 3 values not finite numbers (-inf, nan), first at index 1",
        "metrics.per_class.3.conf": "not a finite number (nan)"}
    clean = _strict(results.write_json(tmp_path / "c.json", {"a": 1.0}).read_text())
    assert clean == {"a": 1.0}  # no "nulls" when nothing is null


def test_summary_json_is_one_strict_line():
    text = results.summary_json({"psnr": np.float32(12.5), "fid": float("inf"),
                                 "hist": np.array([np.nan, 1.0]), "n": np.int64(3)})
    assert "\n" not in text
    assert _strict(text) == {"psnr": 12.5, "fid": None, "hist": [None, 1.0], "n": 3}


# --- through the CLI: exit 2 and one line on stderr -------------------------------------


def _cli(argv, capsys, monkeypatch):
    monkeypatch.setenv("JAXINV_NO_COMPILATION_CACHE", "1")
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"jaxinv {argv[0]}: error: "), err
    return err


def test_cli_bad_dataset_files(tmp_path, capsys, monkeypatch):
    y = np.arange(4)
    y[0] = 10**8
    path = _npz(tmp_path / "big.npz", x_train=np.zeros((4, 8, 8), np.uint8), y_train=y)
    err = _cli(["train", "--dataset", str(path), "--arch", "softmax", "--workdir",
                str(tmp_path / "w")], capsys, monkeypatch)
    assert str(path) in err and "labels out of range" in err
    path = tmp_path / "trunc.npz"
    raw = _good(path).read_bytes()
    path.write_bytes(raw[:100])
    err = _cli(["train", "--dataset", str(path), "--arch", "softmax", "--workdir",
                str(tmp_path / "w")], capsys, monkeypatch)
    assert str(path) in err and "truncated or damaged" in err


def test_cli_damaged_model(tiny, tmp_path, capsys, monkeypatch):
    workdir = _copy(tiny[0], tmp_path)
    (workdir / "model.json").write_text("{")
    err = _cli(["serve", "--target", str(workdir)], capsys, monkeypatch)
    assert str(workdir / "model.json") in err and "damaged" in err


@pytest.mark.skipif(importlib.util.find_spec("torch") is not None, reason="torch is installed")
def test_cli_pth_without_torch(tmp_path, capsys, monkeypatch):
    path = tmp_path / "pt_inception.pth"
    path.write_bytes(b"x")
    err = _cli(["evaluate", "--run", str(tmp_path / "run"), "--eval-model", str(tmp_path),
                "--private", "digits:train", "--inception", str(path)], capsys, monkeypatch)
    assert str(path) in err and "pip install torch" in err
