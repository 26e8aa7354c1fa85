"""Data-parallel training with jax.sharding: N devices, one host or several, one script.

    python examples/data_parallel.py                     # 4 simulated CPU devices on this machine
    python examples/data_parallel.py --devices 8         # 8 of them

Across hosts, start the same command on every host with the coordinator's address
(process 0's host and a free port), the number of processes and each one's id:

    python examples/data_parallel.py --coordinator 10.0.0.1:1234 --num-processes 2 --process-id 0
    python examples/data_parallel.py --coordinator 10.0.0.1:1234 --num-processes 2 --process-id 1

What happens: `jax.distributed.initialize` (several hosts only) connects the
processes; `fnnet.parallel.data_mesh()` lays every process's devices along one
"data" axis; each process builds the same data set from the same key but hands
fit only its own share of the rows (`global_batch`), so the global array is
split over the processes; `fit(..., mesh=mesh)` shuffles the global rows, splits
every minibatch over the devices and keeps params replicated, while jax.jit
inserts the gradient all-reduce into fnnet's hand-written backprop. Every
process ends with the same parameters, which equal a single-device run on all
the data to float32 rounding: the script checks that and prints the per-step
time of both.

On GPUs or TPUs drop --devices: the mesh uses the real devices. On one CPU
machine the simulated devices share the same cores, so expect no speed-up:
the point is that the same program runs unchanged on real hardware.
"""

import argparse
import hashlib
import json
import time


def parse(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=None,
                        help="simulated CPU devices per process (default 4 on one host; ignored on GPU/TPU)")
    parser.add_argument("--coordinator", help="host:port of process 0, to run across processes")
    parser.add_argument("--num-processes", type=int, default=1)
    parser.add_argument("--process-id", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--json", action="store_true", help="print the results as JSON (process 0)")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse(argv)
    import jax  # configured before any JAX operation: the device count is fixed when JAX starts

    devices = args.devices or (None if args.coordinator else 4)
    if devices:
        jax.config.update("jax_num_cpu_devices", devices)
    if args.coordinator:
        jax.distributed.initialize(args.coordinator, args.num_processes, args.process_id)

    import numpy as np
    import optax

    import fnnet
    from fnnet import parallel

    mesh = parallel.data_mesh()
    data = fnnet.datasets.spirals(jax.random.key(0), n=4096)
    X, y = np.asarray(data.X), np.asarray(data.y)
    rows = np.array_split(np.arange(len(X)), jax.process_count())[jax.process_index()]
    X_global, y_global = parallel.global_batch(mesh, X[rows], y[rows])  # this process's share only

    net = fnnet.mlp([2, 64, 64, 2], W_init="he_normal")
    params = net.init(jax.random.key(1))
    optimizer = optax.adam(1e-2)
    settings = dict(epochs=args.epochs, batch_size=args.batch_size, key=jax.random.key(2))
    loss = "softmax_cross_entropy_with_integer_labels"

    def timed(data, **kw):
        fnnet.fit(net, params, data, loss, optimizer, **settings, **kw)  # compile
        start = time.perf_counter()
        new, history = fnnet.fit(net, params, data, loss, optimizer, **settings, **kw)
        steps = args.epochs * (len(X) // args.batch_size)
        return new, history, (time.perf_counter() - start) / steps

    dp, history, dp_step = timed((X_global, y_global), mesh=mesh)
    one, _, one_step = timed((X, y))  # all the data, the default device
    difference = max(float(np.abs(np.asarray(a) - np.asarray(b)).max())
                     for a, b in zip(jax.tree.leaves(dp), jax.tree.leaves(one)))
    results = {
        "processes": jax.process_count(), "devices": len(mesh.devices.flat),
        "per_device_batch": args.batch_size // len(mesh.devices.flat),
        "final_loss": float(history["loss"][-1]), "final_accuracy": float(history["accuracy"][-1]),
        "max_param_difference_vs_one_device": difference,
        "us_per_step_data_parallel": dp_step * 1e6, "us_per_step_one_device": one_step * 1e6,
        "params_sha256": hashlib.sha256(b"".join(np.asarray(a).tobytes()
                                                 for a in jax.tree.leaves(dp))).hexdigest(),
    }
    if args.json:  # every process: they must agree
        print(json.dumps(results | {"process": jax.process_index()}))
    elif jax.process_index() == 0:
        print(f"{results['processes']} process(es), {results['devices']} devices on the 'data' axis, "
              f"{results['per_device_batch']} examples per device per step")
        print(f"after {args.epochs} epochs: loss {results['final_loss']:.4f}, "
              f"accuracy {results['final_accuracy']:.4f}")
        print(f"largest parameter difference from a one-device run: {difference:.1e}")
        print(f"per step: {dp_step * 1e6:.0f} µs data-parallel, {one_step * 1e6:.0f} µs on one device "
              f"({dp_step / one_step:.2f}×)")
    assert difference <= 1e-4, difference
    return results


if __name__ == "__main__":
    main()
