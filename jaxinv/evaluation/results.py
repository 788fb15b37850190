"""The run-directory contract every attack follows.

``D/results.json`` (config, seed, versions, metrics, timing),
``D/reconstructions.npz`` (``x``: [classes, chains, H, W, C] best iterates,
``y``: [classes], ``x_init``, ``best_loss``, ``failed``), ``D/grid.png``.
"""

from __future__ import annotations

import json
import os
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

PACKAGES = ("jaxinv", "jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy")


def versions() -> dict[str, str]:
    """Versions of Python, the key packages and the JAX backend, for provenance.

    Example:
        >>> v = versions()
        >>> sorted(v)
        ['backend', 'devices', 'flax', 'jax', 'jaxinv', 'jaxlib', 'numpy', 'optax',
         'orbax-checkpoint', 'platform', 'python']
        >>> v["jax"] == jax.__version__
        True
    """
    import jax

    out = {"python": platform.python_version(), "platform": platform.platform(),
           "backend": jax.default_backend(), "devices": str(jax.devices())[:200]}
    for pkg in PACKAGES:
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def topk_accuracy(logits: np.ndarray, y: np.ndarray, k: int) -> np.ndarray:
    """Per-example hit (0/1) of ``y`` among the ``k`` largest logits.

    Example:
        >>> topk_accuracy(np.array([[0.1, 0.9, 0.0]]), np.array([0]), 2)
        array([1.])
    """
    k = min(k, logits.shape[-1])
    top = np.argpartition(-logits, k - 1, axis=-1)[..., :k]
    return (top == y[..., None]).any(-1).astype(np.float64)


def judge(classifier: Any, x: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    """Attack accuracy of reconstructions ``x[T, N, H, W, C]`` for classes ``y[T]``.

    ``classifier`` has ``logits(x)`` (a :class:`jaxinv.models.Classifier`, which batches
    on the device): the evaluation classifier for attack accuracy, or the target for
    its confidence.

    Example:
        >>> rec = np.stack([x[y == 3][:2], x[y == 6][:2]])  # 2 classes x 2 "reconstructions"
        >>> rec.shape
        (2, 2, 8, 8, 1)
        >>> m = judge(clf, rec, np.array([3, 6]))  # clf: a trained digits classifier
        >>> sorted(m), sorted(m["per_class"]), sorted(m["per_class"]["3"])
        (['confidence', 'per_class', 'top1', 'top1_std_over_classes', 'top5'], ['3', '6'],
         ['confidence', 'top1', 'top5'])
        >>> 0 <= m["top1"] <= m["top5"] <= 1
        True
    """
    t, n = x.shape[:2]
    flat = x.reshape((t * n, *x.shape[2:]))
    logits = np.asarray(classifier.logits(flat)).reshape(t, n, -1)
    yy = np.broadcast_to(np.asarray(y)[:, None], (t, n))
    top1, top5 = topk_accuracy(logits, yy, 1), topk_accuracy(logits, yy, 5)
    z = logits - logits.max(-1, keepdims=True)
    p = np.exp(z) / np.exp(z).sum(-1, keepdims=True)
    conf = np.take_along_axis(p, yy[..., None], -1)[..., 0]
    per_class = {str(int(c)): {"top1": float(top1[i].mean()), "top5": float(top5[i].mean()),
                               "confidence": float(conf[i].mean())} for i, c in enumerate(y)}
    return {"top1": float(top1.mean()), "top5": float(top5.mean()),
            "top1_std_over_classes": float(top1.mean(1).std()), "confidence": float(conf.mean()),
            "per_class": per_class}


def _atomic_write(path: Path, write) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        write(f)
    os.replace(tmp, path)


def save_grid(path: str | Path, x: np.ndarray, per_class: int = 8,
              scale: int | None = None) -> None:
    """Save a PNG grid: one row per class, ``per_class`` reconstructions per row.

    Example:
        >>> save_grid("grid.png", np.zeros((2, 3, 8, 8, 1)))  # [classes, chains, H, W, C]
        >>> from PIL import Image
        >>> Image.open("grid.png").size  # 3 x 2 tiles of 8 + 1 px, scaled 32x to ~256 px
        (896, 608)
    """
    from PIL import Image

    t, n, h, w, c = x.shape
    k = min(per_class, n)
    pad = 1
    grid = np.ones((t * (h + pad) + pad, k * (w + pad) + pad, c), np.float32)
    for i in range(t):
        for j in range(k):
            r, q = pad + i * (h + pad), pad + j * (w + pad)
            grid[r:r + h, q:q + w] = x[i, j]
    img = (np.clip(grid, 0, 1) * 255).round().astype(np.uint8)
    img = Image.fromarray(img[..., 0] if c == 1 else img)
    scale = scale or max(1, 256 // max(h, w))
    img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    _atomic_write(Path(path), lambda f: img.save(f, format="PNG"))


def write_run(out: str | Path, record: dict[str, Any], arrays: dict[str, np.ndarray]) -> Path:
    """Write ``results.json``, ``reconstructions.npz`` and ``grid.png`` into ``out``.

    ``arrays`` holds at least ``x`` ([classes, chains, H, W, C]) and ``y``.

    Example:
        >>> arrays = {"x": np.zeros((2, 3, 8, 8, 1)), "y": np.array([3, 6])}
        >>> print(write_run("runs/demo", {"config": {"steps": 10}, "metrics": {}}, arrays))
        runs/demo/results.json
        >>> sorted(p.name for p in Path("runs/demo").iterdir())
        ['grid.png', 'reconstructions.npz', 'results.json']
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_npz(out / "reconstructions.npz", arrays)
    save_grid(out / "grid.png", arrays["x"])
    return write_json(out / "results.json", record)


def write_json(path: str | Path, record: dict[str, Any]) -> Path:
    """Write ``record`` as indented JSON, atomically (NumPy values become plain ones).

    Example:
        >>> path = write_json("results.json", {"top1": np.float32(0.5), "y": np.arange(2)})
        >>> print(path.read_text())
        {
          "top1": 0.5,
          "y": [
            0,
            1
          ]
        }
    """
    text = json.dumps(record, indent=2, default=_json_default).encode()
    _atomic_write(Path(path), lambda f: f.write(text))
    return Path(path)


def write_npz(path: str | Path, arrays: dict[str, np.ndarray]) -> Path:
    """Write ``arrays`` as a compressed ``.npz``, atomically.

    Example:
        >>> path = write_npz("per_sample.npz", {"score": np.zeros(3, np.float32)})
        >>> np.load(path)["score"]
        array([0., 0., 0.], dtype=float32)
    """
    _atomic_write(Path(path), lambda f: np.savez_compressed(f, **arrays))
    return Path(path)


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
