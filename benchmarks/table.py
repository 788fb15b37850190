"""The README's speed table: the newest record of each kernel family, as Markdown.

    python benchmarks/table.py                      # print it (benchmarks/results/*.jsonl)
    python benchmarks/table.py --readme README.md   # also rewrite it in the README
    bash benchmarks/all.sh                          # re-measure every family, then the above

Reads the JSON lines the benchmarks append (``--jsonl``, via ``benchmarks/common.py``);
lines without a ``family`` key (per-measurement details) are skipped. With ``--readme``,
the text between ``<!-- speed-table:start -->`` and ``<!-- speed-table:end -->`` is replaced.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from common import FAMILIES, RESULTS

START, END = "<!-- speed-table:start -->", "<!-- speed-table:end -->"
COLUMNS = ("family", "work", "jaxinv", "PyTorch", "ratio", "unit", "compile", "load", "date")


def read_records(paths: Iterable[str | Path]) -> list[dict[str, Any]]:
    """The family records (dicts with a ``family`` key) of JSON-lines files, in file order."""
    out = []
    for path in paths:
        with open(path) as fh:
            for i, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError as e:
                    raise ValueError(f"{path}:{i}: not JSON ({e})") from e
                if isinstance(rec, dict) and rec.get("family"):
                    out.append(rec)
    return out


def _when(rec: dict[str, Any]) -> datetime:
    """The record's ``time`` (naive stamps taken as UTC; missing: the earliest time)."""
    try:
        t = datetime.fromisoformat(rec["time"])
    except (KeyError, TypeError, ValueError):
        t = datetime.min
    return t if t.tzinfo is not None else t.replace(tzinfo=UTC)


def newest(records: Iterable[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The newest record (by ``time``; on a tie the later one) of each family, in the order of
    ``common.FAMILIES`` (unknown families after them)."""
    best: dict[str, dict[str, Any]] = {}
    for rec in records:
        fam, old = rec["family"], best.get(rec["family"])
        if old is None or _when(rec) >= _when(old):
            best[fam] = rec
    order = {f: i for i, f in enumerate(FAMILIES)}
    return dict(sorted(best.items(), key=lambda kv: order.get(kv[0], len(order))))


def _num(x: float | None) -> str:
    if x is None:
        return "–"
    if abs(x) >= 100:
        return f"{x:,.0f}"
    return f"{x:.1f}" if abs(x) >= 10 else f"{x:.2f}"


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def row(rec: dict[str, Any]) -> list[str]:
    """One record's cells, in ``COLUMNS`` order."""
    ratio = rec.get("ratio")
    compile_s = rec.get("compile_s")
    load = rec.get("load")
    load = load[0] if isinstance(load, list) and load else load
    return [_cell(rec.get("family", "")), _cell(rec.get("work", "")), _num(rec.get("jaxinv")),
            _num(rec.get("torch")), "–" if ratio is None else f"{ratio:.2f}x",
            _cell(rec.get("unit", "")),
            "–" if compile_s is None else f"{compile_s:.1f} s",
            "–" if load is None else (f"{load:.1f}" if isinstance(load, int | float)
                                      else _cell(load)),
            str(rec.get("time", ""))[:10] or "–"]


def markdown(records: dict[str, dict[str, Any]]) -> str:
    """The Markdown table of ``newest(...)``'s records (no trailing newline)."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(row(rec)) + " |" for rec in records.values()]
    return "\n".join(lines)


def replace_between(text: str, table: str) -> str:
    """``text`` with what lies between the speed-table markers replaced by ``table``."""
    start, end = text.find(START), text.find(END)
    if start < 0 or end < 0 or end < start:
        raise ValueError(f"the speed-table markers {START} ... {END} are missing (or out of "
                         "order); put them where the table goes")
    return text[:start + len(START)] + "\n" + table + "\n" + text[end:]


def update_readme(path: str | Path, table: str) -> None:
    """Rewrite the table between the markers of the README at ``path``."""
    path = Path(path)
    path.write_text(replace_between(path.read_text(), table))


def main(argv: list[str] | None = None) -> None:
    """Print the table; with ``--readme`` also write it into the README."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("paths", nargs="*", help=f"JSON-lines files (default {RESULTS}/*.jsonl)")
    p.add_argument("--readme", default=None, help="rewrite the table between its markers here")
    args = p.parse_args(argv)
    paths = args.paths or sorted(RESULTS.glob("*.jsonl"))
    try:
        records = newest(read_records(paths))
    except (OSError, ValueError) as e:
        sys.exit(f"table.py: {e}")
    if not records:
        sys.exit(f"table.py: no family records in {[str(q) for q in paths] or RESULTS}; run "
                 "the benchmarks first (bash benchmarks/all.sh)")
    table = markdown(records)
    print(table)
    if args.readme:
        try:
            update_readme(args.readme, table)
        except (OSError, ValueError) as e:
            sys.exit(f"table.py: {args.readme}: {e}")
        print(f"rewrote the speed table in {args.readme}")


if __name__ == "__main__":
    main()
