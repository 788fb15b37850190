"""Throughput of white-box MI-Face chains on the MNIST CNN (jaxinv's ``cnn``).

    python benchmarks/chains.py                 # N = 1, 64, 1024, 4096
    python benchmarks/chains.py --torch --pooling   # the README's figures

Prints, per N: chain-steps/s through ``run_chains`` (steps only, compilation excluded;
median of ``--repeats`` repeats alternating with the PyTorch ones), achieved GFLOP/s (XLA
cost analysis of one step) and its ratio to this machine's measured fp32 matmul
throughput, and compile time (the first call; step counts are multiples of the CPU unroll,
so one call length compiles); for N > 32 also with ``chunk=32`` (chains vmapped 32 at a
time per device: cache-sized batches run faster on CPU). ``--torch`` times the same
network and step in batched PyTorch (if installed) at batch 64, 256 and N;
``--pooling`` times a flax ``nn.Conv`` network with ``nn.max_pool`` and with a
reshape-max instead of jaxinv's layers (same N and chunk; diagnostic, not in the record).
Appends one "white-box pixel step" record (jaxinv's fastest row against PyTorch's fastest
batch) to ``--jsonl`` (``benchmarks/table.py`` reads it).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jaxinv.attacks import mi_face
from jaxinv.core.driver import run_chains
from jaxinv.evaluation.results import versions
from jaxinv.models import create, init_variables

sys.path.insert(0, str(Path(__file__).parent))
from common import (
    alternate,
    cpu_name,
    default_jsonl,
    emit,
    family_record,
    load_text,
    matmul_gflops,
    torch_mi_face_step,
)

SHAPE = (28, 28, 1)
UNROLL = 8  # run_chains' steps per compiled call on XLA:CPU: step counts are multiples


def step_flops(attack, env, n: int) -> float:
    keys = jax.random.split(jax.random.key(0), n)
    targets = jnp.arange(n) % 10
    states = jax.vmap(attack.init, (0, 0, None))(keys, targets, env)
    step = jax.jit(jax.vmap(attack.step, (0, 0, 0, None)))
    cost = step.lower(keys, states, targets, env).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    return float(cost.get("flops", float("nan")))


def bench_driver(attack, env, n: int, steps: int, chunk: int | None = None) -> dict:
    res = run_chains(attack, np.arange(n) % 10, env, chains=1, steps=steps, segment=steps,
                     chunk=chunk, progress=False)
    t = res.timing
    return {"chain_steps_per_s": n * res.steps_run / t["run_s"], "compile_s": t["compile_s"],
            "run_s": t["run_s"], "units_s": (n * res.steps_run, t["run_s"])}


def pooled_cnn(pool):
    import flax.linen as nn

    class CNN(nn.Module):
        @nn.compact
        def __call__(self, x):
            for ch in (32, 64):
                x = pool(nn.relu(nn.Conv(ch, (5, 5), padding="SAME")(x)))
            x = nn.relu(nn.Dense(128)(x.reshape(x.shape[0], -1)))
            return nn.Dense(10)(x)

    return CNN()


def torch_step_fn(n: int):
    """Batched PyTorch MI-Face on ``n`` images: ``go(steps) -> chain-steps`` (None: no torch)."""
    try:
        import torch
    except ImportError:
        return None
    step = torch_mi_face_step(torch, n)
    state = {"x": torch.rand(n, 1, 28, 28)}

    def go(steps: int) -> int:
        for _ in range(steps):
            state["x"] = step(state["x"])
        return n * steps

    return go


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--chains", type=int, nargs="+", default=[1, 64, 1024, 4096])
    p.add_argument("--torch", action="store_true", help="also time batched PyTorch")
    p.add_argument("--pooling", action="store_true", help="also time other pooling layers")
    p.add_argument("--chunk", type=int, default=32,
                   help="also time N > chunk with run_chains(chunk=...) (0: skip)")
    p.add_argument("--repeats", type=int, default=3, help="alternating timed repeats")
    p.add_argument("--jsonl", default=default_jsonl(__file__),
                   help="append the 'white-box pixel step' record here ('' : none)")
    args = p.parse_args()

    v = versions()
    print(f"machine: {cpu_name()}, {os.cpu_count()} cores, {jax.devices()}, load "
          f"{load_text()}")
    print(f"versions: jax {v['jax']}, jaxlib {v['jaxlib']}, flax {v['flax']}, "
          f"python {v['python']}, XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}")
    peak = matmul_gflops()
    print(f"fp32 matmul (2048^2, jit): {peak:.0f} GFLOP/s")
    print("settings: MI-Face neg_log_p, random init, lr 0.1; CNN conv5x5(32)-pool-conv5x5(64)-"
          "pool-dense128-dense10 on 28x28x1; one target class per chain")
    model = create("cnn", 10)
    env = init_variables(model, SHAPE)
    attack = mi_face(lambda e, x: model.apply(e, x)[0], SHAPE, loss="neg_log_p",
                     init="random", lr=0.1, tv=0.0)  # the step the PyTorch reference runs
    print(f"{'N':>6} {'chunk':>6} {'steps':>6} {'chain-steps/s':>14} {'GFLOP/s':>8} "
          f"{'of matmul':>9} {'compile s':>9}")
    configs, flops = [], {}
    for n in args.chains:
        steps = UNROLL * max(3, min(50, 10000 // n))  # whole calls of the CPU unroll
        flops[n] = step_flops(attack, env, min(n, 256)) / min(n, 256)  # per chain-step
        configs += [(n, chunk, steps) for chunk in
                    ((None, args.chunk) if 0 < args.chunk < n else (None,))]
    compile_s = {c: bench_driver(attack, env, c[0], c[2], c[1])["compile_s"] for c in configs}
    sides = {c: (lambda c=c: bench_driver(attack, env, c[0], c[2], c[1])["units_s"])
             for c in configs}
    n = min(max(args.chains), 1024)
    torch_go = {tn: torch_step_fn(tn) for tn in sorted({64, 256, n})} if args.torch else {}
    if args.torch and None in torch_go.values():
        print("torch not installed (pip install torch): no PyTorch reference")
        torch_go = {}
    for tn, go in torch_go.items():
        go(2)  # warm-up
        sides[f"torch {tn}"] = lambda tn=tn, go=go: go(max(8, 8192 // tn))
    rates = alternate(sides, args.repeats)
    rows = []
    for c in configs:
        (n_, chunk, steps), r = c, statistics.median(rates[c])
        gf = flops[n_] * r / 1e9
        rows.append({"n": n_, "chunk": chunk, "steps": steps, "chain_steps_per_s": r,
                     "repeats": rates[c], "compile_s": compile_s[c]})
        print(f"{n_:>6} {chunk or '-':>6} {steps:>6} {r:>14.0f} {gf:>8.1f} {gf / peak:>9.1%} "
              f"{compile_s[c]:>9.1f}")
    if args.pooling:  # diagnostic: flax's pooling in the same network (nn.max_pool at
        import flax.linen as nn  # 4096 chains needs > 24 GiB, hence n <= 1024)

        pools = {"nn.max_pool": lambda x: nn.max_pool(x, (2, 2), (2, 2)),
                 "reshape-max": lambda x: x.reshape(x.shape[0], x.shape[1] // 2, 2,
                                                    x.shape[2] // 2, 2, x.shape[3]).max((2, 4))}
        for name, pool in pools.items():
            m = pooled_cnn(pool)
            e = m.init(jax.random.key(0), jnp.zeros((1, *SHAPE)))
            a = mi_face(m.apply, SHAPE, loss="neg_log_p", init="random", lr=0.1, tv=0.0)
            r = bench_driver(a, e, n, 24, args.chunk or None)
            print(f"flax nn.Conv + {name}: {r['chain_steps_per_s']:.0f} chain-steps/s at N={n}, "
                  f"chunk {args.chunk or '-'}")
    torch_rows = []
    if torch_go:
        import torch
        for tn in torch_go:
            r = statistics.median(rates[f"torch {tn}"])
            torch_rows.append({"batch": tn, "chain_steps_per_s": r,
                               "repeats": rates[f"torch {tn}"],
                               "threads": torch.get_num_threads()})
            print(f"PyTorch {torch.__version__} batched, same net/step, batch {tn}: {r:.0f} "
                  f"chain-steps/s ({torch.get_num_threads()} threads)")
    print(f"medians of {args.repeats} alternating repeats; load at the end {load_text()}")
    if args.jsonl and rows:
        best = max(rows, key=lambda r: r["chain_steps_per_s"])
        ref = max(torch_rows, key=lambda r: r["chain_steps_per_s"], default=None)
        work = (f"MI-Face step (neg_log_p, lr 0.1), MNIST CNN, 28x28x1; jaxinv best N="
                f"{best['n']} chunk {best['chunk'] or '-'} of N={','.join(map(str, args.chains))}"
                + (f"; PyTorch best batch {ref['batch']} of "
                   f"{','.join(str(r['batch']) for r in torch_rows)}" if ref else ""))
        emit(args.jsonl, family_record(
            "white-box pixel step", work, "chain-steps/s", best["chain_steps_per_s"],
            ref["chain_steps_per_s"] if ref else None, args.repeats,
            compile_s=best["compile_s"],
            matmul_gflops=peak, rows=rows, torch_rows=torch_rows))
        print(f"appended to {args.jsonl}")


if __name__ == "__main__":
    main()
