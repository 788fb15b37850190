"""``jaxinv membership``: LiRA, RMIA, Shokri et al.'s attack and LOSS membership inference
with shadow models trained together by :func:`jaxinv.training.many.fit_many`.

:func:`membership` takes ``examples`` training images as the population, gives each of
``models`` classifiers a random half of it (:func:`jaxinv.membership.lira.keep_masks`: every
example is IN for exactly half of the models), trains them in one ``vmap``, and attacks each
of the first ``targets`` models with all the others as shadows (the LiRA code's protocol;
:data:`ATTACKS` lists the attacks). RMIA's population ``z`` is the dataset's test split,
which no model trained on (as in the ``ml_privacy_meter`` library). It writes
``results.json`` (AUC, TPR at 0.1% / 1% FPR, balanced accuracy per attack, pooled over the
target models), ``scores.npz`` (the statistics of every model on every example, the keep
masks, each attack's per-example scores) and ``roc.png`` (log-log ROC curves).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import jax
import numpy as np

from jaxinv import data
from jaxinv.evaluation import results
from jaxinv.membership import lira as L
from jaxinv.membership import metrics as R
from jaxinv.membership import rmia as RM
from jaxinv.membership import shokri as SH
from jaxinv.membership.scores import logit_confidence, neg_loss, softmax
from jaxinv.models import apply_logits, create, in_batches
from jaxinv.training import defenses
from jaxinv.training.many import fit_many


class Signals(NamedTuple):
    """What the attacks read: every model's outputs on the population (``[M, N, ...]``)
    and on the test split (``[M, Z]``), the labels and the membership masks."""

    conf: np.ndarray  # [M, N] LiRA's logit confidence
    loss: np.ndarray  # [M, N] minus the cross-entropy
    probs: np.ndarray  # [M, N, K] softmax vectors
    p_true: np.ndarray  # [M, N] softmax probability of the label
    p_test: np.ndarray  # [M, Z] the same on the test split (RMIA's z)
    labels: np.ndarray  # [N]
    keep: np.ndarray  # [M, N]


def _lira(**kw) -> Callable[[Signals, int], np.ndarray]:
    return lambda s, t: L.leave_one_out(s.conf, s.keep, t, **kw)


def _rmia(**kw) -> Callable[[Signals, int], np.ndarray]:
    return lambda s, t: RM.leave_one_out(s.p_true, s.keep, s.p_test, t, **kw)


# attack name -> scores [targets, N] (higher = member) of the first `targets` models
ATTACKS: dict[str, Callable[[Signals, int], np.ndarray]] = {
    "lira_online": _lira(mode="online"),
    "lira_online_fixed_variance": _lira(mode="online", fix_variance=True),
    "lira_offline": _lira(mode="offline"),
    "lira_offline_fixed_variance": _lira(mode="offline", fix_variance=True),
    "global_threshold": lambda s, t: s.conf[:t],
    "loss": lambda s, t: s.loss[:t],
    "rmia": _rmia(mode="online"),
    "rmia_offline": _rmia(mode="offline"),
    "shokri": lambda s, t: SH.leave_one_out(s.probs, s.labels, s.keep, t),
}


def stacked_logits(module: Any, variables: Any, x: np.ndarray, batch: int = 512) -> np.ndarray:
    """Logits ``[M, N, K]`` of ``M`` models (variables stacked on axis 0) on ``x``.

    Example:
        >>> from jaxinv.models import init_variables
        >>> m = create("softmax", 3)
        >>> v = jax.tree.map(lambda *a: np.stack(a), *[init_variables(m, (2, 2, 1), s)
        ...                                           for s in (0, 1)])
        >>> stacked_logits(m, v, np.zeros((5, 2, 2, 1), np.float32)).shape
        (2, 5, 3)
    """
    f = jax.jit(jax.vmap(apply_logits(module), in_axes=(0, None)))
    return np.concatenate(in_batches(lambda xb: f(variables, xb), x, batch), axis=1)[:, :len(x)]


FLOOR = 1e-6  # released probabilities are floored here before the log (rounding gives 0)


def released_logits(logits: np.ndarray, output: str, seed: int = 0) -> np.ndarray:
    """Log of what the output defense ``output`` (``"round:1"``, ``"label"``; :mod:`jaxinv.
    defenses`) releases of ``softmax(logits)``, floored at :data:`FLOOR`: the logits an
    attacker who sees only the released vectors works with. ``""``/``"none"``: ``logits``.

    Example:
        >>> released_logits(np.array([[[2.0, 0.0]]]), "label").round(2)
        array([[[  0.  , -13.82]]])
    """
    from jaxinv import defenses as output_defenses

    if output in ("", "none"):
        return logits
    d = output_defenses.parse(output)
    flat = softmax(logits).reshape(-1, logits.shape[-1]).astype(np.float32)
    released = np.asarray(d.apply(jax.random.key(seed), flat), np.float64)
    return np.log(np.maximum(released, FLOOR)).reshape(logits.shape)


def population(dataset: str, examples: int, canaries: int = 0, seed: int = 0,
               data_dir: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The first ``examples`` training images of ``dataset`` followed by ``canaries``
    planted ones (uniform noise, random labels; drawn from ``seed``).

    Example:
        >>> x, y = population("digits", 100, canaries=5)
        >>> x.shape, y.shape
        ((105, 8, 8, 1), (105,))
    """
    x, y = data.load(dataset, "train", data_dir=data_dir)
    if not 2 <= examples <= len(x):
        raise ValueError(f"membership: examples must lie in [2, {len(x)}] for {dataset}, "
                         f"got {examples}")
    x, y = x[:examples], y[:examples]
    if canaries:
        rng = np.random.default_rng(seed + 1)
        x = np.concatenate([x, rng.uniform(size=(canaries, *x.shape[1:])).astype(x.dtype)])
        y = np.concatenate([y, rng.integers(0, int(y.max()) + 1, canaries).astype(y.dtype)])
    return x, y


def membership(out: str | Path, *, dataset: str = "digits", model: str = "mlp",
               model_kwargs: dict | None = None,
               examples: int = 1000, models: int = 16, targets: int = 1, epochs: int = 20,
               batch_size: int = 64, lr: float = 1e-3, weight_decay: float = 0.0,
               canaries: int = 0, seed: int = 0, data_dir: str | None = None,
               progress: bool = True, compare_sequential: bool = False,
               dp: dict | None = None, defense: dict | str | None = None,
               output: str = "") -> dict[str, Any]:
    """Train ``models`` classifiers on random halves of ``examples`` training images and
    attack the first ``targets`` of them with the others as shadows; write ``out``.
    ``model_kwargs`` are the architecture's options (e.g. ``{"hidden": [256]}`` for ``mlp``).

    ``canaries`` appends that many planted examples (uniform-noise images with random
    labels) to the population; ``metrics_canaries`` scores them alone (a model that
    memorises gives them away). ``compare_sequential`` also trains the same models one by
    one (the same seeds and masks) and records both wall times (``together_s``,
    ``one_by_one_s``; no checkpoints on either side, compilation included). Resumable: the models
    checkpoint every epoch in ``out/models`` (timings then cover this call only). ``dp``
    (``{"epsilon", "delta", "clip"}``) trains every model with DP-SGD
    (:func:`~jaxinv.training.many.fit_many`); the guarantee is recorded under ``dp``.
    ``defense`` (``negls``, ``mid``, ``bido``, ``distill``; :mod:`jaxinv.training.defenses`)
    trains every model with that training-time defense; ``distill`` first trains a plain
    teacher per model on the same half (``out/teachers``), then each student from its own.
    ``output`` (``"round:1"``, ``"label"``) puts every model behind that output defense: the
    attacks see only the released vectors (:func:`released_logits`; utility stays that of
    the models' argmax).

    Example:
        >>> rec = membership("runs/mia", examples=200, models=4, targets=1, epochs=30,
        ...                  progress=False)
        >>> rec["metrics"]["lira_online_fixed_variance"]["auc"] > 0.5
        True
    """
    if targets < 1 or models - 1 < 2 or targets > models:
        raise ValueError(f"membership: need targets >= 1 and at least 2 shadows per target; "
                         f"got models={models}, targets={targets}")
    x, y = population(dataset, examples, canaries, seed, data_dir)
    xt, yt = data.load(dataset, "test", data_dir=data_dir)
    keep = L.keep_masks(models, len(x), seed)
    if isinstance(defense, str) and defense.startswith("distill") and "teacher=" not in defense:
        defense += ("," if ":" in defense else ":") + "teacher=teachers"
    spec = defenses.parse(defense)
    if spec and spec["name"] == "distill":  # always its own teachers, one per model
        spec["teacher"] = str(Path(out) / "teachers")
    arch, arch_kwargs = defenses.arch_for(model, dict(model_kwargs or {}), spec)
    module = create(arch, data.info(dataset).num_classes, **arch_kwargs)
    seeds = [seed * 1000 + m for m in range(models)]
    kw = dict(epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay, dp=dp,
              defense=spec)
    out = Path(out)
    tic = time.perf_counter()
    if spec and spec["name"] == "distill":  # teacher m: model m trained plainly on mask m
        teachers = fit_many(module, x, y, seeds=seeds, masks=keep, workdir=out / "teachers",
                            progress=progress, **{**kw, "defense": None}).variables
        kw["teachers"] = teachers
    res = fit_many(module, x, y, seeds=seeds, masks=keep, workdir=out / "models",
                   progress=progress, **kw)
    timing = {"fit_many_s": time.perf_counter() - tic, "fit_many_train_s": res.seconds}
    if compare_sequential:  # both without checkpoints, compile included
        tic = time.perf_counter()
        fit_many(module, x, y, seeds=seeds, masks=keep, progress=False, **kw)
        timing["together_s"] = time.perf_counter() - tic
        tic = time.perf_counter()
        for m in range(models):
            one = {**kw, **({"teachers": jax.tree.map(lambda a, m=m: a[m:m + 1],
                                                      kw["teachers"])} if "teachers" in kw
                            else {})}
            fit_many(module, x, y, seeds=seeds[m:m + 1], masks=keep[m:m + 1], progress=False,
                     **one)
        timing["one_by_one_s"] = time.perf_counter() - tic
    logits = stacked_logits(module, res.variables, x)
    test_logits = stacked_logits(module, res.variables, xt)
    seen, seen_test = (released_logits(logits, output, seed),
                       released_logits(test_logits, output, seed + 1))
    labels = np.broadcast_to(y, logits.shape[:2])
    probs = softmax(seen)
    sig = Signals(conf=logit_confidence(seen, labels), loss=neg_loss(seen, labels),
                  probs=probs, p_true=np.take_along_axis(probs, labels[..., None], -1)[..., 0],
                  p_test=softmax(seen_test)[:, np.arange(len(yt)), yt], labels=y, keep=keep)
    scores, metrics, planted = {}, {}, {}
    for name, attack in ATTACKS.items():
        scores[name] = attack(sig, targets)
        metrics[name] = R.summary(scores[name][:, :examples], keep[:targets, :examples])
        if canaries:
            planted[name] = R.summary(scores[name][:, examples:], keep[:targets, examples:])
    test_acc = (test_logits.argmax(-1) == yt).mean(1)
    own = keep[:, :examples]
    train_acc = np.array([(logits[m, :examples][own[m]].argmax(-1) == y[:examples][own[m]]
                           ).mean() for m in range(models)])
    record = {
        "config": {"dataset": dataset, "model": model, "model_kwargs": model_kwargs or {},
                   "examples": examples,
                   "canaries": canaries, "models": models, "targets": targets, "seed": seed,
                   "output": output, **{k: v for k, v in kw.items() if k != "teachers"}},
        "metrics": metrics,
        **({"metrics_canaries": planted} if canaries else {}),
        "models": {"train_accuracy_mean": float(train_acc.mean()),
                   "test_accuracy_mean": float(test_acc.mean()),
                   "target_test_accuracy": [float(a) for a in test_acc[:targets]]},
        "dp": res.dp,
        "timing": timing,
        "versions": results.versions(),
    }
    out.mkdir(parents=True, exist_ok=True)
    arrays = {"keep": keep, "labels": y, "logit_confidence": sig.conf, "neg_loss": sig.loss,
              "true_class_probability": sig.p_true, "test_true_class_probability": sig.p_test}
    results.write_npz(out / "scores.npz", {**arrays, **{f"score_{k}": v
                                                        for k, v in scores.items()}})
    plot_roc(out / "roc.png", {k: R.roc(v[:, :examples], keep[:targets, :examples])
                                for k, v in scores.items()})
    results.write_json(out / "results.json", record)
    return record


def plot_roc(path: str | Path, curves: dict[str, R.ROC]) -> Path:
    """Log-log ROC curves (LiRA's figure style), one line per attack, AUC in the legend.

    Example:
        >>> r = R.roc(np.array([3.0, 2.0, 1.0, 0.0]), np.array([1, 0, 1, 0]))
        >>> plot_roc("roc.png", {"toy": r}).name
        'roc.png'
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    floor = 1e-5
    for name, r in curves.items():
        ax.loglog(np.maximum(r.fpr, floor), np.maximum(r.tpr, floor),
                  label=f"{name} (AUC {R.auc(r):.3f})")
    ax.plot([floor, 1], [floor, 1], "k--", lw=0.8)
    ax.set(xlabel="false positive rate", ylabel="true positive rate", xlim=(floor, 1),
           ylim=(floor, 1))
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


__all__ = ["ATTACKS", "Signals", "membership", "plot_roc", "population", "stacked_logits"]
