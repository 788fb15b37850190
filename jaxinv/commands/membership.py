"""``jaxinv membership``: LiRA / RMIA / Shokri / LOSS membership inference with shadows
trained by vmap."""

from __future__ import annotations

import argparse

from jaxinv.evaluation.results import summary_json


def add(sub: argparse._SubParsersAction) -> None:
    """Add the ``membership`` sub-parser.

    Example:
        >>> p = argparse.ArgumentParser()
        >>> add(p.add_subparsers(dest="cmd"))
        >>> p.parse_args(["membership", "--out", "m"]).models
        16
    """
    m = sub.add_parser("membership", help="LiRA, RMIA, Shokri et al. and LOSS membership "
                                          "inference (shadow models trained together)")
    m.add_argument("--out", required=True, help="run directory")
    m.add_argument("--dataset", default="digits", help="digits, mnist, cifar10, ... or .npz")
    m.add_argument("--model", default="mlp", help="architecture of target and shadows")
    m.add_argument("--examples", type=int, default=1000, help="population (training images)")
    m.add_argument("--canaries", type=int, default=0,
                   help="planted noise images with random labels added to the population")
    m.add_argument("--models", type=int, default=16, help="models trained (targets + shadows)")
    m.add_argument("--targets", type=int, default=1,
                   help="models attacked in turn, each with all others as shadows")
    m.add_argument("--epochs", type=int, default=20)
    m.add_argument("--batch-size", type=int, default=64)
    m.add_argument("--lr", type=float, default=1e-3)
    m.add_argument("--weight-decay", type=float, default=0.0)
    m.add_argument("--compare-sequential", action="store_true",
                   help="also train the models one by one and record both wall times")
    m.add_argument("--seed", type=int, default=0)
    m.add_argument("--dp-epsilon", type=float, default=None,
                   help="train every model with DP-SGD at this epsilon")
    m.add_argument("--dp-delta", type=float, default=1e-5)
    m.add_argument("--dp-clip", type=float, default=1.0, help="per-example clipping norm")


def run(args: argparse.Namespace) -> None:
    """Run ``jaxinv membership``."""
    from jaxinv.workflows.membership import membership

    rec = membership(args.out, dataset=args.dataset, model=args.model,
                     examples=args.examples, canaries=args.canaries, models=args.models,
                     targets=args.targets, epochs=args.epochs, batch_size=args.batch_size,
                     lr=args.lr, weight_decay=args.weight_decay, seed=args.seed,
                     compare_sequential=args.compare_sequential,
                     dp=None if args.dp_epsilon is None else {
                         "epsilon": args.dp_epsilon, "delta": args.dp_delta,
                         "clip": args.dp_clip})
    print(summary_json({k: {"auc": round(v["auc"], 4), "tpr_at_0.1%_fpr":
                            round(v["tpr_at_0.1%_fpr"], 4)} for k, v in rec["metrics"].items()}))
    print(f"results in {args.out}/results.json; ROC in {args.out}/roc.png")


COMMANDS = {"membership": run}
