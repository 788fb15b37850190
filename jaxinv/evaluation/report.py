"""Self-contained HTML audit report of an attack run directory.

:func:`write_report` reads ``D/results.json``, ``D/reconstructions.npz``, ``D/grid.png`` and,
after ``jaxinv evaluate``, ``D/per_sample.npz``, and writes ``D/report.html``: one page with
every image and figure embedded as a base64 PNG, so it can be archived or mailed on its own.
"""

from __future__ import annotations

import base64
import html
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

CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1d2330;
 max-width:1180px;margin:24px auto;padding:0 20px}
h1{font-size:22px;margin:0 0 2px}h2{font-size:17px;margin:30px 0 10px;padding-bottom:4px;
 border-bottom:1px solid #e3e6ec}.muted{color:#667085}code{background:#f2f4f7;padding:0 4px}
table{border-collapse:collapse;font-variant-numeric:tabular-nums}
th,td{padding:4px 10px;border-bottom:1px solid #eceff3;text-align:right;white-space:nowrap}
th{background:#f5f7fa;font-weight:600;position:sticky;top:0;white-space:normal;
 vertical-align:bottom}table.pc td,table.pc th{padding:3px 8px;font-size:13px}
td:first-child,th:first-child{text-align:left}
table.kv td{text-align:left;white-space:normal}table.kv th{text-align:left;background:none;
 color:#475467;position:static;vertical-align:top}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(165px,1fr));gap:10px}
.card{border:1px solid #e3e6ec;border-radius:8px;padding:8px 12px}
.card .v{font-size:21px;font-weight:600}.card .l,.card .s{color:#667085;font-size:12px}
.hint{background:#fff8e6;border:1px solid #f5d78e;border-radius:6px;padding:8px 12px;margin:12px 0}
.scroll{max-height:900px;overflow:auto;width:fit-content;max-width:100%;
 border:1px solid #eceff3}
img.px{image-rendering:pixelated}img.fig{max-width:100%}
.pairs{display:flex;flex-wrap:wrap;gap:10px}.pair{border:1px solid #e3e6ec;border-radius:8px;
 padding:6px;text-align:center;font-size:12px}.pair img{width:96px;margin:2px}
"""
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
        return html.escape(str(v))
    if not math.isfinite(v):
        return str(v)
    if pct:
        return f"{100 * v:.1f}%"
    return f"{v:,.0f}" if abs(v) >= 1e4 else f"{v:.4g}"


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
        >>> rec, arrays, per_sample = load_run("runs/demo/mi-face")
        >>> arrays["x"].shape   # [classes, chains, H, W, C]
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


def _meta_row(name: str, meta: dict | None, path: Any) -> str:
    if not meta:
        return f"<tr><th>{name}</th><td>{_fmt(path)}</td></tr>" if path else ""
    bits = [f"<b>{_fmt(meta.get('arch', '?'))}</b> on {_fmt(meta.get('dataset', '?'))}",
            f"test acc {_fmt(meta.get('test_accuracy'), pct=True)}",
            f"train acc {_fmt(meta.get('train_accuracy'), pct=True)}",
            f"{_fmt(meta.get('num_params'))} params", f"<span class=muted>{_fmt(path)}</span>"]
    return f"<tr><th>{name}</th><td>{' · '.join(bits)}</td></tr>"


def _header(d: Path, rec: dict, arrays: dict) -> str:
    cfg, m, t, v = (rec.get(k) or {} for k in ("config", "metrics", "timing", "versions"))
    x = arrays["x"]
    opts = ", ".join(f"{k}={v}" for k, v in (cfg.get("options") or {}).items()) or "defaults"
    attack = (f"{x.shape[1]} chains × {x.shape[0]} classes, {_fmt(m.get('steps_run'))} steps "
              f"(of {_fmt(cfg.get('steps'))}); image {'×'.join(map(str, x.shape[2:]))}; "
              f"options: {html.escape(opts)}")
    vers = " · ".join(f"{k} {_fmt(v[k])}" for k in ("jaxinv", "jax", "jaxlib", "flax", "numpy",
                                                    "python", "backend", "devices") if k in v)
    timing = " · ".join(f"{k.removesuffix('_s')} {_fmt(t[k])} s" for k in
                        ("wall_s", "compile_s", "run_s", "evaluate_s") if k in t)
    if "chain_steps_per_s" in t:
        timing += f" · {_fmt(t['chain_steps_per_s'])} chain-steps/s"
    rows = [_meta_row("Target", cfg.get("target_meta"), cfg.get("target")),
            _meta_row("Evaluator", cfg.get("eval_meta"), cfg.get("eval_model")),
            f"<tr><th>Attack</th><td>{attack}</td></tr>",
            f"<tr><th>Seed</th><td>{_fmt(rec.get('seed'))}</td></tr>",
            f"<tr><th>Versions</th><td>{vers or '–'}</td></tr>",
            f"<tr><th>Timing</th><td>{timing or '–'}</td></tr>"]
    return (f"<h1>Model-inversion audit: {_fmt(rec.get('attack', 'attack'))}</h1>"
            f"<div class=muted>{_fmt(str(d.absolute()))} · report generated "
            f"{time.strftime('%Y-%m-%d %H:%M')}</div><table class=kv>{''.join(rows)}</table>")


def _card(label: str, value: str, sub: str = "") -> str:
    return f"<div class=card><div class=l>{label}</div><div class=v>{value}</div>" \
           f"<div class=s>{sub}</div></div>"


def _headline(d: Path, m: dict) -> str:
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
    out = f"<h2>Headline numbers</h2><div class=cards>{''.join(cards)}</div>"
    if ps:
        out += (f"<p class=muted>Sample-level scores: {_fmt(ps.get('definition', 'score'))} "
                f"on private set {_fmt(ps.get('private', '?'))}, "
                f"{_fmt(ps.get('features', 'features ?'))}.</p>")
    if not any(k in m for k, *_ in EVAL_HEADLINE) and not ps:
        out += (f"<div class=hint>No sample-level metrics yet: run <code>jaxinv evaluate --run "
                f"{html.escape(str(d))} ...</code> to add sample-level metrics (KNN distance, "
                "FID, precision/recall, per-sample exposure scores).</div>")
    return out


def _per_class_table(m: dict, arrays: dict) -> str:
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
        return ""
    head = "".join(f"<th>{html.escape(k.replace('_', ' ').replace('top', 'top-'))}</th>"
                   for k in cols)
    rows = []
    for c in classes:
        cells = []
        for k in cols:
            v = next((t[c][k] for t in tables if k in t.get(c, {})), None)
            bar = (f' style="background:linear-gradient(90deg,#dbe7f7 {100 * v:.0f}%,'
                   f'transparent {100 * v:.0f}%)"' if k in FRACTIONS and isinstance(v, float)
                   and 0 <= v <= 1 else "")
            txt = f"{v:.3f}" if bar else _fmt(v)
            cells.append(f"<td{bar}>{txt}</td>")
        rows.append(f"<tr><td>class {html.escape(c)}</td>{''.join(cells)}</tr>")
    return (f"<h2>Per class</h2><div class=scroll><table class=pc><tr><th>class</th>{head}</tr>"
            f"{''.join(rows)}</table></div>")


def _grid(d: Path, arrays: dict) -> str:
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
    return (f"<h2>Reconstructions</h2><p class=muted>One row per class (top to bottom: "
            f"classes {y}); the best iterates of the first chains of each class.</p>"
            "<div class=scroll>"
            f'<img class=px width={show_h * w // h} height={show_h} src="{_b64(png)}" '
            'alt="grid"></div>')


def _exposed(ps: dict) -> str:
    n = len(ps.get("exposed_index", []))
    if not n or "exposed_x" not in ps or "exposed_rec" not in ps:
        return ""
    labels = ps.get("labels")
    # exposed_index indexes the whole private set; score/labels only its attacked-class
    # subset, whose private-set indices are private_index (identity when absent)
    where = {int(v): k for k, v in enumerate(ps.get("private_index", range(len(ps["score"]))))}
    cards = []
    for i in range(n):
        j = int(ps["exposed_index"][i])
        k = where.get(j)
        cls = f" · class {int(labels[k])}" if labels is not None and k is not None else ""
        sc = ps["exposed_score"][i] if "exposed_score" in ps else \
            None if k is None else ps["score"][k]
        sc = None if sc is None else float(sc)
        dist = ps["exposed_dist"][i] if "exposed_dist" in ps else None
        cards.append(f'<div class=pair><img class=px src="{_b64(_img_png(ps["exposed_x"][i]))}" '
                     f'alt="private"><img class=px src="{_b64(_img_png(ps["exposed_rec"][i]))}" '
                     f'alt="reconstruction"><br>#{j}{cls}<br>score {_fmt(sc)} · '
                     f"dist {_fmt(None if dist is None else float(dist))}</div>")
    return ("<h2>Most exposed training samples</h2><p class=muted>Private training image "
            "(left) next to its nearest reconstruction (right), highest exposure score first."
            f"</p><div class=pairs>{''.join(cards)}</div>")


def _score_figure(ps: dict) -> str:
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
    return ("<h2>Per-sample exposure scores</h2>"
            f'<img class=fig src="{_b64(_fig_png(fig))}" alt="scores">')


def _curves_figure(arrays: dict) -> str:
    import matplotlib
    from matplotlib.figure import Figure

    names = [k for k in ("curve_loss", "curve_confidence", "curve_grad_norm") if k in arrays]
    if not names:
        return ""
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
    return ("<h2>Attack curves per class</h2>"
            f'<img class=fig src="{_b64(_fig_png(fig))}" alt="curves">')


def write_report(run_dir: str | Path) -> Path:
    """Write ``run_dir/report.html``, a self-contained audit page of an attack run.

    Sample-level sections appear once ``jaxinv evaluate`` has added its metrics and
    ``per_sample.npz``. Raises FileNotFoundError/ValueError naming a missing/corrupt file.

    Example:
        >>> write_report("runs/demo/mi-face")
        PosixPath('runs/demo/mi-face/report.html')
    """
    d = Path(run_dir)
    rec, arrays, ps = load_run(d)
    m = rec["metrics"]
    body = [_header(d, rec, arrays), _headline(d, m), _per_class_table(m, arrays),
            _grid(d, arrays)]
    if ps is not None and "score" in ps:
        body += [_exposed(ps), _score_figure(ps)]
    body.append(_curves_figure(arrays))
    page = (f"<!doctype html><html lang=en><head><meta charset=utf-8><title>jaxinv report: "
            f"{_fmt(rec.get('attack', ''))} {html.escape(d.name)}</title><style>{CSS}</style>"
            f"</head><body>{''.join(body)}</body></html>")
    out = d / "report.html"
    _atomic_write(out, lambda f: f.write(page.encode()))
    return out


__all__ = ["load_run", "write_report"]
