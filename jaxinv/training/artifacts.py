"""Trained artifacts on disk: ``workdir/<name>.json`` (meta) + ``workdir/variables`` (orbax).

The GAN prior, P2I's encoder, the fine-tuned generator and the network-inversion generators
are all saved and read by these two functions; each loader passes the abstract variables
(shapes only, from ``jax.eval_shape``) to restore into.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp


def save_artifact(workdir: str | Path, variables: Any, meta: dict, name: str) -> None:
    """Write ``variables`` (orbax) and ``meta`` (strict JSON) into ``workdir``.

    Example:
        >>> save_artifact("runs/a", {"w": jnp.ones(2)}, {"steps": 1}, "thing")
        >>> sorted(p.name for p in Path("runs/a").iterdir())
        ['thing.json', 'variables']
    """
    import orbax.checkpoint as ocp

    workdir = Path(workdir).absolute()
    workdir.mkdir(parents=True, exist_ok=True)
    with ocp.StandardCheckpointer() as ckptr:
        ckptr.save(workdir / "variables", variables, force=True)
    (workdir / f"{name}.json").write_text(json.dumps(meta, indent=1, allow_nan=False))


def load_artifact(workdir: str | Path, name: str, abstract: Callable[[dict], Any], what: str,
                  missing: str, damaged: str) -> tuple[Any, dict]:
    """``(variables, meta)`` saved by :func:`save_artifact`; ``abstract(meta)`` gives the
    variables' structure (e.g. ``jax.eval_shape`` of an init). A missing artifact raises
    ``FileNotFoundError`` (ending with the advice ``missing``), a damaged one ``ValueError``
    (ending with ``damaged``), each in one line.

    Example:
        >>> save_artifact("runs/b", {"w": jnp.ones(2)}, {"n": 2}, "thing")
        >>> v, meta = load_artifact("runs/b", "thing", lambda m: {"w": jnp.zeros(m["n"])},
        ...                         "thing", "make one", "remake it")
        >>> v["w"].tolist(), meta
        ([1.0, 1.0], {'n': 2})
    """
    import orbax.checkpoint as ocp

    from jaxinv.training.classifier import _first_line

    workdir = Path(workdir).absolute()
    path = workdir / f"{name}.json"
    if not path.exists():
        raise FileNotFoundError(f"no {what} in {workdir} ({path.name} missing): {missing}")
    try:
        meta = json.loads(path.read_text())
        with ocp.StandardCheckpointer() as ckptr:
            variables = ckptr.restore(workdir / "variables", abstract(meta))
    except Exception as e:  # orbax/tensorstore raise many types, with messages of many lines
        raise ValueError(f"{what} in {workdir} is damaged ({type(e).__name__}: "
                         f"{_first_line(e)}); {damaged}") from None
    return jax.tree.map(jnp.asarray, variables), meta


__all__ = ["load_artifact", "save_artifact"]
