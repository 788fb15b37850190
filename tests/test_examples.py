"""The README's new-attack example: one file, one registry line, run from the CLI."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "margin_attack.py"


def test_readme_shows_the_example_verbatim():
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"<!-- example: examples/margin_attack.py -->\n```python\n(.*?)```",
                      readme, re.S)
    assert block, "README lacks the margin_attack example block"
    assert block.group(1) == EXAMPLE.read_text()
    assert len(block.group(1).splitlines()) <= 40


def test_new_attack_runs_from_the_cli(tmp_path):
    env = {**os.environ, "JAXINV_NO_COMPILATION_CACHE": "1"}
    out = subprocess.run([sys.executable, str(EXAMPLE)], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    rec = json.loads((tmp_path / "runs/ex/margin/results.json").read_text())
    m = rec["metrics"]
    assert m["attack_acc_top1"] > 0.8 > 0.3 > m["init_acc_top1"]
    assert rec["config"]["options"] == {"lr": 0.1}
