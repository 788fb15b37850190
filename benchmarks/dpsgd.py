"""DP-SGD examples/s: jaxinv (vmap of grad, per-example clipping, noise on the sum) against
Opacus on the same model and batch, and non-private training against PyTorch; same run.

    python benchmarks/dpsgd.py                        # MNIST CNN (0.46M params), batch 256
    python benchmarks/dpsgd.py --arch mlp             # a 784-256-10 ReLU MLP
    python benchmarks/dpsgd.py --dataset digits --steps 20 --repeats 2   # quick

The model is jaxinv's ``cnn`` (conv 5x5x32, pool, conv 5x5x64, pool, dense 128, dense
10) and its PyTorch twin, started from the *same* weights (logits checked); a DP step is
per-example gradients, clipping to ``--clip``, Gaussian noise on the sum (sigma
``--noise-multiplier``), division by the batch, and an Adam update (jaxinv:
:func:`jaxinv.training.dp.private_grad` + optax; Opacus: ``GradSampleModule`` +
``DPOptimizer``, with Opacus's default hook-based per-sample gradients and with its
functorch ones). With the noise off, the two frameworks' privatised gradients are
compared (printed; on MNIST images with torch 2.13, Opacus 1.6's hook-based gradients of
the second convolution were wrong, its functorch ones agreed with jaxinv to ~1e-8).
Compilation is timed apart; each side runs ``--steps`` steps per repeat, the sides
alternate, and medians are printed with the ratios and the load average.
One JSON line per measurement is appended to ``--jsonl`` (alias ``--out``), then one
"DP-SGD per-example gradients" record (jaxinv against the fastest Opacus mode whose
gradients passed the check) that ``benchmarks/table.py`` reads.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from importlib import metadata
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxinv import data
from jaxinv.core.compiler import jit
from jaxinv.evaluation.results import versions
from jaxinv.models import create, init_variables
from jaxinv.training.dp import _microbatch, auto_microbatch, private_grad
from jaxinv.training.step import classifier_loss, init_state, make_step

sys.path.insert(0, str(Path(__file__).parent))  # as a script or as benchmarks.dpsgd
from common import alternate, cpu_name, default_jsonl, emit, family_record
from common import load_text as _load


def jax_steps(module, variables, lr: float, clip: float, sigma: float, microbatch=None,
              patch_grads=None):
    """Jitted ``(state, x, y, key) -> state`` for DP-SGD and for plain training."""
    tx = optax.adam(lr)
    loss = classifier_loss(module)

    def per_example(params, ex):
        x, y = ex
        return loss(params, {}, (x[None], y[None]), jax.random.key(0))[0][0]

    def dp(state, x, y, key):
        g, _ = private_grad(per_example, state.params, (x, y), jnp.ones(len(x)), key,
                            clip=clip, noise_multiplier=sigma, expected_batch=len(x),
                            microbatch=microbatch, patch_grads=patch_grads)
        updates, opt = tx.update(g, state.opt_state, state.params)
        return state._replace(params=optax.apply_updates(state.params, updates),
                              opt_state=opt, step=state.step + 1)

    plain = make_step(loss, tx)
    plain_step = lambda state, x, y, key: plain(state, (x, y), jnp.ones(len(x)), key)[0]
    return init_state(variables, tx), jit(dp), jit(plain_step)


def torch_twin(torch, variables, shape, k: int):
    """The PyTorch ``cnn`` (or the 256-unit ReLU ``mlp``) with jaxinv's weights (NHWC/HWIO ->
    NCHW/OIHW)."""
    nn = torch.nn
    p = jax.tree.map(np.asarray, variables["params"])
    h, w, c = shape
    t = lambda a: torch.tensor(np.ascontiguousarray(a))
    if "Conv_0" not in p:  # the mlp: NHWC-flattened rows -> NCHW-flattened columns
        net = nn.Sequential(nn.Flatten(), nn.Linear(h * w * c, 256), nn.ReLU(),
                            nn.Linear(256, k))
        with torch.no_grad():
            d0 = p["Dense_0"]["kernel"].reshape(h, w, c, 256).transpose(3, 2, 0, 1)
            net[1].weight.copy_(t(d0.reshape(256, -1)))
            net[1].bias.copy_(t(p["Dense_0"]["bias"]))
            net[3].weight.copy_(t(p["Dense_1"]["kernel"].T))
            net[3].bias.copy_(t(p["Dense_1"]["bias"]))
        return net
    net = nn.Sequential(nn.Conv2d(c, 32, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
                        nn.Conv2d(32, 64, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
                        nn.Flatten(), nn.Linear((h // 4) * (w // 4) * 64, 128), nn.ReLU(),
                        nn.Linear(128, k))
    with torch.no_grad():
        for i, name in ((0, "Conv_0"), (3, "Conv_1")):
            net[i].weight.copy_(t(p[name]["kernel"].transpose(3, 2, 0, 1)))
            net[i].bias.copy_(t(p[name]["bias"]))
        d0 = p["Dense_0"]["kernel"].reshape(h // 4, w // 4, 64, 128).transpose(3, 2, 0, 1)
        net[7].weight.copy_(t(d0.reshape(128, -1)))
        net[7].bias.copy_(t(p["Dense_0"]["bias"]))
        net[9].weight.copy_(t(p["Dense_1"]["kernel"].T))
        net[9].bias.copy_(t(p["Dense_1"]["bias"]))
    return net


def opacus_step(torch, net, lr: float, clip: float, sigma: float, batch: int, mode: str):
    """An Opacus DP step ``(x, y) -> None``, its module and optimizer; ``mode`` "hooks"
    (Opacus's default grad samplers) or "functorch" (``force_functorch=True``)."""
    from opacus import GradSampleModule
    from opacus.optimizers import DPOptimizer

    gsm = GradSampleModule(net, force_functorch=mode == "functorch")
    opt = DPOptimizer(torch.optim.Adam(gsm.parameters(), lr=lr), noise_multiplier=sigma,
                      max_grad_norm=clip, expected_batch_size=batch)

    def step(x, y):
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(gsm(x), y).backward()
        opt.step()

    return step, gsm, opt


def torch_plain_step(torch, net, lr: float):
    opt = torch.optim.Adam(net.parameters(), lr=lr)

    def step(x, y):
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(net(x), y).backward()
        opt.step()

    return step


def check(torch, module, variables, x, y, clip: float, mode: str) -> tuple[float, float]:
    """Max |logit| and max |privatised gradient| differences, noise off (fresh twins)."""
    net = torch_twin(torch, variables, x.shape[1:], int(y.max()) + 1)
    xt = torch.tensor(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
    with torch.no_grad():
        d_logits = float(np.abs(net(xt).numpy() - np.asarray(
            module.apply(variables, x)[0])).max())
    _, gsm, opt = opacus_step(torch, net, 1e-3, clip, 0.0, len(x), mode)
    opt.zero_grad(set_to_none=True)
    torch.nn.functional.cross_entropy(gsm(xt), torch.tensor(y).long()).backward()
    opt.pre_step()  # clip, sum, (no) noise, divide by the batch: p.grad is the DP gradient
    loss = classifier_loss(module)
    per_ex = lambda p, ex: loss(p, {}, (ex[0][None], ex[1][None]), jax.random.key(0))[0][0]
    g, _ = private_grad(per_ex, variables["params"], (x, y), jnp.ones(len(x)),
                        jax.random.key(0), clip=clip, noise_multiplier=0.0,
                        expected_batch=len(x))
    twin = torch_twin(torch, {"params": g}, x.shape[1:], int(y.max()) + 1)
    d_grad = max(float(np.abs(a.grad.numpy() - b.detach().numpy()).max())
                 for a, b in zip(gsm._module.parameters(), twin.parameters(), strict=True))
    return d_logits, d_grad


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="mnist")
    p.add_argument("--arch", choices=["cnn", "mlp"], default="cnn",
                   help="cnn: conv 32, conv 64, dense 128; mlp: one 256-unit ReLU layer")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--steps", type=int, default=30, help="steps per timed repeat")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--clip", type=float, default=1.0)
    p.add_argument("--noise-multiplier", type=float, default=1.0)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--opacus-mode", choices=["functorch", "hooks", "both"], default="both",
                   help="Opacus's per-sample gradients: functorch, its default hooks, or both")
    p.add_argument("--microbatch", default="auto",
                   help="jaxinv's per-example gradients this many at a time ('all': one vmap; "
                        "'auto': jaxinv.training.dp.auto_microbatch)")
    p.add_argument("--patch-grads", choices=["auto", "on", "off"], default="auto",
                   help="conv weight gradients as im2col + matmul (private_grad's "
                        "patch_grads; auto: on CPU)")
    p.add_argument("--jsonl", "--out", dest="jsonl", default=default_jsonl(__file__),
                   help="append one JSON line per measurement and the 'DP-SGD per-example "
                        "gradients' record here ('' : none)")
    a = p.parse_args()
    a.microbatch = _microbatch(a.microbatch if a.microbatch in ("auto", "all")
                               else int(a.microbatch))
    if min(a.batch, a.steps, a.repeats) < 1:
        p.error("--batch, --steps and --repeats must be >= 1")
    try:
        import torch
        opacus_version = metadata.version("opacus")
    except (ImportError, metadata.PackageNotFoundError) as e:
        sys.exit(f"needs torch and opacus (pip install torch opacus): {e}")
    x, y = data.load(a.dataset, "train")
    x, y = x[:a.batch], y[:a.batch].astype(np.int32)
    if x.shape[1] % 4 or x.shape[2] % 4 or len(x) < a.batch:
        sys.exit(f"{a.dataset}: need {a.batch} images with sides divisible by 4")
    k = int(data.info(a.dataset).num_classes)
    module = (create("cnn", k) if a.arch == "cnn" else
              create("mlp", k, hidden=[256], activation="relu"))
    variables = init_variables(module, x.shape[1:], 0)
    n_params = sum(v.size for v in jax.tree.leaves(variables["params"]))
    if a.microbatch == "auto":
        a.microbatch = auto_microbatch(n_params, a.batch)
    a.patch_grads = {"on": True, "off": False}.get(a.patch_grads, jax.default_backend() == "cpu")
    v = versions()
    print(f"machine: {cpu_name()}, {os.cpu_count()} cores, {jax.devices()}, load {_load()}")
    print(f"versions: jax {v['jax']}, flax {v['flax']}, optax {v['optax']}, torch "
          f"{torch.__version__} ({torch.get_num_threads()} threads), opacus {opacus_version}")
    print(f"settings: {a.dataset} {'x'.join(map(str, x.shape[1:]))}, {a.arch} ({n_params} "
          "params), "
          f"batch {a.batch}, clip {a.clip}, noise multiplier {a.noise_multiplier}, Adam, "
          f"jaxinv microbatch {a.microbatch or 'all'}, patch grads {a.patch_grads}, "
          f"{a.steps} steps x {a.repeats} repeats (alternating)")
    modes = ["functorch", "hooks"] if a.opacus_mode == "both" else [a.opacus_mode]
    checks = {}
    for mode in modes:
        d_logits, checks[mode] = check(torch, module, variables, x, y, a.clip, mode)
        print(f"check (same weights): max |logits diff| {d_logits:.1e}; max |DP gradient "
              f"diff| (noise off) vs Opacus {mode} {checks[mode]:.1e}"
              + ("  <- WRONG per-sample gradients" if checks[mode] > 1e-4 else ""))

    state, dp_step, plain_step = jax_steps(module, variables, a.lr, a.clip,
                                           a.noise_multiplier, a.microbatch, a.patch_grads)
    xj, yj = jax.device_put(x), jax.device_put(y)
    compile_s = {}
    for name, fn in (("dp", dp_step), ("plain", plain_step)):
        tic = time.perf_counter()
        jax.block_until_ready(fn(state, xj, yj, jax.random.key(0)))
        compile_s[name] = time.perf_counter() - tic

    def run_jax(fn):
        def go(steps):
            s = state
            for i in range(steps):
                s = fn(s, xj, yj, jax.random.key(i))
            jax.block_until_ready(s)
        return go

    xt = torch.tensor(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
    yt = torch.tensor(y).long()

    def run_torch(step):
        def go(steps):
            for _ in range(steps):
                step(xt, yt)
        return go

    sides = {"jaxinv_dp": run_jax(dp_step)}
    for mode in modes:
        step = opacus_step(torch, torch_twin(torch, variables, x.shape[1:], k), a.lr, a.clip,
                           a.noise_multiplier, a.batch, mode)[0]
        sides[f"opacus_dp_{mode}"] = run_torch(step)
    tp_step = torch_plain_step(torch, torch_twin(torch, variables, x.shape[1:], k), a.lr)
    sides.update({"jaxinv_plain": run_jax(plain_step), "torch_plain": run_torch(tp_step)})
    for go in sides.values():  # warm-up (torch allocators, opacus hooks)
        go(2)
    units = a.steps * a.batch
    rates = alternate({s: (lambda go=go: go(a.steps) or units) for s, go in sides.items()},
                      a.repeats)
    times = {s: [units / r for r in rs] for s, rs in rates.items()}  # seconds per repeat
    rate = {s: a.steps * a.batch / statistics.median(t) for s, t in times.items()}
    print(f"\n{'':<22} {'examples/s (median)':>20} {'repeats':>28}")
    for s in sides:
        reps = ", ".join(f"{a.steps * a.batch / t:.0f}" for t in times[s])
        print(f"{s:<22} {rate[s]:>20.0f} {reps:>28}")
    ratios = {f"dp_jaxinv_over_opacus_{m}": rate["jaxinv_dp"] / rate[f"opacus_dp_{m}"]
              for m in modes}
    ratios["plain_jaxinv_over_torch"] = rate["jaxinv_plain"] / rate["torch_plain"]
    print("\nratios: " + "; ".join(f"{n} {r:.2f}x" for n, r in ratios.items()))
    print(f"jaxinv compile {compile_s['dp']:.1f} s (DP), {compile_s['plain']:.1f} s (plain); "
          f"load at the end {_load()}")
    if a.jsonl:  # machine (cpu, load as 3 floats, versions, ...) and time merged in by emit
        base = {"bench": "dpsgd", "dataset": a.dataset, "arch": a.arch, "batch": a.batch,
                "params": n_params,
                "clip": a.clip, "noise_multiplier": a.noise_multiplier, "steps": a.steps,
                "microbatch": a.microbatch, "patch_grads": a.patch_grads,
                "repeats": a.repeats,
                "torch_threads": torch.get_num_threads(), "versions": {
                    **{n: v[n] for n in ("jax", "jaxlib", "flax", "optax")},
                    "torch": torch.__version__, "opacus": opacus_version}}
        for s in sides:
            emit(a.jsonl, {**base, "side": s, "examples_per_s": rate[s], "repeat_s": times[s],
                           "compile_s": compile_s.get(s.split("_")[1]) if
                           s.startswith("jaxinv") else None})
        emit(a.jsonl, {**base, "side": "ratio", **ratios, "check_max_dp_grad_diff": checks})
        # the reference: the fastest Opacus mode with correct per-sample gradients
        ok = [m for m in modes if checks[m] <= 1e-4] or modes
        ref = max(ok, key=lambda m: rate[f"opacus_dp_{m}"])
        work = (f"DP-SGD step, {a.dataset} {a.arch} ({n_params} params), batch {a.batch}, clip "
                f"{a.clip:g}, noise {a.noise_multiplier:g}, Adam, jaxinv microbatch "
                f"{a.microbatch or 'all'}{', im2col weight grads' if a.patch_grads else ''}; "
                f"vs Opacus {opacus_version} {ref}"
                + ("" if checks[ref] <= 1e-4 else " (wrong gradients)"))
        emit(a.jsonl, family_record(
            "DP-SGD per-example gradients", work, "examples/s", rate["jaxinv_dp"],
            rate[f"opacus_dp_{ref}"], a.repeats, compile_s=compile_s["dp"],
            **{k: base[k] for k in ("bench", "dataset", "arch", "batch", "params", "steps",
                                    "microbatch", "patch_grads", "torch_threads",
                                    "versions")},
            reference=f"opacus {ref}", non_private={"jaxinv": rate["jaxinv_plain"],
                                                    "torch": rate["torch_plain"]},
            check_max_dp_grad_diff=checks))
        print(f"appended to {a.jsonl}")


if __name__ == "__main__":
    main()
