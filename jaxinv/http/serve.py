"""A victim model behind HTTP: defended scores, per-client rate limits and a query monitor.

``POST /predict`` answers a batch of images with the DEFENDED probabilities of
:func:`jaxinv.oracles.score` (the same numbers the in-process attacks see). Requests are
UTF-8 JSON objects sent with ``Content-Type: application/json`` (any other type gets 415;
the base64 form below is JSON too, with the same content type):

- ``{"inputs": [[[[...]]]]}``: nested lists ``[B, H, W, C]`` of numbers in ``[0, 1]``;
- ``{"inputs_b64": "<base64 of little-endian float32 bytes>", "shape": [B, H, W, C]}``;
- a single image ``[H, W, C]`` is treated as a batch of one;
- optional ``"encoding": "b64"`` returns ``probs_b64`` + ``shape`` instead of ``probs``.

The answer is ``{"probs": [[...K]...B], "labels": [...B], "queries": n}`` (``labels`` =
argmax of the released probabilities, ``queries`` = the client's answered images so far).
Errors are JSON ``{"error": "..."}`` with a 4xx status (400 bad input, including JSON
nested deeper than :data:`MAX_JSON_DEPTH`; 403 flagged client; 404/405 routing; 413 batch
or body too large; 415 wrong content type; 429 rate limited with ``Retry-After``), or 500
when the model itself fails, e.g. produces NaN probabilities (never invalid JSON).
``GET /stats`` reports exact totals and per-client counts, ``GET /health`` ``{"ok": true}``.

Clients are told apart by the ``X-Client-Id`` header, else by their address. Both are
self-declared: the rate limit and the monitor bound what ONE identity does, not a Sybil.
Per-client state is bounded: at most ``max_clients`` identities are tracked (least
recently seen evicted first) and identities idle for ``client_idle`` seconds are dropped;
the totals in ``/stats`` stay exact.

Served by `waitress <https://docs.pylonsproject.org/projects/waitress/>`_, a production
WSGI server chosen over gunicorn and uvicorn because it is pure Python, works the same on
every OS (gunicorn needs ``fork``, so no Windows), runs in-process from a thread (as the
tests and benchmarks need: gunicorn is a process manager, uvicorn serves ASGI and would
need an adapter around this WSGI app), and bounds what a client can hold with plain
options: ``channel_timeout`` (idle connections, e.g. slow-loris, are closed),
``connection_limit`` (open sockets), ``max_request_body_size``, and a fixed pool of
``threads`` that only run complete requests (a slow upload holds no thread).

Example (Flask's test client, no network; :func:`start_server` serves the same app on a
port, and ``serve("runs/demo/target", port=8000)`` does both from a model directory):

    >>> app = make_app(clf, "round:2", rate_limit=500)  # clf: a trained digits classifier
    >>> client = app.test_client()
    >>> answer = client.post("/predict", json={"inputs": x[:2].tolist()}).json
    >>> len(answer["probs"]), len(answer["probs"][0]), answer["queries"]
    (2, 10, 2)
    >>> client.post("/predict", json={"inputs": [[1, 2]]}).json["error"]
    'wrong input shape: expected [B, 8, 8, 1] (or one image [8, 8, 1]), received [1, 2]'
    >>> client.post("/predict", data="{}", content_type="text/plain").status_code
    415
    >>> client.get("/stats").json["clients"]["127.0.0.1"]["invalid"]
    2
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import flask
import jax
import numpy as np
from werkzeug.exceptions import HTTPException

from jaxinv.http.monitor import MAX_CLIENTS, Monitor, _check_int

MAX_CLIENT_ID = 256  # characters
MAX_JSON_DEPTH = 400  # nested arrays/objects in a request body
CLIENT_IDLE = 600.0  # seconds without a request before a client's state is dropped
JSON_TYPE = "application/json"
_MAX_DIMS = 8  # 'shape' entries accepted with 'inputs_b64'
_MODEL_KEYS = ("arch", "dataset", "num_classes", "input_shape", "test_accuracy")
_ROUTES = "POST /predict, GET /stats, GET /health"
_COUNTS = ("queries", "refused", "rate_limited", "invalid", "errors")


_SPECIAL = np.zeros(256, bool)
_SPECIAL[list(b'"\\[]{}')] = True


def json_depth(raw: bytes) -> int:
    """The deepest nesting of arrays/objects in the UTF-8 JSON text ``raw``, without parsing.

    A linear, vectorised scan (no recursion, strings and escapes respected). For invalid
    JSON it bounds the depth any parser reaches before it fails, so checking it first keeps
    ``json.loads`` (recursive) from raising ``RecursionError`` on hostile input.

    Example:
        >>> json_depth(b'{"a": [[1, 2], {"b": "[[[[\\\\"]"}]}'), json_depth(b"1"), json_depth(b"[]")
        (3, 0, 1)
    """
    a = np.frombuffer(raw, np.uint8)
    pos = np.flatnonzero(_SPECIAL[a])
    if not len(pos):
        return 0
    ch = a[pos]
    escaped = np.zeros(len(pos), bool)
    bs = pos[ch == ord("\\")]
    if len(bs):  # a char is escaped iff a run of an odd number of backslashes precedes it
        run_start = np.maximum.accumulate(np.where(np.r_[True, np.diff(bs) != 1], bs, 0))
        k = np.minimum(np.searchsorted(bs, pos - 1), len(bs) - 1)
        escaped = (bs[k] == pos - 1) & ((pos - run_start[k]) % 2 == 1)
    outside = np.cumsum((ch == ord('"')) & ~escaped) % 2 == 0
    opens = outside & ((ch == ord("[")) | (ch == ord("{")))
    closes = outside & ((ch == ord("]")) | (ch == ord("}")))
    return max(0, int(np.cumsum(opens.astype(np.int64) - closes).max()))


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
    errors: int = 0
    tokens: float = 0.0
    last: float = field(default_factory=time.monotonic)  # last token-bucket refill
    seen: float = field(default_factory=time.monotonic)  # last activity
    busy: int = 0  # requests in flight (never evicted while > 0)


class _Clients:
    """Per-client counters and token buckets, bounded; exact totals. Thread safe.

    At most ``max_clients`` entries (plus those with requests in flight), least recently
    seen evicted first, and entries idle for ``idle`` seconds dropped; ``on_evict(cid)``
    is called for each dropped entry (outside the lock).
    """

    def __init__(self, max_clients: int, idle: float, burst: int | None,
                 on_evict: Callable[[str], None] | None = None) -> None:
        self.max_clients, self.idle, self.burst, self.on_evict = (max_clients, idle, burst,
                                                                  on_evict)
        self.lock = threading.Lock()
        self.totals = dict.fromkeys(("requests", *_COUNTS), 0)
        self.evicted = 0
        self._table: OrderedDict[str, _Client] = OrderedDict()

    @contextmanager
    def session(self, cid: str) -> Iterator[_Client]:
        """The entry of ``cid`` (created if new), pinned for the duration of a request."""
        with self.lock:
            c = self._table.get(cid)
            if c is None:
                c = self._table[cid] = _Client(tokens=float(self.burst or 0))
            self._table.move_to_end(cid)
            c.busy += 1
            c.seen = time.monotonic()
            self.totals["requests"] += 1
            dropped = self._evict(c.seen)
        self._notify(dropped)
        try:
            yield c
        finally:
            with self.lock:
                c.busy -= 1
                c.seen = time.monotonic()
                if self._table.get(cid) is c:
                    self._table.move_to_end(cid)

    def count(self, c: _Client | None, name: str, n: int = 1) -> int:
        """Add ``n`` to counter ``name`` of ``c`` (if any) and to the total; ``c``'s value."""
        with self.lock:
            self.totals[name] += n
            if c is None:
                return 0
            setattr(c, name, getattr(c, name) + n)
            return getattr(c, name)

    def pay(self, c: _Client, n: int, rate: float) -> float:
        """Take ``n`` tokens from ``c``'s bucket (call with ``lock`` held); 0 or the wait."""
        now = time.monotonic()
        c.tokens = min(self.burst, c.tokens + (now - c.last) * rate)
        c.last = now
        if c.tokens < n:
            return (n - c.tokens) / rate
        c.tokens -= n
        return 0.0

    def snapshot(self) -> tuple[dict[str, dict[str, int]], dict[str, int], int]:
        """``(per-client counters, totals, evicted so far)``, idle entries dropped first."""
        with self.lock:
            dropped = self._evict(time.monotonic())
            per = {cid: {k: getattr(c, k) for k in _COUNTS} for cid, c in self._table.items()}
            out = per, dict(self.totals), self.evicted
        self._notify(dropped)
        return out

    def __len__(self) -> int:
        with self.lock:
            return len(self._table)

    def _evict(self, now: float) -> list[str]:
        dropped, skipped = [], 0
        while len(self._table) > skipped:  # each turn drops one entry or skips a busy one
            cid, c = next(iter(self._table.items()))
            if len(self._table) <= self.max_clients and now - c.seen <= self.idle:
                break  # the rest were seen more recently
            if c.busy:
                self._table.move_to_end(cid)
                skipped += 1
            else:
                del self._table[cid]
                dropped.append(cid)
        self.evicted += len(dropped)
        return dropped

    def _notify(self, dropped: list[str]) -> None:
        if self.on_evict is not None:
            for cid in dropped:
                self.on_evict(cid)


def _decode_b64(body: dict) -> np.ndarray:
    data, shape = body["inputs_b64"], body.get("shape")
    if not isinstance(data, str):
        raise _Fail(400, "'inputs_b64' must be a base64 string of little-endian float32")
    if (not isinstance(shape, list) or not 0 < len(shape) <= _MAX_DIMS
            or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0
                       for s in shape)):
        raise _Fail(400, f"'inputs_b64' needs 'shape': a list of 1 to {_MAX_DIMS} "
                         f"non-negative ints [B, H, W, C], received {shape!r}"[:300])
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as e:
        raise _Fail(400, f"'inputs_b64' is not valid base64: {e}") from None
    want = 4 * math.prod(shape)
    if len(raw) != want:
        raise _Fail(400, f"'inputs_b64' decodes to {len(raw)} bytes but shape {shape} of "
                         f"float32 needs {want}"[:300])
    return np.frombuffer(raw, "<f4").reshape(shape).astype(np.float32)


def _decode_inputs(body: dict) -> np.ndarray:
    """The ``float32`` images of a request body (before shape and range checks)."""
    if "inputs_b64" in body:
        return _decode_b64(body)
    if "inputs" not in body:
        raise _Fail(400, "missing field 'inputs' (nested list [B, H, W, C]) or 'inputs_b64' "
                         "(base64 float32) with 'shape'")
    try:
        arr = np.asarray(body["inputs"])
    except ValueError:
        raise _Fail(400, "'inputs' is ragged or too deep: every image must have the same "
                         "shape [H, W, C]") from None
    if arr.dtype.kind not in "iuf":
        raise _Fail(400, f"'inputs' must contain only numbers (no strings, booleans, nulls "
                         f"or ragged lists); parsed as dtype {arr.dtype}")
    with np.errstate(over="ignore"):  # huge numbers become inf: refused below
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


def _read_json(request: flask.Request) -> dict:
    """The JSON object of ``request``: content type, encoding, depth and type checked."""
    charset = request.mimetype_params.get("charset", "utf-8").lower()
    if request.mimetype != JSON_TYPE or charset not in ("utf-8", "utf8"):
        raise _Fail(415, f"Content-Type must be {JSON_TYPE} (UTF-8), for 'inputs' and "
                         f"'inputs_b64' bodies alike; received "
                         f"{request.content_type or 'none'!r}"[:300],
                    {"Accept-Post": JSON_TYPE})
    raw = request.get_data(cache=False)  # 413 (HTTPException) over MAX_CONTENT_LENGTH
    depth = json_depth(raw)
    if depth > MAX_JSON_DEPTH:
        raise _Fail(400, f"request body is nested {depth} levels deep; the limit is "
                         f"{MAX_JSON_DEPTH}")
    try:
        body = json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError) as e:  # UnicodeDecodeError is a ValueError
        raise _Fail(400, f"request body is not valid UTF-8 JSON: {e}"[:300]) from None
    if not isinstance(body, dict):
        raise _Fail(400, f"request body must be a JSON object, received a "
                         f"{type(body).__name__}")
    return body


@dataclass(frozen=True)
class _Config:
    defense: str
    max_batch: int
    rate_limit: float | None
    burst: int | None
    refuse_flagged: bool
    meta: dict
    input_shape: tuple[int, ...]


class _Model:
    """``clf`` behind ``defense``: a thread-safe batch function; randomised defenses use
    ``fold_in(key(seed), i)`` for the i-th call. Batches are zero-padded to powers of two.
    """

    def __init__(self, clf: Any, defense: str, max_batch: int, seed: int) -> None:
        from jaxinv import defenses, oracles
        from jaxinv.models import apply_logits

        self.input_shape = tuple(int(d) for d in clf.meta["input_shape"])
        oracle = oracles.score(apply_logits(clf.module), defenses.parse(defense))
        self._infer = jax.jit(oracle.query)
        self._variables, self._key = clf.variables, jax.random.key(seed)
        self._max_batch = max_batch
        self._lock, self._calls = threading.Lock(), 0
        self(np.zeros((1, *self.input_shape), np.float32))  # fail now on a bad defense

    def __call__(self, x: np.ndarray) -> np.ndarray:
        n = len(x)
        size = min(1 << (n - 1).bit_length(), self._max_batch)
        padded = np.zeros((size, *self.input_shape), np.float32)
        padded[:n] = x
        with self._lock:
            key = jax.random.fold_in(self._key, self._calls)
            self._calls += 1
        return np.asarray(self._infer(key, self._variables, padded), np.float32)[:n]


def _reply(obj: dict, status: int = 200, headers: dict | None = None) -> flask.Response:
    """A JSON answer; never invalid JSON (a NaN in ``obj`` becomes a 500 error)."""
    try:
        text = json.dumps(obj, allow_nan=False)
    except ValueError:
        status, headers = 500, None
        text = json.dumps({"error": "internal server error: non-finite number in the answer"},
                          allow_nan=False)
    return flask.Response(text, status, headers, mimetype=JSON_TYPE)


class _Api:
    """The routes of :func:`make_app` over a model, its config and the client table."""

    def __init__(self, model: _Model, cfg: _Config, clients: _Clients,
                 monitor: Monitor | None) -> None:
        self.model, self.cfg, self.clients, self.monitor = model, cfg, clients, monitor

    def predict(self) -> flask.Response:
        try:
            cid = _client_id(flask.request)
        except _Fail:
            self.clients.count(None, "invalid")
            raise
        with self.clients.session(cid) as c:
            try:
                x, encoding = self._parse(_read_json(flask.request))
            except (_Fail, HTTPException):  # HTTPException: body over MAX_CONTENT_LENGTH
                self.clients.count(c, "invalid")
                raise
            self._admit(cid, c, len(x))
            if self.monitor is not None:
                self.monitor.observe(cid, x)
            probs = self.model(x)
            if not np.isfinite(probs).all():
                self.clients.count(c, "errors")
                raise _Fail(500, "the model produced non-finite probabilities (NaN or inf) "
                                 "for this batch; a server-side fault, not your input")
            total = self.clients.count(c, "queries", len(x))
        out: dict[str, Any] = {"labels": probs.argmax(-1).tolist(), "queries": total}
        if encoding == "b64":
            out["probs_b64"] = base64.b64encode(probs.astype("<f4").tobytes()).decode()
            out["shape"] = list(probs.shape)
        else:
            out["probs"] = probs.tolist()
        return _reply(out)

    def _parse(self, body: dict) -> tuple[np.ndarray, str]:
        encoding = body.get("encoding", "json")
        if not isinstance(encoding, str) or encoding not in ("json", "b64"):
            raise _Fail(400, f"'encoding' must be 'json' or 'b64', received {encoding!r}"[:300])
        cfg = self.cfg
        x = _check_images(_decode_inputs(body), cfg.input_shape, cfg.max_batch)
        if cfg.burst is not None and len(x) > cfg.burst:
            raise _Fail(413, f"batch of {len(x)} images exceeds the rate-limit burst of "
                             f"{cfg.burst}; send at most {cfg.burst} images per request")
        return x, encoding

    def _admit(self, cid: str, c: _Client, n: int) -> None:
        """403 for a flagged client (with ``refuse_flagged``), 429 if the bucket is short."""
        cfg, flagged = self.cfg, False
        if cfg.refuse_flagged and self.monitor is not None:
            flagged = self.monitor.status(cid)["flagged"]
        with self.clients.lock:
            wait = 0.0
            if not flagged and cfg.rate_limit is not None:
                wait = self.clients.pay(c, n, cfg.rate_limit)
        if flagged:
            self.clients.count(c, "refused")
            raise _Fail(403, f"client {cid!r} is flagged by the query monitor: too many "
                             f"near-duplicate queries (a query-based attack); refused")
        if wait > 0:
            self.clients.count(c, "rate_limited")
            raise _Fail(429, f"rate limit of {cfg.rate_limit:g} images/s (burst {cfg.burst}) "
                             f"exceeded; retry in {wait:.3f} s",
                        {"Retry-After": str(math.ceil(wait))}, retry_after=wait)

    def stats(self) -> flask.Response:
        per, totals, evicted = self.clients.snapshot()
        cfg, mon = self.cfg, self.monitor
        for cid, counts in per.items():
            s = mon.status(cid) if mon is not None else {}
            counts.update(flagged=s.get("flagged", False), hit_fraction=s.get("hit_fraction"))
        return _reply({
            "queries_total": totals["queries"],
            **{f"{k}_total": totals[k] for k in ("requests", *_COUNTS[1:])},
            "clients": per, "clients_tracked": len(per), "clients_evicted": evicted,
            "max_clients": self.clients.max_clients, "client_idle": self.clients.idle,
            "defense": cfg.defense or "none",
            "model": {k: cfg.meta[k] for k in _MODEL_KEYS if k in cfg.meta},
            "max_batch": cfg.max_batch, "rate_limit": cfg.rate_limit, "burst": cfg.burst,
            "max_json_depth": MAX_JSON_DEPTH, "monitor": mon is not None,
            "refuse_flagged": cfg.refuse_flagged})


def _client_id(request: flask.Request) -> str:
    cid = request.headers.get("X-Client-Id") or request.remote_addr or "?"
    if len(cid) > MAX_CLIENT_ID:
        raise _Fail(400, f"X-Client-Id longer than {MAX_CLIENT_ID} characters")
    return cid


def _http_error(e: HTTPException) -> flask.Response:
    """Werkzeug's routing/size errors as ``{"error": ...}`` JSON (headers such as Allow kept)."""
    req = flask.request
    if e.code == 404:
        msg = f"no route {req.method} {req.path}; routes: {_ROUTES}"
    elif e.code == 405:
        msg = (f"method {req.method} not allowed for {req.path}; "
               f"allowed: {', '.join(sorted(e.valid_methods or []))}")
    elif e.code == 413:
        limit = flask.current_app.config["MAX_CONTENT_LENGTH"]
        msg = f"request body too large (limit {limit} bytes)"
    else:
        msg = e.description or str(e)
    resp = e.get_response()
    resp.set_data(json.dumps({"error": msg}, allow_nan=False))
    resp.mimetype = JSON_TYPE
    return resp


def _install(app: flask.Flask, api: _Api) -> None:
    """Error handlers and routes of ``api`` on ``app``."""

    @app.errorhandler(_Fail)
    def failed(e: _Fail) -> flask.Response:
        return _reply({"error": e.message, **e.extra}, e.status, e.headers)

    @app.errorhandler(Exception)
    def crashed(e: Exception) -> flask.Response:
        app.logger.exception("unexpected error")
        return _reply({"error": f"internal server error: {type(e).__name__}: {e}"[:500]}, 500)

    app.register_error_handler(HTTPException, _http_error)
    app.add_url_rule("/predict", "predict", api.predict, methods=["POST"])
    app.add_url_rule("/stats", "stats", api.stats, methods=["GET"])
    app.add_url_rule("/health", "health", lambda: _reply({"ok": True}), methods=["GET"])


def make_app(clf: Any, defense: str = "", *, max_batch: int = 1024,
             rate_limit: float | None = None, burst: int | None = None,
             monitor: Monitor | None = None, refuse_flagged: bool = False,
             seed: int = 0, max_clients: int = MAX_CLIENTS,
             client_idle: float = CLIENT_IDLE) -> flask.Flask:
    """A Flask app serving ``clf`` (a :class:`jaxinv.models.Classifier`) behind ``defense``.

    ``max_batch``: images per request (batches are zero-padded to the next power of two,
    so at most ``log2(max_batch) + 1`` shapes compile). ``rate_limit``: per-client token
    bucket in images per second with capacity ``burst`` (default ``max(rate_limit,
    max_batch)``); a request the bucket cannot pay gets 429 and ``Retry-After`` (integer
    seconds; the exact float is in the JSON ``retry_after``). ``monitor``: a
    :class:`Monitor` watching answered queries; with ``refuse_flagged`` a flagged client's
    later requests get 403. ``seed``: randomised defenses use ``fold_in(key(seed), i)`` for
    the i-th request. ``max_clients`` / ``client_idle``: at most that many client
    identities are tracked (least recently seen evicted) and a client idle that many
    seconds is forgotten (never sooner than its bucket takes to refill, so eviction cannot
    reset a bucket early), here and in ``monitor``. The defense is checked (and batch size
    1 compiled) here.

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
    _check_int("max_batch", max_batch, 1)
    _check_int("max_clients", max_clients, 1)
    if rate_limit is not None and not (isinstance(rate_limit, int | float) and rate_limit > 0):
        raise ValueError(f"rate_limit: expected None or a number > 0, received {rate_limit!r}")
    if burst is not None:
        _check_int("burst", burst, 1)
    if not (isinstance(client_idle, int | float) and client_idle > 0):
        raise ValueError(f"client_idle: expected a number of seconds > 0, "
                         f"received {client_idle!r}")
    if burst is None and rate_limit is not None:
        burst = max(math.ceil(rate_limit), max_batch)
    if rate_limit is not None:
        client_idle = max(client_idle, burst / rate_limit)
    model = _Model(clf, defense, max_batch, seed)
    cfg = _Config(defense, max_batch, rate_limit, burst, refuse_flagged, dict(clf.meta),
                  model.input_shape)
    clients = _Clients(max_clients, float(client_idle), burst,
                       monitor.forget if monitor is not None else None)
    app = flask.Flask(__name__)
    # nested JSON numbers take ~20 bytes each; leave room, refuse absurd bodies (413)
    app.config["MAX_CONTENT_LENGTH"] = (1 << 20) + 32 * max_batch * math.prod(cfg.input_shape)
    app.extensions["jaxinv"] = {"clients": clients, "monitor": monitor, "model": model}
    _install(app, _Api(model, cfg, clients, monitor))
    return app


def _check_port(port: Any) -> int:
    if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 65535:
        raise ValueError(f"port: expected an int in 0..65535 (0 picks a free port), "
                         f"received {port!r}")
    return port


def _create_server(app: Any, host: str, port: int, threads: int, channel_timeout: float,
                   connection_limit: int, max_body: int | None) -> Any:
    """A waitress server for ``app`` bound to ``host:port`` (not yet running)."""
    from waitress.server import create_server

    _check_port(port)
    _check_int("threads", threads, 1)
    _check_int("connection_limit", connection_limit, 1)
    if not (isinstance(channel_timeout, int | float) and channel_timeout > 0):
        raise ValueError(f"channel_timeout: expected seconds > 0, received {channel_timeout!r}")
    if max_body is None:  # the app answers 413 itself (JSON) a little below this
        app_limit = getattr(app, "config", {}).get("MAX_CONTENT_LENGTH")
        max_body = app_limit + (1 << 20) if app_limit else 64 << 20
    timeout = max(1, math.ceil(channel_timeout))  # waitress takes whole seconds
    try:
        return create_server(app, host=host, port=port, threads=threads,
                             channel_timeout=timeout, cleanup_interval=max(1, timeout // 2),
                             connection_limit=connection_limit, max_request_body_size=max_body,
                             clear_untrusted_proxy_headers=True, ident="jaxinv")
    except OSError as e:  # address in use, unknown host...
        raise ValueError(f"cannot listen on {host}:{port}: {e}") from None


def start_server(app: Any, host: str = "127.0.0.1", port: int = 0, *, threads: int = 8,
                 channel_timeout: float = 20, connection_limit: int = 256,
                 max_body: int | None = None) -> tuple[str, Callable[[], None]]:
    """Serve ``app`` with waitress from a daemon thread; ``port=0`` picks a free port.

    ``threads`` run complete requests; a connection idle (no bytes) for ``channel_timeout``
    seconds (whole seconds, checked every ``timeout / 2``) is closed; at most
    ``connection_limit`` sockets are open (more wait in the listen backlog); bodies over
    ``max_body`` bytes get waitress's 413 (default: the app's ``MAX_CONTENT_LENGTH`` + 1 MiB,
    so the app answers 413 in JSON first). Returns the base URL and ``stop()`` (idempotent;
    closes every connection and joins the threads).

    Example:
        >>> from jaxinv.http.client import HTTPOracle
        >>> url, stop = start_server(make_app(clf, "topk:3"))  # a free port on 127.0.0.1
        >>> url.startswith("http://127.0.0.1:")
        True
        >>> HTTPOracle(url).query(x).shape
        (16, 10)
        >>> stop()
        >>> start_server(make_app(clf), port=99999)
        Traceback (most recent call last):
        ValueError: port: expected an int in 0..65535 (0 picks a free port), received 99999
    """
    server = _create_server(app, host, port, threads, channel_timeout, connection_limit,
                            max_body)
    thread = threading.Thread(target=server.run, daemon=True,
                              name=f"jaxinv-serve-{server.effective_port}")
    thread.start()
    stopped = threading.Event()

    def close_all() -> None:  # runs in the server's loop thread
        for d in list(server._map.values()):
            if d is not server and d is not server.trigger:
                d.handle_close()
        server.close()  # the listening socket and the trigger: the loop ends

    def stop() -> None:
        if not stopped.is_set():
            stopped.set()
            try:
                server.trigger.pull_trigger(close_all)
            except OSError:  # the trigger's pipe is already closed (seen once in CI, EBADF)
                close_all()
            thread.join(10)
            server.task_dispatcher.shutdown(timeout=5)

    return f"http://{host}:{server.effective_port}", stop


def serve(target_dir: str | Path, defense: str = "", host: str = "127.0.0.1", port: int = 8000,
          *, threads: int = 8, channel_timeout: float = 20, connection_limit: int = 256,
          **app_kwargs: Any) -> None:
    """Load the classifier in ``target_dir`` and serve it with waitress until Ctrl-C.

    ``port=0`` picks a free port (the URL is printed). ``threads``, ``channel_timeout``,
    ``connection_limit`` as in :func:`start_server`; ``app_kwargs`` go to :func:`make_app`
    (``max_batch``, ``rate_limit``, ``burst``, ``monitor``, ``refuse_flagged``, ``seed``,
    ``max_clients``, ``client_idle``).

    Example:
        >>> serve("runs/demo/target", "round:2,topk:3", port=8000)  # doctest: +SKIP
        serving cnn (digits) behind 'round:2,topk:3' at http://127.0.0.1:8000 ...
        >>> serve("runs/missing")  # (the line above blocks until Ctrl-C: not run here)
        Traceback (most recent call last):
        FileNotFoundError: no trained model in .../runs/missing (missing model.json); ...
        >>> serve("runs/missing", port=-1)
        Traceback (most recent call last):
        ValueError: port: expected an int in 0..65535 (0 picks a free port), received -1
    """
    from jaxinv.training.classifier import load_classifier

    _check_port(port)
    clf = load_classifier(target_dir)
    app = make_app(clf, defense, **app_kwargs)
    server = _create_server(app, host, port, threads, channel_timeout, connection_limit, None)
    print(f"serving {clf.meta.get('arch', '?')} ({clf.meta.get('dataset', '?')}) behind "
          f"{defense or 'none'!r} at http://{host}:{server.effective_port} ({_ROUTES}; "
          f"waitress, {threads} threads); Ctrl-C to stop", flush=True)
    try:
        server.run()  # returns on Ctrl-C
    finally:
        server.close()


__all__ = ["MAX_CLIENTS", "MAX_JSON_DEPTH", "Monitor", "json_depth", "make_app", "serve",
           "start_server"]
