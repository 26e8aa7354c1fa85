"""One convolution layer's forward + backward (x, W, b → z, dx, dW, db; float32, jitted) in
each formulation, on the convolutions of the CNN workloads W5 and W6:

    python -m benchmarks.conv_formulations [--repeats 9] [--json PATH]

- lax.conv + autodiff: `jax.vjp` of `lax.conv_general_dilated` + bias, what a raw-JAX step runs;
- im2col + autodiff: `jax.vjp` of patches (kh·kw shifted slices, concatenated) @ W, written here;
- fnnet conv / fnnet im2col: `Conv2D(impl=...)`'s forward and hand-written backward;
- fnnet conv, one dW conv: "conv" with dW as one convolution over the whole batch (fnnet's
  before it sliced the batch), to show what the slicing buys;
- torch: `conv2d` forward and `backward()` (oneDNN), at the faster of 1 and cpu_count() threads.

Every row computes dx, even of the first layer (in a network nobody asks for it, and every
implementation drops it). The FLOPs counted are 3 · 2·N·H'·W'·kh·kw·C·O (forward, dx, dW).
"""

import argparse
import contextlib
import functools
import json

from benchmarks import baselines, timing, workloads

FORMULATIONS = ("lax.conv + autodiff", "im2col + autodiff", "fnnet conv", "fnnet conv, one dW conv",
                "fnnet im2col", "torch")


def shapes(smoke=False):
    """`(label, (N, H, W, C, k, O))` of the convolutions of W5 and W6 (in --smoke, W5's at a
    batch of 32)."""
    chosen = [(w, w.smoke_batch if smoke else w.batch) for w in ((workloads.W5,) if smoke else workloads.CNN_WORKLOADS)]
    return [(f"{w.name}.conv{i}", s) for w, batch in chosen for i, s in enumerate(w.convs(batch))]


def _im2col(x, W):
    """A "SAME", stride-1 convolution as patches @ W, for autodiff (independent of fnnet)."""
    import jax.numpy as jnp
    k, _, C, O = W.shape
    p = k // 2
    xp = jnp.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
    H, Wd = x.shape[1:3]
    patches = jnp.concatenate([xp[:, i:i + H, j:j + Wd, :] for i in range(k) for j in range(k)], axis=-1)
    return (patches.reshape(-1, k * k * C) @ W.reshape(k * k * C, O)).reshape(*x.shape[:3], O)


@contextlib.contextmanager
def _one_dW_conv():
    """While tracing: fnnet's dW as one convolution over the whole batch."""
    from fnnet.layers import conv
    saved = conv.DW_SLICE_BYTES
    conv.DW_SLICE_BYTES = 2 ** 62
    try:
        yield
    finally:
        conv.DW_SLICE_BYTES = saved


def candidates(shape):
    """`{name: run}` for one shape, each run a no-argument function blocking on its result,
    after checking every formulation's (z, dx, dW, db) against lax.conv + autodiff."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    from jax import lax

    import fnnet

    N, H, Wd, C, k, O = shape
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((N, H, Wd, C), np.float32))
    params = {"W": jnp.asarray(rng.standard_normal((k, k, C, O), np.float32) / np.sqrt(k * k * C)),
              "b": jnp.asarray(rng.standard_normal(O, np.float32))}
    dz = jnp.asarray(rng.standard_normal((N, H, Wd, O), np.float32))

    def by_autodiff(conv):
        def run(params, x, dz):
            z, vjp = jax.vjp(lambda p, x: conv(x, p["W"]) + p["b"][None, None, None, :], params, x)
            return z, *vjp(dz)
        return jax.jit(run)

    def by_hand(impl):
        layer = fnnet.Conv2D(O, k, impl=impl)

        def run(params, x, dz):
            z, cache = layer.forward(params, x)
            dparams, dx = layer.backward(params, cache, dz)
            return z, dparams, dx
        return jax.jit(run)

    lax_conv = functools.partial(lax.conv_general_dilated, window_strides=(1, 1), padding="SAME",
                                 dimension_numbers=("NHWC", "HWIO", "NHWC"))
    fns = {"lax.conv + autodiff": by_autodiff(lambda x, W: lax_conv(x, W)), "im2col + autodiff": by_autodiff(_im2col),
           "fnnet conv": by_hand("conv"), "fnnet conv, one dW conv": by_hand("conv"), "fnnet im2col": by_hand("im2col")}
    outputs = {}
    for name, f in fns.items():
        with _one_dW_conv() if name == "fnnet conv, one dW conv" else contextlib.nullcontext():
            outputs[name] = jax.block_until_ready(f(params, x, dz))  # traces (and compiles) it now
    for name, out in outputs.items():
        error = workloads.max_rel_error(out, outputs["lax.conv + autodiff"])
        assert error <= 1e-4, f"{name} on {shape} computes other (z, dparams, dx) (max rel. error {error:.1e})"
    runs = {name: functools.partial(lambda f: jax.block_until_ready(f(params, x, dz)), f) for name, f in fns.items()}
    torch_run = baselines.torch_conv(np.asarray(x), np.asarray(params["W"]), np.asarray(params["b"]), np.asarray(dz))
    if torch_run is not None:
        run, result = torch_run
        run(1)
        error = workloads.max_rel_error(result(), outputs["lax.conv + autodiff"])
        assert error <= 1e-4, f"torch on {shape} computes other (z, dparams, dx) (max rel. error {error:.1e})"
        runs["torch"] = run
    return runs


def run(args):
    """The table: per shape, µs per forward + backward of each formulation, × lax.conv + autodiff
    (paired), GFLOP/s, and the formulation `Conv2D(impl="auto")` picks."""
    import fnnet

    result, notes = {}, []
    for label, shape in shapes(args.smoke):
        runs = candidates(shape)
        choice = None
        if "torch" in runs:
            choice = baselines.torch_threads(runs["torch"], args.target, args.settle)
            runs["torch"] = functools.partial(runs["torch"], choice["threads"])
        elif not notes:
            notes.append("torch: not installed, skipped")
        number = {name: timing.calls_per_timing(r, args.target) for name, r in runs.items()}
        samples = timing.interleaved_samples(runs, args.repeats, number, args.settle)
        N, H, Wd, C, k, O = shape
        flops = 3 * 2 * N * H * Wd * k * k * C * O
        rows = {}
        for name, s in samples.items():
            rows[name] = timing.summary(s) | {
                "paired_ratio_to_lax_autodiff": timing.paired_ratio(s, samples["lax.conv + autodiff"]),
                "gflops": flops / timing.summary(s)["median"] / 1e9}
        if choice is not None:
            rows["torch"] |= choice
        auto = fnnet.Conv2D(O, k).formulation((H, Wd, C))
        result[label] = {"shape": dict(zip("NHWCkO", shape)), "flops": flops, "auto": auto, "rows": rows}

    lines = [f"one conv layer's forward + backward (z, dx, dW, db), float32, medians of {args.repeats} interleaved "
             f"rounds; × lax.conv + autodiff: paired (median over rounds of the ratio within a round); "
             f"FLOPs 3·2·N·H'·W'·k²·C·O",
             f"{'conv (N, H, W, C→O), k=3':<30}{'formulation':<25}{'µs':>9}{'q25–q75':>18}{'× lax+AD':>10}"
             f"{'GFLOP/s':>9}"]
    for label, r in result.items():
        s = r["shape"]
        title = f"{label} ({s['N']}, {s['H']}, {s['W']}, {s['C']}→{s['O']})"
        for name, row in r["rows"].items():
            spread = f"{row['q25'] * 1e6:.0f}–{row['q75'] * 1e6:.0f}"
            shown = f"torch, {row['threads']} thr." if name == "torch" else name
            mark = " ← auto" if name == f"fnnet {r['auto']}" else ""
            lines.append(f"{title:<30}{shown:<25}{row['median'] * 1e6:>9.0f}{spread:>18}"
                         f"{row['paired_ratio_to_lax_autodiff']:>10.2f}{row['gflops']:>9.1f}{mark}")
            title = ""
    lines.append("Conv2D(impl='auto') picks: " + ", ".join(f"{label} {r['auto']}" for label, r in result.items()))
    lines += notes
    return {"shapes": result, "notes": notes}, "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--smoke", action="store_true", help="W5's convolutions at a batch of 32, 2 rounds")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)
    args.repeats = 2 if args.smoke else args.repeats
    args.target, args.settle = (0.002, 0.0) if args.smoke else (0.03, 0.1)
    result, table = run(args)
    print(table)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    return result


if __name__ == "__main__":
    main()
