"""Networks with state (BatchNorm) and randomness (Dropout) through every entry point: apply,
backprop, train_step, fit, fit_ensemble, per_example_grads, predict, evaluate, the mesh."""

import json
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import fnnet
from fnnet.layers import Activation, BatchNorm, Dense, Dropout, Residual, Sequential

CE = fnnet.losses.softmax_cross_entropy_with_integer_labels
NET = fnnet.Network((6,), (Dense(8), BatchNorm(), Activation("relu"), Dropout(0.25),
                           Residual(Sequential(Dense(8, "tanh"), BatchNorm())), Dense(3)))
OPT = optax.adam(1e-2)


def _data(n=32, dtype=jnp.float32):
    X = jax.random.normal(jax.random.key(1), (n, 6), dtype)
    return X, jax.random.randint(jax.random.key(2), (n,), 0, 3)


def _close(a, b, tol):
    """Leaf by leaf, max |a − b| ≤ tol · max(1, max |b|)."""
    return all(float(jnp.abs(x - y).max()) <= tol * max(1.0, float(jnp.abs(y).max()))
               for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))


def test_apply_takes_and_returns_state_and_train_is_a_static_mode():
    params, state = NET.init(jax.random.key(0)), NET.init_state()
    X, _ = _data()
    y_eval, same = NET.apply(params, X, state=state)
    assert _close(same, state, 0)  # evaluation: running statistics used, not changed
    y_train, new = NET.apply(params, X, state=state, key=jax.random.key(3), train=True)
    assert not _close(new, state, 1e-6) and not jnp.allclose(y_eval, y_train)
    mean = X @ params[0]["W"] + params[0]["b"][None]
    np.testing.assert_allclose(new[1]["mean"], 0.1 * mean.mean(0), rtol=1e-5, atol=1e-6)  # momentum 0.1
    with pytest.raises(ValueError, match=r"keeps state .*pass state=net.init_state\(\)"):
        NET.apply(params, X)
    with pytest.raises(ValueError, match=r"Dropout\(rate=0.25\) needs a key in training"):
        NET.apply(params, X, state=state, train=True)
    other = fnnet.Network((6,), (Dense(8), BatchNorm(), Dense(3)))
    with pytest.raises(ValueError, match=r"state does not fit this network \(state from another network\?\)"):
        NET.apply(params, X, state=other.init_state())
    with pytest.raises(ValueError, match=r"state= was given, but this network keeps no state"):
        fnnet.mlp([6, 3]).apply(fnnet.mlp([6, 3]).init(jax.random.key(0)), X, state=state)


@pytest.mark.parametrize("grad", fnnet.train.GRAD_MODES)
def test_backprop_and_train_step_with_state_and_dropout_equal_jax_grad(grad):
    params, state = NET.init(jax.random.key(0), jnp.float64), NET.init_state(jnp.float64)
    X, y = _data(dtype=jnp.float64)
    key = jax.random.key(4)
    value, grads, new_state = fnnet.backprop(NET, params, X, y, CE, state=state, key=key)

    def loss(p):
        out, s = NET.apply(p, X, state=state, key=key, train=True)
        return CE(out, y).mean(), s

    (ref_value, ref_state), ref = jax.value_and_grad(loss, has_aux=True)(params)
    assert abs(value - ref_value) <= 1e-12 and _close(grads, ref, 1e-12) and _close(new_state, ref_state, 1e-12)
    step = fnnet.train_step(NET, CE, optax.sgd(0.1), grad=grad, donate=False)
    p1, _, metrics, s1 = step(params, optax.sgd(0.1).init(params), X, y, state=state, key=key)
    assert _close(p1, jax.tree.map(lambda w, g: w - 0.1 * g, params, grads), 1e-12)
    assert _close(s1, new_state, 1e-12) and abs(float(metrics["loss"]) - value) <= 1e-12


def test_fit_carries_state_returns_it_last_and_resumes_bit_identically(compiles):
    params = NET.init(jax.random.key(0))
    X, y = _data(64)
    common = dict(batch_size=16, key=jax.random.key(5), validation=(X[:16], y[:16]))
    p, opt_state, history, state = fnnet.fit(NET, params, (X, y), CE, OPT, epochs=6, return_opt_state=True,
                                             **common)
    assert set(history) == {"loss", "accuracy", "val_loss", "val_accuracy"} and history["loss"][-1] < history["loss"][0]
    # validation runs in evaluation mode: the running statistics the run returned, no dropout
    out, _ = NET.apply(p, X[:16], state=state)
    np.testing.assert_allclose(history["val_loss"][-1], CE(out, y[:16]).mean(), rtol=1e-5)
    a, a_opt, _, a_state = fnnet.fit(NET, params, (X, y), CE, OPT, epochs=3, return_opt_state=True, **common)
    b, _, _, b_state = fnnet.fit(NET, a, (X, y), CE, OPT, epochs=3, opt_state=a_opt, state=a_state,
                                 initial_epoch=3, return_opt_state=True, **common)
    assert _close((b, b_state), (p, state), 0)
    with compiles() as n:
        fnnet.fit(NET, params, (X, y), CE, OPT, epochs=6, **common)
    assert n() == 0


def test_dropout_keys_leave_the_shuffling_alone():
    # Dropout(0) draws its keys but drops nothing: the run is the run without it, bit for bit.
    plain = fnnet.Network((6,), (Dense(8, "relu"), Dense(3)))
    dropped = fnnet.Network((6,), (Dense(8, "relu"), Dropout(0.0), Dense(3)))
    X, y = _data(64)
    params = plain.init(jax.random.key(0))
    a, _ = fnnet.fit(plain, params, (X, y), CE, OPT, epochs=4, batch_size=16, key=jax.random.key(6))
    b, _ = fnnet.fit(dropped, params[:1] + [{}] + params[1:], (X, y), CE, OPT, epochs=4, batch_size=16,
                     key=jax.random.key(6))
    assert _close(a, b[:1] + b[2:], 0)
    with pytest.raises(ValueError, match=r"fit: the network has Dropout, which draws its masks from a key"):
        fnnet.fit(dropped, params[:1] + [{}] + params[1:], (X, y), CE, OPT, epochs=1)


def test_fit_ensemble_with_state_equals_fit():
    X, y = _data(32)
    keys = jax.random.split(jax.random.key(7), 3)
    sgd = optax.sgd(0.1)  # (Adam would blow up the rounding noise of the biases before a BatchNorm,
    # whose true gradient is 0, into steps of ±lr: runs that differ by rounding then drift apart)
    params, history, state = fnnet.fit_ensemble(NET, keys, (X, y), CE, sgd, epochs=3, batch_size=16,
                                                key=jax.random.key(8))
    p1, _, s1 = fnnet.fit(NET, NET.init(keys[1]), (X, y), CE, sgd, epochs=3, batch_size=16, key=jax.random.key(8))
    assert _close(jax.tree.map(lambda a: a[1], (params, state)), (p1, s1), 1e-5)


def test_per_example_grads_with_dropout_average_to_the_batch_gradient():
    net = fnnet.Network((6,), (Dense(8, "relu"), Dropout(0.5), Dense(3)))
    params = net.init(jax.random.key(0), jnp.float64)
    X, y = _data(dtype=jnp.float64)
    key = jax.random.key(9)
    per = fnnet.per_example_grads(net, params, X, y, CE, key=key)
    _, batch = fnnet.backprop(net, params, X, y, CE, key=key)
    assert jax.tree.leaves(per)[0].shape[0] == 32
    assert _close(jax.tree.map(lambda g: g.mean(0), per), batch, 1e-12)
    with pytest.raises(ValueError, match=r"has a BatchNorm, which normalises each example with the statistics"):
        fnnet.per_example_grads(NET, NET.init(jax.random.key(0)), X, y, CE)
    with pytest.raises(ValueError, match=r"the network has Dropout: pass key="):
        fnnet.per_example_grads(net, params, X, y, CE, grad="autodiff", key=key)


def test_predict_and_evaluate_run_in_evaluation_mode_with_the_state():
    params, state = NET.init(jax.random.key(0)), jax.tree.map(lambda a: a + 0.3, NET.init_state())
    X, y = _data(40)
    out, _ = NET.apply(params, X, state=state)
    # float32, batches of 16 against one of 40: rounding may differ in the last bits
    np.testing.assert_allclose(fnnet.predict(NET, params, X, state=state, batch_size=16), out, rtol=1e-5, atol=1e-6)
    scores = fnnet.evaluate(NET, params, (X, y), CE, state=state, batch_size=16)
    np.testing.assert_allclose(scores["loss"], CE(out, y).mean(), rtol=1e-5)


MESH_WORKER = r"""
import jax
jax.config.update("jax_num_cpu_devices", 4)
import json, jax.numpy as jnp, optax, fnnet
from fnnet.layers import Activation, BatchNorm, Conv2D, Dense, Flatten, MaxPool2D
net = fnnet.Network((6, 6, 2), (Conv2D(4, 3), BatchNorm(), Activation("relu"), MaxPool2D(2), Flatten(), Dense(3)))
X = jax.random.normal(jax.random.key(1), (32, 6, 6, 2)); y = jax.random.randint(jax.random.key(2), (32,), 0, 3)
opt = optax.sgd(0.1)
runs = [fnnet.fit(net, net.init(jax.random.key(0)), (X, y), "softmax_cross_entropy_with_integer_labels", opt,
                  epochs=3, batch_size=16, key=jax.random.key(3), mesh=mesh)
        for mesh in (None, fnnet.parallel.data_mesh(4))]
diff = max(float(jnp.abs(a - b).max()) for a, b in zip(jax.tree.leaves(runs[0]), jax.tree.leaves(runs[1])))
print(json.dumps({"difference": diff}))
"""


def test_a_cnn_with_batchnorm_on_a_data_mesh_uses_the_global_batch_statistics():
    run = subprocess.run([sys.executable, "-c", MESH_WORKER], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["difference"] <= 1e-5  # per-device statistics would differ by ~1e-1
