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
    its confidence. ``hits`` is the per-reconstruction top-1 hit ``[T, N]`` (0/1).

    Example:
        >>> rec = np.stack([x[y == 3][:2], x[y == 6][:2]])  # 2 classes x 2 "reconstructions"
        >>> rec.shape
        (2, 2, 8, 8, 1)
        >>> m = judge(clf, rec, np.array([3, 6]))  # clf: a trained digits classifier
        >>> sorted(m), sorted(m["per_class"]), sorted(m["per_class"]["3"])
        (['confidence', 'hits', 'per_class', 'top1', 'top1_std_over_classes', 'top5'],
         ['3', '6'], ['confidence', 'top1', 'top5'])
        >>> 0 <= m["top1"] <= m["top5"] <= 1
        True
    """
    from jaxinv.models import check_finite, describe

    t, n = x.shape[:2]
    flat = x.reshape((t * n, *x.shape[2:]))
    logits = np.asarray(classifier.logits(flat))
    meta = getattr(classifier, "meta", None)
    check_finite("logits", logits, describe(meta) if isinstance(meta, dict) else
                 f"classifier {type(classifier).__name__}")
    logits = logits.reshape(t, n, -1)
    yy = np.broadcast_to(np.asarray(y)[:, None], (t, n))
    top1, top5 = topk_accuracy(logits, yy, 1), topk_accuracy(logits, yy, 5)
    z = logits - logits.max(-1, keepdims=True)
    p = np.exp(z) / np.exp(z).sum(-1, keepdims=True)
    conf = np.take_along_axis(p, yy[..., None], -1)[..., 0]
    per_class = {str(int(c)): {"top1": float(top1[i].mean()), "top5": float(top5[i].mean()),
                               "confidence": float(conf[i].mean())} for i, c in enumerate(y)}
    return {"top1": float(top1.mean()), "top5": float(top5.mean()),
            "top1_std_over_classes": float(top1.mean(1).std()), "confidence": float(conf.mean()),
            "per_class": per_class, "hits": top1}


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


def write_json(path: str | Path, record: dict[str, Any],
               reasons: dict[str, str] | None = None) -> Path:
    """Write ``record`` as indented strict JSON, atomically (NumPy values become plain ones).

    A non-finite number (NaN, inf) becomes ``null``, and the top-level ``"nulls"`` object
    maps its dotted path (``metrics.knn_dist``; list items by index) to why it is null:
    ``reasons[path]`` or ``record["nulls"][path]`` when the producer gives one, else
    ``"not a finite number (nan)"``. A list or array with several non-finite values gets
    one entry, at the list's path.

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
        >>> rec = {"metrics": {"knn_dist": np.float32("nan"), "top1": 0.5}}
        >>> print(write_json("results.json", rec).read_text())
        {
          "metrics": {
            "knn_dist": null,
            "top1": 0.5
          },
          "nulls": {
            "metrics.knn_dist": "not a finite number (nan)"
          }
        }
    """
    found: dict[str, str] = {}
    nones: set[str] = set()
    clean = _finite(record, "", found, nones)
    if isinstance(clean, dict):
        given = clean.pop("nulls", None)
        given = given if isinstance(given, dict) else {}
        nulls = {**found, **{k: v for k, v in given.items() if k in nones},  # still null
                 **{k: v for k, v in (reasons or {}).items() if k in nones}}
        if nulls:
            clean["nulls"] = nulls
    text = json.dumps(clean, indent=2, default=_json_default, allow_nan=False).encode()
    _atomic_write(Path(path), lambda f: f.write(text))
    return Path(path)


def summary_json(record: dict[str, Any]) -> str:
    """``record`` as one line of strict JSON for a terminal summary: NumPy values made
    plain, non-finite numbers ``null`` (``results.json`` says why, see :func:`write_json`).

    Example:
        >>> summary_json({"psnr": np.float32(12.5), "knn_dist": float("nan")})
        '{"psnr": 12.5, "knn_dist": null}'
    """
    return json.dumps(_finite(record, "", {}, set()), default=_json_default, allow_nan=False)


def _kind(v: float) -> str:
    return "nan" if v != v else ("inf" if v > 0 else "-inf")


def _finite(o: Any, path: str, found: dict[str, str], nones: set[str]) -> Any:
    """``o`` with NumPy values made plain and each non-finite float made ``None``; the
    dotted path of each such value goes into ``found`` with the reason, and the path of
    every ``None`` (and of every list holding one) into ``nones``."""
    join = (lambda k: f"{path}.{k}" if path else str(k))
    if isinstance(o, dict):
        return {(k.item() if isinstance(k, np.generic) else k): _finite(v, join(k), found, nones)
                for k, v in o.items()}
    if isinstance(o, np.ndarray):
        o = o.tolist()
    if isinstance(o, list | tuple):
        bad = [(i, _kind(float(v))) for i, v in enumerate(o)
               if isinstance(v, float | np.floating) and not np.isfinite(v)]
        sub: dict[str, str] = {}
        out = [_finite(v, join(i), sub, nones) for i, v in enumerate(o)]
        if len(bad) > 1:  # one entry for the list, not one per item
            kinds = ", ".join(sorted({k for _, k in bad}))
            sub = {k: v for k, v in sub.items() if k not in {join(i) for i, _ in bad}}
            sub[path] = (f"{len(bad)} of {len(o)} values not finite numbers ({kinds}), "
                         f"first at index {bad[0][0]}")
        found.update(sub)
        if any(v is None for v in out):
            nones.add(path)
        return out
    if isinstance(o, np.generic):
        o = o.item()
    if o is None or (isinstance(o, float) and not np.isfinite(o)):
        nones.add(path)
        if o is not None:
            found[path] = f"not a finite number ({_kind(o)})"
        return None
    return o


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
