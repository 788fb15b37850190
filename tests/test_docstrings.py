"""Every docstring example in the package runs (doctest), one test per module.

The examples share one namespace (built once per session): ``jax``, ``jnp``, ``np``,
``optax``, ``key`` (``jax.random.key(0)``), a small trained digits CNN ``clf`` (with
``module`` and ``variables``), and ``x, y``: the first 16 digits test images and labels.
Each module's examples run in a fresh temporary working directory, so relative paths such
as ``runs/demo`` are safe to write.
"""

import doctest
import importlib
import pkgutil

import pytest

import jaxinv

MODULES = sorted(m.name for m in pkgutil.walk_packages(jaxinv.__path__, "jaxinv."))
FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


@pytest.fixture(scope="session")
def namespace(tmp_path_factory):
    """The names every docstring example may use."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax

    clf = jaxinv.training.fit("digits", "cnn", tmp_path_factory.mktemp("doctest") / "clf",
                              epochs=2, progress=False)
    x, y = jaxinv.data.load("digits", "test")
    return {"jax": jax, "jnp": jnp, "np": np, "optax": optax, "key": jax.random.key(0),
            "clf": clf, "module": clf.module, "variables": clf.variables,
            "x": x[:16], "y": y[:16]}


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name, namespace, tmp_path, monkeypatch, capsys):
    module = importlib.import_module(name)
    monkeypatch.chdir(tmp_path)
    failed, attempted = doctest.testmod(module, extraglobs=namespace,
                                        optionflags=FLAGS, verbose=False, report=False)
    out = capsys.readouterr().out
    assert failed == 0, f"{failed} of {attempted} docstring examples of {name} failed:\n{out}"
