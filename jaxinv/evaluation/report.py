"""Self-contained HTML audit report of an attack run directory.

:func:`write_report` reads ``D/results.json``, ``D/reconstructions.npz``, ``D/grid.png`` and,
after ``jaxinv evaluate``, ``D/per_sample.npz``, and writes ``D/report.html``: one page with
every image and figure embedded as a base64 PNG, so it can be archived or mailed on its own.

The page is the Jinja2 template ``templates/report.html.j2`` (its CSS in
``templates/report.css.j2``), shipped as package data and rendered with autoescaping: this
module only gathers plain values (numbers formatted as text, strings from ``results.json``
unchanged, images as ``data:`` URIs), and the template escapes every one of them.
"""

from __future__ import annotations

import base64
import functools
import io
import itertools
import json
import math
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from jaxinv.evaluation.results import _atomic_write, save_grid

# per-class columns in [0, 1]: drawn with an inline bar behind the number
FRACTIONS = {"top1", "top5", "target_confidence", "precision", "recall", "coverage",
             "resilient_fraction"}
EVAL_HEADLINE = [("knn_dist", "KNN distance", "squared, to nearest private (eval features)"),
                 ("feature_dist", "Feature distance", "squared, to private class centroid"),
                 ("fid_eval", "FID", "evaluation-classifier features"),
                 ("precision", "Precision", ""), ("recall", "Recall", ""),
                 ("density", "Density", ""), ("coverage", "Coverage", ""),
                 ("psnr", "PSNR", "dB, vs nearest private"), ("ssim", "SSIM", "")]


def _fmt(v: Any, pct: bool = False) -> str:
    if v is None:
        return "–"
    if isinstance(v, bool | int | np.integer):
        return f"{int(v):,}"
    if not isinstance(v, float | np.floating):
        return str(v)  # plain text: the template escapes it
    if not math.isfinite(v):
        return str(v)
    if pct:
        return f"{100 * v:.1f}%"
    return f"{v:,.0f}" if abs(v) >= 1e4 else f"{v:.4g}"


@functools.cache
def _env() -> Any:
    """The Jinja2 environment of the package's templates (autoescaping ``*.html.j2``)."""
    import jinja2

    return jinja2.Environment(
        loader=jinja2.PackageLoader("jaxinv.evaluation", "templates"),
        # select_autoescape() alone matches names ending in .html, not report.html.j2
        autoescape=jinja2.select_autoescape(("html", "htm", "xml", "html.j2"), default=True),
        trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True,
        undefined=jinja2.StrictUndefined)


def _b64(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode()


def _img_png(a: np.ndarray, min_side: int = 96) -> bytes:
    """PNG bytes of one image [H, W, C] in [0, 1], upscaled (nearest) to ``min_side``."""
    from PIL import Image

    a = (np.clip(np.asarray(a, np.float32), 0, 1) * 255).round().astype(np.uint8)
    img = Image.fromarray(a[..., 0] if a.shape[-1] == 1 else a)
    s = max(1, -(-min_side // max(a.shape[:2])))
    buf = io.BytesIO()
    img.resize((img.width * s, img.height * s), Image.NEAREST).save(buf, format="PNG")
    return buf.getvalue()


def _fig_png(fig) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    fig.clear()  # Figure objects are not registered with pyplot: this closes it
    return buf.getvalue()


def _read_npz(path: Path, how: str) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as e:
        raise ValueError(f"{path} is unreadable ({e}); {how}") from None


def load_run(run_dir: str | Path) -> tuple[dict, dict[str, np.ndarray], dict | None]:
    """``(results.json record, reconstructions.npz arrays, per_sample.npz arrays or None)``.

    Example:
        >>> from jaxinv.evaluation.results import write_run
        >>> _ = write_run("runs/demo", {"metrics": {"attack_acc_top1": 0.5}},
        ...               {"x": np.zeros((2, 3, 8, 8, 1)), "y": np.array([3, 6])})
        >>> rec, arrays, per_sample = load_run("runs/demo")
        >>> rec["metrics"], arrays["x"].shape, per_sample  # x: [classes, chains, H, W, C]
        ({'attack_acc_top1': 0.5}, (2, 3, 8, 8, 1), None)
    """
    d = Path(run_dir)
    redo = f"run `jaxinv attack mi-face ... --out {d}` first"
    if not (d / "results.json").is_file():
        raise FileNotFoundError(f"{d / 'results.json'} not found: {redo}")
    try:
        rec = json.loads((d / "results.json").read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"{d / 'results.json'} is not valid JSON ({e}); {redo}") from None
    if not isinstance(rec, dict) or not isinstance(rec.get("metrics"), dict):
        raise ValueError(f"{d / 'results.json'} has no 'metrics' object; {redo}")
    if not (d / "reconstructions.npz").is_file():
        raise FileNotFoundError(f"{d / 'reconstructions.npz'} not found: {redo}")
    arrays = _read_npz(d / "reconstructions.npz", redo)
    if "x" not in arrays or arrays["x"].ndim != 5:
        raise ValueError(f"{d / 'reconstructions.npz'} lacks 'x' [classes, chains, H, W, C]; "
                         + redo)
    per_sample = None
    if (d / "per_sample.npz").exists():
        per_sample = _read_npz(d / "per_sample.npz", f"re-run `jaxinv evaluate --run {d} ...`")
    return rec, arrays, per_sample


def _model_row(name: str, meta: dict | None, path: Any) -> dict | None:
    if not meta:
        return {"name": name, "meta": None, "path": _fmt(path)} if path else None
    return {"name": name, "path": _fmt(path),
            "meta": {"arch": _fmt(meta.get("arch", "?")), "dataset": _fmt(meta.get("dataset", "?")),
                     "test_acc": _fmt(meta.get("test_accuracy"), pct=True),
                     "train_acc": _fmt(meta.get("train_accuracy"), pct=True),
                     "params": _fmt(meta.get("num_params"))}}


def _header(d: Path, rec: dict, arrays: dict) -> dict:
    cfg, m, t, v = (rec.get(k) or {} for k in ("config", "metrics", "timing", "versions"))
    x = arrays["x"]
    opts = ", ".join(f"{k}={v}" for k, v in (cfg.get("options") or {}).items()) or "defaults"
    unit = (f"{x.shape[0]} victims × {x.shape[1]} images, {_fmt(cfg.get('restarts'))} "
            f"restart(s), defense {_fmt(cfg.get('defense'))}" if "victims" in arrays else
            f"{x.shape[1]} chains × {x.shape[0]} classes")
    run = (f"{unit}, {_fmt(m.get('steps_run'))} steps "
           f"(of {_fmt(cfg.get('steps'))}); image {'×'.join(map(str, x.shape[2:]))}; "
           f"options: {opts}")
    vers = " · ".join(f"{k} {_fmt(v[k])}" for k in ("jaxinv", "jax", "jaxlib", "flax", "numpy",
                                                    "python", "backend", "devices") if k in v)
    timing = " · ".join(f"{k.removesuffix('_s')} {_fmt(t[k])} s" for k in
                        ("wall_s", "compile_s", "run_s", "evaluate_s") if k in t)
    if "chain_steps_per_s" in t:
        timing += f" · {_fmt(t['chain_steps_per_s'])} chain-steps/s"
    models = [_model_row("Target", cfg.get("target_meta"), cfg.get("target")),
              _model_row("Evaluator", cfg.get("eval_meta"), cfg.get("eval_model"))]
    return {"attack": _fmt(rec.get("attack", "attack")), "path": str(d.absolute()),
            "generated": time.strftime("%Y-%m-%d %H:%M"),
            "models": [r for r in models if r is not None], "run": run,
            "seed": _fmt(rec.get("seed")), "versions": vers or "–", "timing": timing or "–"}


def _card(label: str, value: str, sub: str = "") -> dict:
    return {"label": label, "value": value, "sub": sub}


def _headline(d: Path, m: dict) -> dict:
    cards = [_card("Attack top-1", _fmt(m.get("attack_acc_top1"), True),
                   f"random init {_fmt(m.get('init_acc_top1'), True)}"),
             _card("Attack top-5", _fmt(m.get("attack_acc_top5"), True),
                   f"random init {_fmt(m.get('init_acc_top5'), True)}"),
             _card("Target confidence", _fmt(m.get("target_confidence")), "mean over chains"),
             _card("Top-1 std", _fmt(m.get("attack_acc_top1_std_over_classes")), "over classes"),
             _card("Failed chains", _fmt(m.get("chains_failed")), "went non-finite")]
    cards += [_card(label, _fmt(m[k]), sub) for k, label, sub in EVAL_HEADLINE if k in m]
    ps = m.get("per_sample") or {}
    for k, label, sub in [("resilient_fraction", "Resilient fraction", "private samples, score 0"),
                          ("score_mean", "Mean score", "per private sample"),
                          ("score_max", "Max score", "most exposed sample")]:
        if k in ps:
            cards.append(_card(label, _fmt(ps[k], pct=k == "resilient_fraction"), sub))
    per_sample = {"definition": _fmt(ps.get("definition", "score")),
                  "private": _fmt(ps.get("private", "?")),
                  "features": _fmt(ps.get("features", "features ?"))} if ps else None
    no_metrics = not any(k in m for k, *_ in EVAL_HEADLINE) and not ps
    return {"cards": cards, "per_sample": per_sample,
            "evaluate_hint": str(d) if no_metrics else None}


GRADIENT_HEADLINE = [("exact_recovery_rate", "Exact recovery", "images with MSE < 1e-3", True),
                     ("psnr_mean", "PSNR", "dB, mean over images", False),
                     ("psnr_median", "PSNR median", "dB", False),
                     ("ssim_mean", "SSIM", "mean over images", False),
                     ("label_accuracy", "Labels recovered", "", True),
                     ("flagged", "Flagged victims", "non-finite updates, not attacked", False)]
VICTIMS_SHOWN = 32


def _gradient_headline(m: dict) -> dict:
    cards = [_card(label, _fmt(m.get(k), pct), sub) for k, label, sub, pct in GRADIENT_HEADLINE]
    return {"cards": cards, "per_sample": None, "evaluate_hint": None}


def _victims(arrays: dict) -> list[dict]:
    """Gradient-leakage runs: each victim's images beside their reconstructions."""
    out = []
    for v in range(min(VICTIMS_SHOWN, len(arrays["victims"]))):
        for b in range(arrays["victims"].shape[1]):
            out.append({"private": _b64(_img_png(arrays["victims"][v, b])),
                        "reconstruction": _b64(_img_png(np.clip(arrays["x"][v, b], 0, 1))),
                        "index": f"{v}" + (f".{b}" if arrays["victims"].shape[1] > 1 else ""),
                        "label": f" · label {int(arrays['labels'][v, b])}"
                                 if "labels" in arrays else "",
                        "psnr": _fmt(float(arrays["psnr"][v, b])) if "psnr" in arrays else "–",
                        "mse": _fmt(float(arrays["mse"][v, b])) if "mse" in arrays else "–"})
    return out


def _per_class_table(m: dict, arrays: dict) -> dict | None:
    pc, pe = m.get("per_class") or {}, m.get("per_class_eval") or {}
    extra: dict[str, dict[str, Any]] = {}
    if "y" in arrays:
        for i, c in enumerate(np.asarray(arrays["y"]).ravel()):
            e = extra.setdefault(str(int(c)), {})
            if "best_loss" in arrays:
                e["best_loss"] = float(np.nanmean(arrays["best_loss"][i]))
            if "failed" in arrays:
                e["failed"] = int(np.sum(arrays["failed"][i]))
    tables = [pc, extra, pe]
    classes = sorted(set().union(*tables), key=lambda c: (len(c), c))  # "2" before "10"
    cols = list(dict.fromkeys(k for t in tables for row in t.values() for k in row))
    if not classes:
        return None
    rows = []
    for c in classes:
        cells = []
        for k in cols:
            v = next((t[c][k] for t in tables if k in t.get(c, {})), None)
            if k in FRACTIONS and isinstance(v, float) and 0 <= v <= 1:  # an inline bar
                cells.append({"text": f"{v:.3f}", "bar": f"{100 * v:.0f}"})
            else:
                cells.append({"text": _fmt(v), "bar": None})
        rows.append({"name": c, "cells": cells})
    return {"columns": [k.replace("_", " ").replace("top", "top-") for k in cols], "rows": rows}


def _grid(d: Path, arrays: dict) -> dict:
    from PIL import Image

    if (d / "grid.png").is_file():
        png = (d / "grid.png").read_bytes()
    else:
        with tempfile.TemporaryDirectory() as tmp:
            save_grid(Path(tmp) / "grid.png", arrays["x"])
            png = (Path(tmp) / "grid.png").read_bytes()
    w, h = Image.open(io.BytesIO(png)).size
    # whole grid within ~800 px when rows stay >= 80 px high, else scroll; never upscale
    show_h = min(h, max(800, 80 * arrays["x"].shape[0]), h * 1100 // w)
    y = [int(c) for c in np.asarray(arrays.get("y", [])).ravel()]
    y = f"{y[0]}–{y[-1]}" if len(y) > 3 and y == list(range(y[0], y[-1] + 1)) else \
        ", ".join(map(str, y))
    return {"classes": y, "width": show_h * w // h, "height": show_h, "src": _b64(png)}


def _exposed(ps: dict) -> list[dict]:
    n = len(ps.get("exposed_index", []))
    if not n or "exposed_x" not in ps or "exposed_rec" not in ps:
        return []
    labels = ps.get("labels")
    # exposed_index indexes the whole private set; score/labels only its attacked-class
    # subset, whose private-set indices are private_index (identity when absent)
    where = {int(v): k for k, v in enumerate(ps.get("private_index", range(len(ps["score"]))))}
    pairs = []
    for i in range(n):
        j = int(ps["exposed_index"][i])
        k = where.get(j)
        cls = f" · class {int(labels[k])}" if labels is not None and k is not None else ""
        sc = ps["exposed_score"][i] if "exposed_score" in ps else \
            None if k is None else ps["score"][k]
        sc = None if sc is None else float(sc)
        dist = ps["exposed_dist"][i] if "exposed_dist" in ps else None
        pairs.append({"private": _b64(_img_png(ps["exposed_x"][i])),
                      "reconstruction": _b64(_img_png(ps["exposed_rec"][i])),
                      "index": j, "label": cls, "score": _fmt(sc),
                      "dist": _fmt(None if dist is None else float(dist))})
    return pairs


def _score_figure(ps: dict) -> str:
    """The per-sample score figure as a ``data:`` URI."""
    from matplotlib.figure import Figure

    s = np.asarray(ps["score"], np.float64)
    labels = ps.get("labels")
    fig = Figure(figsize=(11, 3.4), layout="constrained")
    ax = fig.add_subplot(1, 2 if labels is not None else 1, 1)
    pos = s[s > 0]
    ax.hist(pos if pos.size else s, bins=40, color="#d9622b")
    ax.set_yscale("log")
    ax.set(xlabel="score", ylabel="private samples",
           title=f"Scores > 0: {pos.size:,} of {s.size:,} samples\n"
                 f"({s.size - pos.size:,} resilient samples, score 0, not shown)")
    if labels is not None:
        ax = fig.add_subplot(1, 2, 2)
        classes = np.unique(labels)
        edges = np.linspace(0, max(s.max(), 1e-12), 5)
        pairs = list(itertools.pairwise(edges))
        bands = [(s > lo) & (s <= hi) for lo, hi in pairs]
        names = [f"({lo:.2g}, {hi:.2g}]" for lo, hi in pairs]
        colors = ["#fdd49e", "#fc8d59", "#d7301f", "#7f0000"]
        bottom = np.zeros(len(classes))
        for band, name, col in zip(bands, names, colors, strict=True):
            frac = np.array([band[labels == c].mean() for c in classes])
            ax.bar(np.arange(len(classes)), frac, bottom=bottom, color=col, label=name, width=0.85)
            bottom += frac
        ax.set_xticks(np.arange(len(classes)), [str(c) for c in classes],
                      fontsize=8 if len(classes) <= 20 else 6)
        ax.set(xlabel="class", ylabel="fraction of class samples",
               title="Exposed (score > 0) fraction per class,\nby score band")
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1, 0.5), title="score")
    return _b64(_fig_png(fig))


def _curves_figure(arrays: dict) -> str | None:
    import matplotlib
    from matplotlib.figure import Figure

    names = [k for k in ("curve_loss", "curve_confidence", "curve_grad_norm") if k in arrays]
    if not names:
        return None
    y = np.asarray(arrays.get("y", np.arange(arrays[names[0]].shape[1]))).ravel()
    fig = Figure(figsize=(11, 3.2), layout="constrained")
    cmap = matplotlib.colormaps["tab10" if len(y) <= 10 else "viridis"]
    for a, name in enumerate(names):
        ax = fig.add_subplot(1, len(names), a + 1)
        c = np.asarray(arrays[name], np.float64)
        for i in range(c.shape[1]):
            ax.plot(c[:, i], lw=1, alpha=0.8, color=cmap(i if len(y) <= 10 else i / len(y)),
                    label=str(int(y[i])) if i < len(y) else str(i))
        ax.plot(np.nanmean(c, 1), lw=2, color="k", ls="--", label="mean")
        finite = c[np.isfinite(c)]
        if name != "curve_confidence" and finite.size and finite.min() > 0 \
                and finite.max() / finite.min() > 100:
            ax.set_yscale("log")
        ax.set(xlabel="step", title=name.removeprefix("curve_").replace("_", " ")
               + " (mean over chains)")
    if len(y) <= 10:
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1, 0.5), title="class")
    return _b64(_fig_png(fig))


def write_report(run_dir: str | Path) -> Path:
    """Write ``run_dir/report.html``, a self-contained audit page of an attack run.

    Sample-level sections appear once ``jaxinv evaluate`` has added its metrics and
    ``per_sample.npz``. Raises FileNotFoundError/ValueError naming a missing/corrupt file.

    Example:
        >>> from jaxinv.evaluation.results import write_run
        >>> _ = write_run("runs/demo", {"attack": "mi-face", "metrics": {"attack_acc_top1": 0.5}},
        ...               {"x": np.zeros((2, 3, 8, 8, 1)), "y": np.array([3, 6])})
        >>> page = write_report("runs/demo")
        >>> print(page)
        runs/demo/report.html
        >>> "mi-face" in page.read_text()
        True
    """
    d = Path(run_dir)
    rec, arrays, ps = load_run(d)
    m = rec["metrics"]
    gradient = "victims" in arrays  # a gradient-leakage run (jaxinv attack dlg|idlg|ig)
    context = {"attack": _fmt(rec.get("attack", "")), "run_name": d.name,
               "header": _header(d, rec, arrays),
               "headline": _gradient_headline(m) if gradient else _headline(d, m),
               "per_class": _per_class_table(m, arrays), "grid": _grid(d, arrays),
               "victims": _victims(arrays) if gradient else [],
               "exposed": [], "score_figure": None}
    if ps is not None and "score" in ps:
        context["exposed"] = _exposed(ps)
        context["score_figure"] = _score_figure(ps)
    context["curves_figure"] = _curves_figure(arrays)
    page = _env().get_template("report.html.j2").render(context)
    out = d / "report.html"
    _atomic_write(out, lambda f: f.write(page.encode()))
    return out


__all__ = ["load_run", "write_report"]
