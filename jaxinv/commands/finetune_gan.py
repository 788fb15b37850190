"""``jaxinv finetune-gan``: fine-tune a GAN prior against a target for the attacked classes
(the sample-level generative framework, :mod:`jaxinv.training.finetune`; jaxinv's own
formulation, the paper's exact formulas being unavailable)."""

from __future__ import annotations

import argparse

from jaxinv.training import finetune as _ft


def add(sub: argparse._SubParsersAction) -> None:
    """Add the ``finetune-gan`` sub-parser.

    Example:
        >>> p = argparse.ArgumentParser()
        >>> add(p.add_subparsers(dest="cmd"))
        >>> a = p.parse_args(["finetune-gan", "--generator", "g", "--target", "t",
        ...                   "--classes", "0-4", "--workdir", "g2", "--adam"])
        >>> a.steps, a.ngd, a.lr
        (500, False, None)
    """
    d = _ft.DEFAULTS
    g = sub.add_parser("finetune-gan", help="fine-tune a GAN prior for an attack (entropy loss, "
                                            "natural-gradient steps)")
    g.add_argument("--generator", required=True, help="GAN dir (jaxinv train-gan --workdir)")
    g.add_argument("--target", required=True, help="target model dir (jaxinv train --workdir)")
    g.add_argument("--classes", required=True, help="attacked classes, e.g. 0-4 or 0,2,4")
    g.add_argument("--workdir", required=True,
                   help="new dir for the fine-tuned GAN (usable as any attack's --generator)")
    g.add_argument("--steps", type=int, default=d["steps"])
    g.add_argument("--batch-size", type=int, default=d["batch_size"])
    g.add_argument("--lr", type=float, default=None,
                   help=f"default {_ft.LR_NGD} (natural gradient) or {_ft.LR_ADAM} (--adam)")
    for name in ("entropy_weight", "diversity_weight", "realism_weight", "anchor_weight",
                 "damping", "fisher_decay", "momentum"):
        g.add_argument(f"--{name.replace('_', '-')}", type=float, default=d[name])
    g.add_argument("--adam", dest="ngd", action="store_false",
                   help="plain Adam instead of natural-gradient steps (the ablation)")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--checkpoint-every", type=int, default=100)
    g.add_argument("--grid-every", type=int, default=100,
                   help="write workdir/samples/step_N.png every this many steps")


def finetune_gan(args: argparse.Namespace) -> None:
    """Run ``jaxinv finetune-gan``."""
    from jaxinv.data import parse_classes
    from jaxinv.training.classifier import load_classifier
    from jaxinv.training.gan import load_gan

    classes = parse_classes(args.classes)
    gan, target = load_gan(args.generator), load_classifier(args.target)
    keys = ("steps", "batch_size", "lr", "entropy_weight", "diversity_weight",
            "realism_weight", "anchor_weight", "ngd", "damping", "fisher_decay", "momentum",
            "seed", "checkpoint_every", "grid_every")
    tuned = _ft.finetune_gan(gan, target, classes, args.workdir, source=args.generator,
                             **{k: getattr(args, k) for k in keys})
    m = tuned.meta
    b, a = m["finetune_stats"]["before"], m["finetune_stats"]["after"]
    print(f"fine-tuned {args.generator} for classes {args.classes} of {args.target} "
          f"({m['finetune_settings']['steps']} steps, "
          f"{'natural gradient' if args.ngd else 'Adam'}, {m['finetune_seconds_total']:.0f} s)")
    for k in ("confidence", "coverage_entropy", "coverage", "in_classes", "critic",
              "objective"):
        print(f"  {k:17s} {b[k]:8.4f} -> {a[k]:8.4f}")
    print(f"use it with --generator {args.workdir}; samples in {args.workdir}/samples")


COMMANDS = {"finetune-gan": finetune_gan}
