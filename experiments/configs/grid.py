"""The attack x defense grid on MNIST (issue 13): GMI's protocol, private classes 0-4.

    JAXINV_DATA_DIR=../shared/data python experiments/generative.py \
        experiments/configs/generative.py:mnist          # the GAN, embedding net, evaluator
    JAXINV_DATA_DIR=../shared/data python experiments/grid.py experiments/configs/grid.py:mnist

Targets: a 784-256-5 ReLU MLP per training-time defense (5 epochs, batch 256, lr 2e-3; DP at
delta 1e-5, clip 1, as the DP table), trained on classes 0-4. The generator, P2I's embedding
CNN (both on public classes 5-9) and the ResNet evaluator are the generative experiment's.
LiRA's populations: 500 MNIST training images, 16 MLPs per defense, 4 attacked.
"""

import ml_collections

GENERATIVE = "runs/generative/mnist"


def get_config(variant: str = "mnist") -> ml_collections.ConfigDict:
    if variant != "mnist":
        raise ValueError(f"variant {variant!r}: want mnist")
    cfg = ml_collections.ConfigDict()
    cfg.out = "runs/grid/mnist"
    cfg.grid = {
        "dataset": "mnist", "split": "classes:0-4", "public": "classes:5-9",
        "arch": "mlp", "arch_kwargs": {"hidden": [256], "activation": "relu"},
        "evaluator": f"{GENERATIVE}/eval_resnet", "generator": f"{GENERATIVE}/gan",
        "embed": f"{GENERATIVE}/embed_cnn",
        "defenses": ("none", "dp:8", "dp:3", "dp:1", "distill", "mid", "bido", "negls",
                     "label", "round:1"),
        "attacks": ("mi-face", "gmi", "zo-latent", "label-only-latent", "p2i", "lira"),
        "train": {"epochs": 5, "batch_size": 256, "lr": 2e-3},
        "run": {"chains": 8, "steps": 300, "classes": [0, 1, 2, 3, 4],
                "gmi": {"steps": 400, "unroll": 1},
                "zo-latent": {"steps": 100}, "label-only-latent": {"steps": 100},
                "options": {"mi-face": {"lr": 0.05, "tv": 0.5},
                            "zo-latent": {"queries_per_step": 20},
                            "label-only-latent": {"spheres": 32},
                            "p2i": {"n_samples": 2000, "public_max": 3000,
                                    "train_per_class": 200, "steps": 300}}},
        "lira": {"examples": 500, "models": 16, "targets": 4, "epochs": 30,
                 "batch_size": 64, "lr": 1e-3},
        "seed": 0,
    }
    return cfg
