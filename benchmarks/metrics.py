"""Time and peak memory of the leakage metrics at MNIST scale.

    python benchmarks/metrics.py                       # 60,000 private x 10,000 reconstructions
    python benchmarks/metrics.py --private 6000 --recs 1000 --dim 784

Random features stand in for evaluation features (the cost depends on sizes only).
Prints, per stage, wall time; at the end the process's peak resident memory.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import time

import jax
import numpy as np

from jaxinv import metrics
from jaxinv.evaluation.results import versions


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--private", type=int, default=60000)
    p.add_argument("--recs", type=int, default=10000)
    p.add_argument("--dim", type=int, default=128, help="feature dimension (cnn evaluator: 128)")
    p.add_argument("--classes", type=int, default=10)
    args = p.parse_args()
    v = versions()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"{jax.devices()}; jax {v['jax']}, numpy {v['numpy']}")
    print(f"settings: {args.private} private x {args.recs} reconstructions, {args.dim}-d "
          f"features, {args.classes} classes, chunks {metrics.distances.QUERY_CHUNK} x "
          f"{metrics.distances.REF_CHUNK}")
    rng = np.random.default_rng(0)
    fp = rng.normal(size=(args.private, args.dim)).astype(np.float32)
    yp = rng.integers(0, args.classes, args.private)
    fr = rng.normal(size=(args.recs, args.dim)).astype(np.float32)
    yr = rng.integers(0, args.classes, args.recs)
    stages = {
        "nearest private->recs (class-masked)": lambda: metrics.nearest(
            fp, fr, query_labels=yp, ref_labels=yr),
        "nearest recs->private (class-masked)": lambda: metrics.nearest(
            fr, fp, query_labels=yr, ref_labels=yp),
        "knn radius k=5 within private classes": lambda: metrics.knn_radius(fp, 5, labels=yp),
        "ddcs_proxy (all of the above)": lambda: metrics.ddcs_proxy(fp, yp, fr, yr),
        "prdc k=5 per class": lambda: metrics.prdc(fp, fr, 5, real_labels=yp, fake_labels=yr),
        "fid": lambda: metrics.fid(fr, fp),
    }
    for name, fn in stages.items():
        tic = time.perf_counter()
        fn()
        print(f"{name:>40}: {time.perf_counter() - tic:7.1f} s")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"peak resident memory: {peak:.2f} GiB")


if __name__ == "__main__":
    main()
