"""``jaxinv p2i``: P2I (Liu et al., ECCV 2024), the prediction-to-image black-box attack."""

from __future__ import annotations

import argparse

from jaxinv.attacks import p2i as _p2i
from jaxinv.data import parse_classes
from jaxinv.evaluation.results import summary_json
from jaxinv.training.encoder import DEFAULTS


def add(sub: argparse._SubParsersAction) -> None:
    """Add the ``p2i`` sub-parser.

    Example:
        >>> p = argparse.ArgumentParser()
        >>> add(p.add_subparsers(dest="cmd"))
        >>> a = p.parse_args(["p2i", "--target", "W", "--generator", "G", "--embed-model", "P",
        ...                   "--eval-model", "E", "--dataset", "mnist", "--public",
        ...                   "classes:5-9", "--out", "O"])
        >>> a.n_samples, a.ensemble_n, a.steps, a.id_weight
        (20000, 10, 2000, 0.1)
    """
    q = sub.add_parser("p2i", help="P2I: train a prediction-to-latent encoder once from "
                       "one-time queries, then invert every class with no query")
    q.add_argument("--target", required=True, help="work dir of the target model")
    q.add_argument("--generator", required=True, help="work dir of the GAN prior (train-gan)")
    q.add_argument("--embed-model", required=True,
                   help="work dir of a classifier trained on PUBLIC data (ID loss features); "
                        "never the evaluation model")
    q.add_argument("--eval-model", required=True, help="work dir of the evaluation classifier")
    q.add_argument("--dataset", required=True, help="dataset of the public images")
    q.add_argument("--public", required=True, help="public split, e.g. classes:5-9 or "
                                                   "sample:0.5")
    q.add_argument("--out", required=True)
    q.add_argument("--n-samples", type=int, default=20_000,
                   help="generator samples queried once (P2I: 100,000)")
    q.add_argument("--public-max", type=int, default=None,
                   help="query at most this many public images (a seeded random subset)")
    q.add_argument("--train-per-class", type=int, default=None,
                   help="training pairs kept per class of each query set (default: 10%% of "
                        "the set / classes, at least 10; P2I: 10 of 1000 classes)")
    q.add_argument("--ensemble-n", type=int, default=_p2i.ENSEMBLE_N,
                   help="public predictions per class in the aligned ensemble")
    q.add_argument("--samples", type=int, default=8,
                   help="images per class (0: full ensemble; others: random halves)")
    q.add_argument("--steps", type=int, default=DEFAULTS["steps"], help="encoder steps")
    q.add_argument("--batch-size", type=int, default=DEFAULTS["batch_size"],
                   help="synthetic and public pairs per step (each)")
    q.add_argument("--lr", type=float, default=DEFAULTS["lr"])
    q.add_argument("--encoder", choices=("conv", "mlp"), default=DEFAULTS["kind"])
    q.add_argument("--width", type=int, default=DEFAULTS["width"])
    for name in ("latent_weight", "image_weight", "id_weight"):
        q.add_argument(f"--{name.replace('_', '-')}", type=float, default=DEFAULTS[name])
    q.add_argument("--delta", type=float, default=_p2i.DELTA)
    q.add_argument("--threshold", type=float, default=_p2i.THRESHOLD)
    q.add_argument("--classes", type=parse_classes, default=None, help="e.g. 0-4 (default all)")
    q.add_argument("--defense", default="", help='output defenses of the target during the '
                   'one-time queries, e.g. "round:2,topk:3"')
    q.add_argument("--query-batch", type=int, default=1024, help="images per target call")
    q.add_argument("--seed", type=int, default=0)


def p2i(args: argparse.Namespace) -> None:
    """Run ``jaxinv p2i``."""
    from jaxinv.workflows.p2i import p2i as run

    rec = run(args.target, args.generator, args.embed_model, args.eval_model, args.out,
              dataset=args.dataset, public=args.public, n_samples=args.n_samples,
              public_max=args.public_max,
              train_per_class=args.train_per_class, ensemble_n=args.ensemble_n,
              samples=args.samples, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
              kind=args.encoder, width=args.width, latent_weight=args.latent_weight,
              image_weight=args.image_weight, id_weight=args.id_weight, delta=args.delta,
              threshold=args.threshold, classes=args.classes, defense=args.defense,
              query_batch=args.query_batch, seed=args.seed)
    m = rec["metrics"]
    print(summary_json({k: m[k] for k in ("attack_acc_top1", "attack_acc_top5", "init_acc_top1",
                                          "target_confidence", "queries_total",
                                          "queries_attack")}))
    print(f"results in {args.out}/results.json")


COMMANDS = {"p2i": p2i}
