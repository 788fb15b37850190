"""Datasets as host NumPy: images NHWC float32 in [0, 1], labels int32.

Where data comes from, in order (``source="auto"``):

1. ``digits``: scikit-learn's embedded 8x8 digits (offline, the default dataset).
2. A folder of ``.npz`` files: the ``data_dir`` argument, else ``$JAXINV_DATA_DIR``
   (``mnist.npz``, ``fashion_mnist.npz``, ``cifar10.npz`` or ``cifar10_subset.npz``,
   ``orl_faces.npz``). Fashion-MNIST also from Debian's ``dataset-fashion-mnist`` package.
3. ``tfds.data_source`` (ArrayRecord, random access, no TensorFlow needed) for datasets
   already prepared on disk; ``download=True`` lets tfds fetch them (needs the internet).

Any path ending in ``.npz`` is loaded directly. Nothing is cached: every call reads the
file again and returns fresh arrays.
"""

from __future__ import annotations

import gzip
import os
import zipfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

ENV_VAR = "JAXINV_DATA_DIR"
SPLITS = ("train", "test", "all")
SOURCES = ("auto", "local", "tfds")
DEBIAN_FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")


class DatasetInfo(NamedTuple):
    """Static facts about a dataset: ``image_shape`` is ``(H, W, C)``.

    Example:
        >>> digits = info("digits")
        >>> digits.num_classes, digits.image_shape, digits.class_names[:3]
        (10, (8, 8, 1), ('0', '1', '2'))
    """

    num_classes: int
    image_shape: tuple[int, int, int]
    class_names: tuple[str, ...] | None


class Split(NamedTuple):
    """Images and labels of one side of a split; unpacks as ``x, y = split``.

    Example:
        >>> private, public = split_by_class(x, y, [7])  # x, y: 16 digits test images
        >>> x_private, y_private = private
        >>> x_private.shape, y_private.tolist(), public.x.shape
        ((3, 8, 8, 1), [7, 7, 7], (13, 8, 8, 1))
    """

    x: np.ndarray
    y: np.ndarray


class _Entry(NamedTuple):
    info: DatasetInfo
    files: tuple[str, ...]  # .npz names looked for in the data folder, in order
    tfds_name: str | None


_DIGITS = tuple(str(i) for i in range(10))
_FASHION = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
            "Sneaker", "Bag", "Ankle boot")
_CIFAR10 = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
            "truck")
_REGISTRY: dict[str, _Entry] = {
    "digits": _Entry(DatasetInfo(10, (8, 8, 1), _DIGITS), (), None),
    "mnist": _Entry(DatasetInfo(10, (28, 28, 1), _DIGITS), ("mnist.npz",), "mnist"),
    "fashion_mnist": _Entry(DatasetInfo(10, (28, 28, 1), _FASHION), ("fashion_mnist.npz",),
                            "fashion_mnist"),
    "cifar10": _Entry(DatasetInfo(10, (32, 32, 3), _CIFAR10),
                      ("cifar10.npz", "cifar10_subset.npz"), "cifar10"),
    "orl_faces": _Entry(DatasetInfo(40, (112, 92, 1), None), ("orl_faces.npz",), None),
}
NAMES = tuple(_REGISTRY)


def _is_npz(name: str | os.PathLike) -> bool:
    return str(name).endswith(".npz")


def _unknown_name(name: str) -> ValueError:
    return ValueError(f"unknown dataset {name!r}; valid names: {', '.join(NAMES)}, "
                      f"or a path to a file ending in .npz")


def info(name: str) -> DatasetInfo:
    """Number of classes, image shape and class names, without loading the images.

    For a ``.npz`` path only the labels are read; ``num_classes`` is ``max(label) + 1``.

    Example:
        >>> info("orl_faces")
        DatasetInfo(num_classes=40, image_shape=(112, 92, 1), class_names=None)
    """
    if _is_npz(name):
        return _npz_info(Path(name))
    if name not in _REGISTRY:
        raise _unknown_name(name)
    return _REGISTRY[name].info


def load(name: str, split: str = "train", *, data_dir: str | os.PathLike | None = None,
         source: str = "auto", download: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Load ``(x, y)``: images ``[N, H, W, C]`` float32 in [0, 1] and int32 labels.

    Args:
      name: ``digits``, ``mnist``, ``fashion_mnist``, ``cifar10``, ``orl_faces`` or a path
        to a ``.npz`` file (arrays ``x_<split>``/``y_<split>``, or ``x``/``y`` for ``all``).
      split: ``train``, ``test`` or ``all`` (= train + test). ``digits``: fixed stratified
        80/20 split. ``orl_faces``: train = image_index 1..7, test = 8..10 (all 40 subjects
        on both sides). ``cifar10`` from ``cifar10_subset.npz`` has 4000/1000 images.
      data_dir: folder of ``.npz`` files (default ``$JAXINV_DATA_DIR``); also passed to tfds
        as its ``data_dir``.
      source: ``auto`` (local files, then tfds), ``local`` or ``tfds`` (tfds only).
      download: let tfds download and prepare a missing dataset (needs the internet; off by
        default because offline tfds retries for minutes before failing).

    Example:
        >>> x, y = load("digits", "test")
        >>> x.shape, x.dtype, y.dtype
        ((360, 8, 8, 1), dtype('float32'), dtype('int32'))
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r} for dataset {str(name)!r}; "
                         f"valid splits: {', '.join(SPLITS)}")
    if source not in SOURCES:
        raise ValueError(f"unknown source {source!r}; valid sources: {', '.join(SOURCES)}")
    if _is_npz(name):
        if source == "tfds":
            raise ValueError(f"{name}: a .npz path cannot be loaded with source='tfds'")
        path = Path(name)
        if not path.is_file():
            raise FileNotFoundError(f"dataset file {str(path.resolve())!r} does not exist "
                                    f"(asked for split {split!r})")
        return _load_npz(path, split)
    if name not in _REGISTRY:
        raise _unknown_name(name)
    entry = _REGISTRY[name]
    if name == "digits":
        if source == "tfds":
            raise ValueError("'digits' is embedded in scikit-learn, not in tfds; "
                             "use source='auto' or 'local'")
        return _digits(split)

    folder = data_dir if data_dir is not None else os.environ.get(ENV_VAR)
    looked: list[str] = []
    if source != "tfds":
        if folder:
            for fname in entry.files:
                path = Path(folder) / fname
                looked.append(str(path))
                if path.is_file():
                    return _load_npz(path, split, orl=name == "orl_faces")
        else:
            looked.append(f"${ENV_VAR} is not set and no data_dir was given")
        if name == "fashion_mnist":
            got = _debian_fashion(split, looked)
            if got is not None:
                return got

    files = " or ".join(entry.files)
    how = f"set {ENV_VAR} (or pass data_dir) to a folder containing {files}"
    if name == "fashion_mnist":
        how += f", or `apt-get install dataset-fashion-mnist` (files in {DEBIAN_FASHION_DIR})"
    if entry.tfds_name is None or source == "local":
        why = f"{name!r} is not in tfds" if entry.tfds_name is None else "tfds not tried"
        raise FileNotFoundError(f"dataset {name!r} (split {split!r}) not found ({why}). "
                                f"Looked in: {'; '.join(looked) or 'nothing'}. To provide it: "
                                f"{how}.")
    try:
        return _load_tfds(entry.tfds_name, split, data_dir, download)
    except Exception as e:  # offline tfds fails with many error types; all mean "not here"
        tfds_dir = str(data_dir) if data_dir is not None else os.environ.get(
            "TFDS_DATA_DIR", os.path.expanduser("~/tensorflow_datasets"))
        looked.append(f"tfds {entry.tfds_name!r} in {tfds_dir} (download={download})")
        raise FileNotFoundError(
            f"dataset {name!r} (split {split!r}) not found. Looked in: {'; '.join(looked)}. "
            f"tfds failed with {type(e).__name__}: {str(e)[:300]}. To provide it: {how}; or "
            f"prepare it with tfds where there is internet "
            f"(`tfds build {entry.tfds_name} --file_format=array_record`, or "
            f"load(..., download=True)), then pass its data_dir unless it is tfds's default."
        ) from e


def load_spec(spec: str, **kwargs: Any) -> tuple[np.ndarray, np.ndarray]:
    """Load from ``"name[:split]"`` (split defaults to ``train``); kwargs go to :func:`load`.

    Example:
        >>> x, y = load_spec("digits:test")
        >>> x.shape
        (360, 8, 8, 1)
    """
    name, split = spec, "train"
    if not _is_npz(spec) and ":" in spec:
        name, _, split = spec.rpartition(":")
    return load(name, split or "train", **kwargs)


def split_by_class(x: np.ndarray, y: np.ndarray,
                   private_classes: Iterable[int]) -> tuple[Split, Split]:
    """Split into disjoint identities (the face-MI protocol): ``(private, public)``.

    ``private`` holds every sample of ``private_classes``, ``public`` the other classes.
    Labels keep their original values and the sample order is kept. Both sides must be
    non-empty.

    Example:
        >>> x, y = load("digits", "all")
        >>> private, public = split_by_class(x, y, range(5))
        >>> sorted(set(public.y.tolist()))
        [5, 6, 7, 8, 9]
    """
    y = _check_xy(x, y)
    wanted = np.unique(np.asarray(list(private_classes)))
    present = np.unique(y)
    missing = np.setdiff1d(wanted, present)
    if wanted.size == 0 or missing.size:
        raise ValueError(f"private_classes must be a non-empty subset of the labels "
                         f"{present.tolist()}; not present: {missing.tolist()}")
    if wanted.size == present.size:
        raise ValueError("private_classes covers every class; the public side would be empty")
    mask = np.isin(y, wanted)
    return Split(x[mask], y[mask]), Split(x[~mask], y[~mask])


def split_by_sample(x: np.ndarray, y: np.ndarray, public_fraction: float,
                    seed: int = 0) -> tuple[Split, Split]:
    """Hold out a public set of the same classes: ``(private, public)``, disjoint samples.

    Stratified: ``round(public_fraction * n_c)`` samples of each class ``c`` go public,
    chosen with ``np.random.default_rng(seed)``, so the split is deterministic per seed.
    Sample order is kept on both sides.

    Example:
        >>> x, y = load("digits", "all")
        >>> private, public = split_by_sample(x, y, 0.25, seed=0)
        >>> len(private.y) + len(public.y) == len(y)
        True
    """
    y = _check_xy(x, y)
    if not 0 < public_fraction < 1:
        raise ValueError(f"public_fraction must be in (0, 1), got {public_fraction}")
    rng = np.random.default_rng(seed)
    public = np.zeros(len(y), bool)
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        public[rng.permutation(idx)[: round(public_fraction * len(idx))]] = True
    return Split(x[~public], y[~public]), Split(x[public], y[public])


# --- readers ------------------------------------------------------------------------------


def _check_xy(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim != 1 or len(x) != len(y):
        raise ValueError(f"need x [N, ...] and y [N]; got x {np.shape(x)} and y {y.shape}")
    return y


def _images(x: np.ndarray, where: str) -> np.ndarray:
    """uint8 0..255 -> /255; float kept (must lie in [0, 1]); [N, H, W] gets a channel."""
    x = np.asarray(x)
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4:
        raise ValueError(f"{where}: images must be [N, H, W] or [N, H, W, C], got {x.shape}")
    if x.dtype == np.uint8:
        return x.astype(np.float32) / np.float32(255)
    if not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"{where}: images must be uint8 (0..255) or float in [0, 1], "
                         f"got {x.dtype}")
    x = x.astype(np.float32)
    if not np.all((x >= 0) & (x <= 1)):  # also rejects NaN
        raise ValueError(f"{where}: float images must lie in [0, 1], "
                         f"got [{np.nanmin(x)}, {np.nanmax(x)}] (NaN: {np.isnan(x).any()})")
    return x


def _labels(y: np.ndarray, n: int, where: str) -> np.ndarray:
    y = np.asarray(y)
    if y.shape != (n,) or not np.issubdtype(y.dtype, np.integer) or (y < 0).any():
        raise ValueError(f"{where}: labels must be {n} non-negative integers, "
                         f"got shape {y.shape} dtype {y.dtype}")
    return y.astype(np.int32)


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


def _load_npz(path: Path, split: str, orl: bool = False) -> tuple[np.ndarray, np.ndarray]:
    where = f"{path} (split {split!r})"
    with np.load(path, allow_pickle=False) as z:
        keys = set(z.files)
        if orl:  # ORL protocol: images 1..7 of every subject train, 8..10 test
            idx = z["image_index"]
            keep = {"train": idx <= 7, "test": idx >= 8, "all": np.ones(idx.shape, bool)}[split]
            x, y = z["x"][keep], z["y"][keep]
        elif {f"x_{split}", f"y_{split}"} <= keys:
            x, y = z[f"x_{split}"], z[f"y_{split}"]
        elif split == "all" and {"x", "y"} <= keys:
            x, y = z["x"], z["y"]
        elif split == "all" and {"x_train", "y_train", "x_test", "y_test"} <= keys:
            x = np.concatenate([z["x_train"], z["x_test"]])
            y = np.concatenate([z["y_train"], z["y_test"]])
        else:
            hint = (" (for the ORL face split use load('orl_faces', data_dir=...))"
                    if "image_index" in keys else "")
            raise ValueError(f"{path} has arrays {sorted(keys)}; split {split!r} needs "
                             f"x_{split} and y_{split} (or x and y for split 'all'){hint}")
    x = _images(x, where)
    return x, _labels(y, len(x), where)


def _npz_info(path: Path) -> DatasetInfo:
    if not path.is_file():
        raise FileNotFoundError(f"dataset file {str(path.resolve())!r} does not exist")
    with zipfile.ZipFile(path) as zf:  # read the image array header only, not its data
        shapes = {}
        for member in zf.namelist():
            with zf.open(member) as f:
                fmt = np.lib.format
                read = (fmt.read_array_header_1_0 if fmt.read_magic(f) == (1, 0)
                        else fmt.read_array_header_2_0)
                shapes[member.removesuffix(".npy")] = read(f)[0]
    with np.load(path, allow_pickle=False) as z:
        ys = [z[k] for k in sorted(z.files) if k == "y" or k.startswith("y_")]
        names = tuple(str(s) for s in z["class_names"]) if "class_names" in z.files else None
    xkeys = sorted(k for k in shapes if k == "x" or k.startswith("x_"))
    if not ys or not xkeys:
        raise ValueError(f"{path} has no x/y or x_<split>/y_<split> arrays: {sorted(shapes)}")
    shape = tuple(int(s) for s in shapes[xkeys[0]][1:])
    shape = (*shape, 1) if len(shape) == 2 else shape
    k = int(max(int(y.max()) for y in ys if y.size)) + 1
    return DatasetInfo(len(names) if names else k, shape, names)


def _read_idx(path: Path) -> np.ndarray:
    """Parse a gzip'd IDX file of unsigned bytes (the MNIST / Fashion-MNIST format)."""
    with gzip.open(path, "rb") as f:
        raw = f.read()
    if raw[:3] != b"\x00\x00\x08":
        raise ValueError(f"{path}: not an IDX file of unsigned bytes (magic {raw[:4].hex()})")
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(shape)


def _debian_fashion(split: str, looked: list[str]) -> tuple[np.ndarray, np.ndarray] | None:
    parts = {"train": ["train"], "test": ["t10k"], "all": ["train", "t10k"]}[split]
    files = [(DEBIAN_FASHION_DIR / f"{p}-images-idx3-ubyte.gz",
              DEBIAN_FASHION_DIR / f"{p}-labels-idx1-ubyte.gz") for p in parts]
    looked.extend(str(f) for pair in files for f in pair)
    if not all(f.is_file() for pair in files for f in pair):
        return None
    x = _images(np.concatenate([_read_idx(xi) for xi, _ in files]), str(DEBIAN_FASHION_DIR))
    y = np.concatenate([_read_idx(yi) for _, yi in files])
    return x, _labels(y, len(x), str(DEBIAN_FASHION_DIR))


def _load_tfds(name: str, split: str, data_dir: str | os.PathLike | None,
               download: bool) -> tuple[np.ndarray, np.ndarray]:
    import tensorflow_datasets as tfds

    # file_format is explicit: tfds only defaults to ArrayRecord when data_dir is None.
    ds = tfds.data_source(name, split="train+test" if split == "all" else split,
                          data_dir=None if data_dir is None else str(data_dir),
                          download=download, builder_kwargs={"file_format": "array_record"})
    n = len(ds)
    first = ds[0] if n else None
    if first is None:
        raise ValueError(f"tfds {name!r} split {split!r} is empty")
    x = np.empty((n, *np.shape(first["image"])), np.asarray(first["image"]).dtype)
    y = np.empty(n, np.int64)
    for i in range(n):  # one by one: __getitems__ is broken under tfds.testing.mock_data
        rec = first if i == 0 else ds[i]
        x[i], y[i] = rec["image"], rec["label"]
    where = f"tfds:{name} (split {split!r})"
    x = _images(x, where)
    return x, _labels(y, n, where)
