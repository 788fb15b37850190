"""Inception-v3 pool3 features (2048-d), the FID network, from user-supplied weights.

A Flax port of pytorch-fid's ``fid_inception_v3()`` (itself a port of the TensorFlow
FID graph): inputs in [0, 1] are resized to 299x299 (bilinear, no antialiasing, as
``F.interpolate(..., align_corners=False)``), scaled to [-1, 1] and run through the
network with BatchNorm (eps 1e-3) in eval mode; the output is the global average
pool of ``Mixed_7c``. The FID-specific blocks average-pool without counting padding
(``Mixed_5b..7b``) and ``Mixed_7c`` max-pools in its pool branch. NHWC throughout.

jaxinv never downloads weights: pass the path of pytorch-fid's
``pt_inception-2015-12-05-6726825d.pth`` (needs torch to read) or of a ``.npz``
made from it with ``python -m jaxinv.models.inception convert in.pth out.npz``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

WEIGHTS_FILE = "pt_inception-2015-12-05-6726825d.pth"
WEIGHTS_URL = ("https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/"
               + WEIGHTS_FILE)
SIZE = 299  # input resolution of the network
FEATURE_DIM = 2048
# state-dict entries present in pytorch-fid's file (or torchvision's) but unused here
_IGNORED_PREFIXES = ("fc.", "AuxLogits.")
_IGNORED_SUFFIXES = (".num_batches_tracked",)
# (flax collection, leaf) <-> torch suffix
_LEAVES = {("params", "conv", "kernel"): "conv.weight", ("params", "bn", "scale"): "bn.weight",
           ("params", "bn", "bias"): "bn.bias", ("batch_stats", "bn", "mean"): "bn.running_mean",
           ("batch_stats", "bn", "var"): "bn.running_var"}

Pair = tuple[int, int]


class BasicConv(nn.Module):
    """Conv (no bias) -> BatchNorm (eval, eps 1e-3) -> ReLU: torchvision's ``BasicConv2d``.

    Example:
        >>> conv = BasicConv(32, (3, 3), stride=2)  # shapes only, nothing computed
        >>> out, v = jax.eval_shape(conv.init_with_output, key, jnp.ones((1, 9, 9, 3)))
        >>> out.shape, sorted(v), v["params"]["conv"]["kernel"].shape
        ((1, 4, 4, 32), ['batch_stats', 'params'], (3, 3, 3, 32))
    """

    features: int
    kernel: Pair = (1, 1)
    stride: int = 1
    pad: Pair = (0, 0)

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        (ph, pw), s = self.pad, self.stride
        x = nn.Conv(self.features, self.kernel, (s, s), ((ph, ph), (pw, pw)), use_bias=False,
                    name="conv")(x)
        x = nn.BatchNorm(use_running_average=True, epsilon=1e-3, name="bn")(x)
        return nn.relu(x)


def _avg_pool_3x3(x: jax.Array) -> jax.Array:  # TF semantics: padding not counted
    return nn.avg_pool(x, (3, 3), (1, 1), ((1, 1), (1, 1)), count_include_pad=False)


def _max_pool_3x3_s2(x: jax.Array) -> jax.Array:
    return nn.max_pool(x, (3, 3), (2, 2))


class InceptionA(nn.Module):
    """``FIDInceptionA`` (Mixed_5b/c/d).

    Example:
        >>> block = InceptionA(pool_features=32)  # Mixed_5b; shapes only, nothing computed
        >>> jax.eval_shape(block.init_with_output, key, jnp.zeros((1, 35, 35, 192)))[0].shape
        (1, 35, 35, 256)
    """

    pool_features: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        b1 = BasicConv(64, name="branch1x1")(x)
        b5 = BasicConv(48, name="branch5x5_1")(x)
        b5 = BasicConv(64, (5, 5), pad=(2, 2), name="branch5x5_2")(b5)
        b3 = BasicConv(64, name="branch3x3dbl_1")(x)
        b3 = BasicConv(96, (3, 3), pad=(1, 1), name="branch3x3dbl_2")(b3)
        b3 = BasicConv(96, (3, 3), pad=(1, 1), name="branch3x3dbl_3")(b3)
        bp = BasicConv(self.pool_features, name="branch_pool")(_avg_pool_3x3(x))
        return jnp.concatenate([b1, b5, b3, bp], -1)


class InceptionB(nn.Module):
    """torchvision's ``InceptionB`` (Mixed_6a, grid reduction).

    Example:
        >>> block = InceptionB()  # shapes only, nothing computed
        >>> jax.eval_shape(block.init_with_output, key, jnp.zeros((1, 35, 35, 288)))[0].shape
        (1, 17, 17, 768)
    """

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        b3 = BasicConv(384, (3, 3), 2, name="branch3x3")(x)
        bd = BasicConv(64, name="branch3x3dbl_1")(x)
        bd = BasicConv(96, (3, 3), pad=(1, 1), name="branch3x3dbl_2")(bd)
        bd = BasicConv(96, (3, 3), 2, name="branch3x3dbl_3")(bd)
        return jnp.concatenate([b3, bd, _max_pool_3x3_s2(x)], -1)


class InceptionC(nn.Module):
    """``FIDInceptionC`` (Mixed_6b..e): factorised 7x7 convolutions.

    Example:
        >>> block = InceptionC(channels_7x7=128)  # Mixed_6b; shapes only, nothing computed
        >>> jax.eval_shape(block.init_with_output, key, jnp.zeros((1, 17, 17, 768)))[0].shape
        (1, 17, 17, 768)
    """

    channels_7x7: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c = self.channels_7x7
        b1 = BasicConv(192, name="branch1x1")(x)
        b7 = BasicConv(c, name="branch7x7_1")(x)
        b7 = BasicConv(c, (1, 7), pad=(0, 3), name="branch7x7_2")(b7)
        b7 = BasicConv(192, (7, 1), pad=(3, 0), name="branch7x7_3")(b7)
        bd = BasicConv(c, name="branch7x7dbl_1")(x)
        bd = BasicConv(c, (7, 1), pad=(3, 0), name="branch7x7dbl_2")(bd)
        bd = BasicConv(c, (1, 7), pad=(0, 3), name="branch7x7dbl_3")(bd)
        bd = BasicConv(c, (7, 1), pad=(3, 0), name="branch7x7dbl_4")(bd)
        bd = BasicConv(192, (1, 7), pad=(0, 3), name="branch7x7dbl_5")(bd)
        bp = BasicConv(192, name="branch_pool")(_avg_pool_3x3(x))
        return jnp.concatenate([b1, b7, bd, bp], -1)


class InceptionD(nn.Module):
    """torchvision's ``InceptionD`` (Mixed_7a, grid reduction).

    Example:
        >>> block = InceptionD()  # shapes only, nothing computed
        >>> jax.eval_shape(block.init_with_output, key, jnp.zeros((1, 17, 17, 768)))[0].shape
        (1, 8, 8, 1280)
    """

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        b3 = BasicConv(192, name="branch3x3_1")(x)
        b3 = BasicConv(320, (3, 3), 2, name="branch3x3_2")(b3)
        b7 = BasicConv(192, name="branch7x7x3_1")(x)
        b7 = BasicConv(192, (1, 7), pad=(0, 3), name="branch7x7x3_2")(b7)
        b7 = BasicConv(192, (7, 1), pad=(3, 0), name="branch7x7x3_3")(b7)
        b7 = BasicConv(192, (3, 3), 2, name="branch7x7x3_4")(b7)
        return jnp.concatenate([b3, b7, _max_pool_3x3_s2(x)], -1)


class InceptionE(nn.Module):
    """``FIDInceptionE_1`` (avg pool, Mixed_7b) or ``FIDInceptionE_2`` (max pool, Mixed_7c).

    Example:
        >>> block = InceptionE(max_pool=True)  # Mixed_7c; shapes only, nothing computed
        >>> jax.eval_shape(block.init_with_output, key, jnp.zeros((1, 8, 8, 2048)))[0].shape
        (1, 8, 8, 2048)
    """

    max_pool: bool = False

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        b1 = BasicConv(320, name="branch1x1")(x)
        b3 = BasicConv(384, name="branch3x3_1")(x)
        b3 = [BasicConv(384, (1, 3), pad=(0, 1), name="branch3x3_2a")(b3),
              BasicConv(384, (3, 1), pad=(1, 0), name="branch3x3_2b")(b3)]
        bd = BasicConv(448, name="branch3x3dbl_1")(x)
        bd = BasicConv(384, (3, 3), pad=(1, 1), name="branch3x3dbl_2")(bd)
        bd = [BasicConv(384, (1, 3), pad=(0, 1), name="branch3x3dbl_3a")(bd),
              BasicConv(384, (3, 1), pad=(1, 0), name="branch3x3dbl_3b")(bd)]
        if self.max_pool:
            pooled = nn.max_pool(x, (3, 3), (1, 1), ((1, 1), (1, 1)))
        else:
            pooled = _avg_pool_3x3(x)
        bp = BasicConv(192, name="branch_pool")(pooled)
        return jnp.concatenate([b1, *b3, *bd, bp], -1)


class InceptionV3(nn.Module):
    """pytorch-fid's FID Inception-v3 up to pool3: ``[N, H, W, 1 or 3]`` in [0, 1] ->
    ``[N, 2048]``. Grey images are repeated to 3 channels.

    Example:
        >>> module = InceptionV3()  # weights: load_inception(path); shapes only here
        >>> jax.eval_shape(module.init_with_output, key, jnp.zeros((2, 64, 64, 1)))[0].shape
        (2, 2048)
    """

    resize_input: bool = True  # bilinear resize to 299x299 (pytorch-fid's default)
    normalize_input: bool = True  # [0, 1] -> [-1, 1]

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        if x.ndim != 4 or x.shape[-1] not in (1, 3):
            raise ValueError(f"InceptionV3 expects NHWC images with 1 or 3 channels, got "
                             f"{list(x.shape)}")
        x = jnp.asarray(x, jnp.float32)
        if x.shape[-1] == 1:
            x = jnp.repeat(x, 3, axis=-1)
        if self.resize_input and x.shape[1:3] != (SIZE, SIZE):
            x = jax.image.resize(x, (x.shape[0], SIZE, SIZE, 3), "linear", antialias=False)
        if self.normalize_input:
            x = 2 * x - 1
        x = BasicConv(32, (3, 3), 2, name="Conv2d_1a_3x3")(x)
        x = BasicConv(32, (3, 3), name="Conv2d_2a_3x3")(x)
        x = BasicConv(64, (3, 3), pad=(1, 1), name="Conv2d_2b_3x3")(x)
        x = _max_pool_3x3_s2(x)
        x = BasicConv(80, name="Conv2d_3b_1x1")(x)
        x = BasicConv(192, (3, 3), name="Conv2d_4a_3x3")(x)
        x = _max_pool_3x3_s2(x)
        x = InceptionA(32, name="Mixed_5b")(x)
        x = InceptionA(64, name="Mixed_5c")(x)
        x = InceptionA(64, name="Mixed_5d")(x)
        x = InceptionB(name="Mixed_6a")(x)
        for name, c7 in (("Mixed_6b", 128), ("Mixed_6c", 160), ("Mixed_6d", 160),
                         ("Mixed_6e", 192)):
            x = InceptionC(c7, name=name)(x)
        x = InceptionD(name="Mixed_7a")(x)
        x = InceptionE(name="Mixed_7b")(x)
        x = InceptionE(max_pool=True, name="Mixed_7c")(x)
        return jnp.mean(x, axis=(1, 2))


@cache
def _leaf_shapes(module: InceptionV3) -> dict[str, tuple[tuple[str, ...], tuple[int, ...]]]:
    """torch name -> (flax path incl. collection, flax shape), from an abstract init."""
    spec = jax.ShapeDtypeStruct((1, SIZE, SIZE, 3), jnp.float32)
    abstract = jax.eval_shape(module.init, jax.random.key(0), spec)
    out = {}
    for path, leaf in traverse_util.flatten_dict(abstract).items():
        collection, *layers, sub, name = path
        out[".".join([*layers, _LEAVES[collection, sub, name]])] = (path, leaf.shape)
    return out


def _to_flax(name: str, value: np.ndarray) -> np.ndarray:
    value = np.asarray(value, np.float32)
    return value.transpose(2, 3, 1, 0) if name.endswith("conv.weight") else value  # OIHW->HWIO


def convert_torch_state_dict(state_dict: Mapping[str, Any],
                             module: InceptionV3 | None = None) -> dict:
    """Flax variables (``params`` + ``batch_stats``) from pytorch-fid's Inception state dict.

    Keys are torch names (``Mixed_5b.branch1x1.conv.weight``, ``...bn.running_var``);
    values arrays (or CPU tensors). ``fc.*``, ``AuxLogits.*`` and ``num_batches_tracked``
    are ignored; any other unknown, missing or mis-shaped entry raises ``ValueError``.

    Example:
        >>> sd = to_torch_state_dict(random_variables(0))  # stands in for pytorch-fid's file
        >>> sd["Conv2d_1a_3x3.conv.weight"].shape  # torch layout: OIHW
        (32, 3, 3, 3)
        >>> variables = convert_torch_state_dict(sd)
        >>> variables["params"]["Conv2d_1a_3x3"]["conv"]["kernel"].shape  # flax: HWIO
        (3, 3, 3, 32)
        >>> convert_torch_state_dict({**sd, "fc.weight": np.zeros((1008, 2048))}) is not None
        True
        >>> del sd["Mixed_7c.branch_pool.bn.bias"]
        >>> convert_torch_state_dict(sd)
        Traceback (most recent call last):
        ValueError: not a pytorch-fid Inception-v3 state dict: 1 missing: Mixed_7c.branch_pool...
    """
    expected = _leaf_shapes(module or InceptionV3())
    used = {k for k in state_dict
            if not (k.startswith(_IGNORED_PREFIXES) or k.endswith(_IGNORED_SUFFIXES))}
    unknown, missing = sorted(used - expected.keys()), sorted(expected.keys() - used)
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing: {_head(missing)}")
    if unknown:
        problems.append(f"{len(unknown)} unexpected: {_head(unknown)}")
    flat = {}
    for name in sorted(used & expected.keys()):
        path, shape = expected[name]
        value = _to_flax(name, state_dict[name])
        if value.shape != shape:
            problems.append(f"{name} has shape {list(np.shape(state_dict[name]))}, "
                            f"expected {list(_to_torch(name, np.empty(shape)).shape)}")
        flat[path] = jnp.asarray(value)
    if problems:
        raise ValueError("not a pytorch-fid Inception-v3 state dict: " + "; ".join(problems))
    return traverse_util.unflatten_dict(flat)


def _head(names: Sequence[str], n: int = 8) -> str:
    return ", ".join(names[:n]) + (", ..." if len(names) > n else "")


def _to_torch(name: str, value: np.ndarray) -> np.ndarray:
    return value.transpose(3, 2, 0, 1) if name.endswith("conv.weight") else value  # HWIO->OIHW


def to_torch_state_dict(variables: Mapping) -> dict[str, np.ndarray]:
    """Inverse of ``convert_torch_state_dict``: torch names -> float32 numpy arrays (OIHW).

    Example:
        >>> variables = {"params": {"Conv2d_1a_3x3": {"conv": {"kernel": np.zeros((3, 3, 3, 32))},
        ...                                           "bn": {"scale": np.ones(32)}}},
        ...              "batch_stats": {"Conv2d_1a_3x3": {"bn": {"var": np.ones(32)}}}}
        >>> {k: v.shape for k, v in to_torch_state_dict(variables).items()}
        {'Conv2d_1a_3x3.conv.weight': (32, 3, 3, 3), 'Conv2d_1a_3x3.bn.weight': (32,),
         'Conv2d_1a_3x3.bn.running_var': (32,)}
    """
    out = {}
    for path, leaf in traverse_util.flatten_dict(dict(variables)).items():
        collection, *layers, sub, name = path
        key = ".".join([*layers, _LEAVES[collection, sub, name]])
        out[key] = np.array(_to_torch(key, np.asarray(leaf, np.float32)), order="C")  # writable
    return out


def random_variables(seed: int = 0, module: InceptionV3 | None = None) -> dict:
    """Randomly initialised variables (He-normal kernels, identity BatchNorm) without running
    the network: for tests and smoke runs only, the features mean nothing.

    Example:
        >>> variables = random_variables(0)
        >>> sorted(variables), len(variables["params"])  # 16 blocks, as in pytorch-fid's net
        (['batch_stats', 'params'], 16)
        >>> variables["batch_stats"]["Conv2d_1a_3x3"]["bn"]["var"][:3]
        Array([1., 1., 1.], dtype=float32)
    """
    rng = np.random.default_rng(seed)
    flat = {}
    for path, shape in _leaf_shapes(module or InceptionV3()).values():
        if path[-1] == "kernel":
            fan_in = int(np.prod(shape[:-1]))
            value = rng.standard_normal(shape, np.float32) * np.float32(np.sqrt(2 / fan_in))
        else:
            value = np.ones(shape, np.float32) if path[-1] in ("scale", "var") else \
                np.zeros(shape, np.float32)
        flat[path] = jnp.asarray(value)
    return traverse_util.unflatten_dict(flat)


def _missing_message(path: Path) -> str:
    return (f"Inception-v3 FID weights not found: looked for {path.absolute()}. jaxinv does "
            f"not download weights. On a machine with internet, download pytorch-fid's "
            f"{WEIGHTS_FILE} from {WEIGHTS_URL} and pass its path (reading a .pth needs "
            f"torch; to avoid that, convert it once where torch is installed: "
            f"`python -m jaxinv.models.inception convert {WEIGHTS_FILE} pt_inception.npz`).")


class TorchMissingError(ImportError, ValueError):
    """Reading a ``.pth`` needs torch, which is not installed. Also a ``ValueError``, like
    the other problems with a weights file, so ``jaxinv`` reports it in one line."""


def _read_torch(path: Path) -> dict[str, np.ndarray]:
    try:
        import torch
    except ImportError:
        raise TorchMissingError(
            f"{path}: reading a .pth file needs torch, which is not installed: "
            f"`pip install torch`, or convert it to .npz once on a machine with torch: "
            f"`python -m jaxinv.models.inception convert {path.name} pt_inception.npz`, "
            f"and pass the .npz") from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle, zip and torch errors: all mean a damaged file
        raise ValueError(f"{path}: not a readable torch state dict (truncated or damaged? "
                         f"{type(e).__name__}: {_first_line(e)})") from None
    if isinstance(state, Mapping) and isinstance(state.get("state_dict"), Mapping):
        state = state["state_dict"]
    if not isinstance(state, Mapping):
        raise ValueError(f"{path} holds a {type(state).__name__}, not a state dict")
    return {k: v.detach().cpu().numpy() for k, v in state.items() if torch.is_tensor(v)}


def _first_line(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return (lines[0] if lines else "")[:200]


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as f:
            if not isinstance(f, np.lib.npyio.NpzFile):
                raise ValueError("a single .npy array, not an .npz archive of named arrays")
            return {k: f[k] for k in f.files}
    except MemoryError:
        raise
    except Exception as e:  # zipfile, zlib, numpy header parsing: all mean a damaged file
        raise ValueError(f"{path}: not a readable .npz of Inception-v3 weights (truncated, "
                         f"damaged or not an .npz? {type(e).__name__}: {_first_line(e)})"
                         ) from None


def read_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """The raw state dict (torch names -> arrays) in a ``.npz`` or (with torch) ``.pth``.

    A missing file raises ``FileNotFoundError``; a damaged one, or a ``.pth`` without
    torch installed (:class:`TorchMissingError`), raises ``ValueError``.

    Example:
        >>> np.savez("tiny.npz", **{"Conv2d_1a_3x3.bn.bias": np.zeros(32, np.float32)})
        >>> {k: v.shape for k, v in read_state_dict("tiny.npz").items()}
        {'Conv2d_1a_3x3.bn.bias': (32,)}
        >>> read_state_dict("missing.npz")
        Traceback (most recent call last):
        FileNotFoundError: Inception-v3 FID weights not found: looked for .../missing.npz. ...
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(_missing_message(path))
    if path.suffix == ".npz":
        return _read_npz(path)
    if path.suffix in (".pth", ".pt"):
        return _read_torch(path)
    raise ValueError(f"{path}: expected a .npz or .pth Inception-v3 state dict")


def load_inception(path: str | Path) -> tuple[InceptionV3, dict]:
    """``(module, variables)`` from pytorch-fid's weights at ``path`` (``.npz``, or ``.pth``
    if torch is installed). Nothing is downloaded: a missing file raises
    ``FileNotFoundError`` explaining how to get it; a wrong file raises ``ValueError``.

    Example:
        >>> path = "pt_inception-2015-12-05-6726825d.pth"  # pytorch-fid's, not shipped
        >>> module, variables = load_inception(path)  # doctest: +SKIP
        >>> inception_features(x, variables, module).shape  # doctest: +SKIP
        (16, 2048)
        >>> load_inception(path)  # (the lines above need the weights file: not run here)
        Traceback (most recent call last):
        FileNotFoundError: Inception-v3 FID weights not found: ... does not download weights. ...
    """
    module = InceptionV3()
    state = read_state_dict(path)
    try:
        variables = convert_torch_state_dict(state, module)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None
    used = _leaf_shapes(module)
    bad = [k for k, v in state.items() if k in used
           and np.issubdtype(np.asarray(v).dtype, np.floating) and not np.isfinite(v).all()]
    if bad:
        raise ValueError(f"{path}: Inception-v3 weights hold NaN/inf in {len(bad)} arrays "
                         f"({_head(sorted(bad))}); the file is damaged")
    return module, variables


@cache
def _forward(module: InceptionV3):
    return jax.jit(module.apply)


def inception_features(x: Any, variables: Mapping, module: InceptionV3 | None = None,
                       batch: int = 64) -> np.ndarray:
    """Pool3 features ``[N, 2048]`` (float32) of NHWC images ``x`` in [0, 1] (1 or 3 channels).

    Runs jitted in batches of ``min(batch, N)``, padding the last one so a single shape
    compiles per image size.

    Example:
        >>> variables = random_variables(0)  # stand-in weights; real ones: load_inception(path)
        >>> feats = inception_features(x[:2], variables)  # 2 grey 8x8 digits, resized to 299
        >>> feats.shape, feats.dtype
        ((2, 2048), dtype('float32'))
    """
    x = np.asarray(x, np.float32)
    if x.ndim != 4 or x.shape[-1] not in (1, 3):
        raise ValueError(f"expected NHWC images with 1 or 3 channels, got {list(x.shape)}")
    if x.shape[-1] == 1:  # here rather than in the module: grey and colour share one compile
        x = np.repeat(x, 3, axis=-1)
    n = len(x)
    if n == 0:
        return np.zeros((0, FEATURE_DIM), np.float32)
    bs = max(1, min(int(batch), n))
    if n % bs:
        x = np.concatenate([x, np.zeros((bs - n % bs, *x.shape[1:]), np.float32)])
    f = _forward(module or InceptionV3())
    outs = [f(variables, x[i:i + bs]) for i in range(0, len(x), bs)]  # dispatched async
    return np.concatenate([np.asarray(o) for o in outs])[:n]


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: ``python -m jaxinv.models.inception convert in.pth out.npz`` (needs torch).

    Example:
        >>> main(["convert", WEIGHTS_FILE, "pt_inception.npz"])  # doctest: +SKIP
        wrote 470 arrays to pt_inception.npz
        0
        >>> main(["convert", "missing.pth", "out.npz"])  # (above: needs the weights and torch)
        Traceback (most recent call last):
        FileNotFoundError: Inception-v3 FID weights not found: looked for .../missing.pth. ...
    """
    parser = argparse.ArgumentParser(prog="python -m jaxinv.models.inception",
                                     description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    conv = sub.add_parser("convert", help="pytorch-fid .pth -> .npz (torch names; no torch "
                                          "needed to load it)")
    conv.add_argument("src", type=Path, help=f"pytorch-fid's {WEIGHTS_FILE}")
    conv.add_argument("dst", type=Path, help="output .npz")
    args = parser.parse_args(argv)
    state = read_state_dict(args.src)
    convert_torch_state_dict(state)  # validate before writing
    kept = {k: np.asarray(v, np.float32) for k, v in state.items()
            if k in _leaf_shapes(InceptionV3())}
    args.dst.parent.mkdir(parents=True, exist_ok=True)
    with open(args.dst, "wb") as f:  # a file object: np.savez would append .npz to the name
        np.savez(f, **kept)
    print(f"wrote {len(kept)} arrays to {args.dst}")
    return 0


__all__ = ["FEATURE_DIM", "WEIGHTS_FILE", "WEIGHTS_URL", "InceptionV3", "TorchMissingError",
           "convert_torch_state_dict",
           "inception_features", "load_inception", "random_variables", "read_state_dict",
           "to_torch_state_dict"]

if __name__ == "__main__":
    sys.exit(main())
