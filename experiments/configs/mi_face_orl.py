"""MI-Face on AT&T/ORL faces (the paper's setting): 40 identities, 112x92 grey.

Targets: softmax regression and an MLP (variants ``softmax``, ``mlp``), trained on
image_index 1..7; evaluation classifier: a CNN. ``paper`` is the paper's exact setting
(cost 1 - p, x0 = 0, so every chain is the same: one per class). Command:

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
    cfg.target_arch = "softmax" if variant in ("smoke", "paper") else variant
    if cfg.target_arch not in ("softmax", "mlp"):
        raise ValueError(f"variant must be softmax, mlp, paper or smoke, got {variant!r}")
    cfg.eval_arch = "cnn"
    cfg.attack = "mi-face"
    cfg.workdir = "runs/orl_paper" if variant == "paper" else "runs/orl"
    cfg.models_dir = "runs/orl"  # targets and evaluator shared by the variants
    cfg.seed = 0
    # the 3000-unit MLP costs ~0.2 GFLOP per chain-step: fewer chains keep it to minutes
    cfg.chains = {"smoke": 2, "paper": 1, "mlp": 4}.get(variant, 16)
    cfg.steps = 5 if smoke else 1000
    # The paper's 1 - p cost has vanishing gradients once p_y is small, and an
    # evaluation CNN rejects the paper's dark x0 = 0 images; -log p from near-grey
    # random starts (distinct chains) plus a TV prior is what the evaluator recognises.
    cfg.options = ml_collections.ConfigDict(
        {"loss": "neg_log_p", "lr": 0.1, "init": "random", "init_range": (0.49, 0.51),
         "beta": 100, "gamma": 0.01, "tv": 0.1, "l2": 0.0, "process": "identity"})
    if variant == "paper":
        cfg.options.update(loss="one_minus_p", init="zero", tv=0.0)
    cfg.train = {"softmax": {}, "mlp": {}, "cnn": {}}
    if smoke:
        cfg.train = {a: {"epochs": 1} for a in ("softmax", "cnn")}
    return cfg
