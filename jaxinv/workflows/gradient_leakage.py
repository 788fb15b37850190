"""``jaxinv attack dlg|idlg|ig``: reconstruct federated clients' batches from the updates
they share, thousands of victims per compiled call, and score every victim.

:func:`gradient_leakage` draws ``victims`` batches of ``batch`` images from a dataset,
computes each client's shared update (FedSGD gradient or FedAvg update, through an
optional client-side defense), reads the labels off the updates (iDLG / batch rule), runs
the attack with ``restarts`` chains per victim (one chain = one victim x one restart; the
restart of least final loss wins), and writes a run directory: ``results.json``,
``reconstructions.npz`` (victims beside reconstructions, per-image scores) and
``grid.png`` (each row: a victim's images, then their reconstructions).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, NamedTuple

import jax
import numpy as np

from jaxinv import data
from jaxinv.attacks.gradient_matching import ATTACKS, Victim, batch_labels
from jaxinv.core import run_chains
from jaxinv.evaluation import results
from jaxinv.federated import defenses, finite_victims, shared_updates
from jaxinv.metrics import reconstruction as R
from jaxinv.models import Classifier, apply_features, apply_logits, create, init_variables

LABEL_SOURCES = ("analytic", "true")
# fresh victims: a small ResNet whose convolutions are im2col (fast per-example gradients)
ARCH_OPTIONS = {"resnet": {"stages": (16, 32, 64), "patches": True}}
GRID_VICTIMS = 16


def victim_batches(y: np.ndarray, victims: int, batch: int, seed: int = 0,
                   distinct: bool = True) -> np.ndarray:
    """Indices ``[victims, batch]`` into ``y``: random batches, each of ``batch`` distinct
    labels when ``distinct`` (the case where the batch label rule is exact).

    Example:
        >>> idx = victim_batches(np.arange(100) % 10, 5, 4)
        >>> idx.shape, all(len(set(r % 10)) == 4 for r in idx)
        ((5, 4), True)
    """
    y = np.asarray(y).ravel()
    if victims < 1 or batch < 1:
        raise ValueError(f"victims and batch must be >= 1, got {victims}, {batch}")
    if distinct and batch > len(np.unique(y)):
        raise ValueError(f"batch {batch} > {len(np.unique(y))} classes: no batch of distinct "
                         "labels exists (use distinct=False)")
    order = np.random.default_rng(seed).permutation(len(y))
    out, cur, seen = [], [], set()
    pool = list(order)
    while pool and len(out) < victims:
        rest = []
        for i in pool:
            if len(out) == victims:
                break
            if distinct and y[i] in seen:
                rest.append(i)
                continue
            cur.append(i)
            seen.add(y[i])
            if len(cur) == batch:
                out.append(cur)
                cur, seen = [], set()
        if len(rest) == len(pool):
            break
        pool = rest
    if len(out) < victims:
        raise ValueError(f"only {len(out)} victim batches of {batch} can be drawn from "
                         f"{len(y)} samples; ask for fewer victims")
    return np.asarray(out, np.int64)


def victim_model(model: str, num_classes: int, input_shape: tuple[int, ...], *,
                 seed: int = 0, dataset: str = "?") -> Classifier:
    """A trained model's work dir (``jaxinv train`` output), or an architecture name for
    a fresh model at initialisation (an early federated round; ``dlg-lenet`` is DLG's;
    ``resnet`` gets :data:`ARCH_OPTIONS`).

    Example:
        >>> victim_model("dlg-lenet", 10, (8, 8, 1)).meta["trained"]
        False
    """
    if Path(model).is_dir():
        from jaxinv.training import load_classifier

        return load_classifier(model)
    options = ARCH_OPTIONS.get(model, {})
    module = create(model, num_classes, **options)
    meta = {"arch": model, "arch_kwargs": options, "num_classes": num_classes,
            "input_shape": list(input_shape),
            "dataset": dataset, "trained": False, "init_seed": seed}
    return Classifier(module, init_variables(module, input_shape, seed), meta)


def gradient_leakage(out: str | Path, *, attack: str = "dlg", dataset: str = "mnist",
                     split: str = "train", model: str = "dlg-lenet", model_seed: int = 0,
                     victims: int = 256, batch: int = 1, restarts: int = 1,
                     steps: int | None = None, labels: str = "analytic",
                     defense: str = "none", local_steps: int = 0, local_lr: float = 1e-4,
                     seed: int = 0, chunk: int | None = None, progress: bool = True,
                     retry_above: float | None = None, data_dir: str | None = None,
                     **options: Any) -> dict[str, Any]:
    """Attack ``victims`` federated clients and write the run directory ``out``.

    Args:
      attack: ``dlg``, ``idlg`` or ``ig`` (:mod:`jaxinv.attacks.gradient_matching`);
        ``options`` go to its factory (``tv``, ``lr``, ``init_scale``, ...).
      model: an architecture name (fresh weights from ``model_seed``) or a trained
        model's work dir.
      labels: for ``idlg``/``ig``, ``"analytic"`` (read off each update) or ``"true"``
        (the attacker knows them: an upper bound).
      defense: the clients' update defense (:func:`jaxinv.federated.defenses.parse`).
      local_steps, local_lr: FedAvg (``0``: FedSGD gradients).
      steps: attack iterations (default: the attack's).
      chunk: vmap at most this many chains per device at once (memory).
      retry_above: victims whose least final loss (the attacker's own gradient-matching
        loss, no ground truth) exceeds this are attacked once more with ``restarts`` fresh
        chains (seed ``seed + 1``, in ``out/retry``); the lower loss wins per victim.
        ``metrics.retried_victims`` counts them.

    Resumable: chains checkpoint in ``out/chains`` and a rerun continues. Victims whose
    update is not finite are flagged in ``metrics.flagged_victims`` and not attacked.

    Example:
        >>> rec = gradient_leakage("runs/idlg", attack="idlg", dataset="digits", victims=4,
        ...                        steps=60, progress=False)
        >>> rec["metrics"]["label_accuracy"], rec["metrics"]["exact_recovery_rate"]
        (1.0, 1.0)
    """
    if attack not in ATTACKS:
        raise ValueError(f"unknown attack {attack!r}; choose one of {sorted(ATTACKS)}")
    if labels not in LABEL_SOURCES:
        raise ValueError(f"labels must be one of {LABEL_SOURCES}, got {labels!r}")
    tic = time.perf_counter()
    r = client_round(dataset, split, model, victims, batch, seed=seed, model_seed=model_seed,
                     defense=defense, local_steps=local_steps, local_lr=local_lr,
                     distinct=labels == "analytic" and batch > 1, data_dir=data_dir)
    kept = np.flatnonzero(r.finite)
    if not len(kept):
        raise FloatingPointError("every victim's update is non-finite: check the model")
    upd = jax.tree.map(lambda a: a[kept], r.updates)
    k = int(r.clf.meta["num_classes"])
    rec_labels = np.asarray(jax.jit(jax.vmap(lambda u: batch_labels(u, k, batch)))(upd))
    f = apply_logits(r.clf.module)
    kernel = ATTACKS[attack](f, r.x.shape[2:], k, batch=batch, local_steps=local_steps,
                             local_lr=local_lr, **({"steps": steps} if steps else {}),
                             **options)
    given = r.y[kept] if labels == "true" else rec_labels
    res = run_chains(kernel, Victim(upd, given), r.clf.variables, chains=restarts,
                     steps=kernel.config["steps"], seed=seed, chunk=chunk,
                     workdir=Path(out) / "chains", progress=progress, desc=attack,
                     config={"model": r.clf.meta, "defense": defense, "labels": labels,
                             "victims": r.idx.tolist()})
    win = _winners(res, attack)
    timing = dict(res.timing)
    retried = (np.flatnonzero(~(win["loss"] <= retry_above)) if retry_above is not None
               else np.zeros(0, int))  # a NaN loss is stuck too
    if len(retried):  # a second attempt for the victims the attacker sees stuck
        sub = Victim(jax.tree.map(lambda a: a[retried], upd), given[retried])
        res2 = run_chains(kernel, sub, r.clf.variables, chains=restarts,
                          steps=kernel.config["steps"], seed=seed + 1, chunk=chunk,
                          workdir=Path(out) / "retry" / "chains", progress=progress,
                          desc=f"{attack} retry", config={"victims": r.idx[kept][retried]
                                                          .tolist()})
        win2 = _winners(res2, attack)
        gain = win2["loss"] < win["loss"][retried]
        for key in win:
            win[key][retried[gain]] = win2[key][gain]
        timing["retry_run_s"] = res2.timing["run_s"]
    rec = np.zeros_like(r.x)
    rec[kept] = win["x"]
    if attack == "dlg":  # DLG's labels: the argmax of its optimised soft labels
        rec_labels = np.sort(np.argmax(win["y"], -1), axis=-1)
    recovered = np.full(r.y.shape, -1)
    recovered[kept] = rec_labels
    losses = np.full(len(r.x), np.nan)
    losses[kept] = win["loss"]
    scores = R.per_image(rec, r.x, _features(r.clf))
    metrics = {**R.summarize(scores, r.finite),
               "label_accuracy": _label_accuracy(rec_labels, r.y[kept]),
               "flagged_victims": np.flatnonzero(~r.finite).tolist(),
               "chains_failed": int(np.sum(res.failed)), "steps_run": int(res.steps_run),
               "retried_victims": len(retried),
               "per_victim": _per_victim(scores, r.finite)}
    # victims per second of the first attempt: this call's share of the run (a resumed run
    # timed only its own steps; one that resumed at the end timed none: null)
    done = res.timing["steps_timed"] / max(int(res.steps_run), 1)
    timing = {**timing, "wall_s": time.perf_counter() - tic, "victims_per_s": (
        len(kept) * done / res.timing["run_s"] if res.timing["steps_timed"] else None)}
    config = {"dataset": dataset, "split": split, "model": model, "model_seed": model_seed,
              "victims": victims, "batch": batch, "restarts": restarts,
              "retry_above": retry_above,
              "steps": kernel.config["steps"], "labels": labels, "defense": defense,
              "local_steps": local_steps, "local_lr": local_lr, "options": options,
              "kernel": kernel.config, "target_meta": r.clf.meta, "features": "victim model"}
    record = {"attack": attack, "config": config, "seed": seed,
              "versions": results.versions(), "metrics": metrics, "timing": timing}
    arrays = {"x": rec, "victims": r.x, "labels": r.y, "recovered_labels": recovered,
              "victim_index": r.idx, "finite": r.finite, "best_loss": losses,
              **{name: np.asarray(a) for name, a in scores.items()}}
    if jax.process_index() == 0:
        _write(Path(out), record, arrays)
    return record


class Round(NamedTuple):
    """One federated round as the attacker sees it: victims' images ``x [V, B, H, W, C]``
    and labels ``y [V, B]``, their dataset indices, the model, the shared (defended)
    updates (leading axis ``V``) and which of them are finite."""

    x: np.ndarray
    y: np.ndarray
    idx: np.ndarray
    clf: Classifier
    updates: Any
    finite: np.ndarray


def client_round(dataset: str, split: str, model: str, victims: int, batch: int, *,
                 seed: int = 0, model_seed: int = 0, defense: str = "none",
                 local_steps: int = 0, local_lr: float = 1e-4, distinct: bool = True,
                 data_dir: str | None = None) -> Round:
    """Draw ``victims`` client batches, and compute and defend their shared updates.

    Example:
        >>> r = client_round("digits", "train", "dlg-lenet", 3, 2, defense="prune:0.5")
        >>> r.x.shape, r.finite.tolist()
        ((3, 2, 8, 8, 1), [True, True, True])
    """
    defense_fn = defenses.parse(defense)
    x_all, y_all = data.load(dataset, split, data_dir=data_dir)
    k = int(data.info(dataset).num_classes) if not Path(dataset).suffix else int(y_all.max()) + 1
    idx = victim_batches(y_all, victims, batch, seed, distinct=distinct)
    x, y = x_all[idx].astype(np.float32), y_all[idx].astype(np.int32)
    clf = victim_model(model, k, x.shape[2:], seed=model_seed, dataset=dataset)
    updates, finite = shared_updates(apply_logits(clf.module), clf.variables, x, y,
                                     local_steps=local_steps, lr=local_lr)
    updates = defenses.apply_defense(defense_fn, updates, seed)
    return Round(x, y, idx, clf, updates, finite & finite_victims(updates))


def _winners(res: Any, attack: str) -> dict[str, np.ndarray]:
    """Per victim, the restart of least final loss (failed chains never win): its images,
    loss and, for DLG, its soft labels."""
    best = np.argmin(np.where(res.failed, np.inf, res.best_loss), axis=1)
    pick = lambda a: np.asarray(a)[np.arange(len(best)), best].copy()
    out = {"x": pick(res.best_x), "loss": pick(res.best_loss)}
    if attack == "dlg":
        out["y"] = pick(res.state.z["y"])
    return out


def _features(clf: Classifier):
    f = jax.jit(apply_features(clf.module))
    return lambda x: np.asarray(f(clf.variables, x))


def _label_accuracy(recovered: np.ndarray, truth: np.ndarray) -> float:
    """Fraction of victims' labels recovered (as multisets, order-free)."""
    hits = [len(set(map(int, r)) & set(map(int, t))) for r, t in
            zip(np.sort(recovered, -1), np.sort(truth, -1), strict=True)]
    return float(np.sum(hits) / truth.size)


def _per_victim(scores: dict[str, np.ndarray], finite: np.ndarray) -> dict[str, Any]:
    """Each victim's mean over its images (``None`` for flagged victims: strict JSON)."""
    out: dict[str, Any] = {"definition": "mean over a victim's images after matching"}
    for name, a in scores.items():
        if name != "exact":
            out[name] = [float(m) if ok else None for m, ok in zip(np.mean(a, 1), finite,
                                                                  strict=True)]
    return out


def _write(out: Path, record: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
    """``results.json``, ``reconstructions.npz`` and ``grid.png`` (each row: a victim's
    images, then their reconstructions; the first :data:`GRID_VICTIMS` victims)."""
    out.mkdir(parents=True, exist_ok=True)
    results.write_npz(out / "reconstructions.npz", arrays)
    n, batch = min(GRID_VICTIMS, len(arrays["x"])), arrays["x"].shape[1]
    pairs = np.concatenate([arrays["victims"][:n], arrays["x"][:n]], 1)
    results.save_grid(out / "grid.png", np.nan_to_num(pairs), per_class=2 * batch)
    results.write_json(out / "results.json", record)


__all__ = ["LABEL_SOURCES", "Round", "client_round", "gradient_leakage", "victim_batches",
           "victim_model"]
