"""Checkpoints: bit-exact round trips, atomic writes under SIGKILL, no pickle, named errors."""

import dataclasses
import io
import json
import os
import pickle
import signal
import subprocess
import sys
import time
import zipfile
import unittest.mock

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
    with pytest.raises(ValueError, match=r"does not fit this optimizer .*\[0\]\.mu\[0\]\['W'\]\"\] has dtype "
                                         r"float32, expected bfloat16"):
        fnnet.load(path, optimizer=optax.adam(1e-2, mu_dtype=jnp.bfloat16))
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
    assert sorted(os.listdir(tmp_path)) == []  # nothing half-written left behind


def identity_init(key, shape, dtype):
    del key
    return jnp.eye(*shape, dtype=dtype)


@dataclasses.dataclass(frozen=True)
class Scaled:
    """A made-up layer wrapping another: y = factor · inner(x). Registered only where a test says."""

    inner: object
    factor: float = 2.0

    def init(self, key, in_shape, dtype=jnp.float32):
        return self.inner.init(key, in_shape, dtype)

    def forward(self, params, x):
        y, cache = self.inner.forward(params, x)
        return self.factor * y, cache

    def backward(self, params, cache, dy):
        return self.inner.backward(params, cache, self.factor * dy)


@pytest.fixture
def registry():
    """Layer types registered in a test are forgotten after it."""
    with unittest.mock.patch.dict(fnnet.layers.TYPES):  # the one registry, restored in place
        yield


ACTIVATIONS = [*fnnet.activations.ALL, fnnet.activations.leaky_relu.replace(negative_slope=0.2),
               fnnet.activations.elu.replace(alpha=0.5)]


@pytest.mark.parametrize("activation", ACTIVATIONS, ids=repr)
@pytest.mark.parametrize("initializer", fnnet.initializers.ALL, ids=repr)
def test_every_builtin_activation_and_initializer_round_trips_with_net(tmp_path, activation, initializer):
    net = fnnet.Network((2,), (fnnet.Dense(3, activation, initializer),
                               fnnet.Activation(activation)))
    fnnet.save(tmp_path / "c", net.init(jax.random.key(0)), net=net)
    loaded = fnnet.load(tmp_path / "c", net=net).net
    assert loaded == net and loaded.layers[1].activation.params == activation.params


@pytest.mark.parametrize("layer, match", [
    (fnnet.Dense(3, fnnet.activations.Activation("mine", jnp.sin, jnp.cos)),
     r"net\.layers\[1\]\.activation: activation mine is not one of fnnet's.*save without net="),
    (fnnet.Dense(3, "relu", fnnet.initializers.Initializer("eye", identity_init)),
     r"net\.layers\[1\]\.W_init: initializer eye is not one of fnnet's.*save without net="),
    (fnnet.Activation(fnnet.activations.Activation("relu", jax.nn.relu, jnp.sign)),  # not fnnet's f′
     r"net\.layers\[1\]\.activation: activation relu is not one of fnnet's"),
    (Scaled(fnnet.Dense(3)),
     r"net\.layers\[1\] is a Scaled, not a registered layer type.*fnnet\.layers\.register, or save without net="),
])
def test_what_a_checkpoint_cannot_describe_is_named_and_nothing_is_written(tmp_path, layer, match):
    path = tmp_path / "c"
    fnnet.save(path, [jnp.ones(2)])
    before = path.read_bytes()
    net = fnnet.Network((2,), (fnnet.Dense(3), layer))
    with pytest.raises(ValueError, match=match):
        fnnet.save(path, net.init(jax.random.key(0)), net=net)
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["c"]


def test_a_registered_layer_round_trips_nested_and_is_named_inside(tmp_path, registry):
    assert fnnet.layers.register(Scaled) is Scaled
    with pytest.raises(ValueError, match=r"register: a layer type named 'Dense' is registered already"):
        fnnet.layers.register(dataclasses.make_dataclass("Dense", [("n_out", int)], frozen=True))
    net = fnnet.Network((2,), (Scaled(fnnet.Dense(3, "tanh", "he_normal"), 0.5), Scaled(fnnet.Activation("relu"))))
    params = net.init(jax.random.key(0))
    fnnet.save(tmp_path / "c", params, net=net)
    assert fnnet.load(tmp_path / "c").net == net
    custom = fnnet.activations.Activation("mine", jnp.sin, jnp.cos)
    net = fnnet.Network((2,), (fnnet.Dense(3), Scaled(fnnet.Dense(3, custom))))
    with pytest.raises(ValueError, match=r"net\.layers\[1\]\.inner\.activation: activation mine"):
        fnnet.save(tmp_path / "c", net.init(jax.random.key(0)), net=net)


def write_checkpoint(path, manifest, arrays):
    """A checkpoint file built by hand, as `save` of fnnet 0.1.0 wrote it."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("manifest.json", json.dumps(manifest, indent=1))
        for name, array in arrays.items():
            buffer = io.BytesIO()
            np.lib.format.write_array(buffer, array, allow_pickle=False)
            archive.writestr(name, buffer.getvalue())


VERSION_1_NET = {"in_shape": [2], "layers": [
    {"type": "Dense", "n_out": 3, "activation": {"name": "leaky_relu", "params": {"negative_slope": 0.2}},
     "W_init": "he_normal", "b_init": "zeros"},
    {"type": "Activation", "activation": {"name": "tanh", "params": {}}},
]}


def version_1_manifest(net):
    return {"format": "fnnet-checkpoint", "version": 1, "metadata": {"epoch": 7}, "params": [
        {"path": "[0]['W']", "name": "params/0.npy", "dtype": "float32", "shape": [2, 3]},
        {"path": "[0]['b']", "name": "params/1.npy", "dtype": "float32", "shape": [3]},
    ], "params_structure": {"list": [{"dict": {"W": None, "b": None}}, {"dict": {}}]}, "net": net}


def test_a_version_1_checkpoint_loads_and_is_still_written_byte_for_byte(tmp_path):
    W, b = np.arange(6, dtype=np.float32).reshape(2, 3), np.array([0.5, -1.0, 2.0], np.float32)
    write_checkpoint(tmp_path / "old", version_1_manifest(VERSION_1_NET),
                     {"params/0.npy": W.view(np.uint32), "params/1.npy": b.view(np.uint32)})
    ckpt = fnnet.load(tmp_path / "old")
    net = fnnet.Network((2,), (fnnet.Dense(3, fnnet.activations.leaky_relu.replace(negative_slope=0.2),
                                           "he_normal", "zeros"), fnnet.Activation("tanh")))
    assert ckpt.net == net and ckpt.metadata == {"epoch": 7}
    assert bits_equal(ckpt.params, [{"W": jnp.asarray(W), "b": jnp.asarray(b)}, {}])
    fnnet.save(tmp_path / "new", ckpt.params, net=net, metadata={"epoch": 7})
    with zipfile.ZipFile(tmp_path / "old") as old, zipfile.ZipFile(tmp_path / "new") as new:
        assert new.read("manifest.json") == old.read("manifest.json")


def test_an_unknown_layer_type_on_load_is_named(tmp_path):
    net = VERSION_1_NET | {"layers": [VERSION_1_NET["layers"][0] | {"type": "Conv9D"}, VERSION_1_NET["layers"][1]]}
    write_checkpoint(tmp_path / "c", version_1_manifest(net),
                     {"params/0.npy": np.zeros((2, 3), np.uint32), "params/1.npy": np.zeros(3, np.uint32)})
    with pytest.raises(ValueError, match=r"unknown layer type 'Conv9D' .*known: Activation, .*Dense, .*register"):
        fnnet.load(tmp_path / "c")


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


def test_metadata_holds_arrays_and_numpy_scalars(tmp_path):
    stats = {"mean": jnp.arange(3.0), "std": np.array([1.0, 2.0], np.float32),
             "n": np.int64(7), "lr": np.float32(0.5), "labels": ["cat", "dog"],
             "nested": [{"half": jnp.ones((2, 2), jnp.bfloat16)}], "key": jax.random.key(3)}
    fnnet.save(tmp_path / "c", [jnp.ones(2)], metadata={"stats": stats, "epoch": 3})
    meta = fnnet.load(tmp_path / "c").metadata
    got = meta["stats"]
    assert meta["epoch"] == 3 and got["n"] == 7 and type(got["n"]) is int and got["lr"] == 0.5
    assert got["labels"] == ["cat", "dog"]
    for name in ("mean", "std"):
        assert got[name].dtype == stats[name].dtype and np.array_equal(got[name], stats[name])
    assert got["nested"][0]["half"].dtype == jnp.bfloat16
    assert np.array_equal(jax.random.key_data(got["key"]), jax.random.key_data(stats["key"]))
    with pytest.raises(TypeError, match=r"metadata\['stats'\]\['f'\] is a builtin_function_or_method"):
        fnnet.save(tmp_path / "d", [jnp.ones(2)], metadata={"stats": {"f": len}})
    assert not (tmp_path / "d").exists()


def test_save_creates_its_directory_and_keeps_the_umask(tmp_path):
    old = os.umask(0o027)
    try:
        fnnet.save(tmp_path / "run" / "deeper" / "latest.fnnet", [jnp.ones(2)])
    finally:
        os.umask(old)
    path = tmp_path / "run" / "deeper" / "latest.fnnet"
    assert fnnet.load(path).params[0].tolist() == [1.0, 1.0]
    assert path.stat().st_mode & 0o777 == 0o640  # 0666 less the umask, not mkstemp's 0600
