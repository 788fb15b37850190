"""A victim model behind HTTP: defended scores, per-client rate limits and a query monitor.

``POST /predict`` answers a batch of images with the DEFENDED probabilities of
:func:`jaxinv.oracles.score` (the same numbers the in-process attacks see). Requests are
JSON objects:

- ``{"inputs": [[[[...]]]]}``: nested lists ``[B, H, W, C]`` of numbers in ``[0, 1]``;
- ``{"inputs_b64": "<base64 of little-endian float32 bytes>", "shape": [B, H, W, C]}``;
- a single image ``[H, W, C]`` is treated as a batch of one;
- optional ``"encoding": "b64"`` returns ``probs_b64`` + ``shape`` instead of ``probs``.

The answer is ``{"probs": [[...K]...B], "labels": [...B], "queries": n}`` (``labels`` =
argmax of the released probabilities, ``queries`` = the client's answered images so far).
Errors are JSON ``{"error": "..."}`` with a 4xx status (400 bad input, 403 flagged client,
404/405 routing, 413 batch too large, 429 rate limited with ``Retry-After``).
``GET /stats`` reports per-client counts, ``GET /health`` returns ``{"ok": true}``.

Clients are told apart by the ``X-Client-Id`` header, else by their address. Both are
self-declared: the rate limit and the monitor bound what ONE identity does, not a Sybil.

Example (Flask's test client, no network; :func:`start_server` serves the same app on a
port, and ``serve("runs/demo/target", port=8000)`` does both from a model directory):

    >>> app = make_app(clf, "round:2", rate_limit=500)  # clf: a trained digits classifier
    >>> client = app.test_client()
    >>> answer = client.post("/predict", json={"inputs": x[:2].tolist()}).json
    >>> len(answer["probs"]), len(answer["probs"][0]), answer["queries"]
    (2, 10, 2)
    >>> client.post("/predict", json={"inputs": [[1, 2]]}).json["error"]
    'wrong input shape: expected [B, 8, 8, 1] (or one image [8, 8, 1]), received [1, 2]'
    >>> client.get("/stats").json["clients"]["127.0.0.1"]["invalid"]
    1
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jax
import numpy as np

MAX_CLIENT_ID = 256  # characters
_MODEL_KEYS = ("arch", "dataset", "num_classes", "input_shape", "test_accuracy")
_ROUTES = "POST /predict, GET /stats, GET /health"


class Monitor:
    """Stateful detection of query streams (Chen, Carlini & Wagner, "Stateful Detection of
    Black-Box Adversarial Attacks", 2020): zeroth-order attacks query many near-duplicates.

    Per client it keeps the last ``window`` queries as fingerprints. A new query is a *hit*
    when at least one earlier query (in the window, or earlier in the same batch) lies
    within L2 distance ``threshold`` of it in pixel space; a client is flagged (for good)
    once it has made ``min_queries`` queries and ``hits / queries >= flag_fraction`` over
    its window.

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
    Thread safe.

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
    """

    def __init__(self, *, window: int = 2048, radius: float = 0.12,
                 threshold: float | None = None, flag_fraction: float = 0.5,
                 min_queries: int = 100, dims: int = 64, seed: int = 0) -> None:
        for name, v, lo in (("window", window, 1), ("min_queries", min_queries, 1),
                            ("dims", dims, 1)):
            if not isinstance(v, int) or isinstance(v, bool) or v < lo:
                raise ValueError(f"Monitor {name}: expected an int >= {lo}, received {v!r}")
        if not radius > 0 or (threshold is not None and not threshold > 0):
            raise ValueError(f"Monitor radius/threshold: expected > 0, received {radius!r}, "
                             f"{threshold!r}")
        if not 0 < flag_fraction <= 1:
            raise ValueError(f"Monitor flag_fraction: expected in (0, 1], "
                             f"received {flag_fraction!r}")
        self.window, self.radius, self.flag_fraction = window, radius, flag_fraction
        self.min_queries, self.dims, self.seed = min_queries, dims, seed
        self._threshold = threshold
        self._dim: int | None = None
        self._proj: np.ndarray | None = None
        self._clients: dict[str, dict[str, Any]] = {}
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

    def observe(self, client: str, x: np.ndarray) -> np.ndarray:
        """Record the queries ``x [B, ...]`` of ``client``; returns which were hits, ``[B]``.

        Example:
            >>> Monitor().observe("bob", np.zeros((3, 8, 8, 1))).tolist()
            [False, True, True]
        """
        with self._lock:
            f = self._fingerprint(np.asarray(x))
            c = self._clients.get(client)
            if c is None:
                c = self._clients[client] = {
                    "fp": np.zeros((self.window, f.shape[1]), np.float32),
                    "sq": np.zeros(self.window, np.float32),
                    "hit": np.zeros(self.window, bool), "count": 0, "flagged": False}
            stored = min(c["count"], self.window)
            cand = np.concatenate([c["fp"][:stored], f])
            sq_f = (f * f).sum(1)
            d2 = sq_f[:, None] + np.concatenate([c["sq"][:stored], sq_f])[None] - 2 * f @ cand.T
            b = len(f)  # in-batch candidates count only when earlier in the batch
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


class _Fail(Exception):
    """An HTTP error answer: ``status``, message, extra headers and JSON fields."""

    def __init__(self, status: int, message: str, headers: dict | None = None, **extra: Any):
        super().__init__(message)
        self.status, self.message, self.headers, self.extra = status, message, headers, extra


@dataclass
class _Client:
    queries: int = 0
    refused: int = 0
    rate_limited: int = 0
    invalid: int = 0
    tokens: float = 0.0
    last: float = field(default_factory=time.monotonic)


def _decode_inputs(body: dict) -> np.ndarray:
    """The ``float32`` images of a request body (before shape and range checks)."""
    if "inputs_b64" in body:
        data, shape = body["inputs_b64"], body.get("shape")
        if not isinstance(data, str):
            raise _Fail(400, "'inputs_b64' must be a base64 string of little-endian float32")
        if (not isinstance(shape, list) or not shape
                or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0
                           for s in shape)):
            raise _Fail(400, f"'inputs_b64' needs 'shape': a list of non-negative ints "
                             f"[B, H, W, C], received {shape!r}"[:300])
        try:
            raw = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError) as e:
            raise _Fail(400, f"'inputs_b64' is not valid base64: {e}") from None
        want = 4 * math.prod(shape)
        if len(raw) != want:
            raise _Fail(400, f"'inputs_b64' decodes to {len(raw)} bytes but shape {shape} of "
                             f"float32 needs {want}")
        return np.frombuffer(raw, "<f4").reshape(shape).astype(np.float32)
    if "inputs" not in body:
        raise _Fail(400, "missing field 'inputs' (nested list [B, H, W, C]) or 'inputs_b64' "
                         "(base64 float32) with 'shape'")
    try:
        arr = np.asarray(body["inputs"])
    except ValueError:
        raise _Fail(400, "'inputs' is ragged: every image must have the same shape "
                         "[H, W, C]") from None
    if arr.dtype.kind not in "iuf":
        raise _Fail(400, f"'inputs' must contain only numbers (no strings, booleans, nulls "
                         f"or ragged lists); parsed as dtype {arr.dtype}")
    return arr.astype(np.float32)


def _check_images(x: np.ndarray, input_shape: tuple[int, ...], max_batch: int) -> np.ndarray:
    if x.shape == input_shape:
        x = x[None]  # a single image: a batch of one
    if x.ndim >= 1 and len(x) == 0:
        raise _Fail(400, f"empty batch: send between 1 and {max_batch} images")
    if x.ndim != 4 or x.shape[1:] != input_shape:
        raise _Fail(400, f"wrong input shape: expected [B, {', '.join(map(str, input_shape))}] "
                         f"(or one image [{', '.join(map(str, input_shape))}]), received "
                         f"{list(x.shape)}")
    if len(x) > max_batch:
        raise _Fail(413, f"batch of {len(x)} images exceeds the limit of {max_batch} per "
                         f"request; split it")
    if not np.isfinite(x).all():
        raise _Fail(400, "inputs contain NaN or infinite values")
    lo, hi = float(x.min()), float(x.max())
    if lo < 0 or hi > 1:
        raise _Fail(400, f"inputs must lie in the range [0, 1]; received values in "
                         f"[{lo:g}, {hi:g}]")
    return x


def make_app(clf: Any, defense: str = "", *, max_batch: int = 1024,
             rate_limit: float | None = None, burst: int | None = None,
             monitor: Monitor | None = None, refuse_flagged: bool = False,
             seed: int = 0) -> Any:
    """A Flask app serving ``clf`` (a :class:`jaxinv.models.Classifier`) behind ``defense``.

    ``max_batch``: images per request (batches are zero-padded to the next power of two,
    so at most ``log2(max_batch) + 1`` shapes compile). ``rate_limit``: per-client token
    bucket in images per second with capacity ``burst`` (default ``max(rate_limit,
    max_batch)``); a request the bucket cannot pay gets 429 and ``Retry-After`` (integer
    seconds; the exact float is in the JSON ``retry_after``). ``monitor``: a
    :class:`Monitor` watching answered queries; with ``refuse_flagged`` a flagged client's
    later requests get 403. ``seed``: randomised defenses use ``fold_in(key(seed), i)`` for
    the i-th request. The defense is checked (and batch size 1 compiled) here.

    Example:
        >>> app = make_app(clf, "topk:3", max_batch=16, rate_limit=0.01, burst=16)
        >>> client = app.test_client()  # no network
        >>> client.post("/predict", json={"inputs": x.tolist()}).status_code  # the burst
        200
        >>> r = client.post("/predict", json={"inputs": x[:1].tolist()})  # bucket empty
        >>> r.status_code, "Retry-After" in r.headers
        (429, True)
        >>> app = make_app(clf, monitor=Monitor(min_queries=4), refuse_flagged=True)
        >>> client = app.test_client()
        >>> same = {"inputs": np.repeat(x[:1], 8, 0).tolist()}  # near-duplicates
        >>> [client.post("/predict", json=same).status_code for _ in range(2)]
        [200, 403]
    """
    import flask
    from werkzeug.exceptions import HTTPException

    from jaxinv import defenses, oracles
    from jaxinv.models import apply_logits

    if not isinstance(max_batch, int) or isinstance(max_batch, bool) or max_batch < 1:
        raise ValueError(f"max_batch: expected an int >= 1, received {max_batch!r}")
    if rate_limit is not None and not (isinstance(rate_limit, int | float) and rate_limit > 0):
        raise ValueError(f"rate_limit: expected None or a number > 0, received {rate_limit!r}")
    if burst is not None and (not isinstance(burst, int) or burst < 1):
        raise ValueError(f"burst: expected None or an int >= 1, received {burst!r}")
    if burst is None and rate_limit is not None:
        burst = max(math.ceil(rate_limit), max_batch)
    meta = clf.meta
    input_shape = tuple(int(d) for d in meta["input_shape"])
    oracle = oracles.score(apply_logits(clf.module), defenses.parse(defense))
    infer = jax.jit(oracle.query)
    base_key = jax.random.key(seed)
    lock = threading.Lock()
    clients: dict[str, _Client] = {}
    counter = [0]  # requests answered: the PRNG stream index

    def predict(x: np.ndarray) -> np.ndarray:
        n = len(x)
        size = min(1 << (n - 1).bit_length(), max_batch)
        padded = np.zeros((size, *input_shape), np.float32)
        padded[:n] = x
        with lock:
            key = jax.random.fold_in(base_key, counter[0])
            counter[0] += 1
        return np.asarray(infer(key, clf.variables, padded), np.float32)[:n]

    predict(np.zeros((1, *input_shape), np.float32))  # fail now on a bad defense

    app = flask.Flask(__name__)
    # nested JSON numbers take ~20 bytes each; leave room, refuse absurd bodies (413)
    app.config["MAX_CONTENT_LENGTH"] = (1 << 20) + 32 * max_batch * math.prod(input_shape)
    app.extensions["jaxinv"] = {"clients": clients, "monitor": monitor, "lock": lock}

    def reply(obj: dict, status: int = 200, headers: dict | None = None) -> flask.Response:
        return app.response_class(json.dumps(obj), status, headers, mimetype="application/json")

    @app.errorhandler(_Fail)
    def failed(e: _Fail) -> flask.Response:
        return reply({"error": e.message, **e.extra}, e.status, e.headers)

    @app.errorhandler(HTTPException)
    def http_error(e: HTTPException) -> flask.Response:
        if e.code == 404:
            msg = f"no route {flask.request.method} {flask.request.path}; routes: {_ROUTES}"
        elif e.code == 405:
            msg = (f"method {flask.request.method} not allowed for {flask.request.path}; "
                   f"allowed: {', '.join(sorted(e.valid_methods or []))}")
        elif e.code == 413:
            msg = f"request body too large (limit {app.config['MAX_CONTENT_LENGTH']} bytes)"
        else:
            msg = e.description or str(e)
        resp = e.get_response()  # keeps headers such as Allow
        resp.set_data(json.dumps({"error": msg}))
        resp.mimetype = "application/json"
        return resp

    @app.errorhandler(Exception)
    def crashed(e: Exception) -> flask.Response:
        app.logger.exception("unexpected error")
        return reply({"error": f"internal server error: {type(e).__name__}: {e}"}, 500)

    def client_id() -> str:
        cid = flask.request.headers.get("X-Client-Id") or flask.request.remote_addr or "?"
        if len(cid) > MAX_CLIENT_ID:
            raise _Fail(400, f"X-Client-Id longer than {MAX_CLIENT_ID} characters")
        return cid

    def parse_request(c: _Client) -> tuple[np.ndarray, str]:
        try:
            body = json.loads(flask.request.get_data())
        except (ValueError, UnicodeDecodeError) as e:
            raise _Fail(400, f"request body is not valid JSON: {e}") from None
        if not isinstance(body, dict):
            raise _Fail(400, f"request body must be a JSON object, received a "
                             f"{type(body).__name__}")
        encoding = body.get("encoding", "json")
        if encoding not in ("json", "b64"):
            raise _Fail(400, f"'encoding' must be 'json' or 'b64', received {encoding!r}")
        x = _check_images(_decode_inputs(body), input_shape, max_batch)
        if burst is not None and len(x) > burst:
            raise _Fail(413, f"batch of {len(x)} images exceeds the rate-limit burst of "
                             f"{burst}; send at most {burst} images per request")
        return x, encoding

    def take_tokens(c: _Client, n: int) -> None:
        """Pay ``n`` tokens from ``c``'s bucket or raise 429 (call with ``lock`` held)."""
        now = time.monotonic()
        c.tokens = min(burst, c.tokens + (now - c.last) * rate_limit)
        c.last = now
        if c.tokens < n:
            c.rate_limited += 1
            wait = (n - c.tokens) / rate_limit
            raise _Fail(429, f"rate limit of {rate_limit:g} images/s (burst {burst}) exceeded; "
                             f"retry in {wait:.3f} s", {"Retry-After": str(math.ceil(wait))},
                        retry_after=wait)
        c.tokens -= n

    @app.post("/predict")
    def predict_route() -> flask.Response:
        cid = client_id()
        with lock:
            c = clients.setdefault(cid, _Client(tokens=float(burst or 0)))
        try:
            x, encoding = parse_request(c)
        except (_Fail, HTTPException):  # HTTPException: body over MAX_CONTENT_LENGTH
            with lock:
                c.invalid += 1
            raise
        with lock:
            if refuse_flagged and monitor is not None and monitor.status(cid)["flagged"]:
                c.refused += 1
                raise _Fail(403, f"client {cid!r} is flagged by the query monitor: too many "
                                 f"near-duplicate queries (a query-based attack); refused")
            if rate_limit is not None:
                take_tokens(c, len(x))
        if monitor is not None:
            monitor.observe(cid, x)
        probs = predict(x)
        with lock:
            c.queries += len(x)
            total = c.queries
        out: dict[str, Any] = {"labels": probs.argmax(-1).tolist(), "queries": total}
        if encoding == "b64":
            out["probs_b64"] = base64.b64encode(probs.astype("<f4").tobytes()).decode()
            out["shape"] = list(probs.shape)
        else:
            out["probs"] = probs.tolist()
        return reply(out)

    @app.get("/stats")
    def stats() -> flask.Response:
        with lock:
            counts = {cid: (c.queries, c.refused, c.rate_limited, c.invalid)
                      for cid, c in clients.items()}
        per_client = {}
        for cid, (q, r, m, bad) in counts.items():
            s = monitor.status(cid) if monitor is not None else {}
            per_client[cid] = {"queries": q, "refused": r, "rate_limited": m, "invalid": bad,
                               "flagged": s.get("flagged", False),
                               "hit_fraction": s.get("hit_fraction")}
        return reply({"queries_total": sum(c[0] for c in counts.values()),
                      "clients": per_client, "defense": defense or "none",
                      "model": {k: meta[k] for k in _MODEL_KEYS if k in meta},
                      "max_batch": max_batch, "rate_limit": rate_limit, "burst": burst,
                      "monitor": monitor is not None, "refuse_flagged": refuse_flagged})

    @app.get("/health")
    def health() -> flask.Response:
        return reply({"ok": True})

    return app


def _quiet_handler() -> type:
    from werkzeug.serving import WSGIRequestHandler

    class Quiet(WSGIRequestHandler):
        def log_request(self, *args: Any, **kwargs: Any) -> None:  # no line per request
            pass

    return Quiet


def start_server(app: Any, host: str = "127.0.0.1",
                 port: int = 0) -> tuple[str, Callable[[], None]]:
    """Serve ``app`` (threaded) from a daemon thread; ``port=0`` picks a free port.

    Returns the base URL and ``stop()`` (idempotent; shuts the server down and joins).

    Example:
        >>> from jaxinv.http.client import HTTPOracle
        >>> url, stop = start_server(make_app(clf, "topk:3"))  # a free port on 127.0.0.1
        >>> url.startswith("http://127.0.0.1:")
        True
        >>> HTTPOracle(url).query(x).shape
        (16, 10)
        >>> stop()
    """
    from werkzeug.serving import make_server

    server = make_server(host, port, app, threaded=True, request_handler=_quiet_handler())
    thread = threading.Thread(target=server.serve_forever, args=(0.1,), daemon=True,
                              name=f"jaxinv-serve-{server.port}")
    thread.start()
    stopped = threading.Event()

    def stop() -> None:
        if not stopped.is_set():
            stopped.set()
            server.shutdown()
            server.server_close()
            thread.join()

    return f"http://{host}:{server.port}", stop


def serve(target_dir: str | Path, defense: str = "", host: str = "127.0.0.1", port: int = 8000,
          **app_kwargs: Any) -> None:
    """Load the classifier in ``target_dir`` and serve it until Ctrl-C.

    ``app_kwargs`` go to :func:`make_app` (``max_batch``, ``rate_limit``, ``burst``,
    ``monitor``, ``refuse_flagged``, ``seed``).

    Example:
        >>> serve("runs/demo/target", "round:2,topk:3", port=8000)  # doctest: +SKIP
        serving cnn (digits) behind 'round:2,topk:3' at http://127.0.0.1:8000 ...
        >>> serve("runs/missing")  # (the line above blocks until Ctrl-C: not run here)
        Traceback (most recent call last):
        FileNotFoundError: no trained model in .../runs/missing (missing model.json); ...
    """
    from werkzeug.serving import make_server

    from jaxinv.training.classifier import load_classifier

    clf = load_classifier(target_dir)
    app = make_app(clf, defense, **app_kwargs)
    server = make_server(host, port, app, threaded=True, request_handler=_quiet_handler())
    print(f"serving {clf.meta.get('arch', '?')} ({clf.meta.get('dataset', '?')}) behind "
          f"{defense or 'none'!r} at http://{host}:{server.port} ({_ROUTES}); "
          f"Ctrl-C to stop", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


__all__ = ["Monitor", "make_app", "serve", "start_server"]
