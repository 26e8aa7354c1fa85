"""Sequential and Residual: nesting, their backward against jax.vjp, readable paths, checkpoints."""

import pathlib
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fnnet
from fnnet.layercheck import check_layer
from fnnet.layers import Activation, BatchNorm, Dense, Dropout, LayerNorm, Residual, Sequential

F64 = jnp.float64


def _vjp_error(layer, in_shape, batch=4, train=True):
    """max relative error of layer.backward against jax.vjp of layer.forward (params and x)."""
    report = check_layer(layer, in_shape, batch=batch, train=train, fd=False)
    return max(o.max_rel_error for r in report.results for o in r.outputs), report


NESTED = Sequential(
    Dense(6, "tanh"),
    Residual(Sequential(Dense(6, "relu"), Sequential(Dense(6), LayerNorm()))),
    Residual(Dense(4, "gelu"), shortcut=Dense(4)),
    Sequential(),  # empty: the identity
    Dense(3),
)


def test_nested_backward_equals_vjp_of_its_forward():
    error, report = _vjp_error(NESTED, (5,))
    assert report.ok and error <= 1e-12, report


def test_params_mirror_the_tree_and_a_flat_network_keeps_its_layout():
    params, out_shape = NESTED.init(jax.random.key(0), (5,), F64)
    paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(params)[0]]
    assert out_shape == (3,)
    assert "[1]['block'][1][0]['W']" in paths and "[2]['shortcut']['W']" in paths
    assert "[1]['block'][1][1]['gamma']" in paths and params[3] == [] and params[1]["shortcut"] == {}
    net = fnnet.mlp([2, 4, 1])
    assert jax.tree.map(jnp.shape, net.init(jax.random.key(0))) == [{"W": (2, 4), "b": (4,)},
                                                                    {"W": (4, 1), "b": (1,)}]


def test_the_same_keys_give_the_same_params_as_before_nesting():
    # Network.init splits its key over its layers exactly as the flat loop did.
    net = fnnet.mlp([3, 5, 2])
    k0, k1 = jax.random.split(jax.random.key(7))
    expected = [net.layers[0].init(k0, (3,))[0], net.layers[1].init(k1, (5,))[0]]
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(net.init(jax.random.key(7))),
                                                    jax.tree.leaves(expected)))


def test_residual_adds_both_paths_gradients_and_a_wrong_sum_is_caught():
    block = Residual(Sequential(Dense(4, "tanh"), Dense(4)))
    assert _vjp_error(block, (4,))[1].ok

    class DropsTheShortcut(Residual):  # dx of the block path only: the identity's dy forgotten
        def backward(self, params, caches, dy):
            grads, _ = super().backward(params, caches, dy)
            return grads, self.block.backward(params["block"], caches["block"], dy)[1]

    error, report = _vjp_error(DropsTheShortcut(block.block), (4,))
    assert not report.ok and error > 0.1 and "dx differs from jax.vjp" in report.message


def test_stateful_children_make_the_combinator_stateful_and_keys_reach_each_dropout():
    tree = Sequential(Dense(4), Residual(Sequential(BatchNorm(), Dropout(0.5))), Dropout(0.5))
    assert tree.stateful and tree.uses_key and not Sequential(Dense(2)).stateful
    params, _ = tree.init(jax.random.key(0), (4,))
    state = tree.init_state((4,))
    x = jnp.ones((64, 4))
    y, caches, new_state = tree.forward(params, state, x, key=jax.random.key(1), train=True)
    mask_inner, mask_outer = caches[1]["block"][1], caches[2]
    assert mask_inner.shape == mask_outer.shape == (64, 4) and not jnp.array_equal(mask_inner, mask_outer)
    assert not jnp.array_equal(new_state[1]["block"][0]["mean"], state[1]["block"][0]["mean"])
    for train in (True, False):
        assert _vjp_error(tree, (4,), batch=8, train=train)[1].ok


def test_errors_name_the_layer_by_its_path():
    bad = Sequential(Dense(4), Residual(Sequential(Dense(4), Residual(Dense(3)))))
    with pytest.raises(ValueError, match=re.escape("[1]['block'][1] Residual(block=Dense(n_out=3")
                       + r".*the block maps \(4,\) to \(3,\) but the shortcut to \(4,\).*strided 1×1 Conv2D"):
        bad.init(jax.random.key(0), (2,))
    with pytest.raises(ValueError, match=re.escape("Network: layer [1]['block'] Conv2D(n_out=4")
                       + r".*expects images[^\n]*\(batch, H, W, C\)$"):  # one line, no JAX note
        fnnet.Network((2, 2), (Activation("relu"), Residual(fnnet.Conv2D(4, 3))))


def test_nested_and_stateful_networks_round_trip_through_a_checkpoint(tmp_path):
    net = fnnet.Network((5,), NESTED.layers + (BatchNorm(), Dropout(0.1)))
    params, state = net.init(jax.random.key(0)), net.init_state()
    state = jax.tree.map(lambda a: a + 0.5, state)
    fnnet.save(tmp_path / "c.fnnet", params, net=net, state=state)
    ckpt = fnnet.load(tmp_path / "c.fnnet")
    assert ckpt.net == net and hash(ckpt.net) == hash(net)
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves((ckpt.params, ckpt.state)),
                                                    jax.tree.leaves((params, state))))
    with pytest.raises(ValueError, match=r"state does not fit this network"):
        fnnet.save(tmp_path / "d.fnnet", params, net=net, state=state[:-2])


def test_no_autodiff_inside_the_layers_package():
    forbidden = re.compile(r"\b(jax\.vjp|jax\.grad|jax\.jvp|jax\.linearize|jax\.linear_transpose|custom_vjp"
                           r"|custom_jvp|value_and_grad|jacfwd|jacrev)\b")
    package = pathlib.Path(fnnet.layers.__file__).parent
    sources = sorted(package.glob("*.py"))
    assert len(sources) >= 5
    offenders = [f"{p.name}:{i}" for p in sources for i, line in enumerate(p.read_text().splitlines(), 1)
                 if forbidden.search(line)]
    assert offenders == []


def test_the_summary_shows_nested_blocks_with_their_shapes_and_counts():
    net = fnnet.Network((5,), (Dense(4), Residual(Sequential(Dense(4, "tanh"), BatchNorm()), shortcut=Dense(4)),
                               Dense(2)))
    rows = [line.split() for line in str(net).splitlines()]
    assert rows[3][:2] == ["1", "Residual"] and rows[3][-2:] == ["(4,)", "48"]  # block 20 + 8, shortcut 20
    assert rows[4][:2] == ["1.block", "Sequential"] and rows[4][-1] == "28"
    assert rows[5][0] == "1.block.0" and rows[5][-2:] == ["(4,)", "20"]
    assert rows[6][0] == "1.block.1" and rows[6][-1] == "8" and rows[7][0] == "1.shortcut"
    assert str(net).splitlines()[-1] == "82 parameters"  # 24 + 48 + 10
