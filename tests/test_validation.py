"""Bad input, across the public API: a clear ValueError/TypeError naming what was wrong, raised
in Python before any tracing — the list the reliability issue asks to write down."""

import os
import tempfile

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fnnet

NET = fnnet.mlp([3, 4, 2])
PARAMS = NET.init(jax.random.key(0))
X = jnp.ones((5, 3), jnp.float32)
LABELS = jnp.array([0, 1, 0, 1, 1])
CE = "softmax_cross_entropy_with_integer_labels"
SGD = optax.sgd(0.1)


def _without_x64(call):
    with jax.enable_x64(False):
        return call()


def fit(**overrides):
    args = dict(params=PARAMS, data=(X, LABELS), loss=CE, optimizer=SGD, epochs=1)
    args.update(overrides)
    return fnnet.fit(NET, args.pop("params"), args.pop("data"), args.pop("loss"), args.pop("optimizer"), **args)


BAD_INPUTS = [  # (what, call, error, match)
    ("sizes too short", lambda: fnnet.mlp([3]), ValueError, r"sizes must list at least two positive ints"),
    ("non-positive size", lambda: fnnet.mlp([3, 0, 2]), ValueError, r"got \[3, 0, 2\]"),
    ("unknown activation", lambda: fnnet.mlp([3, 2], activation="rleu"), ValueError, r"unknown activation 'rleu'"),
    ("unknown initializer", lambda: fnnet.mlp([3, 2], W_init="glorot"), ValueError, r"unknown initializer 'glorot'"),
    ("unknown loss", lambda: fnnet.backprop(NET, PARAMS, X, LABELS, "hinge"), ValueError, r"unknown loss 'hinge'"),
    ("X of the wrong width", lambda: NET.apply(PARAMS, jnp.ones((5, 4))), ValueError,
     r"input x has shape \(5, 4\); the network expects \(batch, 3\)"),
    ("X without batch axis", lambda: NET.apply(PARAMS, jnp.ones(3)), ValueError, r"input x has shape \(3,\)"),
    ("empty batch", lambda: NET.apply(PARAMS, jnp.ones((0, 3))), ValueError, r"the batch is empty"),
    ("y shape for BCE", lambda: fnnet.backprop(fnnet.mlp([3, 1]), fnnet.mlp([3, 1]).init(jax.random.key(0)),
                                               X, jnp.ones(5), "bce"), ValueError, r"y\[:, None\]"),
    ("labels of the wrong shape", lambda: fnnet.backprop(NET, PARAMS, X, LABELS[:, None], CE), ValueError,
     r"labels have shape \(5, 1\)"),
    ("float labels", lambda: fnnet.backprop(NET, PARAMS, X, LABELS.astype(jnp.float32), CE), TypeError,
     r"labels have dtype float32; expected an integer dtype"),
    ("labels out of range", lambda: fnnet.backprop(NET, PARAMS, X, LABELS.at[0].set(7), CE), ValueError,
     r"labels range over \[0, 7\] but the output has 2 classes"),
    ("params missing a layer", lambda: NET.apply(PARAMS[:1], X), ValueError, r"missing \[1\]\['W'\]"),
    ("params of the wrong shape", lambda: NET.apply([PARAMS[1], PARAMS[0]], X), ValueError,
     r"params\[0\]\['W'\] has shape \(4, 2\), but layer 0"),
    ("int as a key", lambda: NET.init(0), TypeError, r"expected a JAX random key such as jax.random.key\(0\)"),
    ("epochs ≤ 0", lambda: fit(epochs=0), ValueError, r"epochs must be a positive int, got 0"),
    ("batch larger than the data", lambda: fit(batch_size=6), ValueError, r"batch_size must be an int in \[1, 5\]"),
    ("minibatches without a key", lambda: fit(batch_size=2), ValueError, r"pass key=jax.random.key"),
    ("NaN in X", lambda: fit(data=(X.at[2, 0].set(jnp.nan), LABELS)), ValueError,
     r"data X has non-finite values \(first in row 2"),
    ("Inf in targets", lambda: fnnet.fit(fnnet.mlp([3, 2]), fnnet.mlp([3, 2]).init(jax.random.key(0)),
                                         (X, jnp.ones((5, 2)).at[4, 1].set(jnp.inf)), "mse", SGD, epochs=1),
     ValueError, r"data y has non-finite values \(first in row 4"),
    ("state of another optimizer", lambda: fit(opt_state=optax.adam(1e-3).init(PARAMS)), ValueError,
     r"opt_state does not match this optimizer"),
    ("log_every 0", lambda: fit(log_every=0), ValueError, r"log_every must be a positive int"),
    ("BCE targets outside [0, 1]", lambda: fnnet.backprop(fnnet.mlp([3, 1]), fnnet.mlp([3, 1]).init(jax.random.key(0)),
                                                          X, jnp.full((5, 1), 2.0), "bce"), ValueError,
     r"sigmoid_binary_cross_entropy: targets range over \[2, 2\]; expected targets in \[0, 1\]"),
    ("int as fit's key", lambda: fit(batch_size=2, key=0), TypeError,
     r"fit: expected a JAX random key such as jax.random.key\(0\), got int 0"),
    ("float64 params without x64", lambda: _without_x64(lambda: NET.init(jax.random.key(0), jnp.float64)),
     ValueError, r"Network.init: dtype=float64 needs JAX's 64-bit mode, which is off"),
    ("params and opt_state swapped", lambda: fnnet.save(os.path.join(tempfile.gettempdir(), "never.fnnet"),
                                                        optax.adam(0.1).init(PARAMS), PARAMS), TypeError,
     r"save: params\[0\] is a ScaleByAdamState, optimizer state rather than parameters.*swapped"),
    ("negative initial epoch", lambda: fit(initial_epoch=-1), ValueError, r"initial_epoch must be an int ≥ 0"),
    ("unknown grad mode", lambda: fnnet.train_step(NET, CE, SGD, grad="fd"), ValueError, r"unknown grad mode 'fd'"),
    ("not an optimizer", lambda: fnnet.train_step(NET, CE, 0.1), TypeError, r"expected an optax GradientTransformation"),
    ("gradcheck dtype", lambda: fnnet.check_grads(NET, PARAMS, X, LABELS, CE, dtype="int8"), ValueError,
     r"dtype must be float64 or float32"),
    ("gradient tree mismatch", lambda: fnnet.check_grads(lambda p, X, y: (0.0, p[:1]), lambda p, X, y: 0.0,
                                                         PARAMS, X, LABELS), ValueError,
     r"gradient tree does not match the parameter tree: missing \[1\]\['W'\]"),
    ("unknown dataset", lambda: fnnet.datasets.load("mnist"), ValueError, r"unknown dataset 'mnist'"),
    ("synthetic dataset without key", lambda: fnnet.datasets.load("moons"), ValueError, r"needs a key"),
    ("n_out 0", lambda: fnnet.Dense(0), ValueError, r"n_out must be a positive int, got 0"),
    ("unknown hyper-parameter", lambda: fnnet.activations.elu.replace(beta=1.0), TypeError,
     r"activation 'elu' has no hyper-parameter \['beta'\]"),
    ("sweep with an optimizer object", lambda: fnnet.fit_ensemble(NET, jax.random.split(jax.random.key(0), 2),
                                                                  (X, LABELS), CE, SGD, learning_rates=[0.1, 0.2],
                                                                  epochs=1), TypeError, r"optimizer factory"),
    ("epochs a bool", lambda: fit(epochs=True), ValueError, r"epochs must be a positive int, got True"),
    ("train_step with another optimizer's state",
     lambda: fnnet.train_step(NET, CE, optax.adam(0.1), donate=False)(PARAMS, SGD.init(PARAMS), X, LABELS),
     ValueError, r"train_step: opt_state does not match this optimizer and params .*missing \[0\]\.count"),
    ("train_step without opt_state", lambda: fnnet.train_step(NET, CE, optax.adam(0.1), donate=False)(
        PARAMS, None, X, LABELS), ValueError, r"train_step: opt_state does not match"),
]


@pytest.mark.parametrize("what,call,error,match", BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
def test_bad_input_is_named(what, call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_the_list_is_long_and_distinct():
    assert len({b[0] for b in BAD_INPUTS}) == len(BAD_INPUTS) >= 25


def test_checkpoint_inputs(tmp_path):
    with pytest.raises(ValueError, match=r"not a readable fnnet checkpoint"):
        (tmp_path / "x").write_text("hello")
        fnnet.load(tmp_path / "x")
    with pytest.raises(TypeError, match=r"metadata must be JSON-serialisable"):
        fnnet.save(tmp_path / "y", PARAMS, metadata={"when": object()})
    assert not (tmp_path / "y").exists()


DTYPES = st.sampled_from([jnp.float32, jnp.float16, jnp.int32, jnp.bool_])


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(x_shape=st.lists(st.integers(0, 4), max_size=3), x_dtype=DTYPES,
       y_shape=st.lists(st.integers(0, 5), max_size=2), y_dtype=DTYPES,
       loss=st.sampled_from(fnnet.losses.ALL), fill=st.sampled_from([0.0, 1.0, np.nan, 1e4]))
def test_fuzzed_inputs_fail_only_with_a_message(x_shape, x_dtype, y_shape, y_dtype, loss, fill):
    X = jnp.full(tuple(x_shape), fill).astype(x_dtype)
    y = jnp.full(tuple(y_shape), fill).astype(y_dtype)
    for call in (lambda: NET.apply(PARAMS, X), lambda: fnnet.backprop(NET, PARAMS, X, y, loss)):
        try:
            call()
        except (ValueError, TypeError) as e:
            assert len(str(e)) > 20


STEP = {mode: fnnet.train_step(NET, CE, SGD, grad=mode, donate=False) for mode in fnnet.train.GRAD_MODES}
WHATEVER = st.sampled_from([None, True, 0, -1, 1, 2, 5, 6, 1.5, "2", np.int64(2), np.nan, jax.random.key(0)])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(epochs=WHATEVER, batch_size=WHATEVER, log_every=WHATEVER, initial_epoch=WHATEVER, key=WHATEVER,
       grad=st.sampled_from(["backprop", "autodiff", "manual", None]), n=st.sampled_from([0, 1, 5]),
       x_fill=st.sampled_from([1.0, np.nan, np.inf]), lr=st.sampled_from([0.1, 0.0, -1.0, np.nan]))
def test_fuzzed_fit_arguments_fail_only_with_a_message(epochs, batch_size, log_every, initial_epoch, key,
                                                       grad, n, x_fill, lr):
    data = (jnp.full((n, 3), x_fill), LABELS[:n])
    try:
        params, history = fit(epochs=epochs, batch_size=batch_size,
                              log_every=log_every, initial_epoch=initial_epoch, key=key, grad=grad,
                              data=data, optimizer=optax.sgd(lr) if lr != 0.1 else SGD)
    except fnnet.DivergenceError as e:  # lr < 0 or nan is the optimizer's business: it diverges
        assert lr != 0.1 and "non-finite" in str(e)
    except (ValueError, TypeError) as e:
        assert len(str(e)) > 20
    else:  # it ran: then every argument was valid
        assert n > 0 and x_fill == 1.0 and type(epochs) is int and epochs > 0 and grad in fnnet.train.GRAD_MODES
        assert np.isfinite(history["loss"]).all() or lr != 0.1


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(x_shape=st.lists(st.integers(0, 4), max_size=3), x_dtype=DTYPES, y_dtype=DTYPES,
       y_shape=st.lists(st.integers(0, 5), max_size=2), state=st.sampled_from(["sgd", "adam", "none", "params"]),
       grad=st.sampled_from(fnnet.train.GRAD_MODES))
def test_fuzzed_train_step_inputs_fail_only_with_a_message(x_shape, x_dtype, y_shape, y_dtype, state, grad):
    opt_state = {"sgd": SGD.init(PARAMS), "adam": optax.adam(0.1).init(PARAMS), "none": None,
                 "params": PARAMS}[state]
    try:
        STEP[grad](PARAMS, opt_state, jnp.ones(tuple(x_shape), x_dtype), jnp.zeros(tuple(y_shape), y_dtype))
    except (ValueError, TypeError) as e:
        assert len(str(e)) > 20
