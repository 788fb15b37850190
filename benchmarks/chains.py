"""Throughput of white-box MI-Face chains on the MNIST CNN (jaxinv's ``cnn``).

    python benchmarks/chains.py                 # N = 1, 64, 1024, 4096
    python benchmarks/chains.py --torch --pooling   # the README's figures

Prints, per N: chain-steps/s through ``run_chains``, achieved GFLOP/s (XLA cost
analysis of one step) and its ratio to this machine's measured fp32 matmul
throughput, and compile time; for N > 32 also with ``chunk=32`` (chains vmapped
32 at a time per device: cache-sized batches run faster on CPU). ``--torch`` times
the same network and step in batched PyTorch (if installed) at batch 64, 256 and N;
``--pooling`` times a flax ``nn.Conv`` network with ``nn.max_pool`` and with a
reshape-max instead of jaxinv's layers (same N and chunk). Appends one "white-box pixel
step" record (jaxinv's fastest row against PyTorch's fastest batch) to ``--jsonl``
(``benchmarks/table.py`` reads it).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
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
    cpu_name,
    default_jsonl,
    emit,
    family_record,
    matmul_gflops,
    torch_mnist_cnn,
)

SHAPE = (28, 28, 1)


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
            "run_s": t["run_s"]}


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


def torch_rate(n: int, steps: int) -> float | None:
    try:
        import torch
    except ImportError:
        return None
    torch.manual_seed(0)
    net = torch_mnist_cnn(torch)
    x = torch.rand(n, 1, 28, 28)
    y = torch.arange(n) % 10

    def step(x):
        x = x.detach().requires_grad_(True)
        loss = torch.nn.functional.cross_entropy(net(x), y, reduction="sum")
        (g,) = torch.autograd.grad(loss, x)
        return (x - 0.1 * g).clamp(0, 1).detach()

    x = step(x)
    tic = time.perf_counter()
    for _ in range(steps):
        x = step(x)
    return n * steps / (time.perf_counter() - tic)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--chains", type=int, nargs="+", default=[1, 64, 1024, 4096])
    p.add_argument("--torch", action="store_true", help="also time batched PyTorch")
    p.add_argument("--pooling", action="store_true", help="also time other pooling layers")
    p.add_argument("--chunk", type=int, default=32,
                   help="also time N > chunk with run_chains(chunk=...) (0: skip)")
    p.add_argument("--jsonl", default=default_jsonl(__file__),
                   help="append the 'white-box pixel step' record here ('' : none)")
    args = p.parse_args()

    v = versions()
    print(f"machine: {cpu_name()}, {os.cpu_count()} cores, {jax.devices()}")
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
    rows = []
    for n in args.chains:
        steps = max(24, min(400, int(80000 / n)))
        flops = step_flops(attack, env, min(n, 256)) / min(n, 256)  # per chain-step
        for chunk in (None, args.chunk) if 0 < args.chunk < n else (None,):
            r = bench_driver(attack, env, n, steps, chunk)
            gf = flops * r["chain_steps_per_s"] / 1e9
            rows.append({"n": n, "chunk": chunk, "steps": steps, **r})
            print(f"{n:>6} {chunk or '-':>6} {steps:>6} {r['chain_steps_per_s']:>14.0f} "
                  f"{gf:>8.1f} {gf / peak:>9.1%} {r['compile_s']:>9.1f}")
    n = min(max(args.chains), 1024)  # nn.max_pool at 4096 chains needs > 24 GiB
    if args.pooling:
        import flax.linen as nn

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
    if args.torch:
        for tn in sorted({64, 256, n}):
            rate = torch_rate(tn, max(8, 8192 // tn))
            if rate is None:
                print("torch not installed (pip install torch): no PyTorch reference")
                break
            import torch
            torch_rows.append({"batch": tn, "chain_steps_per_s": rate,
                               "threads": torch.get_num_threads()})
            print(f"PyTorch {torch.__version__} batched, same net/step, batch {tn}: {rate:.0f} "
                  f"chain-steps/s ({torch.get_num_threads()} threads)")
    if args.jsonl and rows:
        best = max(rows, key=lambda r: r["chain_steps_per_s"])
        ref = max(torch_rows, key=lambda r: r["chain_steps_per_s"], default=None)
        work = (f"MI-Face step (neg_log_p, lr 0.1), MNIST CNN, 28x28x1; jaxinv best N="
                f"{best['n']} chunk {best['chunk'] or '-'} of N={','.join(map(str, args.chains))}"
                + (f"; PyTorch best batch {ref['batch']} of "
                   f"{','.join(str(r['batch']) for r in torch_rows)}" if ref else ""))
        emit(args.jsonl, family_record(
            "white-box pixel step", work, "chain-steps/s", best["chain_steps_per_s"],
            ref["chain_steps_per_s"] if ref else None, 1, compile_s=best["compile_s"],
            matmul_gflops=peak, rows=rows, torch_rows=torch_rows))
        print(f"appended to {args.jsonl}")


if __name__ == "__main__":
    main()
