"""Throughput and latency of ``jaxinv serve`` (waitress) at 1, 4 and 16 concurrent clients.

    python benchmarks/serve.py                       # batches of 16 images, base64 bodies
    python benchmarks/serve.py --batch 64 --encoding json --clients 1 4 --requests 200

The server runs in a subprocess on 127.0.0.1 (a free port) with a randomly initialised
MNIST-shaped cnn (``create("cnn", 10)``, ``init_variables``: no data needed) and no
defense; the clients are threads of this process, each with its own keep-alive session,
sending the same random batch. Every level stops after ``--requests`` requests or
``--seconds`` seconds, whichever comes first. Reported: requests/s and images/s, p50/p99
latency of one request (client side, HTTP included), non-200 answers, and the server's
resident memory (RSS) after warm-up and after each level. Server and clients share the
machine's cores.
"""

from __future__ import annotations

import argparse
import base64
import os
import platform
import subprocess
import sys
import threading
import time

import numpy as np

SHAPE = (28, 28, 1)


def rss_mb(pid: int) -> float:
    """Resident memory of process ``pid`` in MiB (Linux /proc, else psutil)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    import psutil

    return psutil.Process(pid).memory_info().rss / 2**20


def run_server(args: argparse.Namespace) -> None:
    """The subprocess: build the app, print the URL, serve until stdin closes."""
    import logging

    logging.getLogger("waitress.queue").setLevel(logging.ERROR)  # "Task queue depth" lines
    from jaxinv.http.serve import make_app, start_server
    from jaxinv.models import Classifier, create, init_variables

    model = create("cnn", 10)
    meta = {"input_shape": list(SHAPE), "num_classes": 10, "arch": "cnn", "dataset": "mnist"}
    app = make_app(Classifier(model, init_variables(model, SHAPE), meta),
                   max_batch=max(args.batch, 1))
    url, stop = start_server(app, threads=args.threads)
    print(url, flush=True)
    sys.stdin.read()  # the parent closes stdin to stop us
    stop()


def body(args: argparse.Namespace) -> dict:
    x = np.random.default_rng(0).uniform(size=(args.batch, *SHAPE)).astype("<f4")
    if args.encoding == "json":
        return {"inputs": x.tolist()}
    return {"inputs_b64": base64.b64encode(x.tobytes()).decode(), "shape": list(x.shape),
            "encoding": "b64"}


def level(url: str, n_clients: int, payload: dict, args: argparse.Namespace) -> dict:
    """``n_clients`` threads posting ``payload`` until the request or time budget is spent."""
    import requests

    lock, latencies, errors = threading.Lock(), [], [0]
    left = [args.requests]
    deadline = time.monotonic() + args.seconds

    def client() -> None:
        with requests.Session() as s:
            while time.monotonic() < deadline:
                with lock:
                    if left[0] <= 0:
                        return
                    left[0] -= 1
                t = time.perf_counter()
                try:
                    ok = s.post(url + "/predict", json=payload, timeout=60).status_code == 200
                except requests.RequestException:
                    ok = False
                dt = time.perf_counter() - t
                with lock:
                    latencies.append(dt)
                    errors[0] += not ok

    threads = [threading.Thread(target=client) for _ in range(n_clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    lat = np.asarray(latencies) * 1000
    return {"n": len(lat), "errors": errors[0], "rps": len(lat) / wall,
            "p50": float(np.percentile(lat, 50)), "p99": float(np.percentile(lat, 99))}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16])
    p.add_argument("--batch", type=int, default=16, help="images per request")
    p.add_argument("--encoding", choices=["b64", "json"], default="b64")
    p.add_argument("--requests", type=int, default=400, help="requests per level, at most")
    p.add_argument("--seconds", type=float, default=20.0, help="seconds per level, at most")
    p.add_argument("--threads", type=int, default=8, help="server worker threads")
    p.add_argument("--_server", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args._server:
        return run_server(args)

    import requests

    from jaxinv.evaluation.results import versions

    v = versions()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"{v['platform']}; python {v['python']}, jax {v['jax']} ({v['backend']}), "
          f"numpy {v['numpy']}, flask {_version('flask')}, waitress {_version('waitress')}")
    print(f"settings: MNIST-shaped cnn (random weights), no defense, batch {args.batch} "
          f"images/request, {args.encoding} bodies, server threads {args.threads}, at most "
          f"{args.requests} requests or {args.seconds:g} s per level; server in a subprocess "
          f"on 127.0.0.1, clients are threads of this process (same cores)")
    proc = subprocess.Popen([sys.executable, __file__, "--_server", "--batch", str(args.batch),
                             "--threads", str(args.threads)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        url = proc.stdout.readline().strip()
        if not url.startswith("http://"):
            raise SystemExit(f"server did not start (got {url!r})")
        payload = body(args)
        for _ in range(3):  # compile the batch shape, warm the connection
            requests.post(url + "/predict", json=payload, timeout=120).raise_for_status()
        print(f"server RSS after warm-up: {rss_mb(proc.pid):.1f} MiB")
        print(f"{'clients':>7} {'requests':>8} {'errors':>6} {'req/s':>8} {'images/s':>9} "
              f"{'p50 ms':>8} {'p99 ms':>8} {'RSS MiB':>8}")
        for n in args.clients:
            r = level(url, n, payload, args)
            print(f"{n:>7} {r['n']:>8} {r['errors']:>6} {r['rps']:>8.1f} "
                  f"{r['rps'] * args.batch:>9.0f} {r['p50']:>8.1f} {r['p99']:>8.1f} "
                  f"{rss_mb(proc.pid):>8.1f}", flush=True)
        print(f"server RSS after all levels: {rss_mb(proc.pid):.1f} MiB")
    finally:
        proc.stdin.close()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


def _version(pkg: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(pkg)
    except metadata.PackageNotFoundError:
        return "not installed"


if __name__ == "__main__":
    main()
