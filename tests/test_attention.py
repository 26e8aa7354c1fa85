"""Attention, positions and the Transformer block: hand backward vs jax.vjp of their own forward
(float64), equations vs PyTorch, causality and padding, planted bugs, errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fnnet
from fnnet import MultiHeadAttention, PositionalEmbedding, TransformerBlock
from fnnet.layers.positional import sinusoids
from oracles import rel_error, tree_rel_error


def _random(seed, shape, dtype=jnp.float64):
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape).astype(dtype))


def _mask(seed, batch, T):
    """A random padding mask (True at real tokens) whose first row is fully padded when batch > 1."""
    lengths = np.random.default_rng(seed).integers(0, T + 1, batch)
    if batch > 1:
        lengths[0] = 0
    return jnp.asarray(np.arange(T)[None, :] < lengths[:, None])


@settings(max_examples=6, deadline=None)
@given(batch=st.integers(1, 3), T=st.integers(1, 5), heads=st.integers(1, 3), dk=st.integers(1, 3),
       causal=st.booleans(), masked=st.booleans(), recompute=st.booleans(), dropout=st.sampled_from([0.0, 0.3]),
       seed=st.integers(0, 2**16))
def test_attention_backward_equals_vjp(batch, T, heads, dk, causal, masked, recompute, dropout, seed):
    layer = MultiHeadAttention(heads, causal=causal, dropout=dropout, recompute=recompute)
    mask = _mask(seed, batch, T) if masked else None
    # finite differences: in the network test below and in benchmarks.layer_errors (a smaller program here)
    report = fnnet.check_layer(layer, (T, heads * dk), batch=batch, mask=mask, key=jax.random.key(seed), fd=False)
    assert report.ok, str(report)


def test_attention_equals_pytorch():
    torch = pytest.importorskip("torch")
    B, T, d, h = 3, 5, 8, 2
    mask = jnp.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]], bool)
    x = _random(0, (B, T, d))
    for causal in (False, True):
        layer = MultiHeadAttention(h, causal=causal)
        params, _ = layer.init(jax.random.key(1), (T, d), jnp.float64)
        params = {n: p + 0.1 * _random(i, p.shape) for i, (n, p) in enumerate(params.items())}  # biases ≠ 0
        mha = torch.nn.MultiheadAttention(d, h, batch_first=True, dtype=torch.float64)
        as_torch = lambda a: torch.tensor(np.asarray(a))  # noqa: E731
        with torch.no_grad():
            mha.in_proj_weight.copy_(as_torch(jnp.concatenate([params[f"W{n}"].T for n in "qkv"])))
            mha.in_proj_bias.copy_(as_torch(jnp.concatenate([params[f"b{n}"] for n in "qkv"])))
            mha.out_proj.weight.copy_(as_torch(params["Wo"].T))
            mha.out_proj.bias.copy_(as_torch(params["bo"]))
        future = torch.triu(torch.ones(T, T, dtype=torch.bool), 1) if causal else None
        ref, _ = mha(as_torch(x), as_torch(x), as_torch(x), key_padding_mask=as_torch(~mask), attn_mask=future)
        y, _ = layer.forward(params, x, mask=mask)
        assert rel_error(y[mask], ref.detach().numpy()[np.asarray(mask)]) <= 1e-12
        assert not y[~mask].any()  # padded positions: zeros


def test_causal_attention_does_not_look_ahead():
    """The Jacobian of output t with respect to the inputs after t is exactly zero, under
    autodiff and under the hand backward."""
    B, T, d = 2, 6, 4
    layer = MultiHeadAttention(2, causal=True)
    params, _ = layer.init(jax.random.key(0), (T, d), jnp.float64)
    x = _random(1, (B, T, d))
    J = jax.jacrev(lambda x: layer.forward(params, x)[0])(x)  # (B, T, d, B, T, d)
    J = np.stack([np.asarray(J)[b, :, :, b] for b in range(B)]).transpose(0, 1, 3, 2, 4)  # (B, t, s, d, d)
    later = np.triu(np.ones((T, T), bool), 1)  # [t, s]: s > t
    assert not J[:, later].any() and np.abs(J[:, ~later]).min(axis=(1, 2, 3)).max() >= 0
    assert (np.abs(J[:, ~later]).max(axis=(2, 3)) > 0).all()  # every earlier position does count
    _, cache = layer.forward(params, x)
    for t in range(T):
        dy = jnp.zeros((B, T, d)).at[:, t].set(1.0)
        dx = layer.backward(params, cache, dy)[1]
        assert not dx[:, t + 1:].any()


def test_padding_changes_nothing_real_and_a_fully_padded_sequence_gives_zeros():
    B, T, d = 2, 4, 6
    layer = MultiHeadAttention(3)
    params, _ = layer.init(jax.random.key(0), (T, d), jnp.float64)
    mask = jnp.array([[1, 1, 0, 0], [0, 0, 0, 0]], bool)
    x = _random(1, (B, T, d))
    y, cache = layer.forward(params, x, mask=mask)
    y2 = layer.forward(params, jnp.where(mask[..., None], x, 100.0), mask=mask)[0]
    assert jnp.array_equal(y, y2) and not y[1].any()
    grads, dx = layer.backward(params, cache, _random(2, (B, T, d)))
    assert all(jnp.isfinite(g).all() for g in jax.tree.leaves((grads, dx))) and not dx[~mask].any()


class SoftmaxWithoutRowSum(MultiHeadAttention):
    """The planted bug: dS = P ⊙ dP, the softmax backward missing its − Σⱼ dP ⊙ P term."""

    def backward(self, params, cache, dy):
        return _backward_with(self, params, cache, dy, row_sum=False)


class CausalInForwardOnly(MultiHeadAttention):
    """The planted bug: the backward's P recomputed without the causal mask."""

    def backward(self, params, cache, dy):
        x, q, k, v, P, keep, O, mask = cache
        unmasked = MultiHeadAttention(self.n_heads)._weights(q, k, mask)
        return super().backward(params, (x, q, k, v, unmasked, keep, O, mask), dy)


def _backward_with(layer, params, cache, dy, row_sum):
    """The attention backward written again from BACKWARD.md (no mask, no dropout), with or
    without the softmax's row-sum term."""
    x, q, k, v, P, keep, O, mask = cache
    rows = lambda a: a.reshape(-1, a.shape[-1])  # noqa: E731
    grads = {"Wo": rows(O).T @ rows(dy), "bo": rows(dy).sum(0)}
    dO = layer._heads(dy @ params["Wo"].T)
    dv = jnp.einsum("bhij,bhid->bhjd", P, dO)
    dP = jnp.einsum("bhid,bhjd->bhij", dO, v)
    dS = P * (dP - (dP * P).sum(-1, keepdims=True)) if row_sum else P * dP
    scale = q.shape[-1] ** -0.5
    dq, dk = jnp.einsum("bhij,bhjd->bhid", dS, k) * scale, jnp.einsum("bhij,bhid->bhjd", dS, q) * scale
    dx = 0
    for n, dd in zip("qkv", (dq, dk, dv)):
        dd = layer._join(dd)
        grads[f"W{n}"], grads[f"b{n}"] = rows(x).T @ rows(dd), rows(dd).sum(0)
        dx = dx + dd @ params[f"W{n}"].T
    return {n: grads[n] for n in params}, dx


# dS wrong: the query and key projections' gradients and dx; P wrong too (the causal mask lost):
# the value projection's as well. The output projection's agree in both.
@pytest.mark.parametrize("bug,right", [(SoftmaxWithoutRowSum(2), {"Wo", "bo", "Wv", "bv"}),
                                       (CausalInForwardOnly(2, causal=True), {"Wo", "bo"}),],
                         ids=lambda b: type(b).__name__ if isinstance(b, MultiHeadAttention) else "")
def test_planted_attention_bugs_are_caught(bug, right):
    report = fnnet.check_layer(bug, (4, 6), batch=2)
    assert not report.ok and report.message.startswith(f"FAIL: {type(bug).__name__}(2")
    assert ": Wk differs from jax.vjp" in report.message and "dx" in report.message
    agree = {o.name for o in report.results[0].outputs if o.ok}
    assert right <= agree and not {"Wq", "Wk", "dx"} & agree
    # the rewrite with the term in place equals the layer's own backward: the bug is the term
    layer = MultiHeadAttention(2)
    params, _ = layer.init(jax.random.key(0), (4, 6), jnp.float64)
    _, cache = layer.forward(params, _random(0, (2, 4, 6)))
    dy = _random(1, (2, 4, 6))
    mine, theirs = jax.tree.leaves(_backward_with(layer, params, cache, dy, row_sum=True)), jax.tree.leaves(
        layer.backward(params, cache, dy))
    scale = max(float(jnp.abs(b).max()) for b in theirs)  # dbk is 0 up to rounding: one scale for all
    assert max(float(jnp.abs(a - b).max()) for a, b in zip(mine, theirs)) <= 1e-12 * scale


@pytest.mark.parametrize("layer", [PositionalEmbedding(7), PositionalEmbedding(7, sinusoidal=True)], ids=repr)
def test_positions_backward_equals_vjp(layer):
    assert fnnet.check_layer(layer, (5, 4), batch=2).ok
    params, _ = layer.init(jax.random.key(0), (5, 4), jnp.float64)
    if layer.sinusoidal:
        t, i = np.arange(5)[:, None], np.arange(4)[None, :]
        angle = t / 10000 ** (2 * (i // 2) / 4)
        np.testing.assert_allclose(sinusoids(5, 4, jnp.float64), np.where(i % 2 == 0, np.sin(angle), np.cos(angle)),
                                   rtol=1e-14, atol=1e-14)
    else:
        assert params["P"].shape == (7, 4)


def test_transformer_block_is_its_composition_and_equals_pytorch():
    torch = pytest.importorskip("torch")
    B, T, d, h = 2, 5, 8, 2
    block = TransformerBlock(h, causal=True)
    params, _ = block.init(jax.random.key(0), (T, d), jnp.float64)
    params = jax.tree.map(lambda p: p + 0.1 * _random(p.size, p.shape), params)  # scales, biases ≠ 1, 0
    x = _random(1, (B, T, d))
    y, _ = block.forward(params, x)
    assert jnp.array_equal(y, block.expand((T, d)).forward(params, x)[0])
    layer = torch.nn.TransformerEncoderLayer(d, h, dim_feedforward=4 * d, dropout=0.0,
                                             activation=lambda z: torch.nn.functional.gelu(z, approximate="tanh"),
                                             layer_norm_eps=1e-5, batch_first=True, norm_first=True,
                                             dtype=torch.float64)
    (attn, mlp) = params
    ln1, mha = attn["block"]
    ln2, up, down = mlp["block"]
    t = lambda a: torch.tensor(np.asarray(a))  # noqa: E731
    with torch.no_grad():
        layer.norm1.weight.copy_(t(ln1["gamma"])), layer.norm1.bias.copy_(t(ln1["beta"]))
        layer.norm2.weight.copy_(t(ln2["gamma"])), layer.norm2.bias.copy_(t(ln2["beta"]))
        layer.self_attn.in_proj_weight.copy_(t(jnp.concatenate([mha[f"W{n}"].T for n in "qkv"])))
        layer.self_attn.in_proj_bias.copy_(t(jnp.concatenate([mha[f"b{n}"] for n in "qkv"])))
        layer.self_attn.out_proj.weight.copy_(t(mha["Wo"].T)), layer.self_attn.out_proj.bias.copy_(t(mha["bo"]))
        layer.linear1.weight.copy_(t(up["W"].T)), layer.linear1.bias.copy_(t(up["b"]))
        layer.linear2.weight.copy_(t(down["W"].T)), layer.linear2.bias.copy_(t(down["b"]))
    ref = layer(t(x), src_mask=torch.triu(torch.ones(T, T, dtype=torch.bool), 1), is_causal=True)
    assert rel_error(y, ref.detach().numpy()) <= 1e-12


def test_a_transformer_network_equals_jax_grad_and_every_layer_inside_its_blocks_is_checked():
    net = fnnet.Network((6,), (fnnet.Embedding(7, 8, pad_id=0), PositionalEmbedding(6),
                               TransformerBlock(2, mlp_ratio=2, causal=True), fnnet.Dense(7)))
    params = net.init(jax.random.key(0), jnp.float64)
    X = jnp.array([[3, 1, 4, 1, 5, 0], [2, 6, 5, 0, 0, 0], [1, 2, 3, 4, 5, 6]])
    y = jnp.roll(X, -1, axis=1)
    report = fnnet.check_grads(net, params, X, y, "softmax_cross_entropy_with_integer_labels", directions=2)
    assert report.ok, str(report)
    paths = [r.path for r in report.layers.results]
    assert "[2][0]['block'][1]" in paths and "[2][1]['block'][2]" in paths  # inside the block: attention, MLP
    assert report.layers.ok


def test_bad_attention_arguments():
    for make, error, match in [
        (lambda: MultiHeadAttention(3).init(jax.random.key(0), (4, 8)), ValueError,
         r"the model width d = 8 does not split into 3 heads"),
        (lambda: MultiHeadAttention(2).init(jax.random.key(0), (8,)), ValueError,
         r"expects sequences of shape \(T, d\) per example, got \(8,\)"),
        (lambda: MultiHeadAttention(2, dropout=1.0), ValueError, r"dropout must be a number in \[0, 1\)"),
        (lambda: TransformerBlock(0), ValueError, r"n_heads must be a positive int, got 0"),
        (lambda: PositionalEmbedding(4).init(jax.random.key(0), (5, 2)), ValueError,
         r"sequences of length 5 are longer than max_len = 4"),
        (lambda: MultiHeadAttention(1, dropout=0.5).forward({}, {}, jnp.ones((1, 2, 2)), key=None, train=True),
         ValueError, r"needs a key in training"),
    ]:
        with pytest.raises(error, match=match):
            make()


def test_low_precision_attention_takes_its_softmax_in_float32():
    layer = MultiHeadAttention(2, causal=True)
    params, _ = layer.init(jax.random.key(0), (6, 8), jnp.float32)
    x = _random(0, (2, 6, 8), jnp.float32)
    y32, _ = layer.forward(params, x)
    low = jax.tree.map(lambda a: a.astype(jnp.bfloat16), params)
    y, cache = layer.forward(low, x.astype(jnp.bfloat16))
    P = cache[4]
    assert y.dtype == jnp.bfloat16 and P.dtype == jnp.float32  # the weights in float32
    assert rel_error(y.astype(jnp.float32), y32) <= 3e-2
    grads, dx = layer.backward(low, cache, jnp.ones_like(y))
    assert dx.dtype == jnp.bfloat16 and all(g.dtype == jnp.bfloat16 for g in jax.tree.leaves(grads))
