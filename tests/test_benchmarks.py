"""The benchmark suite in its smallest setting: it runs, and its table and JSON are complete
(no timing is asserted: speed is for the benchmark's own report, not for tests)."""

import importlib.util
import json
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).parent.parent
HAS_TORCH = importlib.util.find_spec("torch") is not None


def _check_torch_row(row, label, stdout):
    """A torch row names the thread count its probe chose, the faster of 1 and cpu_count()."""
    probe = row["threads_probe_s"]
    assert set(probe) == {str(n) for n in {1, os.cpu_count()}} and all(s > 0 for s in probe.values())
    assert str(row["threads"]) == min(probe, key=probe.get)
    assert row["omp_wait_policy"] == os.environ.get("OMP_WAIT_POLICY")
    assert f"{label}, {row['threads']} thr." in stdout


def _smoke(tmp_path, sections):
    """(the report, stdout) of `benchmarks.run --smoke --sections ...`, which must succeed."""
    out = tmp_path / "results.json"
    run = subprocess.run([sys.executable, "-m", "benchmarks.run", "--smoke", "--sections", sections,
                          "--json", str(out)], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads(out.read_text())
    assert set(report["machine"]) == {"python", "jax", "platform", "cpus", "device"}
    assert list(report)[2:-1] == sections.split(",") and report["peak"]["peak_gflops"] > 0
    return report, run


# The smoke run in two halves (every section once), which run side by side under xdist.
@pytest.mark.heavy
def test_benchmark_smoke_run_writes_a_complete_table_and_json_for_the_mlp_sections(tmp_path):
    report, run = _smoke(tmp_path, "peak,steps,xor,per_example,scaling")

    steps = report["steps"]["workloads"]
    assert list(steps) == ["W1", "W2"]  # --smoke: the two small workloads
    expected = ["raw JAX", "fnnet backprop", "fnnet autodiff", "fnnet fit", "numpy"] + ["torch"] * HAS_TORCH
    for name, workload in steps.items():
        rows = workload["rows"]
        assert list(rows) == expected, name  # torch present iff it is importable
        for impl, row in rows.items():
            assert 0 < row["q25"] <= row["median"] <= row["q75"], (name, impl)
            assert row["ratio_to_raw_jax"] > 0 and row["paired_ratio_to_raw_jax"] > 0 and f"{name} " in run.stdout
        assert rows["raw JAX"]["ratio_to_raw_jax"] == rows["raw JAX"]["paired_ratio_to_raw_jax"] == 1.0
        assert all(rows[i]["compile_s"] > 0 for i in ("raw JAX", "fnnet backprop", "fnnet autodiff", "fnnet fit"))
        assert rows["fnnet backprop"]["ratio_to_autodiff"] > 0
        if HAS_TORCH:
            _check_torch_row(rows["torch"], "torch", run.stdout)
    assert report["steps"]["notes"] == ([] if HAS_TORCH else ["torch: not installed, skipped"])

    xor = report["xor"]["rows"]
    assert list(xor) == (["numpy textbook", "raw JAX scan", "bare scan", "fnnet fit", "fnnet fit (compiled program)",
                          "fnnet fit_ensemble ×64"]
                         + ["torch eager"] * HAS_TORCH)
    assert xor["numpy textbook"]["speedup_vs_numpy"] == 1.0 and xor["bare scan"]["ratio_to_bare_scan"] == 1.0
    assert all(row["ratio_to_bare_scan"] > 0 and row["model_epochs_per_s"] > 0 for row in xor.values())
    assert xor["fnnet fit_ensemble ×64"]["throughput_vs_numpy"] > 0
    targets = report["xor"]["targets"]
    assert set(targets) == {"fit_program_paired_ratio_to_bare_scan", "fit_program_within_1.5x_bare_scan",
                            "fit_minus_bare_scan_ms", "fit_paired_ratio_to_bare_scan", "fit_within_0.1_ms_of_bare_scan",
                            "ensemble_throughput_vs_numpy", "ensemble_at_least_1000x_numpy"}
    assert isinstance(targets["fit_within_0.1_ms_of_bare_scan"], bool)
    assert "the bare scan" in run.stdout and "target ≥ 1000×" in run.stdout and "target ≤ 1.5×" in run.stdout
    if HAS_TORCH:
        _check_torch_row(xor["torch eager"], "torch eager", run.stdout)

    grads = report["per_example"]["workloads"]
    assert list(grads) == ["W1", "W2"]
    for name, workload in grads.items():
        rows = workload["rows"]
        assert list(rows) == ["jit(vmap(grad))", "fnnet per_example_grads"]
        assert rows["jit(vmap(grad))"]["ratio_to_twin"] == 1.0
        for impl, row in rows.items():
            assert 0 < row["q25"] <= row["median"] <= row["q75"] and row["first_call_s"] > 0, (name, impl)
    assert "target ≤ 1.2×" in run.stdout

    rows = report["scaling"]["rows"]
    assert list(rows) == ["one device, no mesh", "1 device", "2 devices", "4 devices"]
    for name, row in rows.items():
        assert 0 < row["q25"] <= row["median"] <= row["q75"] and row["compile_s"] > 0, name
        assert row["max_rel_error_vs_one_device"] <= 1e-4  # checked before timing
        assert name in run.stdout


@pytest.mark.heavy
def test_benchmark_smoke_run_writes_a_complete_table_and_json_for_the_cnn_sections(tmp_path):
    from benchmarks import conv_formulations

    report, run = _smoke(tmp_path, "peak,cnn,conv_layers")
    cnn = report["cnn"]
    assert cnn["conv_peak"]["gflops"] > 0 and 0 < cnn["conv_peak"]["q25"] <= cnn["conv_peak"]["q75"]
    assert list(cnn["workloads"]) == ["W5", "W6"]  # --smoke: both, at batches of 32 and 8
    for name, workload in cnn["workloads"].items():
        rows = workload["rows"]
        assert list(rows) == ["raw JAX", "fnnet backprop", "fnnet autodiff", "fnnet fit backprop"
                              ] + ["torch"] * HAS_TORCH, name  # --smoke: no "fnnet fit autodiff"
        assert workload["batch"] == {"W5": 32, "W6": 8}[name] and workload["conv_flops_per_step"] > 0
        for impl, row in rows.items():
            assert 0 < row["q25"] <= row["median"] <= row["q75"], (name, impl)
            assert row["paired_ratio_to_raw_jax"] > 0 and row["conv_gflops"] > 0 and row["fraction_of_conv_peak"] > 0
            assert row["fraction_of_matmul_peak"] > 0  # the peak section ran first
        assert rows["raw JAX"]["paired_ratio_to_raw_jax"] == 1.0
        assert all(rows[i]["compile_s"] > 0 for i in ("raw JAX", "fnnet backprop", "fnnet autodiff"))
        ratios = workload["ratios"]
        assert ratios["backprop_over_autodiff"] > 0 and ratios["fnnet_over_raw_jax"] > 0
        assert ratios["fit_backprop_over_fit_autodiff"] is None
        assert (ratios["fnnet_over_torch"] is not None) == (ratios["raw_jax_over_torch"] is not None) == HAS_TORCH
        if HAS_TORCH:
            _check_torch_row(rows["torch"], "torch", run.stdout)
        # the first conv of each (3×3 on 1 or 3 channels) is im2col, the others lax's convolutions
        assert [f["formulation"] for f in workload["formulations"]] == {"W5": ["im2col", "conv"],
                                                                         "W6": ["im2col"] + ["conv"] * 3}[name]
    assert "Conv2D formulations (impl='auto'): W5 [0] im2col, [1] conv; W6 [0] im2col, [3] conv" in run.stdout
    assert "(target ≤ 1.05)" in run.stdout and "% conv peak" in run.stdout
    assert ("(stretch ≤ 1.0)" in run.stdout) == HAS_TORCH  # the ratios to torch, when it is there
    assert "inside fit: backprop / autodiff" not in run.stdout
    assert cnn["notes"] == ([] if HAS_TORCH else ["torch: not installed, skipped"])

    layers = report["conv_layers"]["shapes"]
    assert list(layers) == ["W5.conv0", "W5.conv1"]  # --smoke: W5's, at a batch of 32
    for label, shape in layers.items():
        assert shape["shape"]["N"] == 32 and shape["flops"] > 0 and f"{label} (32, 8, 8" in run.stdout
        assert shape["auto"] == {"W5.conv0": "im2col", "W5.conv1": "conv"}[label]
        assert list(shape["rows"]) == [f for f in conv_formulations.FORMULATIONS if f != "torch" or HAS_TORCH]
        for name, row in shape["rows"].items():
            assert 0 < row["q25"] <= row["median"] <= row["q75"] and row["gflops"] > 0, (label, name)
        assert shape["rows"]["lax.conv + autodiff"]["paired_ratio_to_lax_autodiff"] == 1.0
    assert "Conv2D(impl='auto') picks: W5.conv0 im2col, W5.conv1 conv" in run.stdout


@pytest.mark.heavy
def test_benchmark_smoke_run_writes_a_complete_table_and_json_for_the_sequence_sections(tmp_path):
    from benchmarks import workloads

    report, run = _smoke(tmp_path, "peak,sequences,memory")
    sequences = report["sequences"]
    assert list(sequences["workloads"]) == ["W7", "W8"]
    for name, workload in sequences["workloads"].items():
        w = {"W7": workloads.W7, "W8": workloads.W8}[name].sized(smoke=True)
        assert (workload["T"], workload["batch"]) == (w.T, w.batch) and f"{name} {w.title}" in run.stdout
        rows = workload["rows"]
        assert list(rows) == ["raw JAX", "fnnet backprop", "fnnet autodiff", "fnnet fit backprop"
                              ] + ["torch"] * HAS_TORCH, name
        for impl, row in rows.items():
            assert 0 < row["q25"] <= row["median"] <= row["q75"], (name, impl)
            assert row["ratio_to_raw_jax"] > 0 and row["paired_ratio_to_raw_jax"] > 0, (name, impl)
        assert rows["raw JAX"]["paired_ratio_to_raw_jax"] == 1.0
        assert all(rows[i]["compile_s"] > 0 for i in ("raw JAX", "fnnet backprop", "fnnet autodiff",
                                                       "fnnet fit backprop"))
        ratios = workload["ratios"]
        assert all(ratios[k] > 0 for k in ("backprop_over_autodiff", "fnnet_over_raw_jax", "fit_over_raw_jax"))
        assert (ratios["fnnet_over_torch"] is not None) == (ratios["raw_jax_over_torch"] is not None) == HAS_TORCH
        if HAS_TORCH:
            assert ratios["fnnet_over_torch"] > 0 and ratios["raw_jax_over_torch"] > 0
            _check_torch_row(rows["torch"], "torch", run.stdout)
    assert "fnnet backprop / fnnet autodiff (target ≤ 1.05)" in run.stdout
    assert "fnnet backprop / raw JAX (target ≤ 1.05)" in run.stdout
    assert ("fnnet backprop / torch" in run.stdout) == HAS_TORCH
    assert sequences["notes"] == ([] if HAS_TORCH else ["torch: not installed, skipped"])

    memory = report["memory"]
    Ts = list(workloads.MEMORY_T_SMOKE)
    assert memory["T"] == Ts
    layers = memory["layers"]
    assert list(layers) == [case.name for case in workloads.MEMORY_CASES]
    for name, layer in layers.items():
        assert list(layer["T"]) == [str(T) for T in Ts] and name in run.stdout
        for T, row in layer["T"].items():
            assert row["cache_bytes"] > 0 and row["step"]["temp"] > 0, (name, T)
            assert all(row[part][k] > 0 for part in ("step", "backward") for k in ("argument", "output", "total"))
            if name.startswith("MHA"):  # the timed cases
                assert 0 < row["time"]["q25"] <= row["time"]["median"] <= row["time"]["q75"], (name, T)
    cache = {name: [layer["T"][str(T)]["cache_bytes"] for T in Ts] for name, layer in layers.items()}
    growth = Ts[-1] / Ts[0]
    assert cache["LSTM(128)"][-1] == pytest.approx(growth * cache["LSTM(128)"][0], rel=0.05)  # T states
    assert cache["MHA(4)"][-1] > 1.25 * growth * cache["MHA(4)"][0]  # T×T weights per head: superlinear
    assert cache["MHA(4, recompute)"][-1] == pytest.approx(growth * cache["MHA(4, recompute)"][0], rel=0.05)
    assert cache["MHA(4, recompute)"][-1] < cache["MHA(4)"][-1]
    assert cache["TransformerBlock(4)"][-1] > growth * cache["TransformerBlock(4)"][0]
    recompute = layers["MHA(4, recompute)"]
    assert recompute["baseline"] == "MHA(4)"
    for T, row in recompute["T"].items():
        assert set(row["ratios_to_baseline"]) == {"cache", "step_temp", "backward_total", "time"}
        assert all(v > 0 for v in row["ratios_to_baseline"].values())
    assert "vs MHA(4):" in run.stdout and "cache growth from T" in run.stdout


def test_sequence_gate_compares_updates_and_can_fail():
    """The sequence models' gate compares what 3 steps changed: raw JAX against itself passes,
    its updates ×1.01 do not, nor one leaf (the LSTM's Wh, the attention's Wq) left as it was."""
    import jax
    import jax.numpy as jnp

    from benchmarks import baselines, run, workloads

    for w in (w.sized(smoke=True) for w in workloads.SEQUENCE_WORKLOADS):
        params = w.net().init(jax.random.key(0))
        X, y = w.data(jax.random.key(1))
        raw = baselines.raw_sequence_step(w)
        p = jax.tree.map(jnp.copy, params)
        for _ in range(3):
            p, _ = raw(p, X, y)
        run._assert_close("ok", w, p, p, w.tol, initial=params, what=run.SEQUENCE_GATE)
        scaled = jax.tree.map(lambda a, a0: a0 + 1.01 * (a - a0), p, params)
        with pytest.raises(AssertionError, match=rf"bad on {w.name} computes different updates of the parameters"):
            run._assert_close("bad", w, scaled, p, w.tol, initial=params, what=run.SEQUENCE_GATE)
        if w.kind == "lstm":
            stale = [dict(p[0], Wh=params[0]["Wh"]), p[1]]
        else:
            (attention, mlp), head = p
            ln, mha = attention["block"]
            stale = [[dict(attention, block=[ln, dict(mha, Wq=params[0][0]["block"][1]["Wq"])]), mlp], head]
        with pytest.raises(AssertionError, match=rf"bad on {w.name} computes different updates"):
            run._assert_close("bad", w, stale, p, w.tol, initial=params, what=run.SEQUENCE_GATE)


def test_torch_sequence_baselines_read_back_fnnet_layout():
    """torch's LSTM and TransformerEncoderLayer come back (through fnnet.from_torch) in fnnet's
    tree, equal before a step and within the gate after 3."""
    pytest.importorskip("torch")
    import jax
    import jax.numpy as jnp

    from benchmarks import baselines, run, workloads

    for w in (w.sized(smoke=True) for w in workloads.SEQUENCE_WORKLOADS):
        params = w.net().init(jax.random.key(0))
        X, y = w.data(jax.random.key(1))
        step, current_params = baselines.torch_sequence_step(w, params, X, y)
        assert jax.tree.structure(current_params()) == jax.tree.structure(params)
        assert workloads.max_rel_error(current_params(), params) == 0.0
        raw, p = baselines.raw_sequence_step(w), jax.tree.map(jnp.copy, params)
        for _ in range(3):
            step(1)
            p, _ = raw(p, X, y)
        run._assert_close("torch", w, current_params(), p, w.tol, initial=params, what=run.SEQUENCE_GATE)


def test_benchmark_refuses_to_time_a_wrong_computation():
    """The correctness gate: an implementation that lands elsewhere than raw JAX is an error."""
    import jax

    from benchmarks import run, workloads

    good = jax.tree.map(lambda a: a + 0.0, workloads.W2.net().init(jax.random.key(0)))
    bad = jax.tree.map(lambda a: a * 1.01, good)
    run._assert_close("ok", workloads.W2, good, good)
    with pytest.raises(AssertionError, match=r"bad on W2 computes different parameters than raw JAX"):
        run._assert_close("bad", workloads.W2, bad, good)
    with pytest.raises(AssertionError, match=r"bad on W2 computes different per-example gradients than twin"):
        run._assert_close("bad", workloads.W2, bad, good, what="per-example gradients than twin")


def test_cnn_gate_compares_updates_and_can_fail():
    """The CNNs' correctness gate compares what 3 steps changed (params and BatchNorm state):
    raw JAX against itself passes, updates ×1.01 (W5) or ×1.1 (W6, whose float32 gradients
    are ill-conditioned, see workloads.max_rel_update_error) do not, nor a wrong leaf."""
    import jax
    import jax.numpy as jnp

    from benchmarks import baselines, run, workloads

    for w, factor in ((workloads.W5, 1.01), (workloads.W6, 1.1)):
        net = w.net()
        params, state = net.init(jax.random.key(0)), net.init_state()
        X, y = w.data(jax.random.key(1), w.smoke_batch)
        raw = baselines.raw_cnn_step(w)
        p, s = jax.tree.map(jnp.copy, (params, state))
        for _ in range(3):
            p, s, _ = raw(p, s, X, y)
        run._assert_close("ok", w, (p, s), (p, s), w.tol, initial=(params, state))
        scaled = jax.tree.map(lambda a, a0: a0 + factor * (a - a0), p, params)
        with pytest.raises(AssertionError, match=rf"bad on {w.name} computes different updates"):
            run._assert_close("bad", w, scaled, p, w.tol, initial=params, what="updates of the params")
        # one leaf's update wrong: the last conv's kernel left as it was
        last_conv = max(i for i, (kind, *_) in enumerate(w.layers) if kind == "conv")
        stale = list(p)
        stale[last_conv] = dict(p[last_conv], W=params[last_conv]["W"])
        with pytest.raises(AssertionError, match=rf"bad on {w.name} computes different updates"):
            run._assert_close("bad", w, stale, p, w.tol, initial=params, what="updates of the params")


def test_torch_cnn_baseline_reads_back_fnnet_layout():
    """torch's CNN params come back in fnnet's list and layouts (HWIO kernels), equal before a
    step and within the gate after 3."""
    pytest.importorskip("torch")
    import jax
    import jax.numpy as jnp

    from benchmarks import baselines, run, workloads

    for w in workloads.CNN_WORKLOADS:
        params = w.net().init(jax.random.key(0))
        X, y = w.data(jax.random.key(1), w.smoke_batch)
        step, current_params = baselines.torch_cnn_step(w, params, X, y)
        assert jax.tree.structure(current_params()) == jax.tree.structure(params)
        assert workloads.max_rel_error(current_params(), params) == 0.0
        raw, p, s = baselines.raw_cnn_step(w), jax.tree.map(jnp.copy, params), w.net().init_state()
        for _ in range(3):
            step(1)
            p, s, _ = raw(p, s, X, y)
        run._assert_close("torch", w, current_params(), p, w.tol, initial=params)


def test_torch_baseline_reads_back_fnnet_layout_and_its_gate_can_fail():
    """torch's params come back as fnnet lays them out (W transposed to (n_in, n_out)), so the
    gate compares like with like; after 3 steps they equal raw JAX's, ×1.01 they do not."""
    pytest.importorskip("torch")
    import jax
    import jax.numpy as jnp

    from benchmarks import baselines, run, workloads

    w = workloads.W2
    params = w.net().init(jax.random.key(0))
    X, y = workloads.batch(w, jax.random.key(1))
    step, current_params = baselines.torch_step(w, params, X, y)
    assert workloads.max_rel_error(current_params(), params) == 0.0
    reference = jax.tree.map(jnp.copy, params)
    raw = baselines.raw_jax_step(w)
    for _ in range(3):
        step(1)
        reference, _ = raw(reference, X, y)
    run._assert_close("torch", w, current_params(), reference)
    with pytest.raises(AssertionError, match=r"torch ×1.01 on W2 computes different parameters"):
        run._assert_close("torch ×1.01", w, jax.tree.map(lambda a: a * 1.01, current_params()), reference)


def test_paired_ratio_is_taken_within_each_round():
    from benchmarks import timing

    # the machine slows 10× during round 3, between the two turns: within each round but that one
    # the candidate takes 2× the reference, while the ratio of the medians says 20×
    candidate, reference = [2.0, 2.0, 20.0, 20.0, 20.0], [1.0, 1.0, 1.0, 10.0, 10.0]
    assert timing.paired_ratio(candidate, reference) == 2.0
    assert timing.summary(candidate)["median"] / timing.summary(reference)["median"] == 20.0
