"""fnnet's benchmark suite: one command, a table and a JSON file.

    python -m benchmarks.run [--quick] [--json benchmarks/results.json] [--sections xor,steps]

Sections: the matmul peak; the MLP steps W1–W4; the CNN steps W5–W6 (with a conv peak); one
conv layer in each formulation (benchmarks/conv_formulations.py); the sequence models W7 (LSTM)
and W8 (Transformer block); the memory of each sequence layer's training step at T = 64, 256,
1024 (benchmarks/memory.py); XOR end to end; per-example gradients; data-parallel scaling.

PyTorch rows need the `bench` extra (`pip install -e .[bench]`) and are skipped without it.

Every time is the steady state after compilation (compile time reported apart),
measured interleaved with its rivals in one process, median over repeats.
"""

import argparse
import functools
import json
import os
import platform
import subprocess
import sys
import time

from benchmarks import baselines, conv_formulations, memory, timing, workloads

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _block(x):
    import jax
    return jax.block_until_ready(x)


def peak(args):
    """The machine's float32 matmul peak: jitted jnp.dot of n×n matrices."""
    import jax
    import jax.numpy as jnp

    rows = {}
    for n in (512,) if args.smoke else (1024, 2048):
        a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
        dot = jax.jit(jnp.dot)
        _block(dot(a, a))
        t = timing.interleaved({"dot": lambda: _block(dot(a, a))}, args.repeats, 1 if n >= 2048 else 4,
                               args.settle)["dot"]
        rows[f"{n}x{n}"] = t | {"gflops": 2 * n ** 3 / t["median"] / 1e9}
    best = max(r["gflops"] for r in rows.values())
    table = [f"float32 matmul peak (jitted jnp.dot): " + ", ".join(f"{k} {r['gflops']:.1f} GFLOP/s" for k, r in rows.items())]
    return {"rows": rows, "peak_gflops": best}, "\n".join(table)


IMPLEMENTATIONS = ("raw JAX", "fnnet backprop", "fnnet autodiff", "fnnet fit", "numpy", "torch")


def steps(args, peak_gflops=None):
    """Steady-state time per SGD step of every implementation on W1–W4, interleaved."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax

    import fnnet

    chosen = workloads.WORKLOADS[:2] if args.smoke else workloads.WORKLOADS
    result, notes = {}, []
    for w in chosen:
        net, optimizer = w.net(), optax.sgd(w.lr)
        params = net.init(jax.random.key(0))
        X, y = workloads.batch(w, jax.random.key(1))
        copy = lambda: jax.tree.map(jnp.copy, params)
        raw = baselines.raw_jax_step(w)
        # the loss only, as the raw-JAX step computes (the caller chooses the metrics)
        fnnet_steps = {g: fnnet.train_step(net, w.loss, optimizer, grad=g, metrics=("loss",))
                       for g in fnnet.train.GRAD_MODES}
        np_step = baselines.numpy_step(w)
        np_params = jax.tree.map(np.asarray, params)
        Xn, yn = np.asarray(X), np.asarray(y)

        # Correctness first: 3 steps of every implementation land where raw JAX does. The
        # first call of each compiles it: its time, less a step's, is the compile time.
        first = {}
        reference = copy()
        for i in range(3):
            start = time.perf_counter()
            reference, value = raw(reference, X, y)
            _block(value)
            first.setdefault("raw JAX", time.perf_counter() - start)
        for g, step in fnnet_steps.items():
            p, o = copy(), optimizer.init(params)
            for _ in range(3):
                start = time.perf_counter()
                p, o, m = step(p, o, X, y)
                _block(m)
                first.setdefault(f"fnnet {g}", time.perf_counter() - start)
            _assert_close(f"fnnet {g}", w, p, reference)
        q = np_params
        for _ in range(3):
            q = np_step(q, Xn, yn)
        _assert_close("numpy", w, q, reference)
        n_fit = 8  # fit: 8 minibatches of w.batch per epoch, shuffled on the device
        Xf, yf = (jnp.tile(X, (n_fit,) + (1,) * (X.ndim - 1)), jnp.tile(y, (n_fit,) + (1,) * (y.ndim - 1)))
        fit_epochs = 4 if w.name != "W3" else 1
        fit_kw = dict(epochs=fit_epochs, batch_size=w.batch, key=jax.random.key(2))
        full_batch = fnnet.fit(net, params, (X, y), w.loss, optimizer, epochs=3)[0]  # the same 3 steps
        _assert_close("fnnet fit", w, full_batch, reference)
        torch_sgd = baselines.torch_step(w, params, X, y)
        if torch_sgd is not None:
            torch_run, torch_params = torch_sgd
            for _ in range(3):
                torch_run(1)
            _assert_close("torch", w, torch_params(), reference)

        start = time.perf_counter()
        _block(fnnet.fit(net, params, (Xf, yf), w.loss, optimizer, **fit_kw)[0])
        first["fnnet fit"] = time.perf_counter() - start

        def run_fit():  # per step: one call of fit_epochs × n_fit steps, divided below
            _block(fnnet.fit(net, params, (Xf, yf), w.loss, optimizer, **fit_kw)[0])

        def run_numpy():  # always from the same params: numpy has no flush-to-zero, and as
            np_step(np_params, Xn, yn)  # training drifts into denormals it slows 50×

        runs = _step_runs(raw, fnnet_steps, params, optimizer, X, y) | {"fnnet fit": run_fit, "numpy": run_numpy}
        samples, compile_s, choice = _interleaved(args, runs, torch_sgd, notes, first)
        samples["fnnet fit"] = [s / (fit_epochs * n_fit) for s in samples["fnnet fit"]]
        times = {name: timing.summary(s) for name, s in samples.items()}
        base = times["raw JAX"]["median"]
        rows = {}
        for name, t in times.items():
            rows[name] = t | {"ratio_to_raw_jax": t["median"] / base,
                              "paired_ratio_to_raw_jax": timing.paired_ratio(samples[name], samples["raw JAX"]),
                              "compile_s": compile_s.get(name)}
            if peak_gflops and w.name == "W3":
                rows[name]["gflops"] = w.flops_per_step() / t["median"] / 1e9
                rows[name]["fraction_of_peak"] = rows[name]["gflops"] / peak_gflops
        rows["fnnet backprop"]["ratio_to_autodiff"] = (times["fnnet backprop"]["median"]
                                                       / times["fnnet autodiff"]["median"])
        if "torch" in rows:
            rows["torch"] |= choice
        result[w.name] = {"title": w.title, "batch": w.batch, "rows": rows}

    lines = [f"time per SGD step after compilation, float32, medians of {args.repeats} interleaved rounds; "
             f"× raw JAX: ratio of medians, paired: median over rounds of the ratio within a round"]
    header = (f"{'workload':<28}{'implementation':<17}{'µs/step':>10}{'q25–q75':>18}{'× raw JAX':>11}{'paired':>8}"
              f"{'compile s':>11}")
    lines.append(header + ("  % of matmul peak" if peak_gflops else ""))
    for name, r in result.items():
        for impl, row in r["rows"].items():
            spread = f"{_us(row['q25'])}–{_us(row['q75'])}"
            compiled = "" if row["compile_s"] is None else f"{row['compile_s']:.2f}"
            extra = f"{100 * row['fraction_of_peak']:>17.0f}%" if "fraction_of_peak" in row else ""
            label = f"torch, {row['threads']} thr." if impl == "torch" else impl
            lines.append(f"{name + ' ' + r['title']:<28}{label:<17}{_us(row['median']):>10}{spread:>18}"
                         f"{row['ratio_to_raw_jax']:>11.2f}{row['paired_ratio_to_raw_jax']:>8.2f}{compiled:>11}{extra}")
    lines.append("backprop / autodiff: " + ", ".join(
        f"{name} {r['rows']['fnnet backprop']['ratio_to_autodiff']:.2f}" for name, r in result.items()))
    torch_rows = {name: r["rows"]["torch"] for name, r in result.items() if "torch" in r["rows"]}
    if torch_rows:
        lines.append(_torch_threads_line(torch_rows))
    lines += notes[:1]
    return {"workloads": result, "notes": notes[:1]}, "\n".join(lines)


CNN_IMPLEMENTATIONS = ("raw JAX", "fnnet backprop", "fnnet autodiff", "fnnet fit backprop", "fnnet fit autodiff",
                       "torch")


def conv_peak(args):
    """The machine's float32 convolution peak: a jitted 3×3 "SAME" `lax.conv_general_dilated`
    forward, 64 images of 32×32×64 → 64 channels (8 of 16×16×32 → 32 in --smoke)."""
    import jax
    import jax.numpy as jnp
    from jax import lax

    N, H, C, O = (8, 16, 32, 32) if args.smoke else (64, 32, 64, 64)
    x = jax.random.normal(jax.random.key(0), (N, H, H, C), jnp.float32)
    W = jax.random.normal(jax.random.key(1), (3, 3, C, O), jnp.float32)
    conv = jax.jit(lambda x, W: lax.conv_general_dilated(x, W, (1, 1), "SAME",
                                                          dimension_numbers=("NHWC", "HWIO", "NHWC")))
    _block(conv(x, W))
    run = lambda: _block(conv(x, W))
    t = timing.interleaved({"conv": run}, args.repeats, timing.calls_per_timing(run, args.target), args.settle)["conv"]
    flops = 2 * N * H * H * 9 * C * O
    return t | {"shape": f"{N}×{H}×{H}×{C}→{O}, 3×3", "gflops": flops / t["median"] / 1e9}


def cnn(args, peak_gflops=None):
    """Steady-state time per SGD step of raw JAX, fnnet (both gradient modes) and torch on the
    CNNs W5 and W6, interleaved; the conv FLOP/s of each against a measured conv peak."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax

    import fnnet

    peak_conv = conv_peak(args)
    result, notes = {}, []
    for w in workloads.CNN_WORKLOADS:
        batch = w.smoke_batch if args.smoke else w.batch
        net, optimizer = w.net(), optax.sgd(w.lr)
        params, state0 = net.init(jax.random.key(0)), net.init_state()
        X, y = w.data(jax.random.key(1), batch)
        copy = lambda tree: jax.tree.map(jnp.copy, tree)
        raw = baselines.raw_cnn_step(w)
        fnnet_steps = {g: fnnet.train_step(net, w.loss, optimizer, grad=g, metrics=("loss",))
                       for g in fnnet.train.GRAD_MODES}

        def fnnet_call(g, p, o, s):
            """(params, opt_state, state, loss) after one step; `s` is None without BatchNorm."""
            if net.has_state:
                p, o, m, s = fnnet_steps[g](p, o, X, y, state=s)
            else:
                p, o, m = fnnet_steps[g](p, o, X, y)
            return p, o, s, m["loss"]

        # Correctness first, as in `steps`: 3 steps of each land where raw JAX's do (the params,
        # and BatchNorm's running statistics); the first call's time, less a step's, is compiling.
        first = {}
        reference, ref_state = copy(params), copy(state0)
        for _ in range(3):
            start = time.perf_counter()
            reference, ref_state, value = raw(reference, ref_state, X, y)
            _block(value)
            first.setdefault("raw JAX", time.perf_counter() - start)
        for g in fnnet_steps:
            p, o, s = copy(params), optimizer.init(params), copy(state0) if net.has_state else None
            for _ in range(3):
                start = time.perf_counter()
                p, o, s, value = fnnet_call(g, p, o, s)
                _block(value)
                first.setdefault(f"fnnet {g}", time.perf_counter() - start)
            _assert_close(f"fnnet {g}", w, (p, s), (reference, ref_state), w.tol, initial=(params, state0),
                          what="updates of the parameters and state than raw JAX in 3 steps")
        torch_sgd = baselines.torch_cnn_step(w, params, X, y)
        if torch_sgd is not None:
            torch_run, torch_params = torch_sgd
            for _ in range(3):
                torch_run(1)
            _assert_close("torch", w, torch_params(), reference, w.tol, initial=params,
                          what="updates of the parameters than raw JAX in 3 steps")

        current = {"raw JAX": (copy(params), copy(state0)),
                   **{f"fnnet {g}": (copy(params), optimizer.init(params), copy(state0) if net.has_state else None)
                      for g in fnnet_steps}}

        def run_raw():
            p, s, value = raw(*current["raw JAX"], X, y)
            current["raw JAX"] = (p, s)
            _block(value)

        def fnnet_runner(g):
            def run():
                *carry, value = fnnet_call(g, *current[f"fnnet {g}"])
                current[f"fnnet {g}"] = tuple(carry)
                _block(value)
            return run

        # fit: 4 minibatches of the batch per epoch, inside fit's compiled scan over steps (a
        # loop, where XLA's CPU convolutions can run far slower than in a lone step)
        n_fit = 4
        Xf, yf = jnp.tile(X, (n_fit, 1, 1, 1)), jnp.tile(y, (n_fit,))
        fit_kw = dict(epochs=1, batch_size=batch, key=jax.random.key(2),
                      **({"state": state0} if net.has_state else {}))

        def fit_runner(g):
            def run():  # per step: one epoch of n_fit steps, divided below
                _block(fnnet.fit(net, params, (Xf, yf), w.loss, optimizer, grad=g, **fit_kw)[0])
            return run

        # (--smoke leaves out autodiff's fit, whose steps in that loop are the slow ones)
        fit_modes = ("backprop",) if args.smoke else fnnet.train.GRAD_MODES
        for g in fit_modes:
            start = time.perf_counter()
            fit_runner(g)()
            first[f"fnnet fit {g}"] = time.perf_counter() - start
        runs = {"raw JAX": run_raw, **{f"fnnet {g}": fnnet_runner(g) for g in fnnet_steps},
                **{f"fnnet fit {g}": fit_runner(g) for g in fit_modes}}
        samples, compile_s, choice = _interleaved(args, runs, torch_sgd, notes, first)
        for g in fit_modes:
            samples[f"fnnet fit {g}"] = [t / n_fit for t in samples[f"fnnet fit {g}"]]
        flops = w.conv_flops_per_step(batch)
        rows = {}
        for name, sample in samples.items():
            t = timing.summary(sample)
            rows[name] = t | {"ratio_to_raw_jax": t["median"] / timing.summary(samples["raw JAX"])["median"],
                              "paired_ratio_to_raw_jax": timing.paired_ratio(sample, samples["raw JAX"]),
                              "compile_s": compile_s.get(name),
                              "conv_gflops": flops / t["median"] / 1e9,
                              "fraction_of_conv_peak": flops / t["median"] / 1e9 / peak_conv["gflops"]}
            if peak_gflops:
                rows[name]["fraction_of_matmul_peak"] = rows[name]["conv_gflops"] / peak_gflops
        if torch_sgd is not None:
            rows["torch"] |= choice
        backprop = samples["fnnet backprop"]
        ratios = {"backprop_over_autodiff": timing.paired_ratio(backprop, samples["fnnet autodiff"]),
                  "fit_backprop_over_fit_autodiff": timing.paired_ratio(samples["fnnet fit backprop"],
                                                                        samples["fnnet fit autodiff"])
                  if "fnnet fit autodiff" in samples else None,
                  "fnnet_over_raw_jax": timing.paired_ratio(backprop, samples["raw JAX"]),
                  "raw_jax_over_torch": None, "fnnet_over_torch": None, "fit_over_torch": None}
        if "torch" in samples:
            ratios["raw_jax_over_torch"] = timing.paired_ratio(samples["raw JAX"], samples["torch"])
            ratios["fnnet_over_torch"] = timing.paired_ratio(backprop, samples["torch"])
            ratios["fit_over_torch"] = timing.paired_ratio(samples["fnnet fit backprop"], samples["torch"])
        formulations = _conv_formulations(net)
        result[w.name] = {"title": w.title, "batch": batch, "conv_flops_per_step": flops, "rows": rows,
                          "ratios": ratios, "formulations": formulations}

    lines = [f"CNN time per SGD step after compilation, float32, medians of {args.repeats} interleaved rounds; "
             f"ratios paired (median over rounds of the ratio within a round)",
             f"conv FLOPs per step: 2·N·H'·W'·k²·C·O per conv forward, again for dW and for dx (not the "
             f"first conv's dx: no one computes it); conv peak: lax.conv forward {peak_conv['shape']}, "
             f"{peak_conv['gflops']:.1f} GFLOP/s",
             f"{'workload':<41}{'implementation':<20}{'ms/step':>9}{'q25–q75':>16}{'× raw JAX':>11}"
             f"{'compile s':>11}{'conv GFLOP/s':>14}{'% conv peak':>13}"]
    for name, r in result.items():
        title = f"{name} {r['title']}, batch {r['batch']}"
        for impl, row in r["rows"].items():
            spread = f"{row['q25'] * 1e3:.2f}–{row['q75'] * 1e3:.2f}"
            compiled = "" if row["compile_s"] is None else f"{row['compile_s']:.2f}"
            label = f"torch, {row['threads']} thr." if impl == "torch" else impl
            lines.append(f"{title:<41}{label:<20}{row['median'] * 1e3:>9.2f}{spread:>16}"
                         f"{row['paired_ratio_to_raw_jax']:>11.2f}{compiled:>11}{row['conv_gflops']:>14.1f}"
                         f"{100 * row['fraction_of_conv_peak']:>12.0f}%")
            title = ""
    for key, label, target in (("backprop_over_autodiff", "fnnet backprop / fnnet autodiff (target ≤ 1.05)", 1.05),
                               ("fnnet_over_raw_jax", "fnnet backprop / raw JAX (target ≤ 1.05)", 1.05),
                               ("fit_backprop_over_fit_autodiff", "inside fit: backprop / autodiff (target ≤ 1.05)",
                                1.05),
                               ("fnnet_over_torch", "fnnet backprop / torch (stretch ≤ 1.0)", 1.0),
                               ("fit_over_torch", "inside fit: backprop / torch (stretch ≤ 1.0)", 1.0),
                               ("raw_jax_over_torch", "raw JAX / torch", None)):
        values = {n: r["ratios"][key] for n, r in result.items() if r["ratios"][key] is not None}
        if values:
            lines.append(f"{label}: " + ", ".join(
                f"{n} {v:.2f}" + ("" if target is None else f" ({'met' if v <= target else 'not met'})")
                for n, v in values.items()))
    lines.append("Conv2D formulations (impl='auto'): " + "; ".join(
        f"{n} " + ", ".join(f"{f['layer']} {f['formulation']}" for f in r["formulations"]) for n, r in result.items()))
    torch_rows = {n: r["rows"]["torch"] for n, r in result.items() if "torch" in r["rows"]}
    if torch_rows:
        lines.append(_torch_threads_line(torch_rows))
    lines += notes[:1]
    return {"conv_peak": peak_conv, "workloads": result, "notes": notes[:1]}, "\n".join(lines)


def sequences(args):
    """Steady-state time per SGD step of raw JAX, fnnet (both gradient modes, and inside fit)
    and torch on the LSTM W7 and the Transformer block W8, interleaved."""
    import jax
    import jax.numpy as jnp
    import optax

    import fnnet

    result, notes = {}, []
    for w in (w.sized(args.smoke) for w in workloads.SEQUENCE_WORKLOADS):
        net, optimizer = w.net(), optax.sgd(w.lr)
        params = net.init(jax.random.key(0))
        X, y = w.data(jax.random.key(1))
        copy = lambda tree: jax.tree.map(jnp.copy, tree)
        raw = baselines.raw_sequence_step(w)
        fnnet_steps = {g: fnnet.train_step(net, w.loss, optimizer, grad=g, metrics=("loss",))
                       for g in fnnet.train.GRAD_MODES}

        # Correctness first: 3 steps of each change the params as raw JAX's do (the updates, as
        # for the CNNs: 3 steps move a weight by a small part of its size); the first call's
        # time, less a step's, is compiling.
        first = {}
        reference = copy(params)
        for _ in range(3):
            start = time.perf_counter()
            reference, value = raw(reference, X, y)
            _block(value)
            first.setdefault("raw JAX", time.perf_counter() - start)
        for g, step in fnnet_steps.items():
            p, o = copy(params), optimizer.init(params)
            for _ in range(3):
                start = time.perf_counter()
                p, o, m = step(p, o, X, y)
                _block(m)
                first.setdefault(f"fnnet {g}", time.perf_counter() - start)
            _assert_close(f"fnnet {g}", w, p, reference, w.tol, initial=params, what=SEQUENCE_GATE)
        n_fit = 4  # fit: 4 minibatches of the batch per epoch, inside fit's compiled scan
        Xf, yf = jnp.tile(X, (n_fit, 1, 1)), jnp.tile(y, (n_fit,) + (1,) * (y.ndim - 1))
        fit_kw = dict(epochs=1, batch_size=w.batch, key=jax.random.key(2))
        full_batch = fnnet.fit(net, params, (X, y), w.loss, optimizer, epochs=3)[0]  # the same 3 steps
        _assert_close("fnnet fit backprop", w, full_batch, reference, w.tol, initial=params, what=SEQUENCE_GATE)
        torch_sgd = baselines.torch_sequence_step(w, params, X, y)
        if torch_sgd is not None:
            torch_run, torch_params = torch_sgd
            for _ in range(3):
                torch_run(1)
            _assert_close("torch", w, torch_params(), reference, w.tol, initial=params, what=SEQUENCE_GATE)

        def run_fit():  # per step: one epoch of n_fit steps, divided below
            _block(fnnet.fit(net, params, (Xf, yf), w.loss, optimizer, **fit_kw)[0])

        start = time.perf_counter()
        run_fit()
        first["fnnet fit backprop"] = time.perf_counter() - start
        runs = _step_runs(raw, fnnet_steps, params, optimizer, X, y) | {"fnnet fit backprop": run_fit}
        samples, compile_s, choice = _interleaved(args, runs, torch_sgd, notes, first)
        samples["fnnet fit backprop"] = [t / n_fit for t in samples["fnnet fit backprop"]]
        rows = {}
        for name, sample in samples.items():
            t = timing.summary(sample)
            rows[name] = t | {"ratio_to_raw_jax": t["median"] / timing.summary(samples["raw JAX"])["median"],
                              "paired_ratio_to_raw_jax": timing.paired_ratio(sample, samples["raw JAX"]),
                              "compile_s": compile_s.get(name)}
        if torch_sgd is not None:
            rows["torch"] |= choice
        backprop = samples["fnnet backprop"]
        ratios = {"backprop_over_autodiff": timing.paired_ratio(backprop, samples["fnnet autodiff"]),
                  "fnnet_over_raw_jax": timing.paired_ratio(backprop, samples["raw JAX"]),
                  "fit_over_raw_jax": timing.paired_ratio(samples["fnnet fit backprop"], samples["raw JAX"]),
                  "fnnet_over_torch": None, "raw_jax_over_torch": None}
        if "torch" in samples:
            ratios["fnnet_over_torch"] = timing.paired_ratio(backprop, samples["torch"])
            ratios["raw_jax_over_torch"] = timing.paired_ratio(samples["raw JAX"], samples["torch"])
        result[w.name] = {"title": w.title, "shape": w.describe(), "T": w.T, "batch": w.batch, "rows": rows,
                          "ratios": ratios}

    lines = [f"sequence models, time per SGD step after compilation, float32, medians of {args.repeats} "
             f"interleaved rounds; × raw JAX paired (median over rounds of the ratio within a round)",
             f"{'workload':<44}{'implementation':<20}{'µs/step':>10}{'q25–q75':>18}{'× raw JAX':>11}"
             f"{'compile s':>11}"]
    for name, r in result.items():
        titles = [f"{name} {r['title']}", f"   {r['shape']}"]
        for impl, row in r["rows"].items():
            spread = f"{_us(row['q25'])}–{_us(row['q75'])}"
            compiled = "" if row["compile_s"] is None else f"{row['compile_s']:.2f}"
            label = f"torch, {row['threads']} thr." if impl == "torch" else impl
            title = titles.pop(0) if titles else ""
            lines.append(f"{title:<44}{label:<20}{_us(row['median']):>10}{spread:>18}"
                         f"{row['paired_ratio_to_raw_jax']:>11.2f}{compiled:>11}")
    for key, label, target in (("backprop_over_autodiff", "fnnet backprop / fnnet autodiff (target ≤ 1.05)", 1.05),
                               ("fnnet_over_raw_jax", "fnnet backprop / raw JAX (target ≤ 1.05)", 1.05),
                               ("fit_over_raw_jax", "fnnet fit backprop / raw JAX", None),
                               ("fnnet_over_torch", "fnnet backprop / torch", None),
                               ("raw_jax_over_torch", "raw JAX / torch", None)):
        values = {n: r["ratios"][key] for n, r in result.items() if r["ratios"][key] is not None}
        if values:
            lines.append(f"{label}: " + ", ".join(
                f"{n} {v:.2f}" + ("" if target is None else f" ({'met' if v <= target else 'not met'})")
                for n, v in values.items()))
    torch_rows = {n: r["rows"]["torch"] for n, r in result.items() if "torch" in r["rows"]}
    if torch_rows:
        lines.append(_torch_threads_line(torch_rows))
    lines += notes[:1]
    return {"workloads": result, "notes": notes[:1]}, "\n".join(lines)


SEQUENCE_GATE = "updates of the parameters than raw JAX in 3 steps"


def memory_section(args):
    """Per sequence layer alone (`workloads.MEMORY_CASES`) at each T: the bytes of its cache and
    XLA's compiled memory of its training step (forward + hand-written backward in one jit) and
    of its backward alone; for the timed cases (attention with and without `recompute`), the
    step's time, paired with its baseline case's."""
    import jax

    cases = {case.name: case for case in workloads.MEMORY_CASES}
    Ts = workloads.MEMORY_T_SMOKE if args.smoke else workloads.MEMORY_T
    result = {}
    for name, case in cases.items():
        result[name] = {"T": {}}
        for T in Ts:
            result[name]["T"][str(T)] = memory.measure(case, T, args.smoke)
            result[name] |= {"batch": result[name]["T"][str(T)]["batch"],
                             "width": result[name]["T"][str(T)]["width"]}
    # times: every timed case at each T, in interleaved rounds with the others at that T
    timed = [name for name, case in cases.items() if case.timed]
    for T in Ts:
        runs = {}
        for name in timed:
            step = jax.jit(memory.training_step(cases[name].layer))
            args_T = memory.inputs(cases[name], T, args.smoke)
            _block(step(*args_T))
            runs[name] = functools.partial(lambda step, a: _block(step(*a)), step, args_T)
        if not runs:
            continue
        number = {n: timing.calls_per_timing(r, args.target) for n, r in runs.items()}
        samples = timing.interleaved_samples(runs, args.repeats, number, args.settle)
        for name, sample in samples.items():
            row = result[name]["T"][str(T)]
            row["time"] = timing.summary(sample)
            base = cases[name].baseline
            if base in samples:
                row["paired_time_ratio_to_baseline"] = timing.paired_ratio(sample, samples[base])
    for name, case in cases.items():
        result[name]["baseline"] = case.baseline
        if case.baseline is None:
            continue
        for T, row in result[name]["T"].items():
            base = result[case.baseline]["T"][T]
            row["ratios_to_baseline"] = {
                "cache": row["cache_bytes"] / base["cache_bytes"],
                "step_temp": row["step"]["temp"] / base["step"]["temp"],
                "backward_total": row["backward"]["total"] / base["backward"]["total"]}
            if "paired_time_ratio_to_baseline" in row:
                row["ratios_to_baseline"]["time"] = row.pop("paired_time_ratio_to_baseline")

    mib = lambda b: f"{b / memory.MIB:.2f}" if b < 10 * memory.MIB else f"{b / memory.MIB:.0f}"
    lines = ["memory of one layer's training step (forward + hand-written backward, float32), from XLA's "
             "compiled memory_analysis(); cache: the bytes forward hands to backward; step: fused in one jit, "
             "as a training step compiles it; backward: compiled alone, the cache an argument "
             "(total = arguments + outputs + temporaries)",
             f"{'layer':<30}{'T':>6}{'cache MiB':>11}{'step temp MiB':>15}{'bwd total MiB':>15}{'step ms':>10}"
             f"{'q25–q75':>17}   ratio to baseline (cache, step temp, bwd total, time)"]
    for name, r in result.items():
        labels = [name, f"   batch {r['batch']}, width {r['width']}"]
        for T, row in r["T"].items():
            t = row.get("time")
            ms = f"{t['median'] * 1e3:.2f}" if t else ""
            spread = f"{t['q25'] * 1e3:.2f}–{t['q75'] * 1e3:.2f}" if t else ""
            ratios = row.get("ratios_to_baseline")
            vs = (f"   vs {r['baseline']}: " + ", ".join(f"{v:.2f}" for v in ratios.values())) if ratios else ""
            label = labels.pop(0) if labels else ""
            lines.append(f"{label:<30}{T:>6}{mib(row['cache_bytes']):>11}{mib(row['step']['temp']):>15}"
                         f"{mib(row['backward']['total']):>15}{ms:>10}{spread:>17}{vs}")
    for name, r in result.items():
        ratios = r["T"][str(Ts[-1])].get("ratios_to_baseline")
        if ratios and abs(ratios["step_temp"] - 1) < 0.01:
            lines.append(f"{name}: the fused step's temporaries equal {r['baseline']}'s at T {Ts[-1]} although its "
                         f"cache is {ratios['cache']:.2f}× theirs: inside one jit XLA's common-subexpression "
                         f"elimination merges the recomputation with the forward's own (the same optimized "
                         f"program); the saving is the cache alone, where forward and backward run apart")
    first, last = str(Ts[0]), str(Ts[-1])
    growth = {name: r["T"][last]["cache_bytes"] / r["T"][first]["cache_bytes"] for name, r in result.items()}
    lines.append(f"cache growth from T {Ts[0]} to {Ts[-1]} (×{Ts[-1] // Ts[0]} the length): "
                 + ", ".join(f"{n} {g:.1f}×" for n, g in growth.items()))
    return {"T": list(Ts), "layers": result}, "\n".join(lines)


def _conv_formulations(net):
    """`[{"layer", "in_shape", "formulation"}]` of each Conv2D in the network's top level."""
    from fnnet.layers.combinators import _in_shapes
    shapes = _in_shapes(net.layers, net.in_shape)
    return [{"layer": f"[{i}]", "in_shape": list(shape), "formulation": layer.formulation(shape)}
            for i, (layer, shape) in enumerate(zip(net.layers, shapes)) if hasattr(layer, "formulation")]


def conv_layers(args):
    """One conv layer's forward + backward in each formulation (benchmarks/conv_formulations.py)."""
    return conv_formulations.run(args)


def _step_runs(raw, fnnet_steps, params, optimizer, X, y):
    """The timed calls of one training step each, raw JAX's and each fnnet grad mode's
    (`fnnet_steps`: mode → step), every one carrying its own params and optimizer state on
    from call to call (the steps donate their inputs)."""
    import jax
    import jax.numpy as jnp

    current = {"raw JAX": jax.tree.map(jnp.copy, params),
               **{f"fnnet {g}": (jax.tree.map(jnp.copy, params), optimizer.init(params)) for g in fnnet_steps}}

    def run_raw():
        current["raw JAX"], value = raw(current["raw JAX"], X, y)
        _block(value)

    def fnnet_runner(g):
        def run():
            p, o, m = fnnet_steps[g](*current[f"fnnet {g}"], X, y)
            current[f"fnnet {g}"] = (p, o)
            _block(m["loss"])
        return run

    return {"raw JAX": run_raw, **{f"fnnet {g}": fnnet_runner(g) for g in fnnet_steps}}


def _interleaved(args, runs, torch_sgd, notes, first):
    """Time `runs` (and torch's step, on the thread count its probe picks, if installed) in
    interleaved rounds: (samples, compile seconds of the names in `first`, torch's choice)."""
    import numpy as np

    choice = None
    if torch_sgd is None:
        notes.append("torch: not installed, skipped")
    else:
        torch_run = torch_sgd[0]
        choice = baselines.torch_threads(torch_run, args.target, args.settle)
        runs = {**runs, "torch": functools.partial(torch_run, choice["threads"])}
    number = {name: timing.calls_per_timing(run, args.target) for name, run in runs.items()}
    samples = timing.interleaved_samples(runs, args.repeats, number, args.settle)
    compile_s = {name: max(first[name] - float(np.median(samples[name])), 0.0) for name in first}
    return samples, compile_s, choice


def _us(seconds):
    us = seconds * 1e6
    return f"{us:.1f}" if us < 100 else f"{us:.0f}"


def _torch_threads_line(rows):
    """`rows`: workload -> its torch row. The chosen thread counts, and the probe behind each."""
    policy = next(iter(rows.values()))["omp_wait_policy"] or "default"
    return f"torch threads (OMP_WAIT_POLICY={policy}), chosen by a probe, µs/step at each count: " + ", ".join(
        f"{name} {row['threads']} (" + ", ".join(f"{n}: {_us(s)}" for n, s in row["threads_probe_s"].items()) + ")"
        for name, row in rows.items())


def _assert_close(name, w, params, reference, tol=1e-4, what="parameters than raw JAX after 3 steps", initial=None):
    """Raise unless `params` are within `tol` of `reference` (relative, per leaf); with `initial`,
    compare the changes from it instead (`workloads.max_rel_update_error`)."""
    error = (workloads.max_rel_error(params, reference) if initial is None
             else workloads.max_rel_update_error(params, reference, initial))
    if not error <= tol:
        raise AssertionError(f"{name} on {w.name} computes different {what} "
                             f"(max rel. error {error:.1e}): not timing a wrong computation")


def xor(args):
    """W1 end to end: 2000 epochs of the textbook's XOR training, one model and 64 at once."""
    import jax
    import numpy as np
    import optax

    import fnnet

    w = workloads.W1
    net, optimizer = w.net(), optax.sgd(w.lr)
    X, y = workloads.XOR_X, workloads.XOR_Y
    Xn, yn = np.asarray(X, np.float64), np.asarray(y, np.float64)
    epochs = 2000
    keys = jax.random.split(jax.random.key(0), 64)
    params = net.init(keys[0])
    update = baselines.raw_jax_update(w)
    raw_epochs = jax.jit(lambda p: jax.lax.scan(lambda p, _: update(p, X, y), p, length=epochs))
    bare_epochs = baselines.bare_scan(w, X, y, epochs)

    def run_numpy():
        np.random.seed(0)
        baselines.textbook_train(baselines.SimpleNN(2, 4, 1), Xn, yn, epochs, lr=1.0)

    def run_raw():
        _block(raw_epochs(params))

    def run_bare():
        _block(bare_epochs(params))

    fit_key = jax.random.key(2)  # as a user calls it: with a key (unused: one batch is the whole set)

    def run_fit():
        _block(fnnet.fit(net, params, (X, y), w.loss, optimizer, epochs=epochs, key=fit_key)[0])

    # fit's compiled program alone, called as fit calls it (no Python checks, no history transfer)
    from fnnet.train import epochs as fused
    loss = fnnet.losses.get(w.loss)
    program = fused._program(net, loss, optimizer, "backprop", fnnet.train.step.metric_names("fit", loss, None),
                             fused.Schedule(4, 4, False), epochs, None)

    def run_program():
        return _block(program(fused.Carry(params, None), fit_key, 0, X, y, None))

    def run_ensemble():
        _block(fnnet.fit_ensemble(net, keys, (X, y), w.loss, optimizer, epochs=epochs)[0])

    runs = {"numpy textbook": run_numpy, "raw JAX scan": run_raw, "bare scan": run_bare, "fnnet fit": run_fit}
    runs["fnnet fit (compiled program)"] = run_program
    runs["fnnet fit_ensemble ×64"] = run_ensemble
    notes, choice = [], None
    torch_sgd = baselines.torch_step(w, params, X, y)
    if torch_sgd is None:
        notes.append("torch: not installed, skipped")
    else:
        choice = baselines.torch_threads(torch_sgd[0], args.target, args.settle)

        def run_torch():  # a fresh model from `params`, then the plain eager loop
            step, current_params = baselines.torch_step(w, params, X, y)
            for _ in range(epochs):
                step(choice["threads"])
            return current_params()

        runs["torch eager"] = run_torch
    eager = ("numpy textbook", "torch eager")  # nothing to compile

    # correctness: the bare scan, fit and torch equal the raw-JAX scan; ensemble model 0 equals fit
    reference = raw_epochs(params)[0]
    against = "parameters than the raw JAX scan after 2000 epochs"
    _assert_close("bare scan", w, bare_epochs(params), reference, tol=1e-3, what=against)
    fitted = fnnet.fit(net, params, (X, y), w.loss, optimizer, epochs=epochs)[0]
    _assert_close("fnnet fit", w, fitted, reference, tol=1e-3, what=against)
    _assert_close("fnnet fit (compiled program)", w, run_program()[0].params, fitted, tol=0, what="parameters than fit")
    if torch_sgd is not None:
        _assert_close("torch eager", w, run_torch(), reference, tol=1e-3, what=against)
    compile_s = {}
    for name, run in runs.items():
        start = time.perf_counter()
        run()
        compile_s[name] = time.perf_counter() - start
    models = fnnet.fit_ensemble(net, keys, (X, y), w.loss, optimizer, epochs=epochs)[0]
    _assert_close("fnnet fit_ensemble model 0", w, jax.tree.map(lambda a: a[0], models), fitted, tol=1e-5,
                  what="parameters than fnnet fit")
    number = {name: timing.calls_per_timing(run, args.target) for name, run in runs.items()}
    samples = timing.interleaved_samples(runs, args.repeats, number, args.settle)
    times = {name: timing.summary(s) for name, s in samples.items()}
    numpy_s, bare_s = times["numpy textbook"]["median"], times["bare scan"]["median"]
    rows = {}
    for name, t in times.items():
        n_models = 64 if "×64" in name else 1
        rows[name] = t | {"compile_s": None if name in eager else max(compile_s[name] - t["median"], 0.0),
                          "speedup_vs_numpy": numpy_s / t["median"],
                          "ratio_to_bare_scan": t["median"] / bare_s,
                          "model_epochs_per_s": n_models * epochs / t["median"]}
    ensemble = rows["fnnet fit_ensemble ×64"]
    ensemble["throughput_vs_numpy"] = ensemble["model_epochs_per_s"] / rows["numpy textbook"]["model_epochs_per_s"]
    fit_over_bare_ms = 1e3 * (times["fnnet fit"]["median"] - bare_s)
    targets = {"fit_program_paired_ratio_to_bare_scan": timing.paired_ratio(samples["fnnet fit (compiled program)"],
                                                                            samples["bare scan"]),
               "fit_program_within_1.5x_bare_scan": times["fnnet fit (compiled program)"]["median"] <= 1.5 * bare_s,
               "fit_minus_bare_scan_ms": fit_over_bare_ms,
               "fit_paired_ratio_to_bare_scan": timing.paired_ratio(samples["fnnet fit"], samples["bare scan"]),
               "fit_within_0.1_ms_of_bare_scan": fit_over_bare_ms <= 0.1,
               "ensemble_throughput_vs_numpy": ensemble["throughput_vs_numpy"],
               "ensemble_at_least_1000x_numpy": ensemble["throughput_vs_numpy"] >= 1000}
    if choice is not None:
        rows["torch eager"] |= choice

    lines = [f"XOR 2-4-1, {epochs} epochs end to end (after compilation), medians of {args.repeats}",
             f"{'implementation':<26}{'ms':>9}{'q25–q75':>16}{'× faster than numpy':>21}{'× bare scan':>13}"
             f"{'model-epochs/s':>16}"]
    for name, r in rows.items():
        spread = f"{r['q25'] * 1e3:.3f}–{r['q75'] * 1e3:.3f}"
        label = f"torch eager, {r['threads']} thr." if name == "torch eager" else name
        lines.append(f"{label:<26}{r['median'] * 1e3:>9.3f}{spread:>16}{r['speedup_vs_numpy']:>21.1f}"
                     f"{r['ratio_to_bare_scan']:>13.2f}{r['model_epochs_per_s']:>16.3g}")
    met = {True: "met", False: "not met"}
    lines.append(f"fnnet fit's compiled program: {rows['fnnet fit (compiled program)']['ratio_to_bare_scan']:.2f}× "
                 f"the bare scan ({targets['fit_program_paired_ratio_to_bare_scan']:.2f}× paired; "
                 f"target ≤ 1.5×: {met[targets['fit_program_within_1.5x_bare_scan']]})")
    lines.append(f"fnnet fit end to end: {rows['fnnet fit']['ratio_to_bare_scan']:.2f}× the bare scan "
                 f"({targets['fit_paired_ratio_to_bare_scan']:.2f}× paired), {fit_over_bare_ms:+.3f} ms "
                 f"(target ≤ +0.1 ms: {met[targets['fit_within_0.1_ms_of_bare_scan']]})")
    lines.append(f"ensemble ×64 throughput: {ensemble['throughput_vs_numpy']:.0f}× the numpy network's model-epochs/s "
                 f"(target ≥ 1000×: {met[targets['ensemble_at_least_1000x_numpy']]})")
    if choice is not None:
        lines.append(_torch_threads_line({"W1": rows["torch eager"]}))
    lines += notes
    return {"epochs": epochs, "rows": rows, "targets": targets, "notes": notes}, "\n".join(lines)


def per_example(args):
    """fnnet.per_example_grads as a user calls it (Python and all) against its hand-written twin."""
    import jax

    import fnnet

    twin_name, name = "jit(vmap(grad))", "fnnet per_example_grads"
    result = {}
    for w in (workloads.W1, workloads.W2):
        net = w.net()
        params = net.init(jax.random.key(0))
        X, y = workloads.batch(w, jax.random.key(1))
        twin = baselines.raw_jax_per_example_grads(w)
        runs = {twin_name: lambda: _block(twin(params, X, y)),
                name: lambda: _block(fnnet.per_example_grads(net, params, X, y, w.loss))}
        first = {}
        for impl, run in runs.items():
            start = time.perf_counter()
            run()
            first[impl] = time.perf_counter() - start
        _assert_close(name, w, fnnet.per_example_grads(net, params, X, y, w.loss), twin(params, X, y),
                      what=f"per-example gradients than {twin_name}")
        number = {impl: timing.calls_per_timing(run, args.target) for impl, run in runs.items()}
        times = timing.interleaved(runs, args.repeats, number, args.settle)
        rows = {impl: t | {"ratio_to_twin": t["median"] / times[twin_name]["median"],
                           "first_call_s": first[impl]} for impl, t in times.items()}
        result[w.name] = {"title": w.title, "batch": w.batch, "rows": rows}

    lines = [f"per-example gradients of the batch, as a user calls them, medians of {args.repeats} interleaved rounds",
             f"{'workload':<28}{'implementation':<25}{'µs/call':>10}{'q25–q75':>18}{'× twin':>9}{'first call s':>14}"]
    for wname, r in result.items():
        for impl, row in r["rows"].items():
            spread = f"{_us(row['q25'])}–{_us(row['q75'])}"
            lines.append(f"{wname + ' ' + r['title']:<28}{impl:<25}{_us(row['median']):>10}{spread:>18}"
                         f"{row['ratio_to_twin']:>9.2f}{row['first_call_s']:>14.2f}")
    ratios = {wname: r["rows"][name]["ratio_to_twin"] for wname, r in result.items()}
    lines.append(f"{name} / {twin_name}: " + ", ".join(f"{k} {v:.2f}×" for k, v in ratios.items())
                 + f" (target ≤ 1.2×: {'met' if max(ratios.values()) <= 1.2 else 'not met'})")
    return {"workloads": result}, "\n".join(lines)


def scaling(args):
    """Data-parallel W3 on meshes of 1, 2, 4 simulated CPU devices, in a process of its own."""
    command = [sys.executable, "-m", "benchmarks.scaling", "--devices", "4", "--repeats", str(args.repeats),
               "--workload", "W2" if args.smoke else "W3"]
    run = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=600)
    if run.returncode:
        raise RuntimeError(f"benchmarks.scaling failed:\n{run.stderr[-3000:]}")
    result = json.loads(run.stdout)
    lines = [f"data-parallel {result['workload']} train_step (batch {result['batch']}) on simulated CPU devices "
             f"sharing {os.cpu_count()} cores",
             f"{'mesh':<22}{'µs/step':>10}{'q25–q75':>18}{'× 1-device mesh':>17}{'compile s':>11}{'rel. err':>10}"]
    for name, row in result["rows"].items():
        spread = f"{row['q25'] * 1e6:.0f}–{row['q75'] * 1e6:.0f}"
        lines.append(f"{name:<22}{row['median'] * 1e6:>10.0f}{spread:>18}{row['ratio_to_1_device_mesh']:>17.2f}"
                     f"{row['compile_s']:>11.2f}{row['max_rel_error_vs_one_device']:>10.1e}")
    return result, "\n".join(lines)


SECTIONS = {"peak": peak, "steps": steps, "cnn": cnn, "conv_layers": conv_layers, "sequences": sequences,
            "memory": memory_section, "xor": xor, "per_example": per_example, "scaling": scaling}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats (under 2 minutes)")
    parser.add_argument("--smoke", action="store_true", help="smallest setting, for the test suite")
    parser.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated: {', '.join(SECTIONS)}")
    parser.add_argument("--json", default=os.path.join(ROOT, "benchmarks", "results.json"), help="where to write")
    args = parser.parse_args(argv)
    args.repeats = 2 if args.smoke else 7 if args.quick else 21
    args.target = 0.002 if args.smoke else 0.02 if args.quick else 0.05  # seconds per timing
    args.settle = 0.0 if args.smoke else 0.2  # pause before each turn (see timing.interleaved)
    sections = args.sections.split(",")
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown:
        parser.error(f"unknown sections {unknown}; expected some of {list(SECTIONS)}")

    import jax
    report = {"machine": {"python": platform.python_version(), "jax": jax.__version__,
                          "platform": platform.platform(), "cpus": os.cpu_count(),
                          "device": str(jax.devices()[0])},
              "settings": {"quick": args.quick, "smoke": args.smoke, "repeats": args.repeats}}
    started = time.perf_counter()
    for name in sections:
        extra = {"peak_gflops": report["peak"]["peak_gflops"]} if name in ("steps", "cnn") and "peak" in report else {}
        result, table = SECTIONS[name](args, **extra)
        report[name] = result
        print(table, end="\n\n", flush=True)
    report["seconds"] = time.perf_counter() - started
    with open(args.json, "w") as f:
        json.dump(report, f, indent=1)
    print(f"{report['seconds']:.0f} s; results in {os.path.relpath(args.json)}")
    return report


if __name__ == "__main__":
    main()
