"""Conditional-generator (network inversion / TLDR) training steps/s: jaxinv against PyTorch.

    python benchmarks/tldr.py                 # 28x28x1, batch 64, MNIST CNN target
    python benchmarks/tldr.py --quick         # tiny settings, 2 rows (smoke test, ~1 min)
    python benchmarks/tldr.py --no-torch --repeats 5

One step = one Adam (lr 1e-3) update of one ``ConditionalGenerator`` (label conditioning,
z in R^100, width 16, dropout 0.3, linear output; ``upsample`` "subpixel" and "transpose",
a row each; ``--quick``: one loss configuration each) against the frozen MNIST CNN
(``create("cnn", 10)``, random weights): the jitted pure step of
``jaxinv.training.inverter.make_inverter_step``, as ``train_inverter`` builds it (terms with
weight 0 not computed). Two loss configurations: ``PRESETS["tldr"]``
without the second-order term (KL, CE, cosine, orthogonality, KL and CE on ``x + 0.1 N(0,
I)``, squared TV and pixel range as per-pixel means) and with it (``+ |grad_theta
CE(f_theta(x_i), y_i)|_2`` on the first ``grad_examples`` = 8 examples, scaled by N / 8:
second-order autodiff through f).

The PyTorch reference is the same generator and target (jaxinv's weights copied in; eval-mode
forward outputs and every loss term checked against jaxinv's, printed) and the same losses,
eager; its per-example weight gradients by ``torch.func`` (``vmap(grad)``) or by a loop of
``torch.autograd.grad(create_graph=True)``, whichever probes faster (printed). Compilation
(timed separately) and warm-up are excluded; figures are the median of ``--repeats`` timed
runs (min-max in brackets); ratio = jaxinv / PyTorch (> 1: jaxinv faster). The machine is
shared and noisy: compare the ratios, measured in the same run.

Threads: as ``benchmarks/gan.py`` (PyTorch at the faster of its default thread count and 1,
probed per row; XLA's pool is fixed at start-up, see there for single-threaded JAX).
"""

from __future__ import annotations

import argparse
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxinv.attacks.inversion_losses import PRESETS, TERMS, Weights, inversion_losses
from jaxinv.evaluation.results import versions
from jaxinv.models import create, init_variables
from jaxinv.models.conditional import ConditionalGenerator, conditions, init_generator
from jaxinv.training.inverter import make_inverter_step
from jaxinv.training.step import init_state

try:  # run as a script (benchmarks/ on sys.path) or imported as benchmarks.tldr
    from common import cpu_name
    from common import load_text as _load
    from gan import fmt, median_rate, ratio
except ImportError:
    from benchmarks.common import cpu_name
    from benchmarks.common import load_text as _load
    from benchmarks.gan import fmt, median_rate, ratio

FULL = {"shape": (28, 28, 1), "width": 16, "batch": 64, "z_dim": 100, "classes": 10,
        "dropout": 0.3, "lr": 1e-3, "sigma": 0.1, "grad_examples": 8,
        "target": {"channels": (32, 64), "dense": 128}, "iters": 8}
QUICK = {**FULL, "shape": (8, 8, 1), "width": 4, "batch": 8,
         "target": {"channels": (4, 8), "dense": 16}, "iters": 4}
CONFIGS = {"tldr, no grad": PRESETS["tldr"]._replace(grad=0.0),
           "tldr + grad": PRESETS["tldr"]}
UPSAMPLE = ("subpixel", "transpose")
ROWS = [(u, c) for u in UPSAMPLE for c in CONFIGS]
# --quick: one loss configuration per upsampling (each row costs an XLA compilation of
# ~10 s here); every code path (both ports, both losses, both PyTorch methods) still runs
QUICK_ROWS = [("subpixel", "tldr, no grad"), ("transpose", "tldr + grad")]


def generator(cfg: dict, upsample: str) -> ConditionalGenerator:
    return ConditionalGenerator(cfg["shape"], cfg["classes"], "label", cfg["width"],
                                cfg["dropout"], "linear", upsample)


# --------------------------------------------------------------------------- jaxinv


def jax_steps(cfg: dict, module, g_vars, target, t_vars, weights: Weights, repeats: int
              ) -> tuple[tuple, float]:
    """Generator steps/s of the jitted member step; compile seconds (AOT, excluded)."""
    tx = optax.adam(cfg["lr"])
    active = tuple(t for t in TERMS if getattr(weights, t) != 0)  # as train_inverter
    step = make_inverter_step(module, target, tx, batch_size=cfg["batch"], z_dim=cfg["z_dim"],
                              sigma=cfg["sigma"], tv_squared=True, grad_mode="per_example",
                              grad_examples=cfg["grad_examples"], active=active)
    state, key = init_state(g_vars, tx), jax.random.key(0)
    t_vars = jax.device_put(t_vars)
    w = Weights(*(jnp.float32(v) for v in weights))  # traced, as train_inverter passes them
    tic = time.perf_counter()
    run = jax.jit(step).lower(state, t_vars, w, key).compile()
    compile_s = time.perf_counter() - tic
    for i in range(2):  # warm-up
        state, m = run(state, t_vars, w, jax.random.fold_in(key, i))
    jax.block_until_ready(m)
    box = {"s": state, "i": 2}

    def once():
        s, i = box["s"], box["i"]
        tic = time.perf_counter()
        for j in range(cfg["iters"]):  # dispatched asynchronously, as in train_inverter
            s, m = run(s, t_vars, w, jax.random.fold_in(key, i + j))
        jax.block_until_ready((s, m))
        dt = time.perf_counter() - tic
        box.update(s=s, i=i + cfg["iters"])
        return cfg["iters"] / dt

    return median_rate(once, repeats), compile_s


# --------------------------------------------------------------------------- PyTorch


def torch_nets(torch, cfg: dict, upsample: str, g_vars, model, t_vars):
    """PyTorch generator ``G(cat(z, onehot))`` (NCHW) and target ``T(x) -> (logits,
    features)`` with jaxinv's weights: flatten orders, the pixel-shuffle channel order and
    flax's ConvTranspose kernel (unflipped, SAME = torch padding 1) handled by permuting
    weights, not activations."""
    nn = torch.nn
    h, w, c = cfg["shape"]
    gw, din = cfg["width"], cfg["z_dim"] + cfg["classes"]
    h4, w4 = h // 4, w // 4
    t = lambda a: torch.tensor(np.ascontiguousarray(np.asarray(a, np.float32)))

    def up(cin, cout):
        if upsample == "subpixel":
            return [nn.Conv2d(cin, 4 * cout, 3, padding=1), nn.PixelShuffle(2)]
        return [nn.ConvTranspose2d(cin, cout, 4, 2, padding=1)]

    G = nn.Sequential(
        nn.Linear(din, h4 * w4 * 4 * gw), nn.BatchNorm1d(h4 * w4 * 4 * gw, momentum=0.1),
        nn.LeakyReLU(0.2), nn.Unflatten(1, (4 * gw, h4, w4)),
        *up(4 * gw, 2 * gw), nn.BatchNorm2d(2 * gw, momentum=0.1), nn.LeakyReLU(0.2),
        nn.Dropout(cfg["dropout"]), *up(2 * gw, c))

    class LeNet(nn.Module):
        def __init__(self):
            super().__init__()
            layers, cin, hh, ww = [], c, h, w
            for ch in model.channels:  # 5x5 SAME conv, ReLU, 2x2 max-pool
                layers += [nn.Conv2d(cin, ch, 5, padding=2), nn.ReLU()]
                if min(hh, ww) >= 2:
                    layers.append(nn.MaxPool2d(2))
                    hh, ww = hh // 2, ww // 2
                cin = ch
            self.hwc = (hh, ww, cin)
            self.trunk = nn.Sequential(*layers, nn.Flatten(),
                                       nn.Linear(hh * ww * cin, model.dense), nn.ReLU())
            self.head = nn.Linear(model.dense, model.num_classes)

        def forward(self, x):
            f = self.trunk(x)
            return self.head(f), f

    T = LeNet()

    def conv(m, p, perm=None):
        k, b = np.asarray(p["kernel"]), np.asarray(p["bias"])
        if isinstance(m, nn.ConvTranspose2d):  # [Cin, Cout, kh, kw], spatially flipped
            m.weight.data, m.bias.data = t(k[::-1, ::-1].transpose(2, 3, 0, 1)), t(b)
            return
        k = k.transpose(3, 2, 0, 1)
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

    # flax pixel_shuffle: channel (2i + j) * C + k -> torch PixelShuffle's k * 4 + (2i + j)
    shuffle = lambda ch: np.array([(i % 4) * ch + i // 4 for i in range(4 * ch)])
    p, s = g_vars["params"], g_vars["batch_stats"]
    grid = (h4, w4, 4 * gw)
    dense(G[0], p["Dense_0"], out_hwc=grid)
    bn(G[1], p["BatchNorm_0"], s["BatchNorm_0"], grid)
    ups = [m for m in G if isinstance(m, nn.Conv2d | nn.ConvTranspose2d)]
    name = "Conv" if upsample == "subpixel" else "ConvTranspose"
    for i, (m, ch) in enumerate(zip(ups, (2 * gw, c), strict=True)):
        conv(m, p[f"{name}_{i}"], shuffle(ch) if upsample == "subpixel" else None)
    bn(next(m for m in G if isinstance(m, nn.BatchNorm2d)), p["BatchNorm_1"],
       s["BatchNorm_1"])
    tp = t_vars["params"]
    for i, m in enumerate(m for m in T.modules() if isinstance(m, nn.Conv2d)):
        conv(m, tp[f"Conv_{i}"])
    for i, m in enumerate(m for m in T.modules() if isinstance(m, nn.Linear)):
        dense(m, tp[f"Dense_{i}"], hwc=None if i else T.hwc)
    for q in T.parameters():  # frozen
        q.requires_grad_(False)
    return G, T


def torch_terms(torch, T, x, c, y, weights: Weights, sigma: float, m: int, method: str
                ) -> dict:
    """Per-example loss terms ``[N]`` as ``inversion_losses`` (terms of weight 0 skipped);
    ``method``: "func" (``vmap(grad)``) or "loop" (``autograd.grad(create_graph=True)`` per
    example) for the weight-gradient norm of the first ``m`` examples."""
    F = torch.nn.functional
    n = x.shape[0]
    logits, feats = T(x)
    hn = feats / torch.sqrt(feats.pow(2).sum(-1, keepdim=True) + 1e-12)
    gram = hn @ hn.T
    kl = lambda lg: (torch.special.xlogy(c, c) - c * F.log_softmax(lg, -1)).sum(-1)
    terms = {"kl": lambda: kl(logits), "ce": lambda: F.cross_entropy(logits, y, reduction="none"),
             "cos": lambda: ((gram.sum() - gram.trace()) / max(n * (n - 1), 1)).expand(n),
             "ortho": lambda: ((gram - torch.eye(n)).pow(2).sum() / n ** 2).expand(n),
             "tv": lambda: (x.diff(dim=2).pow(2).sum((1, 2, 3))
                            + x.diff(dim=3).pow(2).sum((1, 2, 3))) / x[0].numel(),
             "pix": lambda: (F.relu(x - 1.0) + F.relu(-x)).sum((1, 2, 3)) / x[0].numel()}
    out = {k: f() for k, f in terms.items() if getattr(weights, k) != 0}
    if weights.kl_p != 0 or weights.ce_p != 0:
        lp = T(x + sigma * torch.randn_like(x))[0]
        if weights.kl_p != 0:
            out["kl_p"] = kl(lp)
        if weights.ce_p != 0:
            out["ce_p"] = F.cross_entropy(lp, y, reduction="none")
    if weights.grad != 0:
        m = min(m, n)
        g = weight_grad_norms(torch, T, x[:m], y[:m], method)
        out["grad"] = torch.cat([g * (n / m), torch.zeros(n - m)])
    return out


def weight_grad_norms(torch, T, x, y, method: str):
    """``|grad_theta CE(T(x_i), y_i)|_2`` per example, differentiable in ``x``."""
    F = torch.nn.functional
    if method == "func":
        from torch.func import functional_call, grad, vmap

        params = {k: v.detach() for k, v in T.named_parameters()}

        def ce(p, xi, yi):
            return F.cross_entropy(functional_call(T, p, (xi[None],))[0], yi[None])

        gs = vmap(grad(ce), in_dims=(None, 0, 0))(params, x, y)
        sq = sum(g.pow(2).flatten(1).sum(1) for g in gs.values())
        return torch.sqrt(sq + 1e-20)
    ps = list(T.parameters())
    for q in ps:
        q.requires_grad_(True)
    try:
        norms = []
        for i in range(len(x)):
            gs = torch.autograd.grad(F.cross_entropy(T(x[i:i + 1])[0], y[i:i + 1]), ps,
                                     create_graph=True)
            norms.append(torch.sqrt(sum(g.pow(2).sum() for g in gs) + 1e-20))
        return torch.stack(norms)
    finally:
        for q in ps:
            q.requires_grad_(False)


def torch_step(torch, cfg: dict, G, T, weights: Weights, method: str):
    """One generator step (``G`` train mode, fresh Adam), as ``make_inverter_step``."""
    B, K = cfg["batch"], cfg["classes"]
    G.train()
    T.eval()
    g_params = list(G.parameters())
    opt = torch.optim.Adam(g_params, lr=cfg["lr"])
    labels = torch.arange(B) % K

    def step():
        y = labels[torch.randperm(B)]
        c = torch.nn.functional.one_hot(y, K).float()
        x = G(torch.cat([torch.randn(B, cfg["z_dim"]), c], 1))
        terms = torch_terms(torch, T, x, c, y, weights, cfg["sigma"], cfg["grad_examples"],
                            method)
        loss = sum(getattr(weights, k) * v for k, v in terms.items()).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward(inputs=g_params)  # the target's parameters get no gradient
        opt.step()

    return step


def torch_timed(torch, variants: dict, threads: list[int], calls: int, repeats: int
                ) -> tuple[tuple, str, int, dict]:
    """Warm the first of ``variants`` up and time one call at each thread count, then the
    other variants at the fastest count; the median steps/s (``calls`` per run) of the
    fastest variant. Returns (rate, name, threads, {(name, threads): probe rate})."""
    probe = {}

    def time_one(name, t):
        torch.set_num_threads(t)
        variants[name]()  # warm-up
        tic = time.perf_counter()
        variants[name]()
        probe[name, t] = 1 / (time.perf_counter() - tic)

    first, *others = variants
    for t in threads:
        time_one(first, t)
    best = max(threads, key=lambda t: probe[first, t])
    for name in others:
        time_one(name, best)
    name = max(variants, key=lambda k: probe[k, best])
    torch.set_num_threads(best)
    call = variants[name]

    def once():
        tic = time.perf_counter()
        for _ in range(calls):
            call()
        return calls / (time.perf_counter() - tic)

    try:
        return median_rate(once, repeats), name, best, probe
    finally:
        torch.set_num_threads(threads[0])


# --------------------------------------------------------------------------- checks


def perturbed(g_vars, seed: int = 0):
    """``g_vars`` with random BatchNorm scales, biases and running statistics, so the eval
    check exercises their ports (fresh ones are 1, 0, 0, 1)."""
    rng = np.random.default_rng(seed)
    new = {"params": dict(g_vars["params"]), "batch_stats": {}}
    for name, s in g_vars["batch_stats"].items():
        d = s["mean"].shape
        new["batch_stats"][name] = {"mean": jnp.asarray(rng.normal(0, 0.3, d), jnp.float32),
                                    "var": jnp.asarray(rng.uniform(0.5, 2.0, d), jnp.float32)}
        new["params"][name] = {"scale": jnp.asarray(rng.uniform(0.5, 1.5, d), jnp.float32),
                               "bias": jnp.asarray(rng.normal(0, 0.3, d), jnp.float32)}
    return new


def check(torch, cfg: dict, module, g_vars, model, t_vars, methods: tuple[str, ...]
          ) -> tuple[float, float, float | None]:
    """Max |jaxinv - PyTorch| of eval-mode generator images and target logits, and (if
    ``methods`` are given) the max relative difference of the loss terms (``PRESETS["tldr"]``,
    sigma 0 so the primed terms are deterministic; the PyTorch weight-gradient norms by each
    of ``methods``) on one batch."""
    g_vars = perturbed(g_vars)
    G, T = torch_nets(torch, cfg, module.upsample, g_vars, model, t_vars)
    G.eval()
    T.eval()
    n, K = cfg["batch"], cfg["classes"]
    y = np.random.default_rng(1).permutation(np.arange(n) % K)
    z = np.random.default_rng(2).standard_normal((n, cfg["z_dim"])).astype(np.float32)
    vec, mat = conditions(jax.random.key(0), jnp.asarray(y), K, "label")

    @jax.jit  # one compilation instead of one per eager op
    def forward(g_vars, t_vars, z, vec, mat, y):
        x = module.apply(g_vars, z, vec, mat)
        terms = {} if not methods else inversion_losses(
            model.apply, t_vars, x, vec, y, jax.random.key(0), PRESETS["tldr"], sigma=0.0,
            grad_examples=cfg["grad_examples"])[1]
        return x, model.apply(t_vars, x)[0], terms

    xj, lj, tj = forward(g_vars, t_vars, z, vec, mat, jnp.asarray(y))
    yt, ct = torch.tensor(y), torch.tensor(np.asarray(vec))
    xt = G(torch.cat([torch.tensor(z), ct], 1)).detach()
    with torch.no_grad():
        lt = T(torch.tensor(np.ascontiguousarray(np.asarray(xj).transpose(0, 3, 1, 2))))[0]
    d_x = np.abs(np.asarray(xj) - xt.numpy().transpose(0, 2, 3, 1)).max()
    d_l = np.abs(np.asarray(lj) - lt.numpy()).max()
    if not methods:
        return float(d_x), float(d_l), None
    rel = 0.0
    for m in methods:
        tt = torch_terms(torch, T, xt, ct, yt, PRESETS["tldr"], 0.0, cfg["grad_examples"], m)
        rel = max([rel] + [np.abs(np.asarray(tj[k]) - tt[k].detach().numpy()).max()
                           / max(np.abs(np.asarray(tj[k])).max(), 1e-6) for k in TERMS])
    return float(d_x), float(d_l), float(rel)


# --------------------------------------------------------------------------- main


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="tiny settings (smoke test)")
    p.add_argument("--no-torch", action="store_true", help="skip the PyTorch reference")
    p.add_argument("--repeats", type=int, default=3, help="timed runs after the warm-up")
    p.add_argument("--torch-threads", default="auto",
                   help="PyTorch thread counts to probe, e.g. 2,1 (auto: default and 1)")
    p.add_argument("--torch-method", default="auto", choices=["auto", "func", "loop"],
                   help="PyTorch per-example weight gradients (auto: the faster on a probe)")
    args = p.parse_args()
    cfg = QUICK if args.quick else FULL

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
    methods = ("func", "loop") if args.torch_method == "auto" else (args.torch_method,)

    v = versions()
    print(f"machine: {cpu_name()}, {os.cpu_count()} cores, {jax.devices()}, load {_load()}")
    print(f"versions: jax {v['jax']}, jaxlib {v['jaxlib']}, flax {v['flax']}, optax "
          f"{v['optax']}, python {v['python']}"
          + (f", torch {torch.__version__}" if torch else "")
          + f"; XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}")
    model = create("cnn", 10, **cfg["target"])
    t_vars = jax.jit(init_variables, static_argnums=(0, 1))(model, cfg["shape"])  # 1 compile
    shape = "x".join(map(str, cfg["shape"]))
    print(f"generator: {shape}, label conditioning, width {cfg['width']}, dropout "
          f"{cfg['dropout']}, linear output, z_dim {cfg['z_dim']}, batch {cfg['batch']}, Adam "
          f"{cfg['lr']:g}; target cnn {tuple(model.channels)}-{model.dense} (random weights); "
          f"sigma {cfg['sigma']}, grad on the first {cfg['grad_examples']} examples")
    print(f"figures: generator steps/s, median [min-max] of {args.repeats} timed runs of "
          f"{cfg['iters']} steps after warm-up; compile s: jaxinv's AOT compilation (excluded)")
    if torch is not None:
        torch.manual_seed(0)
        print(f"PyTorch: eager, jaxinv's weights; per row the faster of threads {threads} "
              f"(probed with {methods[0]}), then of weight-gradient methods {list(methods)} "
              "(func: torch.func vmap(grad); loop: autograd.grad(create_graph=True) per "
              "example), one probe call each")

    rows = []
    for up in UPSAMPLE:
        todo = [c for u, c in (QUICK_ROWS if args.quick else ROWS) if u == up]
        if not todo:
            continue
        module = generator(cfg, up)
        g_vars = init_generator(module, 0, cfg["z_dim"])
        if torch is not None:
            # the loss terms do not depend on the generator: checked with the first one only
            d_x, d_l, rel = check(torch, cfg, module, g_vars, model, t_vars,
                                  () if rows else methods)
            print(f"check {up}: max |G(z) diff| {d_x:.1e}, max |logits diff| {d_l:.1e}"
                  + (f", loss terms ({', '.join(methods)}) max rel diff {rel:.1e}"
                     if rel is not None else "")
                  + " (eval mode, random BatchNorm stats)")
        for name in todo:
            w = CONFIGS[name]
            rj, compile_s = jax_steps(cfg, module, g_vars, model, t_vars, w, args.repeats)
            rt, note = None, "-"
            if torch is not None:
                torch.manual_seed(0)
                G, T = torch_nets(torch, cfg, up, g_vars, model, t_vars)
                ms = methods if w.grad != 0 else methods[:1]
                variants = {m: torch_step(torch, cfg, G, T, w, m) for m in ms}
                rt, m, thr, probe = torch_timed(torch, variants, threads, cfg["iters"],
                                                args.repeats)
                note = (f"{m + ', ' if w.grad != 0 else ''}{thr} thread{'s' * (thr > 1)}; "
                        "probe " + ", ".join(
                            f"{k + ' ' if w.grad != 0 else ''}{t}: {r:.1f}/s"
                            for (k, t), r in probe.items()))
            rows.append((f"{up}, {name}", rj, rt, compile_s, note))

    print(f"\n{'config':<30} {'jaxinv steps/s':>20} {'torch steps/s':>20} {'ratio':>6} "
          f"{'compile s':>9}  PyTorch")
    for name, rj, rt, compile_s, note in rows:
        print(f"{name:<30} {fmt1(rj):>20} {fmt1(rt):>20} {ratio(rj, rt):>6} "
              f"{compile_s:>9.1f}  {note}")
    print(f"\nload at the end: {_load()}")


def fmt1(r: tuple[float, float, float] | None) -> str:
    """Like ``gan.fmt`` with one decimal (steps/s can be small)."""
    if r is None:
        return fmt(r)
    d = 1 if r[0] < 100 else 0
    return f"{r[0]:.{d}f} [{r[1]:.{d}f}-{r[2]:.{d}f}]"


if __name__ == "__main__":
    main()
