"""Network inversion and TLDR as an attack run: train the conditional generator against
the target's weights, sample every class, judge, write the usual run directory.

``network_inversion(target, eval_model, out, preset="tldr")`` trains (or resumes) the
generator in ``out/generator``, draws ``samples`` images per class and writes
``out/results.json`` (``attack_acc_top1``/``top5`` under every evaluator, target
confidence, the training-likeness of the samples, timing), ``out/reconstructions.npz``
(``x [classes, samples, H, W, C]`` in [0, 1], ``y``) and ``out/grid.png``, so ``jaxinv
evaluate`` and ``jaxinv report`` work on it. ``jaxinv attack tldr`` / ``jaxinv attack
ni`` run it.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import jax
import numpy as np

from jaxinv.attacks.inversion_losses import Weights, weights_from
from jaxinv.evaluation import results
from jaxinv.metrics.traininglike import training_likeness
from jaxinv.training.inverter import Inverter, check_target, generate, train_inverter

# TLDR conditions on hot vectors (SPECS 2c). Plain network inversion's soft "vector"
# conditioning did not learn within a CPU budget (digits, 300 steps: CE 2.4 vs 0.17 with
# label conditioning), so "ni" also uses labels: TLDR and NI then differ by the TLDR terms only.
PRESET_CONDITIONING = {"tldr": "label", "ni": "label"}


def sample_classes(inverter: Inverter, classes: np.ndarray, samples: int, seed: int = 0,
                   member: int = 0) -> np.ndarray:
    """``samples`` images of each class from member ``member``: ``[T, samples, H, W, C]``.

    Example:
        >>> from jaxinv.training.inverter import random_inverter
        >>> sample_classes(random_inverter((8, 8, 1), 10, width=4), np.arange(3), 2).shape
        (3, 2, 8, 8, 1)
    """
    labels = np.repeat(np.asarray(classes, np.int32), samples)
    x = generate(inverter, labels, jax.random.key(seed), member)
    return x.reshape(len(classes), samples, *x.shape[1:])


def network_inversion(target_dir: str | Path, eval_dir: str | Path | list, out: str | Path, *,
                      preset: str = "tldr", weights: dict[str, float] | None = None,
                      samples: int = 64, steps: int = 1000, classes: list[int] | None = None,
                      seed: int = 0, progress: bool = True, **train_options: Any
                      ) -> dict[str, Any]:
    """Train a conditional generator against ``target_dir``'s weights with loss ``preset``
    (``"tldr"``: every term; ``"ni"``: plain network inversion, KL, CE, cosine and
    orthogonality only; both label-conditioned unless ``conditioning`` is given) and
    ``weights`` overrides; write the run directory ``out``.

    ``train_options`` go to :func:`jaxinv.training.inverter.train_inverter` (e.g.
    ``batch_size``, ``lr``, ``sigma``, ``width``, ``conditioning``). A second call resumes.

    Example:
        >>> from jaxinv.training import fit
        >>> _ = fit("digits", "cnn", "runs/target", epochs=2, progress=False)
        >>> rec = network_inversion("runs/target", "runs/target", "runs/tldr", steps=2,
        ...                         samples=2, width=4, batch_size=8, progress=False)
        >>> sorted(rec["metrics"]["training_likeness"])
        ['confidence', 'grad_norm', 'perturbation_kl']
    """
    from jaxinv.workflows.invert import _check_models, _evaluators, _load

    target = _load(target_dir, "target")
    evaluators = _evaluators(eval_dir)
    y = _check_models(target.meta, evaluators[0][1], classes)
    w: Weights = weights_from(preset, **(weights or {}))
    train_options.setdefault("conditioning", PRESET_CONDITIONING[preset])
    out = Path(out)
    tic = time.perf_counter()
    inv = train_inverter(target, out / "generator", weights=w, seeds=[seed], steps=steps,
                         progress=progress, meta={"target": str(target_dir), "preset": preset},
                         **train_options)
    return write_member_run(inv, 0, target, evaluators, out, y, samples=samples, seed=seed,
                            name=preset, extra={"target": str(target_dir), "steps": steps},
                            train_s=time.perf_counter() - tic)


def write_member_run(inverter: Inverter, member: int, target: Any, evaluators: list,
                     out: str | Path, classes: np.ndarray, *, samples: int, seed: int = 0,
                     name: str = "tldr", extra: dict | None = None,
                     train_s: float | None = None) -> dict[str, Any]:
    """Sample member ``member`` of ``inverter`` (``samples`` per class), judge it with
    ``evaluators`` (``[(dir, Classifier), ...]``; the first gives ``attack_acc_*``) and the
    target, and write the run directory ``out``. ``train_s``: this call's training time
    (default: the generators' total).

    Example:
        >>> from jaxinv.training.inverter import random_inverter
        >>> rec = write_member_run(random_inverter((8, 8, 1), 10, width=4), 0, clf,
        ...                        [("clf", clf)], "runs/untrained", np.arange(10), samples=2)
        >>> rec["metrics"]["attack_acc_top1"] < 0.5
        True
    """
    from jaxinv.workflows.invert import _judge_all

    tic = time.perf_counter()
    check_target(inverter, target)
    y = np.asarray(classes, np.int32)
    evaluator = evaluators[0][1]
    x = sample_classes(inverter, y, samples, seed, member)
    record = _record(name, inverter, member, target, evaluator, x, y, seed)
    first = {k: record["metrics"][k] for k in ("attack_acc_top1", "attack_acc_top5")}
    per, warnings = _judge_all(evaluators, SimpleNamespace(best_x=x, x_init=x), y,
                               target.meta, first)
    for d in per.values():
        d.pop("init_acc_top1", None)
    record["metrics"]["per_evaluator"] = per
    for msg in warnings:
        print(f"warning: {msg}", file=sys.stderr)
    record["config"].update(eval_model=evaluators[0][0], samples=samples, classes=y.tolist(),
                            member=member, **(extra or {}))
    total = inverter.meta.get("train_seconds_total", 0.0)
    train_s = total if train_s is None else train_s
    record["timing"] = {"train_s": round(train_s, 2), "train_seconds_total": total,
                        "steps_per_s": inverter.meta.get("steps_per_s"),
                        "members_trained_together": inverter.members,
                        "wall_s": round(train_s + time.perf_counter() - tic, 2)}
    if jax.process_index() == 0:
        results.write_run(out, record, {"x": x, "y": y})
    return record


def _record(name, inv, member, target, evaluator, x, y, seed) -> dict[str, Any]:
    judged, conf = results.judge(evaluator, x, y), results.judge(target, x, y)
    flat, labels = x.reshape(-1, *x.shape[2:]), np.repeat(y, x.shape[1])
    like = training_likeness(target, flat, labels, sigma=inv.meta["sigma"], seed=seed)
    per_class = {c: {"top1": v["top1"], "top5": v["top5"],
                     "target_confidence": conf["per_class"][c]["confidence"]}
                 for c, v in judged["per_class"].items()}
    metrics = {"attack_acc_top1": judged["top1"], "attack_acc_top5": judged["top5"],
               "attack_acc_top1_std_over_classes": judged["top1_std_over_classes"],
               "target_confidence": conf["confidence"], "per_class": per_class,
               "training_likeness": {k: float(np.mean(v)) for k, v in like.items()},
               "generator_last_metrics": (inv.meta.get("last_metrics") or [{}] * (member + 1))[
                   member]}
    return {"attack": name, "config": {"weights": inv.meta["weights"][member],
                                         "generator": {k: inv.meta[k] for k in (
                                             "conditioning", "batch_size", "lr", "sigma",
                                             "width", "dropout", "output", "upsample",
                                             "grad_mode", "grad_examples", "z_dim")},
                                         "target_meta": target.meta,
                                         "eval_meta": evaluator.meta},
            "seed": seed, "versions": results.versions(), "metrics": metrics}


__all__ = ["PRESET_CONDITIONING", "network_inversion", "sample_classes", "write_member_run"]
