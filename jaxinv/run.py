"""The chain driver: runs N chains of an :class:`~jaxinv.base.Attack` per target.

One compiled call runs ``unroll`` steps of every chain: a fully unrolled
``scan`` over steps of ``vmap(step)`` (or ``lax.map(step, batch_size=chunk)``)
over the local chains, inside ``shard_map`` over a 1-D device mesh (axis
``"chains"``), so each device runs its own chains with no communication. Calls are
dispatched asynchronously; only at *segment* boundaries does the host sync, to
update the progress bar, stop early and, given a work directory, checkpoint
``(states, chain_keys, t)`` with orbax.

Why unrolled: XLA:CPU runs a while-loop body about 2x slower than the same ops
at top level and compiles it about 4x slower (MNIST CNN MI-Face step, 1024 chains:
805 vs 1848 chain-steps/s; see ``benchmarks/chains.py``). Short unrolled calls cost
one dispatch per ``unroll`` steps, which is nothing next to a step's work.
The run is a deterministic function of ``(attack, targets, env, seed)``:
step keys are ``fold_in(chain_key, t)``, so a resumed run is bit-identical.
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from jaxinv.base import Attack, PyTree, check_state, healthy, tree_where

AXIS = "chains"


class Carry(NamedTuple):
    """Per-chain driver state (leading axis: chains)."""

    state: PyTree  # the attack's State
    best_x: jax.Array  # lowest-loss iterate seen so far
    best_loss: jax.Array  # its loss
    failed: jax.Array  # bool: a step went non-finite; the chain is frozen


class RunResult(NamedTuple):
    """What :func:`run_chains` returns (host NumPy, leading axes ``[targets, chains]``).

    ``info`` leaves have shape ``[steps_run, targets, chains]``.
    """

    state: PyTree
    x_init: np.ndarray
    best_x: np.ndarray
    best_loss: np.ndarray
    failed: np.ndarray
    info: PyTree
    steps_run: int
    timing: dict[str, float]


def make_mesh(devices: list | None = None) -> jax.sharding.Mesh:
    """A 1-D mesh over all (or the given) devices, axis name ``"chains"``.

    Works unchanged on one CPU, fake CPU devices, a GPU, or a multi-host TPU slice
    (after ``jax.distributed.initialize()``).

    Example:
        >>> mesh = make_mesh()
        >>> mesh.shape
        {'chains': 8}
    """
    devices = list(devices) if devices is not None else jax.devices()
    return jax.make_mesh((len(devices),), (AXIS,), devices=devices)


def _to_host(tree: PyTree) -> PyTree:
    def get(a):
        if isinstance(a, jax.Array) and not a.is_fully_addressable:
            return np.asarray(multihost_utils.process_allgather(a, tiled=True))
        return np.asarray(a)

    return jax.tree.map(get, tree)


def _put(tree: PyTree, sharding: NamedSharding) -> PyTree:
    """Place host arrays as global arrays (valid on one host and on many)."""

    def put(a):
        a = np.asarray(a)
        return jax.make_array_from_callback(a.shape, sharding, lambda idx: a[idx])

    return jax.tree.map(put, tree)


def _chain_step(attack: Attack, key: jax.Array, carry: Carry, t: jax.Array, env: Any):
    """One step of one chain, with freezing of finished/non-finite chains."""
    new_state, info = attack.step(jax.random.fold_in(key, t), carry.state, env)
    return accept(carry, new_state), info


def accept(carry: Carry, new_state: PyTree) -> Carry:
    """Take a chain's new state unless it is done or failed; track its best iterate and
    freeze it (``failed``) if the new state is non-finite."""
    done = getattr(carry.state, "done", jnp.bool_(False))
    finite = healthy(new_state)
    active = ~carry.failed & ~done
    moved = active & finite
    state = tree_where(moved, new_state, carry.state)
    improved = moved & (new_state.loss < carry.best_loss)
    best_x = jnp.where(improved, new_state.x, carry.best_x)
    best_loss = jnp.where(improved, new_state.loss, carry.best_loss)
    failed = carry.failed | (active & ~finite)
    return Carry(state, best_x, best_loss, failed)


def _init_carry(attack: Attack, key: jax.Array, target: jax.Array, env: Any) -> Carry:
    state = attack.init(key, target, env)
    return Carry(state, state.x, state.loss, ~healthy(state))


def _config_fingerprint(**kw) -> dict:
    return {k: (v if isinstance(v, (int, float, str, bool, type(None))) else repr(v))
            for k, v in kw.items()}


def run_chains(
    attack: Attack,
    targets: np.ndarray | list[int],
    env: Any,
    *,
    chains: int,
    steps: int,
    seed: int = 0,
    chunk: int | None = None,
    segment: int | None = None,
    unroll: int = 8,
    workdir: str | Path | None = None,
    mesh: jax.sharding.Mesh | None = None,
    progress: bool = True,
    desc: str = "attack",
    config: dict | None = None,
) -> RunResult:
    """Run ``chains`` chains of ``attack`` for every target for ``steps`` steps.

    Args:
      attack: the kernel pair (``init``, ``step``) on one chain.
      targets: class indices to invert, shape ``[T]``.
      env: large arrays the kernel reads (model variables); replicated on devices.
      chains: chains per target; all ``T * chains`` chains run in parallel.
      steps: steps per chain. Chains whose ``State.done`` is set are frozen;
        the run ends early once every chain is done or failed.
      seed: chain ``i`` gets ``fold_in(key(seed), i)``; step keys ``fold_in(., t)``.
      chunk: at most this many chains per device are vmapped at once
        (``lax.map(..., batch_size=chunk)``); bounds memory. ``None``: all.
      segment: steps between host syncs: the progress bar, early stopping and
        checkpoints happen at segment boundaries. Default ``ceil(steps / 20)``.
      unroll: steps per compiled call (fully unrolled); larger compiles longer.
      workdir: if given, checkpoint there after every segment and resume from
        the latest checkpoint when restarted with the same arguments.
      mesh: a 1-D device mesh (:func:`make_mesh`); default: all devices.
      progress: show a tqdm bar (steps, mean loss, best confidence, failures).
      config: settings the kernel closes over (attack options, model path): stored
        with the checkpoints, so resuming a ``workdir`` with other settings is refused.

    Returns:
      A :class:`RunResult`; chain-indexed arrays have shape ``[T, chains, ...]``.

    Example:
        >>> res = run_chains(attack, jnp.arange(10), clf.variables, chains=64, steps=200)
        >>> res.best_x.shape
        (10, 64, 8, 8, 1)
    """
    targets = np.asarray(targets)
    if targets.ndim != 1 or targets.size == 0 or not np.issubdtype(targets.dtype, np.integer):
        raise ValueError(f"targets must be a non-empty 1-D int array, got {targets.dtype}"
                         f"{targets.shape}")
    for name, v in (("chains", chains), ("steps", steps)):
        if not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"{name} must be a positive int, got {v!r}")
    if chunk is not None and chunk < 1:
        raise ValueError(f"chunk must be a positive int or None, got {chunk!r}")
    segment = segment or max(1, math.ceil(steps / 20))
    if segment < 1 or unroll < 1:
        raise ValueError(f"segment and unroll must be positive ints, got {segment!r}, {unroll!r}")
    unroll = min(unroll, segment)
    mesh = mesh or make_mesh()
    n_dev = mesh.size
    n_real = len(targets) * chains
    n = math.ceil(n_real / n_dev) * n_dev  # pad so chains split evenly over devices
    chain_sharding = NamedSharding(mesh, P(AXIS))
    replicated = NamedSharding(mesh, P())

    flat_targets = np.concatenate([np.repeat(targets, chains),
                                   np.full(n - n_real, targets[0])]).astype(np.int32)
    env = _put(env, replicated)

    def make_keys(seed):
        base = jax.random.key(seed)
        return jax.vmap(lambda i: jax.random.fold_in(base, i))(jnp.arange(n))

    make_keys = jax.jit(make_keys, out_shardings=chain_sharding)
    chain_keys = make_keys(jnp.uint32(seed))
    tgt = _put(flat_targets, chain_sharding)

    probe = jax.eval_shape(lambda k, e: attack.init(k, jnp.int32(0), e),
                           jax.random.key(0), env)
    check_state(probe)

    def local_init(keys, tg, env):
        return jax.vmap(lambda k, y: _init_carry(attack, k, y, env))(keys, tg)

    init_fn = jax.jit(jax.shard_map(local_init, mesh=mesh, in_specs=(P(AXIS), P(AXIS), P()),
                                    out_specs=P(AXIS), check_vma=False))

    def local_call(keys, carry, env, t0, length):
        def one(args, t):
            k, c = args
            return _chain_step(attack, k, c, t, env)

        def body(carry, t):
            if chunk is None:
                return jax.vmap(lambda k, c: one((k, c), t))(keys, carry)
            return jax.lax.map(lambda a: one(a, t), (keys, carry), batch_size=chunk)

        ts = t0 + jnp.arange(length, dtype=jnp.int32)
        return jax.lax.scan(body, carry, ts, unroll=True)

    compiled: dict[int, Any] = {}
    timing = {"compile_s": 0.0}

    def call(length, carry, t0):
        if length not in compiled:
            fn = jax.shard_map(lambda k, c, e, t: local_call(k, c, e, t, length), mesh=mesh,
                               in_specs=(P(AXIS), P(AXIS), P(), P()),
                               out_specs=(P(AXIS), P(None, AXIS)), check_vma=False)
            tic = time.perf_counter()
            compiled[length] = jax.jit(fn, donate_argnums=(1,)).lower(
                chain_keys, carry, env, t0).compile()
            timing["compile_s"] += time.perf_counter() - tic
        return compiled[length](chain_keys, carry, env, t0)

    def segment_fn(length, carry, t0):
        """``length`` steps as calls of ``unroll`` steps, dispatched without a host sync."""
        infos = []
        for start in range(0, length, unroll):
            carry, info = call(min(unroll, length - start), carry, jnp.int32(t0 + start))
            infos.append(info)
        return carry, infos

    @jax.jit
    def summary(carry, info):
        stopped = carry.failed | getattr(carry.state, "done", jnp.zeros_like(carry.failed))
        conf = getattr(info, "confidence", None)
        return {"loss": jnp.nanmean(jnp.where(carry.failed, jnp.nan, carry.state.loss)),
                "best_loss": jnp.min(carry.best_loss),
                "best_conf": jnp.nanmax(conf[-1]) if conf is not None else jnp.nan,
                "failed": jnp.sum(carry.failed), "all_stopped": jnp.all(stopped)}

    tic = time.perf_counter()
    carry = init_fn(chain_keys, tgt, env)
    x_init = _to_host(carry.state.x)
    init_failed = int(np.sum(_to_host(carry.failed)[:n_real]))
    if init_failed:
        raise FloatingPointError(
            f"{init_failed} of {n_real} chains start with a non-finite state (NaN/inf in the "
            "initial iterate or its loss): the target model returns non-finite outputs. "
            "Check the model variables in env and the input range.")

    t = 0
    infos: list = []
    ckpt = _Checkpointer(workdir, _config_fingerprint(
        chains=chains, targets=targets.tolist(), seed=seed, segment=segment, unroll=unroll,
        n_padded=n,
        attack=getattr(attack.step, "__qualname__", "?"),
        config=json.dumps(config, sort_keys=True, default=repr))) if workdir else None
    if ckpt is not None and ckpt.latest() is not None:
        info_shape = jax.eval_shape(lambda k, s, e: attack.step(k, s, e)[1],
                                    jax.random.key(0), probe, env)
        t, carry, infos = ckpt.restore(carry, chain_keys, jax.tree.structure(info_shape))
        if jax.process_index() == 0:
            print(f"{desc}: resuming from step {t} (checkpoint in {workdir})", file=sys.stderr)

    bar = None
    if progress and jax.process_index() == 0:
        from tqdm.auto import tqdm
        bar = tqdm(total=steps, initial=t, desc=desc, unit="step", dynamic_ncols=True)
    run_tic = time.perf_counter()
    while t < steps:
        length = min(segment, steps - t)
        carry, seg_infos = segment_fn(length, carry, t)
        t += length
        s = jax.device_get(summary(carry, seg_infos[-1]))  # one host sync per segment
        infos.append(jax.tree.map(lambda *a: np.concatenate(a), *_to_host(seg_infos)))
        if ckpt is not None:
            ckpt.save(t, carry, chain_keys, infos[-1])
        if bar is not None:
            bar.update(length)
            bar.set_postfix(loss=f"{s['loss']:.4f}", best_conf=f"{s['best_conf']:.3f}",
                            failed=int(s["failed"]))
        if s["all_stopped"]:
            break
    if bar is not None:
        bar.close()
    timing["run_s"] = time.perf_counter() - run_tic
    timing["wall_s"] = time.perf_counter() - tic

    host = _to_host(carry)
    shape = (len(targets), chains)

    def unflat(a):
        return a[:n_real].reshape(shape + a.shape[1:])

    info_all = (jax.tree.map(lambda *xs: np.concatenate(xs), *infos) if infos else None)
    if info_all is not None:
        info_all = jax.tree.map(lambda a: a[:, :n_real].reshape(a.shape[:1] + shape + a.shape[2:]),
                                info_all)
    return RunResult(state=jax.tree.map(unflat, host.state), x_init=unflat(x_init),
                     best_x=unflat(host.best_x),
                     best_loss=unflat(host.best_loss), failed=unflat(host.failed),
                     info=info_all, steps_run=t, timing=timing)


class _Checkpointer:
    """orbax checkpoints of ``(carry, chain_keys, t)`` plus per-segment Info files."""

    def __init__(self, workdir: str | Path, fingerprint: dict):
        import orbax.checkpoint as ocp

        self.ocp = ocp
        self.dir = Path(workdir).absolute()
        self.dir.mkdir(parents=True, exist_ok=True)
        meta = self.dir / "run_config.json"
        if meta.exists():
            old = json.loads(meta.read_text())
            if old != fingerprint:
                diff = {k: (old.get(k), v) for k, v in fingerprint.items() if old.get(k) != v}
                raise ValueError(
                    f"{self.dir} holds a checkpoint of a different run (setting: (saved, now) = "
                    f"{diff}); use another work directory or delete this one to start afresh.")
        elif jax.process_index() == 0:
            meta.write_text(json.dumps(fingerprint, indent=1))
        self.info_dir = self.dir / "info"
        self.info_dir.mkdir(exist_ok=True)
        self.mngr = ocp.CheckpointManager(
            self.dir / "ckpt",
            options=ocp.CheckpointManagerOptions(max_to_keep=2, enable_async_checkpointing=False))

    def latest(self) -> int | None:
        return self.mngr.latest_step()

    def save(self, t: int, carry: Carry, keys: jax.Array, info: PyTree) -> None:
        if jax.process_index() == 0:  # Info first: a checkpoint at t implies Info up to t
            tmp = self.info_dir / f".{t:010d}.npz"
            with open(tmp, "wb") as f:
                np.savez(f, **{str(i): a for i, a in enumerate(jax.tree.leaves(info))})
            tmp.rename(self.info_dir / f"{t:010d}.npz")
        item = {"carry": carry, "chain_keys": jax.random.key_data(keys), "t": np.array(t, np.int64)}
        self.mngr.save(t, args=self.ocp.args.StandardSave(item))
        self.mngr.wait_until_finished()

    def restore(self, carry: Carry, keys: jax.Array, info_treedef):
        t = self.latest()
        abstract = jax.tree.map(self.ocp.utils.to_shape_dtype_struct,
                                {"carry": carry, "chain_keys": jax.random.key_data(keys),
                                 "t": np.array(0, np.int64)})
        item = self.mngr.restore(t, args=self.ocp.args.StandardRestore(abstract))
        if not np.array_equal(_to_host(item["chain_keys"]), _to_host(jax.random.key_data(keys))):
            raise ValueError(f"checkpoint in {self.dir} was made with a different seed")
        infos = []
        for f in sorted(self.info_dir.glob("[0-9]*.npz")):
            if int(f.stem) <= t:
                with np.load(f) as z:
                    infos.append(jax.tree.unflatten(info_treedef,
                                                    [z[str(i)] for i in range(len(z.files))]))
        return int(item["t"]), item["carry"], infos
