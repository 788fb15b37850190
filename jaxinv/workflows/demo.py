"""The main job: train a digits target and evaluator, invert every class with MI-Face."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

TARGET_ARCH = "cnn"
EVAL_ARCH = "mlp"
# -log p from dark random starts plus a TV prior: the settings the README reports
DEMO_OPTIONS = {"loss": "neg_log_p", "lr": 0.05, "init": "random", "init_range": (0.0, 0.25),
                "tv": 0.05}
DEMO_STEPS = 300


def _model(dataset: str, arch: str, workdir: Path):
    from jaxinv.training.classifier import fit, load_classifier

    if (workdir / "model.json").exists():
        print(f"reusing {arch} in {workdir}")
        return load_classifier(workdir)
    return fit(dataset, arch, str(workdir))


def demo(out: str | Path = "runs/demo", *, chains: int = 1024, steps: int | None = None,
         seed: int = 0) -> dict[str, Any]:
    """Train (or reuse) ``out/target`` and ``out/evaluator`` on the embedded digits,
    run MI-Face with ``chains`` chains (rounded up to a multiple of 10) over the 10
    classes, write ``out/``.

    Example:
        >>> # trains two models (~30 s): tests/test_invert.py::test_demo_runs runs it
        >>> rec = demo("runs/demo")  # doctest: +SKIP
        >>> rec["metrics"]["attack_acc_top1"] > rec["metrics"]["init_acc_top1"]  # doctest: +SKIP
        True
    """
    from jaxinv.workflows.invert import invert

    out = Path(out)
    tic = time.perf_counter()
    target = _model("digits", TARGET_ARCH, out / "target")
    evaluator = _model("digits", EVAL_ARCH, out / "evaluator")
    print(f"target {TARGET_ARCH}: test acc {target.meta['test_accuracy']:.3f}; "
          f"evaluator {EVAL_ARCH}: test acc {evaluator.meta['test_accuracy']:.3f}")
    k = int(target.meta["num_classes"])
    per_class = -(-chains // k)  # at least `chains` chains in all
    rec = invert("mi-face", out / "target", out / "evaluator", out / "mi-face",
                 chains=per_class, steps=steps or DEMO_STEPS, seed=seed, options=DEMO_OPTIONS)
    m = rec["metrics"]
    print(f"\nMI-Face on digits ({per_class * k} chains, {m['steps_run']} steps, "
          f"{time.perf_counter() - tic:.0f} s in all)")
    print(f"  evaluator top-1 on reconstructions: {m['attack_acc_top1']:.3f} "
          f"(top-5 {m['attack_acc_top5']:.3f})")
    print(f"  evaluator top-1 on the random initialisations: {m['init_acc_top1']:.3f}")
    print(f"  target confidence on reconstructions: {m['target_confidence']:.3f}")
    print(f"results: {out / 'mi-face' / 'results.json'}; grid: {out / 'mi-face' / 'grid.png'}")
    return rec
