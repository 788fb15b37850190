"""HTML audit report (jaxinv.evaluation.report) and ``jaxinv report D``."""

import json
import re

import numpy as np
import pytest

from jaxinv import cli
from jaxinv.evaluation import results
from jaxinv.evaluation.report import load_run, write_report

T, N, H, STEPS, P, E = 3, 4, 8, 5, 30, 4
EVAL = {"knn_dist": 1.2345, "feature_dist": 2.5, "fid_eval": 43.21, "precision": 0.625,
        "recall": 0.375, "density": 1.125, "coverage": 0.5, "psnr": 17.25, "ssim": 0.4321}


def make_run(d, evaluate=False, per_sample=False):
    """A run dir as ``invert`` writes it (via ``results.write_run``), optionally evaluated."""
    rng = np.random.default_rng(0)
    meta = {"arch": "cnn", "dataset": "digits", "test_accuracy": 0.9805, "num_params": 1234}
    metrics = {"attack_acc_top1": 0.875, "attack_acc_top5": 1.0,
               "attack_acc_top1_std_over_classes": 0.05, "init_acc_top1": 0.125,
               "init_acc_top5": 0.5, "target_confidence": 0.9912, "chains_failed": 1,
               "steps_run": STEPS,
               "per_class": {str(c): {"top1": 0.75 + c / 10, "top5": 1.0,
                                      "target_confidence": 0.99} for c in range(T)}}
    if evaluate:
        metrics |= EVAL
        metrics["per_class_eval"] = {str(c): {"knn_dist": 1.0 + c, "resilient_fraction": 0.8,
                                              "score_mean": 0.0625} for c in range(T)}
        metrics["per_sample"] = {"resilient_fraction": 0.8125, "score_mean": 0.0625,
                                 "score_max": 0.5, "most_exposed": [3, 1],
                                 "features": "evaluation-classifier penultimate features",
                                 "private": "digits:train"}
    record = {"attack": "mi-face",
              "config": {"target": "/w/target", "eval_model": "/w/eval", "chains": N,
                         "steps": STEPS, "classes": list(range(T)),
                         "options": {"loss": "neg_log_p", "note": "<b>x</b>"},
                         "target_meta": meta, "eval_meta": {**meta, "arch": "mlp"}},
              "seed": 7, "versions": {"jax": "0.10.2", "python": "3.11.7", "backend": "cpu"},
              "metrics": metrics,
              "timing": {"wall_s": 1.5, "compile_s": 0.5, "run_s": 1.0,
                         "chain_steps_per_s": 60.0}}
    failed = np.zeros((T, N), bool)
    failed[0, 0] = True
    arrays = {"x": rng.random((T, N, H, H, 1), np.float32), "y": np.arange(T),
              "x_init": rng.random((T, N, H, H, 1), np.float32),
              "best_loss": rng.random((T, N), np.float32), "failed": failed,
              "curve_loss": rng.random((STEPS, T), np.float32) + 0.1,
              "curve_confidence": rng.random((STEPS, T), np.float32),
              "curve_grad_norm": rng.random((STEPS, T), np.float32)}
    results.write_run(d, record, arrays)
    if per_sample:
        score = np.where(rng.random(P) < 0.7, 0.0, rng.random(P)).astype(np.float32)
        top = np.argsort(-score)[:E]
        np.savez(d / "per_sample.npz", score=score, dist=rng.random(P), labels=np.arange(P) % T,
                 hits=rng.integers(0, 3, P), private_index=np.arange(P) + 100,
                 exposed_index=top + 100,
                 exposed_x=rng.random((E, H, H, 1)), exposed_rec=rng.random((E, H, H, 1)),
                 exposed_score=score[top], exposed_dist=np.full(E, 0.75))
    return d


def assert_self_contained(page):
    assert 'src="http' not in page and "href=" not in page
    srcs = re.findall(r'src="([^"]*)"', page)
    assert srcs and all(s.startswith("data:image/png;base64,") for s in srcs)


def test_report_before_evaluate(tmp_path):
    out = write_report(make_run(tmp_path))
    assert out == tmp_path / "report.html" and not list(tmp_path.glob(".*tmp"))
    page = out.read_text()
    assert_self_contained(page)
    for text in ("87.5%", "random init 12.5%", "100.0%", "random init 50.0%", "0.9912",
                 "<b>cnn</b> on digits", "98.0%", "<th>Seed</th><td>7</td>", "mi-face"):
        assert text in page, text
    for c in range(T):
        assert f"<td>class {c}</td>" in page
    assert "0.950" in page  # per-class top-1 of class 2
    assert "jaxinv evaluate --run" in page and "Most exposed" not in page
    assert "&lt;b&gt;x&lt;/b&gt;" in page and "<b>x</b>" not in page  # JSON text is escaped
    assert page.count("data:image/png;base64,") == 2  # grid + curves


def test_report_after_evaluate(tmp_path):
    page = write_report(make_run(tmp_path, evaluate=True, per_sample=True)).read_text()
    assert_self_contained(page)
    for text in ("1.234", "43.21", "0.625", "0.375", "1.125", "17.25", "0.4321", "81.2%",
                 "0.0625", "digits:train", "resilient fraction", "score mean", "knn dist"):
        assert text in page, text
    assert "jaxinv evaluate --run" not in page
    assert "Most exposed training samples" in page and page.count("class=pair>") == E
    assert "dist 0.75" in page
    top = np.argsort(-np.load(tmp_path / "per_sample.npz")["score"])[:E]
    assert all(f"#{i + 100} · class {i % T}<br>" in page for i in top)  # via private_index
    assert page.count("data:image/png;base64,") == 1 + 2 * E + 1 + 1  # grid, pairs, 2 figures


def test_report_metrics_without_per_sample(tmp_path):
    page = write_report(make_run(tmp_path, evaluate=True)).read_text()
    assert "43.21" in page and "Most exposed" not in page and "per-sample exposure" not in page


def test_report_minimal_write_run_dir(tmp_path):
    """The bare contract: metrics only, x and y only, no grid.png (rendered from x)."""
    x = np.random.default_rng(0).random((2, 3, 8, 8, 1), np.float32)
    results.write_run(tmp_path, {"metrics": {"attack_acc_top1": 0.5}}, {"x": x, "y": np.arange(2)})
    (tmp_path / "grid.png").unlink()
    page = write_report(tmp_path).read_text()
    assert_self_contained(page)
    assert "50.0%" in page and "Reconstructions" in page and "Attack curves" not in page


def test_report_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"results\.json.*jaxinv attack"):
        write_report(tmp_path / "nope")
    d = make_run(tmp_path / "run")
    (d / "per_sample.npz").write_bytes(b"garbage")
    with pytest.raises(ValueError, match=r"per_sample\.npz.*jaxinv evaluate"):
        write_report(d)
    (d / "per_sample.npz").unlink()
    (d / "reconstructions.npz").unlink()
    with pytest.raises(FileNotFoundError, match=r"reconstructions\.npz"):
        write_report(d)
    (d / "results.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"results\.json.*not valid JSON"):
        load_run(d)
    (d / "results.json").write_text(json.dumps([1, 2]))
    with pytest.raises(ValueError, match="metrics"):
        load_run(d)


def test_cli_report(tmp_path, capsys):
    d = make_run(tmp_path / "run")
    assert cli.main(["report", str(d)]) == 0
    assert capsys.readouterr().out.strip() == str(d / "report.html")
    assert (d / "report.html").exists()
    assert cli.main(["report", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert "jaxinv report: error:" in err and "jaxinv attack" in err


def test_report_escapes_results_json_strings(tmp_path):
    """Strings from results.json reach the page escaped, wherever the template shows them;
    the base64 images the report makes itself are not escaped (twice or at all)."""
    d = make_run(tmp_path / "run", evaluate=True, per_sample=True)
    evil = "<script>alert(1)</script>"
    rec = json.loads((d / "results.json").read_text())
    rec["attack"] = evil
    rec["seed"] = evil
    rec["config"]["options"]["note"] = evil
    rec["config"]["target_meta"]["arch"] = evil
    rec["versions"]["jax"] = evil
    rec["metrics"]["per_sample"]["private"] = evil
    rec["metrics"]["per_class"]["0"][evil] = evil
    rec["metrics"]["per_class"][evil] = {"top1": 0.5}
    (d / "results.json").write_text(json.dumps(rec))
    page = write_report(d).read_text()
    assert "<script" not in page
    escaped = "&lt;script&gt;alert(1)&lt;/script&gt;"
    assert page.count(escaped) >= 9, page.count(escaped)  # title, h1, seed, ..., table
    assert f"<td>class {escaped}</td>" in page and f"<b>{escaped}</b> on digits" in page
    assert "&amp;lt;" not in page and "&amp;" not in page  # nothing escaped twice
    assert_self_contained(page)
    for src in re.findall(r'src="([^"]*)"', page):
        assert re.fullmatch(r"data:image/png;base64,[A-Za-z0-9+/]+=*", src)
