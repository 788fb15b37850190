"""HTTP victim server (jaxinv.http.serve) and HTTP oracle client (jaxinv.http.client)."""

import base64
import json
import threading

import flask
import jax
import numpy as np
import pytest
import requests

from jaxinv import data, defenses, oracles
from jaxinv.http.client import RATE_LIMIT_FACTOR, RETRY_STATUSES, HTTPOracle, RemoteError
from jaxinv.http.serve import Monitor, make_app, start_server
from jaxinv.models import apply_logits
from jaxinv.training.classifier import load_classifier

SHAPE = (8, 8, 1)


@pytest.fixture(scope="module")
def clf(models):
    return load_classifier(models / "target")


@pytest.fixture(scope="module")
def digits():
    return data.load("digits", "test")[0]


@pytest.fixture
def server(clf):
    """``server(defense, **make_app_kwargs) -> url``; every server is stopped afterwards."""
    stops = []

    def start(defense="", **kwargs):
        url, stop = start_server(make_app(clf, defense, **kwargs))
        stops.append(stop)
        return url

    yield start
    for stop in stops:
        stop()


def b64(x):
    return base64.b64encode(np.asarray(x, "<f4").tobytes()).decode()


def test_rejects_bad_input_and_stays_alive(server, digits):
    url = server(max_batch=16)
    good = digits[:2].tolist()
    cases = [  # (kwargs of requests.post, status, words in the error)
        ({"data": b"not json{"}, 400, "not valid JSON"),
        ({"json": [1, 2]}, 400, "JSON object"),
        ({"json": {"x": good}}, 400, "missing field 'inputs'"),
        ({"json": {"inputs": np.zeros((2, 9, 8, 1)).tolist()}}, 400, "expected [B, 8, 8, 1]"),
        ({"json": {"inputs": [[1, 2], [3]]}}, 400, "ragged"),
        ({"data": json.dumps({"inputs": np.full((1, *SHAPE), np.nan).tolist()})}, 400, "NaN"),
        ({"json": {"inputs": np.full((1, *SHAPE), 1.5).tolist()}}, 400, "[0, 1]"),
        ({"json": {"inputs": np.full((1, *SHAPE), "0.5").tolist()}}, 400, "only numbers"),
        ({"json": {"inputs": np.zeros((17, *SHAPE)).tolist()}}, 413, "limit of 16"),
        ({"json": {"inputs": []}}, 400, "empty batch"),
        ({"json": {"inputs_b64": "@@@=", "shape": [1, *SHAPE]}}, 400, "base64"),
        ({"json": {"inputs_b64": b64(np.zeros(3)), "shape": [1, *SHAPE]}}, 400, "bytes"),
        ({"json": {"inputs_b64": b64(np.zeros(64)), "shape": "x"}}, 400, "'shape'"),
        ({"json": {"inputs": good, "encoding": "xml"}}, 400, "'encoding'"),
    ]
    for kwargs, status, words in cases:
        r = requests.post(url + "/predict", timeout=30, **kwargs)
        assert r.status_code == status, (kwargs, r.text)
        assert words in r.json()["error"], (words, r.json())
    r = requests.post(url + "/nowhere", json={}, timeout=30)
    assert r.status_code == 404 and "POST /predict" in r.json()["error"]
    r = requests.get(url + "/predict", timeout=30)
    assert r.status_code == 405 and "POST" in r.json()["error"] and "POST" in r.headers["Allow"]
    r = requests.post(url + "/predict", json={"inputs": good}, timeout=30)
    assert r.status_code == 200 and len(r.json()["probs"]) == 2
    one = requests.post(url + "/predict", json={"inputs": good[0]}, timeout=30).json()
    assert np.asarray(one["probs"]).shape == (1, 10)  # a single image: a batch of one
    assert requests.get(url + "/health", timeout=30).json() == {"ok": True}
    assert requests.get(url + "/stats", timeout=30).json()["queries_total"] == 3


@pytest.mark.parametrize("binary", [True, False])
def test_defended_outputs_equal_in_process_oracle(server, clf, digits, binary):
    x = digits[:32]
    d = "round:2,topk:3"
    want = np.asarray(oracles.score(apply_logits(clf.module), defenses.parse(d))
                      .query(jax.random.key(0), clf.variables, x))
    with HTTPOracle(server(d), batch_size=32, binary=binary) as oracle:
        np.testing.assert_array_equal(oracle.query(x), want)
        assert oracle.queries == 32 and oracle.requests == 1
        assert oracle.query(x[:0]).shape == (0, 10)
    assert HTTPOracle("http://127.0.0.1:1").query(x[:0]).shape == (0, 0)  # no request made
    with HTTPOracle(server("label"), batch_size=24, binary=binary) as oracle:
        probs = oracle.query(x)  # batches of 24 + 8
        assert oracle.stats()["defense"] == "label"
    np.testing.assert_array_equal(probs, np.eye(10)[want.argmax(-1)])


def test_rate_limit(server, digits):
    slow = server(rate_limit=1.0, burst=32)  # 32 images, then one image per second
    headers = {"X-Client-Id": "greedy"}
    body = {"inputs": digits[:32].tolist()}
    assert requests.post(slow + "/predict", json=body, headers=headers, timeout=30).ok
    r = requests.post(slow + "/predict", json=body, headers=headers, timeout=30)
    assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1
    assert 0 < r.json()["retry_after"] <= 32 and "rate limit" in r.json()["error"]
    big = {"inputs": np.zeros((33, *SHAPE)).tolist()}
    r = requests.post(slow + "/predict", json=big, timeout=30)
    assert r.status_code == 413 and "burst of 32" in r.json()["error"]
    assert requests.get(slow + "/stats", timeout=30).json()["clients"]["greedy"] == {
        "queries": 32, "refused": 0, "rate_limited": 1, "invalid": 0, "flagged": False,
        "hit_fraction": None}
    # 50 images/s: a second batch of 32 must wait ~0.64 s, far longer than a request takes
    url = server(rate_limit=50.0, burst=32, max_batch=32)
    with HTTPOracle(url, batch_size=32, client_id="patient") as oracle:
        assert oracle.query(digits[:96]).shape == (96, 10)
        stats = oracle.stats()["clients"]
    assert oracle.retries > 0 and stats["patient"]["rate_limited"] == oracle.retries
    assert stats["patient"]["queries"] == oracle.queries == 96


def flaky_app(failures):
    """A tiny victim whose first ``failures`` requests fail with 503 (a non-JSON body)."""
    app, seen = flask.Flask("flaky"), []

    @app.post("/predict")
    def predict():
        seen.append(1)
        if len(seen) <= failures:
            return "busy, try later", 503
        n = flask.request.get_json()["shape"][0]
        return {"probs": np.eye(3)[np.arange(n) % 3].tolist(), "labels": [0] * n, "queries": n}

    return app


def test_retries_errors_and_log(tmp_path, server, digits):
    url, stop = start_server(flaky_app(2))
    log = tmp_path / "queries.jsonl"
    try:
        oracle = HTTPOracle(url, backoff=0.01, log_path=log)
        np.testing.assert_array_equal(oracle.query(digits[:4]), np.eye(3)[[0, 1, 2, 0]])
    finally:
        stop()
    assert (oracle.queries, oracle.requests, oracle.retries) == (4, 3, 2)
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r["status"] for r in lines] == [503, 503, 200]
    # urllib3 drains a retried answer: the log has its status, not its body
    assert lines[0]["error"] == "HTTP 503" and [r.get("attempt") for r in lines[:2]] == [1, 2]
    assert lines[2]["attempts"] == 3 and lines[2]["n"] == 4
    assert len({r["sha1"] for r in lines}) == 1
    with pytest.raises(RemoteError, match=r"gave up \(retries=2\).*refused") as e:  # gone
        HTTPOracle(url, retries=2, backoff=0.01).query(digits[:4])
    assert e.value.status is None and "\n" not in str(e.value) and url in str(e.value)
    url, stop = start_server(flaky_app(10))  # 503 beyond the status budget
    try:
        oracle = HTTPOracle(url, retries=1, backoff=0.001)  # status budget 1 * 8
        with pytest.raises(RemoteError, match=r"gave up after 9 attempts \(8 retries\); "
                                              r"last error: HTTP 503: busy") as e:
            oracle.query(digits[:4])
    finally:
        stop()
    assert e.value.status == 503 and (oracle.requests, oracle.retries) == (9, 8)
    oracle = HTTPOracle(server(), backoff=0.01, log_path=log)
    with pytest.raises(RemoteError, match=r"HTTP 400: inputs must lie in the range \[0, 1\]"):
        oracle.query(digits[:4] + 1)
    assert oracle.retries == 0 and json.loads(log.read_text().splitlines()[-1])["status"] == 400


def test_session_mounts_urllib3_retry():
    from requests.adapters import HTTPAdapter
    from urllib3.util import Retry

    oracle = HTTPOracle("http://127.0.0.1:1", retries=3, backoff=0.25, max_backoff=7.0)
    for url in ("http://127.0.0.1:1/predict", "https://example.org/predict"):
        adapter = oracle._session.get_adapter(url)
        assert isinstance(adapter, HTTPAdapter)
        r = adapter.max_retries
        assert isinstance(r, Retry)
        assert (r.total, r.connect, r.read, r.other, r.status) == (
            (RATE_LIMIT_FACTOR + 1) * 3, 3, 3, 3, RATE_LIMIT_FACTOR * 3)
        assert (r.backoff_factor, r.backoff_max, r.backoff_jitter) == (0.25, 7.0, 0.25)
        assert set(r.status_forcelist) == set(RETRY_STATUSES) == {408, 429, 500, 502, 503, 504}
        assert {"GET", "POST"} <= set(r.allowed_methods)
        assert r.respect_retry_after_header and not r.raise_on_status
    off = HTTPOracle("http://x", retries=0)._session.get_adapter("http://x").max_retries
    assert (off.total, off.connect, off.status) == (0, 0, 0)
    with pytest.raises(ValueError, match="retries"):
        HTTPOracle("http://x", retries=-1)


def zo_stream(rng, steps, sigma=0.02, pairs=25):
    """The queries of an antithetic NES attack: ``x +- sigma u`` around a moving point."""
    x = rng.uniform(0, 0.25, SHAPE)
    for _ in range(steps):
        u = rng.normal(size=(pairs, *SHAPE))
        yield np.clip(np.concatenate([x + sigma * u, x - sigma * u, x[None]]), 0, 1)
        x = np.clip(x - 0.05 * np.sign(rng.normal(size=SHAPE)), 0, 1)


def test_monitor_flags_zeroth_order_stream(digits):
    rng = np.random.default_rng(0)
    mon = Monitor()
    for batch in zo_stream(rng, 8):
        assert mon.observe("zo", batch)[1:].all()
    for batch in np.array_split(digits, 6):
        mon.observe("natural", batch)
    for _ in range(8):
        mon.observe("noise", rng.uniform(size=(64, *SHAPE)))
    zo, natural, noise = (mon.status(c) for c in ("zo", "natural", "noise"))
    assert zo["flagged"] and zo["hit_fraction"] > 0.95
    assert not natural["flagged"] and natural["hit_fraction"] < 0.4
    assert not noise["flagged"] and noise["hit_fraction"] == 0
    assert natural["queries"] == len(digits)


def test_refuse_flagged_client(server, digits):
    url = server(monitor=Monitor(min_queries=100), refuse_flagged=True)
    attacker = HTTPOracle(url, client_id="zo")
    with pytest.raises(RemoteError, match="flagged by the query monitor") as e:
        for batch in zo_stream(np.random.default_rng(1), 10):
            attacker.query(batch.astype(np.float32))
    assert e.value.status == 403 and attacker.queries == 102  # served until flagged
    honest = HTTPOracle(url, client_id="honest", batch_size=60)
    assert honest.query(digits).shape == (len(digits), 10)
    clients = honest.stats()["clients"]
    assert clients["zo"]["flagged"] and clients["zo"]["refused"] == 1
    assert not clients["honest"]["flagged"] and clients["honest"]["queries"] == len(digits)


def test_concurrent_clients(server, digits):
    url = server("noise:0.01")
    oracles_ = [HTTPOracle(url, batch_size=16, client_id=f"c{i % 2}") for i in range(4)]
    threads = [threading.Thread(target=o.query, args=(digits[:64],)) for o in oracles_]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stats = oracles_[0].stats()
    assert stats["queries_total"] == 256 and stats["clients"]["c0"]["queries"] == 128
    assert sum(o.queries for o in oracles_) == 256
