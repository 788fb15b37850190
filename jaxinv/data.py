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
MAX_CLASSES = 10_000  # labels of a .npz without a known class count: integers in [0, this)


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

    A missing file raises ``FileNotFoundError``. A file that is truncated, not an ``.npz``,
    empty, or holds wrong arrays (missing, wrong dtype or shape, labels outside
    ``[0, num_classes)`` or ``[0, MAX_CLASSES)``, pixels NaN/inf or outside [0, 1] / 0..255)
    raises a one-line ``ValueError`` naming the file and the problem.

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
                    return _load_npz(path, split, orl=name == "orl_faces", expect=entry.info)
        else:
            looked.append(f"${ENV_VAR} is not set and no data_dir was given")
        if name == "fashion_mnist":
            got = _debian_fashion(split, looked, entry.info)
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
        got = _load_tfds(entry.tfds_name, split, data_dir, download)
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
    x, y = got
    where = f"tfds:{entry.tfds_name} (split {split!r})"
    x = _images(x, where, entry.info.image_shape)
    return x, _labels(y, len(x), where, entry.info.num_classes)


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


def subset(x: np.ndarray, y: np.ndarray, spec: str, side: str = "private") -> Split:
    """One side of a public/private protocol, from a spec string.

    ``"classes:0-4"`` (or ``"classes:0,2,4"``) keeps the samples of those classes, whatever
    the ``side`` (GMI's MNIST protocol: private classes 0-4, public 5-9).
    ``"sample:F[:SEED]"`` keeps the ``side`` (``"private"`` or ``"public"``) of
    :func:`split_by_sample` with public fraction ``F`` (the easier by-sample setting).

    Example:
        >>> x, y = load("digits", "all")
        >>> sorted(set(subset(x, y, "classes:5-9").y.tolist()))
        [5, 6, 7, 8, 9]
        >>> a, b = subset(x, y, "sample:0.5", "private"), subset(x, y, "sample:0.5", "public")
        >>> len(a.y) + len(b.y) == len(y)
        True
    """
    kind, _, rest = spec.partition(":")
    if side not in ("private", "public"):
        raise ValueError(f"side must be 'private' or 'public', got {side!r}")
    try:
        if kind == "classes":
            return Split(*split_by_class(x, y, parse_classes(rest))[0])
        if kind == "sample":
            frac, _, seed = rest.partition(":")
            private, public = split_by_sample(x, y, float(frac), int(seed or 0))
            return private if side == "private" else public
    except ValueError as e:
        raise ValueError(f"split {spec!r}: {e}") from None
    raise ValueError(f"unknown split {spec!r}: use classes:A-B (or classes:A,B,...) or "
                     "sample:FRACTION[:SEED]")


def parse_classes(text: str) -> list[int]:
    """``"0-4"`` or ``"0,2,4"`` (or a mix, ``"0-2,7"``) -> a sorted list of class ids.

    Example:
        >>> parse_classes("0-2,7")
        [0, 1, 2, 7]
    """
    out: set[int] = set()
    for part in filter(None, text.replace(" ", "").split(",")):
        lo, dash, hi = part.partition("-")
        try:
            out.update(range(int(lo), int(hi) + 1) if dash else [int(lo)])
        except ValueError:
            raise ValueError(f"bad class list {text!r}: want e.g. 0-4 or 0,2,4") from None
    if not out:
        raise ValueError(f"empty class list {text!r}")
    return sorted(out)


# --- readers ------------------------------------------------------------------------------


def _check_xy(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim != 1 or len(x) != len(y):
        raise ValueError(f"need x [N, ...] and y [N]; got x {np.shape(x)} and y {y.shape}")
    return y


def _images(x: np.ndarray, where: str, shape: tuple[int, ...] | None = None) -> np.ndarray:
    """uint8 (or other integer) 0..255 -> /255; float kept (must be finite and lie in
    [0, 1]); [N, H, W] gets a channel. ``shape``: the ``(H, W, C)`` a named dataset has."""
    x = np.asarray(x)
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4:
        raise ValueError(f"{where}: images must be [N, H, W] or [N, H, W, C], got shape "
                         f"{x.shape}")
    if len(x) == 0:
        raise ValueError(f"{where}: the dataset is empty (images have shape {x.shape})")
    if 0 in x.shape:
        raise ValueError(f"{where}: images have an empty axis (shape {x.shape})")
    if shape is not None and tuple(x.shape[1:]) != tuple(shape):
        raise ValueError(f"{where}: images must be [N, {', '.join(map(str, shape))}] for this "
                         f"dataset, got {list(x.shape)}")
    if np.issubdtype(x.dtype, np.integer):
        if x.dtype != np.uint8:
            lo, hi = int(x.min()), int(x.max())
            if lo < 0 or hi > 255:
                raise ValueError(f"{where}: integer images must lie in [0, 255], got "
                                 f"[{lo}, {hi}] ({x.dtype})")
        return x.astype(np.float32) / np.float32(255)
    if not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"{where}: images must be uint8 (0..255) or float in [0, 1], "
                         f"got dtype {x.dtype}")
    x = x.astype(np.float32)
    finite = np.isfinite(x)
    if not finite.all():
        nan = int(np.isnan(x).sum())
        raise ValueError(f"{where}: images hold non-finite pixel values ({nan} NaN, "
                         f"{int((~finite).sum()) - nan} inf); pixels must be finite, in [0, 1]")
    if not np.all((x >= 0) & (x <= 1)):
        raise ValueError(f"{where}: float images must lie in [0, 1], "
                         f"got [{x.min()}, {x.max()}]")
    return x


def _labels(y: np.ndarray, n: int, where: str, num_classes: int | None = None) -> np.ndarray:
    """int32 labels, one per image, integers in ``[0, num_classes or MAX_CLASSES)``."""
    y = np.asarray(y)
    if y.shape != (n,):
        raise ValueError(f"{where}: labels must have shape ({n},), one per image, "
                         f"got shape {y.shape}")
    if not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"{where}: labels must be integers, got dtype {y.dtype}")
    if y.size == 0:
        return y.astype(np.int32)
    k = MAX_CLASSES if num_classes is None else num_classes
    lo, hi = int(y.min()), int(y.max())
    if lo < 0 or hi >= k:
        bound = (f"at most {MAX_CLASSES} classes are supported" if num_classes is None
                 else f"the dataset has {num_classes} classes")
        raise ValueError(f"{where}: labels out of range: must be integers in [0, {k}) "
                         f"({bound}), got min {lo}, max {hi}")
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


_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")  # a local file header, an empty archive


def _open_npz(path: Path) -> Any:
    """``np.load(path)`` as an ``NpzFile``; a file that is not one raises a one-line
    ``ValueError`` naming it and what is wrong."""
    with open(path, "rb") as f:
        head = f.read(4)
    if not head:
        raise ValueError(f"{path}: empty file (0 bytes), not an .npz archive")
    if head not in _ZIP_MAGIC:
        raise ValueError(f"{path}: not an .npz archive (a zip of .npy arrays; the file starts "
                         f"with {head!r}); save one with np.savez(path, x=..., y=...)")
    try:
        z = np.load(path, allow_pickle=False)
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as e:
        raise ValueError(f"{path}: truncated or damaged .npz archive ({type(e).__name__}: "
                         f"{_short(e)}); copy or save the file again") from None
    if not isinstance(z, np.lib.npyio.NpzFile):  # pragma: no cover - zip magic checked
        raise ValueError(f"{path}: not an .npz archive")
    return z


def _array(z: Any, key: str, path: Path) -> np.ndarray:
    """Array ``key`` of the open archive ``z``; damage raises a one-line ``ValueError``."""
    try:
        return z[key]
    except MemoryError:
        raise
    except Exception as e:  # zipfile, zlib, numpy header parsing: all mean a damaged file
        if "Object arrays" in str(e):
            raise ValueError(f"{path}: array {key!r} holds Python objects (dtype object); "
                             f"store numeric arrays") from None
        raise ValueError(f"{path}: truncated or damaged .npz archive: array {key!r} is "
                         f"unreadable ({type(e).__name__}: {_short(e)}); copy or save the "
                         f"file again") from None


def _short(e: BaseException) -> str:
    return " ".join(str(e).split())[:200]


def _load_npz(path: Path, split: str, orl: bool = False,
              expect: DatasetInfo | None = None) -> tuple[np.ndarray, np.ndarray]:
    where = f"{path} (split {split!r})"
    with _open_npz(path) as z:
        keys = set(z.files)
        get = lambda k: _array(z, k, path)
        if orl:  # ORL protocol: images 1..7 of every subject train, 8..10 test
            missing = sorted({"x", "y", "image_index"} - keys)
            if missing:
                raise ValueError(f"{path} has arrays {sorted(keys)}; the ORL face split needs "
                                 f"x, y and image_index (missing {', '.join(missing)})")
            idx = get("image_index")
            x, y = get("x"), get("y")
            if idx.shape != (len(x),) or not np.issubdtype(idx.dtype, np.integer):
                raise ValueError(f"{path}: image_index must be {len(x)} integers (one per "
                                 f"image), got shape {idx.shape} dtype {idx.dtype}")
            keep = {"train": idx <= 7, "test": idx >= 8, "all": np.ones(idx.shape, bool)}[split]
            if y.shape != idx.shape:
                raise ValueError(f"{where}: labels must have shape {idx.shape}, one per image, "
                                 f"got shape {y.shape}")
            x, y = x[keep], y[keep]
        elif {f"x_{split}", f"y_{split}"} <= keys:
            x, y = get(f"x_{split}"), get(f"y_{split}")
        elif split == "all" and {"x", "y"} <= keys:
            x, y = get("x"), get("y")
        elif split == "all" and {"x_train", "y_train", "x_test", "y_test"} <= keys:
            parts = [(get(f"x_{s}"), get(f"y_{s}")) for s in ("train", "test")]
            (xa, ya), (xb, yb) = parts
            if np.ndim(xa) != np.ndim(xb) or np.shape(xa)[1:] != np.shape(xb)[1:]:
                raise ValueError(f"{path}: x_train and x_test hold images of different shapes "
                                 f"({list(np.shape(xa))} and {list(np.shape(xb))})")
            for s, xs, ys in (("train", xa, ya), ("test", xb, yb)):
                if np.shape(ys) != (len(xs),):
                    raise ValueError(f"{path}: y_{s} must have shape ({len(xs)},), one label "
                                     f"per image of x_{s}, got shape {np.shape(ys)}")
            x, y = np.concatenate([xa, xb]), np.concatenate([ya, yb])
        else:
            hint = (" (for the ORL face split use load('orl_faces', data_dir=...))"
                    if "image_index" in keys else "")
            raise ValueError(f"{path} has arrays {sorted(keys)}; split {split!r} needs "
                             f"x_{split} and y_{split} (or x and y for split 'all'){hint}")
    x = _images(x, where, None if expect is None else expect.image_shape)
    return x, _labels(y, len(x), where, None if expect is None else expect.num_classes)


def _npz_info(path: Path) -> DatasetInfo:
    if not path.is_file():
        raise FileNotFoundError(f"dataset file {str(path.resolve())!r} does not exist")
    with _open_npz(path) as z:
        xkeys = sorted(k for k in z.files if k == "x" or k.startswith("x_"))
        ykeys = sorted(k for k in z.files if k == "y" or k.startswith("y_"))
        if not ykeys or not xkeys:
            raise ValueError(f"{path} has no x/y or x_<split>/y_<split> arrays: "
                             f"{sorted(z.files)}")
        shape = _header_shape(z, xkeys[0], path)  # the image array's header only, not its data
        ys = {k: _array(z, k, path) for k in ykeys}
        names = (tuple(str(s) for s in _array(z, "class_names", path))
                 if "class_names" in z.files else None)
    if len(shape) not in (3, 4) or 0 in shape[1:]:
        raise ValueError(f"{path}: images {xkeys[0]} must be [N, H, W] or [N, H, W, C], got "
                         f"shape {shape}")
    for k, y in ys.items():  # same rules as load()
        if y.ndim != 1:
            raise ValueError(f"{path}: labels {k} must be one-dimensional [N], got shape "
                             f"{y.shape}")
        _labels(y, len(y), f"{path} ({k})")
    sizes = [y.size for y in ys.values() if y.size]
    if not sizes:
        raise ValueError(f"{path}: the dataset is empty (no labels in {', '.join(ykeys)})")
    image_shape = tuple(int(s) for s in shape[1:])
    image_shape = (*image_shape, 1) if len(image_shape) == 2 else image_shape
    k = max(int(y.max()) for y in ys.values() if y.size) + 1
    return DatasetInfo(len(names) if names else k, image_shape, names)


def _header_shape(z: Any, key: str, path: Path) -> tuple[int, ...]:
    """Shape of array ``key`` of the open archive ``z``, from its ``.npy`` header."""
    try:
        with z.zip.open(f"{key}.npy") as f:
            fmt = np.lib.format
            version = fmt.read_magic(f)
            read = fmt.read_array_header_1_0 if version == (1, 0) else \
                fmt.read_array_header_2_0
            return tuple(read(f)[0])
    except Exception as e:  # zipfile, zlib, header parsing: all mean a damaged file
        raise ValueError(f"{path}: truncated or damaged .npz archive: array {key!r} is "
                         f"unreadable ({type(e).__name__}: {_short(e)}); copy or save the "
                         f"file again") from None


def _read_idx(path: Path) -> np.ndarray:
    """Parse a gzip'd IDX file of unsigned bytes (the MNIST / Fashion-MNIST format)."""
    try:
        with gzip.open(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:  # gzip.BadGzipFile is an OSError
        raise ValueError(f"{path}: truncated or damaged gzip file ({type(e).__name__}: "
                         f"{_short(e)})") from None
    if len(raw) < 4 or raw[:3] != b"\x00\x00\x08":
        raise ValueError(f"{path}: not an IDX file of unsigned bytes (magic {raw[:4].hex()})")
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    body = len(raw) - 4 - 4 * ndim
    if body != int(np.prod(shape)):
        raise ValueError(f"{path}: truncated or damaged IDX file: header says shape {shape} "
                         f"({int(np.prod(shape))} bytes), data has {body} bytes")
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(shape)


def _debian_fashion(split: str, looked: list[str],
                    expect: DatasetInfo) -> tuple[np.ndarray, np.ndarray] | None:
    parts = {"train": ["train"], "test": ["t10k"], "all": ["train", "t10k"]}[split]
    files = [(DEBIAN_FASHION_DIR / f"{p}-images-idx3-ubyte.gz",
              DEBIAN_FASHION_DIR / f"{p}-labels-idx1-ubyte.gz") for p in parts]
    looked.extend(str(f) for pair in files for f in pair)
    if not all(f.is_file() for pair in files for f in pair):
        return None
    where = f"{DEBIAN_FASHION_DIR} (split {split!r})"
    x = _images(np.concatenate([_read_idx(xi) for xi, _ in files]), where, expect.image_shape)
    y = np.concatenate([_read_idx(yi) for _, yi in files])
    return x, _labels(y, len(x), where, expect.num_classes)


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
    return x, y  # checked by load()
