"""Run a black-box attack against a remote model: ``ask`` on device, query over HTTP, ``tell``.

:func:`run_remote` is the host-side twin of :func:`jaxinv.run.run_chains` for
:class:`jaxinv.base.BlackBox` kernels. Every step, all chains ``ask`` at once (one jitted,
vmapped call), the queries of the chains still running go to the oracle in one call (the
HTTP client batches and retries them), and all chains ``tell`` at once. Chains that are
``done`` send nothing, so the server's count equals the attack's ``State.queries``. Keys
are derived as in ``run_chains``: the same seed gives the same run as
``run_chains(as_attack(blackbox, oracle), ...)`` against the same (deterministic) model.

The carry is checkpointed with orbax every ``segment`` steps and whenever the oracle
fails (after the client's own retries), so an outage or Ctrl-C loses nothing: run the
same call again to resume.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxinv.base import BlackBox, check_state, healthy
from jaxinv.run import Carry, RunResult, _Checkpointer, _config_fingerprint, accept

Query = Callable[[np.ndarray], np.ndarray]


def _responses(blackbox: BlackBox, probs: np.ndarray, n_queries: int) -> np.ndarray:
    probs = np.asarray(probs)
    if probs.ndim != 2 or probs.shape[0] != n_queries:
        raise ValueError(f"the oracle answered an array of shape {probs.shape} to {n_queries} "
                         "queries; expected probabilities [n_queries, num_classes]")
    if blackbox.kind == "label":
        return probs.argmax(-1).astype(np.int32)
    return probs.astype(np.float32)


def run_remote(
    blackbox: BlackBox,
    query: Query | Any,
    targets: np.ndarray | list[int],
    *,
    chains: int,
    steps: int,
    seed: int = 0,
    segment: int | None = None,
    workdir: str | Path | None = None,
    config: dict | None = None,
    progress: bool = True,
    desc: str = "remote",
) -> RunResult:
    """Run ``chains`` chains per target of ``blackbox`` against ``query``.

    Args:
      blackbox: an ask/tell kernel (``zo_inversion``, ``brep_mi``, ...).
      query: ``x[n, H, W, C] -> probs[n, K]`` on the host, or an object with such a
        ``.query`` method (:class:`jaxinv.client.HTTPOracle`). Label kernels take the
        argmax of the probabilities.
      targets, chains, steps, seed: as in :func:`jaxinv.run.run_chains`.
      segment: steps between checkpoints and progress updates (default ``steps / 20``).
      workdir: checkpoint directory; a run there is resumed, a different run refused.
      config: extra settings that must match on resume (e.g. the URL and defense).

    Returns a :class:`jaxinv.run.RunResult`; ``timing`` holds ``oracle_s`` (time in the
    oracle, i.e. HTTP), ``device_s`` and ``queries_sent``.

    Example:
        >>> oracle = HTTPOracle("http://127.0.0.1:8000")
        >>> res = run_remote(zo_inversion((28, 28, 1)), oracle, range(10), chains=4,
        ...                  steps=100, workdir="runs/remote/checkpoints")
    """
    if not isinstance(blackbox, BlackBox):
        raise TypeError(f"run_remote wants a BlackBox (ask/tell kernel), got {blackbox!r}")
    fn = getattr(query, "query", query)
    if not callable(fn):
        raise TypeError(f"query must be callable or have a .query method, got {query!r}")
    targets = np.asarray(list(targets) if not isinstance(targets, np.ndarray) else targets)
    if targets.ndim != 1 or targets.size == 0 or not np.issubdtype(targets.dtype, np.integer):
        raise ValueError(f"targets must be a non-empty 1-D int array, got {targets.dtype}"
                         f"{targets.shape}")
    for name, v in (("chains", chains), ("steps", steps)):
        if not isinstance(v, int | np.integer) or v < 1:
            raise ValueError(f"{name} must be a positive int, got {v!r}")
    segment = segment or max(1, math.ceil(steps / 20))
    n = targets.size * chains
    q = blackbox.num_queries
    base = jax.random.key(seed)
    chain_keys = jax.vmap(lambda i: jax.random.fold_in(base, i))(jnp.arange(n))
    flat_targets = jnp.asarray(np.repeat(targets, chains), jnp.int32)

    @jax.jit
    def init(keys, tg):
        state = jax.vmap(blackbox.init)(keys, tg)
        return Carry(state, state.x, state.loss, ~jax.vmap(healthy)(state))

    def step_keys(keys, t):
        return jax.vmap(lambda k: jax.random.split(jax.random.fold_in(k, t))[0])(keys)

    @jax.jit
    def ask(keys, carry, t):
        return jax.vmap(blackbox.ask)(step_keys(keys, t), carry.state)

    @jax.jit
    def tell(keys, carry, t, responses):
        new_state, info = jax.vmap(blackbox.tell)(step_keys(keys, t), carry.state, responses)
        return jax.vmap(accept)(carry, new_state), info

    check_state(jax.eval_shape(blackbox.init, jax.random.key(0), jnp.int32(0)))
    carry = init(chain_keys, flat_targets)
    x_init = np.asarray(carry.state.x)
    ckpt = _Checkpointer(workdir, _config_fingerprint(
        chains=chains, targets=targets.tolist(), seed=seed, segment=segment, remote=True,
        config=json.dumps(config, sort_keys=True, default=repr))) if workdir else None
    t, infos, seg = 0, [], []
    if ckpt is not None and ckpt.latest() is not None:
        dummy = (jax.ShapeDtypeStruct((n, q), jnp.int32) if blackbox.kind == "label"
                 else jax.ShapeDtypeStruct((n, q, 2), jnp.float32))  # Info's structure only
        info_shape = jax.eval_shape(tell, chain_keys, carry, 0, dummy)[1]
        t, carry, infos = ckpt.restore(carry, chain_keys, jax.tree.structure(info_shape))
        print(f"{desc}: resuming from step {t} (checkpoint in {workdir})", file=sys.stderr)

    timing = {"oracle_s": 0.0, "device_s": 0.0, "queries_sent": 0}

    def save():  # close the segment: its Info, and a checkpoint of the carry after step t
        nonlocal seg
        if seg:
            infos.append(jax.tree.map(lambda *a: np.stack(a), *seg))
            if ckpt is not None:
                ckpt.save(t, carry, chain_keys, infos[-1])
        seg = []

    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=steps, initial=t, desc=desc, unit="step", dynamic_ncols=True)
    tic = time.perf_counter()
    try:
        while t < steps:
            d0 = time.perf_counter()
            active = ~np.asarray(carry.failed) & ~np.asarray(carry.state.done)
            if not active.any():
                break
            queries = np.asarray(ask(chain_keys, carry, t))
            sent = queries[active].reshape(-1, *queries.shape[2:])
            o0 = time.perf_counter()
            answer = _responses(blackbox, fn(sent), len(sent))
            o1 = time.perf_counter()
            timing["oracle_s"] += o1 - o0
            timing["queries_sent"] += len(sent)
            full = np.zeros((n, q, *answer.shape[1:]), answer.dtype)
            full[active] = answer.reshape(-1, q, *answer.shape[1:])
            carry, info = tell(chain_keys, carry, t, jnp.asarray(full))
            seg.append(jax.device_get(info))
            t += 1
            timing["device_s"] += (time.perf_counter() - d0) - (o1 - o0)
            if t % segment == 0:
                save()
                if bar is not None:
                    loss = np.asarray(carry.state.loss)
                    bar.update(segment)
                    bar.set_postfix(queries=timing["queries_sent"],
                                    best_loss=f"{float(np.min(carry.best_loss)):.4f}",
                                    loss=f"{float(np.median(loss)):.4f}")
    except BaseException as e:  # an oracle outage, bad answers, Ctrl-C: keep the work
        if bar is not None:
            bar.close()
        save()
        e.add_note(f"the attack state after step {t} is saved in {workdir}: rerun the same "
                   "command to resume" if ckpt else
                   "no workdir was given, so the attack state is lost: pass one to keep it")
        raise
    save()
    if bar is not None:
        bar.close()
    timing["run_s"] = time.perf_counter() - tic
    host = jax.device_get(carry)
    shape = (targets.size, chains)
    unflat = lambda a: np.asarray(a).reshape(shape + np.shape(a)[1:])
    info_all = (jax.tree.map(lambda *xs: np.concatenate(xs), *infos) if infos else None)
    if info_all is not None:
        info_all = jax.tree.map(lambda a: a.reshape(a.shape[:1] + shape + a.shape[2:]),
                                info_all)
    return RunResult(state=jax.tree.map(unflat, host.state), x_init=unflat(x_init),
                     best_x=unflat(host.best_x), best_loss=unflat(host.best_loss),
                     failed=unflat(host.failed), info=info_all, steps_run=t, timing=timing)


__all__ = ["run_remote"]
