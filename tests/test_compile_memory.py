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
    assert sorted(k for k in compiled if isinstance(k, int)) == [8]
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
import jax  # store every program: a step may compile in under enable_compilation_cache's 0.5 s
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
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
    assert runs[1]["hits"] >= max(1, runs[0]["misses"])  # all the first process stored
    assert runs[1]["compile_s"] < runs[0]["compile_s"]  # the step came from the cache


def test_compiler_options_by_backend_and_override(monkeypatch):
    from jaxinv.core import compiler

    assert compiler.compiler_options() == compiler.CPU_OPTIONS  # the tests run on XLA:CPU
    both = compiler.compiler_options({"xla_cpu_use_fusion_emitters": True, "x": 1})
    assert both == {"xla_cpu_use_fusion_emitters": True, "x": 1}  # extra wins
    monkeypatch.setenv("JAXINV_XLA_DEFAULTS", "1")
    assert compiler.compiler_options() is None
    assert compiler.compiler_options({"x": 1}) == {"x": 1}


def test_steps_compile_with_the_options_and_match_xla_defaults(monkeypatch):
    """The driver compiles with ``compiler_options`` (the classic emitters on CPU), and the
    chains come out as with XLA's MLIR emitters."""
    from jaxinv.core import compiler

    seen = []
    real = compiler.compiler_options
    monkeypatch.setattr(driver, "compiler_options", lambda extra=None: seen.append(
        real(extra)) or seen[-1])
    model = create("cnn", 10, channels=(4, 8), dense=16)
    env = init_variables(model, (8, 8, 1))
    attack = mi_face(lambda e, x: model.apply(e, x)[0], (8, 8, 1), init="random", lr=0.1)
    run = lambda opts: run_chains(attack, np.arange(4), env, steps=8, progress=False,
                                  compile_options=opts)
    driver._COMPILED.clear()
    ours, mlir = run(None), run({"xla_cpu_use_fusion_emitters": True})
    assert compiler.CPU_OPTIONS in seen  # init and step of the first run
    assert {"xla_cpu_use_fusion_emitters": True} in seen
    np.testing.assert_allclose(ours.best_x, mlir.best_x, atol=1e-5)
    np.testing.assert_allclose(ours.info.loss, mlir.info.loss, rtol=1e-5)


def test_jit_compiles_with_the_options_on_top_and_nests_inside_traces():
    import jax
    import jax.numpy as jnp

    from jaxinv.core.compiler import jit

    f = jit(lambda x: 2 * x)
    c = jnp.arange(3.0)
    assert f(1.0).item() == 2.0  # top level: compiled with the options
    assert jax.jit(lambda x: f(x) + 1)(1.0).item() == 3.0  # traced arguments
    np.testing.assert_array_equal(jax.jit(lambda: f(c))(), 2 * c)  # constants only
    np.testing.assert_array_equal(jax.vmap(f)(c), 2 * c)
