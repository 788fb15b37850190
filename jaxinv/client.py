"""Query a victim served by :mod:`jaxinv.serve` over HTTP, robustly and with a query log.

:class:`HTTPOracle` sends images in batches to ``POST /predict`` and returns the released
probabilities. Connection errors, timeouts, 408 and 5xx answers are retried with capped
exponential back-off and jitter; 429 answers are waited out (the server's exact
``retry_after``, else ``Retry-After``); any other 4xx raises :class:`RemoteError` at once.

Example:
    >>> oracle = HTTPOracle("http://127.0.0.1:8000", log_path="runs/queries.jsonl")
    >>> probs = oracle.query(x)  # [n, K] float32
    >>> oracle.queries, oracle.stats()["queries_total"]
"""

from __future__ import annotations

import base64
import hashlib
import json
import random
import time
from pathlib import Path
from typing import Any

import numpy as np

RATE_LIMIT_FACTOR = 8  # a batch may wait out RATE_LIMIT_FACTOR * retries 429 answers


class RemoteError(RuntimeError):
    """The server refused a request (4xx) or kept failing; ``status`` is the last HTTP
    status (``None`` for connection errors and timeouts).

    Example:
        >>> try: oracle.query(np.full((1, 8, 8, 1), 2.0, np.float32))
        ... except RemoteError as e: print(e.status, e)
        400 http://127.0.0.1:8000/predict: HTTP 400: inputs must lie in the range [0, 1] ...
    """

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def _error_text(resp: Any) -> str:
    """The server's ``{"error": ...}`` message, or the start of a non-JSON body."""
    try:
        body = resp.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and "error" in body:
        return str(body["error"])
    text = (resp.text or "").strip().replace("\n", " ")
    return text[:300] or resp.reason or "no message"


class HTTPOracle:
    """A score oracle over HTTP: ``query(x[n, H, W, C]) -> probs[n, K]`` (numpy float32).

    Args:
      url: the server's base URL, e.g. ``http://127.0.0.1:8000``.
      batch_size: images per request.
      retries: failed attempts (connection error, timeout, 408, 5xx) allowed per batch
        before :class:`RemoteError`; the wait before retry ``k`` (from 0) is
        ``min(max_backoff, backoff * 2**k)`` times a jitter factor in ``[0.5, 1]``.
      backoff, max_backoff: see ``retries`` (seconds).
      timeout: seconds per HTTP request.
      client_id: sent as ``X-Client-Id`` (the server otherwise uses the address).
      log_path: append one JSON line per answered batch and per failed attempt.
      binary: send base64 float32 and ask for base64 probabilities (fast) instead of
        nested JSON lists.

    Rate limits: a 429 sleeps the server's wait (plus up to 10% jitter) and counts in
    ``.retries``, but does not use up ``retries``: a batch may wait out up to
    ``RATE_LIMIT_FACTOR * retries`` (= 64 by default) 429 answers. Counters: ``.queries``
    (images answered), ``.requests`` (HTTP requests made, failures included), ``.retries``
    and ``.http_seconds`` (time in HTTP calls, back-off and rate-limit waits included).
    Not thread safe: use one oracle per thread.

    Example:
        >>> oracle = HTTPOracle(url, batch_size=256, client_id="attacker-1")
        >>> probs = oracle.query(x)
        >>> oracle.queries == len(x)
        True
    """

    def __init__(self, url: str, *, batch_size: int = 256, retries: int = 8,
                 backoff: float = 0.5, max_backoff: float = 30.0, timeout: float = 60.0,
                 client_id: str | None = None, log_path: str | Path | None = None,
                 binary: bool = True) -> None:
        import requests

        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size: expected an int >= 1, received {batch_size!r}")
        if not isinstance(retries, int) or retries < 0:
            raise ValueError(f"retries: expected an int >= 0, received {retries!r}")
        self.url = url.rstrip("/")
        self.batch_size, self.retries_allowed = batch_size, retries
        self.backoff, self.max_backoff, self.timeout = backoff, max_backoff, timeout
        self.log_path = None if log_path is None else Path(log_path)
        self.binary = binary
        self.queries = self.requests = self.retries = 0
        self.http_seconds = 0.0
        self.num_classes: int | None = None
        self._session = requests.Session()
        if client_id is not None:
            self._session.headers["X-Client-Id"] = client_id

    def __enter__(self) -> HTTPOracle:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        """Close the HTTP session.

        Example:
            >>> with HTTPOracle(url) as oracle: probs = oracle.query(x)
        """
        self._session.close()

    def _log(self, **record: Any) -> None:
        if self.log_path is not None:
            with self.log_path.open("a") as f:
                f.write(json.dumps({"t": time.time(), **record}) + "\n")
                f.flush()

    def _call(self, method: str, path: str, body: dict | None = None,
              log: dict | None = None) -> dict:
        """One logical request with retries; returns the JSON answer."""
        import requests

        url = self.url + path
        failures = waits = 0
        attempt = 0
        start = time.perf_counter()
        try:
            while True:
                attempt += 1
                tic = time.perf_counter()
                self.requests += 1
                status, wait = None, None
                try:
                    resp = self._session.request(method, url, json=body, timeout=self.timeout)
                    status = resp.status_code
                    if status == 200:
                        try:
                            out = resp.json()
                        except ValueError:
                            raise RemoteError(f"{url}: HTTP 200 but the body is not JSON: "
                                              f"{resp.text[:200]!r}", status) from None
                        if log is not None:
                            self._log(**log, status=200, attempts=attempt,
                                      seconds=round(time.perf_counter() - start, 6))
                        return out
                    error = _error_text(resp)
                    if status == 429:
                        waits += 1
                        wait = self._retry_after(resp, waits)
                        give_up = waits > RATE_LIMIT_FACTOR * self.retries_allowed
                    elif status >= 500 or status == 408:
                        failures += 1
                        give_up = failures > self.retries_allowed
                    else:
                        if log is not None:
                            self._log(**log, status=status, error=error, attempt=attempt,
                                      seconds=round(time.perf_counter() - tic, 6))
                        raise RemoteError(f"{url}: HTTP {status}: {error}", status)
                except requests.RequestException as e:  # connection error, timeout...
                    error = f"{type(e).__name__}: {e}"
                    failures += 1
                    give_up = failures > self.retries_allowed
                if wait is None:
                    wait = min(self.max_backoff, self.backoff * 2 ** (failures - 1))
                    wait *= random.uniform(0.5, 1.0)
                if log is not None:
                    self._log(**log, status=status, error=error, attempt=attempt,
                              seconds=round(time.perf_counter() - tic, 6),
                              wait=None if give_up else round(wait, 6))
                if give_up:
                    raise RemoteError(f"{url}: gave up after {attempt} attempts "
                                      f"({failures} failures, {waits} rate-limit waits); last "
                                      f"error: " + (f"HTTP {status}: " if status else "")
                                      + error, status)
                self.retries += 1
                time.sleep(wait)
        finally:
            self.http_seconds += time.perf_counter() - start

    def _retry_after(self, resp: Any, waits: int) -> float:
        """Seconds to wait after a 429: the JSON ``retry_after``, else ``Retry-After``,
        else the back-off schedule; plus up to 10% jitter."""
        wait = None
        try:
            wait = float(resp.json()["retry_after"])
        except (ValueError, KeyError, TypeError):
            try:
                wait = float(resp.headers.get("Retry-After", ""))
            except ValueError:
                pass
        if wait is None or not wait >= 0:
            wait = min(self.max_backoff, self.backoff * 2 ** (waits - 1))
        return wait * random.uniform(1.0, 1.1)

    def query(self, x: np.ndarray) -> np.ndarray:
        """The server's (defended) probabilities for images ``x [n, H, W, C]`` in [0, 1].

        Example:
            >>> HTTPOracle(url).query(np.zeros((3, 8, 8, 1), np.float32)).shape
            (3, 10)
        """
        x = np.ascontiguousarray(x, "<f4")
        if len(x) == 0:
            return np.zeros((0, self.num_classes or 0), np.float32)
        out = []
        for i in range(0, len(x), self.batch_size):
            out.append(self._query_batch(x[i:i + self.batch_size]))
        return np.concatenate(out)

    __call__ = query

    def _query_batch(self, xb: np.ndarray) -> np.ndarray:
        raw = xb.tobytes()
        if self.binary:
            body = {"inputs_b64": base64.b64encode(raw).decode(), "shape": list(xb.shape),
                    "encoding": "b64"}
        else:
            body = {"inputs": xb.tolist()}
        log = {"n": len(xb), "sha1": hashlib.sha1(raw).hexdigest()}
        out = self._call("POST", "/predict", body, log)
        try:
            if "probs_b64" in out:
                shape = tuple(out["shape"])
                probs = np.frombuffer(base64.b64decode(out["probs_b64"]), "<f4").reshape(shape)
            else:
                probs = np.asarray(out["probs"], np.float32)
        except (KeyError, TypeError, ValueError) as e:
            raise RemoteError(f"{self.url}/predict: malformed answer ({type(e).__name__}: "
                              f"{e})", 200) from None
        if probs.ndim != 2 or len(probs) != len(xb):
            raise RemoteError(f"{self.url}/predict: expected probabilities [{len(xb)}, K], "
                              f"received shape {list(probs.shape)}", 200)
        self.queries += len(xb)
        self.num_classes = probs.shape[1]
        return probs.astype(np.float32)

    def stats(self) -> dict:
        """The server's ``GET /stats``: per-client counts, defense, model.

        Example:
            >>> HTTPOracle(url).stats()["clients"]
            {'attacker-1': {'queries': 512, 'refused': 0, ...}}
        """
        return self._call("GET", "/stats")

    def info(self) -> dict:
        """The server's ``GET /health`` (``{"ok": true}``).

        Example:
            >>> HTTPOracle(url).info()
            {'ok': True}
        """
        return self._call("GET", "/health")


__all__ = ["RATE_LIMIT_FACTOR", "HTTPOracle", "RemoteError"]
