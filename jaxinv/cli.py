"""``jaxinv`` command line: thin wrappers over library functions.

    jaxinv demo --out runs/demo
    jaxinv train --dataset digits --arch cnn --workdir runs/digits_cnn
    jaxinv attack mi-face --target W --eval-model W2 --chains N --steps S --out D
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence


def _range(text: str) -> tuple[float, float]:
    try:
        low, high = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"wants LOW,HIGH (two floats), got {text!r}") from None
    return low, high


def _classes(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        return [int(c) for c in text.split(",") if c.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--classes wants comma-separated ints, got {text!r}") from None


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="jaxinv", description=__doc__.splitlines()[0])
    g = p.add_argument_group("multi-host (run the same command on every host)")
    g.add_argument("--distributed", action="store_true",
                   help="call jax.distributed.initialize() (auto-detects TPU pods, SLURM...)")
    g.add_argument("--coordinator", help="host:port of process 0 (implies --distributed)")
    g.add_argument("--num-processes", type=int)
    g.add_argument("--process-id", type=int)
    sub = p.add_subparsers(dest="cmd", required=True)

    d = sub.add_parser("demo", help="train digits target + evaluator, run MI-Face, write results")
    d.add_argument("--out", default="runs/demo")
    d.add_argument("--chains", type=int, default=1024,
                   help="chains in total over the 10 classes (rounded up to a multiple of 10)")
    d.add_argument("--steps", type=int, default=None)
    d.add_argument("--seed", type=int, default=0)

    t = sub.add_parser("train", help="train a classifier (target or evaluation model)")
    t.add_argument("--dataset", required=True, help="digits, mnist, orl_faces, ... or a .npz path")
    t.add_argument("--arch", required=True, help="softmax, mlp, cnn, resnet, vgg")
    t.add_argument("--workdir", required=True)
    t.add_argument("--epochs", type=int, default=None)
    t.add_argument("--lr", type=float, default=None)
    t.add_argument("--batch-size", type=int, default=128)
    t.add_argument("--seed", type=int, default=0)

    e = sub.add_parser("evaluate", help="add class- and sample-level leakage metrics to a run")
    e.add_argument("--run", required=True, help="attack run directory (holds results.json)")
    e.add_argument("--eval-model", required=True, help="work dir of the evaluation classifier")
    e.add_argument("--private", required=True, help="private training set, DATASET:SPLIT")
    e.add_argument("--k", type=int, default=5, help="neighbours for PRDC and ddcs_proxy radii")
    e.add_argument("--correct-only", action="store_true",
                   help="KNN distance over correctly classified reconstructions only")
    e.add_argument("--inception", default=None,
                   help="Inception-v3 weights (.pth/.npz, pytorch-fid's) for fid_inception")
    e.add_argument("--inception-max", type=int, default=2000,
                   help="images of each set used for fid_inception")

    a = sub.add_parser("attack", help="invert every class of a target")
    asub = a.add_subparsers(dest="attack", required=True)
    m = asub.add_parser("mi-face", help="MI-Face (Fredrikson et al. 2015), white-box")
    z = asub.add_parser("zo", help="score-based zeroth-order inversion, black-box")
    for q, loss, lr, rng in ((m, "one_minus_p", 0.1, None), (z, "neg_log_p", 0.05, (0, 0.25))):
        q.add_argument("--target", required=True, help="work dir of the target model")
        q.add_argument("--eval-model", required=True,
                       help="work dir of the evaluation classifier")
        q.add_argument("--chains", type=int, default=64, help="chains per class")
        q.add_argument("--steps", type=int, default=1000)
        q.add_argument("--out", required=True)
        q.add_argument("--classes", type=_classes, default=None,
                       help="e.g. 0,1,2 (default: all)")
        q.add_argument("--seed", type=int, default=0)
        q.add_argument("--chunk", type=int, default=None,
                       help="max chains vmapped at once per device")
        q.add_argument("--segment", type=int, default=None,
                       help="steps between progress/checkpoints")
        q.add_argument("--loss", choices=["one_minus_p", "neg_log_p"], default=loss)
        q.add_argument("--lr", type=float, default=lr)
        q.add_argument("--init", choices=["zero", "random"], default="random")
        q.add_argument("--init-range", type=_range, default=rng,
                       help="random init: uniform on LOW,HIGH")
        q.add_argument("--tv", type=float, default=0.0)
        q.add_argument("--l2", type=float, default=0.0)
    z.add_argument("--estimator", choices=["nes", "spsa", "coordinate"], default="nes")
    z.add_argument("--queries-per-step", type=int, default=50)
    z.add_argument("--smoothing", type=float, default=0.01,
                   help="NES sigma / SPSA c / finite-difference h")
    z.add_argument("--budget", type=int, default=None, help="queries per chain")
    z.add_argument("--defense", default="", help='output defenses, e.g. "round:2,topk:3"')
    m.add_argument("--beta", type=int, default=100)
    m.add_argument("--gamma", type=float, default=0.01)
    m.add_argument("--process", default="identity",
                   choices=["identity", "denoise", "denoise+sharpen"])

    r = sub.add_parser("report", help="write D/report.html, a self-contained audit of a run")
    r.add_argument("run_dir", metavar="D", help="attack run directory (holds results.json)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``jaxinv`` command.

    Example:
        >>> main(["train", "--dataset", "digits", "--arch", "cnn", "--workdir", "/tmp/w"])
    """
    args = _parser().parse_args(argv)
    if args.distributed or args.coordinator:
        import jax

        jax.distributed.initialize(args.coordinator, args.num_processes, args.process_id)
    try:
        if args.cmd == "demo":
            from jaxinv.demo import demo

            demo(args.out, chains=args.chains, steps=args.steps, seed=args.seed)
        elif args.cmd == "train":
            from jaxinv.train import fit

            clf = fit(args.dataset, args.arch, args.workdir, epochs=args.epochs, lr=args.lr,
                      batch_size=args.batch_size, seed=args.seed)
            print(f"test accuracy {clf.meta['test_accuracy']:.4f}; model in {args.workdir}")
        elif args.cmd == "evaluate":
            from jaxinv.evaluate import evaluate

            m = evaluate(args.run, args.eval_model, args.private, k=args.k,
                         correct_only=args.correct_only, inception=args.inception,
                         inception_max=args.inception_max)["metrics"]
            print(json.dumps({k: round(m[k], 4) for k in (
                "attack_acc_top1", "knn_dist", "fid_eval", "precision", "recall", "density",
                "coverage", "psnr", "ssim")}))
            ps = m["per_sample"]
            print(f"per sample ({args.private}): {ps['resilient_fraction']:.1%} resilient, "
                  f"mean ddcs_proxy {ps['score_mean']:.4f}; most exposed: {ps['most_exposed']}")
            print(f"metrics added to {args.run}/results.json; arrays in {args.run}/per_sample.npz")
        elif args.cmd == "attack":
            from jaxinv.invert import invert

            keys = ("loss", "lr", "init", "init_range", "tv", "l2") + (
                ("beta", "gamma", "process") if args.attack == "mi-face" else
                ("estimator", "queries_per_step", "smoothing", "budget", "defense"))
            opts = {k: getattr(args, k) for k in keys}
            if opts["init_range"] is None:
                del opts["init_range"]
            rec = invert(args.attack, args.target, args.eval_model, args.out, chains=args.chains,
                         steps=args.steps, classes=args.classes, seed=args.seed, chunk=args.chunk,
                         segment=args.segment, options=opts)
            m = rec["metrics"]
            print(json.dumps({k: m[k] for k in ("attack_acc_top1", "attack_acc_top5",
                                                "init_acc_top1", "target_confidence",
                                                "queries_total") if k in m}))
            print(f"results in {args.out}/results.json")
        elif args.cmd == "report":
            from jaxinv.report import write_report

            print(write_report(args.run_dir))
    except (ValueError, FileNotFoundError, FloatingPointError) as e:
        print(f"jaxinv {args.cmd}: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
