"""Gradient leakage (iDLG, Inverting Gradients): jaxinv against breaching (PyTorch), same run.

    python benchmarks/gradient_leakage.py                  # iDLG, 16 MNIST victims, 100 iterations
    python benchmarks/gradient_leakage.py --attack ig --steps 200
    python benchmarks/gradient_leakage.py --victims 256 --torch-victims 16 --dataset cifar10
    python benchmarks/gradient_leakage.py --reference handwritten   # skip breaching

Victims: ``--victims`` MNIST (or CIFAR-10 / digits) training images, one per client
(``victim_batches``, batch 1), and DLG's LeNet at initialisation (``create("dlg-lenet", K)``,
weights U(-0.5, 0.5), ``--model-seed``). Each client shares its FedSGD gradient
(``jaxinv.federated.shared_updates``); labels come from the iDLG rule. Both frameworks attack
the same victims with the same weights and the same shared gradients, from the same dummy
images (jaxinv's ``x_init``), for a fixed number of iterations (``--steps``, no early stop):

* ``idlg``: L2 gradient distance (DLG's sum of squares), label given, L-BFGS (step 1, history
  100, no line search), one gradient evaluation per iteration.
* ``ig``: cosine distance + ``--tv`` x anisotropic TV (mean |dx| + mean |dy|), Adam at ``--lr``
  on the signed gradient, x0.1 at 3/8, 5/8, 7/8 of the steps, box [0, 1].

jaxinv: ``idlg(..., tol=0, linesearch=False)`` / ``inverting_gradients`` run by
``run_chains``, all victims as chains of one compiled call; victims/s = victims /
``timing["run_s"]`` (steps only; the compilation, ``timing["compile_s"]``, is printed
separately, and a first untimed run warms up).

PyTorch: breaching 0.1.2's own attack code (``OptimizationBasedAttacker.reconstruct``, one
victim per call as its API works: its closure, objective, iDLG label rule, box, scheduler and
best-iterate tracking) on this LeNet (jaxinv's weights copied in; logits and victim gradients
checked against jaxinv's, printed), configured from its ``deepleakage`` / ``invertinggradients``
configs with overrides: ``attack_type=optimization label_strategy=iDLG`` (iDLG instead of DLG's
joint label optimisation), ``objective.scale=2`` (breaching's Euclidean objective is half the
sum of squares), ``optim.max_iterations=--steps``. Two changes, for comparable work: its
``torch.optim.LBFGS`` gets ``max_iter=1`` (torch's default 20 makes one ``optimizer.step`` up
to 20 L-BFGS iterations; with 1, one step = one iteration = one gradient evaluation, as one
jaxinv step), and for ``ig`` its TV regulariser (a 3-channel conv with zero-padded borders; it
fails on MNIST's one channel) is replaced by jaxinv's anisotropic TV. victims/s = victims /
wall time of the sequential ``reconstruct`` calls. Remaining differences, so the trajectories
drift apart: optax's L-BFGS scales its first step by ``min(1, 1/|g|_2)``, torch's by
``min(1, 1/|g|_1)``, and torch drops curvature pairs with ``y.s <= 1e-10``; breaching keeps the
iterate after the step of least pre-step loss, jaxinv the iterate of least loss.

``--lax-conv`` also times jaxinv with flax ``nn.Conv`` (``lax.conv``) in place of the LeNet's
im2col convs (``jaxinv.models.layers.conv2d_patches``), same weights, same kernel.

breaching's import: ``import breaching`` needs torchvision (``breaching.cases`` and
``breaching.utils`` import it at the top) and PyPI's torchvision wheels link CUDA torch
libraries that the CPU build of torch lacks. The benchmark then loads the ``breaching.attacks``
subpackage alone (stub parent packages, breaching's code unchanged; its configs via hydra).
Install with ``pip install --no-deps breaching==0.1.2 && pip install hydra-core`` (a plain
``pip install breaching`` replaces the CPU torch by a CUDA build; lpips is imported lazily by
breaching's analysis, unused here). If breaching cannot run, a hand-written PyTorch reference
of the same algorithms is used instead (printed, with the reason).

Repeats alternate (jaxinv, torch, jaxinv, torch, ...); figures are medians [min-max]. Quality:
per-victim PSNR (reconstruction clipped to [0, 1], ``jaxinv.metrics.reconstruction``) and the
fraction of victims with MSE < 1e-3, scored by the same function for both; "match loss" is the
gradient distance at the returned reconstruction, evaluated by jaxinv for both. The machine is
shared and noisy: compare the ratios, measured in the same run. One JSON line per measurement
goes to ``--jsonl`` (alias ``--out``), then one "gradient matching" record (medians, ratio
jaxinv / PyTorch) that ``benchmarks/table.py`` reads.

Threads: PyTorch runs at the faster of its default thread count and 1 (probed on one victim,
printed; ``--torch-threads`` overrides); XLA's pool is fixed when JAX starts.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import sys
import time
import types
from importlib import metadata
from pathlib import Path

import flax.linen as nn
import jax
import numpy as np

from jaxinv import data
from jaxinv.attacks.gradient_matching import (
    Victim,
    batch_labels,
    cosine_distance,
    idlg,
    inverting_gradients,
    l2_distance,
)
from jaxinv.core.driver import run_chains
from jaxinv.evaluation.results import versions
from jaxinv.federated import client_update, shared_updates
from jaxinv.metrics import reconstruction as R
from jaxinv.models import apply_logits
from jaxinv.workflows.gradient_leakage import victim_batches, victim_model

sys.path.insert(0, str(Path(__file__).parent))  # as a script or as benchmarks.gradient_leakage
from common import cpu_name, default_jsonl, emit, family_record
from common import load_text as _load

BREACHING_INSTALL = "pip install --no-deps breaching==0.1.2 && pip install hydra-core"


# --------------------------------------------------------------------------- jaxinv


def jax_kernel(f, shape: tuple[int, ...], k: int, args: argparse.Namespace):
    """The attack kernel, every chain running all ``--steps`` (no early stop)."""
    if args.attack == "idlg":
        return idlg(f, shape, k, steps=args.steps, tol=0.0, linesearch=False)
    return inverting_gradients(f, shape, k, steps=args.steps, tv=args.tv, lr=args.lr)


def jax_run(kernel, targets: Victim, variables, args: argparse.Namespace):
    """One run of every victim (one chain each) through ``run_chains``."""
    return run_chains(kernel, targets, variables, chains=1, steps=args.steps, seed=args.seed,
                      progress=False, unroll=args.unroll, compile_options=(
                          None if args.opt_level is None else
                          {"xla_backend_optimization_level": args.opt_level}))


class LaxLeNet(nn.Module):
    """``DLGLeNet`` with flax ``nn.Conv`` (``lax.conv``) in place of its im2col convs; same
    parameter tree, so it runs on the same variables (``--lax-conv``)."""

    num_classes: int
    channels: int = 12

    @nn.compact
    def __call__(self, x, train: bool = False):
        for i, stride in enumerate((2, 2, 1)):
            x = nn.sigmoid(nn.Conv(self.channels, (5, 5), stride, padding=2,
                                   name=f"Conv_{i}")(x))
        f = x.reshape(x.shape[0], -1)
        return nn.Dense(self.num_classes)(f), f


def match_loss(f, variables, attack: str):
    """``(updates, labels, x) -> [V]`` gradient distance of reconstructions ``x [V, B, ...]``
    (jaxinv's cost without the prior), one function for both frameworks."""
    dist = l2_distance if attack == "idlg" else cosine_distance
    one = lambda u, y, x: dist(client_update(f, variables, x, y), u)
    fn = jax.jit(jax.vmap(one))
    return lambda u, y, x: np.asarray(fn(u, y, np.asarray(x, np.float32)))


# --------------------------------------------------------------------------- torch


def torch_layout(tree, feat_hwc: tuple[int, int, int]) -> list[np.ndarray]:
    """DLG LeNet params (or an update of them) in ``net.parameters()`` order and torch
    layout: conv kernels [kh, kw, cin, cout] -> [cout, cin, kh, kw], the dense kernel
    [in, out] -> [out, in] with its rows from flax's NHWC flattening to torch's NCHW."""
    out = []
    for i in range(3):
        p = tree[f"Conv_{i}"]
        out += [np.asarray(p["kernel"]).transpose(3, 2, 0, 1), np.asarray(p["bias"])]
    kern = np.asarray(tree["Dense_0"]["kernel"])
    kern = kern.reshape(*feat_hwc, -1).transpose(2, 0, 1, 3).reshape(kern.shape)
    out += [kern.T, np.asarray(tree["Dense_0"]["bias"])]
    return [np.array(a, np.float32, order="C") for a in out]  # writable copies for torch


def torch_lenet(torch, params, shape: tuple[int, int, int]):
    """DLG's LeNet in torch with jaxinv's weights; (net, feature map (h, w, c))."""
    nn = torch.nn
    h, w, cin = shape
    layers = []
    for i, stride in enumerate((2, 2, 1)):
        kh, kw, _, cout = np.shape(params[f"Conv_{i}"]["kernel"])
        layers += [nn.Conv2d(cin, cout, (kh, kw), stride, (kh // 2, kw // 2)), nn.Sigmoid()]
        h = (h + 2 * (kh // 2) - kh) // stride + 1
        w = (w + 2 * (kw // 2) - kw) // stride + 1
        cin = cout
    k = np.shape(params["Dense_0"]["kernel"])[1]
    net = nn.Sequential(*layers, nn.Flatten(), nn.Linear(h * w * cin, k))
    with torch.no_grad():
        for p, a in zip(net.parameters(), torch_layout(params, (h, w, cin)), strict=True):
            p.copy_(torch.from_numpy(a))
    return net, (h, w, cin)


def nchw(torch, x: np.ndarray):
    return torch.from_numpy(np.ascontiguousarray(np.asarray(x, np.float32).transpose(0, 3, 1, 2)))


def check_nets(torch, net, f, variables, x: np.ndarray, y: np.ndarray, updates, feat
               ) -> tuple[float, float, float]:
    """Max |logits diff| on the victims' images, and max |diff| (absolute, relative to the
    largest entry) of the victims' gradients computed by torch vs jaxinv's shared updates."""
    xs = x[:, 0]
    lj = np.asarray(jax.jit(f)(variables, xs))
    xt, yt = nchw(torch, xs), torch.from_numpy(np.asarray(y[:, 0], np.int64))
    with torch.no_grad():
        lt = net(xt).numpy()
    params = list(net.parameters())
    d_abs = d_rel = 0.0
    for v in range(len(xs)):
        loss = torch.nn.functional.cross_entropy(net(xt[v:v + 1]), yt[v:v + 1])
        gt = torch.autograd.grad(loss, params)
        gj = torch_layout(jax.tree.map(lambda a, v=v: a[v], updates), feat)
        for a, b in zip(gt, gj, strict=True):
            d = float(np.abs(a.numpy() - b).max())
            d_abs, d_rel = max(d_abs, d), max(d_rel, d / max(float(np.abs(b).max()), 1e-30))
    return float(np.abs(lj - lt).max()), d_abs, d_rel


class AnisotropicTV:
    """jaxinv's ``anisotropic_tv`` (mean |dx| + mean |dy|) on NCHW, as a breaching
    regulariser (``initialize`` and call)."""

    def __init__(self, scale: float):
        self.scale = scale

    def initialize(self, *args, **kwargs) -> None:
        pass

    def __call__(self, x, *args, **kwargs):
        dx = (x[..., :, 1:] - x[..., :, :-1]).abs().mean()
        dy = (x[..., 1:, :] - x[..., :-1, :]).abs().mean()
        return self.scale * (dx + dy)

    def __repr__(self) -> str:
        return f"AnisotropicTV(scale={self.scale})"


def load_breaching() -> tuple[type | None, Path | None, str]:
    """breaching's ``OptimizationBasedAttacker`` and package root, or ``(None, None, why)``."""
    try:
        import breaching  # noqa: F401  (the normal way; needs a working torchvision)
        from breaching.attacks.optimization_based_attack import OptimizationBasedAttacker

        root = Path(importlib.util.find_spec("breaching").origin).parent
        return OptimizationBasedAttacker, root, "import breaching"
    except Exception as e:  # torchvision missing or built for CUDA torch: RuntimeError
        why = f"`import breaching` failed ({type(e).__name__}: {str(e).splitlines()[0][:120]})"
    for name in [m for m in sys.modules if m == "breaching" or m.startswith("breaching.")]:
        del sys.modules[name]  # half-imported leftovers
    spec = importlib.util.find_spec("breaching")
    if spec is None:
        return None, None, f"breaching is not installed ({BREACHING_INSTALL})"
    root = Path(spec.submodule_search_locations[0])
    try:
        import hydra  # noqa: F401  (breaching's configs)
    except ImportError:
        return None, None, f"{why}; hydra-core is not installed ({BREACHING_INSTALL})"
    # the attacks need only breaching.cases.models.transformer_dictionary (torch only):
    # stub the packages whose __init__ imports torchvision, load the attack modules as they are
    for name, sub in (("breaching", ""), ("breaching.cases", "cases"),
                      ("breaching.cases.models", "cases/models")):
        stub = types.ModuleType(name)
        stub.__path__ = [str(root / sub)]
        sys.modules[name] = stub
    try:
        from breaching.attacks.optimization_based_attack import OptimizationBasedAttacker
    except Exception as e:
        return None, None, (f"{why}; its attacks subpackage alone failed too "
                            f"({type(e).__name__}: {str(e).splitlines()[0][:120]})")
    return OptimizationBasedAttacker, root, f"{why}; loaded breaching.attacks alone"


def breaching_config(root: Path, args: argparse.Namespace):
    """breaching's attack config (hydra) with this benchmark's overrides."""
    from hydra import compose, initialize_config_dir

    name = "deepleakage" if args.attack == "idlg" else "invertinggradients"
    over = ["attack_type=optimization", "label_strategy=iDLG",
            f"optim.max_iterations={args.steps}", f"optim.callback={args.steps + 1}"]
    over += ["objective.scale=2.0"] if args.attack == "idlg" else [f"optim.step_size={args.lr}"]
    with initialize_config_dir(config_dir=str(root / "config" / "attack"), version_base=None):
        return compose(config_name=name, overrides=over), name, over


class BreachingReference:
    """One victim per call through breaching's ``OptimizationBasedAttacker.reconstruct``."""

    def __init__(self, torch, base: type, cfg, net, shape_chw: tuple[int, ...], tv: float,
                 attack: str):
        class OneIterationLBFGS(base):  # one L-BFGS iteration (one gradient) per step call
            def _init_optimizer(self, candidate):
                opt, sched = super()._init_optimizer(candidate)
                if isinstance(opt, torch.optim.LBFGS):
                    g = opt.param_groups[0]
                    assert g["history_size"] == 100 and g["line_search_fn"] is None
                    g["max_iter"] = 1
                return opt, sched

        self.torch = torch
        self.attacker = OneIterationLBFGS(net, torch.nn.CrossEntropyLoss(), cfg,
                                          {"dtype": torch.float, "device": torch.device("cpu")})
        if attack == "ig":  # breaching's TV needs 3 channels; jaxinv's definition instead
            self.attacker.regularizers = [AnisotropicTV(tv)]
        meta = types.SimpleNamespace(shape=tuple(shape_chw), modality="vision")
        self.payload = [{"parameters": [p.detach().clone() for p in net.parameters()],
                         "buffers": None, "metadata": meta}]

    def __call__(self, grads: list, x0):
        """``grads`` (torch layout), ``x0 [B, C, H, W]`` -> (reconstruction, labels)."""
        shared = [{"gradients": [g.clone() for g in grads], "buffers": None,
                   "metadata": {"num_data_points": len(x0), "labels": None,
                                "local_hyperparams": None}}]
        rec, _ = self.attacker.reconstruct(self.payload, shared, server_secrets={},
                                           initial_data=x0)
        return rec["data"], rec["labels"]


class HandwrittenReference:
    """The same algorithms written out in PyTorch (used when breaching cannot run):
    ``torch.optim.LBFGS(lr=1, max_iter=1, history_size=100)`` on the sum of squared
    gradient differences, or signed Adam on cosine + TV with MultiStepLR and a [0, 1] clamp;
    the iDLG label rule; the iterate of least loss is returned."""

    def __init__(self, torch, net, attack: str, steps: int, tv: float, lr: float):
        self.torch, self.net, self.attack, self.steps = torch, net, attack, steps
        self.tv, self.lr = AnisotropicTV(tv), lr

    def __call__(self, grads: list, x0):
        torch = self.torch
        params = list(self.net.parameters())
        y = torch.argmin(grads[-2].sum(-1)).reshape(1).repeat(len(x0))  # iDLG, B = 1
        x = x0.clone().requires_grad_(True)
        if self.attack == "idlg":
            opt = torch.optim.LBFGS([x], lr=1.0, max_iter=1, history_size=100)
            sched = None
        else:
            opt = torch.optim.Adam([x], lr=self.lr)
            sched = torch.optim.lr_scheduler.MultiStepLR(
                opt, [int(self.steps * f) for f in (3 / 8, 5 / 8, 7 / 8)], 0.1)

        def closure():
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(self.net(x), y)
            g = torch.autograd.grad(loss, params, create_graph=True)
            if self.attack == "idlg":
                cost = sum((a - b).pow(2).sum() for a, b in zip(g, grads, strict=True))
            else:
                dot = sum((a * b).sum() for a, b in zip(g, grads, strict=True))
                na = torch.sqrt(sum(a.pow(2).sum() for a in g))
                nb = torch.sqrt(sum(b.pow(2).sum() for b in grads))
                cost = 1 - dot / (na * nb).clamp_min(1e-20) + self.tv(x)
            cost.backward(inputs=[x])
            if self.attack == "ig":
                x.grad.sign_()
            return cost

        best, best_loss = x.detach().clone(), float("inf")
        for _ in range(self.steps):
            before = x.detach().clone()
            loss = float(opt.step(closure))  # the cost at `before`
            if loss < best_loss:
                best, best_loss = before, loss
            if sched is not None:
                sched.step()
                with torch.no_grad():
                    x.clamp_(0.0, 1.0)
        return best, y


def torch_threads(torch, ref, grads: list, x0: list, threads: list[int]) -> tuple[int, dict]:
    """Warm up, then time victim 0 at each thread count; the fastest count."""
    ref(grads[0], x0[0])
    probe = {}
    for t in threads:
        torch.set_num_threads(t)
        tic = time.perf_counter()
        ref(grads[0], x0[0])
        probe[t] = 1 / (time.perf_counter() - tic)
    best = max(probe, key=probe.get)
    torch.set_num_threads(best)
    return best, probe


# --------------------------------------------------------------------------- main


def scores(rec: np.ndarray, truth: np.ndarray) -> dict:
    """Per-victim PSNR / MSE (batch 1) and the summary figures."""
    s = R.per_image(np.nan_to_num(rec), truth)
    psnr, mse = s["psnr"][:, 0], s["mse"][:, 0]
    return {"psnr": psnr, "exact": mse < R.EXACT_MSE, "psnr_median": float(np.median(psnr)),
            "exact_rate": float(np.mean(mse < R.EXACT_MSE)), "ssim_mean": float(s["ssim"].mean())}


def med(values: list[float]) -> tuple[float, float, float]:
    return statistics.median(values), min(values), max(values)


def fmt(r: tuple[float, float, float]) -> str:
    d = 2 if r[0] < 10 else 1
    return f"{r[0]:.{d}f} [{r[1]:.{d}f}-{r[2]:.{d}f}]"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--attack", choices=["idlg", "ig"], default="idlg")
    p.add_argument("--dataset", choices=["mnist", "cifar10", "digits"], default="mnist",
                   help="mnist/cifar10 read $JAXINV_DATA_DIR (or --data-dir); digits is bundled")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--victims", type=int, default=16, help="victims jaxinv attacks (one call)")
    p.add_argument("--torch-victims", type=int, default=None,
                   help="the first this many victims for PyTorch (default: all)")
    p.add_argument("--steps", type=int, default=100, help="attack iterations")
    p.add_argument("--repeats", type=int, default=3, help="timed runs of each, alternating")
    p.add_argument("--unroll", type=int, default=None,
                   help="steps per compiled call (run_chains' unroll; default by backend)")
    p.add_argument("--opt-level", type=int, default=None, choices=range(4),
                   help="xla_backend_optimization_level of the step (run_chains' "
                        "compile_options; default XLA's)")
    p.add_argument("--tv", type=float, default=1e-4, help="ig: TV weight")
    p.add_argument("--lr", type=float, default=0.1, help="ig: Adam step")
    p.add_argument("--seed", type=int, default=0, help="victim draw and dummy images")
    p.add_argument("--model-seed", type=int, default=0)
    p.add_argument("--lax-conv", action="store_true",
                   help="also time jaxinv with lax.conv convs (flax nn.Conv) instead of im2col")
    p.add_argument("--reference", choices=["auto", "breaching", "handwritten", "none"],
                   default="auto", help="auto: breaching, else the hand-written PyTorch code")
    p.add_argument("--torch-threads", default="auto",
                   help="PyTorch thread counts to probe, e.g. 2,1 (auto: default and 1)")
    p.add_argument("--jsonl", "--out", dest="jsonl", default=default_jsonl(__file__),
                   help="append one JSON line per measurement and the 'gradient matching' "
                        "record here ('' : none)")
    args = p.parse_args()
    if min(args.victims, args.steps, args.repeats) < 1:
        p.error("--victims, --steps and --repeats must be >= 1")

    # ---- the PyTorch side: breaching if it runs, else the hand-written reference
    torch, base, root, why = None, None, None, ""
    if args.reference != "none":
        try:
            import torch
        except ImportError:
            print("torch not installed (pip install torch): no PyTorch reference")
    if torch is not None and args.reference in ("auto", "breaching"):
        base, root, why = load_breaching()
        if base is None and args.reference == "breaching":
            sys.exit(f"breaching cannot run: {why}")
    v = versions()
    tver = torch.__version__ if torch is not None else "-"
    bver = metadata.version("breaching") if base is not None else None
    impl = (f"breaching {bver}" if base is not None else
            "hand-written PyTorch" if torch is not None else None)
    print(f"machine: {cpu_name()}, {os.cpu_count()} cores, {jax.devices()}, load {_load()}")
    print(f"versions: jax {v['jax']}, jaxlib {v['jaxlib']}, flax {v['flax']}, optax "
          f"{v['optax']}, python {v['python']}, torch {tver}"
          + (f", breaching {bver}" if bver else "")
          + f"; XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}")
    if torch is not None:
        print(f"PyTorch reference: {impl}" + (f" ({why})" if why else "")
              + ("" if base is not None or args.reference == "handwritten" else
                 "; breaching unusable, so the hand-written reference (same algorithm)"))

    # ---- victims, model, shared gradients, labels
    x_all, y_all = data.load(args.dataset, "train", data_dir=args.data_dir)
    k = int(data.info(args.dataset).num_classes)
    idx = victim_batches(y_all, args.victims, 1, args.seed, distinct=False)
    x, y = x_all[idx].astype(np.float32), y_all[idx].astype(np.int32)
    shape = tuple(x.shape[2:])
    clf = victim_model("dlg-lenet", k, shape, seed=args.model_seed, dataset=args.dataset)
    f = apply_logits(clf.module)
    upd, finite = shared_updates(f, clf.variables, x, y)
    if not finite.all():
        sys.exit(f"victims {np.flatnonzero(~finite).tolist()} have non-finite gradients")
    labels = np.asarray(jax.jit(jax.vmap(lambda u: batch_labels(u, k, 1)))(upd))
    kernel = jax_kernel(f, shape, k, args)
    loss_of = match_loss(f, clf.variables, args.attack)
    nt = min(args.torch_victims or args.victims, args.victims) if torch is not None else 0
    algo = ("iDLG: L2 (sum of squares), label by the iDLG rule, L-BFGS lr 1, history 100, "
            "no line search" if args.attack == "idlg" else
            f"IG: cosine + {args.tv:g} TV, signed Adam lr {args.lr:g}, x0.1 at 3/8 5/8 7/8, "
            "box [0, 1], label by the iDLG rule")
    print(f"settings: {args.dataset} {'x'.join(map(str, shape))}, {args.victims} victims "
          f"(batch 1, seed {args.seed}; PyTorch: the first {nt}), DLG LeNet at init "
          f"(U(-0.5, 0.5), seed {args.model_seed}), FedSGD gradients; {algo}; {args.steps} "
          f"iterations, no early stop; {args.repeats} alternating repeats after a warm-up; "
          f"label accuracy (iDLG rule) {np.mean(labels == y):.2f}")

    # ---- warm-up (compiles) and the dummy images both frameworks start from
    res = jax_run(kernel, Victim(upd, labels), clf.variables, args)
    compile_s = res.timing["compile_s"]
    x0 = res.x_init[:, 0]  # [V, 1, H, W, C]
    print(f"jaxinv: run_chains over {args.victims} chains, compile {compile_s:.1f} s "
          f"(excluded), warm-up run {res.timing['run_s']:.2f} s")
    lax_kernel = lax_compile_s = None
    if args.lax_conv:
        lax_f = apply_logits(LaxLeNet(k, int(np.shape(clf.variables["params"]["Conv_0"]
                                                       ["kernel"])[-1])))
        d = np.abs(np.asarray(jax.jit(lax_f)(clf.variables, x[:, 0]))
                   - np.asarray(jax.jit(f)(clf.variables, x[:, 0]))).max()
        lax_kernel = jax_kernel(lax_f, shape, k, args)
        lax_res = jax_run(lax_kernel, Victim(upd, labels), clf.variables, args)
        lax_compile_s = lax_res.timing["compile_s"]
        print(f"jaxinv, lax.conv LeNet: max |logits diff| vs im2col {d:.1e}, compile "
              f"{lax_compile_s:.1f} s (excluded), warm-up run {lax_res.timing['run_s']:.2f} s")

    ref, grads, x0t, ref_note = None, [], [], ""
    if nt:
        torch.manual_seed(args.seed)
        net, feat = torch_lenet(torch, clf.variables["params"], shape)
        d_l, d_g, r_g = check_nets(torch, net, f, clf.variables, x, y, upd, feat)
        print(f"check: max |logits diff| {d_l:.1e}; victim gradients (torch autograd vs "
              f"jaxinv's shared updates) max |diff| {d_g:.1e} ({r_g:.1e} of the largest entry)")
        grads = [[torch.from_numpy(a) for a in torch_layout(jax.tree.map(
            lambda a, i=i: a[i], upd), feat)] for i in range(nt)]
        x0t = [nchw(torch, x0[i]) for i in range(nt)]
        if base is not None:
            cfg, name, over = breaching_config(root, args)
            ref = BreachingReference(torch, base, cfg, net, (shape[2], *shape[:2]), args.tv,
                                     args.attack)
            ref_note = f"config {name} + {' '.join(over)}; LBFGS max_iter=1"
            ref_note += "; TV -> jaxinv's anisotropic TV" if args.attack == "ig" else ""
        else:
            ref = HandwrittenReference(torch, net, args.attack, args.steps, args.tv, args.lr)
            ref_note = ("torch.optim.LBFGS(lr=1, max_iter=1, history_size=100)"
                        if args.attack == "idlg" else "Adam on sign(grad), MultiStepLR, clamp")
        threads = ([torch.get_num_threads(), 1] if args.torch_threads == "auto" else
                   [int(t) for t in args.torch_threads.split(",")])
        thr, probe = torch_threads(torch, ref, grads, x0t, list(dict.fromkeys(threads)))
        print(f"PyTorch: {impl}, {ref_note}; {thr} thread{'s' * (thr > 1)} (probe on victim 0: "
              + ", ".join(f"{t}: {1 / r:.2f} s" for t, r in probe.items()) + ")")

    # ---- timed, alternating repeats
    out = Path(args.jsonl) if args.jsonl else None
    common = {"benchmark": "gradient_leakage", "attack": args.attack, "dataset": args.dataset,
              "steps": args.steps, "batch": 1, "seed": args.seed, "model_seed": args.model_seed,
              "tv": args.tv if args.attack == "ig" else None,
              "lr": args.lr if args.attack == "ig" else 1.0, "cpu_count": os.cpu_count(),
              "unroll": args.unroll, "opt_level": args.opt_level,
              "versions": {"jax": v["jax"], "jaxlib": v["jaxlib"], "torch": tver,
                           "breaching": bver}}

    def record(rec: dict) -> None:
        emit(out, {**common, **rec})  # machine (load, versions, ...) and time merged in

    jr, tr, lr_ = [], [], []
    for r in range(args.repeats):
        res = jax_run(kernel, Victim(upd, labels), clf.variables, args)
        rec_j = res.best_x[:, 0]
        sj = scores(rec_j, x)
        lj = loss_of(upd, labels, rec_j)
        jr.append({"rate": args.victims / res.timing["run_s"], "s": sj, "loss": lj})
        record({"framework": "jaxinv", "impl": "run_chains", "repeat": r,
                "victims": args.victims, "run_s": res.timing["run_s"], "compile_s": compile_s,
                "victims_per_s": jr[-1]["rate"], "psnr_median": sj["psnr_median"],
                "exact_rate": sj["exact_rate"], "ssim_mean": sj["ssim_mean"],
                "match_loss_median": float(np.median(lj)), "psnr": sj["psnr"].tolist()})
        if lax_kernel is not None:
            res = jax_run(lax_kernel, Victim(upd, labels), clf.variables, args)
            lr_.append(args.victims / res.timing["run_s"])
            sl = scores(res.best_x[:, 0], x)
            record({"framework": "jaxinv", "impl": "run_chains, lax.conv LeNet", "repeat": r,
                    "victims": args.victims, "run_s": res.timing["run_s"],
                    "compile_s": lax_compile_s, "victims_per_s": lr_[-1],
                    "psnr_median": sl["psnr_median"], "exact_rate": sl["exact_rate"],
                    "ssim_mean": sl["ssim_mean"], "psnr": sl["psnr"].tolist()})
        if not nt:
            continue
        tic = time.perf_counter()
        got = [ref(grads[i], x0t[i]) for i in range(nt)]
        run_s = time.perf_counter() - tic
        rec_t = np.stack([g[0].detach().numpy().transpose(0, 2, 3, 1) for g in got])
        lab_t = np.stack([np.asarray(g[1]).reshape(-1) for g in got]).astype(np.int32)
        st = scores(rec_t, x[:nt])
        lt = loss_of(jax.tree.map(lambda a: a[:nt], upd), lab_t, rec_t)
        tr.append({"rate": nt / run_s, "s": st, "loss": lt, "labels": lab_t})
        record({"framework": "torch", "impl": impl, "repeat": r, "victims": nt,
                "run_s": run_s, "threads": thr, "victims_per_s": tr[-1]["rate"],
                "psnr_median": st["psnr_median"], "exact_rate": st["exact_rate"],
                "ssim_mean": st["ssim_mean"], "match_loss_median": float(np.median(lt)),
                "psnr": st["psnr"].tolist()})

    # ---- summary
    rj = med([m["rate"] for m in jr])
    sj, lj = jr[-1]["s"], jr[-1]["loss"]
    print(f"\n{'':<30} {'victims':>7} {'victims/s':>22} {'ms/victim':>9} {'PSNR med':>8} "
          f"{'MSE<1e-3':>8} {'match loss med':>14}")
    print(f"{'jaxinv (run_chains)':<30} {args.victims:>7} {fmt(rj):>22} {1e3 / rj[0]:>9.1f} "
          f"{sj['psnr_median']:>8.2f} {sj['exact_rate']:>8.2f} {np.median(lj):>14.3g}")
    if lr_:
        rl = med(lr_)
        print(f"{'jaxinv, lax.conv LeNet':<30} {args.victims:>7} {fmt(rl):>22} "
              f"{1e3 / rl[0]:>9.1f} {sl['psnr_median']:>8.2f} {sl['exact_rate']:>8.2f} {'':>14}"
              f"  (im2col / lax.conv: {rj[0] / rl[0]:.2f}x; compile {lax_compile_s:.1f} s)")
    if nt:
        rt = med([m["rate"] for m in tr])
        st, lt = tr[-1]["s"], tr[-1]["loss"]
        if nt < args.victims:
            sub = scores(rec_j[:nt], x[:nt])
            print(f"{'jaxinv, first ' + str(nt):<30} {nt:>7} {'':>22} {'':>9} "
                  f"{sub['psnr_median']:>8.2f} {sub['exact_rate']:>8.2f} "
                  f"{np.median(lj[:nt]):>14.3g}")
        print(f"{impl + f' ({thr} thr)':<30} {nt:>7} {fmt(rt):>22} {1e3 / rt[0]:>9.1f} "
              f"{st['psnr_median']:>8.2f} {st['exact_rate']:>8.2f} {np.median(lt):>14.3g}")
        print(f"ratio jaxinv / PyTorch victims/s: {rj[0] / rt[0]:.2f}x (medians of "
              f"{args.repeats}); jaxinv compile {compile_s:.1f} s not included")
        pj, pt = sj["psnr"][:nt], st["psnr"]
        both = np.mean(sj["exact"][:nt] == st["exact"])
        print(f"per victim (first {nt}): PSNR jaxinv - PyTorch median {np.median(pj - pt):+.2f} "
              f"dB (|diff| max {np.abs(pj - pt).max():.1f}); MSE<1e-3 agrees: {both:.2f}; "
              f"labels agree: {np.mean(tr[-1]['labels'][:, 0] == labels[:nt, 0]):.2f}")
        if nt <= 32:
            print("PSNR jaxinv : " + " ".join(f"{a:5.1f}" for a in pj))
            print("PSNR PyTorch: " + " ".join(f"{a:5.1f}" for a in pt))
    if out is not None:
        rt_ = med([m["rate"] for m in tr]) if nt else None
        work = (f"{args.attack}, {args.steps} iterations, {args.victims} {args.dataset} victims "
                f"(batch 1), DLG LeNet; jaxinv run_chains"
                + (f" unroll {args.unroll}" if args.unroll else "")
                + (f" LLVM O{args.opt_level}" if args.opt_level is not None else "")
                + (f" vs {impl} on the first {nt}, {thr} thread{'s' * (thr > 1)}" if nt else ""))
        emit(out, family_record(
            "gradient matching", work, "victims/s", rj[0], rt_[0] if rt_ else None,
            args.repeats, compile_s=compile_s, **common,
            reference=impl if nt else None, torch_victims=nt,
            psnr_median={"jaxinv": sj["psnr_median"],
                         "torch": tr[-1]["s"]["psnr_median"] if nt else None},
            lax_conv=med(lr_)[0] if lr_ else None))
    print(f"\nload at the end: {_load()}" + (f"; JSON lines appended to {out}" if out else ""))


if __name__ == "__main__":
    main()
