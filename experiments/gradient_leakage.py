"""Gradient leakage: DLG/iDLG/Inverting Gradients on 256 victims per compiled call, and the
defense table (client defense vs reconstruction PSNR and the accuracy of a model trained
under the same defense).

    JAXINV_DATA_DIR=../shared/data python experiments/gradient_leakage.py \
        experiments/configs/gradient_leakage.py:all
    python experiments/gradient_leakage.py experiments/configs/gradient_leakage.py:smoke \
        --workdir /tmp/gl

Each run is a ``jaxinv attack dlg|idlg|ig`` run directory under WORKDIR (resumable; a
finished run is read back, not redone). Writes ``WORKDIR/table.md`` and ``table.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

sys.path.insert(0, str(Path(__file__).parent))
from main import load_config, table

from jaxinv import data, enable_compilation_cache
from jaxinv.evaluation import results
from jaxinv.federated import defenses, soft_cross_entropy
from jaxinv.models import apply_logits
from jaxinv.workflows.gradient_leakage import gradient_leakage, victim_model

COLUMNS = ("victims", "exact_recovery_rate", "psnr_mean", "psnr_median", "ssim_mean",
           "feature_dist_mean", "label_accuracy")


def run(out: Path, spec: dict, seed: int) -> dict:
    """One attack run (read back when ``out/results.json`` exists)."""
    if (out / "results.json").exists():
        return json.loads((out / "results.json").read_text())
    spec = dict(spec)
    options = dict(spec.pop("options", {}))
    return gradient_leakage(out, seed=seed, **spec, **options)


def defended_accuracy(defense: str, cfg: dict, seed: int) -> float:
    """Test accuracy of the victim LeNet trained with ``defense`` on every batch gradient."""
    x, y = data.load(cfg["dataset"], "train")
    xt, yt = data.load(cfg["dataset"], "test")
    clf = victim_model("dlg-lenet", 10, x.shape[1:], seed=seed)
    f, defend, tx = apply_logits(clf.module), defenses.parse(defense), optax.adam(cfg["lr"])

    @jax.jit
    def step(params, opt, key, xb, yb):
        g = jax.grad(lambda p: soft_cross_entropy(f({"params": p}, xb), yb))(params)
        u, opt = tx.update(defend(key, g), opt, params)
        return optax.apply_updates(params, u), opt

    params = clf.variables["params"]
    opt, rng = tx.init(params), np.random.default_rng(seed)
    for t in range(cfg["steps"]):  # training, dispatched from Python like jaxinv.training.fit
        i = rng.integers(0, len(x), cfg["batch"])
        params, opt = step(params, opt, jax.random.key(t), x[i], y[i].astype(np.int32))
    logits = jax.jit(f)({"params": params}, jnp.asarray(xt[:5000]))
    return float(np.mean(np.argmax(logits, -1) == yt[:5000]))


def _row(name: str, rec: dict) -> dict:
    m, c = rec["metrics"], rec["config"]
    return {"run": name, "attack": rec["attack"], "dataset": c["dataset"],
            "model": c["model"], "batch": c["batch"], "steps": c["steps"],
            **{k: m.get(k) for k in COLUMNS},
            "victims_per_s": rec["timing"]["victims_per_s"],
            "compile_s": rec["timing"]["compile_s"]}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("config", help="path/to/config.py[:variant]")
    p.add_argument("--workdir", default=None)
    args = p.parse_args(argv)
    cfg = load_config(args.config)
    enable_compilation_cache()  # the runs share kernel shapes: compile each once
    work = Path(args.workdir or cfg.workdir)
    rows, defense_rows = [], []
    for name in cfg.run_order:
        tic = time.perf_counter()
        rec = run(work / name, cfg.runs[name].to_dict(), cfg.seed)
        rows.append(_row(name, rec))
        print(f"{name}: {json.dumps(rows[-1])} ({time.perf_counter() - tic:.0f} s)", flush=True)
    for key in cfg.defense_order:
        spec = cfg.defenses[key].to_dict()
        name = spec.pop("name")
        attack = {**cfg.defense_attack.to_dict(), **spec}
        if ":" in name and name.split(":")[0] in defenses.KINDS:
            attack["defense"] = name
        rec = run(work / "defenses" / key, attack, cfg.seed)
        acc_file = work / "defenses" / key / "utility.json"
        if "defense" in attack or name == "none":
            if not acc_file.exists():
                acc = defended_accuracy(attack.get("defense", "none"), cfg.train.to_dict(),
                                        cfg.seed)
                results.write_json(acc_file, {"test_accuracy": acc, "train": cfg.train.to_dict()})
            acc = json.loads(acc_file.read_text())["test_accuracy"]
        else:
            acc = None  # batch size and local steps are not a utility cost
        defense_rows.append({"defense": name, **_row(key, rec), "test_accuracy": acc})
        print(f"defense {name}: {json.dumps(defense_rows[-1])}", flush=True)
    md = "## Attacks\n\n" + table(rows, ["run", "attack", "dataset", "batch", "steps",
                                        *COLUMNS, "victims_per_s"])
    if defense_rows:
        da = cfg.defense_attack
        md += f"\n## Defenses ({da.attack}, {da.dataset})\n\n" + table(
            defense_rows, ["defense", "batch", "victims", "exact_recovery_rate", "psnr_mean",
                           "ssim_mean", "label_accuracy", "test_accuracy"])
    work.mkdir(parents=True, exist_ok=True)
    (work / "table.md").write_text(md)
    out = {"rows": rows, "defenses": defense_rows}
    results.write_json(work / "table.json", out)
    print(md)
    return out


if __name__ == "__main__":
    main()
