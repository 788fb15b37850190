"""Generative model inversion comparison: train what is missing, run every attack, evaluate,
print the README table and write the image grid.

    JAXINV_DATA_DIR=../shared/data python experiments/generative.py \
        experiments/configs/generative.py:mnist
    python experiments/generative.py experiments/configs/generative.py:digits,smoke \
        --workdir /tmp/gen

Every stage reuses what an earlier call finished (models, GAN, runs, evaluations), so a
killed run resumes. Writes ``WORKDIR/table.md``, ``WORKDIR/table.json`` and
``WORKDIR/grid.png`` (row 1: real private samples; then one row per attack, the first
reconstructions of each class).
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
from jaxinv.evaluation import results
from jaxinv.evaluation.evaluate import evaluate
from jaxinv.training import gan as gan_training
from jaxinv.training.classifier import fit, load_classifier
from jaxinv.workflows.invert import invert

LATENT = {"gmi": "gmi", "zo-latent": "zo", "label-only-latent": "label-only",
          "gmi-finetuned": "gmi"}
PIXEL = {"mi-face": "mi-face", "label-only-pixel": "label-only"}
COLUMNS = ("attack", "per_class", "top1", "top5", "knn_dist", "fid_eval", "resilient",
           "exposed", "queries", "wall_s")


def model(cfg, arch: str, workdir: Path, split: str, side: str = "private"):
    if (workdir / "model.json").exists():
        return load_classifier(workdir)
    return fit(cfg.dataset, arch, workdir, split=split, side=side, **cfg.train)


def prepare(cfg, work: Path) -> dict[str, Path]:
    """Target, evaluator and public embedding network; the GAN prior on the public side."""
    dirs = {"target": work / f"target_{cfg.target_arch}", "eval": work / f"eval_{cfg.eval_arch}",
            "embed": work / f"embed_{cfg.embed_arch}", "gan": work / "gan"}
    for role, arch, side in (("target", cfg.target_arch, "private"),
                             ("eval", cfg.eval_arch, "private"),
                             ("embed", cfg.embed_arch, "public")):
        split = cfg.private if side == "private" else cfg.public
        clf = model(cfg, arch, dirs[role], split, side)
        print(f"{role}: {arch} on {cfg.dataset} {split}, test accuracy "
              f"{clf.meta['test_accuracy']:.4f}")
    if not (dirs["gan"] / "gan.json").exists():
        x = gan_training.public_images(cfg.dataset, cfg.public)
        gan_training.train_gan(x, dirs["gan"], seed=cfg.seed,
                               meta={"dataset": cfg.dataset, "public": cfg.public},
                               **cfg.gan.to_dict())
    return dirs


def run_attack(cfg, name: str, dirs: dict[str, Path], work: Path) -> Path:
    out = work / name
    if (out / "results.json").exists() and "wall_s" in _timing(out):
        return out
    a = cfg.attack
    chains = a[name].get("chains", cfg.chains) if name in a else cfg.chains
    common = dict(chains=chains, classes=list(cfg.classes), seed=cfg.seed)
    if name in PIXEL:
        invert(PIXEL[name], dirs["target"], dirs["eval"], out, steps=a[name].steps,
               options=a[name].options.to_dict(), **common)
    elif name == "gmi-finetuned":
        from jaxinv.training.finetune import finetune_gan

        ft = work / "gan_finetuned"
        tic = time.perf_counter()
        if not (ft / "gan.json").exists():
            finetune_gan(gan_training.load_gan(dirs["gan"]), load_classifier(dirs["target"]),
                         list(cfg.classes), ft, steps=a.finetune.steps, seed=cfg.seed)
        rec = invert("gmi", dirs["target"], dirs["eval"], out, steps=a.gmi.steps,
                     options=a.gmi.options.to_dict(), generator=ft, unroll=1, **common)
        rec["timing"]["finetune_s"] = json.loads((ft / "gan.json").read_text()).get(
            "finetune_seconds_total", time.perf_counter() - tic)
        results.write_json(out / "results.json", rec)
    elif name in LATENT:
        invert(LATENT[name], dirs["target"], dirs["eval"], out, steps=a[name].steps,
               options=a[name].options.to_dict(), generator=dirs["gan"],
               unroll=1 if name == "gmi" else None, **common)
    elif name == "p2i":
        from jaxinv.workflows.p2i import p2i

        p2i(dirs["target"], dirs["gan"], dirs["embed"], dirs["eval"], out,
            dataset=cfg.dataset, public=cfg.public, classes=list(cfg.classes),
            seed=cfg.seed, **a.p2i.to_dict())
    else:
        raise ValueError(f"unknown attack {name!r}")
    return out


def _timing(out: Path) -> dict:
    return json.loads((out / "results.json").read_text()).get("timing", {})


def row(name: str, out: Path) -> dict:
    rec = json.loads((out / "results.json").read_text())
    m, t = rec["metrics"], rec.get("timing", {})
    ps = m.get("per_sample", {})
    per_class = int(np.load(out / "reconstructions.npz")["x"].shape[1])
    return {"attack": name, "per_class": per_class, "top1": m.get("attack_acc_top1"),
            "top5": m.get("attack_acc_top5"),
            "knn_dist": m.get("knn_dist"), "fid_eval": m.get("fid_eval"),
            "resilient": ps.get("resilient_fraction"), "exposed": ps.get("exposed"),
            "queries": m.get("queries_total", 0),
            "wall_s": (t.get("wall_s") or 0) + (t.get("finetune_s") or 0)}


def table(rows: list[dict]) -> str:
    head = ("| attack | images/class | top-1 | top-5 | KNN dist | FID (eval) | resilient | "
            "exposed | queries | wall s |")
    lines = [head, "|" + "---|" * len(COLUMNS)]
    for r in rows:
        f = lambda v, fmt: "n/a" if v is None else format(v, fmt)
        lines.append(f"| {r['attack']} | {r['per_class']} | {f(r['top1'], '.3f')} | "
                     f"{f(r['top5'], '.3f')} | "
                     f"{f(r['knn_dist'], '.1f')} | {f(r['fid_eval'], '.1f')} | "
                     f"{f(r['resilient'], '.4f')} | {r['exposed']} | {r['queries']:,} | "
                     f"{r['wall_s']:.0f} |")
    return "\n".join(lines)


def grid(cfg, runs: dict[str, Path], path: Path, per_class: int = 2) -> None:
    x, y = data.load(cfg.dataset, "train")
    real = np.stack([x[y == c][:per_class] for c in cfg.classes])  # [C, k, H, W, 1]
    rows = [real.reshape(-1, *real.shape[2:])]
    for out in runs.values():
        rec = np.load(out / "reconstructions.npz")["x"][:, :per_class]
        if rec.shape[1] < per_class:  # P2I may return one image per class
            rec = np.repeat(rec, per_class, axis=1)[:, :per_class]
        rows.append(rec.reshape(-1, *rec.shape[2:]))
    results.save_grid(path, np.stack(rows), per_class=len(rows[0]), scale=3)


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("config", help="path/to/generative.py:DATASET[,smoke][,ATTACK...]")
    p.add_argument("--workdir", default=None, help="override cfg.workdir")
    args = p.parse_args(argv)
    cfg = load_config(args.config)
    work = Path(args.workdir or cfg.workdir)
    dirs = prepare(cfg, work)
    runs, rows = {}, []
    for name in cfg.attacks:
        out = run_attack(cfg, name, dirs, work)
        if "per_sample" not in json.loads((out / "results.json").read_text())["metrics"]:
            evaluate(out, dirs["eval"], f"{cfg.dataset}:train", progress=False)
        runs[name] = out
        rows.append(row(name, out))
        print(json.dumps(rows[-1]))
    md = table(rows)
    (work / "table.md").write_text(md + "\n")
    results.write_json(work / "table.json", {"config": cfg.to_dict(), "rows": rows})
    grid(cfg, runs, work / "grid.png")
    print(md)
    print(f"table: {work / 'table.md'}; grid: {work / 'grid.png'}")
    return rows


if __name__ == "__main__":
    main()
