"""GAN training images/s and GMI chain-steps/s: jaxinv against batched PyTorch, same run.

    python benchmarks/gan.py                      # GAN 28x28x1 + GMI at N = 64, 1024
    python benchmarks/gan.py --quick              # tiny settings (smoke test)
    python benchmarks/gan.py --no-torch --sizes 64,256

GAN: one WGAN-GP iteration of ``jaxinv.training.gan.make_iteration`` (``n_critic`` critic
steps with gradient penalty, one generator step; Adam 2e-4, betas (0.5, 0.999)), run as
``train_gan`` runs it (one compiled call per step), on random images in [0, 1]; images/s =
batch * (n_critic + 1) per iteration. GMI: ``run_chains`` with the ``jaxinv.attacks.gmi``
kernel (one step = ``-D(G(z)) + lam * CE(T(G(z)), y)`` and its gradient in z, Nesterov SGD,
clip to [-1, 1]) on the MNIST CNN (``create("cnn", 10)``, random weights), one chain per
target; for N > ``--chunk`` also with ``chunk``. ``--winograd`` overrides how jaxinv runs
3x3 convolutions (default: the library's rule, Winograd in ``run_chains``' steps on CPU and
XLA's convolution in training). The PyTorch side is the same networks
(jaxinv's weights copied in; forward outputs checked against jaxinv's) and the same step,
eager, batched: the GAN iteration with ``torch.autograd.grad(create_graph=True)`` for the
penalty, GMI on all N latents at once (the loss summed over chains, so per-chain gradients
are independent). Warm-up (compilation, first calls) is excluded; figures are the median of
``--repeats`` timed runs (min-max in brackets); ratio = jaxinv / PyTorch (> 1: jaxinv
faster). The machine is shared and noisy: compare the ratios, measured in the same run.
Threads: PyTorch runs each row at the faster of its default thread count and 1 (probed once
per row, printed; ``--torch-threads`` overrides): its OpenMP threads spin-wait, so on an
oversubscribed machine 1 thread can be 5-10x faster. XLA's thread pool is fixed when JAX
starts; for single-threaded JAX figures run with
``XLA_FLAGS="--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"``. Appends a
"generator training" record (the GAN iteration) and a "GAN-latent step" record (GMI:
jaxinv's fastest row against PyTorch's fastest N) to ``--jsonl`` for
``benchmarks/table.py``.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import jax
import numpy as np

from jaxinv.core.driver import run_chains
from jaxinv.evaluation.results import versions
from jaxinv.models import apply_logits, create, init_variables
from jaxinv.models.gan import random_gan
from jaxinv.models.layers import winograd
from jaxinv.training.gan import make_iteration
from jaxinv.training.step import init_state

sys.path.insert(0, str(Path(__file__).parent))  # run as a script or imported as benchmarks.gan
from common import cpu_name, default_jsonl, emit, family_record
from common import load_text as _load

FULL = {"shape": (28, 28, 1), "width": 32, "critic_width": 16, "batch": 64, "n_critic": 5,
        "gp": 10.0, "lr": 2e-4, "b1": 0.5, "b2": 0.999, "z_dim": 100, "n_public": 2048,
        "target": {"channels": (32, 64), "dense": 128}, "gan_iters": 4,
        "gmi_chain_steps": 2048, "sizes": "64,1024", "lam": 100.0, "gmi_lr": 0.02,
        "momentum": 0.9}
QUICK = {**FULL, "shape": (8, 8, 1), "width": 4, "critic_width": 4, "batch": 8, "n_critic": 2,
         "n_public": 64, "target": {"channels": (4, 8), "dense": 16}, "gan_iters": 2,
         "gmi_chain_steps": 32, "sizes": "4,16"}


def median_rate(fn, repeats: int) -> tuple[float, float, float]:
    """``fn() -> rate`` called ``repeats`` times: (median, min, max)."""
    rates = [fn() for _ in range(repeats)]
    return statistics.median(rates), min(rates), max(rates)


def fmt(r: tuple[float, float, float] | None) -> str:
    return "-" if r is None else f"{r[0]:.0f} [{r[1]:.0f}-{r[2]:.0f}]"


def ratio(a, b) -> str:
    return "-" if a is None or b is None else f"{a[0] / b[0]:.2f}x"


def public_data(cfg: dict) -> np.ndarray:
    """Random images in [0, 1], mostly dark with bright strokes (timing does not depend on
    the content)."""
    rng = np.random.default_rng(0)
    return (rng.random((cfg["n_public"], *cfg["shape"])) ** 4).astype(np.float32)


# --------------------------------------------------------------------------- jaxinv


def jax_gan(cfg: dict, gan, x: np.ndarray, repeats: int) -> tuple[tuple, float]:
    it, tx = make_iteration(gan.generator, gan.critic, batch_size=cfg["batch"],
                            n_critic=cfg["n_critic"], gp=cfg["gp"], lr=cfg["lr"],
                            b1=cfg["b1"], b2=cfg["b2"], z_dim=cfg["z_dim"])
    step = it  # as train_gan runs it: one compiled call per critic or generator step
    g, d = init_state(gan.variables["G"], tx), init_state(gan.variables["D"], tx)
    xd, key = jax.device_put(x), jax.random.key(0)
    tic = time.perf_counter()
    g, d, m = step(g, d, xd, key)
    jax.block_until_ready(m)
    compile_s = time.perf_counter() - tic
    g, d, m = step(g, d, xd, jax.random.fold_in(key, 1))  # one more warm-up iteration
    jax.block_until_ready(m)
    state = {"g": g, "d": d, "i": 2}

    def once():
        g, d, i = state["g"], state["d"], state["i"]
        tic = time.perf_counter()
        for j in range(cfg["gan_iters"]):  # dispatched asynchronously, as in train_gan
            g, d, m = step(g, d, xd, jax.random.fold_in(key, i + j))
        jax.block_until_ready((g, d, m))
        dt = time.perf_counter() - tic
        state.update(g=g, d=d, i=i + cfg["gan_iters"])
        return cfg["gan_iters"] * cfg["batch"] * (cfg["n_critic"] + 1) / dt

    return median_rate(once, repeats), compile_s


def jax_gmi(cfg: dict, model, target_vars, gan, n: int, steps: int, chunk: int | None,
            repeats: int) -> tuple[tuple, float]:
    from jaxinv.attacks.gmi import gmi, gmi_env

    attack = gmi(apply_logits(model), cfg["shape"], generator=gan.generator,
                 critic=gan.critic, z_dim=cfg["z_dim"], lam=cfg["lam"], lr=cfg["gmi_lr"],
                 momentum=cfg["momentum"], nesterov=True, clip=1.0,
                 max_steps=max(1500, steps))
    env = gmi_env(target_vars, gan)
    targets = np.arange(n) % 10

    def run():
        return run_chains(attack, targets, env, chains=1, steps=steps, segment=steps,
                          chunk=chunk, progress=False)

    compile_s = run().timing["compile_s"]  # warm-up: compiles and runs once

    def once():
        res = run()
        return n * res.steps_run / res.timing["run_s"]

    return median_rate(once, repeats), compile_s


# --------------------------------------------------------------------------- PyTorch


def same_pads(size: int, k: int, s: int) -> tuple[int, int]:
    """XLA's SAME padding (lo, hi) of one spatial axis: 28, k 5, s 2 -> (1, 2)."""
    total = max((math.ceil(size / s) - 1) * s + k - size, 0)
    return total // 2, total - total // 2


def torch_nets(torch, cfg: dict, gan, model, target_vars):
    """PyTorch generator, critic and target with jaxinv's weights (NCHW; flatten orders
    and the pixel-shuffle channel order handled by permuting weights, not activations)."""
    nn = torch.nn
    h, w, c = cfg["shape"]
    gw, cw, z_dim = cfg["width"], cfg["critic_width"], cfg["z_dim"]
    h4, w4 = h // 4, w // 4
    t = lambda a: torch.tensor(np.asarray(a, np.float32))
    G = nn.Sequential(
        nn.Linear(z_dim, h4 * w4 * 4 * gw), nn.BatchNorm1d(h4 * w4 * 4 * gw, momentum=0.1),
        nn.ReLU(), nn.Unflatten(1, (4 * gw, h4, w4)),
        nn.Conv2d(4 * gw, 4 * 2 * gw, 3, padding=1), nn.PixelShuffle(2),
        nn.BatchNorm2d(2 * gw, momentum=0.1), nn.ReLU(),
        nn.Conv2d(2 * gw, 4 * c, 3, padding=1), nn.PixelShuffle(2), nn.Sigmoid())
    layers, cin, hh, ww = [], c, h, w
    for ch in (cw, 2 * cw):  # flax SAME at stride 2 pads (lo, hi) = (1, 2) on 28 and 14
        (pt, pb), (pl, pr) = same_pads(hh, 5, 2), same_pads(ww, 5, 2)
        layers += [nn.ZeroPad2d((pl, pr, pt, pb)), nn.Conv2d(cin, ch, 5, 2),
                   nn.LeakyReLU(0.2)]
        cin, hh, ww = ch, math.ceil(hh / 2), math.ceil(ww / 2)
    D = nn.Sequential(*layers, nn.Flatten(), nn.Linear(hh * ww * cin, 1), nn.Flatten(0))
    d_hwc = (hh, ww, cin)
    layers, cin, hh, ww = [], c, h, w
    for ch in model.channels:  # LeNet: 5x5 SAME conv, ReLU, 2x2 max-pool
        layers += [nn.Conv2d(cin, ch, 5, padding=2), nn.ReLU()]
        if min(hh, ww) >= 2:
            layers.append(nn.MaxPool2d(2))
            hh, ww = hh // 2, ww // 2
        cin = ch
    T = nn.Sequential(*layers, nn.Flatten(), nn.Linear(hh * ww * cin, model.dense), nn.ReLU(),
                      nn.Linear(model.dense, model.num_classes))

    def conv(m, p, perm=None):
        k, b = np.asarray(p["kernel"]).transpose(3, 2, 0, 1), np.asarray(p["bias"])
        m.weight.data, m.bias.data = t(k if perm is None else k[perm]), t(
            b if perm is None else b[perm])

    def dense(m, p, hwc=None, out_hwc=None):  # hwc: flax flattened an NHWC input
        k, b = np.asarray(p["kernel"]), np.asarray(p["bias"])
        if hwc is not None:
            k = k.reshape(*hwc, -1).transpose(2, 0, 1, 3).reshape(k.shape)
        if out_hwc is not None:  # flax's output feature (h, w, c) -> torch's (c, h, w)
            k = k.reshape(len(k), *out_hwc).transpose(0, 3, 1, 2).reshape(k.shape)
            b = b.reshape(out_hwc).transpose(2, 0, 1).ravel()
        m.weight.data, m.bias.data = t(k.T), t(b)

    def bn(m, p, s, out_hwc=None):
        f = ((lambda a: np.asarray(a).reshape(out_hwc).transpose(2, 0, 1).ravel())
             if out_hwc else np.asarray)
        m.weight.data, m.bias.data = t(f(p["scale"])), t(f(p["bias"]))
        m.running_mean.data, m.running_var.data = t(f(s["mean"])), t(f(s["var"]))

    shuffle = lambda ch: np.array([(i % 4) * ch + i // 4 for i in range(4 * ch)])
    p, s = gan.variables["G"]["params"], gan.variables["G"]["batch_stats"]
    grid = (h4, w4, 4 * gw)
    dense(G[0], p["Dense_0"], out_hwc=grid)
    bn(G[1], p["BatchNorm_0"], s["BatchNorm_0"], grid)
    conv(G[4], p["Conv_0"], shuffle(2 * gw))
    bn(G[6], p["BatchNorm_1"], s["BatchNorm_1"])
    conv(G[8], p["Conv_1"], shuffle(c))
    for net, params, hwc in ((D, gan.variables["D"]["params"], d_hwc),
                             (T, target_vars["params"], (hh, ww, cin))):
        for i, m in enumerate(m for m in net if isinstance(m, nn.Conv2d)):
            conv(m, params[f"Conv_{i}"])
        for i, m in enumerate(m for m in net if isinstance(m, nn.Linear)):
            dense(m, params[f"Dense_{i}"], hwc=None if i else hwc)
    return G, D, T


def check_nets(torch, nets, cfg: dict, gan, model, target_vars) -> float:
    """Largest |jaxinv - PyTorch| over G (eval), D and T outputs on 8 random inputs."""
    G, D, T = nets
    z = np.random.default_rng(1).standard_normal((8, cfg["z_dim"])).astype(np.float32)
    xj = gan.generator.apply(gan.variables["G"], z)
    for m in nets:
        m.eval()
    with torch.no_grad():
        xt = G(torch.tensor(z))
        to_t = lambda a: torch.tensor(np.asarray(a).transpose(0, 3, 1, 2).copy())
        diffs = [np.abs(np.asarray(xj).transpose(0, 3, 1, 2) - xt.numpy()).max(),
                 np.abs(np.asarray(gan.critic.apply(gan.variables["D"], xj))
                        - D(to_t(xj)).numpy()).max(),
                 np.abs(np.asarray(apply_logits(model)(target_vars, xj))
                        - T(to_t(xj)).numpy()).max()]
    return float(max(diffs))


def torch_timed(torch, threads: list[int], call, units: int, calls: int, repeats: int
                ) -> tuple[tuple, int, dict]:
    """Warm ``call`` up and time one call at each thread count (PyTorch's CPU threads
    spin-wait: on a loaded machine 1 thread can be 5-10x faster than 2), then the median
    rate (``units`` per call, ``calls`` per run) at the fastest. Returns (rate, threads,
    {threads: probe rate})."""
    probe = {}
    for t in threads:
        torch.set_num_threads(t)
        call()
        tic = time.perf_counter()
        call()
        probe[t] = units / (time.perf_counter() - tic)
    best = max(probe, key=probe.get)
    torch.set_num_threads(best)

    def once():
        tic = time.perf_counter()
        for _ in range(calls):
            call()
        return units * calls / (time.perf_counter() - tic)

    try:
        return median_rate(once, repeats), best, probe
    finally:
        torch.set_num_threads(threads[0])


def torch_gan(torch, cfg: dict, G, D, x: np.ndarray, threads: list[int], repeats: int
              ) -> tuple:
    B, nc, gp, z_dim = cfg["batch"], cfg["n_critic"], cfg["gp"], cfg["z_dim"]
    X = torch.tensor(x.transpose(0, 3, 1, 2).copy())
    G.train()
    D.train()
    for m in (G, D):
        for q in m.parameters():
            q.requires_grad_(True)
    kw = {"lr": cfg["lr"], "betas": (cfg["b1"], cfg["b2"])}
    opt_g, opt_d = torch.optim.Adam(G.parameters(), **kw), torch.optim.Adam(D.parameters(), **kw)
    d_params = list(D.parameters())

    def iteration():
        for _ in range(nc):
            real = X[torch.randint(0, len(X), (B,))]
            with torch.no_grad():
                fake = G(torch.randn(B, z_dim))
            eps = torch.rand(B, 1, 1, 1)
            mix = (eps * real + (1 - eps) * fake).requires_grad_(True)
            (g,) = torch.autograd.grad(D(mix).sum(), mix, create_graph=True)
            penalty = (torch.sqrt(g.flatten(1).pow(2).sum(1) + 1e-12) - 1) ** 2
            loss = (D(fake) - D(real) + gp * penalty).mean()
            opt_d.zero_grad(set_to_none=True)
            loss.backward()
            opt_d.step()
        for q in d_params:  # the generator step differentiates G's parameters only
            q.requires_grad_(False)
        loss = -D(G(torch.randn(B, z_dim))).mean()
        opt_g.zero_grad(set_to_none=True)
        loss.backward()
        opt_g.step()
        for q in d_params:
            q.requires_grad_(True)

    return torch_timed(torch, threads, iteration, B * (nc + 1), cfg["gan_iters"], repeats)


def torch_gmi(torch, cfg: dict, G, D, T, n: int, steps: int, threads: list[int],
              repeats: int) -> tuple:
    F = torch.nn.functional
    for m in (G, D, T):
        m.eval()
        for q in m.parameters():
            q.requires_grad_(False)
    lam, lr, mu = cfg["lam"], cfg["gmi_lr"], cfg["momentum"]
    y = torch.arange(n) % 10
    gen = torch.Generator().manual_seed(0)
    state = {"z": torch.randn(n, cfg["z_dim"], generator=gen), "v": None}

    def step():
        z = state["z"].requires_grad_(True)
        x = G(z)
        loss = -D(x).sum() + lam * F.cross_entropy(T(x), y, reduction="sum")
        (g,) = torch.autograd.grad(loss, z)
        with torch.no_grad():  # optax.sgd(lr, momentum, nesterov=True), then the clip
            v = g if state["v"] is None else g + mu * state["v"]
            state["z"] = (z - lr * (g + mu * v)).clamp_(-1.0, 1.0)
            state["v"] = v

    return torch_timed(torch, threads, step, n, steps, repeats)


# --------------------------------------------------------------------------- main


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="tiny settings (smoke test)")
    p.add_argument("--no-torch", action="store_true", help="skip the PyTorch reference")
    p.add_argument("--sizes", default=None,
                   help="GMI chain counts N, comma-separated (default 64,1024; quick 4,16)")
    p.add_argument("--chunk", type=int, default=32,
                   help="also time GMI at N > chunk with run_chains(chunk=...) (0: skip)")
    p.add_argument("--repeats", type=int, default=3, help="timed runs after the warm-up")
    p.add_argument("--torch-threads", default="auto",
                   help="PyTorch thread counts to probe, e.g. 2,1 (auto: default and 1)")
    p.add_argument("--skip-gan", action="store_true", help="GMI only")
    p.add_argument("--winograd", choices=("default", "auto", "on", "off"), default="default",
                   help="jaxinv's 3x3 convolutions by Winograd (default: the rule in GMI's "
                        "chains, off in training; auto: the rule everywhere)")
    p.add_argument("--jsonl", default=default_jsonl(__file__),
                   help="append the 'generator training' and 'GAN-latent step' records here "
                        "('' : none)")
    args = p.parse_args()
    setting = {"auto": "auto", "on": True, "off": False}.get(args.winograd)
    with nullcontext() if setting is None else winograd(setting):
        run(args)


def run(args: argparse.Namespace) -> None:
    cfg = QUICK if args.quick else FULL
    sizes = [int(s) for s in (args.sizes or cfg["sizes"]).split(",") if s.strip()]

    torch, threads = None, []
    if not args.no_torch:
        try:
            import torch
        except ImportError:
            print("torch not installed (pip install torch): no PyTorch reference")
    if torch is not None:
        threads = ([torch.get_num_threads(), 1] if args.torch_threads == "auto" else
                   [int(t) for t in args.torch_threads.split(",")])
        threads = list(dict.fromkeys(threads))

    v = versions()
    print(f"machine: {cpu_name()}, {os.cpu_count()} cores, {jax.devices()}, load "
          f"{_load()}")
    print(f"versions: jax {v['jax']}, jaxlib {v['jaxlib']}, flax {v['flax']}, optax "
          f"{v['optax']}, python {v['python']}"
          + (f", torch {torch.__version__}" if torch else "")
          + f"; XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}; winograd {args.winograd}")
    gan = random_gan(cfg["shape"], cfg["width"], cfg["z_dim"], 0, cfg["critic_width"])
    model = create("cnn", 10, **cfg["target"])
    target_vars = init_variables(model, cfg["shape"])
    nets = lambda: torch_nets(torch, cfg, gan, model, target_vars)
    if torch is not None:
        torch.manual_seed(0)
        print(f"PyTorch reference: eager, same nets with jaxinv's weights (max |output "
              f"difference| of G, D, T: "
              f"{check_nets(torch, nets(), cfg, gan, model, target_vars):.1e}); run at the "
              f"faster of {threads} threads, probed per row")
    print(f"figures: median [min-max] of {args.repeats} timed runs after warm-up")

    if not args.skip_gan:
        x = public_data(cfg)
        per_it = cfg["batch"] * (cfg["n_critic"] + 1)
        print(f"\nGAN training (WGAN-GP), {'x'.join(map(str, cfg['shape']))}: G width "
              f"{cfg['width']}, D width {cfg['critic_width']}, batch {cfg['batch']}, n_critic "
              f"{cfg['n_critic']}, gp {cfg['gp']:g}, Adam {cfg['lr']:g} betas ({cfg['b1']}, "
              f"{cfg['b2']}); {cfg['gan_iters']} iterations = "
              f"{cfg['gan_iters'] * per_it} images per run")
        rj, compile_s = jax_gan(cfg, gan, x, args.repeats)
        print(f"{'':8} {'images/s':>18} {'s/iteration':>11}")
        print(f"{'jaxinv':8} {fmt(rj):>18} {per_it / rj[0]:>11.2f}  (first call {compile_s:.1f} s, "
              "compilation included)")
        rt = thr = None
        if torch is not None:
            rt, thr, probe = torch_gan(torch, cfg, *nets()[:2], x, threads, args.repeats)
            print(f"{'PyTorch':8} {fmt(rt):>18} {per_it / rt[0]:>11.2f}  "
                  f"({_threads(thr, probe)})")
            print(f"ratio jaxinv / PyTorch: {ratio(rj, rt)}")
        work = (f"WGAN-GP iteration, {'x'.join(map(str, cfg['shape']))}, G width {cfg['width']}, "
                f"D width {cfg['critic_width']}, batch {cfg['batch']}, n_critic "
                f"{cfg['n_critic']}, Adam" + (f"; PyTorch {thr} thread{'s' * (thr > 1)}"
                                              if thr else ""))
        emit(args.jsonl, family_record(
            "generator training", work, "images/s", rj[0], rt[0] if rt else None,
            args.repeats, compile_s=compile_s, jaxinv_range=rj[1:],
            torch_range=rt[1:] if rt else None, torch_threads=thr, quick=args.quick))

    try:
        import jaxinv.attacks.gmi  # noqa: F401
        have_gmi = True
    except ImportError as e:
        have_gmi = False
        print(f"\njaxinv.attacks.gmi not importable ({e}): no jaxinv GMI figures")
    print(f"\nGMI chains: lam {cfg['lam']:g}, SGD Nesterov lr {cfg['gmi_lr']} momentum "
          f"{cfg['momentum']}, clip [-1, 1]; target cnn {tuple(model.channels)}-"
          f"{model.dense} (random weights); one chain per target; "
          f"~{cfg['gmi_chain_steps']} chain-steps per run")
    print(f"{'N':>6} {'chunk':>5} {'steps':>5} {'jaxinv chain-steps/s':>21} "
          f"{'PyTorch chain-steps/s':>21} {'ratio':>6} {'compile s':>9}  PyTorch threads")
    jax_rows, torch_rows = [], []
    for n in sizes:
        steps = max(2, cfg["gmi_chain_steps"] // n)
        rt, thr, probe = (torch_gmi(torch, cfg, *nets(), n, steps, threads, args.repeats)
                          if torch is not None else (None, None, None))
        if rt is not None:
            torch_rows.append({"n": n, "steps": steps, "rate": rt, "threads": thr})
        for ch in (None, args.chunk) if 0 < args.chunk < n else (None,):
            rj, compile_s = (jax_gmi(cfg, model, target_vars, gan, n, steps, ch, args.repeats)
                             if have_gmi else (None, float("nan")))
            print(f"{n:>6} {ch or '-':>5} {steps:>5} {fmt(rj):>21} {fmt(rt):>21} "
                  f"{ratio(rj, rt):>6} {compile_s:>9.1f}  "
                  f"{_threads(thr, probe) if thr else '-'}")
            if rj is not None:
                jax_rows.append({"n": n, "chunk": ch, "steps": steps, "rate": rj,
                                 "compile_s": compile_s})
    if jax_rows:
        best = max(jax_rows, key=lambda r: r["rate"][0])
        ref = max(torch_rows, key=lambda r: r["rate"][0], default=None)
        work = (f"GMI step (lam {cfg['lam']:g}, Nesterov SGD) through G + D + target cnn "
                f"{tuple(model.channels)}-{model.dense}, {'x'.join(map(str, cfg['shape']))}; "
                f"jaxinv best N={best['n']} chunk {best['chunk'] or '-'} of N="
                f"{','.join(map(str, sizes))}"
                + (f"; PyTorch best N={ref['n']} ({ref['threads']} thread"
                   f"{'s' * (ref['threads'] > 1)})" if ref else ""))
        emit(args.jsonl, family_record(
            "GAN-latent step", work, "chain-steps/s", best["rate"][0],
            ref["rate"][0] if ref else None, args.repeats, compile_s=best["compile_s"],
            rows=jax_rows, torch_rows=torch_rows, quick=args.quick))
    if args.jsonl:
        print(f"records appended to {args.jsonl}")
    print(f"\nload at the end: {_load()}")


def _threads(best: int, probe: dict) -> str:
    return f"{best} thread{'s' * (best > 1)}; probe " + ", ".join(
        f"{t}: {r:.0f}/s" for t, r in probe.items())


if __name__ == "__main__":
    main()
