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
        >>> versions()["jax"]
        '0.10.2'
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
        >>> m = judge(evaluator, res.best_x, targets)
        >>> m["top1"], m["per_class"]["3"]["top1"]
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
        >>> save_grid("grid.png", res.best_x)   # [classes, chains, H, W, C] in [0, 1]
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
        >>> write_run("runs/demo", {"config": cfg, "metrics": m}, {"x": res.best_x, "y": y})
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_npz(out / "reconstructions.npz", arrays)
    save_grid(out / "grid.png", arrays["x"])
    return write_json(out / "results.json", record)


def write_json(path: str | Path, record: dict[str, Any]) -> Path:
    """Write ``record`` as indented JSON, atomically (NumPy values become plain ones).

    Example:
        >>> write_json("runs/demo/mi-face/results.json", record)
    """
    text = json.dumps(record, indent=2, default=_json_default).encode()
    _atomic_write(Path(path), lambda f: f.write(text))
    return Path(path)


def write_npz(path: str | Path, arrays: dict[str, np.ndarray]) -> Path:
    """Write ``arrays`` as a compressed ``.npz``, atomically.

    Example:
        >>> write_npz("runs/demo/mi-face/per_sample.npz", {"score": score})
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
