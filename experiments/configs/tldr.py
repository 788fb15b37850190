"""TLDR vs plain network inversion vs MI-Face, from the target's weights, on targets trained
on 1,000 / 10,000 / 60,000 MNIST samples and on Fashion-MNIST; an ablation of the TLDR
terms; training-likeness of real and generated samples.

    JAXINV_DATA_DIR=../shared/data python experiments/tldr.py experiments/configs/tldr.py:all
    python experiments/tldr.py experiments/configs/tldr.py:digits,smoke --workdir /tmp/tldr

Variant: ``SETTING[,SETTING...][,smoke]`` with SETTING in ``SETTINGS`` or ``all`` (the four
MNIST/Fashion-MNIST settings). ``smoke`` shrinks everything for tests. The ablation runs on
``cfg.ablation.setting`` when that setting is run.

Target: jaxinv's MNIST CNN (no BatchNorm, so its weight gradients are per-sample), trained on
the first ``limit`` training samples (the 1k and 10k subsets for more epochs, to train accuracy
1.0; the full splits with fit's defaults, 5 epochs). Evaluator: a ResNet trained on the full
training split of the dataset.
"""

import ml_collections

SETTINGS = {
    "mnist1k": {"dataset": "mnist", "train": {"limit": 1000, "epochs": 60, "lr_decay": 0.95}},
    "mnist10k": {"dataset": "mnist", "train": {"limit": 10000, "epochs": 20, "lr_decay": 0.85}},
    "mnist60k": {"dataset": "mnist", "train": {}},
    "fashion": {"dataset": "fashion_mnist", "train": {}},
    "digits": {"dataset": "digits", "train": {"limit": 600, "epochs": 30}},
}
ALL = ("mnist1k", "mnist10k", "mnist60k", "fashion")
# TLDR minus one term at a time, and the weight of the second-order term (the defaults'
# justification): member name -> weight overrides of PRESETS["tldr"].
ABLATION = {"tldr": {}, "-kl_p": {"kl_p": 0.0}, "-ce_p": {"ce_p": 0.0}, "-tv": {"tv": 0.0},
            "-pix": {"pix": 0.0}, "-grad": {"grad": 0.0}, "grad=1": {"grad": 1.0},
            "grad=1e-2": {"grad": 0.01}, "pix=10": {"pix": 10.0}}


def get_config(variant: str = "all") -> ml_collections.ConfigDict:
    parts = [p for p in variant.split(",") if p]
    smoke = "smoke" in parts
    names = [n for p in parts if p != "smoke" for n in (ALL if p == "all" else (p,))]
    unknown = [n for n in names if n not in SETTINGS]
    if not names or unknown:
        raise ValueError(f"variant {variant!r}: want SETTING[,SETTING...][,smoke] with SETTING "
                         f"in {sorted(SETTINGS)} or all")
    cfg = ml_collections.ConfigDict()
    cfg.workdir = "runs/tldr" + ("_smoke" if smoke else "")
    cfg.settings = {n: SETTINGS[n] for n in names}
    cfg.order = names  # ConfigDict iterates its keys sorted
    cfg.target_arch, cfg.eval_arch = "cnn", "resnet"
    cfg.eval_train = {} if not smoke else {"epochs": 2, "limit": 600}
    cfg.seed = 0
    cfg.samples = 32  # images per class for every attack
    cfg.steps = 600
    # CPU settings: sub-pixel upsampling (transposed convolutions' gradients are 3x slower
    # on XLA:CPU), batch 32, width 16; the second-order term on 8 examples per batch.
    cfg.generator = {"batch_size": 32, "width": 16, "lr": 1e-3, "upsample": "subpixel",
                     "grad_examples": 8, "sigma": 0.1}
    cfg.mi_face = {"steps": 300, "options": {"lr": 0.05, "tv": 0.5}}
    cfg.likeness = {"n_real": 1000, "sigma": 0.1, "draws": 8}
    cfg.ablation = {"setting": "mnist1k", "members": ABLATION}
    cfg.grid_per_class = 4
    if smoke:
        cfg.samples, cfg.steps = 4, 4
        cfg.generator.update(batch_size=8, width=4, grad_examples=2)
        cfg.mi_face.steps = 3
        cfg.likeness = {"n_real": 40, "sigma": 0.1, "draws": 2}
        cfg.ablation = {"setting": "digits", "members": {"-grad": ABLATION["-grad"]}}
        cfg.eval_arch = "cnn"  # small features: evaluate's FID is cheap
        cfg.settings = {n: {**s, "train": {**s["train"], "epochs": 2}}
                        for n, s in cfg.settings.to_dict().items()}
        cfg.grid_per_class = 2
    return cfg
