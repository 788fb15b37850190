"""Queries per second of the score-based attack on the MNIST CNN, in-process and over HTTP.

    python benchmarks/blackbox.py                  # N = 1, 64, 1024 chains; HTTP at 1, 64, 256
    python benchmarks/blackbox.py --chains 64 --queries-per-step 50 --defense round:2

Each step of each chain sends one batch of ``queries_per_step + 1`` queries (the current
point and the NES points). In-process: queries answered per second by ``run_chains``
(forward passes of the CNN behind the oracle, defense included), compile time apart.
HTTP: ``run_remote`` against ``jaxinv serve``'s app on 127.0.0.1 in the same process
(waitress; server and client share the cores), base64 float32 bodies, 1024
images per request; "HTTP share" is the time inside the client's HTTP calls (server
inference included) over the run time.
"""

from __future__ import annotations

import argparse
import os
import platform

import jax
import numpy as np

from jaxinv import defenses, oracles
from jaxinv.attacks import zo_inversion
from jaxinv.core.driver import run_chains
from jaxinv.core.protocol import as_attack
from jaxinv.core.remote import run_remote
from jaxinv.evaluation.results import versions
from jaxinv.http.client import HTTPOracle
from jaxinv.http.serve import make_app, start_server
from jaxinv.models import Classifier, apply_logits, create, init_variables

SHAPE = (28, 28, 1)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--chains", type=int, nargs="+", default=[1, 64, 1024])
    p.add_argument("--queries-per-step", type=int, default=20)
    p.add_argument("--defense", default="")
    p.add_argument("--chunk", type=int, default=32)
    p.add_argument("--http-chains", type=int, nargs="*", default=[1, 64, 256])
    args = p.parse_args()
    v = versions()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"{jax.devices()}; jax {v['jax']}, flax {v['flax']}")
    print(f"settings: NES, {args.queries_per_step} + 1 queries per step, defense "
          f"{args.defense or 'none'!r}, MNIST cnn (random weights), chunk {args.chunk}")
    model = create("cnn", 10)
    env = init_variables(model, SHAPE)
    oracle = oracles.score(apply_logits(model), defenses.parse(args.defense))
    bb = zo_inversion(SHAPE, queries_per_step=args.queries_per_step)
    attack = as_attack(bb, oracle)
    print("in-process")
    print(f"{'N':>6} {'steps':>6} {'queries/s':>10} {'chain-steps/s':>14} {'compile s':>9}")
    for n in args.chains:
        steps = max(8, min(200, 4000 // n))
        chunk = args.chunk if args.chunk and n > args.chunk else None
        res = run_chains(attack, np.arange(n) % 10, env, chains=1, steps=steps,
                         segment=steps, chunk=chunk, progress=False)
        rate = n * res.steps_run / res.timing["run_s"]
        print(f"{n:>6} {steps:>6} {rate * (args.queries_per_step + 1):>10.0f} {rate:>14.0f} "
              f"{res.timing['compile_s']:>9.1f}")
    if not args.http_chains:
        return
    meta = {"input_shape": list(SHAPE), "num_classes": 10, "arch": "cnn", "dataset": "mnist"}
    url, stop = start_server(make_app(Classifier(model, env, meta), args.defense))
    print("HTTP (127.0.0.1, same machine)")
    print(f"{'N':>6} {'steps':>6} {'queries/s':>10} {'requests':>9} {'HTTP share':>10}")
    try:
        for n in args.http_chains:
            steps = max(4, min(50, 2000 // n))
            client = HTTPOracle(url, batch_size=1024)
            run_remote(bb, client, np.arange(n) % 10, chains=1, steps=1, progress=False)
            client = HTTPOracle(url, batch_size=1024)  # timed run, compiled and warm
            res = run_remote(bb, client, np.arange(n) % 10, chains=1, steps=steps,
                             progress=False)
            t = res.timing
            print(f"{n:>6} {steps:>6} {t['queries_sent'] / t['run_s']:>10.0f} "
                  f"{client.requests:>9} {t['oracle_s'] / t['run_s']:>10.0%}")
    finally:
        stop()


if __name__ == "__main__":
    main()
