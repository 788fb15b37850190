"""``jaxinv`` command line: thin wrappers over library functions.

    jaxinv demo --out runs/demo
    jaxinv train --dataset digits --arch cnn --workdir runs/digits_cnn
    jaxinv attack mi-face --target W --eval-model W2 --chains N --steps S --out D
    jaxinv attack gmi --target W --generator G --eval-model W2 --out D
    jaxinv attack tldr --target W --eval-model W2 --out D
    jaxinv serve --target W --defense "round:2,topk:3" --port 8000
    jaxinv attack zo --remote http://127.0.0.1:8000 --eval-model W2 --out D
    jaxinv defend-matrix --target W --eval-model W2 --out D
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from jaxinv.attacks import registry
from jaxinv.evaluation.results import summary_json
from jaxinv.http.client import RemoteError


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


def _attack_parser(q: argparse.ArgumentParser, entry: registry.Entry) -> None:
    """Common run options, then the factory's own keyword options (declared once, in
    its signature; only the flags given reach the factory, so its defaults rule)."""
    black = entry.kind != "white-box"
    where = q.add_mutually_exclusive_group(required=True) if black else q
    where.add_argument("--target", required=not black, help="work dir of the target model")
    if black:
        where.add_argument("--remote", metavar="URL",
                           help="attack a `jaxinv serve` endpoint over HTTP instead")
        q.add_argument("--http-batch", type=int, default=1024,
                       help="--remote: images per HTTP request")
        q.add_argument("--retries", type=int, default=8,
                       help="--remote: attempts per request on errors (with back-off)")
        q.add_argument("--client-id", default=None, help="--remote: X-Client-Id header")
        q.add_argument("--defense", default="", help='output defenses of the in-process '
                       'target, e.g. "round:2,topk:3" (a --remote server applies its own)')
    need = {"required": " (required)", "optional": "", "never": " (this attack works in "
            "pixel space: it refuses one)"}[entry.generator]
    q.add_argument("--generator", metavar="G", default=None,
                   help="GAN prior workdir from `jaxinv train-gan`: attack in its latent "
                        "space" + need)
    q.add_argument("--eval-model", required=True, action="append",
                   help="work dir of an evaluation classifier (repeat for several; the first "
                        "gives attack_acc_*, all are in metrics.per_evaluator)")
    q.add_argument("--chains", type=int, default=64, help="chains per class")
    q.add_argument("--steps", type=int, default=1000)
    q.add_argument("--out", required=True)
    q.add_argument("--classes", type=_classes, default=None, help="e.g. 0,1,2 (default: all)")
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--chunk", type=int, default=None, help="max chains vmapped at once per "
                   "device")
    q.add_argument("--segment", type=int, default=None,
                   help="steps between progress/checkpoints")
    g = q.add_argument_group(f"{entry.factory.__name__} options (defaults: the factory's)")
    types = {"int": int, "float": float, "str": str, "range": _range, "convert": str}
    for o in registry.options(entry):
        flag = "--" + o.name.replace("_", "-")
        shown = o.default.__name__ if callable(o.default) else o.default
        text = f"default {shown}"
        if o.name in (entry.latent or {}):
            text += f"; with --generator {entry.latent[o.name]}"
        if o.kind == "bool":
            g.add_argument(flag, dest=f"opt_{o.name}", action=argparse.BooleanOptionalAction,
                           default=argparse.SUPPRESS, help=text)
        else:
            g.add_argument(flag, dest=f"opt_{o.name}", type=types[o.kind],
                           default=argparse.SUPPRESS, help=text)


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
    t.add_argument("--batch-size", type=int, default=None,
                   help="default: jaxinv.training.DEFAULTS for the dataset and arch")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--split", default=None,
                   help="train on the private side of a protocol: classes:0-4 or sample:0.5")
    t.add_argument("--limit", type=int, default=None,
                   help="train on the first N training samples only")
    t.add_argument("--dp-epsilon", type=float, default=None,
                   help="train with DP-SGD to this epsilon (noise calibrated by dp-accounting)")
    t.add_argument("--dp-delta", type=float, default=1e-5)
    t.add_argument("--dp-clip", type=float, default=1.0, help="per-example gradient norm bound")
    t.add_argument("--dp-accountant", default="pld", choices=("pld", "rdp"))
    t.add_argument("--defense", default=None, metavar="NAME[:OPT=V,...]",
                   help="train with a defense (jaxinv.training.defenses): "
                        "'negls:alpha=-0.05,warmup=0.25,start=0.5', "
                        "'distill:teacher=DIR,temperature=4,hard=0', 'mid:beta=0.01,k=256' "
                        "(the model becomes a VIB around --arch) or "
                        "'bido:lambda_x=2,lambda_y=20,sigma=0' (sigma 0: median heuristic; "
                        "not with --dp-epsilon); options left out take these defaults")

    e = sub.add_parser("evaluate", help="add class- and sample-level leakage metrics to a run")
    e.add_argument("--run", required=True, help="attack run directory (holds results.json)")
    e.add_argument("--eval-model", required=True, help="work dir of the evaluation classifier")
    e.add_argument("--private", required=True, help="private training set, DATASET:SPLIT")
    e.add_argument("--split", default=None,
                   help="only the private side of a protocol (e.g. sample:0.5)")
    e.add_argument("--limit", type=int, default=None,
                   help="only the first N private samples (a target trained with --limit N)")
    e.add_argument("--k", type=int, default=5, help="neighbours for PRDC and ddcs_proxy radii")
    e.add_argument("--correct-only", action="store_true",
                   help="KNN distance over correctly classified reconstructions only")
    e.add_argument("--inception", default=None,
                   help="Inception-v3 weights (.pth/.npz, pytorch-fid's) for fid_inception")
    e.add_argument("--inception-max", type=int, default=2000,
                   help="images of each set used for fid_inception")

    a = sub.add_parser("attack", help="invert every class of a target")
    asub = a.add_subparsers(dest="attack", required=True)
    for name, entry in sorted(registry.REGISTRY.items()):
        _attack_parser(asub.add_parser(name, help=entry.help), entry)
    for module in _command_modules():  # attacks that are not chain kernels (e.g. tldr)
        if hasattr(module, "add_attack"):
            module.add_attack(asub)

    v = sub.add_parser("serve", help="serve a trained model over HTTP (a victim API)")
    v.add_argument("--target", required=True, help="work dir of the model to serve")
    v.add_argument("--defense", default="", help='output defenses, e.g. "round:2,topk:3"')
    v.add_argument("--host", default="127.0.0.1")
    v.add_argument("--port", type=int, default=8000,
                   help="TCP port, 0..65535 (0: pick a free port and print it)")
    v.add_argument("--max-batch", type=int, default=1024, help="images per request")
    v.add_argument("--rate-limit", type=float, default=None,
                   help="per-client queries (images) per second")
    v.add_argument("--burst", type=int, default=None, help="rate-limit bucket size")
    v.add_argument("--monitor", action="store_true",
                   help="flag clients whose queries are mostly near-duplicates")
    v.add_argument("--refuse-flagged", action="store_true",
                   help="answer flagged clients with 403 (implies --monitor)")
    v.add_argument("--seed", type=int, default=0)
    v.add_argument("--threads", type=int, default=8, help="worker threads (waitress)")
    v.add_argument("--channel-timeout", type=int, default=20,
                   help="seconds before an idle (e.g. slow-loris) connection is closed")
    v.add_argument("--connection-limit", type=int, default=256,
                   help="open connections at most (more wait in the listen backlog)")
    v.add_argument("--max-clients", type=int, default=10_000,
                   help="client identities tracked at once (least recently seen evicted)")
    v.add_argument("--client-idle", type=float, default=600.0,
                   help="seconds without a request before a client's state is dropped")

    dm = sub.add_parser("defend-matrix",
                        help="black-box attacks x output defenses: attack success vs utility")
    dm.add_argument("--target", required=True)
    dm.add_argument("--eval-model", required=True)
    dm.add_argument("--out", required=True)
    dm.add_argument("--defenses", default=None,
                    help='";"-separated defense chains (default: none;round:1;topk:1;label;'
                         'noise:0.1)')
    dm.add_argument("--attacks", default="zo,label-only")
    dm.add_argument("--chains", type=int, default=8, help="chains per class")
    dm.add_argument("--steps", type=int, default=300)
    dm.add_argument("--options", default=None,
                    help='JSON {attack: {option: value}}, e.g. \'{"zo": {"tv": 2.0}}\'')
    dm.add_argument("--classes", type=_classes, default=None)
    dm.add_argument("--chunk", type=int, default=None)
    dm.add_argument("--seed", type=int, default=0)

    r = sub.add_parser("report", help="write D/report.html, a self-contained audit of a run")
    r.add_argument("run_dir", metavar="D", help="attack run directory (holds results.json)")
    for module in _command_modules():
        module.add(sub)
    return p


def _command_modules() -> list:
    import importlib

    from jaxinv.commands import MODULES

    return [importlib.import_module(m) for m in MODULES]


def _demo(args) -> None:
    from jaxinv.workflows.demo import demo

    demo(args.out, chains=args.chains, steps=args.steps, seed=args.seed)


def _train(args) -> None:
    from jaxinv.training.classifier import fit

    dp = None if args.dp_epsilon is None else {
        "epsilon": args.dp_epsilon, "delta": args.dp_delta, "clip": args.dp_clip,
        "accountant": args.dp_accountant}
    clf = fit(args.dataset, args.arch, args.workdir, epochs=args.epochs, lr=args.lr,
              batch_size=args.batch_size, seed=args.seed, split=args.split,
              limit=args.limit, dp=dp, defense=args.defense)
    guarantee = clf.meta.get("dp")
    if guarantee:
        print(f"DP-SGD: ({guarantee['epsilon']:.3f}, {guarantee['delta']:g})-DP by "
              f"{guarantee['accountant']}, noise multiplier {guarantee['noise_multiplier']:.3f}"
              f", clip {guarantee['clip']:g}, {guarantee['steps']} steps at q="
              f"{guarantee['sampling_rate']:.4f}")
    if clf.meta.get("defense"):
        print("defense: " + ", ".join(f"{k}={v}" for k, v in clf.meta["defense"].items()))
    print(f"test accuracy {clf.meta['test_accuracy']:.4f}; model in {args.workdir}")


def _evaluate(args) -> None:
    from jaxinv.evaluation.evaluate import evaluate

    m = evaluate(args.run, args.eval_model, args.private, k=args.k,
                 correct_only=args.correct_only, inception=args.inception,
                 inception_max=args.inception_max, split=args.split,
                 limit=args.limit)["metrics"]
    print(summary_json({k: round(m[k], 4) if isinstance(m[k], float) else m[k] for k in (
        "attack_acc_top1", "knn_dist", "fid_eval", "precision", "recall", "density",
        "coverage", "psnr", "ssim")}))
    if "prdc_note" in m:
        print(f"note: {m['prdc_note']}")
    ps = m["per_sample"]
    print(f"per sample ({args.private}): {ps['resilient_fraction']:.1%} resilient "
          f"({ps['exposed']} of {ps['samples']} exposed), "
          f"mean ddcs_proxy {ps['score_mean']:.4f}; most exposed: {ps['most_exposed']}")
    print(f"metrics added to {args.run}/results.json; arrays in {args.run}/per_sample.npz")


def _attack(args) -> None:
    from jaxinv.workflows.invert import invert

    for module in _command_modules():
        if args.attack in getattr(module, "ATTACKS", {}):
            return module.ATTACKS[args.attack](args)

    opts = {k[4:]: v for k, v in vars(args).items() if k.startswith("opt_")}
    if getattr(args, "defense", ""):
        opts["defense"] = args.defense
    black = registry.get(args.attack).kind != "white-box"
    client = {"batch_size": args.http_batch, "retries": args.retries,
              "client_id": args.client_id} if black else None
    rec = invert(args.attack, args.target, args.eval_model, args.out, chains=args.chains,
                 steps=args.steps, classes=args.classes, seed=args.seed, chunk=args.chunk,
                 segment=args.segment, options=opts, remote=getattr(args, "remote", None),
                 client_options=client, generator=args.generator)
    m = rec["metrics"]
    print(summary_json({k: m[k] for k in ("attack_acc_top1", "attack_acc_top5", "init_acc_top1",
                                          "attack_acc_top1_selected", "attack_acc_top5_selected",
                                          "target_confidence", "queries_total",
                                          "queries_per_chain") if k in m}))
    print(f"results in {args.out}/results.json")


def _serve(args) -> None:
    from jaxinv.http.serve import Monitor, serve

    monitor = (Monitor(max_clients=args.max_clients) if args.monitor or args.refuse_flagged
               else None)
    serve(args.target, args.defense, args.host, args.port, threads=args.threads,
          channel_timeout=args.channel_timeout, connection_limit=args.connection_limit,
          max_batch=args.max_batch, rate_limit=args.rate_limit, burst=args.burst,
          monitor=monitor, refuse_flagged=args.refuse_flagged, seed=args.seed,
          max_clients=args.max_clients, client_idle=args.client_idle)


def _defend_matrix(args) -> None:
    from jaxinv.workflows.defense_matrix import DEFENSES, defend_matrix

    try:
        options = json.loads(args.options) if args.options else {}
    except json.JSONDecodeError as e:
        raise ValueError(f"--options is not valid JSON: {e}") from None
    ds = tuple(d.strip() for d in args.defenses.split(";")) if args.defenses else DEFENSES
    rec = defend_matrix(args.target, args.eval_model, args.out, defense_list=ds,
                        attacks=tuple(a.strip() for a in args.attacks.split(",")),
                        chains=args.chains, steps=args.steps, options=options,
                        classes=args.classes, seed=args.seed, chunk=args.chunk)
    print((Path(args.out) / "defense_matrix.md").read_text(), end="")
    print(f"matrix in {args.out}/defense_matrix.json and defense_matrix.md "
          f"({len(rec['rows'])} defenses)")


def _report(args) -> None:
    from jaxinv.evaluation.report import write_report

    print(write_report(args.run_dir))


COMMANDS = {"demo": _demo, "train": _train, "evaluate": _evaluate, "attack": _attack,
            "serve": _serve, "defend-matrix": _defend_matrix, "report": _report}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``jaxinv`` command: 0 on success, 2 with a one-line error.

    Example:
        >>> import tempfile
        >>> main(["train", "--dataset", "digits", "--arch", "softmax", "--epochs", "1",
        ...       "--workdir", tempfile.mkdtemp()])  # doctest: +ELLIPSIS
        test accuracy ...; model in ...
        0
    """
    args = _parser().parse_args(argv)
    if args.distributed or args.coordinator:
        import jax

        jax.distributed.initialize(args.coordinator, args.num_processes, args.process_id)
    if not os.environ.get("JAXINV_NO_COMPILATION_CACHE"):
        from jaxinv.core import enable_compilation_cache

        enable_compilation_cache()
    try:
        commands = dict(COMMANDS)
        for module in _command_modules():
            commands.update(module.COMMANDS)
        commands[args.cmd](args)
    except (ValueError, FileNotFoundError, FloatingPointError, ConnectionError,
            RemoteError) as e:
        notes = "".join(f"\n  {n}" for n in getattr(e, "__notes__", []))
        print(f"jaxinv {args.cmd}: error: {e}{notes}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
