#!/usr/bin/env bash
# Re-measure every kernel family of the README's speed table, then rewrite the table:
#
#     JAXINV_DATA_DIR=/path/to/data bash benchmarks/all.sh      # from anywhere
#
# Each benchmark runs with the settings the README quotes and appends one record per family
# to benchmarks/results/<script>.jsonl; table.py puts the newest record of each family
# between the speed-table markers of README.md. memory.py prints peak memory per chain
# (not a table row). PYTHON overrides the interpreter.
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-python}
"$py" benchmarks/chains.py --torch --chunk 16  # white-box pixel step
"$py" benchmarks/gan.py --chunk 16             # GAN-latent step, generator training
"$py" benchmarks/blackbox.py                   # zeroth-order queries
"$py" benchmarks/gradient_leakage.py --unroll 1 --opt-level 1  # gradient matching (MNIST)
"$py" benchmarks/dpsgd.py                      # DP-SGD per-example gradients (MNIST too)
"$py" benchmarks/memory.py                     # peak memory per chain vs PyTorch
"$py" benchmarks/table.py --readme README.md
