"""README figure: a training image of each class above that class's reconstructions.

    JAXINV_DATA_DIR=../shared/data python experiments/figure.py runs/orl/mi-face_softmax \
        --dataset orl_faces --classes 10 --chains 2 --out experiments/figures/orl_softmax.png

Row 1: the first training image of classes 0..C-1; rows 2..: the best iterate of the
first ``--chains`` chains (``reconstructions.npz`` of a ``jaxinv attack`` run).
"""

import argparse
from pathlib import Path

import numpy as np

from jaxinv import data
from jaxinv.evaluation import results


def main(argv=None) -> Path:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", help="directory holding reconstructions.npz")
    p.add_argument("--dataset", required=True)
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--chains", type=int, default=2)
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    rec = np.load(Path(args.run) / "reconstructions.npz")
    x, y = rec["x"][: args.classes, : args.chains], rec["y"][: args.classes]
    xs, ys = data.load(args.dataset, "train")
    real = np.stack([xs[np.flatnonzero(ys == c)[0]] for c in y])
    rows = np.concatenate([real[None], x.swapaxes(0, 1)])  # [1 + chains, classes, H, W, C]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    results.save_grid(args.out, rows, per_class=args.classes, scale=2 if x.shape[2] > 32 else 4)
    print(f"wrote {args.out}")
    return Path(args.out)


if __name__ == "__main__":
    main()
