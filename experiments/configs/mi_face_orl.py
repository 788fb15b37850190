"""MI-Face on AT&T/ORL faces (the paper's setting): 40 identities, 112x92 grey.

Targets: softmax regression and an MLP (variants ``softmax``, ``mlp``), trained on
image_index 1..7; evaluation classifier: a CNN. Command:

    JAXINV_DATA_DIR=../shared/data python experiments/main.py \
        experiments/configs/mi_face_orl.py:softmax

Expected (measured, see README): evaluator top-1 well above chance (1/40).
``:smoke`` runs a few steps on 2 classes for tests.
"""

import ml_collections


def get_config(variant: str = "softmax") -> ml_collections.ConfigDict:
    variant = variant or "softmax"
    smoke = variant == "smoke"
    cfg = ml_collections.ConfigDict()
    cfg.dataset = "orl_faces"
    cfg.target_arch = "softmax" if smoke else variant
    if cfg.target_arch not in ("softmax", "mlp"):
        raise ValueError(f"variant must be softmax, mlp or smoke, got {variant!r}")
    cfg.eval_arch = "cnn"
    cfg.attack = "mi-face"
    cfg.workdir = "runs/orl"
    cfg.seed = 0
    cfg.chains = 2 if smoke else 16
    cfg.steps = 5 if smoke else 1000
    # paper: lr 0.1, 1 - p cost, zero init; random init gives chains distinct starts
    cfg.options = ml_collections.ConfigDict(
        {"loss": "one_minus_p", "lr": 0.1, "init": "random", "beta": 100, "gamma": 0.01,
         "tv": 0.0, "l2": 0.0, "process": "identity"})
    cfg.train = {"softmax": {}, "mlp": {}, "cnn": {}}
    if smoke:
        cfg.train = {a: {"epochs": 1} for a in ("softmax", "cnn")}
    return cfg
