"""TLDR vs network inversion vs MI-Face from a target's weights: train what is missing, run,
evaluate against the target's real training samples, print the README tables, write grids.

    JAXINV_DATA_DIR=../shared/data python experiments/tldr.py experiments/configs/tldr.py:all
    python experiments/tldr.py experiments/configs/tldr.py:digits,smoke --workdir /tmp/tldr

Every stage reuses what an earlier call finished (models, generators, runs, evaluations), so
a killed run resumes. Writes ``WORKDIR/table.md`` and ``WORKDIR/table.json`` (the main
table, the ablation, training-likeness) and ``WORKDIR/SETTING/grid.png`` (per class: TLDR
samples, each beside its nearest real training sample in evaluator features).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from main import load_config

from jaxinv import data
from jaxinv.attacks.inversion_losses import weights_from
from jaxinv.evaluation import results
from jaxinv.evaluation.evaluate import evaluate
from jaxinv.metrics import nearest
from jaxinv.metrics.traininglike import (
    DIAGNOSTICS,
    membership_auc,
    membership_score,
    training_likeness,
)
from jaxinv.training.classifier import fit, load_classifier
from jaxinv.training.inverter import train_inverter
from jaxinv.workflows.invert import invert
from jaxinv.workflows.network_inversion import network_inversion, write_member_run

ATTACKS = ("tldr", "ni", "mi-face")


def model(dataset: str, arch: str, workdir: Path, train: dict):
    if (workdir / "model.json").exists():
        return load_classifier(workdir)
    return fit(dataset, arch, workdir, **train)


def private(setting: dict) -> tuple[str, int | None]:
    return f"{setting['dataset']}:train", setting["train"].get("limit")


def run_attacks(cfg, name: str, setting: dict, work: Path, eval_dir: Path) -> dict[str, Path]:
    target_dir = work / name / "target"
    model(setting["dataset"], cfg.target_arch, target_dir, setting["train"])
    runs = {}
    for attack in ATTACKS:
        out = work / name / attack
        runs[attack] = out
        if (out / "results.json").exists() and "wall_s" in _rec(out).get("timing", {}):
            continue
        if attack == "mi-face":
            invert("mi-face", target_dir, eval_dir, out, chains=cfg.samples,
                   steps=cfg.mi_face.steps, options=cfg.mi_face.options.to_dict(),
                   seed=cfg.seed)
        else:
            network_inversion(target_dir, eval_dir, out, preset=attack, samples=cfg.samples,
                              steps=cfg.steps, seed=cfg.seed, **cfg.generator.to_dict())
    return runs


def run_ablation(cfg, setting: dict, work: Path, eval_dir: Path) -> dict[str, Path]:
    members = cfg.ablation.members.to_dict()
    outs = {m: work / "ablation" / m.replace("=", "_") for m in members}
    if all((o / "results.json").exists() for o in outs.values()):
        return outs
    target = load_classifier(work / cfg.ablation.setting / "target")
    classes = np.arange(target.meta["num_classes"])
    evaluators = [(str(eval_dir), load_classifier(eval_dir))]
    # One member per call: on XLA:CPU, vmap over generators turns their convolutions into
    # grouped ones (9 members: 3.9 s/step vs 0.19 s/step for one); on a GPU pass all weight
    # sets to one train_inverter call instead.
    for m, out in outs.items():
        if (out / "results.json").exists():
            continue
        tic = time.perf_counter()
        inv = train_inverter(target, out / "generator", weights=weights_from("tldr",
                             **members[m]), seeds=[cfg.seed], steps=cfg.steps,
                             **cfg.generator.to_dict())
        write_member_run(inv, 0, target, evaluators, out, classes, samples=cfg.samples,
                         seed=cfg.seed, name=f"tldr{m}" if m != "tldr" else "tldr",
                         train_s=time.perf_counter() - tic)
    return outs


def likeness(cfg, setting: dict, target_dir: Path, runs: dict[str, Path]) -> dict:
    """Diagnostics of real training / held-out samples and of each run's samples; AUCs."""
    target = load_classifier(target_dir)
    n, lk = cfg.likeness.n_real, cfg.likeness.to_dict()
    lk.pop("n_real")
    x, y = data.load(setting["dataset"], "train")
    limit = setting["train"].get("limit") or len(x)
    xt, yt = data.load(setting["dataset"], "test")
    sets = {"real train": (x[:min(n, limit)], y[:min(n, limit)]), "real held-out": (xt[:n],
                                                                                    yt[:n])}
    for attack, out in runs.items():
        r = np.load(out / "reconstructions.npz")
        sets[attack] = (r["x"].reshape(-1, *r["x"].shape[2:]), np.repeat(r["y"],
                                                                        r["x"].shape[1]))
    diag = {k: training_likeness(target, *v, seed=cfg.seed, **lk) for k, v in sets.items()}
    ref = diag["real held-out"]
    out = {k: {**{d: float(np.mean(v[d])) for d in DIAGNOSTICS},
               "membership_score": float(np.mean(membership_score(v, ref)))}
           for k, v in diag.items()}
    tr = diag["real train"]
    out["auc_train_vs_heldout"] = {
        **{d: membership_auc(sign * tr[d], sign * ref[d]) for d, sign in
           (("confidence", 1), ("perturbation_kl", -1), ("grad_norm", -1))},
        "membership_score": membership_auc(membership_score(tr, ref),
                                           membership_score(ref, ref))}
    return out


def nearest_grid(setting: dict, eval_dir: Path, run: Path, path: Path, k: int) -> None:
    """Per class: ``k`` generated samples, each followed by its nearest real training sample
    (evaluator penultimate features, same class)."""
    ev = load_classifier(eval_dir)
    x, y = data.load(setting["dataset"], "train")
    limit = setting["train"].get("limit")
    x, y = x[:limit], y[:limit]
    r = np.load(run / "reconstructions.npz")
    gen, gy = r["x"][:, :k], r["y"]
    flat = gen.reshape(-1, *gen.shape[2:])
    _, idx = nearest(ev.features(flat), ev.features(x), query_labels=np.repeat(gy, k),
                     ref_labels=y, progress=False)
    pairs = np.stack([flat, x[idx]], 1).reshape(len(gy), 2 * k, *gen.shape[2:])
    results.save_grid(path, pairs, per_class=2 * k, scale=3)


def _rec(out: Path) -> dict:
    return json.loads((out / "results.json").read_text())


def row(setting: str, attack: str, out: Path, like: dict | None) -> dict:
    rec = _rec(out)
    m, t = rec["metrics"], rec.get("timing", {})
    ps = m.get("per_sample", {})
    return {"setting": setting, "attack": attack, "top1": m.get("attack_acc_top1"),
            "knn_dist": m.get("knn_dist"), "resilient": ps.get("resilient_fraction"),
            "exposed": ps.get("exposed"), "private": ps.get("samples"),
            "diversity": m.get("diversity"), "coverage": m.get("coverage"),
            "target_confidence": m.get("target_confidence"),
            "membership_score": (like or {}).get(attack, {}).get("membership_score"),
            "wall_s": t.get("wall_s")}


COLUMNS = (("setting", "s"), ("attack", "s"), ("top1", ".3f"), ("knn_dist", ".1f"),
           ("resilient", ".4f"), ("exposed", "d"), ("private", "d"), ("diversity", ".2f"),
           ("coverage", ".3f"), ("target_confidence", ".3f"), ("membership_score", ".2f"),
           ("wall_s", ".0f"))
HEADS = ("setting", "attack", "eval top-1", "KNN dist", "resilient", "exposed",
         "private samples", "diversity", "coverage", "target conf.", "train-likeness",
         "wall s")


def table(rows: list[dict], columns=COLUMNS, heads=HEADS) -> str:
    f = lambda v, fmt: "n/a" if v is None else format(v, fmt)
    lines = ["| " + " | ".join(heads) + " |", "|" + "---|" * len(heads)]
    lines += ["| " + " | ".join(f(r.get(c), fmt) for c, fmt in columns) + " |" for r in rows]
    return "\n".join(lines)


def likeness_table(like: dict) -> str:
    lines = ["| setting | set | confidence | perturbation KL | grad norm | train-likeness |",
             "|---|---|---|---|---|---|"]
    aucs = []
    for setting, sets in like.items():
        for name, v in sets.items():
            if name == "auc_train_vs_heldout":
                aucs.append(f"| {setting} | " + " | ".join(f"{v[k]:.3f}" for k in (
                    *DIAGNOSTICS, "membership_score")) + " |")
                continue
            lines.append(f"| {setting} | {name} | {v['confidence']:.4f} | "
                         f"{v['perturbation_kl']:.2e} | {v['grad_norm']:.3g} | "
                         f"{v['membership_score']:.2f} |")
    auc = ["| setting | AUC confidence | AUC perturbation KL | AUC grad norm | AUC combined |",
           "|---|---|---|---|---|", *aucs]
    return "\n".join(lines) + "\n\nTraining vs held-out samples:\n\n" + "\n".join(auc)


def markdown(rows: list[dict], ablation_rows: list[dict], like: dict, setting: str) -> str:
    """The three tables (the ablation without the train-likeness column)."""
    keep = [i for i, (c, _) in enumerate(COLUMNS) if c != "membership_score"]
    abl = table(ablation_rows, [COLUMNS[i] for i in keep], [HEADS[i] for i in keep])
    return (table(rows) + f"\n\nAblation ({setting}):\n\n" + abl
            + "\n\nTraining-likeness (target's view):\n\n" + likeness_table(like))


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("config", help="path/to/tldr.py:SETTING[,SETTING...][,smoke]")
    p.add_argument("--workdir", default=None, help="override cfg.workdir")
    args = p.parse_args(argv)
    cfg = load_config(args.config)
    work = Path(args.workdir or cfg.workdir)
    rows, ablation_rows, like = [], [], {}
    for name in cfg.order:
        setting = cfg.settings[name]
        setting = setting.to_dict() if hasattr(setting, "to_dict") else setting
        eval_dir = work / f"eval_{setting['dataset']}"
        model(setting["dataset"], cfg.eval_arch, eval_dir, cfg.eval_train.to_dict())
        runs = run_attacks(cfg, name, setting, work, eval_dir)
        if name == cfg.ablation.setting:
            abl = run_ablation(cfg, setting, work, eval_dir)
        else:
            abl = {}
        spec, limit = private(setting)
        for out in [*runs.values(), *abl.values()]:
            if "per_sample" not in _rec(out)["metrics"]:
                evaluate(out, eval_dir, spec, limit=limit, progress=False)
        like[name] = likeness(cfg, setting, work / name / "target", runs)
        rows += [row(name, a, out, like[name]) for a, out in runs.items()]
        ablation_rows += [row(name, m, out, None) for m, out in abl.items()]
        nearest_grid(setting, eval_dir, runs["tldr"], work / name / "grid.png",
                     cfg.grid_per_class)
        print("\n".join(json.dumps(r) for r in rows[-len(runs):]), flush=True)
    md = markdown(rows, ablation_rows, like, cfg.ablation.setting)
    (work / "table.md").write_text(md + "\n")
    results.write_json(work / "table.json", {"config": cfg.to_dict(), "rows": rows,
                                             "ablation": ablation_rows, "likeness": like})
    print(md)
    print(f"tables: {work / 'table.md'}; grids: {work}/SETTING/grid.png")
    return {"rows": rows, "ablation": ablation_rows, "likeness": like}


if __name__ == "__main__":
    main()
