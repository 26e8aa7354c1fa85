"""Checkpoints: bit-exact round trips, atomic writes under SIGKILL, no pickle, named errors."""

import io
import json
import os
import pickle
import signal
import subprocess
import sys
import time
import zipfile

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import fnnet


def bits_equal(a, b):
    a_leaves, b_leaves = jax.tree.leaves(a), jax.tree.leaves(b)
    if jax.tree.structure(a) != jax.tree.structure(b) or len(a_leaves) != len(b_leaves):
        return False
    for x, y in zip(a_leaves, b_leaves):
        if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
            x, y = jax.random.key_data(x), jax.random.key_data(y)
        x, y = np.asarray(x), np.asarray(y)
        if x.dtype != y.dtype or x.shape != y.shape or x.tobytes() != y.tobytes():
            return False
    return True


@pytest.fixture
def trained(tmp_path):
    net = fnnet.mlp([3, 5, 2], activation=fnnet.activations.leaky_relu.replace(negative_slope=0.2))
    optimizer = optax.adam(1e-2)
    params = net.init(jax.random.key(0))
    step = fnnet.train_step(net, "softmax_cross_entropy_with_integer_labels", optimizer, donate=False)
    X, y = jax.random.normal(jax.random.key(1), (8, 3), jnp.float32), jnp.arange(8) % 2
    params, opt_state, _ = step(params, optimizer.init(params), X, y)
    return net, optimizer, params, opt_state, tmp_path / "ckpt.fnnet"


def test_round_trip_is_bit_exact_with_net_and_metadata(trained):
    net, optimizer, params, opt_state, path = trained
    fnnet.save(path, params, opt_state, net=net, metadata={"epoch": 3, "loss": 0.25})
    ckpt = fnnet.load(path, optimizer=optimizer)
    assert bits_equal(ckpt.params, params) and bits_equal(ckpt.opt_state, opt_state)
    assert ckpt.net == net and ckpt.metadata == {"epoch": 3, "loss": 0.25}
    assert type(ckpt.opt_state) is type(opt_state)


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16, jnp.float32, jnp.float64, jnp.int8, jnp.bool_])
def test_every_dtype_round_trips_bit_exactly(tmp_path, dtype):
    values = jnp.array([[0.0, -0.0, 1.5, 3e4], [1e-7, -2.0, 65504.0, 0.1]])
    tree = {"x": values.astype(dtype), "nan": jnp.array([np.nan, np.inf], jnp.float32), "items": [jnp.ones(3)]}
    fnnet.save(tmp_path / "c", tree)
    assert bits_equal(fnnet.load(tmp_path / "c").params, tree)


def test_typed_prng_keys_round_trip(tmp_path):
    tree = {"key": jax.random.key(42), "keys": jax.random.split(jax.random.key(1), 3),
            "rbg": jax.random.key(7, impl="rbg")}
    fnnet.save(tmp_path / "k", tree)
    loaded = fnnet.load(tmp_path / "k").params
    assert bits_equal(loaded, tree)
    assert jax.random.key_impl(loaded["rbg"]) == jax.random.key_impl(tree["rbg"])
    assert jnp.array_equal(jax.random.normal(loaded["key"], (3,)), jax.random.normal(tree["key"], (3,)))


def test_mismatches_are_named(trained):
    net, optimizer, params, opt_state, path = trained
    fnnet.save(path, params, opt_state, net=net)
    with pytest.raises(ValueError, match=r"saved for a different network"):
        fnnet.load(path, net=fnnet.mlp([3, 5, 2]))
    with pytest.raises(ValueError, match=r"does not fit this optimizer \(saved by another optimizer\?\)"):
        fnnet.load(path, optimizer=optax.sgd(0.1, momentum=0.9))
    fnnet.save(path, params)  # no description: the net given is checked against the params
    with pytest.raises(ValueError, match=r"params\[0\]\['W'\] has shape \(3, 5\), but layer 0 .* expects \(3, 6\)"):
        fnnet.load(path, net=fnnet.mlp([3, 6, 2]))


@pytest.mark.parametrize("damage", ["truncate", "flip_byte", "garbage", "empty"])
def test_damaged_files_raise_a_clear_error(trained, damage):
    net, optimizer, params, opt_state, path = trained
    fnnet.save(path, params, opt_state, net=net)
    data = path.read_bytes()
    if damage == "truncate":
        data = data[: len(data) // 2]
    elif damage == "flip_byte":  # inside an array: caught by the zip's CRC-32
        i = data.index(b"\x93NUMPY") + 130  # just past the first array's 128-byte header
        data = data[:i] + bytes([data[i] ^ 0xFF]) + data[i + 1 :]
    elif damage == "garbage":
        data = b"not a checkpoint at all" * 10
    else:
        data = b""
    path.write_bytes(data)
    with pytest.raises(ValueError, match=r"not a readable fnnet checkpoint \(truncated or corrupted\?\)"):
        fnnet.load(path)


def test_pickle_payloads_are_never_executed(tmp_path):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    # 1. a raw pickle under a checkpoint's name
    (tmp_path / "raw").write_bytes(pickle.dumps(Payload()))
    with pytest.raises(ValueError, match="not a readable fnnet checkpoint"):
        fnnet.load(tmp_path / "raw")
    # 2. a well-formed checkpoint whose array is an object array (a pickle inside .npy)
    fnnet.save(tmp_path / "good", {"w": jnp.ones(2)})
    with zipfile.ZipFile(tmp_path / "good") as z:
        manifest = z.read("manifest.json")
    buffer = io.BytesIO()
    np.save(buffer, np.array([Payload()], dtype=object), allow_pickle=True)
    with zipfile.ZipFile(tmp_path / "evil", "w") as z:
        z.writestr("manifest.json", manifest)
        z.writestr("params/0.npy", buffer.getvalue())
    with pytest.raises(ValueError, match=r"array 'params/0.npy': .*allow_pickle"):
        fnnet.load(tmp_path / "evil")
    assert not marker.exists()


def test_bad_save_arguments(tmp_path):
    with pytest.raises(TypeError, match=r"metadata must be JSON-serialisable"):
        fnnet.save(tmp_path / "m", {"w": jnp.ones(2)}, metadata={"f": object()})
    custom = fnnet.activations.Activation("mine", jnp.sin, jnp.cos)
    net = fnnet.mlp([2, 3, 1], activation=custom)
    with pytest.raises(ValueError, match=r"activation mine is not one of fnnet's"):
        fnnet.save(tmp_path / "n", net.init(jax.random.key(0)), net=net)
    assert sorted(os.listdir(tmp_path)) == []  # nothing half-written left behind


CHILD = r"""
import sys, jax.numpy as jnp, fnnet
path = sys.argv[1]
states = [{"w": jnp.full((256, 256), float(i)), "step": jnp.array(i)} for i in (1, 2)]
fnnet.save(path, states[0])
print("ready", flush=True)
i = 0
while True:
    fnnet.save(path, states[i % 2])
    i += 1
"""


def test_sigkill_during_saves_leaves_an_intact_checkpoint(tmp_path):
    path = tmp_path / "ckpt"
    rng = np.random.default_rng(0)
    for trial in range(6):
        child = subprocess.Popen([sys.executable, "-c", CHILD, str(path)], stdout=subprocess.PIPE, text=True)
        assert child.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0.01, 0.3))
        child.send_signal(signal.SIGKILL)
        child.wait()
        child.stdout.close()
        loaded = fnnet.load(path).params
        step = int(loaded["step"])
        assert step in (1, 2) and bool((loaded["w"] == step).all()), f"trial {trial}"
    leftovers = [name for name in os.listdir(tmp_path) if name != "ckpt"]
    assert all(name.startswith(".fnnet-") for name in leftovers)  # only temporaries of killed writes
