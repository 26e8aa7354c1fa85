"""The benchmark suite in its smallest setting: it runs, and its table and JSON are complete
(no timing is asserted: speed is for the benchmark's own report, not for tests)."""

import json
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).parent.parent


def test_benchmark_smoke_run_writes_a_complete_table_and_json(tmp_path):
    out = tmp_path / "results.json"
    run = subprocess.run([sys.executable, "-m", "benchmarks.run", "--smoke", "--json", str(out)],
                         capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads(out.read_text())
    assert set(report["machine"]) == {"python", "jax", "platform", "cpus", "device"}
    rows = report["scaling"]["rows"]
    assert list(rows) == ["one device, no mesh", "1 device", "2 devices", "4 devices"]
    for name, row in rows.items():
        assert 0 < row["q25"] <= row["median"] <= row["q75"] and row["compile_s"] > 0, name
        assert row["max_rel_error_vs_one_device"] <= 1e-4  # checked before timing
        assert name in run.stdout
