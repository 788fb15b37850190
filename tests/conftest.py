"""Test set-up: fake 8 CPU devices (before jax is imported) and locate ../shared/data."""

import os
from pathlib import Path

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
_shared = Path(__file__).resolve().parents[2] / "shared" / "data"
if "JAXINV_DATA_DIR" not in os.environ and _shared.is_dir():
    os.environ["JAXINV_DATA_DIR"] = str(_shared)
