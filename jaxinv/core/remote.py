"""Run a black-box attack against a remote model: ``ask`` on device, query over HTTP, ``tell``.

:func:`run_remote` is the host-side twin of :func:`jaxinv.core.driver.run_chains` for
:class:`~jaxinv.core.protocol.BlackBox` kernels and shares its chain layout, keys,
fingerprint and checkpoints (:mod:`jaxinv.core.chains`). Every step all chains ``ask``
at once (one jitted, vmapped call), the queries of the chains still running go to the
oracle in one call (the HTTP client batches and retries them), and all chains ``tell``
at once with the queries they asked. Chains that are ``done`` send nothing, so the
server's count equals the attack's ``State.queries``; the same seed gives the same run
as ``run_chains(as_attack(blackbox, oracle), ...)`` against the same model.

The carry is checkpointed every ``segment`` steps and whenever the oracle fails (after
the client's own retries), so an outage or Ctrl-C loses nothing: rerun to resume.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxinv.core import chains as C
from jaxinv.core.checkpoint import RunCheckpoint
from jaxinv.core.protocol import Attack, BlackBox, PyTree

Query = Callable[[np.ndarray], np.ndarray]


def _responses(blackbox: BlackBox, probs: np.ndarray, n_queries: int) -> np.ndarray:
    probs = np.asarray(probs)
    if probs.ndim != 2 or probs.shape[0] != n_queries:
        raise ValueError(f"the oracle answered an array of shape {probs.shape} to {n_queries} "
                         "queries; expected probabilities [n_queries, num_classes]")
    if not np.all(np.isfinite(probs)):
        raise FloatingPointError("the oracle answered non-finite probabilities (NaN/inf)")
    if blackbox.kind == "label":
        return probs.argmax(-1).astype(np.int32)
    return probs.astype(np.float32)


class _Steps:
    """The jitted, vmapped halves of one step over all chains."""

    def __init__(self, bb: BlackBox, keys, ti, targets, env):
        self.keys, self.ti, self.targets, self.env = keys, ti, targets, env

        def step_keys(t):
            return jax.vmap(lambda k: jax.random.split(jax.random.fold_in(k, t))[0])(keys)

        def tg():
            return jax.vmap(lambda i: C.gather(targets, i))(ti)

        kernel = Attack(bb.init, None)
        self.init = jax.jit(lambda: jax.vmap(lambda k, g: C.init_carry(kernel, k, g, env))(
            keys, tg()))
        self.ask = jax.jit(lambda carry, t: jax.vmap(lambda k, s, g: bb.ask(k, s, g, env))(
            step_keys(t), carry.state, tg()))

        def tell(carry, t, queries, answers):
            new, info = jax.vmap(lambda k, s, g, q, a: bb.tell(k, s, g, q, a, env))(
                step_keys(t), carry.state, tg(), queries, answers)
            return jax.vmap(C.accept)(carry, new), info

        self.tell = jax.jit(tell)


def run_remote(
    blackbox: BlackBox,
    query: Query | Any,
    targets: PyTree,
    *,
    chains: int = 1,
    steps: int,
    env: Any = None,
    seed: int = 0,
    segment: int | None = None,
    workdir: str | Path | None = None,
    config: dict | None = None,
    progress: bool = True,
    desc: str = "remote",
) -> C.RunResult:
    """Run ``chains`` chains per target of ``blackbox`` against ``query``.

    Args:
      blackbox: an ask/tell kernel (``zo_inversion``, ``brep_mi``, ...).
      query: ``x[n, H, W, C] -> probs[n, K]`` on the host, or an object with such a
        ``.query`` method (:class:`jaxinv.http.client.HTTPOracle`). Label kernels take
        the argmax of the probabilities.
      targets, chains, steps, seed: as in :func:`jaxinv.core.driver.run_chains`.
      env: the attacker's own arrays the kernel reads (e.g. a generator), or ``None``.
      segment: steps between checkpoints and progress updates (default ``steps / 20``).
      workdir: checkpoint directory; a run there is resumed, a different run refused.
      config: extra settings that must match on resume (e.g. the URL).

    Returns a :class:`~jaxinv.core.chains.RunResult`; ``timing`` holds ``oracle_s``
    (time in the oracle, i.e. HTTP), ``device_s`` and ``queries_sent``.

    Example:
        >>> import numpy as np
        >>> from jaxinv.attacks import zo_inversion
        >>> answer = lambda x: np.full((len(x), 3), 1 / 3)
        >>> res = run_remote(zo_inversion((2, 2, 1), queries_per_step=4), answer, [0, 2],
        ...                  steps=3, progress=False)
        >>> res.timing["queries_sent"]
        30
    """
    if not isinstance(blackbox, BlackBox):
        raise TypeError(f"run_remote wants a BlackBox (ask/tell kernel), got {blackbox!r}")
    fn = getattr(query, "query", query)
    if not callable(fn):
        raise TypeError(f"query must be callable or have a .query method, got {query!r}")
    targets, num_targets = C.check_targets(targets)
    C.check_counts(chains=chains, steps=steps)
    segment = segment or max(1, math.ceil(steps / 20))
    layout = C.Layout(num_targets, chains, 1, (num_targets, chains))
    C.probe(Attack(blackbox.init, None), C.gather(targets, 0), env)
    keys = C.chain_keys(seed, jnp.asarray(layout.key_index()))
    ops = _Steps(blackbox, keys, jnp.asarray(layout.target_index()),
                 jax.tree.map(jnp.asarray, targets), env)
    carry = ops.init()
    x_init = np.asarray(carry.state.x)
    C.check_init(np.asarray(carry.failed), layout.n)
    kernel = Attack(blackbox.init, None, {**(blackbox.config or {}), "remote": True})
    ckpt = (RunCheckpoint(workdir, C.fingerprint(kernel, layout=layout, targets=targets,
                                                 seed=seed, sweep={}, config=config))
            if workdir else None)
    t, infos = 0, []
    if ckpt is not None:
        q = jax.eval_shape(ops.ask, carry, 0)
        a = (jax.ShapeDtypeStruct((layout.n, blackbox.num_queries), jnp.int32)
             if blackbox.kind == "label" else
             jax.ShapeDtypeStruct((layout.n, blackbox.num_queries, 2), jnp.float32))
        info_shape = jax.eval_shape(ops.tell, carry, 0, q, a)[1]
        got = ckpt.restore(jax.device_get(carry), jax.tree.structure(info_shape))
        if got is not None:
            t, host, infos = got
            carry = jax.tree.map(jnp.asarray, host)
            print(f"{desc}: resuming from step {t} (checkpoint in {workdir})", file=sys.stderr)
    loop, t0 = _Loop(blackbox, ops, fn, ckpt, segment, infos), t
    carry, t = loop.run(carry, t, steps, progress, desc, workdir)
    timing = {**loop.timing, "steps_timed": t - t0}
    if ckpt is not None:
        timing.update(ckpt.add_timing({**timing, "wall_s": timing["run_s"]}))
    return C.RunResult(
        state=C.unflatten(layout, jax.device_get(carry.state)),
        x_init=C.unflatten(layout, x_init), best_x=C.unflatten(layout, np.asarray(carry.best_x)),
        best_loss=C.unflatten(layout, np.asarray(carry.best_loss)),
        failed=C.unflatten(layout, np.asarray(carry.failed)),
        info=(C.unflatten(layout, jax.tree.map(lambda *xs: np.concatenate(xs), *loop.infos),
                          axis=1) if loop.infos else None),
        steps_run=t, timing=timing)


class _Loop:
    """The host loop: ask, query the active chains, tell; checkpoint every segment."""

    def __init__(self, bb, ops, fn, ckpt, segment, infos):
        self.bb, self.ops, self.fn, self.ckpt, self.segment = bb, ops, fn, ckpt, segment
        self.infos, self.seg = infos, []
        self.timing = {"oracle_s": 0.0, "device_s": 0.0, "queries_sent": 0, "run_s": 0.0}

    def save(self, carry, t):
        if self.seg:
            self.infos.append(jax.tree.map(lambda *a: np.stack(a), *self.seg))
            if self.ckpt is not None:
                self.ckpt.save(t, jax.device_get(carry), self.infos[-1])
        self.seg = []

    def step(self, carry, t):
        d0 = time.perf_counter()
        active = ~np.asarray(carry.failed) & ~np.asarray(carry.state.done)
        if not active.any():
            return carry, False
        queries = self.ops.ask(carry, t)
        xq = np.asarray(queries.x)
        sent = xq[active].reshape(-1, *xq.shape[2:])
        o0 = time.perf_counter()
        answer = _responses(self.bb, self.fn(sent), len(sent))
        o1 = time.perf_counter()
        self.timing["oracle_s"] += o1 - o0
        self.timing["queries_sent"] += len(sent)
        q = self.bb.num_queries
        full = np.zeros((len(active), q, *answer.shape[1:]), answer.dtype)
        full[active] = answer.reshape(-1, q, *answer.shape[1:])
        carry, info = self.ops.tell(carry, t, queries, jnp.asarray(full))
        self.seg.append(jax.device_get(info))
        self.timing["device_s"] += (time.perf_counter() - d0) - (o1 - o0)
        return carry, True

    def run(self, carry, t, steps, progress, desc, workdir):
        bar = None
        if progress:
            from tqdm.auto import tqdm
            bar = tqdm(total=steps, initial=t, desc=desc, unit="step", dynamic_ncols=True)
        tic = time.perf_counter()
        try:
            while t < steps:
                carry, moved = self.step(carry, t)
                if not moved:
                    break
                t += 1
                if t % self.segment == 0:
                    self.save(carry, t)
                    if bar is not None:
                        bar.update(self.segment)
                        bar.set_postfix(queries=self.timing["queries_sent"],
                                        best_loss=f"{float(np.min(carry.best_loss)):.4f}")
        except BaseException as e:  # an oracle outage, bad answers, Ctrl-C: keep the work
            self.save(carry, t)
            e.add_note(f"the attack state after step {t} is saved in {workdir}: rerun the "
                       "same command to resume" if self.ckpt else
                       "no workdir was given, so the attack state is lost: pass one to keep it")
            raise
        finally:
            if bar is not None:
                bar.close()
        self.save(carry, t)
        self.timing["run_s"] = time.perf_counter() - tic
        return carry, t


__all__ = ["run_remote"]
