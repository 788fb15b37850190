"""orbax checkpoints of a run: ``(carry, t)`` of the real chains plus per-segment Info.

The carry is stored without device padding (the first ``n`` chains, host arrays), so a
run checkpointed on 8 devices resumes on 1 (or on a pod). The work directory holds
``run_config.json`` (the run fingerprint: a directory of another run is refused),
``ckpt/<t>`` (orbax, the last ``keep``) and ``info/<t>.npz``. A damaged latest
checkpoint is reported, moved to ``damaged/`` and the newest intact one is used.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np

from jaxinv.core.protocol import PyTree


class RunCheckpoint:
    """Checkpoints of one run in ``workdir``, keyed by its ``fingerprint``.

    Example:
        >>> import tempfile
        >>> ckpt = RunCheckpoint(tempfile.mkdtemp(), {"seed": 0})
        >>> ckpt.save(10, {"x": np.zeros(3)}, (np.zeros((10, 3)),))
        >>> ckpt.steps()
        [10]
    """

    def __init__(self, workdir: str | Path, fingerprint: dict, keep: int = 3):
        import orbax.checkpoint as ocp

        self.ocp = ocp
        self.dir = Path(workdir).absolute()
        self.dir.mkdir(parents=True, exist_ok=True)
        meta = self.dir / "run_config.json"
        if meta.exists():
            try:
                old = json.loads(meta.read_text())
            except json.JSONDecodeError as e:
                raise ValueError(f"{meta} is damaged ({e}); delete {self.dir} to start "
                                 "afresh") from None
            if old != fingerprint:
                diff = {k: (old.get(k), v) for k, v in fingerprint.items() if old.get(k) != v}
                raise ValueError(
                    f"{self.dir} holds a checkpoint of a different run (setting: (saved, now) = "
                    f"{diff}); use another work directory or delete this one to start afresh.")
        elif jax.process_index() == 0:
            meta.write_text(json.dumps(fingerprint, indent=1, allow_nan=False))
        self.info_dir = self.dir / "info"
        self.info_dir.mkdir(exist_ok=True)
        self.mngr = ocp.CheckpointManager(
            self.dir / "ckpt",
            options=ocp.CheckpointManagerOptions(max_to_keep=keep,
                                                 enable_async_checkpointing=False))

    def steps(self) -> list[int]:
        return sorted(self.mngr.all_steps())

    def save(self, t: int, carry: PyTree, info: PyTree) -> None:
        """Save host ``carry`` (real chains only) after step ``t`` and that segment's Info."""
        if jax.process_index() == 0:  # Info first: a checkpoint at t implies Info up to t
            tmp = self.info_dir / f".{t:010d}.npz"
            with open(tmp, "wb") as f:
                np.savez(f, **{str(i): a for i, a in enumerate(jax.tree.leaves(info))})
            tmp.rename(self.info_dir / f"{t:010d}.npz")
        item = {"carry": carry, "t": np.array(t, np.int64)}
        self.mngr.save(t, args=self.ocp.args.StandardSave(item), force=True)
        self.mngr.wait_until_finished()

    def restore(self, like: PyTree, info_treedef: Any) -> tuple[int, PyTree, list] | None:
        """The newest intact checkpoint as ``(t, host carry, infos)``, or ``None``;
        ``like`` gives the carry's shapes and dtypes (arrays or ``ShapeDtypeStruct``)."""
        abstract = {"carry": jax.tree.map(lambda a: np.zeros(a.shape, a.dtype), like),
                    "t": np.array(0, np.int64)}
        damaged = []
        for t in reversed(self.steps()):
            try:
                item = self.mngr.restore(t, args=self.ocp.args.StandardRestore(abstract))
                infos = self._infos(t, info_treedef)
            except Exception as e:  # any damage: fall back to an older one
                print(f"warning: checkpoint {self.dir / 'ckpt' / str(t)} is damaged "
                      f"({type(e).__name__}: {str(e).splitlines()[0][:200]}); trying an "
                      "older one", file=sys.stderr)
                damaged.append(t)
                continue
            self._set_aside(damaged)
            return int(item["t"]), jax.tree.map(np.asarray, item["carry"]), infos
        if self.steps():
            raise ValueError(f"no intact checkpoint in {self.dir / 'ckpt'}; delete {self.dir} "
                             "to start afresh")
        return None

    def _set_aside(self, steps: list[int]) -> None:
        """Move damaged checkpoints to ``damaged/`` (kept for inspection, out of the way)."""
        if not steps:
            return
        if jax.process_index() == 0:
            aside = self.dir / "damaged"
            aside.mkdir(exist_ok=True)
            for t in steps:
                (self.dir / "ckpt" / str(t)).rename(aside / f"{t}-{time.time_ns()}")
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils

            multihost_utils.sync_global_devices("jaxinv: damaged checkpoints set aside")
        self.mngr.reload()

    def add_timing(self, timing: dict) -> dict:
        """Add this call's ``run_s``/``wall_s`` to the totals kept in ``timing.json``;
        return the totals (``run_s_total``, ``wall_s_total``)."""
        path = self.dir / "timing.json"
        try:
            old = json.loads(path.read_text()) if path.exists() else {}
        except json.JSONDecodeError:
            old = {}
        total = {f"{k}_total": float(old.get(f"{k}_total", 0.0)) + float(timing[k])
                 for k in ("run_s", "wall_s")}
        if jax.process_index() == 0:
            path.write_text(json.dumps(total, allow_nan=False))
        return total

    def _infos(self, t: int, treedef: Any) -> list:
        infos = []
        for f in sorted(self.info_dir.glob("[0-9]*.npz")):
            if int(f.stem) <= t:
                with np.load(f) as z:
                    infos.append(jax.tree.unflatten(treedef,
                                                    [z[str(i)] for i in range(len(z.files))]))
        return infos
