"""HTTP victim server (jaxinv.http.serve) and HTTP oracle client (jaxinv.http.client)."""

import base64
import json
import socket
import threading
import time

import flask
import jax
import numpy as np
import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jaxinv import data, defenses, oracles
from jaxinv.cli import main
from jaxinv.http.client import RATE_LIMIT_FACTOR, RETRY_STATUSES, HTTPOracle, RemoteError
from jaxinv.http.serve import MAX_JSON_DEPTH, Monitor, json_depth, make_app, start_server
from jaxinv.models import apply_logits
from jaxinv.training.classifier import load_classifier

SHAPE = (8, 8, 1)
JSON = {"Content-Type": "application/json"}


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
        ({"data": b"not json{", "headers": JSON}, 400, "not valid UTF-8 JSON"),
        ({"data": b'{"inputs": "\xff"}', "headers": JSON}, 400, "not valid UTF-8 JSON"),
        ({"json": [1, 2]}, 400, "JSON object"),
        ({"json": {"x": good}}, 400, "missing field 'inputs'"),
        ({"json": {"inputs": np.zeros((2, 9, 8, 1)).tolist()}}, 400, "expected [B, 8, 8, 1]"),
        ({"json": {"inputs": [[1, 2], [3]]}}, 400, "ragged"),
        ({"data": json.dumps({"inputs": np.full((1, *SHAPE), np.nan).tolist()}),
          "headers": JSON}, 400, "NaN"),
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
        "queries": 32, "refused": 0, "rate_limited": 1, "invalid": 0, "errors": 0,
        "flagged": False, "hit_fraction": None}
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


def strict_json(text):
    """``json.loads`` that refuses NaN/Infinity (what a strict JSON client accepts)."""
    def refuse(name):
        raise ValueError(f"invalid JSON constant {name}")

    return json.loads(text, parse_constant=refuse)


def nested(depth, leaf="0.5"):
    return "[" * depth + leaf + "]" * depth


def test_deep_json_is_refused_and_counted(server):
    url = server()
    post = lambda body: requests.post(url + "/predict", data=body, timeout=30,
                                      headers={**JSON, "X-Client-Id": "deep"})
    for depth in (MAX_JSON_DEPTH, 5000, 100_000):
        r = post('{"inputs": ' + nested(depth) + "}")
        assert r.status_code == 400, r.text
        assert f"nested {depth + 1} levels deep" in strict_json(r.text)["error"]
    r = post('{"inputs": ' + nested(MAX_JSON_DEPTH - 1) + "}")  # parsed: too deep for numpy
    assert r.status_code == 400 and "too deep" in r.json()["error"]
    image = json.dumps(np.full(SHAPE, 0.5).tolist())
    r = post('{"x": "' + "[" * 5000 + '", "inputs": ' + image + "}")  # brackets in a str
    assert r.status_code == 200, r.text
    stats = requests.get(url + "/stats", timeout=30).json()
    assert stats["clients"]["deep"]["invalid"] == 4 and stats["invalid_total"] == 4
    assert stats["clients"]["deep"]["queries"] == 1 and stats["max_json_depth"] == 400


def test_wrong_content_type_is_415(server, digits):
    url = server()
    body = json.dumps({"inputs": digits[:1].tolist()})
    b64_body = json.dumps({"inputs_b64": b64(digits[:1]), "shape": [1, *SHAPE]})
    for data_, ctype in ((body, "text/plain"), (body, None), (body, "application/x-www-form"
                         "-urlencoded"), (b64_body, "application/octet-stream"),
                         (body, "application/json; charset=latin-1")):
        headers = {"X-Client-Id": "typo"} | ({"Content-Type": ctype} if ctype else {})
        r = requests.post(url + "/predict", data=data_, headers=headers, timeout=30)
        assert r.status_code == 415, (ctype, r.text)
        assert "application/json" in r.json()["error"] and r.headers["Accept-Post"]
    for data_ in (body, b64_body):  # the base64 form is JSON too
        for ctype in ("application/json", "Application/JSON; charset=UTF-8"):
            r = requests.post(url + "/predict", data=data_, timeout=30,
                              headers={"Content-Type": ctype, "X-Client-Id": "typo"})
            assert r.status_code == 200, r.text
    counts = requests.get(url + "/stats", timeout=30).json()["clients"]["typo"]
    assert (counts["invalid"], counts["queries"]) == (5, 4)


def test_client_churn_is_bounded_and_a_flood_stays_exact(clf, digits):
    cap, churn = 200, 2000
    monitor = Monitor(min_queries=10**6)  # watches every client, flags none
    app = make_app(clf, monitor=monitor, max_clients=cap, client_idle=3.0)
    table = app.extensions["jaxinv"]["clients"]
    url, stop = start_server(app, threads=4)
    failures, peak, sent, churned = [], [0], [0] * 4, threading.Event()

    def run(cid, batch, n, k=None):  # k: a flood client, busy until the churn is over
        with requests.Session() as s:
            for i in range(n):
                if k is not None and churned.is_set():
                    break
                r = s.post(url + "/predict", json={"inputs": batch}, timeout=30,
                           headers={"X-Client-Id": cid(i)})
                if r.status_code != 200:
                    failures.append(r.text)
                elif k is not None:
                    sent[k] += len(batch)
                    time.sleep(0.02)  # a steady stream, not a CPU hog on 2 cores

    def churn_then_stop(k):
        run(lambda i: f"churn-{k}-{i}", digits[:1].tolist(), churn // 2)

    four = digits[:4].tolist()
    threads = [threading.Thread(target=churn_then_stop, args=(k,)) for k in range(2)]
    threads += [threading.Thread(target=run, args=(lambda i, k=k: f"flood-{k}", four, 5000, k))
                for k in range(4)]
    try:
        t0 = time.monotonic()
        for t in threads:
            t.start()
        while any(t.is_alive() for t in threads[:2]) and time.monotonic() - t0 < 120:
            peak[0] = max(peak[0], len(table), len(monitor))
            time.sleep(0.005)
        churned.set()
        for t in threads:
            t.join(60)
        assert not failures, failures[:3]
        stats = requests.get(url + "/stats", timeout=30).json()
        assert peak[0] <= cap + 4  # + requests in flight (4 threads), never evicted
        assert stats["clients_tracked"] <= cap and len(monitor) <= cap
        flood_bytes = sum(monitor.nbytes(f"flood-{k}") for k in range(4))  # full windows
        assert monitor.nbytes() - flood_bytes <= cap * 10_000  # KiBs per client, not 0.5 MiB
        assert stats["queries_total"] == churn + sum(sent)
        assert stats["requests_total"] == churn + sum(sent) // 4
        for k in range(4):  # active clients keep exact counts
            assert stats["clients"][f"flood-{k}"]["queries"] == sent[k] > 0
        assert "churn-0-0" not in stats["clients"]  # the oldest ids went first
        assert stats["clients_evicted"] >= churn + 4 - cap
        time.sleep(3.3)  # everyone idle for longer than client_idle
        stats = requests.get(url + "/stats", timeout=30).json()
        assert stats["clients"] == {} and stats["clients_evicted"] == churn + 4
        assert len(monitor) == 0 and stats["queries_total"] == churn + sum(sent)
    finally:
        churned.set()
        stop()


def test_slow_client_is_disconnected_and_others_are_served(clf, digits):
    url, stop = start_server(make_app(clf), threads=2, channel_timeout=1)
    host, port = url.removeprefix("http://").split(":")
    partial = (b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
               b"Content-Length: 1000\r\n\r\n{\"inputs\": [[")
    socks = []
    try:
        t0 = time.monotonic()
        for _ in range(10):  # more stalled connections than worker threads
            s = socket.create_connection((host, int(port)), timeout=10)
            s.sendall(partial)
            socks.append(s)
        r = requests.post(url + "/predict", json={"inputs": digits[:2].tolist()}, timeout=10)
        assert r.status_code == 200 and time.monotonic() - t0 < 5
        for s in socks:
            try:
                got = s.recv(1024)
            except ConnectionResetError:
                got = b""
            assert got == b""  # closed by the server, no answer
        assert time.monotonic() - t0 < 8  # timeout 1 s, checked every second
        assert requests.get(url + "/health", timeout=10).json() == {"ok": True}
    finally:
        for s in socks:
            s.close()
        stop()


def test_nan_model_answers_500_with_valid_json(clf, digits):
    broken = clf._replace(variables=jax.tree.map(lambda v: v * np.nan, clf.variables))
    url, stop = start_server(make_app(broken, "round:2"))
    try:
        for body in ({"inputs": digits[:2].tolist()},
                     {"inputs": digits[:2].tolist(), "encoding": "b64"}):
            r = requests.post(url + "/predict", json=body, timeout=30)
            assert r.status_code == 500 and "non-finite" in strict_json(r.text)["error"]
        stats = strict_json(requests.get(url + "/stats", timeout=30).text)
        assert (stats["errors_total"], stats["queries_total"]) == (2, 0)
    finally:
        stop()


def test_bad_port_is_a_clear_error(models, clf, capsys):
    for port in ("99999", "-1"):
        assert main(["serve", "--target", str(models / "target"), "--port", port]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "port" in err and "0..65535" in err, err
    with pytest.raises(ValueError, match=r"0\.\.65535"):
        start_server(make_app(clf), port=65536)
    url, stop = start_server(make_app(clf))
    try:
        with pytest.raises(ValueError, match=r"cannot listen on 127\.0\.0\.1"):
            start_server(make_app(clf), port=int(url.rsplit(":", 1)[1]))
    finally:
        stop()


# --- property-based fuzzing (small example counts: the whole file stays fast) ----------

FUZZ = settings(max_examples=80, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
leaves = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70),
                   st.floats(), st.floats(0, 1), st.text(max_size=4))
json_values = st.recursive(leaves, lambda kids: st.lists(kids, max_size=4)
                           | st.dictionaries(st.text(max_size=4), kids, max_size=3),
                           max_leaves=24)


@st.composite
def image_lists(draw):
    """Nested lists near the served shape: random sizes, dtypes and values."""
    shape = [draw(st.integers(0, 5)), *(draw(st.sampled_from([s, s, 1, s + 1]))
                                         for s in SHAPE)]
    if draw(st.booleans()):
        shape = shape[1:]  # one image
    kind = draw(st.sampled_from(["unit", "unit", "wide", "int", "bool", "str", "special"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    x = {"unit": lambda: rng.uniform(0, 1, shape), "wide": lambda: rng.normal(0, 2, shape),
         "int": lambda: rng.integers(0, 2, shape), "bool": lambda: rng.uniform(size=shape) > .5,
         "str": lambda: rng.uniform(size=shape).astype(str),
         "special": lambda: rng.choice([0.0, 1.0, np.nan, np.inf, 1e300, -0.0], shape)}[kind]()
    return x.tolist()


@st.composite
def b64_bodies(draw):
    n = draw(st.integers(0, 300))
    x = draw(st.sampled_from([np.full(n, 0.5), np.linspace(-1, 2, n), np.full(n, np.nan)]))
    shape = draw(st.one_of(st.just([n // 64, *SHAPE]), st.lists(st.integers(-2, 70),
                                                                 max_size=70), json_values))
    data_ = draw(st.one_of(st.just(b64(x)), st.text(max_size=12), json_values))
    return {"inputs_b64": data_, "shape": shape}


request_bodies = st.one_of(
    st.fixed_dictionaries({"inputs": image_lists()},
                          optional={"encoding": st.one_of(st.sampled_from(["json", "b64"]),
                                                          json_values)}),
    st.fixed_dictionaries({"inputs": json_values}),
    b64_bodies(),
    json_values)


@pytest.fixture(scope="module")
def fuzz_client(clf):
    return make_app(clf, max_batch=4).test_client()


def check_answer(r):
    """200 with valid probabilities, or a 4xx with an {"error": ...} JSON body."""
    body = strict_json(r.get_data(as_text=True))  # never invalid JSON
    if r.status_code != 200:
        assert 400 <= r.status_code < 500, (r.status_code, body)
        assert isinstance(body, dict) and isinstance(body["error"], str) and body["error"]
        return
    if "probs_b64" in body:
        probs = np.frombuffer(base64.b64decode(body["probs_b64"]), "<f4").reshape(body["shape"])
    else:
        probs = np.asarray(body["probs"])
    assert probs.ndim == 2 and probs.shape[1] == 10 and 1 <= len(probs) <= 4
    assert np.isfinite(probs).all() and (probs >= 0).all()
    np.testing.assert_allclose(probs.sum(1), 1, atol=1e-4)
    assert body["labels"] == probs.argmax(1).tolist()


@FUZZ
@given(body=request_bodies)
def test_fuzz_request_validator(fuzz_client, body):
    check_answer(fuzz_client.post("/predict", data=json.dumps(body),
                                  content_type="application/json"))


@settings(FUZZ, max_examples=50)
@given(raw=st.binary(max_size=300) | st.text(alphabet='[]{}"\\:,0.5e-ab ', max_size=300)
       .map(str.encode))
def test_fuzz_raw_bodies(fuzz_client, raw):
    check_answer(fuzz_client.post("/predict", data=raw, content_type="application/json"))


def reference_depth(v):
    if isinstance(v, list):
        return 1 + max(map(reference_depth, v), default=0)
    if isinstance(v, dict):
        return 1 + max(map(reference_depth, v.values()), default=0)
    return 0


tricky = st.recursive(st.one_of(st.text(alphabet='[]{}"\\ab\u00e9', max_size=6), st.integers()),
                      lambda kids: st.lists(kids, max_size=3)
                      | st.dictionaries(st.text(alphabet='[]{}"\\a', max_size=4), kids,
                                        max_size=3), max_leaves=30)


@settings(FUZZ, max_examples=100)
@given(value=tricky, ascii_only=st.booleans())
def test_fuzz_json_depth_matches_the_parser(value, ascii_only):
    text = json.dumps(value, ensure_ascii=ascii_only).encode()
    assert json_depth(text) == reference_depth(value) == reference_depth(json.loads(text))


@settings(FUZZ, max_examples=100)
@given(spec=st.one_of(
    st.text(max_size=30),
    st.lists(st.one_of(st.sampled_from([*defenses.NAMES, "round_to", "nan", "inf", "-1", "0",
                                        "1e9", "2.5", "", " ", "topk:", ":3"]),
                       st.text(alphabet="0123456789.:-e", max_size=5)), max_size=5)
    .map(",".join),
    st.lists(st.sampled_from(defenses.NAMES), max_size=3).flatmap(
        lambda ns: st.tuples(*(st.tuples(st.just(n), st.floats(-10, 1e3) | st.integers(-3, 20))
                               for n in ns))).map(
        lambda items: ",".join(f"{n}:{a}" for n, a in items))))
def test_fuzz_defense_spec_parser(spec):
    try:
        d = defenses.parse(spec)
    except ValueError as e:
        assert str(e).strip(), spec
    else:
        assert isinstance(d, defenses.Defense), (spec, d)
