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
    assert report["peak"]["peak_gflops"] > 0

    steps = report["steps"]["workloads"]
    assert list(steps) == ["W1", "W2"]  # --smoke: the two small workloads
    for name, workload in steps.items():
        rows = workload["rows"]
        assert {"raw JAX", "fnnet backprop", "fnnet autodiff", "fnnet fit", "numpy"} <= set(rows)
        for impl, row in rows.items():
            assert 0 < row["q25"] <= row["median"] <= row["q75"], (name, impl)
            assert row["ratio_to_raw_jax"] > 0 and f"{name} " in run.stdout
        assert rows["raw JAX"]["ratio_to_raw_jax"] == 1.0
        assert all(rows[i]["compile_s"] > 0 for i in ("raw JAX", "fnnet backprop", "fnnet autodiff", "fnnet fit"))
        assert rows["fnnet backprop"]["ratio_to_autodiff"] > 0

    xor = report["xor"]["rows"]
    assert list(xor) == ["numpy textbook", "raw JAX scan", "fnnet fit", "fnnet fit_ensemble ×64"]
    assert xor["numpy textbook"]["speedup_vs_numpy"] == 1.0
    assert xor["fnnet fit_ensemble ×64"]["throughput_vs_numpy"] > 0

    rows = report["scaling"]["rows"]
    assert list(rows) == ["one device, no mesh", "1 device", "2 devices", "4 devices"]
    for name, row in rows.items():
        assert 0 < row["q25"] <= row["median"] <= row["q75"] and row["compile_s"] > 0, name
        assert row["max_rel_error_vs_one_device"] <= 1e-4  # checked before timing
        assert name in run.stdout


def test_benchmark_refuses_to_time_a_wrong_computation(monkeypatch):
    """The correctness gate: an implementation that lands elsewhere than raw JAX is an error."""
    import jax
    import pytest

    from benchmarks import run, workloads

    good = jax.tree.map(lambda a: a + 0.0, workloads.W2.net().init(jax.random.key(0)))
    bad = jax.tree.map(lambda a: a * 1.01, good)
    run._assert_close("ok", workloads.W2, good, good)
    with pytest.raises(AssertionError, match=r"bad on W2 computes different parameters than raw JAX"):
        run._assert_close("bad", workloads.W2, bad, good)
