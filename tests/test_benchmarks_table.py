"""benchmarks/common.py and benchmarks/table.py: JSON lines, newest record per family, the
README's speed table (no benchmark runs)."""

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import common
import table


def rec(family: str, time: str, jaxinv: float = 100.0, **kw) -> dict:
    return {"family": family, "work": "w", "unit": "x/s", "jaxinv": jaxinv, "torch": 50.0,
            "ratio": jaxinv / 50.0, "repeats": 3, "compile_s": 1.25, "load": [1.5, 1.0, 0.5],
            "time": time, **kw}


def write(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_emit_appends_strict_json_lines(tmp_path):
    path = tmp_path / "sub" / "x.jsonl"
    common.emit(path, {"a": float("nan"), "b": [1.0, float("inf")], "c": np.float32(2.5),
                       "d": np.arange(2), "versions": {"opacus": "9"}})
    common.emit(path, common.family_record("gradient matching", "w", "victims/s", 2.0, None, 1))
    lines = path.read_text().splitlines()
    assert len(lines) == 2
    first = json.loads(lines[0], parse_constant=lambda c: pytest.fail(f"non-strict {c}"))
    assert first["a"] is None and first["b"] == [1.0, None]
    assert first["c"] == 2.5 and first["d"] == [0, 1]
    assert first["versions"]["opacus"] == "9" and "jax" in first["versions"]
    assert {"cpu", "cores", "load", "XLA_FLAGS", "OMP_NUM_THREADS", "time"} <= set(first)
    assert len(first["load"]) == 3 and first["time"].endswith("+00:00")
    second = json.loads(lines[1])
    assert second["family"] == "gradient matching" and second["ratio"] is None
    assert common.emit("", {"a": 1})["a"] == 1  # no path: nothing written


def test_family_record_and_alternate():
    with pytest.raises(ValueError, match="unknown family"):
        common.family_record("nope", "w", "u", 1.0, 1.0, 1)
    assert common.family_record("generator training", "w", "u", 3.0, 2.0, 1)["ratio"] == 1.5
    calls = []
    rates = common.alternate({"a": lambda: calls.append("a") or 10.0,
                              "b": lambda: (calls.append("b"), (4.0, 2.0))[1]}, 3)
    assert calls == ["a", "b"] * 3
    assert rates["b"] == [2.0, 2.0, 2.0] and len(rates["a"]) == 3
    assert common.median([3.0, None, 1.0, 2.0]) == 2.0 and common.median([None]) is None


def test_newest_per_family_in_family_order(tmp_path):
    a = write(tmp_path / "a.jsonl", [rec("GAN-latent step", "2026-01-02T00:00:00+00:00", 1.0),
                                     {"side": "detail line without a family"},
                                     rec("white-box pixel step", "2026-01-01T00:00:00+00:00")])
    b = write(tmp_path / "b.jsonl", [rec("GAN-latent step", "2026-01-03T00:00:00+00:00", 2.0),
                                     rec("GAN-latent step", "2026-01-01T00:00:00+00:00", 3.0),
                                     rec("my family", "2026-01-01T00:00:00")])
    got = table.newest(table.read_records([a, b]))
    assert list(got) == ["white-box pixel step", "GAN-latent step", "my family"]
    assert got["GAN-latent step"]["jaxinv"] == 2.0


def test_markdown_rows():
    md = table.markdown(table.newest([
        rec("gradient matching", "2026-01-02T03:04:05+00:00", 5.917, work="a | b"),
        {**rec("zeroth-order queries", "2026-01-02T00:00:00+00:00", 12345.6), "torch": None,
         "ratio": None, "compile_s": None}]))
    lines = md.splitlines()
    assert lines[0] == ("| family | work | jaxinv | PyTorch | ratio | unit | compile | load | "
                        "date |")
    assert lines[1] == "|---|---|---|---|---|---|---|---|---|"
    assert lines[2] == "| zeroth-order queries | w | 12,346 | – | – | x/s | – | 1.5 | 2026-01-02 |"
    assert lines[3] == ("| gradient matching | a \\| b | 5.92 | 50.0 | 0.12x | x/s | 1.2 s | 1.5 | "
                        "2026-01-02 |")


def test_readme_markers(tmp_path, capsys):
    text = f"# T\n\n## Speed\n\n{table.START}\n(placeholder)\n{table.END}\n\nafter\n"
    once = table.replace_between(text, "| t |")
    assert once == f"# T\n\n## Speed\n\n{table.START}\n| t |\n{table.END}\n\nafter\n"
    assert table.replace_between(once, "| t |") == once
    for bad in ("no markers", f"{table.END}\n{table.START}", f"{table.START} only"):
        with pytest.raises(ValueError, match="markers"):
            table.replace_between(bad, "| t |")
    results = write(tmp_path / "r.jsonl", [rec("generator training", "2026-01-01T00:00:00")])
    readme = tmp_path / "README.md"
    readme.write_text(text)
    table.main([str(results), "--readme", str(readme)])
    assert "| generator training | w | 100 | 50.0 | 2.00x |" in readme.read_text()
    assert "generator training" in capsys.readouterr().out
    readme.write_text("no markers here\n")
    with pytest.raises(SystemExit, match="markers"):
        table.main([str(results), "--readme", str(readme)])
    assert readme.read_text() == "no markers here\n"


def test_nan_is_never_written(tmp_path):
    out = common.emit(tmp_path / "n.jsonl", {"jaxinv": math.nan, "torch": -math.inf})
    assert out["jaxinv"] is None and out["torch"] is None
    assert "NaN" not in (tmp_path / "n.jsonl").read_text()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallinfo2")
def test_memory_benchmark_measures_chunked_runs(tmp_path):
    import subprocess
    out = tmp_path / "m.jsonl"
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "memory.py"
    subprocess.run([sys.executable, str(script), "--chains", "256", "--chunk", "8",
                    "--no-torch", "--jsonl", str(out)], check=True, capture_output=True)
    (row,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert row["n"] == 256 and row["torch_mib_per_chain"] is None
    # a chain's state and results alone are > 3 KiB (28x28 floats); chunk bounds the rest
    # (here 0.044 vs 0.722 MiB; at 64 chains a loaded CI once measured 0.416 vs 0.414)
    assert 0.003 < row["jaxinv_chunk_mib_per_chain"] < row["jaxinv_mib_per_chain"]
