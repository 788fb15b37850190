"""``fit_many`` (M models in one vmap) against the same M models trained one by one.

    python benchmarks/fit_many.py                       # digits cnn, 8 models
    python benchmarks/fit_many.py --dataset mnist --limit 10000 --epochs 1

Same seeds, same random 50% keep-masks, same steps; prints the seconds of each
(compilation excluded: every configuration is run once before it is timed), the
speed-up, and the largest parameter difference between the two (vmap reassociates
float sums, so they agree to ~1e-6, not bit for bit).
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import jax
import numpy as np

from jaxinv import data
from jaxinv.evaluation.results import versions
from jaxinv.models import create
from jaxinv.training import fit_many, unstack


def timed(fn):
    tic = time.perf_counter()
    out = fn()
    jax.block_until_ready(out.variables)
    return out, time.perf_counter() - tic


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="digits")
    p.add_argument("--arch", default="cnn")
    p.add_argument("--models", type=int, default=8)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--limit", type=int, default=None)
    a = p.parse_args()
    v = versions()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, load {os.getloadavg()}; "
          f"jax {v['jax']}, flax {v['flax']}, optax {v['optax']}")
    x, y = data.load(a.dataset, "train")
    x, y = x[:a.limit], y[:a.limit]
    masks = np.random.default_rng(0).random((a.models, len(x))) < 0.5
    module = create(a.arch, int(y.max()) + 1)
    seeds = list(range(a.models))
    kw = dict(epochs=a.epochs, batch_size=a.batch_size, progress=False)
    print(f"settings: {a.dataset} ({len(x)} samples) {a.arch}, {a.models} models, 50% masks, "
          f"{a.epochs} epochs, batch {a.batch_size}")
    fit_many(module, x, y, seeds=seeds, masks=masks, **{**kw, "epochs": 1})  # compile
    fit_many(module, x, y, seeds=[0], masks=masks[:1], **{**kw, "epochs": 1})
    many, t_many = timed(lambda: fit_many(module, x, y, seeds=seeds, masks=masks, **kw))
    diff, t_one = 0.0, 0.0
    for m in seeds:
        one, t = timed(lambda m=m: fit_many(module, x, y, seeds=[m], masks=masks[m:m + 1], **kw))
        t_one += t
        d = jax.tree.map(lambda a, b: float(np.abs(np.asarray(a) - np.asarray(b)).max()),
                         unstack(many.variables, m), unstack(one.variables, 0))
        diff = max(diff, max(jax.tree.leaves(d)))
    print(f"fit_many, {a.models} models at once: {t_many:.1f} s")
    print(f"one by one, {a.models} calls:        {t_one:.1f} s")
    print(f"speed-up {t_one / t_many:.2f}x; max |param difference| {diff:.1e}; "
          f"train accuracy of the last epoch {np.round(many.history[-1, :, 1], 3).tolist()}")


if __name__ == "__main__":
    main()
