"""Generative model inversion side by side: one target, one evaluator, every attack.

    JAXINV_DATA_DIR=../shared/data python experiments/generative.py \
        experiments/configs/generative.py:mnist
    python experiments/generative.py experiments/configs/generative.py:digits,smoke

Variant: ``DATASET[,smoke|fast][,ATTACK...]``. DATASET is ``mnist``, ``fashion_mnist``
or ``digits``; ``smoke`` shrinks everything for tests, ``fast`` to a quarter of the
compute; naming attacks runs only those (e.g. ``mnist,gmi`` or ``mnist,p2i,smoke``).
Protocol: GMI's MNIST protocol, private classes 0-4 (the target and the evaluator are
trained on them), public classes 5-9 (the GAN prior and P2I's embedding network see only
these). Attacks (``ATTACKS``): MI-Face in pixels, GMI, zeroth-order and label-only in the
GAN's latent space, label-only in pixels (the baseline of the latent one), P2I, and GMI
with the fine-tuned generator.
"""

import ml_collections

ATTACKS = ("mi-face", "gmi", "zo-latent", "label-only-latent", "label-only-pixel", "p2i",
           "gmi-finetuned")
DATASETS = ("mnist", "fashion_mnist", "digits")


def get_config(variant: str = "mnist") -> ml_collections.ConfigDict:
    parts = [p for p in variant.split(",") if p]
    dataset = parts[0] if parts and parts[0] in DATASETS else None
    smoke, fast = "smoke" in parts, "fast" in parts
    attacks = tuple(p for p in parts if p in ATTACKS) or ATTACKS
    unknown = [p for p in parts if p not in (*DATASETS, *ATTACKS, "smoke", "fast")]
    if dataset is None or unknown:
        raise ValueError(f"variant {variant!r}: want DATASET[,smoke|fast][,ATTACK...] with "
                         f"DATASET in {DATASETS} and ATTACK in {ATTACKS}")
    cfg = ml_collections.ConfigDict()
    cfg.dataset = dataset
    cfg.workdir = f"runs/generative/{dataset}" + ("_smoke" if smoke else "")
    cfg.private = "classes:0-4"
    cfg.public = "classes:5-9"
    cfg.classes = [0, 1, 2, 3, 4]
    cfg.target_arch, cfg.eval_arch, cfg.embed_arch = "cnn", "resnet", "cnn"
    cfg.attacks = attacks
    cfg.seed = 0
    cfg.train = {} if not smoke else {"epochs": 1, "limit": 512}
    cfg.gan = {"steps": 4000, "width": 32, "critic_width": 16}
    cfg.chains = 32  # reconstructions per class (an attack's own "chains" overrides it)
    big = ml_collections.ConfigDict({
        "mi-face": {"steps": 500, "options": {"lr": 0.05, "tv": 0.5}},
        "gmi": {"steps": 400, "options": {}},  # GMI used 1500; 400 to fit this CPU
        "zo-latent": {"steps": 100, "chains": 8, "options": {"queries_per_step": 20}},
        "label-only-latent": {"steps": 150, "chains": 8, "options": {"spheres": 32}},
        "label-only-pixel": {"steps": 150, "chains": 8, "options": {"spheres": 32}},
        "p2i": {"n_samples": 2000, "public_max": 3000, "train_per_class": 200,
                "steps": 500},
        "finetune": {"steps": 200},
    })
    cfg.attack = big
    if fast:  # a quarter of the compute: the Fashion-MNIST table on a shared 2-core CPU
        cfg.chains = 8
        cfg.attack["mi-face"].steps = 300
        cfg.attack.gmi.steps = 300
        cfg.attack["zo-latent"].update({"steps": 60, "chains": 4})
        cfg.attack["label-only-latent"].update({"steps": 100, "chains": 4})
        cfg.attack["label-only-pixel"].update({"steps": 100, "chains": 4})
        cfg.attack.p2i.steps = 300
        cfg.attack.finetune.steps = 100
    if smoke:
        cfg.chains = 2
        cfg.gan = {"steps": 20, "width": 4, "critic_width": 4}
        for name in ("mi-face", "gmi", "zo-latent", "label-only-latent", "label-only-pixel"):
            cfg.attack[name].steps = 3
            if "chains" in cfg.attack[name]:
                cfg.attack[name].chains = 2
        cfg.attack["zo-latent"].options.queries_per_step = 4
        cfg.attack["label-only-latent"].options.spheres = 4
        cfg.attack["label-only-pixel"].options.spheres = 4
        cfg.attack.p2i = {"n_samples": 200, "public_max": 200, "train_per_class": 20,
                          "steps": 5}
        cfg.attack.finetune = {"steps": 3}
    return cfg
