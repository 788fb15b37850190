"""Privacy experiments of issue 13: the DP-SGD table on MNIST (epsilon 1/3/8 at delta 1e-5
vs test accuracy, each epsilon recomputed by dp-accounting called directly), LiRA against
DP-trained models (does DP lower LiRA's AUC?), and LiRA on the CIFAR-10 subset with 16
shadows trained by ``fit_many`` (timed against training them one by one).

    JAXINV_DATA_DIR=../shared/data python experiments/privacy.py \
        experiments/configs/privacy.py:all
    python experiments/privacy.py experiments/configs/privacy.py:smoke --workdir /tmp/p

Variants: ``all``, or some of ``dp_mnist``, ``lira_dp``, ``lira_cifar`` (comma-separated);
``smoke`` (digits, tiny settings, for the tests).
"""

import ml_collections

# MNIST DP table: a one-hidden-layer ReLU MLP (Abadi et al. used 1000 units on PCA-60
# inputs; 256 units on raw pixels here, for this CPU), Poisson batches of 256, clip 1
DP_MNIST = {"dataset": "mnist", "arch": "mlp", "arch_kwargs": {"hidden": [256],
                                                              "activation": "relu"},
            "epochs": 5, "batch_size": 256, "lr": 2e-3, "delta": 1e-5, "clip": 1.0,
            "epsilons": [None, 8.0, 3.0, 1.0]}
# LiRA against DP: 16 digits MLPs per setting (the membership notebook's population)
LIRA_DP = {"dataset": "digits", "model": "mlp",
           "model_kwargs": {"hidden": [256], "activation": "relu"},  # per-example grads
           "examples": 300, "models": 16,
           "targets": 4, "epochs": 60, "batch_size": 32, "lr": 1e-3,
           "epsilons": [None, 8.0, 1.0], "delta": 1e-5, "clip": 1.0}
# LiRA on the CIFAR-10 subset: 17 models (each attacked target has 16 shadows), a ReLU MLP
# (vmapped convolutions are slow on XLA:CPU)
LIRA_CIFAR = {"dataset": "cifar10", "model": "mlp",
              "model_kwargs": {"hidden": [256], "activation": "relu"},
              "examples": 4000, "models": 17,
              "targets": 4, "epochs": 40, "batch_size": 64, "lr": 1e-3,
              "compare_sequential": True}


def get_config(variant: str = "all") -> ml_collections.ConfigDict:
    parts = [p for p in variant.split(",") if p]
    known = {"dp_mnist", "lira_dp", "lira_cifar"}
    smoke = "smoke" in parts
    groups = known if "all" in parts or smoke else set(parts)
    if not groups <= known:
        raise ValueError(f"variant {variant!r}: want all, smoke or some of {sorted(known)}")
    cfg = ml_collections.ConfigDict()
    cfg.workdir = "runs/privacy" + ("_smoke" if smoke else "")
    cfg.seed = 0
    cfg.dp_mnist = dict(DP_MNIST) if "dp_mnist" in groups else None
    cfg.lira_dp = dict(LIRA_DP) if "lira_dp" in groups else None
    cfg.lira_cifar = dict(LIRA_CIFAR) if "lira_cifar" in groups else None
    if smoke:
        cfg.dp_mnist = {**DP_MNIST, "dataset": "digits", "arch_kwargs": {"hidden": [32]},
                        "epochs": 1, "batch_size": 64, "epsilons": [None, 8.0]}
        small = {"examples": 60, "models": 4, "targets": 1, "epochs": 1, "batch_size": 20}
        cfg.lira_dp = {**LIRA_DP, **small, "epsilons": [None, 8.0]}
        cfg.lira_cifar = {**LIRA_CIFAR, **small, "dataset": "digits",
                          "model_kwargs": {"hidden": [32]}}
    return cfg
