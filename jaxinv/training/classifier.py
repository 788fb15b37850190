"""Train classifiers (targets and evaluation models) with optax; orbax checkpoints, resume.

``fit`` moves the data to the device once, dispatches one jitted optimizer step per
batch (asynchronously: the host syncs only for the progress bar, every 50 steps, and
at checkpoints), checkpoints every epoch with orbax and
resumes from the latest checkpoint: a run stopped after 2 epochs and resumed to 4
equals a straight 4-epoch run.

Example:
    >>> import tempfile
    >>> clf = fit("digits", "softmax", tempfile.mkdtemp(), epochs=20, progress=False)
    >>> clf.meta["test_accuracy"] > 0.8
    True
"""

from __future__ import annotations

import json
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxinv import data
from jaxinv.core.compiler import jit
from jaxinv.evaluation import results
from jaxinv.models import Classifier, check_finite, create, describe, init_variables
from jaxinv.training import defenses
from jaxinv.training.step import init_state, make_step, variables_of

# fit() defaults; DEFAULTS[(dataset, arch)] overrides DEFAULT. ``augment`` = max random
# shift in pixels (zero padding) applied to training batches; ``lr_decay`` = factor
# applied to the learning rate after every epoch (depends on the epoch only, so a
# resumed run with more epochs equals a straight one).
DEFAULT: dict[str, Any] = {"epochs": 20, "lr": 1e-3, "batch_size": 128, "augment": 0,
                           "lr_decay": 1.0}
DEFAULTS: dict[tuple[str, str], dict[str, Any]] = {
    ("digits", "cnn"): {"epochs": 25},
    ("digits", "mlp"): {"epochs": 60},
    ("digits", "softmax"): {"epochs": 100, "lr": 1e-2},
    ("digits", "resnet"): {"epochs": 30, "augment": 1},
    ("digits", "vgg"): {"epochs": 30, "augment": 1},
    ("mnist", "cnn"): {"epochs": 5, "lr_decay": 0.7},
    ("mnist", "resnet"): {"epochs": 4, "augment": 2, "lr_decay": 0.6},
    ("mnist", "vgg"): {"epochs": 4, "augment": 2, "lr_decay": 0.6},
    ("mnist", "mlp"): {"epochs": 10},
    # Fashion-MNIST: MNIST's schedules (same size and shape), not tuned further
    ("fashion_mnist", "cnn"): {"epochs": 5, "lr_decay": 0.7},
    ("fashion_mnist", "resnet"): {"epochs": 4, "augment": 2, "lr_decay": 0.6},
    ("fashion_mnist", "vgg"): {"epochs": 4, "augment": 2, "lr_decay": 0.6},
    ("fashion_mnist", "mlp"): {"epochs": 10},
    ("orl_faces", "cnn"): {"epochs": 40, "batch_size": 32},
    ("orl_faces", "softmax"): {"epochs": 200, "batch_size": 32},
    ("orl_faces", "mlp"): {"epochs": 150, "batch_size": 32},
    ("orl_faces", "resnet"): {"epochs": 40, "batch_size": 32, "augment": 4},
    ("orl_faces", "vgg"): {"epochs": 40, "batch_size": 32, "augment": 4},
}
PROGRESS_EVERY = 50  # steps between progress-bar updates (each one a host sync)
_CONFIG_KEYS = ("dataset", "arch", "arch_kwargs", "batch_size", "lr", "lr_decay",
                "weight_decay", "augment", "seed", "limit", "split", "side", "dp",
                "defense")


def _step_fn(loss_at, tx, aux=None):
    """``(state, sums, x, y, perm, i, key) -> (state, sums + [loss, acc])``, jitted: one
    :func:`~jaxinv.training.step.make_step` step on batch ``perm[i]`` of the loss
    ``loss_at(state.step, aux)`` (:func:`jaxinv.training.defenses.loss_fn`; ``aux``: a
    teacher's variables, an argument of the jitted step). Steps are dispatched from a
    Python loop, not a ``scan``: XLA:CPU runs weight-gradient convolutions ~50x slower
    inside loops."""

    def step(state, sums, x, y, perm, i, key, aux):
        idx = perm[i]
        inner = make_step(loss_at(state.step, aux), tx)
        state, m = inner(state, (x[idx], y[idx]), jnp.ones(idx.shape, jnp.float32),
                         jax.random.fold_in(key, i))
        return state, sums + jnp.stack([m["loss"], m["acc"]])

    jitted = jit(step, donate_argnums=(0, 1))
    return lambda *args: jitted(*args, aux)


def _dp_step_fn(loss_at, tx, dp, n: int, aux=None):
    """:func:`_step_fn` for DP-SGD: step ``i`` draws its own Poisson batch (the epoch
    permutation is unused), clips per-example gradients and noises their sum
    (:mod:`jaxinv.training.dp`)."""
    from jaxinv.training import dp as DP

    def step(state, sums, x, y, perm, i, key, aux):
        del perm
        loss = loss_at(state.step, aux)

        def per_example(params, ex):
            x, y, k = ex
            return loss(params, {}, (x[None], y[None]), k)[0][0]

        ks, kn, ka = jax.random.split(jax.random.fold_in(key, i), 3)
        idx, w, _ = DP.poisson_batch(ks, n, dp.sampling_rate, dp.max_batch)
        batch = (x[idx], y[idx], jax.random.split(ka, dp.max_batch))
        g, _ = DP.private_grad(per_example, state.params, batch, w, kn, clip=dp.clip,
                               noise_multiplier=dp.noise_multiplier,
                               expected_batch=dp.sampling_rate * n,
                               microbatch=dp.microbatch)
        updates, opt_state = tx.update(g, state.opt_state, state.params)
        new = state._replace(params=optax.apply_updates(state.params, updates),
                             opt_state=opt_state, step=state.step + 1)
        losses, (m, _) = loss(state.params, {}, (x[idx], y[idx]), ka)
        live = jnp.maximum(w.sum(), 1.0)
        return new, sums + jnp.stack([(losses * w).sum() / live, (m["acc"] * w).sum() / live])

    jitted = jit(step, donate_argnums=(0, 1))
    return lambda *args: jitted(*args, aux)


@partial(jax.jit, static_argnums=(1, 2, 3))
def _epoch_perm(key: jax.Array, n: int, steps: int, batch: int) -> jax.Array:
    """This epoch's shuffled sample indices as ``[steps, batch]``."""
    return jax.random.permutation(key, n)[:steps * batch].reshape(steps, batch)


def accuracy(clf: Classifier, x: np.ndarray, y: np.ndarray) -> float:
    """Top-1 accuracy of ``clf`` on ``(x, y)``.

    Example:
        >>> import tempfile
        >>> clf = fit("digits", "softmax", tempfile.mkdtemp(), epochs=1, progress=False)
        >>> 0.0 <= accuracy(clf, *data.load("digits", "test")) <= 1.0
        True
    """
    logits = clf.logits(x)  # a Classifier raises on non-finite logits; others are checked
    check_finite("logits", logits, describe(getattr(clf, "meta", {})))
    return float(np.mean(np.argmax(logits, -1) == np.asarray(y)))


def fit(dataset: str, arch: str, workdir: str | Path, *, epochs: int | None = None,
        batch_size: int | None = None, lr: float | None = None, weight_decay: float = 1e-4,
        lr_decay: float | None = None, augment: int | None = None, seed: int = 0,
        arch_kwargs: dict | None = None, progress: bool = True,
        data_dir: str | Path | None = None, limit: int | None = None,
        split: str | None = None, side: str = "private",
        dp: dict | None = None, defense: dict | str | None = None) -> Classifier:
    """Train ``arch`` on ``dataset``'s train split with Adam(W); save it in ``workdir``.

    Defaults for ``epochs``, ``lr``, ``lr_decay`` (per-epoch factor), ``batch_size`` and
    ``augment`` (random shifts of up to that many pixels) come from
    ``DEFAULTS[(dataset, arch)]``, else ``DEFAULT``. ``limit`` trains on the first
    ``limit`` training samples only (quick runs; test accuracy still uses the full split).
    ``split`` trains on the ``side`` (``"private"``, or ``"public"`` for an attacker's
    public-data model) of a public/private protocol (:func:`jaxinv.data.subset`:
    ``"classes:0-4"`` also restricts the test split to those classes; ``"sample:0.5"``
    keeps the full test split).
    Checkpoints every epoch (orbax, ``workdir/train_ckpt``) and resumes from the latest
    one, so calling again with more epochs continues training; resuming with other
    settings raises ``ValueError``. At the end writes ``workdir/model.json`` (meta with
    ``train_accuracy``, ``test_accuracy``, ``train_seconds``, versions) and
    ``workdir/variables`` (read by :func:`load_classifier`).

    ``dp={"epsilon": 3, "delta": 1e-5, "clip": 1.0, "accountant": "pld"}`` trains with
    DP-SGD (:mod:`jaxinv.training.dp`): Poisson batches of expected size ``batch_size``,
    the noise calibrated by ``dp-accounting`` for all the epochs' steps; ``model.json``
    records the guarantee under ``dp``. Models with batch statistics are refused.

    ``defense`` trains with a defense against model inversion / membership inference
    (:mod:`jaxinv.training.defenses`): ``{"name": "negls", "alpha": -0.05}``,
    ``{"name": "distill", "teacher": DIR, "temperature": 4.0}``, ``{"name": "mid",
    "beta": 0.01, "k": 256}`` (the model becomes arch ``vib`` around ``arch``),
    ``{"name": "bido", "lambda_x": 2.0, "lambda_y": 20.0}`` (not with ``dp``), or the
    string ``"negls:alpha=-0.05"``; ``model.json`` records it under ``defense``.

    Example:
        >>> import tempfile
        >>> clf = fit("digits", "softmax", tempfile.mkdtemp(), epochs=20, progress=False)
        >>> clf.meta["test_accuracy"] > 0.8
        True
    """
    arch_kwargs = dict(arch_kwargs or {})
    spec = defenses.parse(defense)  # bad defenses, arch or options fail before data loads
    if arch == "vib":
        raise ValueError("fit: arch 'vib' is built by defense mid: pass its base arch and "
                         "defense={'name': 'mid', ...}")
    if dp is not None:
        defenses.check_dp(spec)
    model_arch, model_kwargs = defenses.arch_for(arch, arch_kwargs, spec)
    create(model_arch, 2, **model_kwargs)
    cfg = _settings(dataset, arch, epochs=epochs, batch_size=batch_size, lr=lr,
                    augment=augment, lr_decay=lr_decay, weight_decay=weight_decay, limit=limit)
    x, y = data.load(dataset, "train", data_dir=data_dir)
    xt, yt = data.load(dataset, "test", data_dir=data_dir)
    if split:
        x, y = data.subset(x, y, split, side)
        if split.startswith("classes:"):
            xt, yt = data.subset(xt, yt, split)
    x, y = x[:limit], y[:limit]
    k = _num_classes(dataset, x, y, xt, yt)
    cfg["batch_size"] = min(cfg["batch_size"], len(x))
    module = create(model_arch, k, **model_kwargs)
    teacher = defenses.load_teacher(spec, x.shape[1:], k)
    steps = len(x) // cfg["batch_size"]  # per epoch; the last partial batch is dropped
    schedule = optax.exponential_decay(cfg["lr"], steps, cfg["lr_decay"], staircase=True)
    tx = optax.adamw(schedule, weight_decay=weight_decay)
    ckpt = {"train": init_state(init_variables(module, x.shape[1:], seed), tx),
            "epoch": jnp.zeros((), jnp.int32),
            "rng": jnp.array(jax.random.key_data(jax.random.key(seed)))}
    dp_cfg = dp_meta = None
    if dp is not None:
        from jaxinv.training import dp as DP

        if ckpt["train"].rest:
            raise ValueError(f"fit: DP-SGD needs per-example gradients; {arch!r} keeps state "
                             "across examples (batch norm): choose another arch")
        dp_cfg, dp_meta = DP.setting(dp, len(x), cfg["batch_size"], cfg["epochs"])
    config = json.loads(json.dumps({  # tuples -> lists, as read back
        "dataset": dataset, "arch": arch, "arch_kwargs": arch_kwargs, "seed": seed,
        "split": split, "side": side if split else None,
        **{c: cfg[c] for c in ("batch_size", "lr", "lr_decay", "weight_decay", "augment",
                               "limit")}, "dp": dp_meta, "defense": spec}, allow_nan=False))
    workdir = Path(workdir).absolute()
    mngr, ckpt = _open(workdir, config, ckpt, f"{dataset}/{arch}" if progress else None)
    tic = time.perf_counter()
    loss_at = defenses.loss_fn(module, spec, augment=cfg["augment"],
                               total_steps=cfg["epochs"] * steps,
                               teacher=None if teacher is None else teacher.module)
    aux = None if teacher is None else jax.device_put(teacher.variables)  # once, not per step
    step_fn = (_step_fn(loss_at, tx, aux) if dp_cfg is None else
               _dp_step_fn(loss_at, tx, dp_cfg, len(x), aux))
    state, history = _epochs(step_fn, ckpt, mngr, x, y,
                             cfg["epochs"], steps, cfg["batch_size"], seed,
                             f"train {dataset}/{arch}" if progress else None)
    meta = {"arch": model_arch, "arch_kwargs": model_kwargs, "dataset": dataset,
            "num_classes": k,
            "input_shape": list(x.shape[1:]), "epochs": max(cfg["epochs"], int(ckpt["epoch"])),
            **{c: config[c] for c in ("lr", "lr_decay", "batch_size", "weight_decay",
                                      "augment", "seed", "limit", "split", "side", "dp",
                                      "defense")},
            "train_seconds": round(time.perf_counter() - tic, 2)}  # this call's epochs
    meta["last_epoch_loss_acc"] = [round(float(v), 5) for v in history[-1]] if history else None
    return _save(workdir, Classifier(module, variables_of(state), meta), (x, y), (xt, yt))


def _settings(dataset: str, arch: str, **given: Any) -> dict[str, Any]:
    """``fit``'s settings: given values, else ``DEFAULTS[(dataset, arch)]``, else ``DEFAULT``."""
    cfg = {**DEFAULT, **DEFAULTS.get((dataset, arch), {})}
    cfg.update({k: v for k, v in given.items() if v is not None})
    cfg.setdefault("limit", None)
    for name, want in (("epochs", 1), ("batch_size", 1), ("augment", 0), ("weight_decay", 0)):
        if cfg[name] < want:
            raise ValueError(f"fit: {name} must be >= {want}, got {cfg[name]!r}")
    if cfg["lr"] <= 0 or not 0 < cfg["lr_decay"] <= 1:
        raise ValueError(f"fit: need lr > 0 and 0 < lr_decay <= 1, got {cfg['lr']!r}, "
                         f"{cfg['lr_decay']!r}")
    if cfg["limit"] is not None and cfg["limit"] < 1:
        raise ValueError(f"fit: limit must be >= 1 or None, got {cfg['limit']!r}")
    return cfg


def _num_classes(dataset: str, x: np.ndarray, y: np.ndarray, xt: np.ndarray,
                 yt: np.ndarray) -> int:
    """Number of classes of ``dataset`` (``max label + 1``) after checking that its train
    and test splits agree (``data.load`` already checked each split on its own)."""
    for split, xs, ys in (("train", x, y), ("test", xt, yt)):
        if len(xs) == 0 or len(xs) != len(ys):
            raise ValueError(f"fit: dataset {dataset!r} split {split!r} has {len(xs)} images and "
                             f"{len(ys)} labels; need at least one image and one label each")
    if x.shape[1:] != xt.shape[1:]:
        raise ValueError(f"fit: dataset {dataset!r} has train images {list(x.shape[1:])} but "
                         f"test images {list(xt.shape[1:])}; both splits need one image shape")
    lo, hi = int(min(y.min(), yt.min())), int(max(y.max(), yt.max()))
    if lo < 0 or hi >= data.MAX_CLASSES:
        raise ValueError(f"fit: dataset {dataset!r} labels must be integers in "
                         f"[0, {data.MAX_CLASSES}), got min {lo}, max {hi}")
    return hi + 1


def _open(workdir: Path, config: dict, ckpt: dict, name: str | None,
          keys: tuple[str, ...] = _CONFIG_KEYS):
    """The checkpoint manager of ``workdir`` and the checkpoint to start from; a checkpoint
    saved with other ``config[keys]`` is refused."""
    import orbax.checkpoint as ocp

    cfg_path = workdir / "train_config.json"
    mngr = ocp.CheckpointManager(workdir / "train_ckpt", options=ocp.CheckpointManagerOptions(
        max_to_keep=2, enable_async_checkpointing=False))
    start = mngr.latest_step() or 0
    # committed to one device, as the loop's outputs will be: else the second step compiles
    # the loop's step again (jit's cache tells committed from uncommitted arrays)
    commit = partial(jax.device_put, device=jax.local_devices()[0])
    if not start:
        workdir.mkdir(parents=True, exist_ok=True)
        cfg_path.write_text(json.dumps(config, indent=1, allow_nan=False))
        return mngr, commit(ckpt)
    saved = json.loads(cfg_path.read_text()) if cfg_path.exists() else config
    diff = {c: (saved.get(c), config[c]) for c in keys if saved.get(c) != config[c]}
    if diff:
        raise ValueError(f"{workdir} holds a checkpoint trained with other settings "
                         f"(saved, requested): {diff}; use a new workdir or the same settings")
    for step in sorted(mngr.all_steps(), reverse=True):
        try:
            restored = mngr.restore(step, args=ocp.args.StandardRestore(ckpt))
        except Exception as e:  # a damaged checkpoint: fall back to the previous epoch
            print(f"warning: training checkpoint {workdir / 'train_ckpt' / str(step)} is "
                  f"damaged ({type(e).__name__}: {str(e).splitlines()[0][:160]}); trying an "
                  "older one", file=sys.stderr)
            aside = workdir / "damaged"
            aside.mkdir(exist_ok=True)
            (workdir / "train_ckpt" / str(step)).rename(aside / f"{step}-{time.time_ns()}")
            mngr.reload()
            continue
        if name:
            print(f"train: resuming {name} from step {step} ({workdir})")
        return mngr, commit(restored)
    raise ValueError(f"no intact training checkpoint in {workdir / 'train_ckpt'}; delete "
                     f"{workdir} to train afresh")


def _epochs(step, ckpt, mngr, x, y, epochs, steps, batch_size, seed, desc):
    """Train from ``ckpt["epoch"]`` to ``epochs``; checkpoint every epoch."""
    import orbax.checkpoint as ocp

    start, state, key = int(ckpt["epoch"]), ckpt["train"], jax.random.key(seed)
    xd, yd = jax.device_put(x), jax.device_put(y)
    bar = None
    if desc and start < epochs:
        from tqdm.auto import tqdm
        bar = tqdm(total=(epochs - start) * steps, desc=desc, unit="step", dynamic_ncols=True)
    history, tic = [], time.perf_counter()
    for epoch in range(start, epochs):
        ekey = jax.random.fold_in(key, epoch)
        perm = _epoch_perm(ekey, len(x), steps, batch_size)
        sums = jnp.zeros(2, jnp.float32)
        for i in range(steps):  # dispatched asynchronously: no host sync per step
            state, sums = step(state, sums, xd, yd, perm, i, ekey)
            if bar is not None and ((i + 1) % PROGRESS_EVERY == 0 or i + 1 == steps):
                loss, acc = np.asarray(sums) / (i + 1)
                bar.set_postfix(epoch=epoch + 1, loss=f"{loss:.4f}", acc=f"{acc:.4f}")
                bar.update(i + 1 - bar.n + (epoch - start) * steps)
        ckpt = {**ckpt, "train": state, "epoch": jnp.asarray(epoch + 1, jnp.int32)}
        mngr.save(epoch + 1, args=ocp.args.StandardSave(ckpt))
        history.append(np.asarray(sums) / steps)
        _add_seconds(Path(mngr.directory).parent, time.perf_counter() - tic)
        tic = time.perf_counter()
    if bar is not None:
        bar.close()
    mngr.wait_until_finished()
    mngr.close()
    return state, history


def _add_seconds(workdir: Path, seconds: float) -> float:
    """Add ``seconds`` to the training time kept in ``workdir/train_timing.json``."""
    path = workdir / "train_timing.json"
    try:
        total = json.loads(path.read_text())["train_seconds_total"] if path.exists() else 0.0
    except (json.JSONDecodeError, KeyError):
        total = 0.0
    path.write_text(json.dumps({"train_seconds_total": total + seconds}, allow_nan=False))
    return total + seconds


def _save(workdir: Path, clf: Classifier, train: tuple, test: tuple) -> Classifier:
    """Add accuracies, size and versions to ``clf.meta``; write ``variables`` and
    ``model.json``."""
    import orbax.checkpoint as ocp

    meta = clf.meta
    meta["num_params"] = int(sum(p.size for p in jax.tree.leaves(clf.variables["params"])))
    meta["train_accuracy"] = accuracy(clf, *train)
    meta["test_accuracy"] = accuracy(clf, *test)
    meta["versions"] = results.versions()
    meta["train_seconds_total"] = round(_add_seconds(workdir, 0.0), 2)  # every call's epochs
    with ocp.StandardCheckpointer() as ckptr:
        ckptr.save(workdir / "variables", clf.variables, force=True)
    (workdir / "model.json").write_text(json.dumps(meta, indent=1, allow_nan=False))
    return clf


def load_classifier(workdir: str | Path) -> Classifier:
    """Load a model saved by :func:`fit` (``model.json`` + orbax ``variables``).

    Example:
        >>> import tempfile
        >>> d = tempfile.mkdtemp()
        >>> _ = fit("digits", "softmax", d, epochs=1, progress=False)
        >>> load_classifier(d).meta["arch"]
        'softmax'

    """
    import orbax.checkpoint as ocp

    workdir = Path(workdir).absolute()
    meta_path = workdir / "model.json"
    if not meta_path.exists():
        raise FileNotFoundError(
            f"no trained model in {workdir} (missing {meta_path.name}); create one with "
            f"`jaxinv train --dataset D --arch A --workdir {workdir}` or "
            "jaxinv.training.classifier.fit(dataset, arch, workdir)")
    retrain = (f"retrain with `jaxinv train --dataset D --arch A --workdir {workdir}` or "
               f"restore the files")
    meta = _read_meta(meta_path, retrain)
    retrain = retrain.replace("--dataset D --arch A", f"--dataset {meta['dataset']} --arch "
                                                      f"{meta['arch']}")
    try:
        module = create(meta["arch"], meta["num_classes"], **meta.get("arch_kwargs", {}))
        abstract = jax.eval_shape(lambda: init_variables(module, meta["input_shape"]))
    except (ValueError, TypeError) as e:
        raise ValueError(f"{meta_path}: damaged model file: cannot build the model it "
                         f"describes ({_first_line(e)}); {retrain}") from None
    var_path = workdir / "variables"
    if not var_path.is_dir():
        raise FileNotFoundError(f"{var_path}: missing (the weights of the model described in "
                                f"{meta_path.name}); {retrain}")
    try:
        with ocp.StandardCheckpointer() as ckptr:
            variables = ckptr.restore(var_path, abstract)
    except MemoryError:
        raise
    except Exception as e:  # orbax/tensorstore raise many types, with messages of many lines
        raise ValueError(f"{var_path}: damaged or incomplete checkpoint of the weights "
                         f"({type(e).__name__}: {_first_line(e)}); {retrain}") from None
    return Classifier(module, variables, meta)


def _first_line(e: BaseException, n: int = 200) -> str:
    lines = str(e).strip().splitlines()
    return (lines[0] if lines else "")[:n]


def _read_meta(meta_path: Path, retrain: str) -> dict:
    """``model.json`` as a dict with the keys :func:`load_classifier` needs."""
    damaged = f"{meta_path}: damaged model file"
    try:
        text = meta_path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"{damaged} (unreadable: {_first_line(e)}); {retrain}") from None
    if not text.strip():
        raise ValueError(f"{damaged} (empty); {retrain}")
    try:
        meta = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{damaged} (invalid JSON: {e}); {retrain}") from None
    if not isinstance(meta, dict):
        raise ValueError(f"{damaged} (holds a JSON {type(meta).__name__}, not an object); "
                         f"{retrain}")
    missing = [k for k in ("arch", "num_classes", "input_shape", "dataset") if k not in meta]
    if missing:
        raise ValueError(f"{damaged} (missing {', '.join(missing)}); {retrain}")
    shape, k = meta["input_shape"], meta["num_classes"]
    if (not isinstance(shape, list) or len(shape) != 3
            or not all(isinstance(d, int) and d > 0 for d in shape)):
        raise ValueError(f"{damaged} (input_shape must be [H, W, C] of positive integers, got "
                         f"{shape!r}); {retrain}")
    if not isinstance(k, int) or not 1 <= k <= data.MAX_CLASSES:
        raise ValueError(f"{damaged} (num_classes must be an integer in [1, "
                         f"{data.MAX_CLASSES}], got {k!r}); {retrain}")
    if not isinstance(meta.get("arch_kwargs", {}), dict):
        raise ValueError(f"{damaged} (arch_kwargs must be an object, got "
                         f"{meta['arch_kwargs']!r}); {retrain}")
    return meta


__all__ = ["DEFAULT", "DEFAULTS", "accuracy", "fit", "load_classifier"]
