"""``jaxinv attack dlg|idlg|ig``: reconstruct federated clients' images from the
gradients (or FedAvg updates) they share."""

from __future__ import annotations

import argparse

from jaxinv.evaluation.results import summary_json

HELP = {"dlg": "DLG (Zhu et al. 2019): images and labels from shared gradients",
        "idlg": "iDLG (Zhao et al. 2020): DLG with the label read off the gradient",
        "ig": "Inverting Gradients (Geiping et al. 2020): cosine matching + TV"}
DEFAULT_MODEL = {"dlg": "dlg-lenet", "idlg": "dlg-lenet", "ig": "resnet"}


def add_attack(asub: argparse._SubParsersAction) -> None:
    """Add ``dlg``, ``idlg`` and ``ig`` under ``jaxinv attack``.

    Example:
        >>> p = argparse.ArgumentParser()
        >>> add_attack(p.add_subparsers(dest="attack"))
        >>> a = p.parse_args(["ig", "--dataset", "cifar10", "--out", "D", "--batch", "4"])
        >>> a.batch, a.model, a.defense
        (4, None, 'none')
    """
    for name in ("dlg", "idlg", "ig"):
        q = asub.add_parser(name, help=HELP[name])
        q.add_argument("--out", required=True, help="run directory (resumable)")
        q.add_argument("--dataset", default="mnist", help="victims' dataset (or a .npz path)")
        q.add_argument("--split", default="train")
        q.add_argument("--model", default=None,
                       help=f"an arch at initialisation (default {DEFAULT_MODEL[name]}) or "
                            "the work dir of a trained model")
        q.add_argument("--model-seed", type=int, default=0)
        q.add_argument("--victims", type=int, default=256)
        q.add_argument("--batch", type=int, default=1, help="images per client")
        q.add_argument("--restarts", type=int, default=1, help="chains per victim")
        q.add_argument("--steps", type=int, default=None, help="attack iterations")
        q.add_argument("--retry-above", type=float, default=None,
                       help="attack victims whose final loss exceeds this once more")
        q.add_argument("--labels", default="analytic", help="analytic (from the update) or true")
        q.add_argument("--defense", default="none",
                       help="client defense: none, noise:STD, dp:CLIP,MULT or prune:RATE")
        q.add_argument("--local-steps", type=int, default=0, help="FedAvg local steps (0: FedSGD)")
        q.add_argument("--local-lr", type=float, default=1e-4)
        q.add_argument("--init-scale", type=float, default=None,
                       help="dummy data from N(0, s^2) (default 1)")
        q.add_argument("--tv", type=float, default=None, help="TV weight")
        q.add_argument("--lr", type=float, default=None, help="step size")
        q.add_argument("--linesearch", choices=("zoom", "backtracking", "none"), default=None,
                       help="L-BFGS step rule: zoom (default), backtracking (Armijo, about "
                            "one evaluation per step) or none (DLG's fixed step)")
        q.add_argument("--no-linesearch", dest="linesearch", action="store_const",
                       const="none", help="the same as --linesearch none")
        q.add_argument("--chunk", type=int, default=None, help="chains vmapped at once")
        q.add_argument("--seed", type=int, default=0)


def attack(args: argparse.Namespace) -> None:
    """Run ``jaxinv attack dlg|idlg|ig``."""
    from jaxinv.workflows.gradient_leakage import gradient_leakage

    opts = {k: getattr(args, k) for k in ("init_scale", "tv", "lr")
            if getattr(args, k) is not None}
    if args.linesearch is not None and args.attack != "ig":
        opts["linesearch"] = {"zoom": True, "none": False}.get(args.linesearch,
                                                             args.linesearch)
    rec = gradient_leakage(args.out, attack=args.attack, dataset=args.dataset, split=args.split,
                           model=args.model or DEFAULT_MODEL[args.attack],
                           model_seed=args.model_seed, victims=args.victims, batch=args.batch,
                           restarts=args.restarts, steps=args.steps, labels=args.labels,
                           retry_above=args.retry_above,
                           defense=args.defense, local_steps=args.local_steps,
                           local_lr=args.local_lr, seed=args.seed, chunk=args.chunk, **opts)
    m = rec["metrics"]
    print(summary_json({k: m[k] for k in ("exact_recovery_rate", "psnr_mean", "ssim_mean",
                                          "label_accuracy", "flagged") if k in m}))
    print(f"results in {args.out}/results.json")


def add(sub: argparse._SubParsersAction) -> None:
    """No top-level command: ``dlg``, ``idlg`` and ``ig`` live under ``jaxinv attack``."""


ATTACKS = {"dlg": attack, "idlg": attack, "ig": attack}
COMMANDS: dict = {}
