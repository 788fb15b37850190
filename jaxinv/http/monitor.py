"""Stateful query monitoring (Chen et al. 2020): flag clients whose queries are mostly
near-duplicates of their own recent queries, with bounded memory per client.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from typing import Any

import numpy as np

MAX_CLIENTS = 10_000  # client identities tracked at once (least recently seen evicted)


def _check_int(name: str, v: Any, lo: int) -> None:
    if not isinstance(v, int) or isinstance(v, bool) or v < lo:
        raise ValueError(f"{name}: expected an int >= {lo}, received {v!r}")


class Monitor:
    """Stateful detection of query streams (Chen, Carlini & Wagner, "Stateful Detection of
    Black-Box Adversarial Attacks", 2020): zeroth-order attacks query many near-duplicates.

    Per client it keeps the last ``window`` queries as fingerprints. A new query is a *hit*
    when at least one earlier query (in the window, or earlier in the same batch) lies
    within L2 distance ``threshold`` of it in pixel space; a client is flagged once it has
    made ``min_queries`` queries and ``hits / queries >= flag_fraction`` over its window.

    ``threshold`` defaults to ``radius * sqrt(d)`` (``d`` = pixels per image), i.e. an RMS
    per-pixel difference of ``radius``. NES/SPSA queries ``x +- sigma u`` are
    ``~sigma sqrt(2d)`` apart, so the default ``radius=0.12`` catches smoothing
    ``sigma <~ 0.08`` (more when queries are clipped to [0, 1]), while only ~27% of the
    1797 digits images (~10% of 2048 MNIST test images) have a neighbour that close and
    uniform noise has none.

    Fingerprints: images with ``d <= dims`` are stored exactly; larger ones are projected
    with a fixed Gaussian matrix ``R [d, dims]`` of variance ``1 / dims``, which preserves
    L2 distances up to a relative error of ~``1 / sqrt(2 dims)`` (~9% for 64 dims,
    Johnson-Lindenstrauss). Distances are one matrix product per batch, no loop per query.

    Memory: a client's window grows with its queries (doubling, up to ``window * dims``
    float32, 512 KiB by default), so a client that sent one image costs a few KiB; at most
    ``max_clients`` clients are kept, the least recently seen forgotten first (a forgotten
    client, flagged or not, starts afresh). Thread safe.

    Example:
        >>> mon = Monitor(window=2048, radius=0.12, min_queries=16)
        >>> int(mon.observe("alice", x).sum())  # 16 different digits: no near-duplicates
        0
        >>> mon.status("alice")["flagged"]
        False
        >>> int(mon.observe("alice", np.repeat(x[:1], 16, 0)).sum())  # x[0] again, 16 times
        16
        >>> mon.status("alice")
        {'queries': 32, 'hit_fraction': 0.5, 'flagged': True}
        >>> len(mon), mon.nbytes("alice")  # 32 of 2048 fingerprints stored so far
        (1, 8352)
    """

    def __init__(self, *, window: int = 2048, radius: float = 0.12,
                 threshold: float | None = None, flag_fraction: float = 0.5,
                 min_queries: int = 100, dims: int = 64, seed: int = 0,
                 max_clients: int = MAX_CLIENTS) -> None:
        for name, v in (("window", window), ("min_queries", min_queries), ("dims", dims),
                        ("max_clients", max_clients)):
            _check_int(f"Monitor {name}", v, 1)
        if not radius > 0 or (threshold is not None and not threshold > 0):
            raise ValueError(f"Monitor radius/threshold: expected > 0, received {radius!r}, "
                             f"{threshold!r}")
        if not 0 < flag_fraction <= 1:
            raise ValueError(f"Monitor flag_fraction: expected in (0, 1], "
                             f"received {flag_fraction!r}")
        self.window, self.radius, self.flag_fraction = window, radius, flag_fraction
        self.min_queries, self.dims, self.seed = min_queries, dims, seed
        self.max_clients = max_clients
        self._threshold = threshold
        self._dim: int | None = None
        self._proj: np.ndarray | None = None
        self._clients: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._lock = threading.Lock()

    def threshold(self, d: int) -> float:
        """The L2 distance below which two images of ``d`` pixels are near-duplicates.

        Example:
            >>> Monitor(radius=0.12).threshold(64)
            0.96
        """
        return self._threshold if self._threshold is not None else self.radius * math.sqrt(d)

    def _fingerprint(self, x: np.ndarray) -> np.ndarray:
        flat = x.reshape(len(x), -1).astype(np.float32)
        if self._dim is None:
            self._dim = flat.shape[1]
            if self._dim > self.dims:
                rng = np.random.default_rng(self.seed)
                self._proj = (rng.standard_normal((self._dim, self.dims))
                              / math.sqrt(self.dims)).astype(np.float32)
        if flat.shape[1] != self._dim:
            raise ValueError(f"Monitor: images have {flat.shape[1]} values, this monitor "
                             f"was started on images of {self._dim}")
        return flat if self._proj is None else flat @ self._proj

    def _state(self, client: str, k: int, need: int) -> dict[str, Any]:
        """``client``'s record (LRU-touched), its buffers grown to hold ``need`` rows."""
        c = self._clients.get(client)
        if c is None:
            c = self._clients[client] = {
                "fp": np.zeros((0, k), np.float32), "sq": np.zeros(0, np.float32),
                "hit": np.zeros(0, bool), "count": 0, "flagged": False}
            while len(self._clients) > self.max_clients:
                self._clients.popitem(last=False)
        self._clients.move_to_end(client)
        need = min(self.window, need)
        if len(c["fp"]) < need:  # rows [0, count) are filled in order until the window is
            size = min(self.window, max(need, 2 * len(c["fp"]), 32))
            for name in ("fp", "sq", "hit"):
                grown = np.zeros((size, *c[name].shape[1:]), c[name].dtype)
                grown[:len(c[name])] = c[name]
                c[name] = grown
        return c

    def observe(self, client: str, x: np.ndarray) -> np.ndarray:
        """Record the queries ``x [B, ...]`` of ``client``; returns which were hits, ``[B]``.

        Example:
            >>> Monitor().observe("bob", np.zeros((3, 8, 8, 1))).tolist()
            [False, True, True]
        """
        with self._lock:
            f = self._fingerprint(np.asarray(x))
            b, prev = len(f), self._count(client)
            c = self._state(client, f.shape[1], prev + b)
            stored = min(prev, self.window)
            cand = np.concatenate([c["fp"][:stored], f])
            sq_f = (f * f).sum(1)
            d2 = sq_f[:, None] + np.concatenate([c["sq"][:stored], sq_f])[None] - 2 * f @ cand.T
            # in-batch candidates count only when earlier in the batch
            earlier = np.arange(b)[None, :] < np.arange(b)[:, None]
            near = d2 <= self.threshold(self._dim) ** 2
            near[:, stored:] &= earlier
            hits = near.any(1)
            keep = slice(max(0, b - self.window), b)
            idx = (c["count"] + np.arange(b)[keep]) % self.window
            c["fp"][idx], c["sq"][idx], c["hit"][idx] = f[keep], sq_f[keep], hits[keep]
            c["count"] += b
            n = min(c["count"], self.window)
            if c["count"] >= self.min_queries and c["hit"][:n].mean() >= self.flag_fraction:
                c["flagged"] = True
            return hits

    def _count(self, client: str) -> int:
        c = self._clients.get(client)
        return 0 if c is None else c["count"]

    def status(self, client: str) -> dict[str, Any]:
        """``{"queries", "hit_fraction", "flagged"}`` of ``client`` (zeros if unseen).

        Example:
            >>> Monitor().status("nobody")
            {'queries': 0, 'hit_fraction': 0.0, 'flagged': False}
        """
        with self._lock:
            c = self._clients.get(client)
            if c is None:
                return {"queries": 0, "hit_fraction": 0.0, "flagged": False}
            n = min(c["count"], self.window)
            return {"queries": c["count"], "hit_fraction": float(c["hit"][:n].mean()),
                    "flagged": c["flagged"]}

    def forget(self, client: str) -> None:
        """Drop ``client``'s fingerprints and flag (no-op if unseen).

        Example:
            >>> mon = Monitor()
            >>> _ = mon.observe("carol", x[:2]); mon.forget("carol"); len(mon)
            0
        """
        with self._lock:
            self._clients.pop(client, None)

    def nbytes(self, client: str | None = None) -> int:
        """Bytes of fingerprint buffers held for ``client`` (all clients if ``None``).

        Example:
            >>> Monitor().nbytes("nobody")
            0
        """
        with self._lock:
            cs = self._clients.values() if client is None else [self._clients.get(client)]
            return sum(c[k].nbytes for c in cs if c is not None for k in ("fp", "sq", "hit"))

    def __len__(self) -> int:
        with self._lock:
            return len(self._clients)
