"""Test set-up: fake 8 CPU devices (before jax is imported) and locate ../shared/data."""

import os
from pathlib import Path

import pytest

# LLVM's optimisation off: the suite is mostly compilation (tiny settings), and level 0
# compiles 1.6x faster (docstring examples of GAN, inverter, P2I, GMI: 130 s against 212 s).
# Floats can differ in the last bits (psnr 20.000002, not 20.0); steps run slower, which
# these settings do not feel. Benchmarks and users keep XLA's default; a set XLA_FLAGS wins.
# XLA:CPU's classic fusion emitters for every program (jaxinv's own steps use them already,
# jaxinv.core.compiler): test programs, docstrings' jax.jit and the TLDR inverters too
# (docstrings of inverter, GAN training, gradient matching: 93 s against 120 s).
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8 "
                                   "--xla_backend_optimization_level=0 "
                                   "--xla_cpu_use_fusion_emitters=false")
_shared = Path(__file__).resolve().parents[2] / "shared" / "data"
if "JAXINV_DATA_DIR" not in os.environ and _shared.is_dir():
    os.environ["JAXINV_DATA_DIR"] = str(_shared)
# One persistent XLA cache per test run, shared by the xdist workers (fresh each run): tests
# that build the same step in new closures (generators, notebooks, smoke experiments) compile
# it once. The CLI enables the same cache (``jaxinv.core.enable_compilation_cache``).
os.environ.setdefault("JAXINV_CACHE_DIR", str(Path(os.environ.get("TMPDIR", "/tmp")) / (
    "jaxinv-test-xla-" + os.environ.get("PYTEST_XDIST_TESTRUNUID", str(os.getpid())))))
# the same cache for subprocesses (notebook kernels, example scripts): JAX reads these at import
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.environ["JAXINV_CACHE_DIR"])
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")


def pytest_configure(config):
    from jaxinv.core import enable_compilation_cache

    enable_compilation_cache()


@pytest.fixture(scope="session")
def models(tmp_path_factory):
    """A digits target (cnn) and evaluation classifier (mlp), trained once per worker."""
    from jaxinv.training.classifier import fit

    root = tmp_path_factory.mktemp("models")
    fit("digits", "cnn", root / "target", epochs=8, progress=False)
    fit("digits", "mlp", root / "evaluator", epochs=20, progress=False)
    return root


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_code():
    """Free each module's compiled executables when it ends. A worker that keeps every
    executable of the suite hits the kernel's memory-map limit (``vm.max_map_count``, one
    LLVM JIT dylib per executable) or RAM: "LLVM compilation error: Cannot allocate memory".
    Recompiling in a later module reads the persistent cache."""
    yield
    import gc

    import jax

    jax.clear_caches()
    gc.collect()
