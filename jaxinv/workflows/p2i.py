"""P2I end to end: one-time queries, encoder training, aligned ensemble attack, judging.

The library function behind ``jaxinv p2i``. It writes the same run directory as
``jaxinv attack`` (:mod:`jaxinv.workflows.invert`), with the same metric keys where the
meaning is the same (``attack_acc_top1``/``top5`` under the evaluation classifier,
``init_acc_top1``/``top5`` of the generator's random samples as the baseline,
``target_confidence`` of the undefended target, ``queries_total``), so ``jaxinv evaluate``
and ``jaxinv report`` read it and its row sits beside the other attacks'. P2I's queries
are all made once, before the attack: ``queries_total = n_samples + |public|``, and
``queries_attack = 0``.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxinv import defenses, oracles
from jaxinv.attacks import p2i as _p2i
from jaxinv.evaluation import results
from jaxinv.models import apply_logits
from jaxinv.models.gan import decoder


def _load(kind: str, path: str | Path, role: str):
    from jaxinv.training import load_classifier
    from jaxinv.training.gan import load_gan

    if path is None:
        raise ValueError(f"p2i: give the {role}'s work directory")
    try:
        return load_gan(path) if kind == "gan" else load_classifier(path)
    except FileNotFoundError as e:
        raise FileNotFoundError(f"{role}: {e}") from e


def _file_digest(path: Path) -> str:
    return hashlib.sha1(path.read_bytes()).hexdigest() if path.exists() else ""


def _check_dirs(dirs: dict) -> None:
    """The embedding network is neither the evaluation model nor the target."""
    for role, d in dirs.items():
        if d is None:
            raise ValueError(f"p2i: give the {role} model's work directory")
    where = {r: Path(d).resolve() for r, d in dirs.items()}
    if where["embed"] == where["eval"]:
        raise ValueError("embedding network and evaluation model are the same directory "
                         f"({where['eval']}): the ID loss must use a public-data network, "
                         "never the evaluation classifier")
    if where["embed"] == where["target"]:
        raise ValueError(f"embedding network is the target ({where['target']}): P2I is "
                         "black-box; train one on public data (`jaxinv train --split ...`)")


def _check(target, gan, embed, evaluator, dirs: dict, classes) -> np.ndarray:
    """Consistency of the four models; the attacked classes."""
    shape = [int(d) for d in target.meta["input_shape"]]
    for role, got in (("generator", gan.meta["out_shape"]),
                      ("embedding network", embed.meta["input_shape"]),
                      ("evaluation model", evaluator.meta["input_shape"])):
        if [int(d) for d in got] != shape:
            raise ValueError(f"{role} images are {list(got)} but the target takes {shape}")
    k = int(target.meta["num_classes"])
    if int(evaluator.meta["num_classes"]) != k:
        raise ValueError(f"target has {k} classes but the evaluation model has "
                         f"{evaluator.meta['num_classes']}: train both on the same classes")
    if (embed.meta.get("dataset") == target.meta.get("dataset")
            and embed.meta.get("split") == target.meta.get("split")):
        print(f"warning: the embedding network {dirs['embed']} was trained on the target's own "
              f"training split ({target.meta.get('split') or 'all of the train split'}); P2I's "
              "ID loss should use public data only", file=sys.stderr)
    y = np.arange(k) if classes is None else np.asarray([int(c) for c in classes])
    if not y.size or y.min() < 0 or y.max() >= k:
        raise ValueError(f"classes {y.tolist()} out of range for a {k}-class target")
    return y.astype(np.int32)


def collect(target: Any, gan: Any, x_public: np.ndarray, out: Path, config: dict, *,
            n_samples: int, train_per_class: int | None, defense: str, query_batch: int,
            seed: int) -> tuple[_p2i.Pairs, np.ndarray, dict]:
    """The one-time queries (or the ones saved in ``out/pairs.npz`` by an earlier run with
    the same ``config``): ``(pairs, p_public [Np, K], info)`` with ``info`` the query
    counts, the seconds they took and whether they were reused.

    Example:
        >>> from jaxinv.models.gan import random_gan
        >>> from jaxinv.training.gan import public_images
        >>> xp = public_images("digits", "sample:0.5")[:40]
        >>> cfg = {"target": "clf", "public": "sample:0.5"}
        >>> pairs, p_pub, info = collect(clf, random_gan((8, 8, 1), width=4), xp, Path("q"),
        ...                              cfg, n_samples=100, train_per_class=3, defense="",
        ...                              query_batch=64, seed=0)
        >>> info["queries"], pairs.p_syn.shape, p_pub.shape
        ({'synthetic': 100, 'public': 40, 'total': 140}, (30, 10), (40, 10))
        >>> collect(clf, random_gan((8, 8, 1), width=4), xp, Path("q"), cfg, n_samples=100,
        ...         train_per_class=3, defense="", query_batch=64, seed=0)[2]["reused"]
        True
    """
    npz, meta_path = out / "pairs.npz", out / "pairs.json"
    if meta_path.exists() and npz.exists():
        saved = json.loads(meta_path.read_text())
        diff = {k: (saved["config"].get(k), config.get(k)) for k in config
                if saved["config"].get(k) != config.get(k)}
        if diff:
            raise ValueError(f"{out} holds P2I query pairs collected with other settings "
                             f"(saved, requested): {diff}; use a new --out")
        a = np.load(npz)
        pairs = _p2i.Pairs(*(a[f] for f in _p2i.Pairs._fields))
        return pairs, a["p_public"], {**saved["info"], "reused": True}
    oracle = oracles.score(apply_logits(target.module), defenses.parse(defense or ""))
    k_gen, k_pub = jax.random.split(jax.random.key(seed))
    z_dim = int(gan.meta["z_dim"])
    tic = time.perf_counter()
    z, p_syn = jax.jit(lambda key, env: _p2i.query_generator(
        oracle, decoder(gan.generator), key, env, n_samples, z_dim, query_batch))(
        k_gen, {"target": target.variables, "G": gan.variables["G"]})
    p_pub = jax.jit(lambda key, env, xs: _p2i.query_images(oracle, key, env, xs, query_batch))(
        k_pub, target.variables, jnp.asarray(x_public))
    z, p_syn, p_pub = (np.asarray(a) for a in jax.device_get((z, p_syn, p_pub)))
    query_s = time.perf_counter() - tic
    pairs = _p2i.collect_pairs(z, p_syn, x_public, p_pub, train_per_class)
    info = {"queries": {"synthetic": len(p_syn), "public": len(p_pub),
                        "total": int(len(p_syn) + len(p_pub))},
            "query_s": round(query_s, 3), "reused": False,
            "pairs": {"synthetic": len(pairs.p_syn), "public": len(pairs.p_pub)}}
    out.mkdir(parents=True, exist_ok=True)
    results.write_npz(npz, {**pairs._asdict(), "p_public": p_pub, "p_synthetic_all": p_syn})
    results.write_json(meta_path, {"config": config, "info": info})
    return pairs, p_pub, info


def p2i(target_dir: str | Path, generator_dir: str | Path, embed_dir: str | Path,
        eval_dir: str | Path, out: str | Path, *, dataset: str, public: str,
        n_samples: int = 20_000, public_max: int | None = None,
        train_per_class: int | None = None, ensemble_n: int = _p2i.ENSEMBLE_N,
        samples: int = 8, steps: int = 2000,
        batch_size: int = 32, lr: float = 3e-3, kind: str = "conv", width: int = 16,
        latent_weight: float = 0.1, image_weight: float = 1.0, id_weight: float = 0.1,
        delta: float = _p2i.DELTA, threshold: float = _p2i.THRESHOLD,
        classes: list[int] | None = None, defense: str = "", query_batch: int = 1024,
        seed: int = 0, progress: bool = True, data_dir: str | Path | None = None
        ) -> dict[str, Any]:
    """Run P2I against the target in ``target_dir`` with the GAN prior in ``generator_dir``,
    the public-data embedding network in ``embed_dir`` (ID loss) and the evaluation
    classifier in ``eval_dir``; write ``out/results.json``, ``out/reconstructions.npz``
    (``x [classes, samples, H, W, C]``, ``y``, ``x_init``, ``z``, the ensembles' public
    indices and predictions) and ``out/grid.png``.

    Stages: the one-time queries (``n_samples`` generator samples and every public image of
    ``dataset`` under split ``public`` (a ``seed``-ed random ``public_max`` of them if
    given), through the target behind the output ``defense``;
    saved in ``out/pairs.npz``), the encoder (:func:`jaxinv.training.encoder.train_encoder`,
    ``steps`` steps, checkpoints in ``out/encoder``), the aligned ensemble attack
    (:func:`jaxinv.attacks.p2i.p2i_attack`; ``samples`` images per class, index 0 the full
    ensemble of ``ensemble_n`` predictions). ``train_per_class``: training pairs kept per
    class (``None``: :func:`jaxinv.attacks.p2i.default_per_class`). Re-running with the
    same arguments reuses the saved pairs and resumes the encoder; other query settings
    raise ``ValueError``.

    Example:
        >>> from jaxinv.training import fit
        >>> from jaxinv.training.gan import public_images, train_gan
        >>> _ = train_gan(public_images("digits", "sample:0.5"), "gan", steps=2, width=4,
        ...               progress=False)
        >>> for name, arch, split in (("target", "softmax", "sample:0.5"),
        ...                           ("embed", "softmax", "classes:5-9"),
        ...                           ("eval", "mlp", "sample:0.5")):
        ...     _ = fit("digits", arch, name, epochs=1, split=split, progress=False)
        >>> rec = p2i("target", "gan", "embed", "eval", "run", dataset="digits",
        ...           public="sample:0.5", n_samples=200, steps=2, width=4, samples=2,
        ...           progress=False)
        >>> m = rec["metrics"]
        >>> n_public = len(public_images("digits", "sample:0.5"))
        >>> m["queries_total"] == 200 + n_public, m["queries_attack"]
        (True, 0)
        >>> np.load("run/reconstructions.npz")["x"].shape
        (10, 2, 8, 8, 1)
    """
    from jaxinv.training.encoder import train_encoder
    from jaxinv.training.gan import public_images

    wall = time.perf_counter()
    out = Path(out)
    if min(n_samples, ensemble_n, samples, steps, query_batch) < 1:
        raise ValueError(f"p2i: n_samples, ensemble_n, samples, steps and query_batch must be "
                         f">= 1, got {n_samples}, {ensemble_n}, {samples}, {steps}, "
                         f"{query_batch}")
    if train_per_class is not None and train_per_class < 1:
        raise ValueError(f"p2i: train_per_class must be >= 1 or None, got {train_per_class}")
    dirs = {"target": target_dir, "embed": embed_dir, "eval": eval_dir}
    _check_dirs(dirs)
    target = _load("clf", target_dir, "target model")
    embed = _load("clf", embed_dir, "embedding network")
    evaluator = _load("clf", eval_dir, "evaluation model")
    gan = _load("gan", generator_dir, "generator")
    y = _check(target, gan, embed, evaluator, dirs, classes)
    defenses.parse(defense or "")  # a bad spec fails before any work
    x_public = public_images(dataset, public, data_dir)
    if public_max is not None and public_max < len(x_public):  # fewer one-time queries
        pick = np.random.default_rng(seed).choice(len(x_public), public_max, replace=False)
        x_public = x_public[np.sort(pick)]
    if list(x_public.shape[1:]) != [int(d) for d in target.meta["input_shape"]]:
        raise ValueError(f"public images of {dataset} are {list(x_public.shape[1:])} but the "
                         f"target takes {target.meta['input_shape']}")
    if len(x_public) < ensemble_n:
        raise ValueError(f"p2i: ensemble_n {ensemble_n} exceeds the {len(x_public)} public "
                         "images")
    if (gan.meta.get("dataset"), gan.meta.get("public")) not in ((None, None),
                                                                 (dataset, public)):
        print(f"warning: the generator was trained on {gan.meta.get('dataset')} "
              f"({gan.meta.get('public')}), the public pairs come from {dataset} ({public})",
              file=sys.stderr)
    config = {"target": str(Path(target_dir).absolute()),
              "target_digest": _file_digest(Path(target_dir) / "model.json"),
              "generator": str(Path(generator_dir).absolute()),
              "generator_digest": _file_digest(Path(generator_dir) / "gan.json"),
              "dataset": dataset, "public": public, "n_public": len(x_public),
              "public_max": public_max,
              "n_samples": n_samples, "train_per_class": train_per_class, "defense": defense,
              "query_batch": query_batch, "seed": seed}
    pairs, p_public, info = collect(target, gan, x_public, out, config, n_samples=n_samples,
                                    train_per_class=train_per_class, defense=defense,
                                    query_batch=query_batch, seed=seed)

    tic = time.perf_counter()
    enc_meta = {"target": config["target"], "generator": config["generator"],
                "embed_model": str(Path(embed_dir).absolute())}
    encoder = train_encoder(pairs, gan, embed, out / "encoder", steps=steps,
                            batch_size=batch_size, lr=lr, kind=kind, width=width,
                            latent_weight=latent_weight, image_weight=image_weight,
                            id_weight=id_weight, seed=seed, progress=progress, meta=enc_meta,
                            log_every=max(1, min(50, steps // 20)))
    train_s = time.perf_counter() - tic

    tic = time.perf_counter()
    x, z = _p2i.p2i_attack(encoder, gan, p_public, y, ensemble_n=ensemble_n, samples=samples,
                           delta=delta, threshold=threshold, seed=seed)
    attack_s = time.perf_counter() - tic
    z0 = jax.random.normal(jax.random.key(seed + 1), (len(y) * samples, int(gan.meta["z_dim"])))
    x_init = np.asarray(jax.jit(gan.generator.apply)(gan.variables["G"], z0)).reshape(x.shape)

    tic = time.perf_counter()
    judged, init = results.judge(evaluator, x, y), results.judge(evaluator, x_init, y)
    conf, conf_init = results.judge(target, x, y), results.judge(target, x_init, y)
    per_class = {c: {"top1": v["top1"], "top5": v["top5"],
                     "target_confidence": conf["per_class"][c]["confidence"],
                     "ensemble_top1": float(judged["hits"][i, 0])}
                 for i, (c, v) in enumerate(judged["per_class"].items())}
    failed = ~np.isfinite(x).reshape(*x.shape[:2], -1).all(-1)
    top = np.asarray(_p2i.select_top(p_public, ensemble_n))[y]  # [T, n] public indices
    curve = encoder.meta["curve"]
    metrics = {
        "attack_acc_top1": judged["top1"], "attack_acc_top5": judged["top5"],
        "attack_acc_top1_std_over_classes": judged["top1_std_over_classes"],
        "attack_acc_top1_ensemble": float(judged["hits"][:, 0].mean()),
        "init_acc_top1": init["top1"], "init_acc_top5": init["top5"],
        "target_confidence": conf["confidence"], "init_target_confidence": conf_init["confidence"],
        "chains_failed": int(failed.sum()),
        "queries_total": info["queries"]["total"],
        "queries_synthetic": info["queries"]["synthetic"],
        "queries_public": info["queries"]["public"], "queries_attack": 0,
        "queries_reused": info["reused"],
        "ensemble_confidence": float(np.mean(np.take_along_axis(
            p_public[top], y[:, None, None], -1))),
        "pairs": {**info["pairs"], "train_per_class": train_per_class,
                  "per_class_synthetic": info["pairs"]["synthetic"] // len(p_public[0]),
                  "per_class_public": info["pairs"]["public"] // len(p_public[0])},
        "encoder": {"steps": encoder.meta["steps"], "last_metrics": encoder.meta["last_metrics"],
                    "first_metrics": {m: v[0] for m, v in curve.items() if m != "step" and v},
                    "curve": curve},
        "per_class": per_class}
    timing = {"wall_s": round(time.perf_counter() - wall, 3),
              "query_s": 0.0 if info["reused"] else info["query_s"],
              "query_s_first_run": info["query_s"],
              "encoder_train_s": round(train_s, 3),
              "encoder_train_s_total": encoder.meta["train_seconds_total"],
              "attack_s": round(attack_s, 3), "judge_s": round(time.perf_counter() - tic, 3)}
    options = {"n_samples": n_samples, "public_max": public_max,
               "train_per_class": train_per_class,
               "ensemble_n": ensemble_n, "samples": samples, "batch_size": batch_size, "lr": lr,
               "kind": kind, "width": width, "latent_weight": latent_weight,
               "image_weight": image_weight, "id_weight": id_weight, "delta": delta,
               "threshold": threshold, "defense": defense, "query_batch": query_batch}
    record = {"attack": "p2i",
              "config": {"target": config["target"], "eval_model": str(eval_dir),
                         "generator": config["generator"],
                         "embed_model": enc_meta["embed_model"], "dataset": dataset,
                         "public": public, "chains": samples, "steps": steps,
                         "classes": y.tolist(), "options": options,
                         "target_meta": target.meta, "eval_meta": evaluator.meta,
                         "generator_meta": {k: v for k, v in gan.meta.items()
                                            if k != "versions"},
                         "embed_meta": embed.meta},
              "seed": seed, "versions": results.versions(), "metrics": metrics,
              "timing": timing}
    arrays = {"x": x, "y": y, "x_init": x_init, "z": z, "failed": failed,
              "ensemble_index": top, "ensemble_p": p_public[top]}
    if jax.process_index() == 0:
        results.write_run(out, record, arrays)
    return record


__all__ = ["collect", "p2i"]
