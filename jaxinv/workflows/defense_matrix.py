"""Defense evaluation: every black-box attack against every output defense, with the cost.

:func:`defend_matrix` runs each attack in-process against the target behind each defense
(:func:`jaxinv.workflows.invert.invert`), and measures what the defense costs honest users: test
accuracy of the defended outputs and their calibration (expected calibration error of
the released top probability). It writes ``out/defense_matrix.json`` and
``out/defense_matrix.md`` (a Markdown table) plus one run directory per cell.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jax
import numpy as np

from jaxinv import data, defenses
from jaxinv.evaluation import results

DEFENSES = ("none", "round:1", "topk:1", "label", "noise:0.1")
ATTACKS = ("zo", "label-only")


def expected_calibration_error(probs: np.ndarray, y: np.ndarray, bins: int = 15) -> float:
    """ECE of released probabilities: confidence = the top released probability.

    ``sum_b |B_b|/n * |accuracy(B_b) - mean confidence(B_b)|`` over ``bins`` equal-width
    bins of the confidence (Guo et al. 2017).

    Example:
        >>> expected_calibration_error(np.eye(3), np.arange(3))
        0.0
    """
    probs, y = np.asarray(probs, np.float64), np.asarray(y)
    if probs.ndim != 2 or y.shape != probs.shape[:1]:
        raise ValueError(f"expected probs [n, K] and labels [n], got {probs.shape}, {y.shape}")
    conf, correct = probs.max(-1), probs.argmax(-1) == y
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, bins - 1)
    ece = 0.0
    for b in range(bins):
        m = which == b
        if m.any():
            ece += m.mean() * abs(correct[m].mean() - conf[m].mean())
    return float(ece)


def utility(target: Any, defense: str, x: np.ndarray, y: np.ndarray,
            seed: int = 0) -> dict[str, float]:
    """Test accuracy and ECE of ``target``'s outputs behind ``defense`` on ``(x, y)``.

    Example:
        >>> import tempfile
        >>> from jaxinv.training import fit
        >>> clf = fit("digits", "softmax", tempfile.mkdtemp(), epochs=1, progress=False)
        >>> sorted(utility(clf, "round:1", *data.load("digits", "test")))
        ['ece', 'test_accuracy']
    """
    z = target.logits(x)
    probs = jax.nn.softmax(np.asarray(z, np.float32), -1)
    released = np.asarray(defenses.parse(defense).apply(jax.random.key(seed), probs))
    return {"test_accuracy": float((released.argmax(-1) == y).mean()),
            "ece": expected_calibration_error(released, y)}


def _table(rows: list[dict[str, Any]], attacks: tuple[str, ...]) -> str:
    head = ["defense", "test acc", "ECE"]
    for a in attacks:
        head += [f"{a} top-1", f"{a} top-5", f"{a} queries/chain"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [f"`{r['defense']}`", f"{r['test_accuracy']:.2%}", f"{r['ece']:.3f}"]
        for a in attacks:
            m = r["attacks"][a]
            cells += [f"{m['attack_acc_top1']:.1%}", f"{m['attack_acc_top5']:.1%}",
                      f"{m['queries_per_chain']:.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def defend_matrix(
    target_dir: str | Path,
    eval_dir: str | Path,
    out: str | Path,
    *,
    defense_list: tuple[str, ...] = DEFENSES,
    attacks: tuple[str, ...] = ATTACKS,
    chains: int = 8,
    steps: int = 300,
    options: dict[str, dict[str, Any]] | None = None,
    classes: list[int] | None = None,
    seed: int = 0,
    chunk: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Run ``attacks`` against ``target`` behind each of ``defense_list``; write the matrix.

    ``options[attack]`` are that attack's keyword settings (as ``jaxinv attack``'s). The
    attack columns are the evaluation classifier's accuracy on the reconstructions (and
    the random-init baseline in the JSON); the utility columns are on the target dataset's
    test split. Cells already run (``out/<defense>/<attack>/results.json``) are reused.

    Example:
        >>> import tempfile
        >>> from jaxinv.training import fit
        >>> d = tempfile.mkdtemp()
        >>> _ = [fit("digits", a, f"{d}/{a}", epochs=1, progress=False) for a in ("softmax", "mlp")]
        >>> m = defend_matrix(f"{d}/softmax", f"{d}/mlp", f"{d}/dm", defense_list=("none", "label"),
        ...                   attacks=("zo",), chains=1, steps=2, classes=[0, 1], progress=False)
        >>> [r["defense"] for r in m["rows"]]
        ['none', 'label']
    """
    from jaxinv.attacks import REGISTRY
    from jaxinv.workflows.invert import _load, invert

    for d in defense_list:
        defenses.parse(d)  # fail before any work on a bad name
    black = sorted(k for k, e in REGISTRY.items() if e.kind != "white-box")
    bad = [a for a in attacks if a not in black]
    if bad:
        raise ValueError(f"unknown black-box attacks {bad}; choose from {black}")
    options = options or {}
    out = Path(out)
    target = _load(target_dir, "target")
    xt, yt = data.load(target.meta["dataset"], "test")
    rows = []
    for d in defense_list:
        row: dict[str, Any] = {"defense": d, **utility(target, d, xt, yt, seed), "attacks": {}}
        for a in attacks:
            cell = out / d.replace(":", "_").replace(",", "+") / a
            done = cell / "results.json"
            if done.exists():
                rec = json.loads(done.read_text())
            else:
                rec = invert(a, target_dir, eval_dir, cell, chains=chains, steps=steps,
                             classes=classes, seed=seed, chunk=chunk, progress=progress,
                             options={**options.get(a, {}), "defense": d})
            m = rec["metrics"]
            row["attacks"][a] = {k: m[k] for k in (
                "attack_acc_top1", "attack_acc_top5", "init_acc_top1", "target_confidence",
                "queries_total", "queries_per_chain")}
            row["attacks"][a]["run"] = str(cell)
        rows.append(row)
    record = {"target": str(target_dir), "eval_model": str(eval_dir), "chains": chains,
              "steps": steps, "options": options, "seed": seed, "rows": rows,
              "versions": results.versions()}
    results.write_json(out / "defense_matrix.json", record)
    (out / "defense_matrix.md").write_text(_table(rows, tuple(attacks)))
    return record


__all__ = ["ATTACKS", "DEFENSES", "defend_matrix", "expected_calibration_error", "utility"]
