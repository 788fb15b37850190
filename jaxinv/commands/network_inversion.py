"""``jaxinv attack tldr`` and ``jaxinv attack ni``: conditional network inversion from a
target's weights (TLDR, or plain network inversion without the TLDR terms)."""

from __future__ import annotations

import argparse

from jaxinv.attacks.inversion_losses import TERMS
from jaxinv.evaluation.results import summary_json
from jaxinv.training.inverter import DEFAULTS

HELP = {"tldr": "TLDR: train a conditional generator for training-like samples (weights)",
        "ni": "network inversion: a conditional generator, no TLDR terms (weights)"}


def _weights(text: str) -> dict[str, float]:
    out = {}
    for part in filter(None, text.split(",")):
        name, _, value = part.partition("=")
        try:
            out[name.strip()] = float(value)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"--weights wants TERM=VALUE,... (terms {', '.join(TERMS)}), got {text!r}"
            ) from None
    return out


def add_attack(asub: argparse._SubParsersAction) -> None:
    """Add ``tldr`` and ``ni`` under ``jaxinv attack``.

    Example:
        >>> p = argparse.ArgumentParser()
        >>> add_attack(p.add_subparsers(dest="attack"))
        >>> a = p.parse_args(["tldr", "--target", "W", "--eval-model", "E", "--out", "D",
        ...                   "--weights", "grad=0.01,tv=0"])
        >>> a.weights, a.steps
        ({'grad': 0.01, 'tv': 0.0}, 1000)
    """
    for name in ("tldr", "ni"):
        q = asub.add_parser(name, help=HELP[name])
        q.add_argument("--target", required=True, help="work dir of the target model")
        q.add_argument("--eval-model", required=True, action="append",
                       help="work dir of an evaluation classifier (repeat for several)")
        q.add_argument("--out", required=True)
        q.add_argument("--steps", type=int, default=1000, help="generator training steps")
        q.add_argument("--samples", type=int, default=64, help="images drawn per class")
        q.add_argument("--classes", default=None, help="e.g. 0,1,2 (default: all)")
        q.add_argument("--seed", type=int, default=0)
        q.add_argument("--weights", type=_weights, default={},
                       help=f"loss weight overrides TERM=VALUE,... ({', '.join(TERMS)})")
        for opt in ("batch_size", "width", "grad_examples", "z_dim"):
            q.add_argument("--" + opt.replace("_", "-"), type=int, default=DEFAULTS[opt])
        for opt in ("lr", "sigma", "dropout", "weight_decay"):
            q.add_argument("--" + opt.replace("_", "-"), type=float, default=DEFAULTS[opt])
        q.add_argument("--conditioning", default=None,
                       help="label (default), vector, matrix or vector-matrix")
        q.add_argument("--upsample", default=DEFAULTS["upsample"],
                       help="transpose (default) or subpixel (faster on CPU)")
        q.add_argument("--output", default=DEFAULTS["output"], help="linear or sigmoid")


def attack(args: argparse.Namespace) -> None:
    """Run ``jaxinv attack tldr|ni``."""
    from jaxinv.workflows.network_inversion import network_inversion

    opts = {k: getattr(args, k) for k in ("batch_size", "width", "grad_examples", "z_dim", "lr",
                                          "sigma", "dropout", "weight_decay", "upsample",
                                          "output")}
    if args.conditioning:
        opts["conditioning"] = args.conditioning
    classes = None
    if args.classes:
        from jaxinv.data import parse_classes

        classes = parse_classes(args.classes)
    rec = network_inversion(args.target, args.eval_model, args.out, preset=args.attack,
                            weights=args.weights, samples=args.samples, steps=args.steps,
                            classes=classes, seed=args.seed, **opts)
    m = rec["metrics"]
    print(summary_json({k: m[k] for k in ("attack_acc_top1", "attack_acc_top5",
                                          "target_confidence")}))
    print(f"results in {args.out}/results.json")


def add(sub: argparse._SubParsersAction) -> None:
    """No top-level command: ``tldr`` and ``ni`` live under ``jaxinv attack``."""


ATTACKS = {"tldr": attack, "ni": attack}
COMMANDS: dict = {}
