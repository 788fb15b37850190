"""The attack x defense grid from a config (:func:`jaxinv.workflows.grid.grid`).

    JAXINV_DATA_DIR=../shared/data python experiments/grid.py experiments/configs/grid.py:mnist

Resumes cell by cell; writes OUT/grid.md, grid.json and grid.png.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from main import load_config

from jaxinv import enable_compilation_cache
from jaxinv.workflows.grid import grid


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("config", help="path/to/grid.py:VARIANT")
    p.add_argument("--out", default=None, help="override cfg.out")
    args = p.parse_args(argv)
    cfg = load_config(args.config)
    enable_compilation_cache()
    kw = cfg.grid.to_dict()
    kw["defenses"], kw["attacks"] = tuple(kw["defenses"]), tuple(kw["attacks"])
    g = grid(out=args.out or cfg.out, **kw)
    print((Path(args.out or cfg.out) / "grid.md").read_text())
    return g


if __name__ == "__main__":
    main()
