"""Peak memory per chain of an MI-Face run: jaxinv's ``run_chains`` (with and without
``chunk``) against the same step in batched PyTorch, each in a fresh process.

    python benchmarks/memory.py                   # N = 64, 1024, 4096
    python benchmarks/memory.py --chains 256 --chunk 16

Memory is the heap in use (glibc ``mallinfo2``: ``uordblks + hblkhd``, where both XLA:CPU's
and PyTorch's CPU buffers live), sampled every 0.2 ms by a thread during the measured call;
the figure is its peak minus the level just before the call, divided by N. The call is, for
jaxinv, a whole ``run_chains`` of 8 steps (initialisation, steps, results to the host) after
a warm-up call that compiled it; for PyTorch, the N images and 8 batched MI-Face steps after
2 warm-up steps. Linux with glibc only. Appends one JSON line per row to ``--jsonl``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import default_jsonl, emit, load_text

SAMPLER = """
import ctypes, threading, time
libc = ctypes.CDLL("libc.so.6")
class Info(ctypes.Structure):
    _fields_ = [(f, ctypes.c_size_t) for f in ("arena", "ordblks", "smblks", "hblks",
                "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]
libc.mallinfo2.restype = Info
def in_use():
    m = libc.mallinfo2()
    return m.uordblks + m.hblkhd
def peak_of(call):
    base, peak, stop = in_use(), [0], threading.Event()
    def sample():
        while not stop.is_set():
            peak[0] = max(peak[0], in_use())
            time.sleep(0.0002)
    t = threading.Thread(target=sample)
    t.start()
    try:
        call()
    finally:
        stop.set()
        t.join()
    return max(peak[0], in_use()) - base
"""

JAXINV = SAMPLER + """
import json, sys
import numpy as np
from jaxinv.attacks import mi_face
from jaxinv.core import run_chains
from jaxinv.models import create, init_variables
n, chunk = int(sys.argv[1]), (int(sys.argv[2]) or None)
model = create("cnn", 10)
env = init_variables(model, (28, 28, 1))
attack = mi_face(lambda e, x: model.apply(e, x)[0], (28, 28, 1), loss="neg_log_p",
                 init="random", lr=0.1, tv=0.0)
run = lambda: run_chains(attack, np.arange(n) % 10, env, steps=8, chunk=chunk,
                         progress=False)
run()  # compiles
print(json.dumps({"peak_bytes": peak_of(run)}))
"""

TORCH = SAMPLER + """
import json, sys
import torch
sys.path.insert(0, sys.argv[2])
from common import torch_mi_face_step
n = int(sys.argv[1])
step = torch_mi_face_step(torch, n)
def run(steps=8):
    x = torch.rand(n, 1, 28, 28)
    for _ in range(steps):
        x = step(x)
    return x
run(2)
print(json.dumps({"peak_bytes": peak_of(run), "threads": torch.get_num_threads()}))
"""


def measure(program: str, *args: str) -> dict:
    out = subprocess.run([sys.executable, "-c", program, *args], check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out.splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--chains", type=int, nargs="+", default=[64, 1024, 4096])
    p.add_argument("--chunk", type=int, default=32, help="jaxinv's chunk (0: none)")
    p.add_argument("--no-torch", action="store_true", help="skip the PyTorch reference")
    p.add_argument("--jsonl", default=default_jsonl(__file__),
                   help="append one JSON line per row ('' : none)")
    a = p.parse_args()
    if not sys.platform.startswith("linux"):
        sys.exit("memory.py reads glibc's mallinfo2: Linux only")
    print(f"MI-Face on the MNIST cnn, 8 steps; peak heap in use during the call, per chain "
          f"(load {load_text()})")
    print(f"{'N':>6} {'jaxinv MiB/chain':>17} {f'chunk {a.chunk}':>10} {'PyTorch':>9} "
          f"{'ratio':>7}")
    here = str(Path(__file__).parent)
    for n in a.chains:
        mib = lambda b, n=n: b / n / 2**20
        plain = mib(measure(JAXINV, str(n), "0")["peak_bytes"])
        chunked = (mib(measure(JAXINV, str(n), str(a.chunk))["peak_bytes"])
                   if 0 < a.chunk < n else None)
        ref = None if a.no_torch else mib(measure(TORCH, str(n), here)["peak_bytes"])
        best = min(v for v in (plain, chunked) if v is not None)
        print(f"{n:>6} {plain:>17.3f} {chunked if chunked is None else f'{chunked:.3f}':>10} "
              f"{'-' if ref is None else f'{ref:.3f}':>9} "
              f"{'-' if ref is None else f'{best / ref:.2f}x':>7}")
        if a.jsonl:
            emit(a.jsonl, {"bench": "memory", "n": n, "steps": 8, "chunk": a.chunk,
                           "jaxinv_mib_per_chain": plain, "jaxinv_chunk_mib_per_chain":
                           chunked, "torch_mib_per_chain": ref})
    print("ratio: jaxinv's smaller figure / PyTorch's (< 1: jaxinv uses less)")


if __name__ == "__main__":
    main()
