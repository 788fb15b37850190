"""jaxinv.data: real local datasets, Debian Fashion-MNIST, user .npz, tfds (mocked), splits."""

import gzip
import os
from pathlib import Path

import numpy as np
import pytest

from jaxinv import data

SHARED = Path(os.environ.get("JAXINV_DATA_DIR") or Path(__file__).parents[2] / "shared" / "data")
FASHION_FILES = [data.DEBIAN_FASHION_DIR / f"{p}-{k}-ubyte.gz"
                 for p in ("train", "t10k") for k in ("images-idx3", "labels-idx1")]


def need(fname: str) -> Path:
    path = SHARED / fname
    if not path.is_file():
        pytest.skip(f"{path} not found (set JAXINV_DATA_DIR to the shared data folder)")
    return path


def check_images(x, y, n, shape, num_classes):
    assert x.shape == (n, *shape) and x.dtype == np.float32
    assert y.shape == (n,) and y.dtype == np.int32
    assert 0.0 <= x.min() and x.max() <= 1.0 and x.max() > 0.5  # scaled, not blank
    assert np.array_equal(np.unique(y), np.arange(num_classes))
    assert np.allclose(x * 255, np.round(x * 255), atol=1e-3)  # came from uint8 / 255


@pytest.fixture(scope="module")
def mnist():
    need("mnist.npz")
    return {s: data.load("mnist", s, data_dir=SHARED) for s in ("train", "test")}


# --- digits (embedded, offline) ---------------------------------------------------------


def test_digits_split_is_stratified_disjoint_and_deterministic():
    x, y = data.load("digits")  # default split: train
    xt, yt = data.load("digits", "test")
    xa, ya = data.load("digits", "all")
    assert x.shape == (1437, 8, 8, 1) and xt.shape == (360, 8, 8, 1) and xa.shape[0] == 1797
    assert x.dtype == np.float32 and y.dtype == np.int32 and x.max() == 1.0 and x.min() == 0.0
    assert np.allclose(x * 16, np.round(x * 16))  # 0..16 / 16
    rows = {r.tobytes() for r in xa.reshape(len(xa), -1)}
    train_rows = {r.tobytes() for r in x.reshape(len(x), -1)}
    test_rows = {r.tobytes() for r in xt.reshape(len(xt), -1)}
    assert train_rows | test_rows == rows  # union is everything (digits has a few duplicates)
    assert np.abs(np.bincount(yt) / 360 - np.bincount(ya) / 1797).max() < 0.01  # stratified
    x2, y2 = data.load("digits", "train")
    assert np.array_equal(x, x2) and np.array_equal(y, y2)
    assert data.info("digits") == (10, (8, 8, 1), tuple("0123456789"))


# --- local .npz datasets in ../shared/data ---------------------------------------------


def test_mnist(mnist):
    (x, y), (xt, yt) = mnist["train"], mnist["test"]
    check_images(x, y, 60000, (28, 28, 1), 10)
    check_images(xt, yt, 10000, (28, 28, 1), 10)
    assert abs(x.mean() * 255 - 33.318) < 1e-2  # README's check value
    assert data.info("mnist")[:2] == (10, (28, 28, 1))


def test_orl_faces_protocol_split():
    need("orl_faces.npz")
    x, y = data.load("orl_faces", "train", data_dir=SHARED)
    xt, yt = data.load("orl_faces", "test", data_dir=SHARED)
    check_images(x, y, 280, (112, 92, 1), 40)
    check_images(xt, yt, 120, (112, 92, 1), 40)
    assert (np.bincount(y) == 7).all() and (np.bincount(yt) == 3).all()
    assert data.load("orl_faces", "all", data_dir=SHARED)[0].shape == (400, 112, 92, 1)
    assert data.info("orl_faces") == (40, (112, 92, 1), None)


def test_cifar10_subset():
    need("cifar10_subset.npz")
    x, y = data.load("cifar10", "train", data_dir=SHARED)
    xt, yt = data.load("cifar10", "test", data_dir=SHARED)
    check_images(x, y, 4000, (32, 32, 3), 10)
    check_images(xt, yt, 1000, (32, 32, 3), 10)
    with np.load(SHARED / "cifar10_subset.npz") as z:
        assert data.info("cifar10").class_names == tuple(z["class_names"].tolist())


def test_env_var_is_the_default_folder(monkeypatch, mnist):
    need("mnist.npz")
    monkeypatch.setenv(data.ENV_VAR, str(SHARED))
    x, y = data.load("mnist", "test")
    assert np.array_equal(x, mnist["test"][0]) and np.array_equal(y, mnist["test"][1])


# --- Fashion-MNIST: Debian package layout ----------------------------------------------


@pytest.mark.skipif(not all(f.is_file() for f in FASHION_FILES),
                    reason="apt-get install dataset-fashion-mnist to run this test")
def test_fashion_mnist_from_debian_package(tmp_path):
    x, y = data.load("fashion_mnist", "train", data_dir=tmp_path, source="local")
    xt, yt = data.load("fashion_mnist", "test", data_dir=tmp_path, source="local")
    check_images(x, y, 60000, (28, 28, 1), 10)
    check_images(xt, yt, 10000, (28, 28, 1), 10)
    assert (np.bincount(y) == 6000).all() and (np.bincount(yt) == 1000).all()
    assert abs(x.mean() - 0.2860) < 1e-3  # the published Fashion-MNIST train mean


def _write_idx(path, arr):
    header = bytes([0, 0, 8, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + arr.astype(np.uint8).tobytes())


def test_idx_parser_on_synthetic_package(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    xs = {p: rng.integers(0, 256, (n, 28, 28), dtype=np.uint8) for p, n in [("train", 5),
                                                                           ("t10k", 3)]}
    ys = {"train": np.array([0, 1, 2, 3, 9]), "t10k": np.array([4, 5, 6])}
    for p in xs:
        _write_idx(tmp_path / f"{p}-images-idx3-ubyte.gz", xs[p])
        _write_idx(tmp_path / f"{p}-labels-idx1-ubyte.gz", ys[p])
    monkeypatch.setattr(data, "DEBIAN_FASHION_DIR", tmp_path)
    empty = tmp_path / "empty"
    x, y = data.load("fashion_mnist", "all", data_dir=empty, source="local")
    assert x.shape == (8, 28, 28, 1) and y.tolist() == [0, 1, 2, 3, 9, 4, 5, 6]
    assert np.array_equal(np.round(x[5:, ..., 0] * 255).astype(np.uint8), xs["t10k"])


# --- user .npz ---------------------------------------------------------------------------


def test_user_npz_round_trip(tmp_path):
    rng = np.random.default_rng(1)
    x_train = rng.integers(0, 256, (6, 5, 4), dtype=np.uint8)  # no channel axis
    x_test = rng.integers(0, 256, (2, 5, 4), dtype=np.uint8)
    path = tmp_path / "mine.npz"
    np.savez(path, x_train=x_train, y_train=np.arange(6) % 3, x_test=x_test, y_test=[0, 2])
    x, y = data.load(str(path), "train")
    assert x.shape == (6, 5, 4, 1) and x.dtype == np.float32 and y.dtype == np.int32
    assert np.allclose(x[..., 0], x_train / 255.0) and y.tolist() == [0, 1, 2, 0, 1, 2]
    xa, ya = data.load(path, "all")  # no x/y arrays: all = train + test
    assert xa.shape == (8, 5, 4, 1) and ya.tolist()[-2:] == [0, 2]
    xs, ys = data.load_spec(f"{path}:test")
    assert np.allclose(xs[..., 0], x_test / 255.0) and ys.tolist() == [0, 2]
    assert data.info(str(path)) == (3, (5, 4, 1), None)

    floats = rng.random((4, 3, 3, 2), dtype=np.float32)
    np.savez(tmp_path / "f.npz", x=floats, y=[1, 0, 1, 1])
    x, y = data.load_spec(f"{tmp_path / 'f.npz'}:all")
    assert np.array_equal(x, floats) and y.tolist() == [1, 0, 1, 1]
    with pytest.raises(ValueError, match=r"split 'train' needs x_train and y_train"):
        data.load(tmp_path / "f.npz", "train")

    np.savez(tmp_path / "bad.npz", x=floats * 2, y=[1, 0, 1, 1])
    with pytest.raises(ValueError, match=r"must lie in \[0, 1\]"):
        data.load(tmp_path / "bad.npz", "all")


def test_load_spec_parsing(monkeypatch):
    calls = []
    monkeypatch.setattr(data, "load", lambda name, split, **kw: calls.append((name, split, kw)))
    data.load_spec("mnist:test", data_dir="d")
    data.load_spec("digits")
    data.load_spec("a:b/c.npz")  # a colon inside a .npz path is not a split separator
    data.load_spec("dir/c.npz:all")
    assert calls == [("mnist", "test", {"data_dir": "d"}), ("digits", "train", {}),
                     ("a:b/c.npz", "train", {}), ("dir/c.npz", "all", {})]


# --- tfds ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "shape"), [("mnist", (28, 28, 1)), ("cifar10", (32, 32, 3))])
def test_tfds_data_source_under_mock(name, shape, monkeypatch, tmp_path):
    tfds = pytest.importorskip("tensorflow_datasets")
    real, calls = tfds.data_source, []

    def spy(*args, **kwargs):
        ds = real(*args, **kwargs)
        calls.append((args, kwargs, ds[0]["image"].dtype, ds[0]["image"].shape))
        return ds

    monkeypatch.setattr(tfds, "data_source", spy)
    monkeypatch.setenv(data.ENV_VAR, str(tmp_path))  # a local file must not be used
    with tfds.testing.mock_data(num_examples=6):
        x, y = data.load(name, "test", source="tfds")
        x2, _ = data.load(name, "all", source="tfds")
    assert [c[0] for c in calls] == [(name,), (name,)]
    assert [c[1]["split"] for c in calls] == ["test", "train+test"]
    assert calls[0][2:] == (np.uint8, shape)  # mock records: uint8 HWC, like the real ones
    assert x.shape == (6, *shape) and x.dtype == np.float32 and y.dtype == np.int32
    assert 0 <= x.min() and x.max() <= 1 and x.std() > 0.1  # random pixels, scaled
    assert ((y >= 0) & (y < 10)).all()
    assert np.array_equal(x, x2)  # the mock ignores the split; it is deterministic


def test_tfds_failure_is_explained_and_chained(monkeypatch, tmp_path):
    tfds = pytest.importorskip("tensorflow_datasets")

    def offline(*args, **kwargs):
        raise ConnectionError("Failed to resolve 'storage.googleapis.com'")

    monkeypatch.setattr(tfds, "data_source", offline)
    monkeypatch.delenv(data.ENV_VAR, raising=False)
    with pytest.raises(FileNotFoundError) as err:
        data.load("cifar10", "train")
    msg = str(err.value)
    assert isinstance(err.value.__cause__, ConnectionError)
    assert "cifar10" in msg and "'train'" in msg and "storage.googleapis.com" in msg
    assert f"{data.ENV_VAR} is not set" in msg and "cifar10_subset.npz" in msg
    assert "tfds build cifar10" in msg


def test_tfds_unprepared_fails_fast_offline(tmp_path):
    pytest.importorskip("tensorflow_datasets")
    # Real tfds, nothing prepared in tmp_path, download=False: no network attempt.
    with pytest.raises(FileNotFoundError, match=r"tfds 'mnist' in .*download=False") as err:
        data.load("mnist", "test", data_dir=tmp_path, source="tfds")
    assert str(tmp_path) in str(err.value) and err.value.__cause__ is not None
    assert not any(tmp_path.iterdir())  # tfds wrote nothing


# --- errors ---------------------------------------------------------------------------------


def test_unknown_name_and_split():
    with pytest.raises(ValueError, match=r"unknown dataset 'svhn'.*mnist.*orl_faces.*\.npz"):
        data.load("svhn")
    with pytest.raises(ValueError, match=r"unknown dataset 'svhn'"):
        data.info("svhn")
    with pytest.raises(ValueError, match=r"unknown split 'val' for dataset 'mnist'.*train, test"):
        data.load("mnist", "val")
    with pytest.raises(ValueError, match=r"unknown source"):
        data.load("digits", source="web")
    with pytest.raises(ValueError, match=r"not in tfds"):
        data.load("digits", source="tfds")


def test_missing_file_says_where_and_how(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError) as err:
        data.load("mnist", "test", data_dir=tmp_path, source="local")
    msg = str(err.value)
    assert "'mnist'" in msg and "'test'" in msg and str(tmp_path / "mnist.npz") in msg
    assert data.ENV_VAR in msg and "mnist.npz" in msg

    monkeypatch.delenv(data.ENV_VAR, raising=False)
    with pytest.raises(FileNotFoundError, match=r"not in tfds.*JAXINV_DATA_DIR is not set"):
        data.load("orl_faces")

    with pytest.raises(FileNotFoundError, match=r"nope\.npz.*does not exist"):
        data.load(tmp_path / "nope.npz")


# --- private / public splits ----------------------------------------------------------------


def test_split_by_class_disjoint_identities():
    x, y = data.load("digits", "all")
    private, public = data.split_by_class(x, y, [0, 3, 7])
    assert set(private.y.tolist()) == {0, 3, 7}
    assert set(public.y.tolist()) == {1, 2, 4, 5, 6, 8, 9}
    assert len(private.y) + len(public.y) == len(y)
    assert len(private.x) == (np.isin(y, [0, 3, 7])).sum()
    xp, yp = private  # a Split unpacks like a tuple
    assert np.array_equal(xp, x[np.isin(y, [0, 3, 7])]) and yp.dtype == np.int32
    with pytest.raises(ValueError, match=r"not present: \[10\]"):
        data.split_by_class(x, y, [1, 10])
    with pytest.raises(ValueError, match="non-empty"):
        data.split_by_class(x, y, [])
    with pytest.raises(ValueError, match="public side would be empty"):
        data.split_by_class(x, y, range(10))


def test_split_by_class_orl_protocol():
    need("orl_faces.npz")
    x, y = data.load("orl_faces", "all", data_dir=SHARED)
    private, public = data.split_by_class(x, y, range(20))
    assert private.x.shape == (200, 112, 92, 1) and public.x.shape == (200, 112, 92, 1)
    assert not set(private.y.tolist()) & set(public.y.tolist())


def test_split_by_sample_stratified_deterministic():
    y = np.repeat(np.arange(4), [10, 20, 30, 41])
    x = np.arange(len(y))[:, None]  # x identifies the sample
    private, public = data.split_by_sample(x, y, 0.2, seed=3)
    assert np.bincount(public.y).tolist() == [2, 4, 6, 8]
    assert np.bincount(private.y).tolist() == [8, 16, 24, 33]
    ids = np.concatenate([private.x[:, 0], public.x[:, 0]])
    assert sorted(ids.tolist()) == list(range(len(y)))  # disjoint and complete
    assert (y[public.x[:, 0]] == public.y).all()  # labels stay with their images
    again = data.split_by_sample(x, y, 0.2, seed=3)
    other = data.split_by_sample(x, y, 0.2, seed=4)
    assert np.array_equal(again[1].x, public.x)
    assert not np.array_equal(other[1].x, public.x)
    for bad in (0.0, 1.0, 1.5):
        with pytest.raises(ValueError, match="public_fraction"):
            data.split_by_sample(x, y, bad)
    with pytest.raises(ValueError, match="need x"):
        data.split_by_sample(x, y[:-1], 0.5)
