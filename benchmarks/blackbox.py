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

PyTorch reference (unless ``--no-torch``; without a defense): the same NES step, batched and
eager: the same CNN in PyTorch (random weights), chains in batches of ``min(N, 256)``, each
step one forward pass (no autograd) of the current points and the ``queries_per_step``
antithetic NES points (sigma 0.01, clipped to [0, 1]), ``-log p_y``, the NES estimate, Adam
(lr 0.05) and the clip to [0, 1]; ``--repeats`` timed runs after a warm-up step, median.
Appends a "zeroth-order queries" record (jaxinv's fastest in-process row against PyTorch's
fastest batch, queries/s) to ``--jsonl`` for ``benchmarks/table.py``.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

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

sys.path.insert(0, str(Path(__file__).parent))
from common import default_jsonl, emit, family_record, torch_mnist_cnn

SHAPE = (28, 28, 1)


def torch_nes_rate(torch, n: int, queries_per_step: int, steps: int, repeats: int,
                   sigma: float = 0.01, lr: float = 0.05) -> list[float]:
    """Queries/s of ``n`` NES chains in batched eager PyTorch (``zo_inversion``'s defaults:
    antithetic NES, ``-log p_y``, Adam, box [0, 1]), one per timed run."""
    torch.manual_seed(0)
    net, m = torch_mnist_cnn(torch), queries_per_step // 2
    y = torch.arange(n) % 10
    z = (torch.rand(n, 1, 28, 28) * 0.25).requires_grad_(True)  # init_range (0, 0.25)
    opt = torch.optim.Adam([z], lr=lr)

    def step():
        with torch.no_grad():
            u = torch.randn(n, m, 1, 28, 28)
            zz = z.detach()[:, None]
            pts = torch.cat([zz, zz + sigma * u, zz - sigma * u], 1).clamp_(0, 1)
            logp = torch.log_softmax(net(pts.view(-1, 1, 28, 28)), -1)
            c = -logp.view(n, 2 * m + 1, 10)[torch.arange(n), :, y].clamp(min=-27.631)
            g = ((c[:, 1:m + 1] - c[:, m + 1:])[..., None, None, None] * u).sum(1)
            z.grad = g / (2 * sigma * m)
        opt.step()
        with torch.no_grad():
            z.clamp_(0, 1)

    step()  # warm-up
    rates = []
    for _ in range(repeats):
        tic = time.perf_counter()
        for _ in range(steps):
            step()
        rates.append(n * steps * (queries_per_step + 1) / (time.perf_counter() - tic))
    return rates


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--chains", type=int, nargs="+", default=[1, 64, 1024])
    p.add_argument("--queries-per-step", type=int, default=20)
    p.add_argument("--defense", default="")
    p.add_argument("--chunk", type=int, default=32)
    p.add_argument("--http-chains", type=int, nargs="*", default=[1, 64, 256])
    p.add_argument("--no-torch", action="store_true", help="skip the PyTorch NES reference")
    p.add_argument("--repeats", type=int, default=3, help="timed runs of the PyTorch reference")
    p.add_argument("--jsonl", default=default_jsonl(__file__),
                   help="append the 'zeroth-order queries' record here ('' : none)")
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
    rows = []
    for n in args.chains:
        steps = max(8, min(200, 4000 // n))
        chunk = args.chunk if args.chunk and n > args.chunk else None
        res = run_chains(attack, np.arange(n) % 10, env, chains=1, steps=steps,
                         segment=steps, chunk=chunk, progress=False)
        rate = n * res.steps_run / res.timing["run_s"]
        print(f"{n:>6} {steps:>6} {rate * (args.queries_per_step + 1):>10.0f} {rate:>14.0f} "
              f"{res.timing['compile_s']:>9.1f}")
        rows.append({"n": n, "chunk": chunk, "steps": steps, "compile_s": res.timing["compile_s"],
                     "queries_per_s": rate * (args.queries_per_step + 1)})
    torch_rows = torch_reference(args)
    if args.jsonl and rows:
        best = max(rows, key=lambda r: r["queries_per_s"])
        ref = max(torch_rows, key=lambda r: r["queries_per_s"], default=None)
        work = (f"NES, {args.queries_per_step} + 1 queries per step, defense "
                f"{args.defense or 'none'}, MNIST CNN, in-process; jaxinv best N={best['n']} "
                f"chunk {best['chunk'] or '-'} of N={','.join(map(str, args.chains))}"
                + (f"; PyTorch best batch {ref['batch']}" if ref else ""))
        emit(args.jsonl, family_record(
            "zeroth-order queries", work, "queries/s", best["queries_per_s"],
            ref["queries_per_s"] if ref else None, args.repeats if ref else 1,
            compile_s=best["compile_s"], jaxinv_repeats=1, rows=rows, torch_rows=torch_rows))
        print(f"appended to {args.jsonl}")
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


def torch_reference(args: argparse.Namespace) -> list[dict]:
    """Time the PyTorch NES reference at chain batches ``min(N, 256)``; print its rows."""
    if args.no_torch:
        return []
    if args.defense:
        print("PyTorch reference: skipped (it has no defenses)")
        return []
    try:
        import torch
    except ImportError:
        print("torch not installed (pip install torch): no PyTorch reference")
        return []
    print(f"PyTorch {torch.__version__} batched NES, same net and queries, "
          f"{torch.get_num_threads()} threads, median of {args.repeats}")
    print(f"{'batch':>6} {'steps':>6} {'queries/s':>10}")
    rows = []
    for b in sorted({min(n, 256) for n in args.chains}):
        steps = max(4, min(50, 1000 // b))
        rates = torch_nes_rate(torch, b, args.queries_per_step, steps, args.repeats)
        rows.append({"batch": b, "steps": steps, "queries_per_s": statistics.median(rates),
                     "repeat_rates": rates, "threads": torch.get_num_threads()})
        print(f"{b:>6} {steps:>6} {rows[-1]['queries_per_s']:>10.0f}")
    return rows


if __name__ == "__main__":
    main()
