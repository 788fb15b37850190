"""Datasets as host NumPy: images NHWC float32 in [0, 1], labels int32.

Sources, in order: the embedded sklearn digits; a folder of ``.npz`` files
(``data_dir`` or ``$JAXINV_DATA_DIR``); Debian's Fashion-MNIST package; tfds
(``tfds.data_source``: random access, no TensorFlow needed). Any ``.npz`` path works too.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path
from typing import NamedTuple

import numpy as np

ENV_VAR = "JAXINV_DATA_DIR"
DEBIAN_FASHION = Path("/usr/share/datasets/fashion-mnist")


class DatasetInfo(NamedTuple):
    num_classes: int
    image_shape: tuple[int, int, int]
    files: tuple[str, ...]  # local .npz names looked for, in order
    tfds_name: str | None
    splits: tuple[str, ...] = ("train", "test", "all")


DATASETS: dict[str, DatasetInfo] = {
    "digits": DatasetInfo(10, (8, 8, 1), (), None),
    "mnist": DatasetInfo(10, (28, 28, 1), ("mnist.npz",), "mnist"),
    "fashion_mnist": DatasetInfo(10, (28, 28, 1), ("fashion_mnist.npz",), "fashion_mnist"),
    "cifar10": DatasetInfo(10, (32, 32, 3), ("cifar10.npz", "cifar10_subset.npz"), "cifar10"),
    "orl_faces": DatasetInfo(40, (112, 92, 1), ("orl_faces.npz",), None),
}


class Split(NamedTuple):
    x: np.ndarray
    y: np.ndarray


def info(name: str) -> DatasetInfo:
    """Static facts about a named dataset (classes, image shape, where it is looked for).

    Example:
        >>> info("orl_faces").num_classes
        40
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; known: {sorted(DATASETS)} or a .npz path")
    return DATASETS[name]


def _images(x: np.ndarray, where: str) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4:
        raise ValueError(f"{where}: images must be [N, H, W] or [N, H, W, C], got {x.shape}")
    if x.dtype == np.uint8:
        return (x.astype(np.float32) / 255.0)
    x = x.astype(np.float32)
    if x.size and (x.min() < 0 or x.max() > 1):
        raise ValueError(f"{where}: float images must lie in [0, 1], got [{x.min()}, {x.max()}]")
    return x


def _digits(split: str) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)[..., None]
    y = d.target.astype(np.int32)
    if split == "all":
        return x, y
    xtr, xte, ytr, yte = train_test_split(x, y, test_size=0.2, stratify=y, random_state=0)
    return (xtr, ytr) if split == "train" else (xte, yte)


def _from_npz(path: Path, split: str, name: str) -> tuple[np.ndarray, np.ndarray]:
    with np.load(path, allow_pickle=False) as z:
        keys = set(z.files)
        if name == "orl_faces" or ({"x", "y", "image_index"} <= keys):
            x, y, idx = z["x"], z["y"], z["image_index"]
            keep = {"train": idx <= 7, "test": idx >= 8, "all": np.ones_like(idx, bool)}[split]
            return _images(x[keep], str(path)), y[keep].astype(np.int32)
        if f"x_{split}" in keys:
            return _images(z[f"x_{split}"], str(path)), z[f"y_{split}"].astype(np.int32)
        if split == "all" and {"x_train", "x_test"} <= keys:
            x = np.concatenate([z["x_train"], z["x_test"]])
            return _images(x, str(path)), np.concatenate([z["y_train"], z["y_test"]]).astype(
                np.int32)
        if {"x", "y"} <= keys and split == "all":
            return _images(z["x"], str(path)), z["y"].astype(np.int32)
        raise ValueError(f"{path} has arrays {sorted(keys)}: split {split!r} needs "
                         f"x_{split}/y_{split} (or x/y for split 'all')")


def _idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        raw = f.read()
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(shape)


def _debian_fashion(split: str) -> tuple[np.ndarray, np.ndarray] | None:
    if not DEBIAN_FASHION.is_dir():
        return None
    parts = {"train": ["train"], "test": ["t10k"], "all": ["train", "t10k"]}[split]
    xs, ys = [], []
    for p in parts:
        xs.append(_idx(DEBIAN_FASHION / f"{p}-images-idx3-ubyte.gz"))
        ys.append(_idx(DEBIAN_FASHION / f"{p}-labels-idx1-ubyte.gz"))
    return _images(np.concatenate(xs), str(DEBIAN_FASHION)), np.concatenate(ys).astype(np.int32)


def _tfds(name: str, split: str, data_dir: str | None) -> tuple[np.ndarray, np.ndarray]:
    import tensorflow_datasets as tfds

    tsplit = "train+test" if split == "all" else split
    ds = tfds.data_source(name, split=tsplit, data_dir=data_dir)
    recs = [ds[i] for i in range(len(ds))]
    x = np.stack([r["image"] for r in recs])
    y = np.asarray([r["label"] for r in recs], np.int32)
    return _images(x, f"tfds:{name}"), y


def load(name: str, split: str = "train", *, data_dir: str | None = None,
         source: str = "auto") -> tuple[np.ndarray, np.ndarray]:
    """Load ``(x, y)``: images ``[N, H, W, C]`` float32 in [0, 1], labels int32.

    Args:
      name: ``digits`` (embedded, offline), ``mnist``, ``fashion_mnist``, ``cifar10``,
        ``orl_faces``, or a path to a ``.npz`` file.
      split: ``train``, ``test`` or ``all``. ORL faces: train = image_index 1..7,
        test = 8..10. Digits: a fixed stratified 80/20 split.
      data_dir: folder of ``.npz`` files; default ``$JAXINV_DATA_DIR``.
      source: ``auto`` (local files, then tfds), ``local`` or ``tfds``.

    Example:
        >>> x, y = load("digits", "test")
        >>> x.shape, y[:5]
        ((360, 8, 8, 1), array([...], dtype=int32))
    """
    if split not in ("train", "test", "all"):
        raise ValueError(f"unknown split {split!r} for {name!r}; use 'train', 'test' or 'all'")
    if source not in ("auto", "local", "tfds"):
        raise ValueError(f"source must be 'auto', 'local' or 'tfds', got {source!r}")
    if str(name).endswith(".npz"):
        path = Path(name)
        if not path.exists():
            raise FileNotFoundError(f"dataset file {path} does not exist")
        return _from_npz(path, split, "npz")
    meta = info(name)
    if name == "digits":
        return _digits(split)
    folder = data_dir or os.environ.get(ENV_VAR)
    looked: list[str] = []
    if source in ("auto", "local"):
        for fname in meta.files:
            if folder:
                path = Path(folder) / fname
                looked.append(str(path))
                if path.exists():
                    return _from_npz(path, split, name)
        if name == "fashion_mnist":
            looked.append(str(DEBIAN_FASHION))
            got = _debian_fashion(split)
            if got is not None:
                return got
    if not folder:
        looked.append(f"${ENV_VAR} (not set)")
    hint = (f"put {' or '.join(meta.files)} in a folder and set {ENV_VAR} to it"
            + (" (or apt-get install dataset-fashion-mnist)" if name == "fashion_mnist" else ""))
    if source in ("auto", "tfds") and meta.tfds_name:
        try:
            return _tfds(meta.tfds_name, split, folder if source == "tfds" else None)
        except Exception as e:  # tfds raises many types; all mean "not available here"
            raise FileNotFoundError(
                f"dataset {name!r} ({split}) not found. Looked in: {looked}; tfds "
                f"{meta.tfds_name!r} failed ({type(e).__name__}: {str(e)[:200]}). To provide "
                f"it: {hint}, or prepare it with tfds on a machine with internet.") from e
    raise FileNotFoundError(f"dataset {name!r} ({split}) not found. Looked in: {looked}. "
                            f"To provide it: {hint}"
                            + ("" if meta.tfds_name else f" ({name} is not in tfds)."))


def load_spec(spec: str, **kwargs) -> tuple[np.ndarray, np.ndarray]:
    """Load from ``"name:split"`` (split defaults to ``train``).

    Example:
        >>> x, y = load_spec("mnist:test")
    """
    name, _, split = spec.rpartition(":") if ":" in spec else (spec, "", "train")
    return load(name, split or "train", **kwargs)


def split_by_class(x: np.ndarray, y: np.ndarray, private_classes) -> tuple[Split, Split]:
    """Disjoint identities (face-MI protocol): private = the given classes, public = the rest.

    Example:
        >>> private, public = split_by_class(x, y, range(20))
    """
    private_classes = np.asarray(list(private_classes))
    missing = np.setdiff1d(private_classes, np.unique(y))
    if missing.size:
        raise ValueError(f"private_classes {missing.tolist()} do not occur in y")
    mask = np.isin(y, private_classes)
    return Split(x[mask], y[mask]), Split(x[~mask], y[~mask])


def split_by_sample(x: np.ndarray, y: np.ndarray, public_fraction: float,
                    seed: int = 0) -> tuple[Split, Split]:
    """A held-out public set of the same classes, stratified, deterministic per ``seed``.

    Example:
        >>> private, public = split_by_sample(x, y, 0.2)
    """
    if not 0 < public_fraction < 1:
        raise ValueError(f"public_fraction must be in (0, 1), got {public_fraction}")
    rng = np.random.default_rng(seed)
    public = np.zeros(len(y), bool)
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        public[idx[: int(round(public_fraction * len(idx)))]] = True
    return Split(x[~public], y[~public]), Split(x[public], y[public])
