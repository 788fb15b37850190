"""The two-stage privacy breach: who is in the training set (membership inference), and whose
image can be reconstructed (model inversion)? Per training sample of one model, its
membership score beside its inversion leakage score.

1. ``jaxinv membership --out M ...`` trains the models and scores every example.
2. :func:`export_target` (``jaxinv two-stage --membership M --export T``) saves model
   ``target`` of that run as a classifier directory ``T`` (read by every attack) with
   ``T/members.npz``: its training examples as ``x_train``/``y_train``, the test split as
   ``x_test``/``y_test``.
3. Attack ``T`` and evaluate the run against its members:
   ``jaxinv evaluate --run R --eval-model E --private T/members.npz:train``.
4. :func:`two_stage` (``jaxinv two-stage --membership M --run R``) joins the two per
   member: ``two_stage.json`` (the rank correlation, the members flagged by each stage and
   by both), ``two_stage.npz`` (per-member arrays) and ``two_stage.png`` (a scatter plot).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from jaxinv import data
from jaxinv.evaluation import results
from jaxinv.membership import lira as L


def _read(membership_dir: Path) -> dict:
    path = membership_dir / "results.json"
    if not path.exists():
        raise FileNotFoundError(f"{path}: missing; run `jaxinv membership --out "
                                f"{membership_dir}` first")
    return json.loads(path.read_text())


def export_target(membership_dir: str | Path, out: str | Path, target: int = 0) -> Path:
    """Save model ``target`` of a :func:`~jaxinv.workflows.membership.membership` run as a
    classifier directory ``out`` (``model.json``, ``variables``) plus ``out/members.npz``
    (its training examples, in population order, and the test split).

    Example:
        >>> from jaxinv.workflows.membership import membership
        >>> _ = membership("runs/mia", examples=60, models=4, epochs=1, progress=False)
        >>> from jaxinv.training import load_classifier
        >>> load_classifier(export_target("runs/mia", "runs/mia_t0")).meta["num_classes"]
        10
    """
    from jaxinv.models import Classifier, create
    from jaxinv.training.classifier import _save
    from jaxinv.training.many import fit_many, unstack
    from jaxinv.workflows.membership import population

    membership_dir, out = Path(membership_dir).absolute(), Path(out).absolute()
    c = _read(membership_dir)["config"]
    if not 0 <= target < c["models"]:
        raise ValueError(f"export_target: target must lie in [0, {c['models']}), got {target}")
    x, y = population(c["dataset"], c["examples"], c["canaries"], c["seed"])
    keep = L.keep_masks(c["models"], len(x), c["seed"])
    k = data.info(c["dataset"]).num_classes
    from jaxinv.training import defenses

    spec = c.get("defense")
    arch, arch_kwargs = defenses.arch_for(c["model"], c.get("model_kwargs", {}), spec)
    module = create(arch, k, **arch_kwargs)
    seeds = [c["seed"] * 1000 + m for m in range(c["models"])]
    # resumes at the saved last epoch: nothing is retrained
    res = fit_many(module, x, y, seeds=seeds, masks=keep, workdir=membership_dir / "models",
                   progress=False, **{n: c[n] for n in ("epochs", "batch_size", "lr",
                                                        "weight_decay")}, dp=c.get("dp"),
                   defense=spec)
    xt, yt = data.load(c["dataset"], "test")
    meta = {"arch": arch, "arch_kwargs": arch_kwargs, "defense": spec,
            "dataset": c["dataset"], "num_classes": k,
            "input_shape": list(x.shape[1:]), "membership_run": str(membership_dir),
            "membership_target": target, "members": int(keep[target].sum())}
    out.mkdir(parents=True, exist_ok=True)
    results.write_npz(out / "members.npz", {"x_train": x[keep[target]],
                                            "y_train": y[keep[target]],
                                            "member_index": np.flatnonzero(keep[target]),
                                            "x_test": xt, "y_test": yt})
    _save(out, Classifier(module, unstack(res.variables, target), meta),
          (x[keep[target]], y[keep[target]]), (xt, yt))
    return out


def two_stage(membership_dir: str | Path, run: str | Path, *, attack: str = "rmia",
              target: int = 0, fpr: float = 0.01, out: str | Path | None = None
              ) -> dict[str, Any]:
    """Join, per member of model ``target``, the membership score of ``attack`` (from
    ``membership_dir/scores.npz``) and the leakage score ``ddcs_proxy`` of an evaluated
    inversion run ``run`` (``run/per_sample.npz``, evaluated against
    ``members.npz:train`` of :func:`export_target`). A member is *flagged* by membership
    inference when its score exceeds the ``1 - fpr`` quantile of the non-members' scores,
    and *exposed* by inversion when its leakage score is above 0. Writes
    ``two_stage.json``, ``two_stage.npz`` and ``two_stage.png`` into ``out`` (default
    ``run``).

    Example:
        A membership run, and a stand-in for an evaluated inversion run that exposes the
        first three members:

        >>> from jaxinv.workflows.membership import membership
        >>> _ = membership("runs/mia", examples=60, models=4, epochs=1, progress=False)
        >>> n = int(np.load("runs/mia/scores.npz")["keep"][0].sum())
        >>> Path("runs/inv").mkdir()
        >>> np.savez("runs/inv/per_sample.npz", score=np.r_[[0.5] * 3, [0.0] * (n - 3)],
        ...          private_index=np.arange(n))
        >>> rec = two_stage("runs/mia", "runs/inv")
        >>> rec["members_evaluated"] == n, rec["exposed"]
        (True, 3)
    """
    from scipy.stats import spearmanr

    membership_dir, run = Path(membership_dir), Path(run)
    out = Path(out) if out is not None else run
    scores = np.load(membership_dir / "scores.npz")
    if f"score_{attack}" not in scores:
        known = sorted(k[6:] for k in scores if k.startswith("score_"))
        raise ValueError(f"two_stage: no attack {attack!r} in {membership_dir}; known: {known}")
    s, keep = scores[f"score_{attack}"], scores["keep"]
    if not 0 <= target < len(s):
        raise ValueError(f"two_stage: target {target} was not attacked (the run attacked "
                         f"{len(s)} models)")
    if not (run / "per_sample.npz").exists():
        raise FileNotFoundError(f"{run / 'per_sample.npz'}: missing; run `jaxinv evaluate "
                                f"--run {run} --private T/members.npz:train ...` first")
    ps = np.load(run / "per_sample.npz")
    members = np.flatnonzero(keep[target])
    if len(ps["private_index"]) and ps["private_index"].max() >= len(members):
        raise ValueError(f"two_stage: {run} was evaluated on another private set than the "
                         f"{len(members)} members of model {target}")
    idx = members[ps["private_index"]]  # population index of each evaluated member
    m_score, leak = s[target][idx], ps["score"]
    threshold = float(np.quantile(s[target][~keep[target]], 1 - fpr))
    flagged, exposed = m_score > threshold, leak > 0
    rho = spearmanr(m_score, leak).statistic if np.ptp(leak) > 0 and np.ptp(m_score) > 0 \
        else None
    both = idx[flagged & exposed]
    order = np.argsort(-(leak + m_score * 1e-9))
    record = {"membership_run": str(membership_dir), "inversion_run": str(run),
              "attack": attack, "target": target, "fpr": fpr, "threshold": threshold,
              "members_evaluated": len(idx), "flagged": int(flagged.sum()),
              "exposed": int(exposed.sum()), "both": len(both),
              "both_index": both.tolist(), "spearman": rho,
              "membership_score_exposed_mean": float(m_score[exposed].mean())
              if exposed.any() else None,
              "membership_score_resilient_mean": float(m_score[~exposed].mean())
              if (~exposed).any() else None,
              "top_exposed": [{"index": int(idx[i]), "leakage": float(leak[i]),
                               "membership": float(m_score[i]), "flagged": bool(flagged[i])}
                              for i in order[:16]]}
    out.mkdir(parents=True, exist_ok=True)
    results.write_npz(out / "two_stage.npz", {"index": idx, "membership": m_score,
                                              "leakage": leak, "flagged": flagged,
                                              "exposed": exposed})
    _plot(out / "two_stage.png", m_score, leak, threshold, attack)
    results.write_json(out / "two_stage.json", record)
    return record


def _plot(path: Path, m_score: np.ndarray, leak: np.ndarray, threshold: float,
          attack: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.5, 3.5))
    ax.scatter(m_score, leak, s=6, alpha=0.6)
    ax.axvline(threshold, color="k", ls="--", lw=0.8, label="membership threshold")
    ax.set(xlabel=f"membership score ({attack})", ylabel="leakage score (ddcs_proxy)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


__all__ = ["export_target", "two_stage"]
