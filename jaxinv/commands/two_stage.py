"""``jaxinv two-stage``: membership scores beside inversion leakage, per training sample."""

from __future__ import annotations

import argparse

from jaxinv.evaluation.results import summary_json


def add(sub: argparse._SubParsersAction) -> None:
    """Add the ``two-stage`` sub-parser.

    Example:
        >>> p = argparse.ArgumentParser()
        >>> add(p.add_subparsers(dest="cmd"))
        >>> p.parse_args(["two-stage", "--membership", "m", "--run", "r"]).attack
        'rmia'
    """
    t = sub.add_parser("two-stage", help="per member of a membership run's model: its "
                                         "membership score beside its inversion leakage")
    t.add_argument("--membership", required=True, help="a `jaxinv membership` run directory")
    t.add_argument("--target", type=int, default=0, help="which of its models")
    t.add_argument("--export", default=None,
                   help="save that model as a classifier directory (with members.npz) to "
                        "attack, and stop")
    t.add_argument("--run", default=None, help="an inversion run of that model, evaluated "
                                               "with --private EXPORT/members.npz:train")
    t.add_argument("--attack", default="rmia", help="membership attack whose scores to use")
    t.add_argument("--fpr", type=float, default=0.01,
                   help="false-positive rate of the membership threshold")


def run(args: argparse.Namespace) -> None:
    """Run ``jaxinv two-stage``."""
    from jaxinv.workflows.two_stage import export_target, two_stage

    if args.export:
        out = export_target(args.membership, args.export, args.target)
        print(f"model {args.target} saved in {out}; attack it, then `jaxinv evaluate --run R "
              f"--eval-model E --private {out}/members.npz:train`")
        return
    if not args.run:
        raise ValueError("two-stage: give --export DIR or --run R")
    rec = two_stage(args.membership, args.run, attack=args.attack, target=args.target,
                    fpr=args.fpr)
    print(summary_json({k: rec[k] for k in ("members_evaluated", "flagged", "exposed", "both",
                                            "spearman")}))
    print(f"written to {args.run}/two_stage.json, two_stage.npz, two_stage.png")


COMMANDS = {"two-stage": run}
