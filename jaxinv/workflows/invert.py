"""Attack every class of a trained target and write the run directory.

This is the library function behind ``jaxinv attack`` and ``jaxinv demo``. Attacks come
from the registry (:mod:`jaxinv.attacks.registry`); class-level judging happens here, in
the evaluation layer, not in the driver. Metric names: ``target_confidence`` is always
the *undefended* target's probability of the class on the returned iterate (``null``
with a reason when the target's weights are not available, as for a remote target);
what a black-box attack itself observed has its own keys (``observed_confidence``,
``sphere_share``).

With a GAN prior (``generator``, a ``jaxinv train-gan`` workdir) attacks run in its latent
space: ``gmi`` needs one; ``zo`` and ``label-only`` take one (their kernels unchanged, with
``decode = G`` and the registry's latent option defaults where the user gave none).
``attack_acc_top1`` is always the evaluator's top-1 over every chain's returned iterate;
GMI's protocol (per class, the restart with the highest target logit) is reported
beside it as ``attack_acc_top1_selected`` / ``attack_acc_top5_selected``.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np

from jaxinv import defenses, oracles
from jaxinv.attacks import registry
from jaxinv.core import OracleEnv, as_attack, jsonable, run_chains, run_remote
from jaxinv.evaluation import results
from jaxinv.models import apply_logits


def _load(workdir: str | Path, role: str):
    from jaxinv.training import load_classifier

    try:
        return load_classifier(workdir)
    except FileNotFoundError as e:
        raise FileNotFoundError(f"{role} model: {e}") from e


SELECT_BY_TARGET_LOGIT = ("gmi",)  # attacks also judged on GMI's per-class restart choice


def load_generator(workdir: str | Path, input_shape: tuple[int, ...]):
    """Load the GAN prior in ``workdir`` for a target taking ``input_shape`` images;
    ``FileNotFoundError`` (prefixed ``generator:``) or a one-line ``ValueError``.

    Example:
        >>> import tempfile
        >>> from jaxinv.training.gan import train_gan
        >>> d = tempfile.mkdtemp()
        >>> _ = train_gan(x, d, steps=1, width=4, n_critic=1, batch_size=8, progress=False)
        >>> load_generator(d, (8, 8, 1)).meta["z_dim"]
        100
        >>> load_generator(d, (28, 28, 1))
        Traceback (most recent call last):
        ValueError: generator ... of shape (8, 8, 1) but the target takes (28, 28, 1): train ...
    """
    from jaxinv.training.gan import load_gan

    try:
        gan = load_gan(workdir)
    except FileNotFoundError as e:
        raise FileNotFoundError(f"generator: {e}") from e
    out, shape = tuple(gan.meta["out_shape"]), tuple(input_shape)
    if out != shape:
        raise ValueError(f"generator {workdir} outputs images of shape {out} but the target "
                         f"takes {shape}: train the GAN on images of the target's shape")
    return gan


def _check_generator(name: str, entry: registry.Entry, latent: bool) -> None:
    if not latent and entry.generator == "required":
        raise ValueError(f"{name} attacks in a GAN prior's latent space: give a generator "
                         "(--generator, a `jaxinv train-gan` workdir)")
    if latent and entry.generator == "never":
        names = sorted(k for k, e in registry.REGISTRY.items() if e.generator != "never")
        raise ValueError(f"{name} attacks in pixel space and takes no generator; attacks "
                         f"in a generator's latent space: {names}")


def build_blackbox(name: str, input_shape: tuple[int, ...], steps: int,
                   options: dict[str, Any], gan: Any = None):
    """Build a registered black-box (ask/tell) kernel; ``options`` are its keywords.

    With ``gan`` (a :class:`jaxinv.models.gan.GAN`) it searches the generator's latent
    space: ``decode = G``, ``z_shape = (z_dim,)`` and the registry's latent defaults
    (``Entry.latent``) for the options not given; its ``env`` is ``gan.variables["G"]``.

    Example:
        >>> build_blackbox("label-only", (28, 28, 1), 500, {"spheres": 8}).num_queries
        9
        >>> from jaxinv.models.gan import random_gan
        >>> bb = build_blackbox("zo", (8, 8, 1), 50, {}, gan=random_gan((8, 8, 1), width=4))
        >>> bb.config["z_shape"], bb.config["box"]
        ([100], [-1.0, 1.0])
    """
    entry = registry.get(name)
    if entry.kind == "white-box":
        raise ValueError(f"{name!r} is a white-box attack; it needs the target's weights")
    _check_generator(name, entry, gan is not None)
    options = {"max_steps": steps, **_convert(entry, options)}
    if gan is not None:
        from jaxinv.models.gan import decoder

        options = {**(entry.latent or {}), **options, "decode": decoder(gan.generator),
                   "z_shape": (int(gan.meta["z_dim"]),)}
    return entry.factory(tuple(input_shape), **options)


def _convert(entry: registry.Entry, options: dict[str, Any]) -> dict[str, Any]:
    out = dict(options)
    for k, fn in (entry.convert or {}).items():
        if isinstance(out.get(k), str):
            out[k] = fn(out[k])
    return out


def build_attack(name: str, target: Any, steps: int, options: dict[str, Any],
                 gan: Any = None):
    """The in-process kernel of registered attack ``name`` against ``target`` (a
    ``Classifier``). Black-box attacks see the target through a score or label oracle
    behind the output defense ``options["defense"]`` (e.g. ``"round:2,topk:3"``).
    With ``gan`` the attack runs in its latent space; run it with
    ``env = attack_env(name, target.variables, gan)``.

    Example:
        >>> import tempfile
        >>> from jaxinv.training import fit
        >>> clf = fit("digits", "softmax", tempfile.mkdtemp(), epochs=1, progress=False)
        >>> build_attack("mi-face", clf, 500, {"lr": 0.1}).config["lr"]
        0.1
    """
    entry = registry.get(name)
    options = dict(options)
    shape = tuple(target.meta["input_shape"])
    _check_generator(name, entry, gan is not None)
    if entry.kind == "white-box":
        if options.pop("defense", ""):
            raise ValueError(f"{name} is white-box: output defenses do not apply")
        options = {"max_steps": steps, **_convert(entry, options)}
        if gan is not None:  # a latent white-box factory takes the GAN's modules
            options.update(generator=gan.generator, critic=gan.critic,
                           z_dim=int(gan.meta["z_dim"]))
        return entry.factory(apply_logits(target.module), shape, **options)
    defense = defenses.parse(options.pop("defense", "") or "")
    bb = build_blackbox(name, shape, steps, options, gan)
    make = oracles.label if bb.kind == "label" else oracles.score
    return as_attack(bb, make(apply_logits(target.module), defense))


def attack_env(name: str, target_variables: Any, gan: Any = None) -> Any:
    """The ``env`` of :func:`build_attack`'s kernel: the target's variables, a
    :class:`~jaxinv.attacks.gmi.GMIEnv` for a latent white-box attack, or
    ``OracleEnv(target, G)`` for a black-box attack in a generator's latent space.

    Example:
        >>> from jaxinv.models.gan import random_gan
        >>> type(attack_env("gmi", variables, random_gan((8, 8, 1), width=4))).__name__
        'GMIEnv'
        >>> attack_env("mi-face", variables) is variables
        True
    """
    if gan is None:
        return target_variables
    if registry.get(name).kind == "white-box":
        from jaxinv.attacks.gmi import gmi_env

        return gmi_env(target_variables, gan)
    return OracleEnv(target_variables, gan.variables["G"])


def _attack_metrics(state: Any) -> dict[str, Any]:
    """What the attack itself counted: queries, budget-exhausted and never-started chains,
    and what a black-box attack observed (``observed_confidence``, ``sphere_share``)."""
    out: dict[str, Any] = {}
    if hasattr(state, "queries"):
        q = np.asarray(state.queries)
        out.update(queries_total=int(q.sum()), queries_per_chain=float(q.mean()),
                   chains_budget_exhausted=int(np.asarray(state.budget_exhausted).sum()))
    if hasattr(state, "found"):
        out["chains_without_start"] = int((~np.asarray(state.found)).sum())
    if hasattr(state, "sphere_share"):
        out["sphere_share"] = float(np.mean(state.sphere_share))
    elif hasattr(state, "confidence"):
        out["observed_confidence"] = float(np.mean(state.confidence))
    return out


def _remote_target(remote: str, out: Path, client_options: dict | None):
    from jaxinv.http.client import HTTPOracle

    out.mkdir(parents=True, exist_ok=True)
    return HTTPOracle(remote, log_path=out / "queries.jsonl",
                      **{"batch_size": 1024, **(client_options or {})})


def _check_models(meta: dict, evaluator: Any, classes: list[int] | None) -> np.ndarray:
    k = int(meta["num_classes"])
    if int(evaluator.meta["num_classes"]) != k:
        raise ValueError(f"target has {k} classes but the evaluation model has "
                         f"{evaluator.meta['num_classes']}: train both on the same classes")
    if tuple(evaluator.meta["input_shape"]) != tuple(meta["input_shape"]):
        raise ValueError(f"target input shape {meta['input_shape']} differs from the "
                         f"evaluation model's {evaluator.meta['input_shape']}")
    classes = list(range(k)) if classes is None else [int(c) for c in classes]
    bad = [c for c in classes if not 0 <= c < k]
    if bad or not classes:
        raise ValueError(f"classes {bad or classes} out of range for a {k}-class target")
    return np.asarray(classes, np.int32)


WEAK_EVALUATOR = 0.9  # an evaluator below this test accuracy gets a warning


def _evaluators(eval_dir) -> list:
    dirs = [eval_dir] if isinstance(eval_dir, str | Path) else list(eval_dir)
    if not dirs:
        raise ValueError("give at least one evaluation model (--eval-model)")
    return [(str(d), _load(d, "evaluation")) for d in dirs]


def _judge_all(evaluators, res, y, target_meta, first: dict, selected=None
               ) -> tuple[dict, list[str]]:
    """Attack accuracy under every evaluator (the first one's is ``first``, already judged;
    with ``selected`` chains also on those), and warnings about weak ones."""
    per, warnings = {}, []
    for n, (d, ev) in enumerate(evaluators):
        acc = ev.meta.get("test_accuracy")
        if n == 0:
            per[d] = {**first, "test_accuracy": acc}
        else:
            j, i = results.judge(ev, res.best_x, y), results.judge(ev, res.x_init, y)
            per[d] = {"attack_acc_top1": j["top1"], "attack_acc_top5": j["top5"],
                      "init_acc_top1": i["top1"], "test_accuracy": acc}
            if selected is not None:
                s = results.judge(ev, _pick(res.best_x, selected), y)
                per[d].update(attack_acc_top1_selected=s["top1"],
                              attack_acc_top5_selected=s["top5"])
        if acc is not None and acc < min(WEAK_EVALUATOR, target_meta.get(
                "test_accuracy", 1.0) - 0.05):
            warnings.append(f"evaluation model {d} is weak (test accuracy {acc:.3f}): its "
                            "attack accuracy says more about it than about the attack")
    return per, warnings


def invert(attack: str, target_dir: str | Path | None, eval_dir: str | Path | list,
           out: str | Path, *, chains: int, steps: int, classes: list[int] | None = None,
           seed: int = 0, chunk: int | None = None, segment: int | None = None,
           options: dict[str, Any] | None = None, progress: bool = True,
           remote: str | None = None, client_options: dict[str, Any] | None = None,
           generator: str | Path | None = None, unroll: int | None = None) -> dict[str, Any]:
    """Run ``attack`` with ``chains`` chains on every class; write ``out/results.json``,
    ``out/reconstructions.npz`` and ``out/grid.png``.

    With ``remote`` (a ``jaxinv serve`` URL) a black-box attack queries that server over
    HTTP instead of loading ``target_dir`` (pass ``None``); every HTTP batch is logged to
    ``out/queries.jsonl``. ``eval_dir`` may be a list: the first evaluator gives
    ``attack_acc_*``, every one is reported in ``metrics.per_evaluator``, and a weak one
    (test accuracy below 0.9) gets a warning. A run killed mid-way, or stopped by a server
    outage, resumes from ``out/checkpoints`` when restarted with the same arguments.

    ``generator`` (a ``jaxinv train-gan`` workdir, :func:`load_generator`) runs the attack
    in the GAN's latent space (``gmi`` requires one; ``zo`` and ``label-only`` take one);
    ``config`` records its directory and meta. For ``gmi`` the metrics add
    ``attack_acc_top1_selected`` / ``_top5_selected`` (the evaluator on each class's
    restart with the highest target logit) and ``reconstructions.npz`` the chosen chain
    per class (``selected``). ``unroll``: steps per compiled call of an in-process run
    (:func:`jaxinv.core.run_chains`; fewer compile faster).

    Example:
        >>> import tempfile
        >>> from jaxinv.training import fit
        >>> d = tempfile.mkdtemp()
        >>> _ = [fit("digits", a, f"{d}/{a}", epochs=1, progress=False) for a in ("softmax", "mlp")]
        >>> rec = invert("mi-face", f"{d}/softmax", f"{d}/mlp", f"{d}/run", chains=2, steps=3,
        ...              progress=False)
        >>> rec["metrics"]["steps_run"], sorted(rec["metrics"]["per_class"])[:3]
        (3, ['0', '1', '2'])
    """
    options, out = dict(options or {}), Path(out)
    entry = registry.get(attack)
    _check_generator(attack, entry, generator is not None)
    evaluators = _evaluators(eval_dir)
    evaluator = evaluators[0][1]
    client = target = None
    if remote is not None:
        if entry.kind == "white-box":
            raise ValueError(f"--remote needs a black-box attack, got {attack!r}: a remote "
                             "model exposes no weights")
        if options.pop("defense", ""):
            raise ValueError("a remote target applies its own defenses (jaxinv serve "
                             "--defense); do not pass --defense with --remote")
        client = _remote_target(remote, out, client_options)
        meta = client.stats()["model"]
    else:
        target = _load(target_dir, "target")
        meta = target.meta
    gan = None
    if generator is not None:
        gan = load_generator(generator, meta["input_shape"])
    y = _check_models(meta, evaluator, classes)
    config = {"options": jsonable(options),
              "target": remote or str(Path(target_dir).absolute())}
    if gan is not None:  # resuming with another generator is refused
        config.update(generator=str(Path(generator).absolute()),
                      generator_steps=gan.meta.get("steps"))
    tic = time.perf_counter()
    kw = dict(chains=chains, steps=steps, seed=seed, segment=segment,
              workdir=out / "checkpoints", progress=progress, config=config)
    if client is not None:
        res = run_remote(build_blackbox(attack, meta["input_shape"], steps, options, gan),
                         client, y, env=None if gan is None else gan.variables["G"],
                         desc=f"{attack} @ {remote}", **kw)
    else:
        kernel = build_attack(attack, target, steps, options, gan)
        res = run_chains(kernel, y, attack_env(attack, target.variables, gan), chunk=chunk,
                         unroll=unroll, desc=attack, **kw)
    selected = (_select(target, res.best_x, y) if attack in SELECT_BY_TARGET_LOGIT
                and target is not None else None)
    record = _record(attack, res, y, target, evaluator, time.perf_counter() - tic,
                     dict(target_dir=str(target_dir), eval_dir=evaluators[0][0], chains=chains,
                          steps=steps, classes=y.tolist(), chunk=chunk, segment=segment,
                          options=jsonable(options), seed=seed, meta=meta))
    m = record["metrics"]
    first = {k: m[k] for k in ("attack_acc_top1", "attack_acc_top5", "init_acc_top1")}
    if selected is not None:
        j = results.judge(evaluator, _pick(res.best_x, selected), y)
        m.update(attack_acc_top1_selected=j["top1"], attack_acc_top5_selected=j["top5"])
        for c, v in j["per_class"].items():
            m["per_class"][c].update(top1_selected=v["top1"], top5_selected=v["top5"])
        first.update(attack_acc_top1_selected=j["top1"], attack_acc_top5_selected=j["top5"])
    per, warnings = _judge_all(evaluators, res, y, meta, first, selected)
    record["metrics"]["per_evaluator"] = per
    for w in warnings:
        print(f"warning: {w}", file=sys.stderr)
    if warnings:
        record["metrics"]["evaluator_warnings"] = warnings
    if gan is not None:
        record["config"].update(
            generator=str(Path(generator).absolute()), generator_meta=jsonable(gan.meta),
            latent_defaults=jsonable({k: v for k, v in (entry.latent or {}).items()
                                      if k not in options}))
    if client is not None:
        record["config"]["remote"] = remote
        record["metrics"]["http"] = {"queries": client.queries, "requests": client.requests,
                                     "retries": client.retries,
                                     "seconds": round(client.http_seconds, 3)}
    if jax.process_index() == 0:
        arrays = _arrays(res, y)
        if selected is not None:
            arrays["selected"] = selected
        results.write_run(out, record, arrays)
    return record


def _select(target: Any, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """GMI's restart choice: per class, the chain whose ``x[T, N, ...]`` has the highest
    target logit of the class (``int32 [T]``)."""
    t, n = x.shape[:2]
    logits = np.asarray(target.logits(x.reshape((t * n, *x.shape[2:])))).reshape(t, n, -1)
    return np.take_along_axis(logits, np.asarray(y)[:, None, None], -1)[..., 0].argmax(
        1).astype(np.int32)


def _pick(x: np.ndarray, selected: np.ndarray) -> np.ndarray:
    return x[np.arange(len(selected)), selected][:, None]  # [T, 1, ...]


def _record(attack, res, y, target, evaluator, wall_s, cfg) -> dict[str, Any]:
    judged = results.judge(evaluator, res.best_x, y)
    init = results.judge(evaluator, res.x_init, y)
    conf = results.judge(target, res.best_x, y) if target is not None else None
    per_class = {c: {"top1": v["top1"], "top5": v["top5"],
                     "target_confidence": conf["per_class"][c]["confidence"] if conf else None}
                 for c, v in judged["per_class"].items()}
    n_failed = int(res.failed.sum())
    if n_failed:
        print(f"warning: {n_failed} chains went non-finite and were frozen at their last "
              "finite iterate (see reconstructions.npz 'failed')", file=sys.stderr)
    steps = res.timing.get("steps_timed", res.steps_run)  # this call's steps (resumed runs)
    timing = {**res.timing, "wall_s": wall_s,
              "chain_steps_per_s": steps * res.best_x.shape[0] * res.best_x.shape[1]
              / max(res.timing["run_s"], 1e-9)}
    metrics = {
        "attack_acc_top1": judged["top1"], "attack_acc_top5": judged["top5"],
        "attack_acc_top1_std_over_classes": judged["top1_std_over_classes"],
        "init_acc_top1": init["top1"], "init_acc_top5": init["top5"],
        "target_confidence": conf["confidence"] if conf else None,
        "chains_failed": n_failed, "steps_run": res.steps_run, "per_class": per_class,
        **_attack_metrics(res.state)}
    if conf is None:
        metrics["target_confidence_note"] = "remote target: its weights are not available"
    if hasattr(res.state, "found"):  # label-only: chains that never found a start image
        started = np.asarray(res.state.found)
        metrics["attack_acc_top1_started"] = (float(judged["hits"][started].mean())
                                              if started.any() else None)
    return {"attack": attack,
            "config": {"target": cfg["target_dir"], "eval_model": cfg["eval_dir"],
                       "chains": cfg["chains"], "steps": cfg["steps"],
                       "classes": cfg["classes"], "chunk": cfg["chunk"],
                       "segment": cfg["segment"], "options": cfg["options"],
                       "target_meta": cfg["meta"], "eval_meta": evaluator.meta},
            "seed": cfg["seed"], "versions": results.versions(), "metrics": metrics,
            "timing": timing}


def _arrays(res, y) -> dict[str, np.ndarray]:
    arrays = {"x": res.best_x, "y": y, "x_init": res.x_init, "best_loss": res.best_loss,
              "failed": res.failed}
    if res.info is not None:  # curves: mean over chains per step and class
        flat = {**{k: v for k, v in res.info._asdict().items() if k != "aux"},
                **getattr(res.info, "aux", {})}
        for name, v in flat.items():
            arrays[f"curve_{name}"] = np.nanmean(np.asarray(v, np.float64), axis=2)
    return arrays
