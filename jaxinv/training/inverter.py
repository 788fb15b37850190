"""Train conditional generators against a frozen classifier (network inversion, TLDR).

``train_inverter(target, workdir, weights=[w1, w2, ...])`` trains one
:class:`~jaxinv.models.conditional.ConditionalGenerator` per weight set (or per seed) at
once: the pure step built by :func:`jaxinv.training.make_step` is ``vmap``-ed over the
members' states, loss weights and keys, and one jitted call advances every member (an
ablation of the loss terms is one training run). Each step draws a batch of labels
(balanced over the classes, shuffled), latents and conditions, and minimises
:func:`jaxinv.attacks.inversion_losses.inversion_losses` with Adam (third-party TLDR
defaults, SPECS 2c, unverified: weight decay 1e-6, z in R^100; lr 1e-3, not their 5e-4,
which learned too slowly for CPU budgets). The target's
variables are an argument of the step, never closed over. Orbax checkpoints, resume,
progress; ``load_inverter`` reads the result.

Example (an untrained inverter; :func:`train_inverter` shows training):
    >>> inv = random_inverter((8, 8, 1), 10, width=4)
    >>> generate(inv, jnp.array([3, 7]), jax.random.key(0)).shape
    (2, 8, 8, 1)
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxinv.attacks.inversion_losses import PRESETS, TERMS, Weights, inversion_losses
from jaxinv.core.compiler import init_once
from jaxinv.evaluation import results
from jaxinv.models import Classifier
from jaxinv.models.conditional import (
    ConditionalGenerator,
    check_generator_options,
    conditions,
)
from jaxinv.models.gan import Z_DIM
from jaxinv.training.artifacts import close_loop, load_artifact, save_artifact, save_checkpoint
from jaxinv.training.classifier import _add_seconds, _open
from jaxinv.training.step import TrainState, init_state, make_step, variables_of

DEFAULTS: dict[str, Any] = {"conditioning": "label", "batch_size": 64, "lr": 1e-3,
                            "weight_decay": 1e-6, "sigma": 0.1, "tv_squared": True,
                            "pixel_reduce": "mean",
                            "grad_mode": "per_example", "grad_examples": 8, "z_dim": Z_DIM,
                            "width": 32, "dropout": 0.3, "output": "linear",
                            "upsample": "transpose"}
PROGRESS_EVERY = 20  # steps between progress-bar updates (each one a host sync)


class Inverter(NamedTuple):
    """Trained conditional generators: ``module``, ``variables`` stacked over members
    ``[M, ...]`` and ``meta`` (settings, per-member ``weights`` and ``seeds``, timing).

    Example:
        >>> inv = random_inverter((8, 8, 1), 10, width=4)
        >>> inv.members, sorted(inv.member(0))
        (1, ['batch_stats', 'params'])
    """

    module: ConditionalGenerator
    variables: Any
    meta: dict

    @property
    def members(self) -> int:
        """Number of generators trained together."""
        return int(jax.tree.leaves(self.variables)[0].shape[0])

    def member(self, m: int) -> Any:
        """The variables of member ``m``."""
        return jax.tree.map(lambda a: a[m], self.variables)


def random_inverter(out_shape: Sequence[int], num_classes: int, members: int = 1,
                    **options: Any) -> Inverter:
    """Untrained generators (``members`` of them, seeds 0..M-1): a baseline and a template.

    Example:
        >>> random_inverter((8, 8, 1), 10, members=3, width=4).members
        3
    """
    cfg = {**DEFAULTS, **options}
    module = _module(out_shape, num_classes, cfg)
    keys = jnp.arange(members)
    k = num_classes
    init = jax.vmap(lambda s: module.init(jax.random.key(s), jnp.zeros((1, cfg["z_dim"])),
                                          jnp.zeros((1, k)), jnp.zeros((1, k, k))))
    meta = {**cfg, "out_shape": list(out_shape), "num_classes": num_classes,
            "seeds": list(range(members)), "weights": [Weights()._asdict()] * members}
    return Inverter(module, init_once(init, keys), meta)


def _module(out_shape, num_classes, cfg) -> ConditionalGenerator:
    check_generator_options(out_shape, cfg["conditioning"], cfg["output"], cfg["upsample"])
    return ConditionalGenerator(tuple(out_shape), num_classes, cfg["conditioning"],
                                cfg["width"], cfg["dropout"], cfg["output"], cfg["upsample"])


def generate(inverter: Inverter, labels: Any, key: jax.Array, member: int = 0,
             clip: bool = True) -> np.ndarray:
    """Images ``G(z, c)`` of member ``member`` for ``labels`` (eval mode: BatchNorm's running
    statistics, no dropout); clipped to [0, 1] unless ``clip=False``.

    Example:
        >>> inv = random_inverter((8, 8, 1), 10, width=4)
        >>> generate(inv, [0, 1, 2], jax.random.key(0)).shape
        (3, 8, 8, 1)
    """
    labels = jnp.asarray(labels, jnp.int32)
    x = _generate(inverter.module, inverter.meta["z_dim"], inverter.member(member), labels,
                  key)
    return np.clip(np.asarray(x), 0, 1) if clip else np.asarray(x)


@partial(jax.jit, static_argnums=(0, 1))
def _generate(module, z_dim, variables, labels, key):
    k_z, k_c = jax.random.split(key)
    vec, mat = conditions(k_c, labels, module.num_classes, module.conditioning)
    z = jax.random.normal(k_z, (labels.shape[0], z_dim))
    return module.apply(variables, z, vec, mat)


def make_inverter_step(module: ConditionalGenerator, target_module: Any,
                       tx: optax.GradientTransformation, *, batch_size: int, z_dim: int,
                       sigma: float, tv_squared: bool, grad_mode: str,
                       grad_examples: int | None = None, pixel_reduce: str = "mean",
                       active: Sequence[str] = TERMS):
    """The pure member step ``(state, target_variables, weights, key) -> (state, metrics)``
    (not jitted, not vmapped). Terms not in ``active`` are not computed.

    Example:
        >>> from jaxinv.models.conditional import init_generator
        >>> g = ConditionalGenerator((8, 8, 1), 10, width=4)
        >>> tx = optax.adam(1e-3)
        >>> step = make_inverter_step(g, clf.module, tx, batch_size=4, z_dim=100, sigma=0.1,
        ...                           tv_squared=True, grad_mode="per_example")
        >>> s = init_state(init_generator(g), tx)
        >>> s, m = jax.jit(step)(s, clf.variables, Weights(), jax.random.key(0))
        >>> int(s.step), "grad" in m and "acc" in m
        (1, True)
    """
    k = module.num_classes
    apply_fn = target_module.apply

    def loss(params, rest, batch, key):
        z, vec, mat, y, t_vars, w = batch
        k_drop, k_noise = jax.random.split(key)
        x, new = module.apply({"params": params, **rest}, z, vec, mat, train=True,
                              mutable=["batch_stats"], rngs={"dropout": k_drop})
        w = Weights(**{t: (getattr(w, t) if t in active else 0.0) for t in TERMS})
        total, terms = inversion_losses(apply_fn, t_vars, x, vec, y, k_noise, w, sigma=sigma,
                                        tv_squared=tv_squared, grad_mode=grad_mode,
                                        grad_examples=grad_examples,
                                        pixel_reduce=pixel_reduce)
        acc = (jnp.argmax(apply_fn(t_vars, x)[0], -1) == y).astype(jnp.float32)
        return total, ({**terms, "acc": acc}, {**rest, **new})

    step = make_step(loss, tx)
    ones = jnp.ones(batch_size)

    def member_step(state, t_vars, weights, key):
        k_y, k_z, k_c, k_s = jax.random.split(key, 4)
        y = jax.random.permutation(k_y, jnp.arange(batch_size) % k)
        vec, mat = conditions(k_c, y, k, module.conditioning)
        z = jax.random.normal(k_z, (batch_size, z_dim))
        return step(state, (z, vec, mat, y, t_vars, weights), ones, k_s)

    return member_step


def train_inverter(target: Classifier, workdir: str | Path, *,
                   weights: Weights | Sequence[Weights] | None = None,
                   seeds: Sequence[int] | None = None, steps: int = 2000,
                   conditioning: str = DEFAULTS["conditioning"],
                   batch_size: int = DEFAULTS["batch_size"], lr: float = DEFAULTS["lr"],
                   weight_decay: float = DEFAULTS["weight_decay"],
                   sigma: float = DEFAULTS["sigma"], tv_squared: bool = DEFAULTS["tv_squared"],
                   pixel_reduce: str = DEFAULTS["pixel_reduce"],
                   grad_mode: str = DEFAULTS["grad_mode"],
                   grad_examples: int | None = DEFAULTS["grad_examples"],
                   z_dim: int = DEFAULTS["z_dim"],
                   width: int = DEFAULTS["width"], dropout: float = DEFAULTS["dropout"],
                   output: str = DEFAULTS["output"], upsample: str = DEFAULTS["upsample"],
                   checkpoint_every: int = 250, progress: bool = True,
                   meta: dict | None = None) -> Inverter:
    """Train one conditional generator per entry of ``weights`` (or of ``seeds``) against the
    frozen ``target`` for ``steps`` steps, all at once by ``vmap``; save them in ``workdir``.

    ``weights`` default to ``PRESETS["tldr"]``; a single set is shared by
    every seed; ``seeds`` default to 0..M-1.
    Checkpoints (orbax, ``workdir/train_ckpt``, the last 2 kept) every ``checkpoint_every``
    steps; calling again resumes, with more ``steps`` continues (other settings, another
    target or other weights raise ``ValueError``). Writes ``workdir/inverter.json`` (meta:
    settings, ``train_seconds_total``, ``steps_per_s``, per-member ``last_metrics``) and
    ``workdir/variables``; :func:`load_inverter` reads them.

    Example:
        >>> import tempfile
        >>> from jaxinv.attacks.inversion_losses import PRESETS
        >>> inv = train_inverter(clf, tempfile.mkdtemp(), weights=[PRESETS["tldr"],
        ...                      PRESETS["ni"]], steps=2, width=4, batch_size=8, progress=False)
        >>> inv.members, sorted(inv.meta["last_metrics"][1])[:3]
        (2, ['acc', 'ce', 'ce_p'])
    """
    ws, seeds = _members(PRESETS["tldr"] if weights is None else weights, seeds)
    cfg = {"conditioning": conditioning, "batch_size": batch_size, "lr": lr,
           "weight_decay": weight_decay, "sigma": sigma, "tv_squared": tv_squared,
           "pixel_reduce": pixel_reduce,
           "grad_mode": grad_mode, "grad_examples": grad_examples, "z_dim": z_dim,
           "width": width, "dropout": dropout,
           "output": output, "upsample": upsample}
    if min(steps, batch_size, checkpoint_every, z_dim, width) < 1 or lr <= 0 or sigma < 0:
        raise ValueError("train_inverter: steps, batch_size, checkpoint_every, z_dim and width "
                         f"must be >= 1, lr > 0 and sigma >= 0; got {steps}, {batch_size}, "
                         f"{checkpoint_every}, {z_dim}, {width}, lr={lr}, sigma={sigma}")
    if grad_mode not in ("per_example", "batch"):
        raise ValueError(f"unknown grad_mode {grad_mode!r}: use 'per_example' or 'batch'")
    if pixel_reduce not in ("mean", "sum"):
        raise ValueError(f"unknown pixel_reduce {pixel_reduce!r}: use 'mean' or 'sum'")
    shape, k = tuple(target.meta["input_shape"]), int(target.meta["num_classes"])
    module = _module(shape, k, cfg)
    tx = optax.adamw(lr, weight_decay=weight_decay)
    init = jax.vmap(lambda s: init_state(module.init(
        jax.random.key(s), jnp.zeros((1, z_dim)), jnp.zeros((1, k)), jnp.zeros((1, k, k))),
        tx))
    config = json.loads(json.dumps({
        **cfg, "seeds": seeds, "weights": [w._asdict() for w in ws], "out_shape": list(shape),
        "num_classes": k, "target_digest": target_digest(target)}, allow_nan=False))
    ckpt = {"g": init_once(init, jnp.asarray(seeds)), "step": jnp.zeros((), jnp.int32)}
    workdir = Path(workdir).absolute()
    mngr, ckpt = _open(workdir, config, ckpt, "inverter" if progress else None,
                       keys=tuple(config))
    active = tuple(t for t in TERMS if any(getattr(w, t) != 0 for w in ws))
    step = make_inverter_step(module, target.module, tx, batch_size=batch_size, z_dim=z_dim,
                              sigma=sigma, tv_squared=tv_squared, grad_mode=grad_mode,
                              grad_examples=grad_examples, pixel_reduce=pixel_reduce,
                              active=active)
    stacked = Weights(*(jnp.asarray([getattr(w, t) for w in ws], jnp.float32) for t in TERMS))
    many = jax.vmap(step, in_axes=(0, None, 0, 0))
    fold = jax.vmap(jax.random.fold_in, in_axes=(0, None))
    # XLA's own options (not jaxinv.core.compiler.jit): with XLA:CPU's classic emitters a
    # member trained alone drifted 1e-3 from itself trained beside another, 2.7e-4 without
    g, last = _loop(jax.jit(lambda g, t, w, keys, it: many(g, t, w, fold(keys, it))), ckpt,
                    target.variables,
                    stacked, seeds, steps, mngr, workdir, checkpoint_every, progress)
    inv = Inverter(module, jax.vmap(variables_of)(g), {})
    return _save(workdir, inv, {**config, **(meta or {}), "steps": max(steps, int(g.step[0])),
                                "last_metrics": last, "active_terms": list(active)})


def _members(weights, seeds) -> tuple[list[Weights], list[int]]:
    ws = [weights] if isinstance(weights, Weights) else list(weights)
    if not ws or not all(isinstance(w, Weights) for w in ws):
        raise ValueError("train_inverter: weights must be a Weights or a non-empty list of them")
    seeds = list(range(len(ws))) if seeds is None else [int(s) for s in seeds]
    if len(ws) == 1 and len(seeds) > 1:
        ws = ws * len(seeds)
    if len(ws) != len(seeds) or not seeds:
        raise ValueError(f"train_inverter: {len(ws)} weight sets but {len(seeds)} seeds")
    bad = [w for w in ws if not all(np.isfinite(list(w)))]
    if bad:
        raise ValueError(f"train_inverter: loss weights must be finite, got {bad[0]}")
    return ws, seeds


def target_digest(target: Classifier) -> str:
    """A short digest of a classifier's variables: generators are tied to one target.

    Example:
        >>> len(target_digest(clf))
        12
    """
    h = hashlib.sha1()
    for leaf in jax.tree.leaves(target.variables):
        a = np.asarray(leaf)
        h.update(np.ascontiguousarray(a.reshape(-1)[:: max(1, a.size // 256)]).tobytes())
    return h.hexdigest()[:12]


def _loop(step, ckpt, t_vars, stacked, seeds, steps, mngr, workdir, ckpt_every, progress):

    g, start = ckpt["g"], int(ckpt["step"])
    t_vars = jax.device_put(t_vars)
    keys = jax.vmap(jax.random.key)(jnp.asarray(seeds))
    bar, last, tic = None, [], time.perf_counter()
    if progress and start < steps:
        from tqdm.auto import tqdm
        bar = tqdm(total=steps - start, desc="train-inverter", unit="step", dynamic_ncols=True)
    for it in range(start, steps):  # dispatched asynchronously: no host sync per step
        g, m = step(g, t_vars, stacked, keys, it)
        done = it + 1
        if (bar is not None and (done % PROGRESS_EVERY == 0 or done == steps)) or \
                done % ckpt_every == 0 or done == steps:
            last = _metrics(m, done)
            if bar is not None:
                bar.set_postfix(loss=f"{last[0]['loss']:.3f}", acc=f"{last[0]['acc']:.3f}")
                bar.update(done - start - bar.n)
        if done % ckpt_every == 0 or done == steps:
            tic = save_checkpoint(mngr, workdir, done, {"g": g, "step": jnp.asarray(done)}, tic)
    close_loop(bar, mngr)
    return g, last


def _metrics(m: dict, it: int) -> list[dict]:
    arr = {k: np.asarray(v) for k, v in m.items() if k != "live"}
    bad = sorted(k for k, v in arr.items() if not np.isfinite(v).all())
    if bad:
        raise FloatingPointError(f"train-inverter: non-finite {bad} at step {it}; the last "
                                 "checkpoint is kept: lower lr or the weights and resume")
    n = len(next(iter(arr.values())))
    return [{k: round(float(v[i]), 5) for k, v in arr.items()} for i in range(n)]


def _save(workdir: Path, inv: Inverter, meta: dict) -> Inverter:
    total = _add_seconds(workdir, 0.0)
    meta = {**inv.meta, **meta, "train_seconds_total": round(total, 2),
            "steps_per_s": round(meta["steps"] / max(total, 1e-9), 2),
            "versions": results.versions()}
    save_artifact(workdir, inv.variables, meta, "inverter")
    return inv._replace(meta=meta)


def load_inverter(workdir: str | Path) -> Inverter:
    """Load generators saved by :func:`train_inverter`.

    Example:
        >>> import tempfile
        >>> d = tempfile.mkdtemp()
        >>> _ = train_inverter(clf, d, steps=2, width=4, batch_size=8, progress=False)
        >>> load_inverter(d).meta["out_shape"]
        [8, 8, 1]
    """
    def abstract(meta):
        opts = {c: meta[c] for c in DEFAULTS}
        return jax.eval_shape(lambda: random_inverter(
            meta["out_shape"], meta["num_classes"], len(meta["seeds"]), **opts).variables)

    variables, meta = load_artifact(workdir, "inverter", abstract, "generator",
                                    "train one with `jaxinv attack tldr`", "retrain it")
    return Inverter(_module(meta["out_shape"], meta["num_classes"], meta), variables, meta)


def check_target(inverter: Inverter, target: Classifier) -> None:
    """A one-line ``ValueError`` if ``target``'s input shape or class count is not the
    generator's.

    Example:
        >>> check_target(random_inverter((8, 8, 1), 10, width=4), clf)
        >>> check_target(random_inverter((8, 8, 1), 5, width=4), clf)
        Traceback (most recent call last):
        ValueError: generator makes 8x8x1 images for 5 classes; the target takes ... 10 classes
    """
    shape, k = list(target.meta["input_shape"]), int(target.meta["num_classes"])
    g_shape, g_k = list(inverter.meta["out_shape"]), int(inverter.meta["num_classes"])
    if shape != g_shape or k != g_k:
        raise ValueError(f"generator makes {'x'.join(map(str, g_shape))} images for {g_k} "
                         f"classes; the target takes {'x'.join(map(str, shape))} images of "
                         f"{k} classes")


__all__ = ["DEFAULTS", "Inverter", "TrainState", "check_target", "generate", "load_inverter",
           "make_inverter_step", "random_inverter", "target_digest", "train_inverter"]
