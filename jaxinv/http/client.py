"""Query a victim served by :mod:`jaxinv.http.serve` over HTTP, robustly and with a query log.

:class:`HTTPOracle` sends images in batches to ``POST /predict`` and returns the released
probabilities. Retries are urllib3's :class:`~urllib3.util.Retry`, mounted on the
``requests`` session through an :class:`~requests.adapters.HTTPAdapter`: connection errors,
timeouts and 408/429/500/502/503/504 answers are retried with capped exponential back-off
and jitter, a 429 (or 503) carrying ``Retry-After`` is waited out for exactly that long, and
any other 4xx raises :class:`RemoteError` at once. Every answered batch and every failed
attempt urllib3 reports (``response.raw.retries.history``) is logged as a JSON line.

Example (against a local victim on a free port; clf is a trained digits classifier):
    >>> from jaxinv.http.serve import make_app, start_server
    >>> url, stop = start_server(make_app(clf, "topk:3"))
    >>> oracle = HTTPOracle(url, log_path="queries.jsonl")
    >>> probs = oracle.query(x)  # [n, K] float32
    >>> probs.shape, probs.dtype
    ((16, 10), dtype('float32'))
    >>> oracle.queries, oracle.stats()["queries_total"]
    (16, 16)
    >>> len(open("queries.jsonl").readlines())  # one JSON line per answered batch
    1
    >>> oracle.close(); stop()
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import time
from pathlib import Path
from typing import Any

import numpy as np

RATE_LIMIT_FACTOR = 8  # status retries (429 waits and 408/5xx) per batch: this * retries
RETRY_STATUSES = (408, 429, 500, 502, 503, 504)  # urllib3 Retry(status_forcelist=...)


class RemoteError(RuntimeError):
    """The server refused a request (4xx) or kept failing; ``status`` is the last HTTP
    status (``None`` for connection errors and timeouts).

    Example:
        >>> e = RemoteError("http://127.0.0.1:8000/predict: HTTP 400:   inputs must lie "
        ...                 "in the range  [0, 1]", 400)
        >>> e.status, str(e)  # whitespace runs (and newlines) become single spaces
        (400, 'http://127.0.0.1:8000/predict: HTTP 400: inputs must lie in the range [0, 1]')
        >>> from jaxinv.http.serve import make_app, start_server
        >>> url, stop = start_server(make_app(clf))  # a local victim on a free port
        >>> try: HTTPOracle(url).query(np.full((1, 8, 8, 1), 2.0, np.float32))
        ... except RemoteError as e: print(e.status, e)
        400 http://127.0.0.1:.../predict: HTTP 400: inputs must lie in the range [0, 1]; ...
        >>> stop()
    """

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(" ".join(message.split()))  # one line
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


def _describe(error: BaseException) -> str:
    """``"Type: message"`` without urllib3's ``<... object at 0x...>:`` prefixes."""
    text = re.sub(r"<[^<>]* object at 0x[0-9a-fA-F]+>:?\s*", "", str(error))
    return f"{type(error).__name__}: {text}".strip()


def _root_cause(error: BaseException) -> BaseException:
    """The urllib3 error behind a requests exception (``MaxRetryError.reason``)."""
    from urllib3.exceptions import MaxRetryError

    for arg in getattr(error, "args", ()):
        if isinstance(arg, MaxRetryError) and arg.reason is not None:
            return arg.reason
    return error


class HTTPOracle:
    """A score oracle over HTTP: ``query(x[n, H, W, C]) -> probs[n, K]`` (numpy float32).

    Args:
      url: the server's base URL, e.g. ``http://127.0.0.1:8000``.
      batch_size: images per request.
      retries: the retry budget per request (one batch), enforced by urllib3's ``Retry``:
        ``connect=retries`` connection errors, ``read=retries`` read errors and timeouts,
        ``other=retries`` other transport errors, ``status=RATE_LIMIT_FACTOR * retries``
        answers with a status in ``RETRY_STATUSES`` (408, 429, 500, 502, 503, 504), and at
        most ``total=(RATE_LIMIT_FACTOR + 1) * retries`` retries in all; past any of them,
        :class:`RemoteError`. ``retries=0`` disables retrying.
      backoff, max_backoff: urllib3's ``backoff_factor`` and ``backoff_max`` (seconds), with
        ``backoff_jitter=backoff``: the first retry is immediate, and after ``n >= 2``
        consecutive failures urllib3 waits ``min(max_backoff, backoff * 2**(n - 1) +
        uniform(0, backoff))``.
      timeout: seconds per HTTP attempt (connect and read).
      client_id: sent as ``X-Client-Id`` (the server otherwise uses the address).
      log_path: append one JSON line per answered batch and per failed attempt.
      binary: send base64 float32 and ask for base64 probabilities (fast) instead of
        nested JSON lists.

    Rate limits: a 429 (or 503) with ``Retry-After`` is retried after exactly that wait
    (``respect_retry_after_header``; :mod:`jaxinv.http.serve` sends whole seconds, the exact
    wait rounded up), without jitter; without the header, on the back-off schedule. 429
    waits and 408/5xx failures share the ``status`` budget, so a batch may wait out up to
    ``RATE_LIMIT_FACTOR * retries`` (= 64 by default) 429 answers, and a server that keeps
    answering 5xx is likewise retried up to that many times (connection errors and timeouts:
    ``retries`` times) before :class:`RemoteError`.

    Counters: ``.queries`` (images answered), ``.requests`` (HTTP attempts made, retried ones
    included), ``.retries`` (retried attempts, 429 waits included) and ``.http_seconds``
    (time in HTTP calls, urllib3's back-off and ``Retry-After`` sleeps included). They and
    the log come from the retry history urllib3 attaches to the response
    (``response.raw.retries.history``; failed attempts are logged once the request ends,
    with their status or error but without their body or timing). When urllib3 gives up on
    a transport error (connection refused, timeout) it raises without that history: the
    request then counts as one attempt and logs only its final error.
    Not thread safe: use one oracle per thread.

    Example:
        >>> oracle = HTTPOracle("http://127.0.0.1:8000/", batch_size=256, client_id="a1")
        >>> oracle.url, oracle.queries, oracle.requests  # nothing is sent before query()
        ('http://127.0.0.1:8000', 0, 0)
        >>> HTTPOracle("http://127.0.0.1:8000", batch_size=0)
        Traceback (most recent call last):
        ValueError: batch_size: expected an int >= 1, received 0
    """

    def __init__(self, url: str, *, batch_size: int = 256, retries: int = 8,
                 backoff: float = 0.5, max_backoff: float = 30.0, timeout: float = 60.0,
                 client_id: str | None = None, log_path: str | Path | None = None,
                 binary: bool = True) -> None:
        import requests
        from requests.adapters import HTTPAdapter
        from urllib3.util import Retry

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
        retry = Retry(total=(RATE_LIMIT_FACTOR + 1) * retries, connect=retries, read=retries,
                      other=retries, status=RATE_LIMIT_FACTOR * retries,
                      status_forcelist=RETRY_STATUSES,
                      allowed_methods=Retry.DEFAULT_ALLOWED_METHODS | {"POST"},
                      backoff_factor=backoff, backoff_max=max_backoff, backoff_jitter=backoff,
                      respect_retry_after_header=True, raise_on_status=False)
        self._session = requests.Session()
        adapter = HTTPAdapter(max_retries=retry)
        self._session.mount("http://", adapter)
        self._session.mount("https://", adapter)
        if client_id is not None:
            self._session.headers["X-Client-Id"] = client_id

    def __enter__(self) -> HTTPOracle:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        """Close the HTTP session.

        Example:
            >>> with HTTPOracle("http://127.0.0.1:8000") as oracle:  # close() on exit
            ...     print(oracle.url)
            http://127.0.0.1:8000
        """
        self._session.close()

    def _log(self, **record: Any) -> None:
        if self.log_path is not None:
            with self.log_path.open("a") as f:
                f.write(json.dumps({"t": time.time(), **record}, default=str,
                                   allow_nan=False) + "\n")
                f.flush()

    def _call(self, method: str, path: str, body: dict | None = None,
              log: dict | None = None) -> dict:
        """One logical request (urllib3 retries inside it); returns the JSON answer."""
        import requests

        url = self.url + path
        start = time.perf_counter()
        try:
            try:
                resp = self._session.request(method, url, json=body, timeout=self.timeout)
            except requests.RequestException as e:  # urllib3 gave up on a transport error
                self.requests += 1
                error = _describe(_root_cause(e))
                if log is not None:
                    self._log(**log, status=None, error=error,
                              seconds=round(time.perf_counter() - start, 6))
                raise RemoteError(f"{url}: gave up (retries={self.retries_allowed}): {error}",
                                  None) from None
            history = getattr(getattr(resp.raw, "retries", None), "history", None) or ()
            attempts = len(history) + 1
            self.requests += attempts
            self.retries += len(history)
            if log is not None:
                for k, h in enumerate(history, 1):
                    self._log(**log, status=h.status, attempt=k,
                              error=f"HTTP {h.status}" if h.status else
                              _describe(h.error) if h.error else "unknown")
            status = resp.status_code
            seconds = round(time.perf_counter() - start, 6)
            if status == 200:
                try:
                    out = resp.json()
                except ValueError:
                    raise RemoteError(f"{url}: HTTP 200 but the body is not JSON: "
                                      f"{resp.text[:200]!r}", status) from None
                if log is not None:
                    self._log(**log, status=200, attempts=attempts, seconds=seconds)
                return out
            error = _error_text(resp)
            if log is not None:
                self._log(**log, status=status, error=error, attempt=attempts, seconds=seconds)
            if status in RETRY_STATUSES:  # urllib3 ran out of retries (raise_on_status=False)
                raise RemoteError(f"{url}: gave up after {attempts} attempt"
                                  f"{'s' * (attempts != 1)} ({len(history)} retries); last "
                                  f"error: HTTP {status}: {error}", status)
            raise RemoteError(f"{url}: HTTP {status}: {error}", status)
        finally:
            self.http_seconds += time.perf_counter() - start

    def query(self, x: np.ndarray) -> np.ndarray:
        """The server's (defended) probabilities for images ``x [n, H, W, C]`` in [0, 1].

        Example:
            >>> from jaxinv.http.serve import make_app, start_server
            >>> url, stop = start_server(make_app(clf))  # a local victim on a free port
            >>> with HTTPOracle(url, batch_size=8) as oracle:
            ...     probs = oracle.query(x)  # 16 images: two requests of 8
            ...     print(probs.shape, oracle.queries, oracle.requests)
            (16, 10) 16 2
            >>> stop()
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
            >>> from jaxinv.http.serve import make_app, start_server
            >>> url, stop = start_server(make_app(clf, "round:2"))
            >>> with HTTPOracle(url, client_id="attacker-1") as oracle:
            ...     _ = oracle.query(x)
            ...     s = oracle.stats()
            >>> s["defense"], s["clients"]
            ('round:2', {'attacker-1': {'queries': 16, 'refused': 0, ...}})
            >>> stop()
        """
        return self._call("GET", "/stats")

    def info(self) -> dict:
        """The server's ``GET /health`` (``{"ok": true}``).

        Example:
            >>> from jaxinv.http.serve import make_app, start_server
            >>> url, stop = start_server(make_app(clf))
            >>> HTTPOracle(url).info()
            {'ok': True}
            >>> stop()
        """
        return self._call("GET", "/health")


__all__ = ["RATE_LIMIT_FACTOR", "RETRY_STATUSES", "HTTPOracle", "RemoteError"]
