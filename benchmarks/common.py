"""Helpers shared by the benchmark scripts: the machine, alternating timing, JSON lines.

The scripts import this as a sibling module (``sys.path.insert(0, <benchmarks/>)``, as
``experiments/`` does). Each benchmark appends one record per kernel family it measured
(:func:`emit`) to ``benchmarks/results/<script>.jsonl``; ``benchmarks/table.py`` turns the
newest record of each family into the README's speed table.
"""

from __future__ import annotations

import json
import math
import os
import platform
import statistics
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
FAMILIES = ("white-box pixel step", "GAN-latent step", "zeroth-order queries",
            "gradient matching", "DP-SGD per-example gradients", "generator training")
PACKAGES = ("jax", "jaxlib", "flax", "torch")


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else ``platform.processor()``."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def load_text() -> str:
    """The load average as printed by the scripts: ``"1.02 0.98 0.75"``."""
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def matmul_gflops(n: int = 2048, reps: int = 10) -> float:
    """This machine's fp32 matmul throughput through jitted JAX (GFLOP/s)."""
    import jax
    import jax.numpy as jnp

    a = jnp.ones((n, n), jnp.float32)
    f = jax.jit(lambda a: a @ a)
    f(a).block_until_ready()
    tic = time.perf_counter()
    for _ in range(reps):
        r = f(a)
    r.block_until_ready()
    return 2 * n**3 * reps / (time.perf_counter() - tic) / 1e9


def versions(packages: Iterable[str] = PACKAGES) -> dict[str, str]:
    """Installed versions of ``packages`` (those not installed are left out)."""
    out = {}
    for pkg in packages:
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out


def machine() -> dict[str, Any]:
    """Where and how a benchmark ran: CPU, cores, load average, versions, thread settings."""
    try:
        affinity = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        affinity = None
    return {"cpu": cpu_name(), "cores": os.cpu_count(), "affinity": affinity,
            "load": [round(v, 2) for v in os.getloadavg()], "versions": versions(),
            "XLA_FLAGS": os.environ.get("XLA_FLAGS"),
            "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS")}


def median(values: Iterable[float | None]) -> float | None:
    """Median of the values that are not ``None`` (``None`` if there are none)."""
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def ratio(a: float | None, b: float | None) -> float | None:
    """``a / b``, or ``None`` when either is missing (or ``b`` is 0)."""
    return None if a is None or not b else a / b


def alternate(fns: dict[str, Callable[[], Any]], repeats: int) -> dict[str, list[float]]:
    """Time the callables in alternating order (A B A B ...), ``repeats`` rounds.

    Each call returns the units of work it did (rate = units / its wall time), ``None``
    (one unit), or ``(units, seconds)`` to report its own timed span (e.g. ``run_chains``'s
    ``timing["run_s"]``, compilation excluded). Warm-ups are the caller's. Returns the
    per-repeat rates of each callable.
    """
    rates: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            tic = time.perf_counter()
            got = fn()
            seconds = time.perf_counter() - tic
            if isinstance(got, tuple):
                got, seconds = got
            rates[name].append((1.0 if got is None else float(got)) / seconds)
    return rates


def _strict(x: Any) -> Any:
    """``x`` with non-finite floats as ``None`` and numpy values as Python ones."""
    if isinstance(x, dict):
        return {str(k): _strict(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_strict(v) for v in x]
    if hasattr(x, "tolist") and not isinstance(x, str | bytes):  # numpy scalars and arrays
        return _strict(x.tolist())
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def emit(path: str | Path | None, record: dict[str, Any]) -> dict[str, Any]:
    """Append ``record`` to ``path`` as one strict-JSON line (NaN and inf -> null), with
    :func:`machine` merged in (the record's keys win; ``versions`` are merged) and a UTC
    ``time``. Returns the line's dict; ``path`` falsy: writes nothing."""
    m = machine()
    out = {**m, **record, "versions": {**m["versions"], **record.get("versions", {})}}
    out.setdefault("time", datetime.now(UTC).isoformat(timespec="seconds"))
    out = _strict(out)
    if path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as fh:
            fh.write(json.dumps(out, allow_nan=False) + "\n")
    return out


def family_record(family: str, work: str, unit: str, jaxinv: float | None,
                  torch: float | None, repeats: int, **extra: Any) -> dict[str, Any]:
    """The keys ``benchmarks/table.py`` reads: ``family``, ``work``, ``unit``, ``jaxinv``,
    ``torch``, ``ratio`` (jaxinv / torch), ``repeats``; ``extra`` (e.g. ``compile_s``) too."""
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; choose one of {FAMILIES}")
    return {"family": family, "work": work, "unit": unit, "jaxinv": jaxinv, "torch": torch,
            "ratio": ratio(jaxinv, torch), "repeats": repeats, **extra}


def default_jsonl(script: str) -> str:
    """``benchmarks/results/<script stem>.jsonl``."""
    return str(RESULTS / f"{Path(script).stem}.jsonl")


def torch_mnist_cnn(torch: Any) -> Any:
    """jaxinv's MNIST ``cnn`` in PyTorch (conv5x5(32)-pool-conv5x5(64)-pool-dense128-dense10
    on 1x28x28), eval mode, parameters frozen."""
    nn = torch.nn
    net = nn.Sequential(
        nn.Conv2d(1, 32, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(7 * 7 * 64, 128), nn.ReLU(), nn.Linear(128, 10)).eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net


def torch_mi_face_step(torch: Any, n: int) -> Callable[[Any], Any]:
    """The white-box reference step, batched: ``x [n, 1, 28, 28] -> x'`` (MI-Face,
    ``-log p_y`` summed, lr 0.1, clip to [0, 1]) on :func:`torch_mnist_cnn` (seed 0)."""
    torch.manual_seed(0)
    net = torch_mnist_cnn(torch)
    y = torch.arange(n) % 10

    def step(x):
        x = x.detach().requires_grad_(True)
        loss = torch.nn.functional.cross_entropy(net(x), y, reduction="sum")
        (g,) = torch.autograd.grad(loss, x)
        return (x - 0.1 * g).clamp(0, 1).detach()

    return step
