"""Compile time of an MI-Face run, in a first process (empty persistent cache) and in a
second one (the first one's cache), at several chain counts; and the scratch memory of
initialisation with and without ``chunk``.

    python benchmarks/compile.py                 # N = 1, 64, 1024
    python benchmarks/compile.py --chains 1 --unroll 1 8

Each measurement is a fresh Python process that runs ``run_chains`` for 8 steps on the MNIST
``cnn`` (the ``chains.py`` step) with ``jaxinv.core.enable_compilation_cache`` on a cache
directory of its own: ``first`` starts from an empty cache, ``second`` reuses it. Prints
the step's ``compile_s`` (``run_chains`` timing) and the process's time to its first
result (imports, model, init and step compiles, 8 steps); appends one JSON line per
(N, unroll) to ``--jsonl``. ``--memory N...`` then prints XLA's scratch memory (beyond
inputs and outputs: ``memory_analysis()``) of the compiled initialisation of N chains, all at
once and with ``--chunk``, and the size of the chains' states.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import default_jsonl, emit, load_text

PROGRAM = """
import json, sys, time
tic = time.perf_counter()
import numpy as np
from jaxinv.attacks import mi_face
from jaxinv.core import enable_compilation_cache, run_chains
from jaxinv.models import create, init_variables
enable_compilation_cache(sys.argv[1])
n, unroll = int(sys.argv[2]), int(sys.argv[3])
model = create("cnn", 10)
env = init_variables(model, (28, 28, 1))
attack = mi_face(lambda e, x: model.apply(e, x)[0], (28, 28, 1), loss="neg_log_p",
                 init="random", lr=0.1, tv=0.0)
res = run_chains(attack, np.arange(n) % 10, env, steps=8, unroll=unroll, progress=False)
print(json.dumps({"compile_s": res.timing["compile_s"], "wall_s": res.timing["wall_s"],
                  "process_s": time.perf_counter() - tic}))
"""


def measure(cache: str, n: int, unroll: int) -> dict:
    out = subprocess.run([sys.executable, "-c", PROGRAM, cache, str(n), str(unroll)],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out.splitlines()[-1])


def init_memory(n: int, chunk: int | None) -> tuple[int, int]:
    """(scratch bytes, output bytes) of the compiled init of ``n`` MI-Face chains."""
    import numpy as np

    from jaxinv.attacks import mi_face
    from jaxinv.core import driver, run_chains
    from jaxinv.models import create, init_variables

    model = create("cnn", 10)
    env = init_variables(model, (28, 28, 1))
    attack = mi_face(lambda e, x: model.apply(e, x)[0], (28, 28, 1), loss="neg_log_p",
                     init="random", lr=0.1, tv=0.0)
    driver._COMPILED.clear()
    run_chains(attack, np.arange(n) % 10, env, steps=1, unroll=1, chunk=chunk, progress=False)
    ((_, compiled),) = driver._COMPILED.values()
    m = compiled["init"].memory_analysis()
    return m.temp_size_in_bytes, m.output_size_in_bytes


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--chains", type=int, nargs="+", default=[1, 64, 1024])
    p.add_argument("--unroll", type=int, nargs="+", default=[8],
                   help="steps per compiled call (8: the CPU default)")
    p.add_argument("--memory", type=int, nargs="*", default=[256, 1024, 4096],
                   help="chain counts for the init memory table (none: skip)")
    p.add_argument("--chunk", type=int, default=32)
    p.add_argument("--jsonl", default=default_jsonl(__file__), help="'' : none")
    a = p.parse_args()
    print(f"load {load_text()}, XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}")
    print(f"{'N':>6} {'unroll':>6} {'1st compile s':>13} {'1st process s':>13} "
          f"{'2nd compile s':>13} {'2nd process s':>13}")
    for n in a.chains:
        for unroll in a.unroll:
            with tempfile.TemporaryDirectory() as cache:
                first, second = measure(cache, n, unroll), measure(cache, n, unroll)
            print(f"{n:>6} {unroll:>6} {first['compile_s']:>13.2f} {first['process_s']:>13.2f} "
                  f"{second['compile_s']:>13.2f} {second['process_s']:>13.2f}", flush=True)
            if a.jsonl:
                emit(a.jsonl, {"benchmark": "compile", "work": "MI-Face on the MNIST cnn, 8 "
                               "steps", "chains": n, "unroll": unroll, "first": first,
                               "second": second})
    if a.memory:
        print(f"\n{'N':>6} {'chunk':>6} {'init scratch MiB':>16} {'chain states MiB':>16}")
    for n in a.memory:
        for chunk in (None, a.chunk):
            temp, out = init_memory(n, chunk)
            print(f"{n:>6} {chunk or '-':>6} {temp / 2**20:>16.1f} {out / 2**20:>16.1f}",
                  flush=True)
            if a.jsonl:
                emit(a.jsonl, {"benchmark": "init memory", "chains": n, "chunk": chunk,
                               "scratch_bytes": temp, "output_bytes": out})


if __name__ == "__main__":
    main()
