"""Gradient leakage: DLG and iDLG on DLG's sigmoid LeNet (MNIST, CIFAR-10 subset), Inverting
Gradients on a small ResNet at batch 1/4/8, and defenses (noise, pruning, DP clipping, larger
batches, FedAvg local steps) vs reconstruction PSNR and the accuracy of a model trained
under the same defense.

    JAXINV_DATA_DIR=../shared/data python experiments/gradient_leakage.py \
        experiments/configs/gradient_leakage.py:all
    python experiments/gradient_leakage.py experiments/configs/gradient_leakage.py:smoke \
        --workdir /tmp/gl

Variants: ``all`` (every run), ``main``, ``ig``, ``defenses``, ``dlg_cifar``
(comma-separated), ``smoke``
(digits, tiny settings, for the tests).
"""

import ml_collections

LENET = {"model": "dlg-lenet"}
MNIST_LS = {"dataset": "mnist", "steps": 300, "options": {"linesearch": True}}
# 3600 iterations, within DLG's budget (300 torch L-BFGS steps of up to 20 iterations each);
# an Armijo backtracking line search (about one gradient evaluation per step) keeps the
# chains that diverge with DLG's fixed step (10% of 256 at 2000 steps) on track
CIFAR = {"dataset": "cifar10", "steps": 3600,
         "options": {"init_scale": 0.1, "linesearch": "backtracking"}}
MAIN = {
    "dlg_mnist": {"attack": "dlg", **LENET, **MNIST_LS, "victims": 256},
    "idlg_mnist": {"attack": "idlg", **LENET, **MNIST_LS, "victims": 256},
    "idlg_cifar": {"attack": "idlg", **LENET, **CIFAR, "victims": 256},
}
# DLG (soft labels optimised too) on CIFAR: iDLG's CIFAR setting with DLG's whole budget (300
# torch L-BFGS steps of up to 20 iterations), a group of its own (slow: 84.8% of the 256
# victims exact at 4740 iterations; iDLG: 91.4% at 3600). Its own gradient-matching
# loss tells the attacker which chains are stuck (at 4740: 230 below 3e-4, the other 26 above
# 280): victims above 1e-3 get a second attempt.
DLG_CIFAR = {"dlg_cifar": {"attack": "dlg", **LENET, **CIFAR, "steps": 6000, "victims": 256,
                           "retry_above": 1e-3}}
IG = {f"ig_cifar_b{b}": {"attack": "ig", "model": "resnet", "dataset": "cifar10",
                         "batch": b, "victims": v, "steps": 1000}
      for b, v in ((1, 32), (4, 8), (8, 4))}
# client-side defenses, attacked by iDLG on MNIST (16 victims); "train" is the utility run
DEFENSES = {"none": {}, "noise:1e-3": {}, "noise:1e-2": {}, "prune:0.9": {},
            "batch:4": {"batch": 4}, "local:5": {"local_steps": 5, "local_lr": 0.1},
            "dp:1,0.1": {}, "noise:1e-1": {}, "prune:0.5": {}, "prune:0.99": {}}


def get_config(variant: str = "all") -> ml_collections.ConfigDict:
    parts = [p for p in variant.split(",") if p]
    smoke = "smoke" in parts
    known = {"main", "ig", "defenses", "dlg_cifar"}
    groups = known if "all" in parts or smoke else set(parts)
    if not groups <= known:
        raise ValueError(f"variant {variant!r}: want all, smoke or some of {sorted(known)}")
    cfg = ml_collections.ConfigDict()
    cfg.workdir = "runs/gradient_leakage" + ("_smoke" if smoke else "")
    cfg.seed = 0
    runs = {**(MAIN if "main" in groups else {}), **(IG if "ig" in groups else {}),
            **(DLG_CIFAR if "dlg_cifar" in groups else {})}
    defenses = {k.replace(".", "_"): {"name": k, **v} for k, v in DEFENSES.items()} \
        if "defenses" in groups else {}
    cfg.defense_attack = {"attack": "idlg", **LENET, **MNIST_LS, "steps": 200, "victims": 16}
    # utility: the same LeNet trained on MNIST with defended gradients (Adam, batch 64)
    cfg.train = {"dataset": "mnist", "steps": 1000, "batch": 64, "lr": 1e-3}
    if smoke:
        # the shapes of tests/test_gradient_leakage.py and the notebook: compiled once
        runs = {"idlg_digits": {"attack": "idlg", **LENET, "dataset": "digits",
                                "steps": 40, "victims": 8, "options": {}},
                "ig_digits_b2": {"attack": "ig", "model": "resnet", "dataset": "digits",
                                 "batch": 2, "victims": 2, "steps": 20}}
        defenses = {"none": {"name": "none"}, "noise:1e-1": {"name": "noise:1e-1"}}
        cfg.defense_attack = {"attack": "idlg", **LENET, "dataset": "digits", "steps": 40,
                              "victims": 8, "options": {}}
        cfg.train = {"dataset": "digits", "steps": 50, "batch": 32, "lr": 1e-2}
    cfg.runs, cfg.defenses = runs, defenses
    cfg.run_order = list(runs)  # ConfigDict iterates its keys sorted
    cfg.defense_order = list(defenses)
    return cfg
