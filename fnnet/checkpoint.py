"""Checkpoints: parameters, optimizer state, network description and metadata in one file.

The file is a zip archive holding `manifest.json` and one raw `.npy` array per
leaf. Nothing is ever unpickled: arrays are read with `allow_pickle=False` and
everything else is JSON, so loading a file cannot execute code. Leaves are
stored as their raw bits (with their dtype name in the manifest), so the round
trip is bit-exact for every dtype, bfloat16 and float16 included, and for typed
PRNG keys. A write goes to a temporary file in the same directory, is flushed
and fsynced, then atomically renamed over the target: a process killed in the
middle of `save` leaves the previous checkpoint intact.

    fnnet.save("run/latest.fnnet", params, opt_state, net=net, metadata={"epoch": 10})
    ckpt = fnnet.load("run/latest.fnnet", optimizer=optimizer)
    ckpt.params, ckpt.opt_state, ckpt.net, ckpt.metadata
"""

import dataclasses
import inspect
import io
import json
import os
import tempfile
import zipfile

import jax
import jax.numpy as jnp
import numpy as np

from fnnet import activations, initializers, layers
from fnnet._checks import tree_mismatch
from fnnet.network import Network

FORMAT = "fnnet-checkpoint"
VERSION = 2
"""The format written for a network with state; without, version 1, as before state existed."""
READS = (1, 2)


@dataclasses.dataclass(frozen=True, eq=False)
class Checkpoint:
    """What `load` returns.

    Attributes:
      params: the parameter tree (lists and dicts of arrays), as saved.
      opt_state: the optimizer state (None unless saved and `optimizer` given).
      net: the `Network` rebuilt from its description (None if none was saved).
      metadata: the JSON metadata saved with it (a dict).
      state: the network's state (BatchNorm's running statistics), None if none was saved.
    """

    params: object
    opt_state: object
    net: "Network | None"
    metadata: dict
    state: object = None


def save(path, params, opt_state=None, *, net: "Network | None" = None, metadata=None, state=None) -> None:
    """Write a checkpoint to `path` atomically (see the module docstring).

    Args:
      path: file to (over)write; missing directories are created. The file gets the
        permissions the umask gives a new file (0644 under the usual 022).
      params: parameter tree of lists, tuples and dicts with str keys, leaves arrays.
      opt_state: optional optax state (restored by `load(..., optimizer=...)`).
      net: optional network, stored as a description so `load` can rebuild it.
      metadata: optional dict of JSON values (epoch, metrics, ...), numpy scalars
        (saved as Python numbers) and arrays, JAX or numpy (saved as arrays, bit-exact,
        and loaded as JAX arrays), nested in dicts and lists.
      state: the network's state, for a network with one (BatchNorm).
    """
    if net is not None:
        net.check_params(params)
        net.check_state(state)
    if metadata is not None and not isinstance(metadata, dict):
        raise TypeError(f"save: metadata must be a dict, got {type(metadata).__name__}")
    arrays = {}
    # Version 1 when there is no state: the same bytes as before state existed.
    version = VERSION if state is not None else 1
    manifest = {"format": FORMAT, "version": version, "metadata": _metadata_to_json(metadata or {}, arrays)}
    manifest["params"] = _encode_tree(params, arrays, "params")
    manifest["params_structure"] = _structure(params, "params")
    if opt_state is not None:
        manifest["opt_state"] = _encode_tree(opt_state, arrays, "opt_state")
    if state is not None:
        manifest["state"] = _encode_tree(state, arrays, "state")
        manifest["state_structure"] = _structure(state, "state")
    if net is not None:
        manifest["net"] = network_to_json(net)

    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    umask = os.umask(0)
    os.umask(umask)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".fnnet-", suffix=".tmp")
    try:
        os.chmod(tmp, 0o666 & ~umask)  # as open() would make it, not mkstemp's 0600
        with os.fdopen(fd, "wb") as f:
            with zipfile.ZipFile(f, "w", zipfile.ZIP_STORED) as archive:
                archive.writestr("manifest.json", json.dumps(manifest, indent=1))
                for name, array in arrays.items():
                    buffer = io.BytesIO()
                    np.lib.format.write_array(buffer, array, allow_pickle=False)
                    archive.writestr(name, buffer.getvalue())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # the rename itself survives a crash
    finally:
        os.close(dir_fd)


def load(path, *, net: "Network | None" = None, optimizer=None) -> Checkpoint:
    """Read a checkpoint written by `save`; never executes code from the file.

    Args:
      path: the checkpoint file.
      net: optional network the params must fit (checked by key path and shape),
        and that must equal the saved description when there is one.
      optimizer: needed to restore `opt_state`: its `init` gives the expected
        structure, and a state saved by another optimizer is rejected.

    Raises:
      ValueError: not a checkpoint, truncated or corrupted, or not matching
        `net` / `optimizer`; the message names the problem.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            manifest = json.loads(archive.read("manifest.json"))
            if manifest.get("format") != FORMAT:
                raise ValueError(f"{path}: not an fnnet checkpoint (format {manifest.get('format')!r})")
            if manifest.get("version") not in READS:
                raise ValueError(f"{path}: checkpoint version {manifest.get('version')}; this fnnet "
                                 f"reads versions {', '.join(map(str, READS))}")
            leaves = {name: _read_array(archive, name) for name in archive.namelist()
                      if name != "manifest.json"}
    except (zipfile.BadZipFile, EOFError, KeyError, json.JSONDecodeError, OSError) as e:
        if isinstance(e, FileNotFoundError):
            raise
        raise ValueError(f"{path}: not a readable fnnet checkpoint (truncated or corrupted?): {e}") from None

    params = _decode_structure(manifest["params_structure"],
                               _decode_leaves(manifest["params"], leaves, path))
    saved_net = network_from_json(manifest["net"]) if "net" in manifest else None
    if net is not None:
        if saved_net is not None and saved_net != net:
            raise ValueError(f"{path}: saved for a different network:\n{saved_net}\nbut got\n{net}")
        net.check_params(params)
    state = None
    if "state" in manifest:
        state = _decode_structure(manifest["state_structure"], _decode_leaves(manifest["state"], leaves, path))
    net = saved_net if saved_net is not None else net
    if net is not None:
        try:
            net.check_state(state)
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from None
    opt_state = None
    if "opt_state" in manifest and optimizer is not None:
        opt_state = _restore_opt_state(manifest["opt_state"], leaves, optimizer, params, path)
    return Checkpoint(params, opt_state, net, _metadata_from_json(manifest.get("metadata", {}), leaves, path),
                      state)


_ARRAY = "__fnnet_array__"
"""The key that marks an array in the metadata's JSON: its value is the array's manifest entry."""


def _metadata_to_json(value, arrays, where="metadata"):
    """`value` as JSON: arrays (JAX or numpy) stored in `arrays` like params leaves and marked,
    numpy scalars as Python numbers; anything else JSON cannot hold is a TypeError."""
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            raise TypeError(f"save: metadata must be JSON-serialisable: {where} has non-str keys")
        return {k: _metadata_to_json(v, arrays, f"{where}[{k!r}]") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_metadata_to_json(v, arrays, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, np.generic) and not isinstance(value, np.void):
        return value.item()
    if isinstance(value, (jax.Array, np.ndarray)):
        if value.dtype == object:
            raise TypeError(f"save: metadata must be JSON-serialisable: {where} is an object array")
        return {_ARRAY: _encode_tree(value, arrays, f"metadata/{len(arrays)}")[0]}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"save: metadata must be JSON-serialisable: {where} is a {type(value).__name__} "
                    f"({value!r:.80}); use numbers, strings, lists, dicts and arrays")


def _metadata_from_json(value, arrays, path):
    if isinstance(value, dict) and set(value) == {_ARRAY}:
        return _decode_leaves([value[_ARRAY]], arrays, path)[0]
    if isinstance(value, dict):
        return {k: _metadata_from_json(v, arrays, path) for k, v in value.items()}
    if isinstance(value, list):
        return [_metadata_from_json(v, arrays, path) for v in value]
    return value


def _read_array(archive, name):
    with archive.open(name) as f:
        try:
            return np.lib.format.read_array(io.BytesIO(f.read()), allow_pickle=False)
        except ValueError as e:  # object arrays need pickle: refused
            raise ValueError(f"array {name!r}: {e}") from None


def _encode_tree(tree, arrays, prefix):
    """Store every leaf's raw bits in `arrays`; return [{path, name, dtype, shape, key_impl}]."""
    entries = []
    for i, (path, leaf) in enumerate(jax.tree.flatten_with_path(tree)[0]):
        leaf = jnp.asarray(leaf) if not isinstance(leaf, jax.Array) else leaf
        entry = {"path": jax.tree_util.keystr(path), "name": f"{prefix}/{i}.npy"}
        if jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            entry["key_impl"] = str(jax.random.key_impl(leaf))
            leaf = jax.random.key_data(leaf)
        host = np.asarray(leaf)
        entry |= {"dtype": jnp.dtype(host.dtype).name, "shape": list(host.shape)}
        bits = host.view(f"u{host.dtype.itemsize}") if host.dtype.itemsize in (1, 2, 4, 8) else host
        arrays[entry["name"]] = np.array(bits, order="C")  # (ascontiguousarray would make 0-d 1-d)
        entries.append(entry)
    return entries


def _decode_leaves(entries, arrays, path):
    leaves = []
    for entry in entries:
        if entry["name"] not in arrays:
            raise ValueError(f"{path}: leaf {entry['path']} is missing from the file (corrupted?)")
        bits = arrays[entry["name"]]
        dtype = jnp.dtype(entry["dtype"])
        if bits.itemsize != dtype.itemsize or list(bits.shape) != entry["shape"]:
            raise ValueError(f"{path}: leaf {entry['path']} holds {bits.shape} of {bits.itemsize}-byte "
                             f"values, the manifest says {tuple(entry['shape'])} {dtype} (corrupted?)")
        leaf = jnp.asarray(bits.view(dtype))
        if "key_impl" in entry:
            leaf = jax.random.wrap_key_data(leaf, impl=entry["key_impl"])
        leaves.append(leaf)
    return leaves


def _structure(tree, where):
    """The container skeleton of a tree of lists/tuples/dicts as JSON, leaves as null."""
    if isinstance(tree, dict):
        if not all(isinstance(k, str) for k in tree):
            raise TypeError(f"save: {where} has non-str dict keys; checkpoints store str keys only")
        return {"dict": {k: _structure(v, f"{where}[{k!r}]") for k, v in sorted(tree.items())}}
    if isinstance(tree, tuple) and hasattr(tree, "_fields"):
        raise TypeError(f"save: {where} is a {type(tree).__name__}, optimizer state rather than parameters; "
                        f"the order is save(path, params, opt_state) (were the two swapped?)")
    if isinstance(tree, (list, tuple)):
        return {type(tree).__name__: [_structure(v, f"{where}[{i}]") for i, v in enumerate(tree)]}
    if tree is None:
        return {"none": None}
    if isinstance(tree, (jax.Array, np.ndarray, float, int)):
        return None
    raise TypeError(f"save: {where} is a {type(tree).__name__}; params must be lists, tuples and "
                    f"dicts of arrays (pass optimizer state as opt_state)")


def _decode_structure(structure, leaves):
    leaves = iter(leaves)

    def build(node):
        if node is None:
            return next(leaves)
        (kind, value), = node.items()
        if kind == "dict":
            return {k: build(v) for k, v in value.items()}
        if kind == "none":
            return None
        return (list if kind == "list" else tuple)(build(v) for v in value)

    return build(structure)


def _restore_opt_state(entries, arrays, optimizer, params, path):
    template = optimizer.init(params)
    expected = {jax.tree_util.keystr(p): leaf for p, leaf in jax.tree.flatten_with_path(template)[0]}
    saved = dict(zip((e["path"] for e in entries), _decode_leaves(entries, arrays, path)))
    mismatch = tree_mismatch(saved, expected, dtypes=True)  # both keyed by the leaves' key paths
    if mismatch is not None:
        raise ValueError(f"{path}: the saved optimizer state does not fit this optimizer (saved by "
                         f"another optimizer?): {mismatch.detail}")
    return jax.tree.unflatten(jax.tree.structure(template), [saved[k] for k in expected])


def network_to_json(net: Network) -> dict:
    """A JSON description of `net`: each layer's type name and dataclass fields (see
    `fnnet.layers.register`); activations and initializers by name, so fnnet's own only.

    Raises:
      ValueError: a layer or field that cannot be described, named by its path in `net`.
    """
    return {"in_shape": list(net.in_shape), "layers": _to_json(net.layers, "net.layers")}


def _to_json(value, where):
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (tuple, list)):
        return [_to_json(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, activations.Activation):
        if not value.is_builtin:
            raise ValueError(f"save: {where}: activation {value!r} is not one of fnnet's; a custom "
                             f"activation cannot be described in a checkpoint (save without net=)")
        return {"name": value.name, "params": dict(value.params)}
    if isinstance(value, initializers.Initializer):
        if not value.is_builtin:
            raise ValueError(f"save: {where}: initializer {value!r} is not one of fnnet's; a custom "
                             f"initializer cannot be described in a checkpoint (save without net=)")
        return value.name
    kind = type(value).__name__
    if layers.TYPES.get(kind) is not type(value):
        raise ValueError(f"save: {where} is a {kind}, not a registered layer type, so a checkpoint "
                         f"cannot describe it: {value!r}; register its class with "
                         f"@fnnet.layers.register, or save without net=")
    return {"type": kind} | {f.name: _to_json(getattr(value, f.name), f"{where}.{f.name}")
                             for f in dataclasses.fields(value) if f.init}


def network_from_json(description: dict) -> Network:
    """The `Network` that `network_to_json` described."""
    return Network(tuple(description["in_shape"]), _from_json(description["layers"]))


def _from_json(value):
    if isinstance(value, list):
        return tuple(_from_json(v) for v in value)
    if isinstance(value, dict) and "type" in value:
        if value["type"] not in layers.TYPES:
            raise ValueError(f"unknown layer type {value['type']!r} in the checkpoint's network "
                             f"description; known: {', '.join(sorted(layers.TYPES))} (register a "
                             f"layer class of yours with @fnnet.layers.register before loading)")
        cls = layers.TYPES[value["type"]]
        fields = {k: _from_json(v) for k, v in value.items() if k != "type"}
        star = [p.name for p in inspect.signature(cls).parameters.values() if p.kind is p.VAR_POSITIONAL]
        return cls(*fields.pop(star[0]), **fields) if star else cls(**fields)  # Sequential(*layers)
    if isinstance(value, dict):
        return activations.get(value["name"]).replace(**value["params"])
    return value  # numbers, and names (of initializers too) that the layer's __init__ resolves
