"""Add class-level and sample-level leakage metrics to an attack run directory.

The library function behind ``jaxinv evaluate --run D --eval-model W2 --private mnist:train``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from jaxinv import data, metrics
from jaxinv.evaluation import results

TOP_EXPOSED = 16


def _private(spec: str, data_dir: str | Path | None, protocol: str | None = None,
             limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    name, sep, split = spec.rpartition(":")
    if not sep or not name:
        raise ValueError(f"--private wants DATASET:SPLIT (e.g. mnist:train), got {spec!r}")
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    x, y = data.load(name, split, data_dir=data_dir)
    x, y = tuple(data.subset(x, y, protocol, "private")) if protocol else (x, y)
    return x[:limit], y[:limit]  # as fit(limit=...) trains on the first samples


def evaluate(run: str | Path, eval_dir: str | Path, private: str, *, k: int = 5,
             correct_only: bool = False, inception: str | Path | None = None,
             inception_max: int = 2000, seed: int = 0, data_dir: str | Path | None = None,
             progress: bool = True, split: str | None = None, limit: int | None = None
             ) -> dict[str, Any]:
    """Compute leakage metrics of ``run``'s reconstructions against the private set.

    Features are the evaluation classifier's penultimate activations. Adds to
    ``run/results.json`` ``metrics``: ``knn_dist`` (mean squared feature distance to the
    nearest same-class private sample; only correctly classified reconstructions if
    ``correct_only``), ``feature_dist`` (to the class centroid), ``fid_eval`` (FID on
    evaluation features), ``precision``/``recall``/``density``/``coverage`` (PRDC, k=``k``,
    per class then averaged), ``psnr``/``ssim`` (each reconstruction against its KNN
    private image), ``attack_acc_top1_std_over_chains``, ``per_class_eval`` and
    ``fid_inception`` when ``inception`` names Inception-v3 weights (see
    :mod:`jaxinv.models.inception`; at most ``inception_max`` images of each set, a
    ``seed``-ed random subset, since 299x299 features are costly on CPU), and
    ``per_sample`` (``ddcs_proxy`` summary: ``resilient_fraction``, ``score_mean``,
    ``most_exposed`` private indices, mean distance of each private sample to its nearest
    same-class reconstruction in feature and in pixel space). ``split`` restricts the
    private set to the private side of a protocol (:func:`jaxinv.data.subset`, e.g.
    ``"sample:0.5"``) and ``limit`` to its first ``limit`` samples (a target trained with
    ``fit(limit=...)``); ``diversity`` is the mean pairwise feature distance between
    reconstructions of the same class. Writes ``run/per_sample.npz``
    (per-sample ``score``, ``dist`` (features), ``dist_pixel``, ``hits``, ``tau``, and the
    most exposed images beside their nearest reconstructions).

    Example:
        A quick evaluator, and a "run" whose reconstructions are 8 real test images of each
        of classes 0 and 1 (an attack's run directory has the same files):

        >>> from jaxinv.evaluation.results import write_run
        >>> from jaxinv.training import fit
        >>> _ = fit("digits", "softmax", "runs/evaluator", epochs=1, limit=64, progress=False)
        >>> xt, yt = data.load("digits", "test")
        >>> rec = np.stack([xt[yt == c][:8] for c in (0, 1)])  # [classes, chains, H, W, C]
        >>> _ = write_run("runs/demo", {"metrics": {}}, {"x": rec, "y": np.array([0, 1])})
        >>> record = evaluate("runs/demo", "runs/evaluator", "digits:train", progress=False)
        >>> m = record["metrics"]
        >>> [k for k in ("knn_dist", "fid_eval", "precision", "psnr", "per_sample") if k in m]
        ['knn_dist', 'fid_eval', 'precision', 'psnr', 'per_sample']
        >>> 0 <= m["per_sample"]["resilient_fraction"] <= 1
        True
        >>> sorted(np.load("runs/demo/per_sample.npz"))[:4]
        ['dist', 'dist_pixel', 'exposed_dist', 'exposed_index']
    """
    from jaxinv.training.classifier import load_classifier

    incep = None
    if inception is not None:  # fail on a missing weights file before any work
        from jaxinv.models.inception import load_inception

        incep = load_inception(inception)
    run = Path(run)
    record, x, y = _load_run(run)
    evaluator = load_classifier(eval_dir)
    xp, yp, priv_index = _private_of(private, data_dir, x, y, split, limit)
    tic = time.perf_counter()
    t, n = x.shape[:2]
    xr, yr = x.reshape(t * n, *x.shape[2:]), np.repeat(y, n)
    logits, fr = evaluator.outputs(xr)
    fp = evaluator.features(xp)
    correct = np.argmax(logits, -1) == yr
    kw = {"progress": progress}
    knn_d2, match = metrics.nearest(fr, fp, query_labels=yr, ref_labels=yp, **kw)
    pr = _prdc(fp, fr, yp, yr, k, kw)
    scores = metrics.ddcs_proxy(fp, yp, fr, yr, k=k, **kw)
    pix_d2, _ = metrics.nearest(xp, xr, query_labels=yp, ref_labels=yr, desc="pixels", **kw)
    summary = metrics.summarize(scores, yp, TOP_EXPOSED)
    sel_all = correct if correct_only else np.ones_like(correct)
    per_class = {str(int(c)): {
        "knn_dist": _mean(knn_d2[(yr == c) & sel_all]),
        "feature_dist": metrics.feature_dist(fr[yr == c], yr[yr == c], fp[yp == c], yp[yp == c]),
        **pr["per_class"].get(str(int(c)), {}), **summary["per_class"].get(str(int(c)), {})}
        for c in y}
    del summary["per_class"]
    exposed = np.asarray(summary["most_exposed"], np.int64)
    summary.update(most_exposed=[int(priv_index[i]) for i in exposed],
                   pixel_dist_mean=float(np.mean(np.sqrt(pix_d2))),
                   feature_dist_mean=float(np.mean(scores.dist)),
                   features="evaluation-classifier penultimate features", private=private,
                   definition="ddcs_proxy (SPECS 3; provisional DDCS)")
    m = record.setdefault("metrics", {})
    m.update({
        "knn_dist": _mean(knn_d2[sel_all]), "knn_dist_correct_only": correct_only,
        "feature_dist": metrics.feature_dist(fr, yr, fp, yp), "fid_eval": metrics.fid(fr, fp),
        "diversity": metrics.diversity(fr, yr),
        **{key: pr[key] for key in ("precision", "recall", "density", "coverage")},
        "prdc_k": pr["k"], **({"prdc_note": pr["note"]} if "note" in pr else {}),
        "psnr": float(np.mean(metrics.psnr(xr, xp[match]))),
        "ssim": float(np.mean(metrics.ssim(xr, xp[match]))),
        "attack_acc_top1_std_over_chains": float(correct.reshape(t, n).mean(0).std()),
        "nearest_identity_top1": _identity(xr, yr, private, data_dir, split),
        "per_class_eval": per_class, "per_sample": summary})
    if incep is not None:
        m.update(_fid_inception(incep, xr, xp, inception_max, seed))
    record.setdefault("timing", {})["evaluate_s"] = round(time.perf_counter() - tic, 2)
    record["evaluation"] = {"eval_model": str(eval_dir), "private": private, "k": k,
                            "split": split, "limit": limit,
                            "private_samples": len(xp), "reconstructions": len(xr),
                            "versions": results.versions()}
    near = scores.nearest_rec[exposed]
    arrays = {"score": scores.score, "dist": scores.dist, "dist_pixel": np.sqrt(pix_d2),
              "hits": scores.hits, "tau": scores.tau, "labels": yp, "private_index": priv_index,
              "exposed_index": priv_index[exposed], "exposed_x": xp[exposed],
              "exposed_rec": xr[near], "exposed_score": scores.score[exposed],
              "exposed_dist": scores.dist[exposed]}
    results.write_json(run / "results.json", record)
    results.write_npz(run / "per_sample.npz", arrays)
    return record


def _prdc(fp, fr, yp, yr, k: int, kw: dict) -> dict:
    """PRDC with ``k`` lowered to what the smallest class allows (a run with 4 chains per
    class gets k=3, with a note); skipped (``None`` values, a note) below 2 per class."""
    fewest = min(min(np.sum(yp == c), np.sum(yr == c)) for c in np.unique(yr))
    k_eff = min(k, int(fewest) - 1)
    if k_eff < 1:
        return {**dict.fromkeys(("precision", "recall", "density", "coverage")),
                "per_class": {}, "k": None,
                "note": f"PRDC skipped: a class has only {fewest} samples (needs 2)"}
    out = metrics.prdc(fp, fr, k_eff, real_labels=yp, fake_labels=yr, **kw)
    if k_eff < k:
        out["note"] = (f"k lowered from {k} to {k_eff}: the smallest class has {fewest} "
                       "reconstructions or private samples")
    return {**out, "k": k_eff}


def _identity(xr, yr, private: str, data_dir, split=None) -> float:
    """Non-learned check: share of reconstructions whose most correlated private training
    image (all classes searched) has their class."""
    xa, ya = _private(private, data_dir, split)
    return metrics.nearest_identity_rate(xr, yr, xa, ya)


def _mean(a: np.ndarray) -> float:
    return float(np.mean(a)) if a.size else float("nan")


def _load_run(run: Path) -> tuple[dict, np.ndarray, np.ndarray]:
    res_path, rec_path = run / "results.json", run / "reconstructions.npz"
    for p in (res_path, rec_path):
        if not p.exists():
            raise FileNotFoundError(f"{p} is missing: evaluate a directory written by "
                                    "`jaxinv attack ...` or `jaxinv demo`")
    rec = np.load(rec_path)
    return json.loads(res_path.read_text()), rec["x"], np.asarray(rec["y"])


def _private_of(private: str, data_dir, x: np.ndarray, y: np.ndarray, split=None,
                limit=None):
    """The private samples of the attacked classes, and their indices in the full set."""
    xp, yp = _private(private, data_dir, split, limit)
    if xp.shape[1:] != x.shape[2:]:
        raise ValueError(f"private set {private} has images {list(xp.shape[1:])}, the "
                         f"reconstructions {list(x.shape[2:])}")
    keep = np.isin(yp, y)
    if not keep.any():
        raise ValueError(f"private set {private} holds none of the attacked classes {y}")
    return xp[keep], yp[keep], np.flatnonzero(keep)


def _fid_inception(incep, xr, xp, inception_max: int, seed: int) -> dict:
    from jaxinv.models.inception import inception_features

    rng = np.random.default_rng(seed)
    pick = lambda a: a[np.sort(rng.permutation(len(a))[:inception_max])]
    feats = [inception_features(pick(a), incep[1], incep[0]) for a in (xr, xp)]
    return {"fid_inception": metrics.fid(*feats),
            "fid_inception_samples": [len(f) for f in feats]}


__all__ = ["evaluate"]
