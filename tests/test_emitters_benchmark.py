"""benchmarks/emitters.py: its families read records the sibling scripts write."""

import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))

import emitters  # noqa: E402
from common import FAMILIES  # noqa: E402


def test_every_row_names_a_family_and_an_existing_script():
    for dataset in ("mnist", "digits"):
        table = emitters.families(dataset)
        assert set(table) == {"mi-face", "gmi", "gan", "nes", "idlg", "ig", "dpsgd"}
        for family, argv in table.values():
            assert family in FAMILIES
            assert (BENCH / argv[0]).is_file() and "--jsonl" not in argv
            text = (BENCH / argv[0]).read_text()
            assert f'"{family}"' in text  # the script writes this family's record
            assert all(a.split("=")[0] in text for a in argv[1:] if a.startswith("--"))
