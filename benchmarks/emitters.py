"""First compile and speed of each kernel family with jaxinv's XLA:CPU options (the classic
fusion emitters, :mod:`jaxinv.core.compiler`) against XLA's defaults (``JAXINV_XLA_DEFAULTS=1``).

    taskset -c 1 python benchmarks/emitters.py                  # every family, 2 rounds
    python benchmarks/emitters.py --families gmi,gan --rounds 1

Each measurement is one run of a sibling benchmark script in a fresh process (jaxinv's side
only where the script allows it; ``dpsgd.py`` always runs Opacus too), the two settings
alternating; it reads the ``compile_s`` and jaxinv rate of the family record the script
writes. Prints, per family and setting, the medians over ``--rounds`` and the ratios (compile:
defaults / jaxinv's, > 1 jaxinv's compiles faster; speed: jaxinv's / defaults); appends one
JSON line per family to ``--jsonl``. mnist rows read ``$JAXINV_DATA_DIR`` (else the bundled
``digits``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import default_jsonl, emit, load_text, median, ratio

HERE = Path(__file__).parent


def families(dataset: str) -> dict[str, tuple[str, list[str]]]:
    """name -> (the family record to read, the script and its arguments)."""
    gl = ["gradient_leakage.py", "--reference", "none", "--dataset", dataset]
    return {
        "mi-face": ("white-box pixel step", ["chains.py", "--chains", "64", "--chunk", "0",
                                             "--repeats", "3"]),
        "gmi": ("GAN-latent step", ["gan.py", "--no-torch", "--skip-gan", "--sizes", "64",
                                    "--chunk", "16", "--repeats", "3"]),
        "gan": ("generator training", ["gan.py", "--no-torch", "--sizes", "4", "--chunk", "0",
                                       "--repeats", "3"]),
        "nes": ("zeroth-order queries", ["blackbox.py", "--no-torch", "--chains", "64"]),
        "idlg": ("gradient matching", [*gl, "--attack", "idlg", "--unroll", "1",
                                       "--opt-level", "1"]),
        "ig": ("gradient matching", [*gl, "--attack", "ig"]),
        "dpsgd": ("DP-SGD per-example gradients", ["dpsgd.py", "--dataset", dataset,
                                                   "--opacus-mode", "functorch",
                                                   "--steps", "10"]),
    }


def measure(family: str, argv: list[str], xla_defaults: bool) -> dict:
    """One run of ``argv`` in a fresh process: its family record's compile_s and rate."""
    env = dict(os.environ)
    env.pop("JAXINV_XLA_DEFAULTS", None)
    if xla_defaults:
        env["JAXINV_XLA_DEFAULTS"] = "1"
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "r.jsonl"
        subprocess.run([sys.executable, str(HERE / argv[0]), *argv[1:], "--jsonl", str(out)],
                       check=True, env=env, stdout=subprocess.DEVNULL)
        recs = [json.loads(line) for line in out.read_text().splitlines()]
    (rec,) = [r for r in recs if r.get("family") == family]
    return {"compile_s": rec["compile_s"], "rate": rec["jaxinv"], "unit": rec["unit"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--families", default="mi-face,gmi,gan,nes,idlg,ig,dpsgd")
    p.add_argument("--rounds", type=int, default=2, help="alternating rounds per family")
    p.add_argument("--jsonl", default=default_jsonl(__file__), help="'' : none")
    a = p.parse_args()
    dataset = "mnist" if os.environ.get("JAXINV_DATA_DIR") else "digits"
    table = families(dataset)
    names = a.families.split(",")
    if unknown := set(names) - set(table):
        p.error(f"unknown families {sorted(unknown)}; choose from {sorted(table)}")
    print(f"load {load_text()}; {a.rounds} alternating rounds; mnist rows on {dataset}")
    print(f"{'family':8} {'compile: jaxinv':>15} {'XLA defaults':>12} {'ratio':>6}   "
          f"{'speed: jaxinv':>13} {'XLA defaults':>12} {'ratio':>6}  unit")
    for name in names:
        family, argv = table[name]
        runs: dict[bool, list[dict]] = {False: [], True: []}
        for _ in range(a.rounds):
            for defaults in (False, True):
                runs[defaults].append(measure(family, argv, defaults))
        c = {d: median(r["compile_s"] for r in runs[d]) for d in runs}
        s = {d: median(r["rate"] for r in runs[d]) for d in runs}
        unit = runs[False][0]["unit"]
        print(f"{name:8} {c[False]:>13.1f} s {c[True]:>10.1f} s {ratio(c[True], c[False]):>5.2f}x"
              f"   {s[False]:>13.4g} {s[True]:>12.4g} {ratio(s[False], s[True]):>5.2f}x  {unit}",
              flush=True)
        emit(a.jsonl, {"benchmark": "emitters", "family": family, "kernel": name,
                       "argv": argv, "unit": unit, "jaxinv": runs[False],
                       "xla_defaults": runs[True], "compile_ratio": ratio(c[True], c[False]),
                       "speed_ratio": ratio(s[False], s[True])})
    print(f"load at the end {load_text()}")


if __name__ == "__main__":
    main()
