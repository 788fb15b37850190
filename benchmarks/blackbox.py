"""Queries per second of the in-process score-based attack on the MNIST CNN.

    python benchmarks/blackbox.py                  # N = 1, 64, 1024 chains
    python benchmarks/blackbox.py --chains 64 --queries-per-step 50 --defense round:2

Each step of each chain sends ``queries_per_step + 1`` queries to a score oracle (NES
estimate + the new point); the figure is queries answered per second by
``run_chains`` (forward passes of the CNN behind the oracle, defense included), with
compile time reported separately. The HTTP attack is not implemented yet.
"""

from __future__ import annotations

import argparse
import os
import platform

import jax
import numpy as np

from jaxinv import defenses, oracles
from jaxinv.attacks import zo_inversion
from jaxinv.models import apply_logits, create, init_variables
from jaxinv.results import versions
from jaxinv.run import run_chains

SHAPE = (28, 28, 1)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--chains", type=int, nargs="+", default=[1, 64, 1024])
    p.add_argument("--queries-per-step", type=int, default=20)
    p.add_argument("--defense", default="")
    p.add_argument("--chunk", type=int, default=32)
    args = p.parse_args()
    v = versions()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"{jax.devices()}; jax {v['jax']}, flax {v['flax']}")
    print(f"settings: NES, {args.queries_per_step} + 1 queries per step, defense "
          f"{args.defense or 'none'!r}, MNIST cnn (random weights), chunk {args.chunk}")
    model = create("cnn", 10)
    env = init_variables(model, SHAPE)
    oracle = oracles.score(apply_logits(model), defenses.parse(args.defense))
    attack = zo_inversion(oracle, SHAPE, queries_per_step=args.queries_per_step)
    print(f"{'N':>6} {'steps':>6} {'queries/s':>10} {'chain-steps/s':>14} {'compile s':>9}")
    for n in args.chains:
        steps = max(8, min(200, 4000 // n))
        chunk = args.chunk if args.chunk and n > args.chunk else None
        res = run_chains(attack, np.arange(n) % 10, env, chains=1, steps=steps,
                         segment=steps, chunk=chunk, progress=False)
        rate = n * res.steps_run / res.timing["run_s"]
        print(f"{n:>6} {steps:>6} {rate * (args.queries_per_step + 1):>10.0f} {rate:>14.0f} "
              f"{res.timing['compile_s']:>9.1f}")


if __name__ == "__main__":
    main()
