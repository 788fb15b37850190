"""MI-Face on MNIST: a CNN target, an evaluation classifier of another architecture.

    JAXINV_DATA_DIR=../shared/data python experiments/main.py \
        experiments/configs/mi_face_mnist.py

Expected (measured, see README): evaluator top-1 on reconstructions well above the
random initialisations. ``:smoke`` runs a few steps for tests.
"""

import ml_collections


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    smoke = variant == "smoke"
    if variant not in ("", "smoke"):
        raise ValueError(f"variant must be '' or smoke, got {variant!r}")
    cfg = ml_collections.ConfigDict()
    cfg.dataset = "mnist"
    cfg.target_arch = "cnn"
    cfg.eval_arch = "resnet"
    cfg.attack = "mi-face"
    cfg.workdir = "runs/mnist"
    cfg.seed = 0
    cfg.chains = 2 if smoke else 64
    cfg.steps = 5 if smoke else 500
    cfg.options = ml_collections.ConfigDict(
        {"loss": "neg_log_p", "lr": 0.05, "init": "random", "init_range": (0.0, 0.25),
         "beta": 100, "gamma": 0.01, "tv": 0.5, "l2": 0.0, "process": "identity"})
    cfg.train = {"cnn": {}, "resnet": {}}
    if smoke:
        cfg.train = {a: {"epochs": 1, "limit": 2048} for a in ("cnn", "resnet")}
    return cfg
