"""Run an experiment config: train (or reuse) target and evaluator, attack, write results.

    python experiments/main.py experiments/configs/mi_face_orl.py:softmax
    python experiments/main.py experiments/configs/mi_face_mnist.py:smoke --workdir /tmp/x

A config file defines ``get_config(variant: str) -> ml_collections.ConfigDict``; its
docstring gives the command and the expected result.
"""

import argparse
import importlib.util
import json
from pathlib import Path

from jaxinv.training.classifier import fit, load_classifier
from jaxinv.workflows.invert import invert


def load_config(spec: str):
    path, _, variant = spec.partition(":")
    mod_spec = importlib.util.spec_from_file_location("config", path)
    if mod_spec is None or not Path(path).exists():
        raise FileNotFoundError(f"no config file {path}")
    module = importlib.util.module_from_spec(mod_spec)
    mod_spec.loader.exec_module(module)
    return module.get_config(variant)


def table(rows: list[dict], cols: list[str]) -> str:
    """A Markdown table of ``rows`` (dicts) in the columns ``cols``; "–" where a value is
    missing."""
    fmt = lambda v: "–" if v is None else f"{v:.4g}" if isinstance(v, float) else str(v)
    head = "| " + " | ".join(cols) + " |\n|" + "---|" * len(cols) + "\n"
    return head + "".join("| " + " | ".join(fmt(r.get(c)) for c in cols) + " |\n"
                          for r in rows)


def model(cfg, arch, workdir):
    if (Path(workdir) / "model.json").exists():
        return load_classifier(workdir)
    return fit(cfg.dataset, arch, str(workdir), **cfg.get("train", {}).get(arch, {}))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("config", help="path/to/config.py[:variant]")
    p.add_argument("--workdir", default=None, help="override cfg.workdir (and cfg.models_dir)")
    args = p.parse_args(argv)
    cfg = load_config(args.config)
    work = Path(args.workdir or cfg.workdir)
    models = work if args.workdir else Path(cfg.get("models_dir", work))
    target_dir = models / f"{cfg.dataset}_{cfg.target_arch}"
    eval_dir = models / f"{cfg.dataset}_{cfg.eval_arch}"
    for arch, d in ((cfg.target_arch, target_dir), (cfg.eval_arch, eval_dir)):
        clf = model(cfg, arch, d)
        print(f"{cfg.dataset} {arch}: test accuracy {clf.meta['test_accuracy']:.4f} ({d})")
    rec = invert(cfg.attack, target_dir, eval_dir, work / f"{cfg.attack}_{cfg.target_arch}",
                 chains=cfg.chains, steps=cfg.steps, seed=cfg.seed, chunk=cfg.get("chunk"),
                 options=cfg.options.to_dict())
    m = rec["metrics"]
    print(json.dumps({k: round(m[k], 4) for k in ("attack_acc_top1", "attack_acc_top5",
                      "init_acc_top1", "init_acc_top5", "target_confidence")}))
    print(f"results: {work / f'{cfg.attack}_{cfg.target_arch}' / 'results.json'}")
    return rec


if __name__ == "__main__":
    main()
