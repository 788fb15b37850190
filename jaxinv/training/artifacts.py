"""Trained artifacts on disk: ``workdir/<name>.json`` (meta) + ``workdir/variables`` (orbax),
and the checkpoint bookkeeping their training loops share.

The GAN prior, P2I's encoder, the fine-tuned generator and the network-inversion generators
are all saved and read by :func:`save_artifact` / :func:`load_artifact`; each loader passes
the abstract variables (shapes only, from ``jax.eval_shape``) to restore into. Their loops
checkpoint with :func:`save_checkpoint` and end with :func:`close_loop`.
"""

from __future__ import annotations

import json
import time
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


def save_checkpoint(mngr: Any, workdir: Path, step: int, tree: Any, tic: float) -> float:
    """Save ``tree`` as checkpoint ``step`` of the orbax manager ``mngr`` and add the time
    since ``tic`` to ``workdir``'s training time; returns the new ``tic``.

    Example:
        >>> import orbax.checkpoint as ocp, time
        >>> mngr = ocp.CheckpointManager(Path("runs/c").absolute() / "ckpt")
        >>> Path("runs/c").mkdir(parents=True, exist_ok=True)
        >>> tic = save_checkpoint(mngr, Path("runs/c"), 1, {"w": jnp.ones(2)}, time.perf_counter())
        >>> close_loop(None, mngr)
        >>> mngr.latest_step()
        1
    """
    import orbax.checkpoint as ocp

    from jaxinv.training.classifier import _add_seconds

    mngr.save(step, args=ocp.args.StandardSave(tree))
    _add_seconds(Path(workdir), time.perf_counter() - tic)
    return time.perf_counter()


def close_loop(bar: Any, mngr: Any) -> None:
    """Close a loop's progress bar (if any) and wait for and close its checkpoint manager.

    Example:
        >>> close_loop(None, type("M", (), {"wait_until_finished": print, "close": print})())
        <BLANKLINE>
        <BLANKLINE>
    """
    if bar is not None:
        bar.close()
    mngr.wait_until_finished()
    mngr.close()


__all__ = ["close_loop", "load_artifact", "save_artifact", "save_checkpoint"]
