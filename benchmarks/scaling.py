"""Data-parallel scaling on simulated CPU devices: W3's train_step on meshes of 1, 2, 4 devices.

Run in its own process (the device count is fixed when JAX starts):
    python -m benchmarks.scaling [--devices 4] [--repeats 7]
On one CPU the devices share the same cores: this measures the overhead of the
sharded program (splitting the batch, one all-reduce per step), not a speed-up.
"""

import argparse
import json
import time


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("--devices", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--workload", default="W3")
    args = parser.parse_args(argv)

    import jax
    jax.config.update("jax_num_cpu_devices", args.devices)
    import jax.numpy as jnp
    import optax

    import fnnet
    from benchmarks import timing, workloads
    from fnnet import parallel

    w = next(w for w in workloads.WORKLOADS if w.name == args.workload)
    net, optimizer = w.net(), optax.sgd(w.lr)
    params = net.init(jax.random.key(0))
    X, y = workloads.batch(w, jax.random.key(1))
    counts = [n for n in (1, 2, 4, 8) if n <= args.devices]
    steps = {"one device, no mesh": (fnnet.train_step(net, w.loss, optimizer), None)}
    steps |= {f"{n} device{'s' * (n > 1)}": (fnnet.train_step(net, w.loss, optimizer, mesh=parallel.data_mesh(n)),
                                              parallel.data_mesh(n)) for n in counts}
    states, compile_s, results = {}, {}, {}
    reference = None
    for name, (step, mesh) in steps.items():
        state = jax.tree.map(jnp.copy, (params, optimizer.init(params)))
        if mesh is not None:
            Xn, yn = parallel.global_batch(mesh, X, y)
        else:
            Xn, yn = X, y
        start = time.perf_counter()
        *state, _ = jax.block_until_ready(step(*state, Xn, yn))
        compile_s[name] = time.perf_counter() - start
        for _ in range(2):
            *state, _ = step(*state, Xn, yn)
        # correctness first: three steps from the same params agree with one device
        params_now = jax.device_get(state[0])
        if reference is None:
            reference = params_now
        error = workloads.max_rel_error(params_now, reference)
        assert error <= 1e-4, (name, error)
        states[name] = [state, Xn, yn, step, error]

    def runner(name):
        def run():
            s = states[name]
            *s[0], metrics = s[3](*s[0], s[1], s[2])
            jax.block_until_ready(metrics)
        return run

    candidates = {name: runner(name) for name in states}
    number = timing.calls_per_timing(candidates["one device, no mesh"], 0.1)
    times = timing.interleaved(candidates, args.repeats, number)
    base = times["1 device"]["median"]
    for name in states:
        results[name] = times[name] | {"compile_s": compile_s[name], "ratio_to_1_device_mesh": times[name]["median"] / base,
                                       "max_rel_error_vs_one_device": states[name][4]}
    print(json.dumps({"workload": w.name, "batch": w.batch, "cpu_devices": args.devices, "rows": results}))


if __name__ == "__main__":
    main()
