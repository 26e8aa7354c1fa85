"""Compiled training against step-by-step oracles: the textbook update, optax on jax.grad,
and fnnet's own single steps."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import fnnet
from fnnet.gradcheck import random_batch
from oracles import XOR_X, XOR_Y, tree_rel_error

BCE = fnnet.losses.sigmoid_binary_cross_entropy
CE = fnnet.losses.softmax_cross_entropy_with_integer_labels


def problem(dtype=jnp.float64, m=32, sizes=(5, 16, 16, 3), loss=CE, seed=0):
    net = fnnet.mlp(list(sizes), activation="tanh")
    kp, kd = jax.random.split(jax.random.key(seed))
    X, y = random_batch(kd, net, loss, m, dtype)
    return net, net.init(kp, dtype), X, y


def test_sgd_step_is_the_textbook_update():
    net, params, X, y = problem()
    step = fnnet.train_step(net, CE, optax.sgd(0.5), donate=False)
    new, _, metrics = step(params, optax.sgd(0.5).init(params), X, y)
    value, grads = fnnet.backprop(net, params, X, y, CE)
    expected = jax.tree.map(lambda w, dw: w - 0.5 * dw, params, grads)  # w ← w − α·(1/m)Σ…
    assert tree_rel_error(new, expected) <= 1e-15
    assert metrics["loss"] == value and 0 <= metrics["accuracy"] <= 1


@pytest.mark.parametrize("make_optimizer", [lambda: optax.adam(1e-2), lambda: optax.sgd(0.1, momentum=0.9),
                                            lambda: optax.adamw(1e-2, weight_decay=1e-3)],
                         ids=["adam", "momentum", "adamw"])
def test_optimizers_match_optax_on_jax_grad(make_optimizer):
    net, params, X, y = problem()
    optimizer = make_optimizer()
    steps = {mode: fnnet.train_step(net, CE, optimizer, grad=mode, donate=False) for mode in fnnet.train.GRAD_MODES}
    reference = jax.jit(jax.grad(lambda p: CE(net.apply(p, X), y).mean()))
    states = {mode: (params, optimizer.init(params)) for mode in steps}
    ref_params, ref_state = params, optimizer.init(params)
    for _ in range(50):
        for mode, step in steps.items():
            states[mode] = step(*states[mode], X, y)[:2]
        updates, ref_state = optimizer.update(reference(ref_params), ref_state, ref_params)
        ref_params = optax.apply_updates(ref_params, updates)
    for mode in steps:  # hand-written and autodiff trajectories agree with optax on jax.grad
        assert tree_rel_error(states[mode][0], ref_params) <= 1e-10, mode


def test_step_compiles_once_donates_and_keeps_metrics_on_device():
    net, params, X, y = problem(jnp.float32)
    optimizer = optax.sgd(0.1)
    step = fnnet.train_step(net, CE, optimizer)
    opt_state = optimizer.init(params)
    for _ in range(3):
        old = params
        params, opt_state, metrics = step(params, opt_state, X, y)
        assert jax.tree.leaves(old)[0].is_deleted()  # donated: updated in place
    assert step.jitted()._cache_size() == 1
    assert all(isinstance(v, jax.Array) for v in metrics.values())


def test_mse_has_no_accuracy():
    net, params, X, y = problem(loss=fnnet.losses.mean_squared_error)
    step = fnnet.train_step(net, "mse", optax.sgd(0.1), donate=False)
    assert set(step(params, optax.sgd(0.1).init(params), X, y)[2]) == {"loss"}


def test_full_batch_fit_equals_steps_one_by_one():
    net, params, X, y = problem()
    optimizer = optax.adam(1e-2)
    fitted, history = fnnet.fit(net, params, (X, y), CE, optimizer, epochs=30)
    step = fnnet.train_step(net, CE, optimizer, donate=False)
    p, s, losses = params, optimizer.init(params), []
    for _ in range(30):
        p, s, m = step(p, s, X, y)
        losses.append(m["loss"])
    assert tree_rel_error(fitted, p) <= 1e-12
    np.testing.assert_allclose(history["loss"], losses, rtol=1e-12)
    assert set(history) == {"loss", "accuracy"} and history["loss"].shape == (30,)


def test_minibatch_fit_equals_steps_on_the_documented_shuffle():
    # 37 examples, batches of 8: 4 steps an epoch, 5 examples dropped (a different 5 each epoch).
    net, params, X, y = problem(m=37)
    optimizer, key = optax.sgd(0.2), jax.random.key(5)
    fitted, history = fnnet.fit(net, params, (X, y), CE, optimizer, epochs=6, batch_size=8, key=key)
    step = fnnet.train_step(net, CE, optimizer, donate=False)
    p, s = params, optimizer.init(params)
    for epoch in range(6):
        order = jax.random.permutation(jax.random.fold_in(key, epoch), 37)
        for b in range(4):
            idx = order[8 * b : 8 * b + 8]
            p, s, _ = step(p, s, X[idx], y[idx])
    assert tree_rel_error(fitted, p) <= 1e-12


def test_fit_is_deterministic_and_chunking_changes_nothing():
    """The same key gives bit-identical runs; the other grad mode agrees to float32 rounding."""
    net, params, X, y = problem(jnp.float32, m=40)
    args = (net, params, (X, y), CE, optax.adam(1e-2))
    a = fnnet.fit(*args, epochs=12, batch_size=16, key=jax.random.key(1))
    b = fnnet.fit(*args, epochs=12, batch_size=16, key=jax.random.key(1))
    calls = []
    c = fnnet.fit(*args, epochs=12, batch_size=16, key=jax.random.key(1), log_every=5,
                  callback=lambda epoch, history: calls.append((epoch, len(history["loss"]))))
    for other in (b, c):  # bit-identical
        assert all(np.array_equal(u, v) for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(other)))
    assert calls == [(5, 5), (10, 10), (12, 12)]
    autodiff = fnnet.fit(*args, epochs=12, batch_size=16, key=jax.random.key(1), grad="autodiff")
    assert tree_rel_error(autodiff[0], a[0]) <= 1e-5
    assert jax.tree.leaves(params)[0].is_deleted() is False  # fit never consumes the caller's params


def test_validation_metrics():
    net, params, X, y = problem(m=40)
    _, history = fnnet.fit(net, params, (X[:30], y[:30]), CE, optax.sgd(0.1), epochs=3,
                           validation=(X[30:], y[30:]))
    assert set(history) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    final = fnnet.train.metrics(net, CE, _, X[30:], y[30:])
    assert abs(history["val_loss"][-1] - final["loss"]) <= 1e-12


def test_divergence_names_the_epoch_and_keeps_the_last_finite_params():
    net, params, X, y = problem(loss=fnnet.losses.mean_squared_error)
    X = X * 100
    with pytest.raises(fnnet.DivergenceError, match=r"non-finite at epoch \d+, step \d+") as info:
        fnnet.fit(net, params, (X, y), "mse", optax.sgd(1e3), epochs=200, batch_size=8,
                  key=jax.random.key(0), log_every=50)
    error = info.value
    assert all(jnp.isfinite(leaf).all() for leaf in jax.tree.leaves(error.params))
    assert len(error.history["loss"]) == error.epoch
    # The kept params are those before the failing step: one more step from them is non-finite
    # or they are where training stopped, never NaN.
    assert error.epoch < 200


def _first_non_finite_step(net, loss, optimizer, params, data, epochs, batch_size, key):
    """The oracle: train_step one minibatch at a time on fit's documented shuffle, until the loss
    or the params turn non-finite: (epoch, step, the params just before)."""
    step = fnnet.train_step(net, loss, optimizer, donate=False)
    state, n = (params, optimizer.init(params)), len(data[0])
    for epoch in range(epochs):
        order = jax.random.permutation(jax.random.fold_in(key, epoch), n)
        for i in range(n // batch_size):
            rows = order[i * batch_size: (i + 1) * batch_size]
            params, opt_state, m = step(*state, data[0][rows], data[1][rows])
            if not all(jnp.isfinite(leaf).all() for leaf in jax.tree.leaves((params, m["loss"]))):
                return epoch, i, state[0]
            state = (params, opt_state)
    raise AssertionError("the oracle run did not diverge")


def test_divergence_is_located_exactly_inside_a_block():
    """The guard is checked once per block of epochs; the step it names, and the params it keeps,
    are the ones a step-by-step run finds: epochs cross block boundaries and chunk boundaries."""
    net, params, X, y = problem(loss=fnnet.losses.mean_squared_error, m=24, sizes=(5, 8, 3))
    y = jax.random.normal(jax.random.key(5), (24, 3))
    optimizer = optax.sgd(5.0)
    kw = dict(batch_size=8, key=jax.random.key(0))
    epoch, step, before = _first_non_finite_step(net, "mse", optimizer, params, (X, y), 80, **kw)
    assert epoch > fnnet.train.BLOCK  # not in the first block: the located block is a later one
    for log_every in (None, 7):
        with pytest.raises(fnnet.DivergenceError, match=rf"non-finite at epoch {epoch}, step {step};") as info:
            fnnet.fit(net, params, (X, y), "mse", optimizer, epochs=80, log_every=log_every, **kw)
        assert tree_rel_error(info.value.params, before) <= 1e-10
        assert len(info.value.history["loss"]) == epoch and np.isfinite(info.value.history["loss"]).all()
    # the same run as model 1 of an ensemble (model 0 trains on): its step, and its params before it
    kp = jax.random.split(jax.random.key(0))[0]  # problem()'s init key
    models, history = fnnet.fit_ensemble(net, jnp.stack([kp, kp]), (X, y), "mse", optax.sgd,
                                         learning_rates=[0.01, 5.0], epochs=80, dtype=jnp.float64, **kw)
    assert history["diverged_at"][0] == -1 and np.isfinite(history["loss"][0]).all()
    assert history["diverged_at"][1] == epoch * 3 + step
    # (vmapped, the sums round in another order; by now the weights are 1e154, so 1e-6)
    assert tree_rel_error(jax.tree.map(lambda a: a[1], models), before) <= 1e-6


def test_per_example_grads_average_to_the_batch_gradient():
    net, params, X, y = problem(m=12)
    for mode in fnnet.train.GRAD_MODES:
        per_example = fnnet.per_example_grads(net, params, X, y, CE, grad=mode)
        assert jax.tree.leaves(per_example)[0].shape[0] == 12
        _, batch = fnnet.backprop(net, params, X, y, CE)
        assert tree_rel_error(jax.tree.map(lambda g: g.mean(0), per_example), batch) <= 1e-12
        single = fnnet.backprop(net, params, X[3:4], y[3:4], CE)[1]
        assert tree_rel_error(jax.tree.map(lambda g: g[3], per_example), single) <= 1e-12


def test_ensemble_equals_separate_runs():
    net = fnnet.mlp([2, 4, 1], activation="relu", W_init="he_normal")
    keys = jax.random.split(jax.random.key(0), 4)
    X, y = jnp.asarray(XOR_X, jnp.float32), jnp.asarray(XOR_Y, jnp.float32)
    params, history = fnnet.fit_ensemble(net, keys, (X, y), BCE, optax.sgd(1.0), epochs=300)
    assert history["loss"].shape == (4, 300) and list(history["diverged_at"]) == [-1] * 4
    for i, k in enumerate(keys):
        single, single_history = fnnet.fit(net, net.init(k), (X, y), BCE, optax.sgd(1.0), epochs=300)
        assert tree_rel_error(jax.tree.map(lambda a: a[i], params), single) <= 1e-5
        np.testing.assert_allclose(history["loss"][i], single_history["loss"], rtol=1e-5, atol=1e-7)


def test_ensemble_learning_rate_sweep_equals_separate_runs():
    net, _, X, y = problem(m=24)
    keys = jax.random.split(jax.random.key(3), 3)
    rates = [0.01, 0.03, 0.1]
    params, _ = fnnet.fit_ensemble(net, keys, (X, y), CE, optax.adam, learning_rates=rates,
                                   epochs=5, batch_size=8, key=jax.random.key(4))
    for i, (k, lr) in enumerate(zip(keys, rates)):
        single, _ = fnnet.fit(net, net.init(k, jnp.float32), (X, y), CE, optax.adam(lr), epochs=5,
                              batch_size=8, key=jax.random.key(4))
        assert tree_rel_error(jax.tree.map(lambda a: a[i], params), single) <= 1e-5


@pytest.mark.parametrize(
    "call,error,match",
    [
        (lambda n, p, X, y: fnnet.train_step(n, CE, optax.sgd(1.0), grad="numeric"), ValueError,
         r"unknown grad mode 'numeric'; expected one of \('backprop', 'autodiff'\)"),
        (lambda n, p, X, y: fnnet.train_step(n, CE, "adam"), TypeError, r"expected an optax GradientTransformation"),
        (lambda n, p, X, y: fnnet.fit(n, p, (X, y), CE, optax.sgd(1.0), epochs=0), ValueError,
         r"epochs must be a positive int, got 0"),
        (lambda n, p, X, y: fnnet.fit(n, p, (X, y), CE, optax.sgd(1.0), epochs=1, batch_size=64), ValueError,
         r"batch_size must be an int in \[1, 32\] \(the number of examples\), got 64"),
        (lambda n, p, X, y: fnnet.fit(n, p, (X, y), CE, optax.sgd(1.0), epochs=1, batch_size=8), ValueError,
         r"batch_size=8 < 32 examples: pass key="),
        (lambda n, p, X, y: fnnet.fit(n, p, (X[:, :2], y), CE, optax.sgd(1.0), epochs=1), ValueError,
         r"input x has shape \(32, 2\); the network expects \(batch, 5\)"),
        (lambda n, p, X, y: fnnet.fit(n, p, (X, y[:, None]), CE, optax.sgd(1.0), epochs=1), ValueError,
         r"labels have shape \(32, 1\)"),
        (lambda n, p, X, y: fnnet.fit_ensemble(n, jax.random.split(jax.random.key(0), 2), (X, y), CE,
                                               optax.sgd(0.1), learning_rates=[0.1, 0.2], epochs=1), TypeError,
         r"pass an optimizer factory such as optax.sgd"),
        (lambda n, p, X, y: fnnet.fit_ensemble(n, jax.random.split(jax.random.key(0), 2), (X, y), CE,
                                               optax.sgd, learning_rates=[0.1], epochs=1), ValueError,
         r"learning_rates has shape \(1,\); expected \(2,\)"),
    ],
)
def test_bad_arguments(call, error, match):
    net, params, X, y = problem()
    with pytest.raises(error, match=match):
        call(net, params, X, y)


def test_float64_data_trains_float32_params_in_float32():
    net, params, X, y = problem(jnp.float32)
    fitted, _ = fnnet.fit(net, params, (np.asarray(X, np.float64), y), CE, optax.sgd(0.1), epochs=2)
    assert {leaf.dtype for leaf in jax.tree.leaves(fitted)} == {jnp.dtype(jnp.float32)}


def test_a_second_fit_reuses_the_compiled_epochs(compiles):
    net, params, X, y = problem(jnp.float32)
    optimizer = optax.sgd(0.1)
    fnnet.fit(net, params, (X, y), CE, optimizer, epochs=3)
    X2 = X + 1
    with compiles() as n:
        fnnet.fit(net, params, (X2, y), CE, optimizer, epochs=3)
    assert n() == 0


def test_log_every_compiles_one_program_per_chunk_length(compiles):
    """Chunks of equal length run one program (the first passes an optimizer state too); only
    a shorter last chunk compiles once more; the chunked run is the uninterrupted one, bit for bit."""
    net, params, X, y = problem(jnp.float32)
    optimizer = optax.adam(1e-2)
    kw = dict(epochs=7, batch_size=10, key=jax.random.key(3))
    whole, h_whole = fnnet.fit(net, params, (X, y), CE, optimizer, **kw)
    seen = []
    with compiles() as n:
        chunked, h = fnnet.fit(net, params, (X, y), CE, optimizer, log_every=3, **kw,
                               callback=lambda epoch, history: seen.append(epoch))
    assert seen == [3, 6, 7]
    assert n() <= 3  # the 3-epoch program, the 1-epoch program, optimizer.init
    with compiles() as n:
        fnnet.fit(net, params, (X, y), CE, optimizer, log_every=3, **kw)
    assert n() == 0
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(whole), jax.tree.leaves(chunked)))
    assert np.array_equal(h["loss"], h_whole["loss"])


def test_a_new_optimizer_object_warns_once_on_recompiling(compiles):
    net, params, X, y = problem(jnp.float32)
    net = fnnet.mlp([5, 3, 3])  # a setting no other test compiles
    params = net.init(jax.random.key(0), jnp.float32)
    fnnet.fit(net, params, (X, y), CE, optax.sgd(0.1), epochs=2)
    with pytest.warns(fnnet.RecompileWarning, match=r"fit: compiling again for a new optimizer object.*"
                      r"Create the optimizer once.*learning_rates"):
        fnnet.fit(net, params, (X, y), CE, optax.sgd(0.1), epochs=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fnnet.fit(net, params, (X, y), CE, optax.sgd(0.1), epochs=2)  # once


@pytest.mark.parametrize("name,minimum", [("breast_cancer", 0.95), ("spirals", 0.95), ("moons", 0.95)])
def test_real_and_synthetic_data_are_learnt(name, minimum):
    key = jax.random.key(0)
    k_data, k_split, k_init, k_fit = jax.random.split(key, 4)
    data = fnnet.datasets.load(name, k_data)
    (X_train, y_train), (X_test, y_test) = fnnet.datasets.split(data, k_split, 0.2)
    X_train, X_test, _ = fnnet.datasets.standardize(X_train, X_test)
    net = fnnet.mlp([X_train.shape[1], 32, 32, 1], activation="relu", W_init="he_normal")
    y_train, y_test = y_train[:, None].astype(jnp.float32), y_test[:, None].astype(jnp.float32)
    params, _ = fnnet.fit(net, net.init(k_init), (X_train, y_train), BCE, optax.adam(1e-2), epochs=200,
                          batch_size=32, key=k_fit)
    assert fnnet.train.metrics(net, BCE, params, X_test, y_test)["accuracy"] >= minimum


def test_resume_is_bit_identical_to_an_uninterrupted_run(tmp_path):
    net, params, X, y = problem(jnp.float32, m=40)
    optimizer, key = optax.adam(1e-2), jax.random.key(2)
    args = dict(batch_size=16, key=key)
    straight, _ = fnnet.fit(net, params, (X, y), CE, optimizer, epochs=10, **args)
    half, opt_state, _ = fnnet.fit(net, params, (X, y), CE, optimizer, epochs=5, return_opt_state=True, **args)
    fnnet.save(tmp_path / "ckpt", half, opt_state, net=net, metadata={"epoch": 5})
    ckpt = fnnet.load(tmp_path / "ckpt", net=net, optimizer=optimizer)
    resumed, _ = fnnet.fit(net, ckpt.params, (X, y), CE, optimizer, epochs=5, opt_state=ckpt.opt_state,
                           initial_epoch=ckpt.metadata["epoch"], **args)
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(straight), jax.tree.leaves(resumed)))


def test_non_finite_data_and_foreign_optimizer_state_are_rejected():
    net, params, X, y = problem(jnp.float32)
    with pytest.raises(ValueError, match=r"fit: data X has non-finite values \(first in row 3"):
        fnnet.fit(net, params, (X.at[3, 1].set(jnp.nan), y), CE, optax.sgd(0.1), epochs=1)
    with pytest.raises(ValueError, match=r"fit: validation X has non-finite values"):
        fnnet.fit(net, params, (X, y), CE, optax.sgd(0.1), epochs=1, validation=(X.at[0, 0].set(jnp.inf), y))
    foreign = optax.adam(1e-3).init(params)
    with pytest.raises(ValueError, match=r"opt_state does not match this optimizer and params \(from another optimizer\?\)"):
        fnnet.fit(net, params, (X, y), CE, optax.sgd(0.1, momentum=0.9), epochs=1, opt_state=foreign)


@pytest.mark.parametrize("dtype", [jnp.float16, jnp.bfloat16], ids=["float16", "bfloat16"])
def test_low_precision_params_train_in_their_dtype(dtype):
    net = fnnet.mlp([2, 8, 1], W_init="he_normal")
    params = net.init(jax.random.key(0), dtype)
    # Gradients in the low dtype, by hand and by jax.grad, are the float64 ones to its precision.
    exact = fnnet.backprop(net, jax.tree.map(lambda w: w.astype(jnp.float64), params), XOR_X, XOR_Y, BCE)[1]
    X, y = XOR_X.astype(dtype), XOR_Y.astype(dtype)
    for mode in fnnet.train.GRAD_MODES:
        grads = fnnet.train.value_and_grad(net, BCE, mode)(params, X, y)[1]
        assert {g.dtype for g in jax.tree.leaves(grads)} == {jnp.dtype(dtype)}
        assert tree_rel_error(grads, exact) <= 2 * jnp.finfo(dtype).eps, mode
    # fit keeps params and optimizer state in the dtype (float64 data is cast down) and learns XOR.
    new, opt_state, history = fnnet.fit(net, params, (XOR_X, XOR_Y), BCE, optax.sgd(0.5, momentum=0.9),
                                        epochs=300, return_opt_state=True)
    assert {leaf.dtype for leaf in jax.tree.leaves((new, opt_state))} == {jnp.dtype(dtype)}
    assert history["accuracy"][-1] == 1 and history["loss"][-1] < 0.01


def test_float16_adam_divergence_names_the_underflow():
    """Adam's eps=1e-8 is 0 in float16: a dead ReLU's zero gradient gives 0/0 at the first step."""
    net = fnnet.mlp([2, 8, 1], W_init="he_normal")
    params = net.init(jax.random.key(0), jnp.float16)
    with pytest.raises(fnnet.DivergenceError, match=r"epoch 0, step 0.*float16 underflows.*eps=1e-4"):
        fnnet.fit(net, params, (XOR_X, XOR_Y), BCE, optax.adam(1e-3), epochs=5)
    new, _ = fnnet.fit(net, params, (XOR_X, XOR_Y), BCE, optax.adam(1e-3, eps=1e-4), epochs=5)
    assert all(jnp.isfinite(leaf).all() for leaf in jax.tree.leaves(new))



DETERMINISM_SCRIPT = """
import hashlib, jax, jax.numpy as jnp, numpy as np, optax, fnnet
net = fnnet.mlp([2, 16, 3], activation="tanh")
X = jax.random.normal(jax.random.key(1), (90, 2))
y = (X[:, 0] > 0).astype(jnp.int32) + (X[:, 1] > 0)
params, history = fnnet.fit(net, net.init(jax.random.key(0)), (X, y),
                            "softmax_cross_entropy_with_integer_labels", optax.adam(1e-2),
                            epochs=5, batch_size=16, key=jax.random.key(2))
leaves = [np.asarray(leaf) for leaf in jax.tree.leaves((params, history))]
print(hashlib.sha256(b"".join(leaf.tobytes() for leaf in leaves)).hexdigest())
"""


def test_same_seed_is_bit_identical_across_processes():
    import subprocess
    import sys

    first, second = (subprocess.run([sys.executable, "-c", DETERMINISM_SCRIPT], capture_output=True, text=True,
                                     check=True, timeout=300).stdout for _ in range(2))
    assert first == second and len(first) == 65  # a sha256 and a newline


def test_the_caller_chooses_the_metrics_and_a_users_loss_brings_its_own():
    net, params, X, y = problem(jnp.float32)
    optimizer = optax.sgd(0.1)
    _, _, m = fnnet.train_step(net, CE, optimizer, donate=False, metrics=("loss",))(
        params, optimizer.init(params), X, y)
    assert set(m) == {"loss"}
    _, history = fnnet.fit(net, params, (X, y), CE, optimizer, epochs=2, metrics=["accuracy"],
                           validation=(X, y))
    assert set(history) == {"accuracy", "val_accuracy"}
    with pytest.raises(ValueError, match=r"fit: unknown metric 'f1'; softmax_cross_entropy_with_integer_labels "
                                         r"offers \['loss', 'accuracy'\]"):
        fnnet.fit(net, params, (X, y), CE, optimizer, epochs=2, metrics=("loss", "f1"))
    with pytest.raises(ValueError, match=r"train_step: unknown metric 'accuracy'; mean_squared_error offers \['loss'\]"):
        fnnet.train_step(net, "mse", optimizer, metrics=("accuracy",))
    # a loss of the user's own: an accuracy where it gives one, computed from the step's own output
    mine = fnnet.losses.Loss("my_ce", CE.fn, CE.delta_fn, True, accuracy_fn=lambda z, t: (z.argmax(-1) == t) * 1.0)
    _, _, m = fnnet.train_step(net, mine, optimizer, donate=False)(params, optimizer.init(params), X, y)
    assert float(m["accuracy"]) == float(fnnet.train.metrics(net, CE, params, X, y)["accuracy"])


def test_per_example_grads_compile_once(compiles):
    net, params, X, y = problem(jnp.float32, m=12)
    fnnet.per_example_grads(net, params, X, y, CE)
    params2 = jax.tree.map(lambda p: p * 2, params)
    with compiles() as n:
        again = fnnet.per_example_grads(net, params2, X, y, CE)
    assert n() == 0
    single = fnnet.backprop(net, params2, X[5:6], y[5:6], CE)[1]  # new params are used, not baked in
    assert tree_rel_error(jax.tree.map(lambda g: g[5], again), single) <= 1e-6


def test_python_lists_as_data_are_converted():
    net = fnnet.mlp([2, 4, 1], W_init="he_normal")
    params = net.init(jax.random.key(0), jnp.float32)
    X, y = [[0, 0], [0, 1], [1, 0], [1, 1]], [[0], [1], [1], [0]]
    fitted, history = fnnet.fit(net, params, (X, y), BCE, optax.sgd(1.0), epochs=5)
    same, same_history = fnnet.fit(net, params, (jnp.array(X, jnp.float32), jnp.array(y, jnp.float32)), BCE,
                                   optax.sgd(1.0), epochs=5)
    assert tree_rel_error(fitted, same) == 0 and np.array_equal(history["loss"], same_history["loss"])
    assert net.apply(params, X).shape == (4, 1)
    assert tree_rel_error(fnnet.backprop(net, params, X, y, BCE)[1],
                          fnnet.backprop(net, params, jnp.array(X, jnp.float32), jnp.array(y, jnp.float32), BCE)[1]) == 0


def test_a_cnn_trains_like_an_mlp_per_example_and_as_an_ensemble():
    """No state, no key: a CNN goes through per_example_grads, fit and fit_ensemble unchanged."""
    net = fnnet.Network((6, 6, 2), (fnnet.Conv2D(4, 3, stride=2, activation="relu"), fnnet.MaxPool2D(2, 1),
                                    fnnet.Flatten(), fnnet.Dense(3)))
    params = net.init(jax.random.key(0), jnp.float64)
    X = jax.random.normal(jax.random.key(1), (8, 6, 6, 2), jnp.float64)
    y = jax.random.randint(jax.random.key(2), (8,), 0, 3)
    per = fnnet.per_example_grads(net, params, X, y, CE)
    oracle = jax.vmap(lambda x, t: jax.grad(lambda p: CE(net.apply(p, x[None]), t[None]).mean())(params))(X, y)
    assert tree_rel_error(per, oracle) <= 1e-12
    keys = jax.random.split(jax.random.key(3), 2)
    sgd = optax.sgd(0.1)
    ensemble, _ = fnnet.fit_ensemble(net, keys, (X, y), CE, sgd, epochs=2, batch_size=4, key=jax.random.key(4),
                                     dtype=jnp.float64)
    alone, _ = fnnet.fit(net, net.init(keys[1], jnp.float64), (X, y), CE, sgd, epochs=2, batch_size=4,
                         key=jax.random.key(4))
    assert tree_rel_error(jax.tree.map(lambda a: a[1], ensemble), alone) <= 1e-10
