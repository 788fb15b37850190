"""Attack every class of a trained target and write the run directory.

This is the library function behind ``jaxinv attack`` and ``jaxinv demo``.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from jaxinv import defenses, oracles, results
from jaxinv.attacks import ATTACKS, BLACKBOX, priors
from jaxinv.base import BlackBox, as_attack
from jaxinv.models import apply_logits
from jaxinv.remote import run_remote
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


class _RemoteTarget(NamedTuple):
    meta: dict


def _observed_confidence(confidence: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    """``judge``-shaped target confidence from what the attack itself last observed."""
    c = np.asarray(confidence, np.float64)
    return {"confidence": float(c.mean()),
            "per_class": {str(int(k)): {"confidence": float(c[i].mean())}
                          for i, k in enumerate(y)}}


def build_blackbox(name: str, input_shape: tuple[int, ...], steps: int,
                   options: dict[str, Any]) -> BlackBox:
    """Build a black-box (ask/tell) kernel by name; ``options`` are its keyword arguments.

    Example:
        >>> bb = build_blackbox("label-only", (28, 28, 1), 500, {"spheres": 32})
    """
    if name not in BLACKBOX:
        raise ValueError(f"unknown black-box attack {name!r}; choose one of {sorted(BLACKBOX)}")
    options = dict(options)
    options.setdefault("max_steps", steps)
    return BLACKBOX[name](tuple(input_shape), **options)


def build_attack(name: str, target: Any, steps: int, options: dict[str, Any]):
    """Build the in-process attack kernel for ``target`` (a ``Classifier``) by name.

    Black-box attacks see ``target`` through a score or label oracle with the output
    defense ``options["defense"]`` (e.g. ``"round:2,topk:3"``).

    Example:
        >>> attack = build_attack("mi-face", clf, 500, {"loss": "neg_log_p"})
    """
    if name not in ATTACKS and name not in BLACKBOX:
        raise ValueError(f"unknown attack {name!r}; choose one of "
                         f"{sorted([*ATTACKS, *BLACKBOX])}")
    options = dict(options)
    shape = tuple(target.meta["input_shape"])
    if name in BLACKBOX:  # the attacker sees the (defended) scores or labels only
        defense = defenses.parse(options.pop("defense", "") or "")
        bb = build_blackbox(name, shape, steps, options)
        make = oracles.label if bb.kind == "label" else oracles.score
        return as_attack(bb, make(apply_logits(target.module), defense))
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
    remote: str | None = None,
    client_options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Run ``attack`` with ``chains`` chains on every class; write ``out/results.json`` etc.

    With ``remote`` (a ``jaxinv serve`` URL) a black-box attack queries that server over
    HTTP instead of loading ``target_dir`` (pass ``None``); every HTTP batch is logged to
    ``out/queries.jsonl``; ``client_options`` go to :class:`jaxinv.client.HTTPOracle`
    (``batch_size``, ``retries``, ``client_id``...). A run killed mid-way, or stopped by a
    server outage, resumes from ``out/checkpoints`` when restarted with the same
    arguments. Returns the ``results.json`` record.

    Example:
        >>> rec = invert("mi-face", "runs/demo/target", "runs/demo/evaluator", "runs/x",
        ...              chains=64, steps=200, options={"loss": "neg_log_p"})
        >>> rec["metrics"]["attack_acc_top1"]
    """
    options = dict(options or {})
    evaluator = _load(eval_dir, "evaluation")
    client = None
    if remote is not None:
        from jaxinv.client import HTTPOracle

        if attack not in BLACKBOX:
            raise ValueError(f"--remote needs a black-box attack ({sorted(BLACKBOX)}), got "
                             f"{attack!r}: a remote model exposes no weights")
        if options.get("defense"):
            raise ValueError("a remote target applies its own defenses (jaxinv serve "
                             "--defense); do not pass --defense with --remote")
        options.pop("defense", None)
        Path(out).mkdir(parents=True, exist_ok=True)
        client = HTTPOracle(remote, log_path=Path(out) / "queries.jsonl",
                            **{"batch_size": 1024, **(client_options or {})})
        target = _RemoteTarget(client.stats()["model"])
    else:
        target = _load(target_dir, "target")
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
    config = {"attack": attack, "options": {k: _jsonable(v) for k, v in options.items()},
              "target": remote or str(Path(target_dir).absolute())}

    tic = time.perf_counter()
    if client is not None:
        res = run_remote(build_blackbox(attack, target.meta["input_shape"], steps, options),
                         client, y, chains=chains, steps=steps, seed=seed, segment=segment,
                         workdir=Path(out) / "checkpoints", progress=progress,
                         desc=f"{attack} @ {remote}", config=config)
        conf = _observed_confidence(res.state.confidence, y)  # no extra queries
    else:
        res = run_chains(build_attack(attack, target, steps, options), y, target.variables,
                         chains=chains, steps=steps, seed=seed, chunk=chunk, segment=segment,
                         workdir=Path(out) / "checkpoints", progress=progress, desc=attack,
                         config=config)
        conf = results.judge(target, res.best_x, y)
    judged = results.judge(evaluator, res.best_x, y)
    init = results.judge(evaluator, res.x_init, y)
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
    if client is not None:
        record["config"]["remote"] = remote
        record["metrics"]["target_confidence_source"] = "observed by the attack (remote)"
        record["metrics"]["http"] = {"queries": client.queries, "requests": client.requests,
                                     "retries": client.retries,
                                     "seconds": round(client.http_seconds, 3)}
    arrays = {"x": res.best_x, "y": y, "x_init": res.x_init, "best_loss": res.best_loss,
              "failed": res.failed}
    if res.info is not None:  # loss/confidence curves: mean over chains per step and class
        for name, v in zip(res.info._fields, res.info, strict=True):
            arrays[f"curve_{name}"] = np.nanmean(v, axis=2)
    import jax

    if jax.process_index() == 0:
        results.write_run(out, record, arrays)
    return record
