"""Data parallelism against single-device training: N simulated CPU devices in a subprocess (the
device count is fixed when JAX starts), and two processes joined by jax.distributed."""

import json
import pathlib
import re
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
import contextlib, io, json, re
import jax
jax.config.update("jax_num_cpu_devices", 8)
import jax.numpy as jnp, numpy as np, optax, fnnet
from jax.sharding import AxisType, Mesh, NamedSharding
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
batches = [(X[16 * i: 16 * i + 16], y[16 * i: 16 * i + 16]) for i in range(4)]
schedule = dict(epochs=2, batch_size=16, key=jax.random.key(1))
MESHES = {  # every way a user makes a mesh with a "data" axis
    "data_mesh": lambda n: parallel.data_mesh(n),
    "make_mesh (Explicit)": lambda n: jax.make_mesh((n,), ("data",), devices=jax.devices()[:n]),
    "make_mesh (Auto)": lambda n: jax.make_mesh((n,), ("data",), axis_types=(AxisType.Auto,),
                                                devices=jax.devices()[:n]),
    "Mesh": lambda n: Mesh(np.array(jax.devices()[:n]), ("data",)),
    "2-D make_mesh": lambda n: jax.make_mesh((n // 2, 2), ("data", "model"), devices=jax.devices()[:n]),
}
results = {}


def max_difference(a, b):
    return max(float(jnp.abs(u - v).max() / jnp.abs(v).max()) for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def run(how, mesh, grad):
    ctx = jax.set_mesh(mesh) if how == "jax.set_mesh" else contextlib.nullcontext()
    kw = {} if how == "jax.set_mesh" else {"mesh": mesh}
    data = batches
    if how == "sharded inputs":
        data = [jax.device_put(b, NamedSharding(mesh, jax.P("data"))) for b in batches]
    with ctx:
        step = fnnet.train_step(net, CE, optimizer, grad=grad, **kw)
        state = jax.tree.map(jnp.copy, (params, optimizer.init(params)))  # step donates its inputs
        for i, batch in enumerate(data):
            if i == 1:
                compiled_before = len(compiles)
            *state, metrics = step(*state, *batch)
        compiled = len(compiles) - compiled_before
        fitted, history = fnnet.fit(net, params, (X, y), CE, optimizer, grad=grad, **schedule, **kw)
        jitted = step.jitted()  # the program compiled for this mesh
    with jax.set_mesh(parallel.resolve("test", mesh)):
        params_now, opt_state = state
        hlo = jitted.lower(params_now, None, opt_state, *batches[0], None).compile().as_text()  # no state, no key
    return {
        "devices": mesh.size,
        "step_difference": max_difference(state[0], reference[grad]["step"]),
        "compiles_after_first_step": compiled,
        "specs": sorted({str(leaf.sharding.spec) for leaf in jax.tree.leaves((state, metrics, fitted))}),
        "on_mesh_devices": all(set(leaf.sharding.device_set) == set(mesh.devices.flat)
                               for leaf in jax.tree.leaves((state, metrics, fitted))),
        "all_reduces": len(re.findall(r"all-reduce(?:-start)?\(", hlo)),
        "per_device_batch": f"f32[{16 // mesh.shape['data']},5]" in hlo,
        "fit_difference": max_difference(fitted, reference[grad]["fit"]),
        "fit_history_difference": float(np.abs(history["loss"] - reference[grad]["history"]).max()),
    }


reference = {}
for grad in ("backprop", "autodiff"):
    one = fnnet.train_step(net, CE, optimizer, grad=grad, donate=False)
    a = (params, optimizer.init(params))
    for batch in batches:
        a = one(*a, *batch)[:2]
    p1, h1 = fnnet.fit(net, params, (X, y), CE, optimizer, grad=grad, **schedule)
    reference[grad] = {"step": a[0], "fit": p1, "history": h1["loss"]}
CASES = [  # every kind of mesh, every way to pass one, 4 and 8 devices, both grad modes
    ("data_mesh", "mesh=", 4, "backprop"), ("make_mesh (Explicit)", "jax.set_mesh", 4, "backprop"),
    ("make_mesh (Auto)", "sharded inputs", 4, "autodiff"), ("Mesh", "mesh=", 8, "backprop"),
    ("2-D make_mesh", "mesh=", 8, "autodiff"), ("make_mesh (Explicit)", "sharded inputs", 8, "backprop"),
]
for name, how, n, grad in CASES:
    try:
        results[f"{name} / {how} / {n} / {grad}"] = run(how, MESHES[name](n), grad)
    except Exception as e:
        results[f"{name} / {how} / {n} / {grad}"] = {"error": f"{type(e).__name__}: {e}"[:400]}
errors = {}
def error(name, call):
    try:
        call()
    except (TypeError, ValueError) as e:
        errors[name] = f"{type(e).__name__}: {e}"
mesh4, other = jax.make_mesh((4,), ("data",), devices=jax.devices()[:4]), jax.make_mesh((8,), ("data",))
error("indivisible", lambda: fnnet.fit(net, params, (X, y), CE, optimizer, epochs=1, batch_size=6,
                                       key=jax.random.key(1), mesh=mesh4))
error("no data axis", lambda: fnnet.train_step(net, CE, optimizer, mesh=jax.make_mesh((2, 4), ("x", "y"))))
with jax.set_mesh(mesh4):
    error("conflict fit", lambda: fnnet.fit(net, params, (X, y), CE, optimizer, mesh=other, **schedule))
    error("conflict step", lambda: fnnet.train_step(net, CE, optimizer, mesh=other)(
        params, optimizer.init(params), *batches[0]))
results["errors"] = errors
results["cli"] = []
from fnnet import cli
for devices in (["--devices", "4"], []):
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        code = cli.main(["train", "--data", "moons", "--hidden", "8", "--epochs", "2", "--batch-size", "28",
                         "--json", "--no-gradcheck", *devices])
    results["cli"].append({"code": code, "results": json.loads(out.getvalue())})
print(json.dumps(results))
"""


@pytest.mark.heavy
def test_every_kind_of_mesh_on_4_and_8_devices_equals_one_device():
    """Meshes from data_mesh, jax.make_mesh (Explicit and Auto axes), Mesh(...), a 2-D
    ("data", "model") mesh; passed as mesh=, set with jax.set_mesh, or carried by inputs the user
    sharded; on 4 and 8 devices; train_step and fit, both grad modes (each of these in at least
    one of 6 cases): each equals single-device training."""
    run = subprocess.run([sys.executable, "-c", WORKER], capture_output=True, text=True, timeout=500)
    assert run.returncode == 0, run.stderr
    results = json.loads(run.stdout)
    cases = [k for k in results if k.count(" / ") == 3]
    assert len(cases) == 6
    parts = [case.split(" / ") for case in cases]  # every kind, way, device count and grad mode appears
    assert [{p[i] for p in parts} for i in range(4)] == [
        {"data_mesh", "make_mesh (Explicit)", "make_mesh (Auto)", "Mesh", "2-D make_mesh"},
        {"mesh=", "jax.set_mesh", "sharded inputs"}, {"4", "8"}, {"backprop", "autodiff"}]
    for case in cases:
        r = results[case]
        assert "error" not in r, (case, r)
        assert r["devices"] == int(case.split(" / ")[2])
        # same global batch, same steps: float32 rounding only (the all-reduce sums in another order)
        assert r["step_difference"] <= 1e-5 and r["fit_difference"] <= 1e-5, (case, r)
        assert r["fit_history_difference"] <= 1e-5, (case, r)
        assert r["compiles_after_first_step"] == 0, (case, r)
        assert r["specs"] == ["P()"] and r["on_mesh_devices"], (case, r)  # replicated on the mesh
        # the batch really is split along "data": 16 / (its size) rows per device; one all-reduce
        assert r["per_device_batch"] and r["all_reduces"] >= 1, (case, r)
    errors = results["errors"]
    assert "batch size 6 does not split evenly over the 4 devices of the mesh's 'data' axis; use a multiple " \
           "of 4, e.g. 4 or 8" in errors["indivisible"]
    assert errors["no data axis"].startswith("TypeError: train_step: the mesh has axes ('x', 'y') but no "
                                             "'data' axis")
    for where in ("fit", "step"):
        assert re.search(r"ValueError: \w+: mesh= \('data': 8 on 8 devices\) differs from the mesh set with "
                         r"jax.set_mesh around this call \('data': 4 on 4 devices\)", errors[f"conflict {where}"])
    many, one = results["cli"]  # `fnnet train --devices 4` (JAX started with 8: the first 4), and without
    assert many["code"] == one["code"] == 0 and many["results"]["devices"] == 4 and one["results"]["devices"] == 1
    assert abs(many["results"]["test"]["loss"] - one["results"]["test"]["loss"]) <= 1e-5


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.heavy
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
    with pytest.raises(TypeError, match=r"train_step: the mesh has axes \('batch',\) but no 'data' axis"):
        fnnet.train_step(net, CE, optimizer, mesh=jax.make_mesh((1,), ("batch",)))
    with pytest.raises(TypeError, match=r"fit: mesh must be a jax.sharding.Mesh"):
        fnnet.fit(net, params, (X, y), CE, optimizer, epochs=1, mesh=jax.devices())
    with pytest.raises(ValueError, match=r"input x has shape \(8, 4\)"):  # checked before any device_put
        fnnet.train_step(net, CE, optimizer, mesh=mesh)(params, optimizer.init(params), jnp.ones((8, 4)), y)
