"""``jaxinv train-gan``: train the GAN prior of generative attacks on a public split."""

from __future__ import annotations

import argparse

from jaxinv.training import gan as _gan


def add(sub: argparse._SubParsersAction) -> None:
    """Add the ``train-gan`` sub-parser.

    Example:
        >>> p = argparse.ArgumentParser()
        >>> add(p.add_subparsers(dest="cmd"))
        >>> p.parse_args(["train-gan", "--dataset", "mnist", "--public", "classes:5-9",
        ...               "--workdir", "g"]).steps
        4000
    """
    g = sub.add_parser("train-gan", help="train a WGAN-GP prior on a public split")
    g.add_argument("--dataset", required=True, help="digits, mnist, fashion_mnist, ... or .npz")
    g.add_argument("--public", required=True,
                   help="public side of the protocol: classes:5-9 (GMI's MNIST protocol) or "
                        "sample:0.5 (a disjoint public half of the same classes)")
    g.add_argument("--workdir", required=True)
    g.add_argument("--steps", type=int, default=4000, help="generator iterations")
    for name in ("batch_size", "n_critic", "z_dim", "width", "critic_width"):
        g.add_argument(f"--{name.replace('_', '-')}", type=int, default=_gan.DEFAULTS[name])
    for name in ("lr", "b1", "b2", "gp"):
        g.add_argument(f"--{name}", type=float, default=_gan.DEFAULTS[name])
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--grid-every", type=int, default=500,
                   help="write workdir/samples/step_N.png every this many iterations")


def train_gan(args: argparse.Namespace) -> None:
    """Run ``jaxinv train-gan``."""
    x = _gan.public_images(args.dataset, args.public)
    keys = ("batch_size", "n_critic", "z_dim", "width", "critic_width", "lr", "b1", "b2",
            "gp", "seed")
    gan = _gan.train_gan(x, args.workdir, steps=args.steps, grid_every=args.grid_every,
                         meta={"dataset": args.dataset, "public": args.public},
                         **{k: getattr(args, k) for k in keys})
    m = gan.meta
    print(f"GAN trained on {m['n_public']} public images of {args.dataset} ({args.public}): "
          f"{m['steps']} iterations, {m['train_seconds_total']:.0f} s, "
          f"{m['images_per_s']:.0f} images/s; samples in {args.workdir}/samples")


COMMANDS = {"train-gan": train_gan}
