"""The attack x defense grid: which defense, at what cost in accuracy, stops which attack?

:func:`grid` trains one target per *training-time* defense (``none``, ``dp:EPS`` DP-SGD at
delta 1e-5, ``distill`` from the undefended target, ``mid``, ``bido``, ``negls``, with
options as in :mod:`jaxinv.training.defenses`: ``"negls:alpha=-0.1"``) and puts the
undefended target behind each *output* defense (``label``, ``round:1``, ...:
:mod:`jaxinv.defenses`), then runs every attack against every cell:

- inversion attacks of the registry (``mi-face``, ``zo``, ...; ``gmi`` with a
  ``generator``, a ``jaxinv train-gan`` workdir; ``zo-latent``, ``label-only-latent``: in
  the generator's latent space) and ``p2i`` (with a ``generator``, a
  public-data ``embed`` network and the ``public`` split;
  :func:`jaxinv.workflows.p2i.p2i`): the evaluation classifier's top-1
  accuracy on the reconstructions (:func:`jaxinv.workflows.invert.invert`). White-box
  attacks see the weights, not the released outputs, so they have no output-defense cells;
- ``lira``: :func:`jaxinv.workflows.membership.membership` with the same training-time
  defense (its own population of ``lira["examples"]`` images and ``lira["models"]`` models
  trained by ``fit_many``, as LiRA needs), reporting LiRA's (online, fixed variance) and
  RMIA's AUC and TPR at 1% FPR; behind an output defense the attacks see only the released
  vectors (``membership(output=)``); under ``distill`` every model learns from a teacher
  trained on its own half.
  LiRA's population is drawn from the whole train split, not ``split``.

With a ``split`` (``"classes:0-4"``) the targets and the evaluator are trained on it,
GMI's protocol: the generator and P2I's embedding network see only the ``public`` side.

Utility is each cell's test accuracy (and calibration error) of the released outputs. Every
cell is a run directory under ``out`` and is read back when it exists (resumable cell by
cell). Writes ``grid.json``, ``grid.md`` and ``grid.png`` (attack success vs test accuracy).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from jaxinv import data
from jaxinv import defenses as output_defenses
from jaxinv.evaluation import results
from jaxinv.training import defenses as train_defenses

DEFENSES = ("none", "dp:1", "dp:3", "dp:8", "distill", "mid", "bido", "negls", "label",
            "round:1")
ATTACKS = ("mi-face", "zo", "lira")
LIRA = {"examples": 500, "models": 16, "targets": 4, "epochs": 30, "batch_size": 64,
        "lr": 1e-3}
DELTA = 1e-5


def kind(defense: str) -> str:
    """``"training"`` or ``"output"``; a one-line error for an unknown defense.

    Example:
        >>> kind("dp:3"), kind("negls:alpha=-0.1"), kind("round:1")
        ('training', 'training', 'output')
    """
    name = defense.split(":")[0]
    if name in ("none", "dp"):
        if name == "dp" and not _epsilon(defense) > 0:
            raise ValueError(f"grid: defense {defense!r}: want dp:EPSILON with EPSILON > 0")
        return "training"
    if name in train_defenses.OPTIONS:
        if name != "distill":
            train_defenses.parse(defense)
        return "training"
    try:
        output_defenses.parse(defense)
    except ValueError:
        raise ValueError(f"grid: unknown defense {defense!r}; training-time: none, dp:EPS, "
                         f"{', '.join(train_defenses.OPTIONS)}; or an output defense "
                         "(label, round:1, topk:1, noise:0.1)") from None
    return "output"


def _epsilon(defense: str) -> float:
    try:
        return float(defense.split(":", 1)[1])
    except (IndexError, ValueError):
        return -1.0


def _slug(defense: str) -> str:
    return defense.replace(":", "_").replace(",", "+").replace("=", "")


def _train_options(defense: str, out: Path) -> dict[str, Any]:
    """``fit``'s ``dp`` / ``defense`` arguments for a training-time defense."""
    name = defense.split(":")[0]
    if name == "none":
        return {}
    if name == "dp":
        return {"dp": {"epsilon": _epsilon(defense), "delta": DELTA}}
    if name == "distill":
        spec = defense if ":" in defense else "distill:"
        spec += ("," if spec[-1] != ":" else "") + f"teacher={out / 'targets' / 'none'}"
        return {"defense": spec}
    return {"defense": defense}


def _target(dataset: str, arch: str, arch_kwargs: dict, defense: str, out: Path,
            train: dict, seed: int, progress: bool, split: str | None = None) -> Path:
    """The target of a training-time defense, trained unless it exists."""
    from jaxinv.training.classifier import fit

    where = out / "targets" / _slug(defense)
    if not (where / "model.json").exists():
        if defense.startswith("distill"):
            _target(dataset, arch, arch_kwargs, "none", out, train, seed, progress, split)
        fit(dataset, arch, where, arch_kwargs=arch_kwargs, seed=seed, progress=progress,
            split=split, **train, **_train_options(defense, out))
    return where


def _inversion(attack: str, target_dir: Path, eval_dir: Path, cell: Path, output: str | None,
               run: dict, assets: dict, progress: bool) -> dict[str, Any] | None:
    from jaxinv.attacks import REGISTRY
    from jaxinv.workflows.invert import invert
    from jaxinv.workflows.p2i import p2i

    name = attack.removesuffix("-latent")
    if output and attack != "p2i" and REGISTRY[name].kind == "white-box":
        return None  # a white-box attacker reads the weights, not the released outputs
    options = run.get("options", {}).get(attack, {})
    done = (cell / "results.json").exists()
    if not done and attack == "p2i":
        p2i(target_dir, assets["generator"], assets["embed"], eval_dir, cell,
            dataset=assets["dataset"], public=assets["public"], classes=run.get("classes"),
            defense=output or "", seed=run["seed"], progress=progress, **options)
    elif not done:
        own = {k: run[k] for k in ("chains", "steps", "classes", "seed") if k in run}
        latent = attack == "gmi" or attack.endswith("-latent")
        invert(name, target_dir, eval_dir, cell, progress=progress,
               generator=assets["generator"] if latent else None,
               options={**options, **({"defense": output} if output else {})},
               **{**own, **run.get(attack, {})})
    m = json.loads((cell / "results.json").read_text())["metrics"]
    return {"attack_acc_top1": m["attack_acc_top1"], "init_acc_top1": m["init_acc_top1"],
            "run": str(cell)}


def _lira(dataset: str, arch: str, arch_kwargs: dict, defense: str, cell: Path, lira: dict,
          seed: int, progress: bool) -> dict[str, Any] | None:
    from jaxinv.workflows.membership import membership

    output = kind(defense) == "output"
    if (cell / "results.json").exists():
        rec = json.loads((cell / "results.json").read_text())
    else:
        rec = membership(cell, dataset=dataset, model=arch, model_kwargs=arch_kwargs,
                         seed=seed, progress=progress, **lira,
                         **({"output": defense} if output else
                            {"defense": defense} if defense.startswith("distill") else
                            _train_options(defense, cell)))
    m = rec["metrics"]
    lv, rm = m["lira_online_fixed_variance"], m["rmia"]
    return {"lira_auc": lv["auc"], "lira_tpr_at_1%_fpr": lv["tpr_at_1%_fpr"],
            "rmia_auc": rm["auc"], "rmia_tpr_at_1%_fpr": rm["tpr_at_1%_fpr"],
            "shadow_test_accuracy": rec["models"]["test_accuracy_mean"], "run": str(cell)}


def grid(dataset: str, out: str | Path, *, arch: str = "mlp", arch_kwargs: dict | None = None,
         eval_arch: str = "cnn", defenses: tuple[str, ...] = DEFENSES,
         attacks: tuple[str, ...] = ATTACKS, train: dict | None = None,
         run: dict | None = None, lira: dict | None = None, generator: str | None = None,
         split: str | None = None, evaluator: str | None = None, embed: str | None = None,
         public: str | None = None, seed: int = 0, progress: bool = True) -> dict[str, Any]:
    """Run every attack against every defense on ``dataset``; write ``out/grid.*``.

    ``train``: ``fit`` settings of the targets (``epochs``, ``batch_size``, ``lr``);
    ``run``: the inversion runs' ``chains``, ``steps``, ``classes``, per-attack
    ``options`` (``{"p2i": {"steps": 300}}``: :func:`jaxinv.workflows.p2i.p2i`'s) and
    per-attack overrides of the rest (``{"gmi": {"steps": 400, "unroll": 1}}``);
    ``lira``: the membership runs' settings (default :data:`LIRA`);
    ``generator``: a ``jaxinv train-gan`` workdir for ``gmi`` and ``p2i``; ``split``: the
    targets' (and evaluator's) training split; ``evaluator``: an existing evaluation
    classifier's workdir (default: train ``eval_arch`` in ``out/evaluator``);
    ``embed``, ``public``: P2I's public-data embedding network and public split.

    Example:
        >>> g = grid("digits", "runs/grid", arch="softmax", eval_arch="softmax",
        ...          defenses=("none", "label"), attacks=("zo",), train={"epochs": 2},
        ...          run={"chains": 1, "steps": 2, "classes": [0, 1]}, progress=False)
        >>> [(r["defense"], r["kind"]) for r in g["rows"]]
        [('none', 'training'), ('label', 'output')]
    """
    from jaxinv.attacks import REGISTRY
    from jaxinv.training.classifier import fit, load_classifier
    from jaxinv.workflows.defense_matrix import utility

    for d in defenses:
        kind(d)  # fail on a bad name before any work
    latent = lambda a: (a.endswith("-latent") and a[:-7] in REGISTRY
                        and REGISTRY[a[:-7]].generator == "optional")
    bad = [a for a in attacks if a not in ("lira", "p2i", *REGISTRY) and not latent(a)]
    if bad:
        raise ValueError(f"grid: unknown attacks {bad}; choose from lira, p2i, "
                         f"{sorted(REGISTRY)} and NAME-latent (zo-latent, ...)")
    if any(a in ("gmi", "p2i") or a.endswith("-latent") for a in attacks) and not generator:
        raise ValueError("grid: attacks gmi, p2i and NAME-latent need generator= (a "
                         "`jaxinv train-gan` workdir)")
    if "p2i" in attacks and (embed is None or public is None):
        raise ValueError("grid: attack p2i needs embed= (a public-data classifier's workdir) "
                         "and public= (the public split, e.g. classes:5-9)")
    out, arch_kwargs = Path(out), dict(arch_kwargs or {})
    train, run, lira = dict(train or {}), {"chains": 8, "steps": 300, **(run or {})}, \
        {**LIRA, **(lira or {})}
    eval_dir = Path(evaluator) if evaluator else out / "evaluator"
    if not (eval_dir / "model.json").exists():
        if evaluator:
            raise FileNotFoundError(f"grid: evaluator {evaluator}: no model.json")
        fit(dataset, eval_arch, eval_dir, seed=seed + 1, split=split, progress=progress)
    assets = {"generator": generator, "embed": embed, "public": public, "dataset": dataset}
    xt, yt = data.load(dataset, "test")
    if split and split.startswith("classes:"):  # as fit's test accuracy
        xt, yt = data.subset(xt, yt, split)
    rows = []
    for d in defenses:
        k = kind(d)
        output = d if k == "output" else None
        target_dir = _target(dataset, arch, arch_kwargs, "none" if output else d, out,
                             train, seed, progress, split)
        row: dict[str, Any] = {"defense": d, "kind": k, "target": str(target_dir),
                               **utility(load_classifier(target_dir), output or "none",
                                         xt, yt, seed), "attacks": {}}
        for a in attacks:
            cell = out / "cells" / _slug(d) / a
            row["attacks"][a] = (_lira(dataset, arch, arch_kwargs, d, cell, lira, seed,
                                       progress) if a == "lira" else
                                 _inversion(a, target_dir, eval_dir, cell, output,
                                            {**run, "seed": seed}, assets, progress))
        rows.append(row)
        if progress:
            print(f"grid {d}: {results.summary_json(_flat(row))}", flush=True)
    record = {"dataset": dataset, "arch": arch, "arch_kwargs": arch_kwargs,
              "eval_arch": eval_arch, "train": train, "run": run, "lira": lira,
              "generator": generator, "split": split, "evaluator": str(eval_dir),
              "embed": embed, "public": public, "seed": seed, "rows": rows,
              "versions": results.versions()}
    out.mkdir(parents=True, exist_ok=True)
    (out / "grid.md").write_text(table(rows, attacks))
    plot(out / "grid.png", rows, attacks)
    results.write_json(out / "grid.json", record)
    return record


def _flat(row: dict) -> dict[str, Any]:
    """A row's numbers under one key each (``zo``, ``lira_auc``, ...); ``None``: no cell."""
    flat = {"defense": row["defense"], "test_accuracy": row["test_accuracy"]}
    for a, m in row["attacks"].items():
        if a == "lira":
            for key in ("lira_auc", "rmia_auc", "lira_tpr_at_1%_fpr"):
                flat[key] = None if m is None else m[key]
        else:
            flat[a] = None if m is None else m["attack_acc_top1"]
    return flat


def table(rows: list[dict], attacks: tuple[str, ...]) -> str:
    """The grid as Markdown: one row per defense; inversion columns are the evaluator's top-1
    on reconstructions, LiRA/RMIA columns AUC; ``n/a`` where a cell does not apply.

    Example:
        >>> print(table([{"defense": "none", "kind": "training", "test_accuracy": 0.9,
        ...               "ece": 0.05, "attacks": {"zo": {"attack_acc_top1": 0.8}}}], ("zo",)))
        | defense | kind | test accuracy | ECE | zo top-1 |
        |---|---|---|---|---|
        | none | training | 0.900 | 0.050 | 0.800 |
    """
    cols = [f"{a} top-1" if a != "lira" else "LiRA AUC | LiRA TPR@1% | RMIA AUC" for a in attacks]
    head = "| defense | kind | test accuracy | ECE | " + " | ".join(cols) + " |"
    n = head.count("|") - 1
    lines = [head, "|" + "---|" * n]
    fmt = lambda v: "n/a" if v is None else f"{v:.3f}"
    for r in rows:
        cells = []
        for a in attacks:
            m = r["attacks"].get(a)
            if a == "lira":
                cells += [fmt(None if m is None else m[k]) for k in
                          ("lira_auc", "lira_tpr_at_1%_fpr", "rmia_auc")]
            else:
                cells.append(fmt(None if m is None else m["attack_acc_top1"]))
        lines.append(f"| {r['defense']} | {r['kind']} | {r['test_accuracy']:.3f} | "
                     f"{r['ece']:.3f} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(path: str | Path, rows: list[dict], attacks: tuple[str, ...]) -> Path:
    """Attack success (inversion top-1, LiRA AUC) against test accuracy, one panel per
    attack, one labelled point per defense.

    Example:
        >>> rows = [{"defense": "none", "test_accuracy": 0.9,
        ...          "attacks": {"zo": {"attack_acc_top1": 0.8}}}]
        >>> plot("grid.png", rows, ("zo",)).name
        'grid.png'
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(attacks), figsize=(3.6 * len(attacks), 3.4), squeeze=False)
    for ax, a in zip(axes[0], attacks, strict=True):
        key = "lira_auc" if a == "lira" else "attack_acc_top1"
        for r in rows:
            m = r["attacks"].get(a)
            if m is not None and m.get(key) is not None and np.isfinite(m[key]):
                ax.scatter(r["test_accuracy"], m[key], s=14)
                ax.annotate(r["defense"], (r["test_accuracy"], m[key]), fontsize=7)
        ax.set(xlabel="test accuracy", ylabel="LiRA AUC" if a == "lira" else
               "evaluator top-1 on reconstructions", title=a)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


__all__ = ["ATTACKS", "DEFENSES", "LIRA", "grid", "kind", "plot", "table"]
