"""Privacy experiments (issue 13): the DP-SGD table on MNIST, LiRA against DP-trained models,
LiRA on the CIFAR-10 subset with shadows trained by ``fit_many``.

    JAXINV_DATA_DIR=../shared/data python experiments/privacy.py \
        experiments/configs/privacy.py:all

Every run lives in its own directory under WORKDIR and resumes (a finished run is read
back). Writes ``WORKDIR/table.md`` and ``table.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from main import load_config, table

from jaxinv import enable_compilation_cache
from jaxinv.evaluation import results
from jaxinv.training.classifier import fit, load_classifier
from jaxinv.workflows.membership import membership

ATTACKS = ("lira_online", "lira_online_fixed_variance", "lira_offline",
           "lira_offline_fixed_variance", "global_threshold", "loss")


def _name(eps: float | None) -> str:
    return "no_dp" if eps is None else f"eps_{eps:g}"


def direct_epsilon(sigma: float, q: float, steps: int, delta: float) -> dict:
    """epsilon of ``steps`` Poisson-sampled Gaussian steps by dp-accounting itself."""
    import dp_accounting

    event = dp_accounting.SelfComposedDpEvent(dp_accounting.PoissonSampledDpEvent(
        q, dp_accounting.GaussianDpEvent(sigma)), steps)
    return {name: float(acc.compose(event).get_epsilon(delta)) for name, acc in
            (("pld", dp_accounting.pld.PLDAccountant()),
             ("rdp", dp_accounting.rdp.RdpAccountant()))}


def dp_mnist(work: Path, c: dict, seed: int) -> list[dict]:
    """Train one model per epsilon (None = no DP); accuracy and the guarantee."""
    rows = []
    for eps in c["epsilons"]:
        out = work / _name(eps)
        dp = None if eps is None else {"epsilon": eps, "delta": c["delta"], "clip": c["clip"]}
        clf = load_classifier(out) if (out / "model.json").exists() else fit(
            c["dataset"], c["arch"], out, arch_kwargs=c["arch_kwargs"], epochs=c["epochs"],
            batch_size=c["batch_size"], lr=c["lr"], seed=seed, dp=dp)
        g = clf.meta.get("dp") or {}
        row = {"target_epsilon": eps, "test_accuracy": clf.meta["test_accuracy"],
               "train_seconds": clf.meta.get("train_seconds_total")}
        if g:
            direct = direct_epsilon(g["noise_multiplier"], g["sampling_rate"], g["steps"],
                                    g["delta"])
            row.update(noise_multiplier=g["noise_multiplier"], steps=g["steps"],
                       sampling_rate=g["sampling_rate"], epsilon_recorded=g["epsilon"],
                       epsilon_pld_direct=direct["pld"], epsilon_rdp_direct=direct["rdp"])
        rows.append(row)
        print(f"dp_mnist {_name(eps)}: {json.dumps(row)}", flush=True)
    return rows


def _mia_row(rec: dict) -> dict:
    m = rec["metrics"]
    return {"test_accuracy": rec["models"]["test_accuracy_mean"],
            "train_accuracy": rec["models"]["train_accuracy_mean"],
            **{f"{a}_auc": m[a]["auc"] for a in m},
            **{f"{a}_tpr@0.1%": m[a]["tpr_at_0.1%_fpr"] for a in m},
            **{f"{a}_tpr@1%": m[a]["tpr_at_1%_fpr"] for a in m}}


def lira_dp(work: Path, c: dict, seed: int) -> list[dict]:
    """LiRA against models trained without and with DP-SGD (same data, masks, seeds)."""
    rows = []
    kw = {k: c[k] for k in ("dataset", "model", "model_kwargs", "examples", "models",
                            "targets", "epochs", "batch_size", "lr") if k in c}
    for eps in c["epsilons"]:
        out = work / _name(eps)
        dp = None if eps is None else {"epsilon": eps, "delta": c["delta"], "clip": c["clip"]}
        rec = (json.loads((out / "results.json").read_text()) if (out / "results.json").exists()
               else membership(out, seed=seed, dp=dp, **kw))
        rows.append({"target_epsilon": eps, **_mia_row(rec),
                     "epsilon": (rec.get("dp") or {}).get("epsilon")})
        print(f"lira_dp {_name(eps)}: {json.dumps(rows[-1])}", flush=True)
    return rows


def lira_cifar(work: Path, c: dict, seed: int) -> dict:
    """LiRA on the CIFAR-10 subset; the shadows' training timed together vs one by one."""
    if (work / "results.json").exists():
        rec = json.loads((work / "results.json").read_text())
    else:
        rec = membership(work, seed=seed, **c)
    row = {**_mia_row(rec), **rec["timing"]}
    print(f"lira_cifar: {json.dumps(row)}", flush=True)
    return row


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("config", help="path/to/config.py[:variant]")
    p.add_argument("--workdir", default=None)
    args = p.parse_args(argv)
    cfg = load_config(args.config)
    enable_compilation_cache()
    work = Path(args.workdir or cfg.workdir)
    out, md = {}, ""
    if cfg.dp_mnist:
        out["dp_mnist"] = dp_mnist(work / "dp_mnist", cfg.dp_mnist.to_dict(), cfg.seed)
        md += f"## DP-SGD on {cfg.dp_mnist.dataset}\n\n" + table(out["dp_mnist"], [
            "target_epsilon", "test_accuracy", "noise_multiplier", "steps", "epsilon_recorded",
            "epsilon_pld_direct", "epsilon_rdp_direct", "train_seconds"])
    if cfg.lira_dp:
        out["lira_dp"] = lira_dp(work / "lira_dp", cfg.lira_dp.to_dict(), cfg.seed)
        md += f"\n## LiRA against DP ({cfg.lira_dp.dataset})\n\n" + table(out["lira_dp"], [
            "target_epsilon", "epsilon", "test_accuracy", "lira_online_fixed_variance_auc",
            "lira_offline_fixed_variance_auc", "loss_auc",
            "lira_online_fixed_variance_tpr@1%"])
    if cfg.lira_cifar:
        row = lira_cifar(work / "lira_cifar", cfg.lira_cifar.to_dict(), cfg.seed)
        out["lira_cifar"] = row
        md += f"\n## LiRA on {cfg.lira_cifar.dataset}\n\n" + table(
            [{"attack": a, "auc": row.get(f"{a}_auc"), "tpr@0.1%": row.get(f"{a}_tpr@0.1%"),
              "tpr@1%": row.get(f"{a}_tpr@1%")} for a in ATTACKS if f"{a}_auc" in row],
            ["attack", "auc", "tpr@0.1%", "tpr@1%"])
        md += "\n" + table([row], ["test_accuracy", "train_accuracy", "together_s",
                                   "one_by_one_s"])
    work.mkdir(parents=True, exist_ok=True)
    (work / "table.md").write_text(md)
    results.write_json(work / "table.json", out)
    print(md)
    return out


if __name__ == "__main__":
    main()
