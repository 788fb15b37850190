"""Throughput of white-box MI-Face chains on the MNIST CNN (jaxinv's ``cnn``).

    python benchmarks/chains.py                 # N = 1, 64, 1024, 4096
    python benchmarks/chains.py --chains 1024 --torch --pooling

Prints, per N: chain-steps/s through ``run_chains``, achieved GFLOP/s (XLA cost
analysis of one step) and its ratio to this machine's measured fp32 matmul
throughput, and compile time. ``--torch`` times the same network and step in
batched PyTorch (if installed); ``--pooling`` times the step with flax's
``nn.max_pool`` and a reshape-max instead of jaxinv's pooling.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxinv.attacks import mi_face
from jaxinv.models import create, init_variables
from jaxinv.results import versions
from jaxinv.run import run_chains

SHAPE = (28, 28, 1)


def cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def matmul_gflops(n: int = 2048, reps: int = 10) -> float:
    a = jnp.ones((n, n), jnp.float32)
    f = jax.jit(lambda a: a @ a)
    f(a).block_until_ready()
    tic = time.perf_counter()
    for _ in range(reps):
        r = f(a)
    r.block_until_ready()
    return 2 * n**3 * reps / (time.perf_counter() - tic) / 1e9


def step_flops(attack, env, n: int) -> float:
    keys = jax.random.split(jax.random.key(0), n)
    states = jax.vmap(attack.init, (0, 0, None))(keys, jnp.arange(n) % 10, env)
    step = jax.jit(jax.vmap(attack.step, (0, 0, None)))
    cost = step.lower(keys, states, env).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    return float(cost.get("flops", float("nan")))


def bench_driver(attack, env, n: int, steps: int) -> dict:
    res = run_chains(attack, np.arange(n) % 10, env, chains=1, steps=steps, segment=steps,
                     progress=False)
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
    net = torch.nn.Sequential(
        torch.nn.Conv2d(1, 32, 5, padding=2), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(32, 64, 5, padding=2), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Flatten(), torch.nn.Linear(7 * 7 * 64, 128), torch.nn.ReLU(),
        torch.nn.Linear(128, 10)).eval()
    for p in net.parameters():
        p.requires_grad_(False)
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
                     init="random")
    print(f"{'N':>6} {'steps':>6} {'chain-steps/s':>14} {'GFLOP/s':>8} {'of matmul':>9} "
          f"{'compile s':>9}")
    for n in args.chains:
        steps = max(8, min(400, int(40000 / n)))
        r = bench_driver(attack, env, n, steps)
        gf = step_flops(attack, env, n) / n * r["chain_steps_per_s"] / 1e9
        print(f"{n:>6} {steps:>6} {r['chain_steps_per_s']:>14.0f} {gf:>8.1f} "
              f"{gf / peak:>9.1%} {r['compile_s']:>9.1f}")
    n = min(max(args.chains), 1024)  # nn.max_pool at 4096 chains needs > 24 GiB
    if args.pooling:
        import flax.linen as nn

        pools = {"nn.max_pool": lambda x: nn.max_pool(x, (2, 2), (2, 2)),
                 "reshape-max": lambda x: x.reshape(x.shape[0], x.shape[1] // 2, 2,
                                                    x.shape[2] // 2, 2, x.shape[3]).max((2, 4))}
        for name, pool in pools.items():
            m = pooled_cnn(pool)
            e = m.init(jax.random.key(0), jnp.zeros((1, *SHAPE)))
            a = mi_face(m.apply, SHAPE, loss="neg_log_p", init="random")
            r = bench_driver(a, e, n, 8)
            print(f"pooling {name:>12}: {r['chain_steps_per_s']:.0f} chain-steps/s at N={n}")
    if args.torch:
        rate = torch_rate(n, 8)
        if rate is None:
            print("torch not installed (pip install torch): no PyTorch reference")
        else:
            import torch
            print(f"PyTorch {torch.__version__} batched, same net/step, N={n}: {rate:.0f} "
                  f"chain-steps/s ({torch.get_num_threads()} threads)")


if __name__ == "__main__":
    main()
