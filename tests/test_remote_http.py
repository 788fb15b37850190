"""End to end: serve a model on 127.0.0.1, attack it over HTTP, count queries both sides."""

import json

import numpy as np
import pytest

from jaxinv.cli import main


@pytest.fixture(scope="module")
def server(models):
    from jaxinv.http.serve import make_app, start_server
    from jaxinv.training.classifier import load_classifier

    url, stop = start_server(make_app(load_classifier(models / "target"), "round:2,topk:3"))
    yield url
    stop()


@pytest.mark.parametrize("attack,extra", [("zo", ["--queries-per-step", "10"]),
                                          ("label-only", ["--spheres", "8"])])
def test_attack_over_http_counts_match_the_server(models, server, tmp_path, attack, extra):
    from jaxinv.http.client import HTTPOracle

    before = HTTPOracle(server).stats()["queries_total"]
    out = tmp_path / attack
    args = ["attack", attack, "--remote", server, "--eval-model", str(models / "evaluator"),
            "--chains", "2", "--steps", "4", "--classes", "0,1", "--out", str(out), *extra]
    assert main(args) == 0
    rec = json.loads((out / "results.json").read_text())
    served = HTTPOracle(server).stats()["queries_total"] - before
    per_step = 11 if attack == "zo" else 9
    assert rec["metrics"]["queries_total"] == served == 2 * 2 * 4 * per_step
    assert rec["metrics"]["http"]["queries"] == served
    log = [json.loads(line) for line in (out / "queries.jsonl").read_text().splitlines()]
    assert sum(r["n"] for r in log if r.get("status") == 200) == served
    assert rec["config"]["remote"] == server


def test_remote_run_equals_in_process_run(models, server, tmp_path):
    """Same seed, same defense: the HTTP attack retraces the in-process one."""
    common = ["--eval-model", str(models / "evaluator"), "--chains", "2", "--steps", "5",
              "--classes", "3", "--queries-per-step", "10"]
    assert main(["attack", "zo", "--remote", server, "--out", str(tmp_path / "r"),
                 *common]) == 0
    assert main(["attack", "zo", "--target", str(models / "target"), "--defense",
                 "round:2,topk:3", "--out", str(tmp_path / "l"), *common]) == 0
    r, loc = (np.load(tmp_path / d / "reconstructions.npz")["x"] for d in ("r", "l"))
    np.testing.assert_allclose(r, loc, atol=1e-4)


def test_remote_errors_are_clear(models, tmp_path, capsys):
    args = ["attack", "zo", "--remote", "http://127.0.0.1:9", "--eval-model",
            str(models / "evaluator"), "--out", str(tmp_path / "x"), "--steps", "2",
            "--retries", "1"]
    assert main(args) == 2
    assert "127.0.0.1:9" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # a white-box attack cannot take --remote
        main(["attack", "mi-face", "--remote", "http://x", "--eval-model", "e", "--out", "o"])
    assert "--target" in capsys.readouterr().err


def test_a_monitoring_server_stops_the_attack_and_the_state_survives(models, tmp_path,
                                                                     capsys):
    from jaxinv.http.serve import Monitor, make_app, start_server
    from jaxinv.training.classifier import load_classifier

    app = make_app(load_classifier(models / "target"), monitor=Monitor(min_queries=40),
                   refuse_flagged=True)
    url, stop = start_server(app)
    try:
        args = ["attack", "zo", "--remote", url, "--eval-model", str(models / "evaluator"),
                "--chains", "2", "--steps", "20", "--segment", "2", "--classes", "0",
                "--queries-per-step", "10", "--smoothing", "0.01", "--out",
                str(tmp_path / "zo")]
        assert main(args) == 2  # flagged as an attack: 403, a clear error, no crash
        err = capsys.readouterr().err
        assert "403" in err and "saved" in err, err[-600:]
        assert any((tmp_path / "zo" / "checkpoints" / "ckpt").iterdir())
    finally:
        stop()
