"""Train classifiers (targets and evaluation models) with optax; orbax checkpoints, resume.

``fit`` runs one jitted ``scan`` per epoch over device-resident data (no host sync
per step), checkpoints every epoch and resumes from the latest checkpoint.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxinv import data
from jaxinv.models import Classifier, create, init_variables

# (dataset, arch) -> fit() defaults; anything else uses DEFAULT.
DEFAULT = {"epochs": 20, "lr": 1e-3, "batch_size": 128}
DEFAULTS: dict[tuple[str, str], dict[str, Any]] = {
    ("digits", "cnn"): {"epochs": 25},
    ("digits", "mlp"): {"epochs": 60},
    ("digits", "softmax"): {"epochs": 100, "lr": 1e-2},
    ("mnist", "cnn"): {"epochs": 6},
    ("mnist", "resnet"): {"epochs": 3},
    ("mnist", "vgg"): {"epochs": 3},
    ("mnist", "mlp"): {"epochs": 10},
    ("orl_faces", "cnn"): {"epochs": 40, "batch_size": 32},
    ("orl_faces", "softmax"): {"epochs": 200, "lr": 1e-3, "batch_size": 32},
    ("orl_faces", "mlp"): {"epochs": 150, "lr": 1e-3, "batch_size": 32},
}


def _loss(module, variables, x, y, train):
    mutable = ["batch_stats"] if "batch_stats" in variables and train else False
    out = module.apply(variables, x, train=train, mutable=mutable)
    (logits, _), new = out if mutable else (out, {})
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
    return loss, (jnp.mean(jnp.argmax(logits, -1) == y), new)


def _epoch_fn(module, tx, batch_size):
    def epoch(state, key, x, y):
        n = (len(x) // batch_size) * batch_size
        perm = jax.random.permutation(key, len(x))[:n].reshape(-1, batch_size)

        def step(state, idx):
            params, rest, opt_state = state
            grad_fn = jax.value_and_grad(
                lambda p: _loss(module, {"params": p, **rest}, x[idx], y[idx], True),
                has_aux=True)
            (loss, (acc, new)), g = grad_fn(params)
            updates, opt_state = tx.update(g, opt_state, params)
            return (optax.apply_updates(params, updates), {**rest, **new}, opt_state), (loss, acc)

        state, (loss, acc) = jax.lax.scan(step, state, perm)
        return state, loss.mean(), acc.mean()

    return jax.jit(epoch, donate_argnums=0)


def accuracy(clf: Classifier, x: np.ndarray, y: np.ndarray) -> float:
    """Top-1 accuracy of ``clf`` on ``(x, y)``.

    Example:
        >>> accuracy(clf, *jaxinv.data.load("digits", "test"))
        0.98
    """
    return float(np.mean(np.argmax(clf.logits(x), -1) == y))


def fit(dataset: str, arch: str, workdir: str | Path, *, epochs: int | None = None,
        batch_size: int | None = None, lr: float | None = None, weight_decay: float = 1e-4,
        seed: int = 0, arch_kwargs: dict | None = None, progress: bool = True) -> Classifier:
    """Train ``arch`` on ``dataset``'s train split; save to ``workdir``; return the model.

    Checkpoints every epoch (orbax) and resumes from the latest one, so calling
    again with more epochs continues training. Writes ``workdir/model.json``.

    Example:
        >>> clf = fit("digits", "cnn", "runs/digits_cnn")
        >>> clf.meta["test_accuracy"] > 0.97
        True
    """
    import orbax.checkpoint as ocp

    cfg = {**DEFAULT, **DEFAULTS.get((dataset, arch), {})}
    epochs = cfg["epochs"] if epochs is None else epochs
    batch_size = batch_size or cfg["batch_size"]
    lr = lr or cfg["lr"]
    if epochs < 1 or batch_size < 1 or lr <= 0:
        raise ValueError(f"need epochs >= 1, batch_size >= 1, lr > 0; got {epochs}, "
                         f"{batch_size}, {lr}")
    x, y = data.load(dataset, "train")
    xt, yt = data.load(dataset, "test")
    k = int(max(y.max(), yt.max()) + 1)
    batch_size = min(batch_size, len(x))
    module = create(arch, k, **(arch_kwargs or {}))
    variables = init_variables(module, x.shape[1:], seed)
    params, rest = variables["params"], {k_: v for k_, v in variables.items() if k_ != "params"}
    tx = optax.adamw(lr, weight_decay=weight_decay)
    state = (params, rest, tx.init(params))
    workdir = Path(workdir).absolute()
    mngr = ocp.CheckpointManager(workdir / "train_ckpt", options=ocp.CheckpointManagerOptions(
        max_to_keep=1, enable_async_checkpointing=False))
    start = 0
    if mngr.latest_step() is not None:
        start = mngr.latest_step()
        state = mngr.restore(start, args=ocp.args.StandardRestore(state))
        print(f"train: resuming {arch} on {dataset} from epoch {start} ({workdir})")
    epoch_fn = _epoch_fn(module, tx, batch_size)
    xd, yd = jax.device_put(x), jax.device_put(y)
    key = jax.random.key(seed)
    tic = time.perf_counter()
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=epochs, initial=min(start, epochs), desc=f"train {dataset}/{arch}",
                   unit="epoch", dynamic_ncols=True)
    loss = acc = float("nan")
    for epoch in range(start, epochs):
        state, loss, acc = epoch_fn(state, jax.random.fold_in(key, epoch), xd, yd)
        mngr.save(epoch + 1, args=ocp.args.StandardSave(state))
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{float(loss):.4f}", acc=f"{float(acc):.4f}")
    if bar is not None:
        bar.close()
    mngr.wait_until_finished()
    params, rest, _ = state
    variables = {"params": params, **rest}
    meta = {"arch": arch, "arch_kwargs": arch_kwargs or {}, "dataset": dataset, "num_classes": k,
            "input_shape": list(x.shape[1:]), "epochs": max(epochs, start), "lr": lr,
            "batch_size": batch_size, "weight_decay": weight_decay, "seed": seed}
    clf = Classifier(module, variables, meta)
    meta["train_accuracy"] = accuracy(clf, x, y)
    meta["test_accuracy"] = accuracy(clf, xt, yt)
    meta["train_seconds"] = round(time.perf_counter() - tic, 2)
    meta["jax"] = jax.__version__
    ckptr = ocp.StandardCheckpointer()
    target = workdir / "variables"
    if target.exists():
        import shutil
        shutil.rmtree(target)
    ckptr.save(target, variables)
    ckptr.wait_until_finished()
    (workdir / "model.json").write_text(json.dumps(meta, indent=1))
    return clf


def load_classifier(workdir: str | Path) -> Classifier:
    """Load a model saved by :func:`fit` (``model.json`` + orbax ``variables``).

    Example:
        >>> clf = load_classifier("runs/demo/target")
        >>> clf.meta["test_accuracy"]
    """
    import orbax.checkpoint as ocp

    workdir = Path(workdir).absolute()
    meta_path = workdir / "model.json"
    if not meta_path.exists():
        raise FileNotFoundError(
            f"no trained model in {workdir} (missing model.json); create one with "
            f"`jaxinv train --dataset D --arch A --workdir {workdir}`")
    meta = json.loads(meta_path.read_text())
    module = create(meta["arch"], meta["num_classes"], **meta.get("arch_kwargs", {}))
    abstract = jax.eval_shape(lambda: init_variables(module, meta["input_shape"]))
    variables = ocp.StandardCheckpointer().restore(workdir / "variables", abstract)
    return Classifier(module, variables, meta)
