"""Train P2I's prediction alignment encoder on the one-time query pairs; orbax, resume.

Each step draws ``batch_size`` synthetic and ``batch_size`` public pairs
(:class:`jaxinv.attacks.p2i.Pairs`; P2I: 4 + 4) and minimises, per example, with the
encoder ``E``, the frozen generator ``G`` (eval mode) and the frozen public-data
embedding network ``phi`` (penultimate features; never the evaluation classifier):

    latent_weight * |E(v) - z|^2 / z_dim                 (synthetic pairs, z known)
  + image_weight  * [MSE(G(E(v)), x) + MSE(u, x)]        (both halves; u: pseudo-image)
  + id_weight     * (1 - cos(phi(G(E(v))), phi(x)))      (both halves)

with ``v = log p``. Defaults: P2I's image weight 1.0 (which also covers the pseudo-image
term, at the image's resolution here rather than P2I's 1/4) and ID weight 0.1. The latent
term is jaxinv's addition (P2I has none): it keeps predicted latents near the prior's, but
most of a 100-d latent is not identifiable from an 8x8 image, so a large weight pulls
latents toward the mean; measured on digits (500 steps, conv encoder), the attacked
classes' target confidence was 0.67 at weight 1.0, 0.88 at 0.1, 0.91 at 0: default 0.1.
P2I's LPIPS and face-parsing terms have no counterpart on digits and are left out.
Optimiser: Adam, constant lr 3e-3 (P2I: Ranger 1e-4 with a step decay over 77,500
iterations; our runs are a few thousand steps, and on digits 3e-3 beat 1e-3 at 150 steps).
The synthetic half's latent term is averaged over its own examples (reported as
``latent``). Steps are dispatched from Python (XLA:CPU runs conv weight
gradients slowly inside loops), the host syncs every ``log_every`` steps for the loss
curve and the progress bar.

Example:
    >>> import tempfile
    >>> from jaxinv.attacks.p2i import Pairs
    >>> from jaxinv.models.gan import random_gan
    >>> p = jax.nn.softmax(jax.random.normal(key, (16, 10)) * 3)
    >>> pairs = Pairs(np.asarray(p), np.zeros((16, 100), np.float32), np.asarray(p), x)
    >>> enc = train_encoder(pairs, random_gan((8, 8, 1), width=4), clf, tempfile.mkdtemp(),
    ...                     steps=3, width=4, batch_size=4, log_every=1, progress=False)
    >>> enc.meta["steps"], len(enc.meta["curve"]["loss"])
    (3, 3)
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxinv.core.compiler import jit
from jaxinv.evaluation import results
from jaxinv.models import apply_features
from jaxinv.models.encoder import Encoder, PredictionEncoder, log_input, random_encoder
from jaxinv.training.artifacts import close_loop, load_artifact, save_artifact, save_checkpoint
from jaxinv.training.classifier import _add_seconds, _open
from jaxinv.training.step import init_state, make_step, variables_of

DEFAULTS: dict[str, Any] = {"steps": 2000, "batch_size": 32, "lr": 3e-3, "kind": "conv",
                            "width": 16, "pool": 3, "latent_weight": 0.1, "image_weight": 1.0,
                            "id_weight": 0.1}
CONFIG_KEYS = ("batch_size", "lr", "kind", "width", "pool", "latent_weight", "image_weight",
               "id_weight", "seed", "num_classes", "z_dim", "out_shape", "pairs_digest")
METRICS = ("loss", "latent", "image", "pseudo", "id")


def encoder_loss(module: PredictionEncoder, generator: Any, embed_module: Any, *,
                 latent_weight: float = 1.0, image_weight: float = 1.0,
                 id_weight: float = 0.1):
    """Per-example encoder loss for :func:`~jaxinv.training.make_step`;
    ``batch = (v, z, x, synthetic, g_vars, phi_vars)`` with ``v = log p [B, K]``, latents
    ``z [B, z_dim]`` (any value on public rows), images ``x``, ``synthetic [B]`` (1.0 for a
    synthetic pair), and the frozen generator's and embedding network's variables.

    Example:
        >>> from jaxinv.models.encoder import random_encoder
        >>> from jaxinv.models.gan import random_gan
        >>> gan, enc = random_gan((8, 8, 1), width=4), random_encoder(10, (8, 8, 1), width=4)
        >>> f = encoder_loss(enc.module, gan.generator, clf.module)
        >>> batch = (jnp.zeros((4, 10)), jnp.zeros((4, 100)), x[:4], jnp.array([1., 1, 0, 0]),
        ...          gan.variables["G"], clf.variables)
        >>> losses, (m, _) = f(enc.variables["params"],
        ...                    {"batch_stats": enc.variables["batch_stats"]}, batch, key)
        >>> losses.shape, sorted(m)
        ((4,), ['id', 'image', 'latent', 'pseudo'])
    """
    features = apply_features(embed_module)

    def loss(params, rest, batch, key):
        v, z, x, syn, g_vars, phi_vars = batch
        (z_hat, u), new = module.apply({"params": params, **rest}, v, train=True,
                                       mutable=["batch_stats"])
        x_hat = generator.apply(g_vars, z_hat)
        lat = jnp.mean((z_hat - z) ** 2, -1) * syn / jnp.maximum(jnp.mean(syn), 1e-12)
        img = jnp.mean((x_hat - x) ** 2, (1, 2, 3))
        pse = jnp.zeros_like(img) if u is None else jnp.mean((u - x) ** 2, (1, 2, 3))
        fa = features(phi_vars, x_hat)
        fb = jax.lax.stop_gradient(features(phi_vars, x))
        cos = jnp.sum(fa * fb, -1) / jnp.sqrt(jnp.sum(fa ** 2, -1) * jnp.sum(fb ** 2, -1)
                                              + 1e-12)
        idl = 1 - cos
        total = latent_weight * lat + image_weight * (img + pse) + id_weight * idl
        return total, ({"latent": lat, "image": img, "pseudo": pse, "id": idl},
                       {**rest, **new})

    return loss


def _digest(*arrays: np.ndarray) -> str:
    h = hashlib.sha1()
    for a in arrays:
        h.update(np.ascontiguousarray(a, np.float32).tobytes())
    return h.hexdigest()


def train_encoder(pairs: Any, gan: Any, embed: Any, workdir: str | Path, *,
                  steps: int = DEFAULTS["steps"], batch_size: int = DEFAULTS["batch_size"],
                  lr: float = DEFAULTS["lr"], kind: str = DEFAULTS["kind"],
                  width: int = DEFAULTS["width"], pool: int = DEFAULTS["pool"],
                  latent_weight: float = DEFAULTS["latent_weight"],
                  image_weight: float = DEFAULTS["image_weight"],
                  id_weight: float = DEFAULTS["id_weight"], seed: int = 0,
                  checkpoint_every: int = 500, log_every: int = 50, progress: bool = True,
                  meta: dict | None = None) -> Encoder:
    """Train a :class:`~jaxinv.models.encoder.PredictionEncoder` on ``pairs`` for ``steps``
    steps against the generator of ``gan`` and the embedding network ``embed`` (a
    :class:`~jaxinv.models.Classifier` trained on public data); save it in ``workdir``.

    Checkpoints (orbax, ``workdir/train_ckpt``, the last 2 kept) every
    ``checkpoint_every`` steps; calling again resumes, with more ``steps`` continues (other
    settings or other pairs raise ``ValueError``). The loss curve (means over windows of
    ``log_every`` steps of ``loss``, ``latent``, ``image``, ``pseudo``, ``id``) goes to
    ``meta["curve"]``. At the end writes ``workdir/encoder.json`` (meta: settings, curve,
    ``train_seconds_total``; plus ``meta``) and ``workdir/variables``, read by
    :func:`load_encoder`.

    Example:
        >>> import tempfile
        >>> from jaxinv.attacks.p2i import Pairs
        >>> from jaxinv.models.gan import random_gan
        >>> p = jax.nn.softmax(jax.random.normal(key, (16, 10)) * 3)
        >>> pairs = Pairs(np.asarray(p), np.zeros((16, 100), np.float32), np.asarray(p), x)
        >>> enc = train_encoder(pairs, random_gan((8, 8, 1), width=4), clf, tempfile.mkdtemp(),
        ...                     steps=2, kind="mlp", width=4, batch_size=4, progress=False)
        >>> enc.encode(p[:3]).shape, enc.meta["kind"]
        ((3, 100), 'mlp')
    """
    p_syn, z_syn, p_pub, x_pub = (np.asarray(a, np.float32) for a in pairs)
    out_shape = [int(d) for d in gan.meta["out_shape"]]
    z_dim = int(gan.meta["z_dim"])
    _check(p_syn, z_syn, p_pub, x_pub, out_shape, z_dim, embed)
    if min(steps, batch_size, checkpoint_every, log_every) < 1 or lr <= 0:
        raise ValueError("train_encoder: steps, batch_size, checkpoint_every and log_every "
                         f"must be >= 1 and lr > 0; got {steps}, {batch_size}, "
                         f"{checkpoint_every}, {log_every}, lr={lr}")
    if min(latent_weight, image_weight, id_weight) < 0:
        raise ValueError(f"train_encoder: loss weights must be >= 0, got latent "
                         f"{latent_weight}, image {image_weight}, id {id_weight}")
    k = p_syn.shape[1]
    enc0 = random_encoder(k, out_shape, z_dim, kind, width, pool, seed)
    tx = optax.adam(lr)
    step = make_step(encoder_loss(enc0.module, gan.generator, embed.module,
                                  latent_weight=latent_weight, image_weight=image_weight,
                                  id_weight=id_weight), tx)
    x_syn = np.asarray(jax.jit(gan.generator.apply)(gan.variables["G"], z_syn))
    config = json.loads(json.dumps({
        "batch_size": batch_size, "lr": lr, "kind": kind, "width": width, "pool": pool,
        "latent_weight": latent_weight, "image_weight": image_weight, "id_weight": id_weight,
        "seed": seed, "num_classes": k, "z_dim": z_dim, "out_shape": out_shape,
        "pairs_digest": _digest(p_syn, z_syn, p_pub, x_pub), "n_synthetic": len(p_syn),
        "n_public": len(p_pub)}, allow_nan=False))
    ckpt = {"state": init_state(enc0.variables, tx), "step": jnp.zeros((), jnp.int32)}
    workdir = Path(workdir).absolute()
    mngr, ckpt = _open(workdir, config, ckpt, "encoder" if progress else None,
                       keys=CONFIG_KEYS)
    start = int(ckpt["step"])
    curve = _read_curve(workdir, start)
    data = tuple(jnp.asarray(a) for a in (
        np.concatenate([log_input(p_syn), log_input(p_pub)]),
        np.concatenate([z_syn, np.zeros((len(p_pub), z_dim), np.float32)]),
        np.concatenate([x_syn, x_pub])))
    frozen = (gan.variables["G"], embed.variables)
    jstep = _jit_step(step, len(p_syn), len(p_pub), batch_size)
    state = _loop(jstep, ckpt["state"], data, frozen, start, steps, seed, mngr, workdir,
                  curve, checkpoint_every, log_every, progress)
    total = _add_seconds(workdir, 0.0)
    meta = {**enc0.meta, **config, **(meta or {}), "steps": max(steps, start), "curve": curve,
            "last_metrics": {m: v[-1] for m, v in curve.items() if m != "step" and v},
            "train_seconds_total": round(total, 2), "versions": results.versions()}
    return _save(workdir, enc0._replace(variables=variables_of(state)), meta)


def _check(p_syn, z_syn, p_pub, x_pub, out_shape, z_dim, embed) -> None:
    if p_syn.ndim != 2 or p_pub.ndim != 2 or p_syn.shape[1] != p_pub.shape[1]:
        raise ValueError(f"train_encoder: pairs need probabilities [N, K] with one K, got "
                         f"{list(p_syn.shape)} and {list(p_pub.shape)}")
    if not len(p_syn) or not len(p_pub):
        raise ValueError(f"train_encoder: need synthetic and public pairs, got {len(p_syn)} "
                         f"and {len(p_pub)}")
    if z_syn.shape != (len(p_syn), z_dim):
        raise ValueError(f"train_encoder: synthetic latents must be [{len(p_syn)}, {z_dim}] "
                         f"(the generator's z_dim), got {list(z_syn.shape)}")
    if list(x_pub.shape) != [len(p_pub), *out_shape]:
        raise ValueError(f"train_encoder: public images must be [{len(p_pub)}, "
                         f"{', '.join(map(str, out_shape))}] (the generator's shape), got "
                         f"{list(x_pub.shape)}")
    want = [int(d) for d in embed.meta["input_shape"]]
    if want != out_shape:
        raise ValueError(f"train_encoder: the embedding network takes images {want}, the "
                         f"generator makes {out_shape}")


def _jit_step(step, n_syn: int, n_pub: int, batch_size: int):
    """Jitted ``(state, sums, data, frozen, key) -> (state, sums + metrics)``: one step on
    ``batch_size`` random synthetic and ``batch_size`` random public pairs."""
    syn = jnp.concatenate([jnp.ones(batch_size), jnp.zeros(batch_size)])
    ones = jnp.ones(2 * batch_size)

    def one(state, sums, data, frozen, key):
        ks, kp, kl = jax.random.split(key, 3)
        idx = jnp.concatenate([jax.random.randint(ks, (batch_size,), 0, n_syn),
                               jax.random.randint(kp, (batch_size,), n_syn, n_syn + n_pub)])
        v, z, x = (a[idx] for a in data)
        state, m = step(state, (v, z, x, syn, *frozen), ones, kl)
        return state, sums + jnp.stack([m[k] for k in METRICS])

    return jit(one, donate_argnums=(0, 1))


def _read_curve(workdir: Path, start: int) -> dict[str, list]:
    path = workdir / "curve.json"
    curve: dict[str, list] = {m: [] for m in ("step", *METRICS)}
    if start and path.exists():
        try:
            saved = json.loads(path.read_text())
            keep = [i for i, s in enumerate(saved["step"]) if s <= start]
            curve = {m: [saved[m][i] for i in keep] for m in curve}
        except (json.JSONDecodeError, KeyError, IndexError, TypeError):
            pass  # a damaged curve file: the resumed curve starts at the checkpoint
    return curve


def _loop(step, state, data, frozen, start, steps, seed, mngr, workdir, curve, ckpt_every,
          log_every, progress):

    key = jax.random.key(seed)
    # committed inputs: with uncommitted ones the second call would compile again
    dev = jax.local_devices()[0]
    state, data, frozen = jax.device_put((state, data, frozen), dev)
    bar = None
    if progress and start < steps:
        from tqdm.auto import tqdm
        bar = tqdm(total=steps - start, desc="train-encoder", unit="step", dynamic_ncols=True)
    zeros = lambda: jax.device_put(jnp.zeros(len(METRICS)), dev)
    sums, since, tic = zeros(), 0, time.perf_counter()
    for it in range(start, steps):  # dispatched asynchronously: no host sync per step
        state, sums = step(state, sums, data, frozen, jax.random.fold_in(key, it))
        done, since = it + 1, since + 1
        if done % log_every == 0 or done == steps:
            means = np.asarray(sums) / since
            if not np.isfinite(means).all():
                raise FloatingPointError(f"train-encoder: non-finite loss at step {done}; the "
                                         "last checkpoint is kept: lower lr and resume")
            curve["step"].append(done)
            for m, v in zip(METRICS, means, strict=True):
                curve[m].append(round(float(v), 6))
            sums, since = zeros(), 0
            if bar is not None:
                bar.set_postfix(**{m: f"{curve[m][-1]:.4f}" for m in ("loss", "image", "id")})
                bar.update(done - start - bar.n)
        if done % ckpt_every == 0 or done == steps:
            (workdir / "curve.json").write_text(json.dumps(curve, allow_nan=False))
            tic = save_checkpoint(mngr, workdir, done, {
                "state": state, "step": jnp.asarray(done, jnp.int32)}, tic)
    close_loop(bar, mngr)
    return state


def _save(workdir: Path, enc: Encoder, meta: dict) -> Encoder:
    save_artifact(workdir, enc.variables, meta, "encoder")
    return enc._replace(meta=meta)


def load_encoder(workdir: str | Path) -> Encoder:
    """Load an encoder saved by :func:`train_encoder` (``encoder.json`` + orbax
    ``variables``).

    Example:
        >>> import tempfile
        >>> from jaxinv.attacks.p2i import Pairs
        >>> from jaxinv.models.gan import random_gan
        >>> d = tempfile.mkdtemp()
        >>> p = jax.nn.softmax(jax.random.normal(key, (8, 10)))
        >>> pairs = Pairs(np.asarray(p), np.zeros((8, 100), np.float32), np.asarray(p), x[:8])
        >>> _ = train_encoder(pairs, random_gan((8, 8, 1), width=4), clf, d, steps=1, width=4,
        ...                   batch_size=2, progress=False)
        >>> load_encoder(d).meta["num_classes"]
        10
    """
    def module(meta):
        return PredictionEncoder(tuple(meta["out_shape"]), meta["z_dim"], meta["kind"],
                                 meta["width"], meta["pool"])

    def abstract(meta):  # shapes only: no initialisation is run
        return jax.eval_shape(module(meta).init, jax.random.key(0),
                              jnp.zeros((1, meta["num_classes"])))

    variables, meta = load_artifact(
        workdir, "encoder", abstract, "encoder",
        "train one with `jaxinv p2i ...` or jaxinv.training.encoder.train_encoder",
        "retrain it")
    return Encoder(module(meta), variables, meta)


__all__ = ["CONFIG_KEYS", "DEFAULTS", "METRICS", "encoder_loss", "load_encoder",
           "train_encoder"]
