"""SimpleRNN, LSTM, GRU: the hand-written backprop through time against jax.vjp of each layer's
own forward (float64), the equations and gradients against PyTorch, the padding-mask semantics,
planted BPTT bugs the comparison must catch, and the errors for bad arguments."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

import fnnet
from fnnet import activations, initializers
from fnnet.layers import GRU, LSTM, TYPES, SimpleRNN, base
from oracles import rel_error, tree_rel_error

LAYERS = [SimpleRNN, LSTM, GRU]


def declared(layer, in_shape):
    """The params' shapes and dtypes, and the out_shape, that `layer.init` makes, with no XLA work:
    op by op, every new shape compiles each primitive afresh, which is slow."""
    out = {}

    def init(key):
        params, out["shape"] = layer.init(key, in_shape, jnp.float64)
        return params

    return jax.eval_shape(init, jax.random.key(0)), out["shape"]


def random_case(layer, batch, T, n_in, *, state=False, seed=0):
    """Standard-normal float64 params (of the shapes `init` makes), x (with an initial state
    when `state`: `(x, h0)`, or `(x, (h0, c0))` for an LSTM) and dy."""
    shapes, out_shape = declared(layer, (T, n_in))
    rng = np.random.default_rng(seed)
    params = jax.tree.map(lambda a: rng.standard_normal(a.shape), shapes)
    x = rng.standard_normal((batch, T, n_in))
    if state:
        h0 = rng.standard_normal((batch, layer.hidden))
        x = (x, (h0, rng.standard_normal((batch, layer.hidden)))) if isinstance(layer, LSTM) else (x, h0)
    return params, x, rng.standard_normal((batch, *out_shape))


@functools.partial(jax.jit, static_argnums=0)
def forward_backward(layer, params, x, mask, dy):
    y, cache = layer.forward(params, x, mask=mask)
    return y, layer.backward(params, cache, dy)


@functools.partial(jax.jit, static_argnums=0)
def hand_and_vjp(layer, params, x, mask, dy):
    """The hand backward and jax.vjp of `layer.forward`, in one compiled program."""
    y, cache = layer.forward(params, x, mask=mask)
    assert y.shape == dy.shape  # the shape init declares is the shape forward makes
    _, vjp = jax.vjp(lambda p, x: layer.forward(p, x, mask=mask)[0], params, x)
    return layer.backward(params, cache, dy), vjp(dy)


def named(grads):
    """`(dparams, dx)` as one flat dict: dWx, dWh, db (dbx, dbh), dx, and dh0, dc0 if given."""
    dparams, dx = grads
    d0 = {}
    if isinstance(dx, tuple):
        dx, d0 = dx
        d0 = dict(zip(("dh0", "dc0"), d0)) if isinstance(d0, tuple) else {"dh0": d0}
    return {**{f"d{k}": v for k, v in dparams.items()}, "dx": dx, **d0}


def backward_errors(layer, params, x, mask, dy):
    """The hand backward's relative error against jax.vjp, per gradient (a dict by name)."""
    hand, ref = map(named, hand_and_vjp(layer, params, x, mask, dy))
    assert hand.keys() == ref.keys()
    return {k: rel_error(hand[k], ref[k]) for k in hand}


# ---------- 1. the hand backward against jax.vjp ----------

@st.composite
def cases(draw):
    batch, T = draw(st.sampled_from([1, 2, 3])), draw(st.sampled_from([1, 2, 4]))
    kind = draw(st.sampled_from(["none", "all real", "holes", "a fully masked row"]))
    if kind == "none":
        mask = None
    elif kind == "all real":
        mask = np.ones((batch, T), bool)
    else:
        mask = np.array(draw(st.lists(st.booleans(), min_size=batch * T, max_size=batch * T))).reshape(batch, T)
        if kind == "a fully masked row":
            mask[draw(st.integers(0, batch - 1))] = False
    return batch, T, draw(st.integers(1, 3)), draw(st.integers(1, 3)), mask, draw(st.booleans())


@pytest.mark.parametrize("return_sequences", [True, False])
@pytest.mark.parametrize("cls", LAYERS, ids=lambda c: c.__name__)
@settings(max_examples=6, deadline=None)
@given(cases())
@example((1, 1, 1, 1, None, False))  # the smallest: batch, T, n_in, hidden all 1
@example((1, 1, 1, 1, np.zeros((1, 1), bool), True))  # ... its one step masked, from a given state
def test_backward_equals_vjp(cls, return_sequences, case):
    batch, T, n_in, hidden, mask, state = case
    layer = cls(hidden, return_sequences=return_sequences)
    params, x, dy = random_case(layer, batch, T, n_in, state=state)
    errors = backward_errors(layer, params, x, mask, dy)
    assert max(errors.values()) <= 1e-10, errors


# ---------- 2. the equations against PyTorch ----------

@pytest.mark.parametrize("padded", [False, True], ids=["full", "padded"])
@pytest.mark.parametrize("cls", LAYERS, ids=lambda c: c.__name__)
def test_outputs_and_gradients_match_torch(cls, padded):
    # Torch's weights copied into fnnet's layout prove the gate order and the equations; a
    # packed (padded) batch checks the mask against torch's own variable-length semantics.
    torch = pytest.importorskip("torch")
    batch, T, n_in, hidden = 3, 5, 4, 3
    torch.manual_seed(0)
    net = {SimpleRNN: torch.nn.RNN, LSTM: torch.nn.LSTM, GRU: torch.nn.GRU}[cls](
        n_in, hidden, batch_first=True).double()
    rng = np.random.default_rng(1)
    x, w = rng.standard_normal((batch, T, n_in)), rng.standard_normal((batch, T, hidden))
    state = [rng.standard_normal((batch, hidden)) for _ in range(2 if cls is LSTM else 1)]
    lengths = np.array([5, 2, 4] if padded else [T] * batch)

    x_t = torch.tensor(x, requires_grad=True)
    state_t = [torch.tensor(s[None], requires_grad=True) for s in state]
    inputs = torch.nn.utils.rnn.pack_padded_sequence(x_t, lengths, batch_first=True, enforce_sorted=False) \
        if padded else x_t
    out, h_n = net(inputs, tuple(state_t) if cls is LSTM else state_t[0])
    if padded:
        out = torch.nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=T)[0]
    (out * torch.tensor(w)).sum().backward()

    g = {name: p.detach().numpy() for name, p in net.named_parameters()}
    params = {"Wx": g["weight_ih_l0"].T, "Wh": g["weight_hh_l0"].T}
    params |= ({"bx": g["bias_ih_l0"], "bh": g["bias_hh_l0"]} if cls is GRU
               else {"b": g["bias_ih_l0"] + g["bias_hh_l0"]})
    mask = np.arange(T)[None, :] < lengths[:, None] if padded else None
    y, (dparams, (dx, d0)) = forward_backward(cls(hidden), params, (x, tuple(state) if cls is LSTM else state[0]),
                                              mask, w)

    assert rel_error(y, out.detach().numpy()) <= 1e-12
    h_last = (h_n[0] if cls is LSTM else h_n)[0].detach().numpy()
    assert rel_error(y[np.arange(batch), lengths - 1], h_last) <= 1e-12  # the state after the last real step
    grads = {name: p.grad.numpy() for name, p in net.named_parameters()}
    assert rel_error(dparams["Wx"], grads["weight_ih_l0"].T) <= 1e-12
    assert rel_error(dparams["Wh"], grads["weight_hh_l0"].T) <= 1e-12
    if cls is GRU:
        assert rel_error(dparams["bx"], grads["bias_ih_l0"]) <= 1e-12
        assert rel_error(dparams["bh"], grads["bias_hh_l0"]) <= 1e-12
    else:  # b = b_ih + b_hh: each has b's gradient
        assert rel_error(dparams["b"], grads["bias_ih_l0"]) <= 1e-12
        assert rel_error(dparams["b"], grads["bias_hh_l0"]) <= 1e-12
    assert rel_error(dx, x_t.grad.numpy()) <= 1e-12
    for d, s in zip(d0 if cls is LSTM else (d0,), state_t):
        assert rel_error(d, s.grad[0].numpy()) <= 1e-12


# ---------- 3. the padding mask ----------

@pytest.mark.parametrize("return_sequences", [True, False])
@pytest.mark.parametrize("cls", LAYERS, ids=lambda c: c.__name__)
def test_masked_steps_are_as_if_absent(cls, return_sequences):
    # Row 0 is a sequence of 3 padded to T = 6; row 1 has masked steps first and in the middle.
    # Both have 3 real steps, so the compacted batch (2, 3, n_in) is the same two sequences
    # without their masked steps: the state is kept across a masked step, and junk in x and in dy
    # there changes nothing.
    mask = np.array([[1, 1, 1, 0, 0, 0], [0, 1, 0, 1, 1, 0]], bool)
    layer = cls(3, return_sequences=return_sequences)
    params, x, dy = random_case(layer, 2, 6, 2, seed=3)
    y, (dparams, dx) = forward_backward(layer, params, x, mask, dy)
    compact = lambda a: a[mask].reshape(2, 3, a.shape[-1])  # noqa: E731
    y_c, (dparams_c, dx_c) = forward_backward(layer, params, compact(x), None,
                                              compact(dy) if return_sequences else dy)
    if return_sequences:
        assert (np.asarray(y)[~mask] == 0).all()
        assert rel_error(compact(np.asarray(y)), y_c) <= 1e-12
    else:
        assert rel_error(y, y_c) <= 1e-12
    assert tree_rel_error(dparams, dparams_c) <= 1e-12
    assert (np.asarray(dx)[~mask] == 0).all()
    assert rel_error(compact(np.asarray(dx)), dx_c) <= 1e-12


@pytest.mark.parametrize("cls", LAYERS, ids=lambda c: c.__name__)
def test_a_fully_masked_row_gives_zeros_and_finite_gradients(cls):
    mask = np.array([[True] * 4, [False] * 4])
    layer = cls(2)
    params, x, dy = random_case(layer, 2, 4, 3, seed=4)
    y, (dparams, dx) = forward_backward(layer, params, x, mask, dy)
    assert all(np.isfinite(a).all() for a in jax.tree.leaves((y, dparams, dx)))
    assert (y[1] == 0).all() and (dx[1] == 0).all()
    _, (dparams_0, _) = forward_backward(layer, params, x[:1], None, dy[:1])
    assert tree_rel_error(dparams, dparams_0) <= 1e-12  # the masked row contributes nothing
    # The last state of a fully masked row is its initial state, and dh0 is dy (dc0 = 0).
    layer = cls(2, return_sequences=False)
    params, (x, s0), dy = random_case(layer, 2, 4, 3, state=True, seed=5)
    y, (_, (_, d0)) = forward_backward(layer, params, (x, s0), mask, dy)
    h0, dh0 = (s0[0], d0[0]) if cls is LSTM else (s0, d0)
    assert (y[1] == h0[1]).all() and (dh0[1] == dy[1]).all()
    if cls is LSTM:
        assert (d0[1][1] == 0).all()


# ---------- 4. planted BPTT bugs: the comparison with jax.vjp must catch each ----------

class NoRecurrentDh(LSTM):
    """dhₜ₋₁ = 0: each step sees only its own output's gradient, not dhₜ₊₁ from the future."""

    def _step_backward(self, params, s, d):
        dz, d_prev = super()._step_backward(params, s, d)
        return dz, d_prev._replace(h=jnp.zeros_like(d_prev.h))


class DWhFromHt(LSTM):
    """dWh = Σ hₜᵀ dzₜ instead of Σ hₜ₋₁ᵀ dzₜ (hₜ = o ⊙ tanh(cₜ) from the cache)."""

    def _param_grads(self, params, cache, dz):
        s = cache.steps
        h_t = s.gates[..., 3 * self.hidden:] * s.tanh_c
        return super()._param_grads(params, cache._replace(steps=s._replace(h_prev=h_t)), dz)


class UntransposedWh(SimpleRNN):
    """dhₜ₋₁ = dzₜ Wh instead of dzₜ Whᵀ (Wh is square, so the shapes fit)."""

    def _step_backward(self, params, s, d):
        dz = self.activation.backward(s.z, d.h)
        return dz, d._replace(h=dz @ params["Wh"])


class SkipsFirstStep(LSTM):
    """The accumulation loop over t = T−1 … 1: step 0 adds nothing to dW, db, and dx₀ = 0."""

    def _param_grads(self, params, cache, dz):
        return super()._param_grads(params, cache, dz.at[:, 0].set(0))


@pytest.mark.parametrize("bug,wrong", [
    (NoRecurrentDh, {"dx", "dWx", "dWh", "db", "dh0", "dc0"}),  # dx only at steps before the last
    (DWhFromHt, {"dWh"}),  # the rest is exact
    (UntransposedWh, {"dx", "dWx", "dWh", "db", "dh0"}),
    (SkipsFirstStep, {"dx", "dWx", "dWh", "db"}),  # dWh since h₋₁ = h0 ≠ 0; dh0 stays right
], ids=lambda v: v.__name__ if isinstance(v, type) else None)
def test_planted_bugs_are_caught(bug, wrong):
    layer = bug(3)
    params, x, dy = random_case(layer, 2, 4, 3, state=True, seed=6)
    errors = backward_errors(layer, params, x, None, dy)
    assert {k for k, e in errors.items() if e > 1e-3} == wrong, errors
    assert all(e <= 1e-10 for k, e in errors.items() if k not in wrong), errors
    # The bug-free parent passes the same check.
    parent = type(layer).__mro__[1](3)
    assert max(backward_errors(parent, params, x, None, dy).values()) <= 1e-10


# ---------- 5. bad arguments ----------

KEY = jax.random.key(0)
P = {cls: jax.tree.map(lambda a: np.zeros(a.shape), declared(cls(3), (5, 4))[0]) for cls in LAYERS}
X = np.ones((2, 5, 4))


@pytest.mark.parametrize("make,match", [
    (lambda: SimpleRNN(0), r"SimpleRNN\(hidden=0.*\): hidden must be a positive int \(the size of the state h\), "
                           r"got 0"),
    (lambda: LSTM(-2), r"LSTM\(hidden=-2.*\): hidden must be a positive int"),
    (lambda: GRU(2.5), r"GRU\(hidden=2.5.*\): hidden must be a positive int .* got 2.5"),
    (lambda: LSTM(True), r"hidden must be a positive int .* got True"),
    (lambda: GRU(3, return_sequences=1), r"GRU\(hidden=3.*\): return_sequences must be a bool .* got 1"),
    (lambda: LSTM(3).init(KEY, (5,)),
     r"LSTM\(hidden=3.*\) expects sequences of shape \(T, n_in\) per example \(positive ints\), got \(5,\); "
     r"give the data as \(batch, T, n_in\)"),
    (lambda: GRU(3).init(KEY, (2, 5, 4)), r"GRU\(hidden=3.*\) expects sequences of shape \(T, n_in\) .* got "
                                          r"\(2, 5, 4\)"),
    (lambda: SimpleRNN(3).init(KEY, (0, 4)), r"expects sequences of shape \(T, n_in\) .* got \(0, 4\)"),
    (lambda: SimpleRNN(3).forward(P[SimpleRNN], X[0]),
     r"SimpleRNN\(hidden=3.*\) expects x of shape \(batch, T, 4\) \(n_in as its params\), got \(5, 4\)"),
    (lambda: GRU(3).forward(P[GRU], np.ones((2, 5, 3))), r"expects x of shape \(batch, T, 4\) .* got \(2, 5, 3\)"),
    (lambda: LSTM(3).forward(P[LSTM], X, mask=np.ones((2, 4), bool)),
     r"LSTM\(hidden=3.*\) expects a mask of shape \(batch, T\) = \(2, 5\) and dtype bool \(True at real "
     r"steps\), got \(2, 4\) bool"),
    (lambda: GRU(3).forward(P[GRU], X, mask=np.ones((2, 5), np.int32)), r"got \(2, 5\) int32; compare with a bool"),
    (lambda: SimpleRNN(3).forward(P[SimpleRNN], (X, np.zeros((2, 4)))),
     r"expects an initial state h0 of shape \(batch, hidden\) = \(2, 3\), got \(2, 4\)"),
    (lambda: LSTM(3).forward(P[LSTM], (X, (np.zeros((2, 3)), np.zeros((1, 3))))),
     r"expects an initial state c0 of shape \(batch, hidden\) = \(2, 3\), got \(1, 3\)"),
    (lambda: LSTM(3).forward(P[LSTM], (X, np.zeros((2, 3)))),
     r"LSTM\(hidden=3.*\) expects x, or \(x, \(h0, c0\)\) with an initial state, got \(x, ndarray\)"),
    (lambda: SimpleRNN(3).forward(P[SimpleRNN], (X, (np.zeros((2, 3)), np.zeros((2, 3))))),
     r"SimpleRNN\(hidden=3.*\) expects x, or \(x, h0\) with an initial state, got \(x, a tuple of 2\)"),
    (lambda: GRU(3).forward(P[GRU], (X, np.zeros((2, 3)), np.zeros((2, 3)))),
     r"GRU\(hidden=3.*\) expects x, or \(x, h0\) with an initial state, got a tuple of 3 elements"),
])
def test_bad_arguments(make, match):
    with pytest.raises(ValueError, match=match):
        make()


# ---------- the protocol: shapes, dtypes, caches, static values ----------

@pytest.mark.parametrize("cls,gates,biases", [(SimpleRNN, 1, ("b",)), (LSTM, 4, ("b",)), (GRU, 3, ("bx", "bh"))],
                         ids=lambda v: v.__name__ if isinstance(v, type) else None)
def test_init_shapes_and_pytorch_default(cls, gates, biases):
    layers = cls(16), cls(16, W_init="glorot_uniform", Wh_init=initializers.zeros, b_init="zeros")
    params, custom = jax.jit(lambda key: [layer.init(key, (7, 5), jnp.float64)[0] for layer in layers])(KEY)
    assert jax.tree.map(jnp.shape, params) == {"Wx": (5, 16 * gates), "Wh": (16, 16 * gates),
                                               **{b: (16 * gates,) for b in biases}}
    assert declared(cls(16), (7, 5))[1] == (7, 16) and declared(cls(16, return_sequences=False), (7, 5))[1] == (16,)
    values = np.concatenate([np.ravel(a) for a in params.values()])  # U(±1/√16), every one
    assert 0.24 < np.abs(values).max() <= 0.25 and abs(values.mean()) < 0.02
    assert (custom["Wh"] == 0).all() and all((custom[b] == 0).all() for b in biases)
    assert float(jnp.abs(custom["Wx"]).max()) > 0.25  # glorot's wider bound, √(6/(5 + 16·G))


@pytest.mark.parametrize("cls", LAYERS, ids=lambda c: c.__name__)
def test_float32_stays_float32(cls):
    layer = cls(3)
    params = jax.tree.map(lambda a: a.astype(jnp.float32), random_case(layer, 2, 4, 2)[0])
    x, h0 = jnp.ones((2, 4, 2), jnp.float32), jnp.zeros((2, 3), jnp.float32)
    y, (dparams, (dx, d0)) = forward_backward(layer, params, (x, (h0, h0) if cls is LSTM else h0),
                                              jnp.ones((2, 4), bool), jnp.ones((2, 4, 3), jnp.float32))
    assert {a.dtype for a in jax.tree.leaves((y, dparams, dx, d0))} == {jnp.dtype(jnp.float32)}


@pytest.mark.parametrize("cls", LAYERS, ids=lambda c: c.__name__)
def test_per_example_backward_from_cache_slices(cls):
    # The cache is batch first: the backward of each example's slice sums to the batch's.
    layer = cls(2)
    params, x, dy = random_case(layer, 3, 4, 2, state=True, seed=7)
    mask = np.array([[1, 1, 0, 1], [1, 1, 1, 1], [0, 0, 0, 0]], bool)
    _, cache = jax.jit(functools.partial(layer.forward, mask=mask))(params, x)
    dparams, dx = jax.jit(layer.backward)(params, cache, dy)
    per = jax.jit(jax.vmap(lambda c, d: layer.backward(params, jax.tree.map(lambda a: a[None], c), d[None])))
    dparams_i, dx_i = per(cache, dy)
    assert tree_rel_error(jax.tree.map(lambda a: a.sum(0), dparams_i), dparams) <= 1e-12
    assert tree_rel_error(jax.tree.map(lambda a: a[:, 0], dx_i), dx) <= 1e-12


def test_layers_are_registered_hashable_static_values():
    assert all(TYPES[cls.__name__] is cls for cls in LAYERS)
    assert LSTM(4) == LSTM(4) and hash(GRU(4, W_init="xavier_uniform")) == hash(GRU(4, W_init="glorot_uniform"))
    assert LSTM(4) != LSTM(4, return_sequences=False) and LSTM(4) != GRU(4)
    layer = SimpleRNN(4, "relu", W_init="he_uniform")
    assert layer.activation is activations.relu and layer.W_init is initializers.he_uniform
    assert repr(layer) == ("SimpleRNN(hidden=4, activation=relu, return_sequences=True, W_init=he_uniform, "
                           "Wh_init=None, b_init=None, checkpoint_every=None)")
    assert base.describe(layer) == "SimpleRNN(4, activation=relu, W_init=he_uniform)"
    assert SimpleRNN(**{k: getattr(layer, k) for k in layer.__dataclass_fields__}) == layer
    assert all(base.uses_mask(cls(2)) and cls.time_axis == 1 for cls in LAYERS)


# ---------- Bidirectional ----------

@pytest.mark.parametrize("return_sequences", [True, False], ids=["sequences", "last"])
def test_bidirectional_backward_equals_vjp_and_reverses_within_each_length(return_sequences):
    """vs jax.vjp of its forward; vs PyTorch's bidirectional LSTM on packed (variable-length)
    sequences, whose backward direction starts at each sequence's own last step."""
    layer = fnnet.Bidirectional(LSTM(3, return_sequences=return_sequences))
    mask = jnp.array([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [0, 0, 0, 0, 0]], bool)
    assert fnnet.check_layer(layer, (5, 2), batch=3, mask=mask).ok
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    module = torch.nn.LSTM(2, 3, batch_first=True, bidirectional=True).double()
    params = fnnet.from_torch(module)
    x = np.random.default_rng(0).standard_normal((2, 5, 2))
    lengths = [5, 2]
    y = layer.forward(params, jnp.asarray(x), mask=mask[:2])[0]
    packed = torch.nn.utils.rnn.pack_padded_sequence(torch.tensor(x), lengths, batch_first=True)
    with torch.no_grad():
        out, (h, _) = module(packed)
    if return_sequences:
        ref = torch.nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=5)[0].numpy()
    else:
        ref = torch.cat([h[0], h[1]], dim=-1).numpy()  # each direction's final state
    np.testing.assert_allclose(y, ref, rtol=1e-12, atol=1e-12)


# ---------- checkpointing: every k-th state kept, the steps between recomputed ----------

@functools.partial(jax.jit, static_argnums=0)
def _forward_backward(layer, params, inputs, mask, dy):
    y, cache = layer.forward(params, inputs, mask=mask)
    return y, cache, layer.backward(params, cache, dy)


@pytest.mark.parametrize("cls", LAYERS, ids=lambda c: c.__name__)
def test_checkpointed_backward_equals_the_cached_one_and_caches_less(cls):
    T = 7
    x = jnp.asarray(np.random.default_rng(0).standard_normal((3, T, 2)))
    mask = jnp.array([[1] * 7, [1, 1, 1, 0, 0, 0, 0], [0] * 7], bool)
    dy_seq = jnp.asarray(np.random.default_rng(1).standard_normal((3, T, 3)))
    state0 = (jnp.ones((3, 3)), jnp.ones((3, 3))) if cls is LSTM else jnp.ones((3, 3))
    # every step's output with an initial state and a mask; the last state of plain inputs
    for return_sequences, inputs, m, dy in ((True, (x, state0), mask, dy_seq), (False, x, None, dy_seq[:, 0])):
        plain = cls(3, return_sequences=return_sequences)
        params, _ = plain.init(jax.random.key(0), (T, 2), jnp.float64)
        y, _, ref = _forward_backward(plain, params, inputs, m, dy)
        for k in (3, 10):  # k not dividing T (a padded last segment), k ≥ T
            layer = cls(3, return_sequences=return_sequences, checkpoint_every=k)
            y_k, cache_k, grads = _forward_backward(layer, params, inputs, m, dy)
            assert rel_error(y_k, y) <= 1e-14  # the same steps (rounding may differ by an ulp)
            assert tree_rel_error(grads, ref) <= 1e-13, (k, return_sequences)
            assert cache_k.steps is None and cache_k.checkpoints.h.shape == (3, -(-T // k), 3)
    with pytest.raises(ValueError, match=r"checkpoint_every must be None .* or a positive int k"):
        cls(3, checkpoint_every=0)
