"""``jaxinv grid``: every attack against every defense, with the cost in accuracy."""

from __future__ import annotations

import argparse


def add(sub: argparse._SubParsersAction) -> None:
    """Add the ``grid`` sub-parser.

    Example:
        >>> p = argparse.ArgumentParser()
        >>> add(p.add_subparsers(dest="cmd"))
        >>> p.parse_args(["grid", "--dataset", "digits", "--out", "g"]).attacks
        'mi-face,zo,lira'
    """
    from jaxinv.workflows.grid import ATTACKS, DEFENSES

    g = sub.add_parser("grid", help="attack x defense grid: attack success vs utility")
    g.add_argument("--dataset", required=True)
    g.add_argument("--out", required=True, help="grid directory (resumable cell by cell)")
    g.add_argument("--arch", default="mlp", help="architecture of the targets")
    g.add_argument("--eval-arch", default="cnn", help="architecture of the evaluator")
    g.add_argument("--defenses", default=",".join(DEFENSES),
                   help="semicolon- or comma-separated: none, dp:EPS, distill, mid, bido, "
                        "negls (options as NAME:opt=v with ';' between defenses), label, "
                        "round:1, ...")
    g.add_argument("--attacks", default=",".join(ATTACKS),
                   help="comma-separated: lira and inversion attacks (mi-face, zo, "
                        "label-only; gmi, p2i with --generator)")
    g.add_argument("--epochs", type=int, default=None, help="training epochs of the targets")
    g.add_argument("--chains", type=int, default=8)
    g.add_argument("--steps", type=int, default=300)
    g.add_argument("--lira-examples", type=int, default=500)
    g.add_argument("--lira-models", type=int, default=16)
    g.add_argument("--lira-epochs", type=int, default=30)
    g.add_argument("--generator", default=None,
                   help="a `jaxinv train-gan` workdir (gmi, p2i)")
    g.add_argument("--split", default=None,
                   help="the targets' and evaluator's training split (classes:0-4)")
    g.add_argument("--evaluator", default=None,
                   help="an existing evaluation classifier's workdir (default: train one)")
    g.add_argument("--embed", default=None, help="P2I's public-data embedding network")
    g.add_argument("--public", default=None, help="P2I's public split (classes:5-9)")
    g.add_argument("--classes", default=None, help="attacked classes (default: all)")
    g.add_argument("--seed", type=int, default=0)


def _split(text: str) -> tuple[str, ...]:
    sep = ";" if ";" in text else ","
    return tuple(p.strip() for p in text.split(sep) if p.strip())


def run(args: argparse.Namespace) -> None:
    """Run ``jaxinv grid``."""
    from jaxinv.data import parse_classes
    from jaxinv.workflows.grid import grid

    g = grid(args.dataset, args.out, arch=args.arch, eval_arch=args.eval_arch,
             defenses=_split(args.defenses), attacks=_split(args.attacks),
             train={} if args.epochs is None else {"epochs": args.epochs},
             run={"chains": args.chains, "steps": args.steps,
                  **({"classes": parse_classes(args.classes)} if args.classes else {})},
             lira={"examples": args.lira_examples, "models": args.lira_models,
                   "epochs": args.lira_epochs}, generator=args.generator, split=args.split,
             evaluator=args.evaluator, embed=args.embed, public=args.public, seed=args.seed)
    print(f"{len(g['rows'])} defenses; table in {args.out}/grid.md, plot in {args.out}/grid.png")


COMMANDS = {"grid": run}
