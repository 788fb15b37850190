"""Attack every class of a trained target and write the run directory.

This is the library function behind ``jaxinv attack`` and ``jaxinv demo``.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from jaxinv import defenses, oracles, results
from jaxinv.attacks import ATTACKS, BLACKBOX, priors
from jaxinv.models import apply_logits
from jaxinv.run import run_chains


def _load(workdir: str | Path, role: str):
    from jaxinv.train import load_classifier

    try:
        return load_classifier(workdir)
    except FileNotFoundError as e:
        raise FileNotFoundError(f"{role} model: {e}") from e


def _jsonable(v: Any) -> Any:
    if isinstance(v, int | float | str | bool | None):
        return v
    if isinstance(v, list | tuple):
        return [_jsonable(e) for e in v]
    return repr(v)  # e.g. a user-supplied process function


def _query_metrics(state: Any) -> dict[str, Any]:
    """Black-box runs: queries used (total, mean per chain) and budget-exhausted chains."""
    if not hasattr(state, "queries"):
        return {}
    q = np.asarray(state.queries)
    return {"queries_total": int(q.sum()), "queries_per_chain": float(q.mean()),
            "chains_budget_exhausted": int(np.asarray(state.budget_exhausted).sum())}


def build_attack(name: str, target: Any, steps: int, options: dict[str, Any]):
    """Build a white-box attack kernel for ``target`` (a ``Classifier``) by name.

    Example:
        >>> attack = build_attack("mi-face", clf, 500, {"loss": "neg_log_p"})
    """
    if name not in ATTACKS and name not in BLACKBOX:
        raise ValueError(f"unknown attack {name!r}; choose one of "
                         f"{sorted([*ATTACKS, *BLACKBOX])}")
    options = dict(options)
    shape = tuple(target.meta["input_shape"])
    if name in BLACKBOX:  # the attacker sees the (defended) scores only
        oracle = oracles.score(apply_logits(target.module),
                               defenses.parse(options.pop("defense", "") or ""))
        options.setdefault("max_steps", steps)
        return BLACKBOX[name](oracle, shape, **options)
    process = options.pop("process", "identity")
    if isinstance(process, str):
        process = priors.get_process(process)
    options.setdefault("max_steps", steps)
    return ATTACKS[name](apply_logits(target.module), shape, process=process, **options)


def invert(
    attack: str,
    target_dir: str | Path,
    eval_dir: str | Path,
    out: str | Path,
    *,
    chains: int,
    steps: int,
    classes: list[int] | None = None,
    seed: int = 0,
    chunk: int | None = None,
    segment: int | None = None,
    options: dict[str, Any] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Run ``attack`` with ``chains`` chains on every class; write ``out/results.json`` etc.

    A run killed mid-way resumes from ``out/checkpoints`` when restarted with the
    same arguments. Returns the ``results.json`` record.

    Example:
        >>> rec = invert("mi-face", "runs/demo/target", "runs/demo/evaluator", "runs/x",
        ...              chains=64, steps=200, options={"loss": "neg_log_p"})
        >>> rec["metrics"]["attack_acc_top1"]
    """
    options = dict(options or {})
    target, evaluator = _load(target_dir, "target"), _load(eval_dir, "evaluation")
    k = int(target.meta["num_classes"])
    if int(evaluator.meta["num_classes"]) != k:
        raise ValueError(f"target has {k} classes but the evaluation model has "
                         f"{evaluator.meta['num_classes']}: train both on the same classes")
    if tuple(evaluator.meta["input_shape"]) != tuple(target.meta["input_shape"]):
        raise ValueError(f"target input shape {target.meta['input_shape']} differs from the "
                         f"evaluation model's {evaluator.meta['input_shape']}")
    classes = list(range(k)) if classes is None else [int(c) for c in classes]
    bad = [c for c in classes if not 0 <= c < k]
    if bad:
        raise ValueError(f"classes {bad} out of range for a {k}-class target")
    y = np.asarray(classes, np.int32)
    kernel = build_attack(attack, target, steps, options)

    tic = time.perf_counter()
    res = run_chains(kernel, y, target.variables, chains=chains, steps=steps, seed=seed,
                     chunk=chunk, segment=segment, workdir=Path(out) / "checkpoints",
                     progress=progress, desc=attack,
                     config={"attack": attack, "target": str(Path(target_dir).absolute()),
                             "options": {k: _jsonable(v) for k, v in options.items()}})
    judged = results.judge(evaluator, res.best_x, y)
    init = results.judge(evaluator, res.x_init, y)
    conf = results.judge(target, res.best_x, y)
    per_class = {c: {"top1": v["top1"], "top5": v["top5"],
                     "target_confidence": conf["per_class"][c]["confidence"]}
                 for c, v in judged["per_class"].items()}
    n_failed = int(res.failed.sum())
    if n_failed:
        print(f"warning: {n_failed} chains went non-finite and were frozen at their last "
              "finite iterate (see reconstructions.npz 'failed')", file=sys.stderr)
    timing = dict(res.timing)
    timing["wall_s"] = time.perf_counter() - tic
    timing["chain_steps_per_s"] = res.steps_run * y.size * chains / max(res.timing["run_s"], 1e-9)
    record = {
        "attack": attack,
        "config": {"target": str(target_dir), "eval_model": str(eval_dir), "chains": chains,
                   "steps": steps, "classes": classes, "chunk": chunk, "segment": segment,
                   "options": {k: _jsonable(v) for k, v in options.items()},
                   "target_meta": target.meta, "eval_meta": evaluator.meta},
        "seed": seed,
        "versions": results.versions(),
        "metrics": {
            "attack_acc_top1": judged["top1"], "attack_acc_top5": judged["top5"],
            "attack_acc_top1_std_over_classes": judged["top1_std_over_classes"],
            "init_acc_top1": init["top1"], "init_acc_top5": init["top5"],
            "target_confidence": conf["confidence"],
            "chains_failed": n_failed, "steps_run": res.steps_run,
            "per_class": per_class,
            **_query_metrics(res.state),
        },
        "timing": timing,
    }
    arrays = {"x": res.best_x, "y": y, "x_init": res.x_init, "best_loss": res.best_loss,
              "failed": res.failed}
    if res.info is not None:  # loss/confidence curves: mean over chains per step and class
        for name, v in zip(res.info._fields, res.info, strict=True):
            arrays[f"curve_{name}"] = np.nanmean(v, axis=2)
    import jax

    if jax.process_index() == 0:
        results.write_run(out, record, arrays)
    return record
