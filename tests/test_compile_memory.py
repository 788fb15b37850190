"""Performance contracts that do not depend on the clock: ``chunk`` bounds the memory of
initialisation, and a second process reuses the first one's compiled steps."""

import json
import os
import subprocess
import sys

import numpy as np

from jaxinv.attacks import mi_face
from jaxinv.core import driver, run_chains
from jaxinv.models import create, init_variables

SHAPE = (28, 28, 1)


def _init_temp_bytes(attack, env, n: int, chunk: int | None) -> int:
    """XLA's scratch memory (beyond inputs and outputs) of the run's compiled init."""
    driver._COMPILED.clear()
    run_chains(attack, np.arange(n) % 10, env, steps=1, unroll=1, chunk=chunk, progress=False)
    ((_, compiled),) = driver._COMPILED.values()
    return compiled["init"].memory_analysis().temp_size_in_bytes


def test_chunk_bounds_the_memory_of_initialisation():
    model = create("mlp", 10)  # 64-3000-10: a chain's first forward pass holds 3000 floats
    env = init_variables(model, (8, 8, 1))
    attack = mi_face(lambda e, x: model.apply(e, x)[0], (8, 8, 1), loss="neg_log_p",
                     init="random", lr=0.1, tv=0.0)
    # per device (the tests' 8 CPU devices): 64 and 256 chains
    whole = {n: _init_temp_bytes(attack, env, n, None) for n in (512, 2048)}
    chunked = {n: _init_temp_bytes(attack, env, n, 4) for n in (512, 2048)}
    assert whole[2048] > 3 * whole[512]  # all chains at once: grows with the chains
    assert chunked[2048] < 2 * chunked[512]  # bounded (the scan's outputs grow a little)
    assert chunked[2048] < whole[2048] / 10


def test_one_step_program_serves_every_remainder():
    """20 steps in segments of 7 (calls of 7, 7 and 6 steps): one rolled step program
    on CPU, and the same chains as one segment of 20 or as unrolled calls."""
    model = create("mlp", 10)
    env = init_variables(model, (8, 8, 1))
    attack = mi_face(lambda e, x: model.apply(e, x)[0], (8, 8, 1), init="random", lr=0.1)
    run = lambda **kw: run_chains(attack, np.arange(4), env, steps=20, progress=False, **kw)
    driver._COMPILED.clear()
    res = run(segment=7)
    ((_, compiled),) = driver._COMPILED.values()
    assert sorted(k for k in compiled if k != "init") == [8]
    assert res.info.loss.shape[0] == 20 and np.isfinite(res.info.loss).all()
    for other in (run(segment=20), run(segment=7, unroll=7)):
        np.testing.assert_allclose(other.best_x, res.best_x, atol=1e-6)
        np.testing.assert_allclose(other.info.loss, res.info.loss, rtol=1e-5)


PROGRAM = """
import json, numpy as np
from jax._src import monitoring
events = []
monitoring.register_event_listener(lambda name, **kw: events.append(name))
from jaxinv.attacks import mi_face
from jaxinv.core import enable_compilation_cache, run_chains
from jaxinv.models import create, init_variables
enable_compilation_cache()
model = create("cnn", 10)
env = init_variables(model, (28, 28, 1))
attack = mi_face(lambda e, x: model.apply(e, x)[0], (28, 28, 1), init="random", tv=0.0)
res = run_chains(attack, np.arange(4), env, steps=8, progress=False)
print(json.dumps({"hits": events.count("/jax/compilation_cache/cache_hits"),
                  "misses": events.count("/jax/compilation_cache/cache_misses"),
                  "compile_s": res.timing["compile_s"]}))
"""


def test_a_second_process_reuses_the_compiled_steps(tmp_path):
    env = {**os.environ, "JAXINV_CACHE_DIR": str(tmp_path / "xla"),
           "JAX_COMPILATION_CACHE_DIR": str(tmp_path / "xla")}
    runs = [json.loads(subprocess.run([sys.executable, "-c", PROGRAM], env=env, check=True,
                                      capture_output=True, text=True).stdout.splitlines()[-1])
            for _ in range(2)]
    assert runs[0]["hits"] == 0 and runs[0]["misses"] >= 1  # a fresh cache: compiled here
    # all the first process stored (programs that took >= 0.5 s to compile) is read back; a
    # program that compiled faster there and slower here (load) may still count a miss
    assert runs[1]["hits"] >= max(1, runs[0]["misses"])
    assert runs[1]["compile_s"] < runs[0]["compile_s"]  # the step came from the cache
