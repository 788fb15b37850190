"""``fit_many``: M classifiers trained at once by ``vmap`` over parameters, seeds and
per-model data masks (shadow models for membership inference, seed ensembles).

Model ``m`` starts from ``init_variables(module, shape, seeds[m])`` and, every epoch,
visits its own examples (``masks[m]``) in an order drawn from ``key(seeds[m])``, in
``ceil(|mask| / batch)`` batches (the last one partial); batches are padded with weight-0
examples and an all-padding batch leaves a model unchanged, so each model sees only its
own data and the result equals training the models one by one with the same seeds and
masks (``tests/test_training.py``), up to float reassociation inside ``vmap``.
"""

from __future__ import annotations

import json
import time
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxinv.core import rng
from jaxinv.core.compiler import jit
from jaxinv.models import init_variables
from jaxinv.training import defenses
from jaxinv.training.step import init_state, make_step, variables_of


class ManyResult(NamedTuple):
    """``variables`` stacked over models ``[M, ...]``; ``history [epochs, M, 2]`` holds
    each epoch's mean (loss, accuracy); ``seconds`` the training time of this call; ``dp``
    the DP-SGD guarantee every model has (``None`` without DP)."""

    variables: dict
    history: np.ndarray
    seconds: float
    dp: dict | None = None


@partial(jax.jit, static_argnums=(3, 4))
def _epoch_order(keys: jax.Array, masks: jax.Array, epoch: jax.Array, steps: int,
                 batch: int) -> tuple[jax.Array, jax.Array]:
    """Per model: its examples first, in random order; ``[M, steps, batch]`` indices and
    0/1 weights."""

    def one(key, mask):
        u = rng.uniform(jax.random.fold_in(key, epoch), mask.shape)
        order = jnp.argsort(jnp.where(mask, u, 2.0 + u))
        order = jnp.resize(order, (steps * batch,))  # wraps round: the tail is padding
        w = mask[order] & (jnp.arange(steps * batch) < mask.shape[0])
        return order.reshape(steps, batch), w.reshape(steps, batch)

    return jax.vmap(one)(keys, masks)


def _check(x, y, masks, seeds) -> tuple[np.ndarray, list[int]]:
    if x.ndim != 4 or len(x) != len(y) or len(x) == 0:
        raise ValueError(f"fit_many: expected images [N, H, W, C] and labels [N], got "
                         f"{x.shape} and {y.shape}")
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise ValueError("fit_many: seeds must name at least one model")
    masks = np.ones((len(seeds), len(x)), bool) if masks is None else np.asarray(masks, bool)
    if masks.shape != (len(seeds), len(x)):
        raise ValueError(f"fit_many: masks must be [models={len(seeds)}, N={len(x)}] bools, "
                         f"got {masks.shape}")
    if not masks.sum(1).min() > 0:
        raise ValueError("fit_many: every model needs at least one example in its mask")
    return masks, seeds


def fit_many(module: Any, x: np.ndarray, y: np.ndarray, *, seeds: list[int],
             masks: np.ndarray | None = None, epochs: int = 10, batch_size: int = 128,
             lr: float = 1e-3, weight_decay: float = 1e-4, augment: int = 0,
             workdir: str | Path | None = None, progress: bool = True,
             dp: dict | None = None, defense: dict | str | None = None,
             teachers: Any = None) -> ManyResult:
    """Train ``len(seeds)`` copies of ``module`` at once, model ``m`` on ``x[masks[m]]``.

    ``dp={"epsilon", "delta", "clip", "accountant"}`` (as :func:`jaxinv.training.fit`)
    trains every model with DP-SGD: each step, model ``m`` draws a Poisson batch from its
    own examples at rate ``batch_size / |masks[m]|``; the noise is calibrated for the
    largest such rate over ``epochs * ceil(max |masks[m]| / batch_size)`` steps, so every
    model spends at most ``epsilon`` (recorded in ``ManyResult.dp``).

    ``defense`` (:mod:`jaxinv.training.defenses`: ``negls``, ``mid``, ``bido``; for ``mid``
    pass the ``VIB`` module of :func:`~jaxinv.training.defenses.arch_for`) trains every model
    with that loss; ``distill`` needs ``teachers``, one per model: variables of ``module``
    stacked on axis 0 (``ManyResult.variables`` of a first ``fit_many``), model ``m``
    learning from teacher ``m``; the defense's ``teacher`` path is not read.

    Checkpoints every epoch with orbax in ``workdir`` and resumes from it (a directory
    of other settings is refused).

    Example:
        >>> from jaxinv import data
        >>> from jaxinv.models import create
        >>> x, y = data.load("digits", "train")
        >>> res = fit_many(create("softmax", 10), x[:200], y[:200], seeds=[0, 1], epochs=1,
        ...                progress=False)
        >>> res.history.shape
        (1, 2, 2)
    """
    import orbax.checkpoint as ocp

    x, y = np.asarray(x, np.float32), np.asarray(y, np.int32)
    masks, seeds = _check(x, y, masks, seeds)
    batch_size = int(min(batch_size, masks.sum(1).max()))
    steps = -(-int(masks.sum(1).max()) // batch_size)  # the largest mask's batches
    tx = optax.adamw(lr, weight_decay=weight_decay)
    states = jax.vmap(lambda v: init_state(v, tx))(jax.tree.map(
        lambda *a: jnp.stack(a), *[init_variables(module, x.shape[1:], s) for s in seeds]))
    keys = jax.vmap(jax.random.key)(jnp.asarray(seeds, jnp.uint32))
    spec = defenses.parse(defense)
    distill = bool(spec) and spec["name"] == "distill"
    if distill != (teachers is not None):
        raise ValueError("fit_many: defense distill needs teachers= (one per model), and "
                         "teachers= needs defense distill")
    if distill and dp is not None:
        raise ValueError("fit_many: distillation with DP-SGD is not supported")
    if dp is not None:
        defenses.check_dp(spec)
    loss_at = defenses.loss_fn(module, spec, augment=augment, total_steps=epochs * steps,
                               teacher=module if distill else None)
    with_w = spec is not None and spec["name"] == "bido"  # a batch loss: mask the padding

    def inner(state, batch, w, k, teacher=None):
        batch = (*batch, w) if with_w else batch
        return make_step(loss_at(state.step, teacher), tx)(state, batch, w, k)

    dp_cfg, dp_meta = (None, None) if dp is None else _dp_setting(dp, masks, batch_size,
                                                                  epochs * steps)
    if dp_cfg is not None and states.rest:
        raise ValueError("fit_many: DP-SGD needs per-example gradients; this module keeps "
                         "state across examples (batch norm): choose another arch")

    @partial(jit, donate_argnums=(0,))
    def step(states, xd, yd, idx, w, i, epoch):
        ks = jax.vmap(lambda k: jax.random.fold_in(jax.random.fold_in(k, epoch), i))(keys)
        if distill:
            return jax.vmap(inner)(states, (xd[idx], yd[idx]), w, ks, teachers)
        if dp_cfg is None:
            return jax.vmap(inner)(states, (xd[idx], yd[idx]), w, ks)
        one = _dp_step(loss_at, tx, dp_cfg, xd, yd, batch_size)
        return jax.vmap(one)(states, jnp.asarray(masks), ks)

    config = {"module": repr(module), "seeds": seeds, "masks": _digest(masks),
              "data": _digest(x) + _digest(y), "batch_size": batch_size, "lr": lr,
              "weight_decay": weight_decay, "augment": augment,
              **({"dp": dp_meta} if dp_meta else {}), **({"defense": spec} if spec else {}),
              **({"teachers": _digest(np.concatenate([np.ravel(a) for a in
                                                      jax.tree.leaves(teachers)]))}
                 if distill else {})}
    mngr, start, history = _resume(workdir, config, states, ocp)
    if start:
        item = mngr.restore(start, args=ocp.args.StandardRestore(
            {"states": states, "history": np.zeros((start, len(seeds), 2), np.float32)}))
        states, history = item["states"], list(np.asarray(item["history"]))
    bar = _bar(progress, (epochs - start) * steps, len(seeds))
    xd, yd, md = jax.device_put(x), jax.device_put(y), jnp.asarray(masks)
    tic = time.perf_counter()
    for epoch in range(start, epochs):
        idx, w = _epoch_order(keys, md, jnp.int32(epoch), steps, batch_size)
        sums = jnp.zeros((len(seeds), 3), jnp.float32)
        for i in range(steps):  # dispatched asynchronously
            states, m = step(states, xd, yd, idx[:, i], w[:, i], jnp.int32(i), jnp.int32(epoch))
            sums = sums + jnp.stack([m["loss"], m["acc"], jnp.ones_like(m["acc"])], -1
                                    ) * m["live"][:, None]
            if bar is not None:
                bar.update(1)
        sums = np.asarray(sums)
        history.append(sums[:, :2] / np.maximum(sums[:, 2:], 1))
        if mngr is not None:
            mngr.save(epoch + 1, args=ocp.args.StandardSave(
                {"states": states, "history": np.stack(history)}))
            mngr.wait_until_finished()
    if bar is not None:
        bar.close()
    hist = np.stack(history) if history else np.zeros((0, len(seeds), 2), np.float32)
    return ManyResult(variables_of(states), hist, time.perf_counter() - tic, dp_meta)


def _dp_setting(dp: dict, masks: np.ndarray, batch_size: int, steps: int):
    """Every model's DP-SGD setting: the noise for the largest sampling rate (the smallest
    mask) over ``steps`` steps; batch slots for the largest binomial quantile."""
    from jaxinv.training import dp as DP

    n = masks.sum(1)
    cfg, meta = DP.setting(dp, int(n.min()), batch_size, 1, steps=steps)
    slots = max(DP.max_batch(int(m), batch_size / int(m)) for m in np.unique(n))
    meta["max_batch"] = slots
    return cfg._replace(max_batch=slots), meta


def _dp_step(loss_at, tx, cfg, xd, yd, batch_size: int):
    """One model's DP-SGD step ``(state, mask, key) -> (state, metrics)`` on a Poisson
    batch of its own examples (rate ``batch_size / |mask|``); ``loss_at(step)`` is the
    per-example loss."""
    from jaxinv.training import dp as DP

    def one(state, mask, key):
        loss = loss_at(state.step)

        def per_example(params, ex):
            x, y, k = ex
            return loss(params, {}, (x[None], y[None]), k)[0][0]

        ks, kn, ka = jax.random.split(key, 3)
        take = mask & (rng.uniform(ks, mask.shape) < batch_size / mask.sum())
        (idx,) = jnp.nonzero(take, size=cfg.max_batch, fill_value=0)
        w = (jnp.arange(cfg.max_batch) < take.sum()).astype(jnp.float32)
        batch = (xd[idx], yd[idx], jax.random.split(ka, cfg.max_batch))
        g, _ = DP.private_grad(per_example, state.params, batch, w, kn, clip=cfg.clip,
                               noise_multiplier=cfg.noise_multiplier,
                               expected_batch=float(batch_size), microbatch=cfg.microbatch)
        updates, opt_state = tx.update(g, state.opt_state, state.params)
        new = state._replace(params=optax.apply_updates(state.params, updates),
                             opt_state=opt_state, step=state.step + 1)
        losses, (m, _) = loss(state.params, {}, (xd[idx], yd[idx]), ka)
        live = jnp.maximum(w.sum(), 1.0)
        return new, {"loss": (losses * w).sum() / live, "acc": (m["acc"] * w).sum() / live,
                     "live": jnp.float32(1.0)}

    return one


def _digest(a: np.ndarray) -> str:
    import hashlib

    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()[:12]


def _resume(workdir, config, states, ocp):
    if workdir is None:
        return None, 0, []
    workdir = Path(workdir).absolute()
    workdir.mkdir(parents=True, exist_ok=True)
    cfg = workdir / "fit_many_config.json"
    config = json.loads(json.dumps(config, allow_nan=False))
    if cfg.exists() and json.loads(cfg.read_text()) != config:
        raise ValueError(f"{workdir} holds models trained with other settings; use a new "
                         "workdir or the same settings")
    cfg.write_text(json.dumps(config, indent=1, allow_nan=False))
    mngr = ocp.CheckpointManager(workdir / "ckpt", options=ocp.CheckpointManagerOptions(
        max_to_keep=2, enable_async_checkpointing=False))
    return mngr, mngr.latest_step() or 0, []


def _bar(progress: bool, total: int, models: int):
    if not progress or total <= 0:
        return None
    from tqdm.auto import tqdm
    return tqdm(total=total, desc=f"fit_many ({models} models)", unit="step",
                dynamic_ncols=True)


def unstack(variables: dict, m: int) -> dict:
    """Model ``m``'s variables out of :class:`ManyResult` ``.variables``.

    Example:
        >>> unstack({"params": {"w": jnp.zeros((2, 3))}}, 1)["params"]["w"].shape
        (3,)
    """
    return jax.tree.map(lambda a: a[m], variables)


__all__ = ["ManyResult", "fit_many", "unstack"]
