"""The chain driver: runs ``chains`` chains of an :class:`~jaxinv.core.protocol.Attack`
per target, for targets that are any pytree with a leading axis.

Chains are sharded over a 1-D device mesh (axis ``"chains"``) with ``shard_map``; each
device runs its chains with ``vmap`` (or ``lax.map(batch_size=chunk)``) and no
communication. Targets are sharded with the chains when each target has one chain, and
otherwise placed once per device and indexed per chain (never copied into ``State``).
``env`` is replicated. One compiled call runs several steps: on XLA:CPU a ``scan`` of 8
(fully unrolled only when ``unroll`` is given: 8 unrolled steps compiled 1.4-2.7x longer and
ran no faster, ``benchmarks/chains.py`` and ``gan.py``); on GPU/TPU one ``scan`` per
segment. A rolled scan's program serves every call of up to its length (steps past the call's
end pass the carry through), so on CPU a segment that is not a multiple of 8 compiles one
program, not two; its step is traced once per run (replayed as a jaxpr in the scan's
``cond``), since tracing is much of a first compile. Calls are dispatched asynchronously;
the host syncs once per segment (progress bar, early stop, orbax checkpoint). Compiled
calls are cached per (kernel, shapes, mesh, options), and :func:`enable_compilation_cache`
turns on JAX's persistent cache across processes.
"""

from __future__ import annotations

import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from jax.extend.core import jaxpr_as_fun
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from jaxinv.core import chains as C
from jaxinv.core.checkpoint import RunCheckpoint
from jaxinv.core.compiler import compile_once, compiler_options, jit
from jaxinv.core.protocol import Attack, PyTree
from jaxinv.models.layers import winograd, winograd_setting

AXIS = "chains"
_COMPILED: dict[Any, Any] = {}


def make_mesh(devices: list | None = None) -> jax.sharding.Mesh:
    """A 1-D mesh over all (or the given) devices, axis name ``"chains"``.

    Example:
        >>> make_mesh().axis_names
        ('chains',)
    """
    devices = list(devices) if devices is not None else jax.devices()
    return jax.make_mesh((len(devices),), (AXIS,), devices=devices)


def enable_compilation_cache(path: str | Path | None = None) -> Path:
    """Turn on JAX's persistent compilation cache (default ``$JAXINV_CACHE_DIR`` or
    ``~/.cache/jaxinv/xla``): a second process reuses the first one's compiled steps.

    Example:
        >>> enable_compilation_cache("/tmp/jaxinv-xla").name
        'jaxinv-xla'
    """
    path = Path(path or os.environ.get("JAXINV_CACHE_DIR")
                or Path.home() / ".cache" / "jaxinv" / "xla")
    path.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
    return path


def to_host(tree: PyTree) -> PyTree:
    """Host NumPy copies of (possibly multi-host) global arrays."""

    def get(a):
        if isinstance(a, jax.Array) and not a.is_fully_addressable:
            return np.asarray(multihost_utils.process_allgather(a, tiled=True))
        return np.asarray(a)

    return jax.tree.map(get, tree)


def put(tree: PyTree, sharding: NamedSharding) -> PyTree:
    """Place host arrays as global arrays (valid on one host and on many)."""

    def one(a):
        a = np.asarray(a)
        return jax.make_array_from_callback(a.shape, sharding, lambda idx: a[idx])

    return jax.tree.map(one, tree)


def _sig(tree: PyTree) -> tuple:
    """A hashable signature of a pytree's structure, shapes and dtypes."""
    return (jax.tree.structure(tree),
            tuple((np.shape(a), np.result_type(a).str) for a in jax.tree.leaves(tree)))


def _pad(tree: PyTree, n: int) -> PyTree:
    """Pad the leading axis to ``n`` by repeating row 0 (padding chains are discarded)."""
    return jax.tree.map(lambda a: np.concatenate([a, np.repeat(a[:1], n - len(a), 0)])
                        if n > len(a) else a, tree)


class _Plan:
    """Everything static about one run: layout, mesh, placement, compiled functions."""

    def __init__(self, make, layout, sharded_targets, chunk, unroll, mesh):
        self.make, self.layout, self.chunk, self.unroll = make, layout, chunk, unroll
        self.sharded_targets, self.mesh = sharded_targets, mesh
        self.n = math.ceil(layout.n / mesh.size) * mesh.size
        self.spec = P(AXIS)
        self.tspec = P(AXIS) if sharded_targets else P()

    def chain_inputs(self, ti, hi, targets, sweep):
        """One chain's (target, setting) from its indices and the placed arrays."""
        target = targets if self.sharded_targets else C.gather(targets, ti)
        return target, C.gather(sweep, hi)

    def _map(self, fn, *args):
        if self.chunk is None:
            return jax.vmap(fn)(*args)
        return jax.lax.map(lambda a: fn(*a), args, batch_size=self.chunk)

    def init_fn(self):
        def local(keys, ti, hi, targets, sweep, env):
            def one(k, i, h, tg):
                tgt, hp = self.chain_inputs(i, h, tg if self.sharded_targets else targets,
                                            sweep)
                return C.init_carry(self.make(hp), k, tgt, env)

            tg = targets if self.sharded_targets else ti
            return self._map(one, keys, ti, hi, tg)

        return jax.jit(jax.shard_map(local, mesh=self.mesh, in_specs=(
            self.spec, self.spec, self.spec, self.tspec, P(), P()), out_specs=self.spec,
            check_vma=False))

    def call_fn(self, length: int, scan_unroll: bool, masked: bool = False):
        """``length`` steps from ``t0``; ``masked``, only the steps before ``t_end`` run (the
        rest pass the carry through, their infos zero), so one program serves every call of
        up to ``length`` steps. A ``cond`` per step: used on CPU only, since XLA:GPU reads a
        conditional's predicate on the host."""

        def local(keys, ti, hi, targets, sweep, carry, env, t0, t_end):
            def one(k, i, h, tg, c, t):
                tgt, hp = self.chain_inputs(i, h, tg if self.sharded_targets else targets,
                                            sweep)
                kernel = self.make(hp)
                new, info = kernel.step(jax.random.fold_in(k, t), c.state, tgt, env)
                return C.accept(c, new), info

            tg = targets if self.sharded_targets else ti

            def step(carry, t):
                return self._map(lambda k, i, h, g, c: one(k, i, h, g, c, t),
                                 keys, ti, hi, tg, carry)

            def body(carry, t):
                if not masked:
                    return step(carry, t)
                # the step traced once (tracing is most of a first compile), replayed in cond
                closed, shape = jax.make_jaxpr(step, return_shape=True)(carry, t)
                tree = jax.tree.structure(shape)
                run = lambda c, t: tree.unflatten(jaxpr_as_fun(closed)(*jax.tree.leaves((c, t))))
                skip = lambda c, t: (c, jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype),
                                                     shape[1]))
                return jax.lax.cond(t < t_end, run, skip, carry, t)

            ts = t0 + jnp.arange(length, dtype=jnp.int32)
            return jax.lax.scan(body, carry, ts, unroll=True if scan_unroll else 1)

        return jax.jit(jax.shard_map(local, mesh=self.mesh, in_specs=(
            self.spec, self.spec, self.spec, self.tspec, P(), self.spec, P(), P(), P()),
            out_specs=(self.spec, P(None, AXIS)), check_vma=False), donate_argnums=(5,))


@jit  # jaxinv's options: its first compile, in the first segment, counts in run_s
def _summary(carry, info, last):
    stopped = carry.failed | getattr(carry.state, "done", jnp.zeros_like(carry.failed))
    conf = getattr(info, "confidence", None)
    if conf is None and isinstance(getattr(info, "aux", None), dict):
        conf = info.aux.get("confidence")
    return {"loss": jnp.nanmean(jnp.where(carry.failed, jnp.nan, carry.state.loss)),
            "best_conf": jnp.nanmax(conf[last]) if conf is not None else jnp.nan,
            "failed": jnp.sum(carry.failed), "all_stopped": jnp.all(stopped)}


def _default_unroll(unroll: int | None) -> tuple[int | None, bool]:
    """(steps per call, unrolled?): a scan of 8 on XLA:CPU, of a segment elsewhere."""
    if unroll is not None:
        return unroll, True
    return (8 if jax.default_backend() == "cpu" else None), False


def run_chains(
    attack: Attack | Any,
    targets: PyTree,
    env: Any,
    *,
    chains: int = 1,
    steps: int,
    seed: int = 0,
    sweep: dict[str, Any] | None = None,
    chunk: int | None = None,
    segment: int | None = None,
    unroll: int | None = None,
    workdir: str | Path | None = None,
    mesh: jax.sharding.Mesh | None = None,
    progress: bool = True,
    desc: str = "attack",
    config: dict | None = None,
    compile_options: dict | None = None,
) -> C.RunResult:
    """Run ``chains`` chains of ``attack`` for every target for ``steps`` steps.

    Args:
      attack: the kernel (``init``, ``step``) on one chain; with ``sweep``, a factory
        ``attack(**setting) -> Attack`` (e.g. ``functools.partial(mi_face, f, shape)``).
      targets: any pytree whose leaves share a leading axis ``T``: class indices ``[T]``,
        probability vectors ``[T, K]``, victims' gradient pytrees...
      env: what the kernel reads besides the target (model/generator variables);
        replicated on every device.
      chains: chains per target (1 is normal when the target carries the information).
      steps: steps per chain; chains whose ``State.done`` is set are frozen, and the run
        ends early once every chain is done or failed.
      seed: chain ``i`` gets ``fold_in(key(seed), i)``; step keys ``fold_in(., t)``.
      sweep: ``{name: values[H]}``: every setting runs on every target and chain in the
        same compiled call; results get a leading axis ``H``.
      chunk: at most this many chains per device are vmapped at once (bounds memory).
      segment: steps between host syncs (progress, early stop, checkpoint); default
        ``ceil(steps / 20)``.
      unroll: steps per compiled call, fully unrolled; default: a scan of 8 on CPU, of a
        segment elsewhere.
      workdir: checkpoint there every segment and resume from it when rerun; a directory
        of a run with other settings is refused. Device count and ``chunk`` may change.
      mesh: a 1-D device mesh (:func:`make_mesh`); default: all devices.
      config: settings the kernel does not record itself (a model path...), added to the
        run fingerprint.
      compile_options: XLA options for compiling the step, on top of (and overriding)
        :func:`jaxinv.core.compiler.compiler_options`, e.g.
        ``{"xla_backend_optimization_level": 1}``: on XLA:CPU iDLG's L-BFGS step ran 1.4x
        faster with it and compiled a little faster, where MI-Face ran as fast and IG and
        NES ran 1.2-1.3x slower (``benchmarks/gradient_leakage.py --opt-level``).

    ``timing`` holds this call's ``compile_s``, ``run_s`` (steps only, compilation
    excluded, checkpoint writes included), ``wall_s`` and
    ``steps_timed`` (steps run in this call); with ``workdir`` also ``run_s_total`` and
    ``wall_s_total`` over every call that built the checkpoint.

    Returns:
      A :class:`RunResult`; chain-indexed arrays have shape ``[T, chains, ...]``.

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxinv.attacks import mi_face
        >>> f = lambda env, x: x.reshape(len(x), -1) @ env
        >>> attack = mi_face(f, (2, 2, 1), loss="neg_log_p", lr=0.5)
        >>> res = run_chains(attack, [0, 1, 2], jnp.eye(4, 3), chains=2, steps=5,
        ...                  progress=False)
        >>> res.best_x.shape
        (3, 2, 2, 2, 1)
    """
    targets, num_targets = C.check_targets(targets)
    C.check_counts(chains=chains, steps=steps)
    sweep, settings = C.check_sweep(sweep)
    make = C.kernel_for(attack, sweep)
    if chunk is not None:
        C.check_counts(chunk=chunk)
    segment = segment or max(1, math.ceil(steps / 20))
    C.check_counts(segment=segment)
    unroll, unrolled = _default_unroll(unroll)
    layout = C.Layout(num_targets, chains, settings,
                      ((settings,) if sweep else ()) + (num_targets, chains))
    kernel0 = make({k: v[0] for k, v in sweep.items()})
    if kernel0.validate is not None:
        kernel0.validate(targets, env)
    C.probe(kernel0, C.gather(targets, 0), env)
    plan = _Plan(make, layout, chains == 1 and not sweep, chunk, unroll, mesh or make_mesh())
    run = _Run(plan, _cache(attack, plan, targets, env, sweep, unrolled, compile_options),
               unrolled, compile_options)
    tic = time.perf_counter()
    carry, x_init = run.start(seed, targets, sweep, env)
    t, infos, ckpt = 0, [], None
    if workdir:
        ckpt = RunCheckpoint(workdir, C.fingerprint(kernel0, layout=layout, targets=targets,
                                                    seed=seed, sweep=sweep, config=config))
        carry, t, infos = run.resume(ckpt, carry, desc, segment)
    run_tic, t0, c0 = time.perf_counter(), t, run.compile_s
    carry, t = run.loop(carry, t, steps, segment, ckpt, infos, _bar(progress, steps, t, desc))
    # steps only: compilation inside the loop (first call of each length) is not run time
    run_s = time.perf_counter() - run_tic - (run.compile_s - c0)
    timing = {"compile_s": run.compile_s, "run_s": run_s,
              "wall_s": time.perf_counter() - tic, "steps_timed": t - t0}
    if ckpt is not None:
        timing.update(ckpt.add_timing(timing))
    return _result(layout, to_host(carry), x_init, infos, t, timing)


def _cache(attack, plan, targets, env, sweep, unrolled, options) -> dict:
    """This (kernel, shapes, mesh, options)'s compiled functions, kept across calls."""
    key = (id(attack), _sig(targets), _sig(env), _sig(sweep), plan.layout, plan.chunk,
           plan.unroll, unrolled, tuple(plan.mesh.devices.flat),
           tuple(sorted((options or {}).items())), winograd_setting())
    if key not in _COMPILED or _COMPILED[key][0] is not attack:
        _COMPILED[key] = (attack, {})  # holding `attack` keeps its id unique
    while len(_COMPILED) > 64:
        _COMPILED.pop(next(iter(_COMPILED)))
    return _COMPILED[key][1]


class _Run:
    """One run's placed arrays, its compiled calls and the segment loop."""

    def __init__(self, plan: _Plan, compiled: dict, unrolled: bool, options: dict | None):
        self.plan, self.compiled, self.unrolled = plan, compiled, unrolled
        self.options = options
        self.masked = not unrolled and plan.unroll is not None  # CPU: one rolled program
        self.compile_s, self.traced = 0.0, {}
        self.shard = NamedSharding(plan.mesh, plan.spec)

    def start(self, seed, targets, sweep, env):
        """Place keys, indices, targets, sweep and env; initialise every chain."""
        plan, shard = self.plan, self.shard
        repl = NamedSharding(plan.mesh, P())
        kidx = jnp.asarray(_pad(plan.layout.key_index(), plan.n))
        keys = jax.jit(C.chain_keys, out_shardings=shard)(jnp.uint32(seed), kidx)
        ti = put(_pad(plan.layout.target_index(), plan.n), shard)
        hi = put(_pad(plan.layout.setting_index(), plan.n), shard)
        tgt = put(_pad(targets, plan.n) if plan.sharded_targets else targets,
                  NamedSharding(plan.mesh, plan.tspec))
        self.args = (keys, ti, hi, tgt, put(sweep, repl))
        self.env = put(env, repl)
        if "init" not in self.compiled:
            self.compiled["init"] = compile_once(plan.init_fn(), *self.args, self.env)
        carry = self.compiled["init"](*self.args, self.env)
        C.check_init(to_host(carry.failed), plan.layout.n)
        return carry, to_host(carry.state.x)

    def resume(self, ckpt: RunCheckpoint, carry, desc: str, segment: int):
        """Restore the newest intact checkpoint, padded and placed for this mesh."""
        n = self.plan.layout.n
        if "info_tree" not in self.compiled:  # from the program the loop will compile
            size = self.plan.unroll or segment
            self.compiled["info_tree"] = jax.tree.structure(
                self.program(size, carry, 0, size).out_info[1])
        like = jax.tree.map(lambda a: jax.ShapeDtypeStruct((n, *a.shape[1:]), a.dtype), carry)
        got = ckpt.restore(like, self.compiled["info_tree"])  # shapes only: no copy to host
        if got is None:
            return carry, 0, []
        t, host, infos = got
        if jax.process_index() == 0:
            print(f"{desc}: resuming from step {t} (checkpoint in {ckpt.dir})",
                  file=sys.stderr)
        return put(_pad(host, self.plan.n), self.shard), t, infos

    def call(self, length: int, size: int, carry, t0: int):
        """Run ``length`` steps from ``t0`` by the program of ``size`` steps (CPU's rolled
        scans: one program for every remainder; else one per length)."""
        size = size if self.masked else length
        if size not in self.compiled:
            jax.block_until_ready(carry)  # compile_s must not overlap running calls
            traced = self.program(size, carry, t0, length)
            c0 = time.perf_counter()
            self.compiled[size] = traced.lower().compile(compiler_options(self.options))
            self.compile_s += time.perf_counter() - c0
        return self.compiled[size](*self.args, carry, self.env, jnp.int32(t0),
                                   jnp.int32(t0 + length))

    def program(self, size: int, carry, t0: int, length: int) -> jax.stages.Traced:
        """The traced call program of ``size`` steps (tracing is counted in ``compile_s``),
        traced once per run: ``resume`` reads its outputs' structure, ``call`` lowers it."""
        if size not in self.traced:
            c0 = time.perf_counter()
            with winograd(winograd_setting()):  # unset: "auto" in the chains' steps
                self.traced[size] = self.plan.call_fn(size, self.unrolled, self.masked).trace(
                    *self.args, carry, self.env, jnp.int32(t0), jnp.int32(t0 + length))
            self.compile_s += time.perf_counter() - c0
        return self.traced[size]

    def loop(self, carry, t, steps, segment, ckpt, infos, bar):
        """Segments of calls dispatched without a host sync; one sync per segment."""
        n = self.plan.layout.n
        per_call = self.plan.unroll or segment
        while t < steps:
            length, seg, lengths = min(segment, steps - t), [], []
            for start in range(0, length, per_call):
                lengths.append(min(per_call, length - start))
                carry, info = self.call(lengths[-1], per_call, carry, t + start)
                seg.append(info)
            t += length
            s = jax.device_get(_summary(carry, seg[-1], lengths[-1] - 1))  # its last step
            infos.append(jax.tree.map(lambda *a: np.concatenate(a)[:, :n], *[
                jax.tree.map(lambda a, k=k: a[:k], h)
                for h, k in zip(to_host(seg), lengths, strict=True)]))
            if ckpt is not None:
                ckpt.save(t, jax.tree.map(lambda a: a[:n], to_host(carry)), infos[-1])
            if bar is not None:
                bar.update(length)
                post = {"loss": f"{s['loss']:.4g}", "failed": int(s["failed"])}
                if np.isfinite(s["best_conf"]):  # kernels without a confidence: omitted
                    post["best_conf"] = f"{s['best_conf']:.3f}"
                bar.set_postfix(post)
            if s["all_stopped"]:
                break
        if bar is not None:
            bar.close()
        return carry, t


def _bar(progress: bool, steps: int, t: int, desc: str):
    if not progress or jax.process_index() != 0:
        return None
    from tqdm.auto import tqdm
    return tqdm(total=steps, initial=t, desc=desc, unit="step", dynamic_ncols=True)


def _result(layout: C.Layout, host: C.Carry, x_init, infos, t, timing) -> C.RunResult:
    info = (C.unflatten(layout, jax.tree.map(lambda *xs: np.concatenate(xs), *infos), axis=1)
            if infos else None)
    return C.RunResult(state=C.unflatten(layout, host.state),
                       x_init=C.unflatten(layout, x_init),
                       best_x=C.unflatten(layout, host.best_x),
                       best_loss=C.unflatten(layout, host.best_loss),
                       failed=C.unflatten(layout, host.failed), info=info, steps_run=t,
                       timing=timing)
