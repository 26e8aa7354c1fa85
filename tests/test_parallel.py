"""Data parallelism against single-device training: N simulated CPU devices in a subprocess (the
device count is fixed when JAX starts), and two processes joined by jax.distributed."""

import json
import pathlib
import socket
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import fnnet
from fnnet import parallel

ROOT = pathlib.Path(__file__).parent.parent

WORKER = r"""
import json, re
import jax
jax.config.update("jax_num_cpu_devices", 8)
import jax.numpy as jnp, numpy as np, optax, fnnet
from fnnet import parallel

compiles = []
jax.monitoring.register_event_duration_secs_listener(
    lambda event, secs, **kw: compiles.append(event) if event.endswith("backend_compile_duration") else None)

net = fnnet.mlp([5, 16, 3], activation="tanh")
kx, kp = jax.random.split(jax.random.key(0))
X = jax.random.normal(kx, (96, 5))
y = (X[:, 0] > 0).astype(jnp.int32) + (X[:, 1] > 0)
params = net.init(kp)
CE = "softmax_cross_entropy_with_integer_labels"
optimizer = optax.adam(1e-2)
batches = [(X[16 * i: 16 * i + 16], y[16 * i: 16 * i + 16]) for i in range(6)]
schedule = dict(epochs=3, batch_size=16, key=jax.random.key(1))
results = {}


def max_difference(a, b):
    return max(float(jnp.abs(u - v).max() / jnp.abs(v).max()) for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


for grad in ("backprop", "autodiff"):
    one = fnnet.train_step(net, CE, optimizer, grad=grad, donate=False)
    a = (params, optimizer.init(params))
    for batch in batches:
        a = one(*a, *batch)[:2]
    p1, h1 = fnnet.fit(net, params, (X, y), CE, optimizer, grad=grad, **schedule)
    for n in (4, 8):
        mesh = parallel.data_mesh(n)
        many = fnnet.train_step(net, CE, optimizer, grad=grad, mesh=mesh)
        b = jax.tree.map(jnp.copy, (params, optimizer.init(params)))  # many donates its inputs
        for i, batch in enumerate(batches):
            if i == 1:
                compiled_before = len(compiles)
            *b, metrics = many(*b, *batch)
        compiles_after_first_step = len(compiles) - compiled_before
        hlo = many.jitted.lower(*b, *batch).compile().as_text()
        pn, hn = fnnet.fit(net, params, (X, y), CE, optimizer, grad=grad, mesh=mesh, **schedule)
        results[f"{grad}-{n}"] = {
            "devices": mesh.size,
            "step_difference": max_difference(b[0], a[0]),
            "compiles_after_first_step": compiles_after_first_step,
            "param_specs": sorted({str(leaf.sharding.spec) for leaf in jax.tree.leaves(b)}),
            "metric_specs": sorted({str(m.sharding.spec) for m in metrics.values()}),
            "mesh_ok": all(leaf.sharding.mesh == mesh for leaf in jax.tree.leaves((b, metrics))),
            "all_reduces": len(re.findall(r"all-reduce(?:-start)?\(", hlo)),
            "per_device_batch": f"f32[{16 // n},5]" in hlo,
            "fit_difference": max_difference(pn, p1),
            "fit_history_difference": float(np.abs(hn["loss"] - h1["loss"]).max()),
            "fit_specs": sorted({str(leaf.sharding.spec) for leaf in jax.tree.leaves(pn)}),
        }
try:
    fnnet.fit(net, params, (X, y), CE, optimizer, epochs=1, batch_size=6, key=jax.random.key(1),
              mesh=parallel.data_mesh(4))
except ValueError as e:
    results["indivisible"] = str(e)
import contextlib, io
from fnnet import cli
results["cli"] = []
for devices in (["--devices", "4"], []):
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        code = cli.main(["train", "--data", "moons", "--hidden", "8", "--epochs", "2", "--json", *devices])
    results["cli"].append({"code": code, "results": json.loads(out.getvalue())})
print(json.dumps(results))
"""


def test_data_parallel_on_4_and_8_devices_equals_one_device():
    run = subprocess.run([sys.executable, "-c", WORKER], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    results = json.loads(run.stdout)
    for grad in fnnet.train.GRAD_MODES:
        for n in (4, 8):
            r = results[f"{grad}-{n}"]
            assert r["devices"] == n
            # same global batch, same steps: float32 rounding only (the all-reduce sums in another order)
            assert r["step_difference"] <= 1e-5 and r["fit_difference"] <= 1e-5, (grad, n, r)
            assert r["fit_history_difference"] <= 1e-5, (grad, n, r)
            assert r["compiles_after_first_step"] == 0, (grad, n, r)
            assert r["param_specs"] == r["metric_specs"] == r["fit_specs"] == ["P()"], (grad, n, r)
            assert r["mesh_ok"]
            # the batch really is split: each device sees 16 / n rows; an all-reduce sums the gradients
            assert r["per_device_batch"] and r["all_reduces"] >= 1, (grad, n, r)
    many, one = results["cli"]  # `fnnet train --devices 4` (JAX started with 8: the first 4), and without
    assert many["code"] == one["code"] == 0 and many["results"]["devices"] == 4 and one["results"]["devices"] == 1
    assert abs(many["results"]["test"]["loss"] - one["results"]["test"]["loss"]) <= 1e-5
    assert "batch size 6 does not split evenly over the 4 devices of the mesh's 'data' axis; use a multiple " \
           "of 4, e.g. 4 or 8" in results["indivisible"]


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_train_together_like_one(tmp_path):
    """examples/data_parallel.py in 2 processes × 2 CPU devices, joined on localhost by
    jax.distributed: each feeds half the rows; both end with the same parameters, equal to one
    device on all the data (the script asserts ≤ 1e-4 and reports the difference)."""
    address = f"127.0.0.1:{_free_port()}"
    script = str(ROOT / "examples" / "data_parallel.py")
    common = ["--coordinator", address, "--num-processes", "2", "--devices", "2", "--epochs", "3", "--json"]
    runs = [subprocess.Popen([sys.executable, script, *common, "--process-id", str(i)], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True) for i in range(2)]
    outputs = [run.communicate(timeout=300) for run in runs]
    for run, (out, err) in zip(runs, outputs):
        assert run.returncode == 0, err[-3000:]
    results = [json.loads(out.strip().splitlines()[-1]) for out, _ in outputs]
    assert [r["process"] for r in results] == [0, 1]
    assert all(r["processes"] == 2 and r["devices"] == 4 for r in results)
    assert results[0]["params_sha256"] == results[1]["params_sha256"]  # replicated: bit-identical
    assert max(r["max_param_difference_vs_one_device"] for r in results) <= 1e-4


def test_one_device_mesh_and_errors():
    """In this process JAX has one CPU device: a one-device mesh is the plain step, bit for bit."""
    net = fnnet.mlp([3, 4, 2])
    params = net.init(jax.random.key(0), jnp.float32)
    X, y = jnp.ones((8, 3), jnp.float32), jnp.array([0, 1] * 4)
    CE = "softmax_cross_entropy_with_integer_labels"
    optimizer = optax.sgd(0.1)
    mesh = parallel.data_mesh(1)
    plain = fnnet.train_step(net, CE, optimizer, donate=False)(params, optimizer.init(params), X, y)
    sharded = fnnet.train_step(net, CE, optimizer, donate=False, mesh=mesh)(params, optimizer.init(params), X, y)
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(plain), jax.tree.leaves(sharded)))
    with pytest.raises(ValueError, match=r"data_mesh: asked for 2 devices but JAX has 1 \(cpu\); to simulate"):
        parallel.data_mesh(2)
    with pytest.raises(TypeError, match=r"mesh must be a jax.sharding.Mesh with a 'data' axis"):
        fnnet.train_step(net, CE, optimizer, mesh=jax.make_mesh((1,), ("batch",)))
    with pytest.raises(TypeError, match=r"fit: mesh must be a jax.sharding.Mesh"):
        fnnet.fit(net, params, (X, y), CE, optimizer, epochs=1, mesh=jax.devices())
    with pytest.raises(ValueError, match=r"input x has shape \(8, 4\)"):  # checked before any device_put
        fnnet.train_step(net, CE, optimizer, mesh=mesh)(params, optimizer.init(params), jnp.ones((8, 4)), y)
