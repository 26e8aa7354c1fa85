"""What fnnet is measured against: hand-rolled raw JAX (the step, the bare XOR scan, per-example
gradients, the CNN step), the textbook numpy network (and its maths for any depth), and PyTorch
eager when it is installed (`pip install -e .[bench]`: the MLP and CNN steps, one conv layer)."""

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

from benchmarks import timing

# ---------- raw JAX: jax.jit(value_and_grad) + SGD, nothing from fnnet ----------

_ACTIVATIONS = {"relu": jax.nn.relu, "tanh": jnp.tanh}
_LOSSES = {
    "sigmoid_binary_cross_entropy": lambda out, y: optax.sigmoid_binary_cross_entropy(out, y).mean(),
    "softmax_cross_entropy_with_integer_labels":
        lambda out, y: optax.softmax_cross_entropy_with_integer_labels(out, y).mean(),
    "mean_squared_error": lambda out, y: ((out - y) ** 2).mean(),
}


def raw_jax_step(workload):
    """`step(params, X, y) -> (params, loss)`: jitted, params donated; params as fnnet lays them out."""
    return jax.jit(raw_jax_update(workload), donate_argnums=0)


def raw_jax_loss(workload, broadcast=False):
    """`loss(params, X, y) -> scalar`, the batch mean. With `broadcast`, each layer multiplies
    as `(a[:, :, None] * W[None]).sum(1)`, as fnnet.layers does for tiny layers, not `a @ W`."""
    act, loss_fn = _ACTIVATIONS[workload.activation], _LOSSES[workload.loss]

    def loss(params, X, y):
        a = X
        for i, p in enumerate(params):
            a = ((a[:, :, None] * p["W"][None]).sum(1) if broadcast else a @ p["W"]) + p["b"][None, :]
            if i < len(params) - 1:
                a = act(a)
        return loss_fn(a, y)

    return loss


def raw_jax_update(workload, broadcast=False):
    """The pure SGD step of `raw_jax_step`, for use inside other transforms (lax.scan)."""
    loss, lr = raw_jax_loss(workload, broadcast), workload.lr

    def step(params, X, y):
        value, grads = jax.value_and_grad(loss)(params, X, y)
        return jax.tree.map(lambda p, g: p - lr * g, params, grads), value

    return step


def bare_scan(workload, X, y, epochs):
    """`run(params) -> params`: jit of a lax.scan over `epochs` full-batch SGD steps, the layers
    multiplied by broadcasting and nothing else in the body (the carry is the params, no
    per-epoch outputs): the least a compiled loop of the tiny XOR net can cost."""
    update = raw_jax_update(workload, broadcast=True)
    return jax.jit(lambda params: jax.lax.scan(lambda p, _: (update(p, X, y)[0], None), params, length=epochs)[0])


def raw_jax_per_example_grads(workload):
    """`grads(params, X, y)`: ∂ℓᵢ/∂params for each example i, as
    `jit(vmap(grad(ℓ), in_axes=(None, 0, 0)))`; params an argument, not a baked-in constant."""
    loss = raw_jax_loss(workload)
    per_example = lambda params, x, t: loss(params, x[None], t[None])
    return jax.jit(jax.vmap(jax.grad(per_example), in_axes=(None, 0, 0)))


# ---------- numpy: the textbook's network, and the same delta recursion at any depth ----------

class SimpleNN:
    """The article's two-layer network, verbatim (ReLU hidden layer, sigmoid output, SGD, updates
    in place): the oracle of tests/test_textbook.py and the numpy baseline of the benchmark."""

    def __init__(self, n_in, n_hid, n_out):
        self.W1 = np.random.randn(n_in, n_hid) * 0.1
        self.b1 = np.zeros(n_hid)
        self.W2 = np.random.randn(n_hid, n_out) * 0.1
        self.b2 = np.zeros(n_out)

    def relu(self, x):
        return np.maximum(0, x)

    def sigmoid(self, x):
        # Clip x to avoid overflow
        x = np.clip(x, -500, 500)
        return 1 / (1 + np.exp(-x))

    def forward(self, X):
        self.z1 = X @ self.W1 + self.b1
        self.a1 = self.relu(self.z1)
        self.z2 = self.a1 @ self.W2 + self.b2
        self.y_pred = self.sigmoid(self.z2)
        return self.y_pred

    def backward(self, X, y_true, lr=0.01):
        m = X.shape[0]
        dz2 = self.y_pred - y_true
        dW2 = (self.a1.T @ dz2) / m
        db2 = np.sum(dz2, axis=0) / m

        da1 = dz2 @ self.W2.T
        dz1 = da1 * (self.z1 > 0)  # ReLU derivative
        dW1 = (X.T @ dz1) / m
        db1 = np.sum(dz1, axis=0) / m

        # Update parameters
        self.W2 -= lr * dW2
        self.b2 -= lr * db2
        self.W1 -= lr * dW1
        self.b1 -= lr * db1


def textbook_train(model, X, y, epochs=2000, lr=1.0):
    """The article's training loop (its loss every epoch; printing left out)."""
    for _ in range(epochs):
        pred = model.forward(X)
        -np.mean(y * np.log(pred + 1e-8) + (1 - y) * np.log(1 - pred + 1e-8))
        model.backward(X, y, lr=lr)


def numpy_step(workload):
    """`step(params, X, y) -> params`: the textbook's forward/backward for any depth, float32."""
    lr = workload.lr
    relu = workload.activation == "relu"

    def step(params, X, y):
        a, zs, acts = X, [], [X]
        for i, p in enumerate(params):
            z = a @ p["W"] + p["b"]
            zs.append(z)
            a = (np.maximum(z, 0) if relu else np.tanh(z)) if i < len(params) - 1 else z
            acts.append(a)
        m = X.shape[0]
        if workload.loss == "sigmoid_binary_cross_entropy":
            delta = (1 / (1 + np.exp(-a)) - y) / m
        elif workload.loss == "softmax_cross_entropy_with_integer_labels":
            e = np.exp(a - a.max(axis=1, keepdims=True))
            delta = e / e.sum(axis=1, keepdims=True)
            delta[np.arange(m), y] -= 1
            delta /= m
        else:
            delta = 2 * (a - y) / (m * a.shape[1])
        new = [None] * len(params)
        for i in reversed(range(len(params))):
            dW, db = acts[i].T @ delta, delta.sum(axis=0)
            if i:
                delta = (delta @ params[i]["W"].T) * ((zs[i - 1] > 0) if relu else 1 - acts[i] ** 2)
            new[i] = {"W": params[i]["W"] - lr * dW, "b": params[i]["b"] - lr * db}
        return new

    return step


# ---------- PyTorch eager, when installed ----------

def torch_step(workload, params, X, y):
    """nn.Sequential + optim.SGD on the same params and batch: `(step, current_params)`, or None
    without torch.

    `step(threads)` runs one SGD step on `threads` intra-op threads (set on every call, 0.2 µs,
    because each workload picks its own) and returns the loss; `current_params()` reads the
    model back in fnnet's layout (W of shape (n_in, n_out)), as numpy arrays.
    """
    try:
        import torch
    except ImportError:
        return None
    layers = []
    for i, p in enumerate(params):
        linear = torch.nn.Linear(*np.shape(p["W"]))
        with torch.no_grad():
            linear.weight.copy_(torch.from_numpy(np.array(p["W"]).T))
            linear.bias.copy_(torch.from_numpy(np.array(p["b"])))
        layers.append(linear)
        if i < len(params) - 1:
            layers.append(torch.nn.ReLU() if workload.activation == "relu" else torch.nn.Tanh())
    model = torch.nn.Sequential(*layers)
    optimizer = torch.optim.SGD(model.parameters(), lr=workload.lr)
    loss_fn = {"sigmoid_binary_cross_entropy": torch.nn.BCEWithLogitsLoss(),
               "softmax_cross_entropy_with_integer_labels": torch.nn.CrossEntropyLoss(),
               "mean_squared_error": torch.nn.MSELoss()}[workload.loss]
    Xt = torch.from_numpy(np.array(X))
    yt = torch.from_numpy(np.array(y)).long() if y.dtype.kind == "i" else torch.from_numpy(np.array(y))

    step = _torch_sgd_step(model, optimizer, loss_fn, Xt, yt)

    def current_params():
        linears = [m for m in model if isinstance(m, torch.nn.Linear)]
        return [{"W": m.weight.detach().numpy().T.copy(), "b": m.bias.detach().numpy().copy()} for m in linears]

    return step, current_params


def torch_threads(run, target, settle):
    """The faster of 1 and os.cpu_count() intra-op threads for `run(threads)`, by a short
    interleaved probe (5 rounds): `{"threads", "threads_probe_s": {threads: seconds per call},
    "omp_wait_policy"}` (None: libgomp's default).

    The choice matters because torch's OpenMP workers spin between parallel regions: on 2 cores
    a small step at 2 threads waits on a descheduled worker: W1 measured 0.2–9 ms a step,
    typically 1 ms, against 0.12–0.35 ms at 1 thread; W3 needs both cores (15–19 ms against
    28–30 ms). OMP_WAIT_POLICY=PASSIVE (read only when torch loads libgomp) would stop
    the spinning but made W3's 2-thread step 1.6× slower (30 ms), so the default stays. After
    a call the workers spin about 10 ms, well inside the harness's pause (`settle`)."""
    counts = sorted({1, os.cpu_count() or 1})
    runs = {n: functools.partial(run, n) for n in counts}
    number = {n: timing.calls_per_timing(r, target) for n, r in runs.items()}
    probe = {n: t["median"] for n, t in timing.interleaved(runs, 5, number, settle).items()}
    return {"threads": min(probe, key=probe.get), "threads_probe_s": probe,
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY")}


# ---------- CNNs: raw JAX (lax.conv_general_dilated + jax.grad) and PyTorch eager ----------

_BN_MOMENTUM, _BN_EPS = 0.1, 1e-5  # PyTorch's BatchNorm2d defaults, fnnet's too


def raw_cnn_forward(workload):
    """`forward(params, state, X) -> (logits, state)` in training mode (batch statistics), written
    from `workload.layers` with lax alone; params and state are lists like fnnet's, one entry
    per layer (`{}` where a layer has none)."""

    per_channel = lambda v: v[None, None, None, :]  # explicit broadcasting (rank promotion may be an error)

    def forward(params, state, X):
        a, new_state = X, []
        for (kind, *args), p, s in zip(workload.layers, params, state):
            if kind == "conv":
                a = lax.conv_general_dilated(a, p["W"], (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
                a = a + per_channel(p["b"])
                if args[2] == "relu":
                    a = jax.nn.relu(a)
            elif kind == "bn":
                m = a.size // a.shape[-1]
                mean = a.mean(axis=(0, 1, 2))
                var = jnp.square(a - per_channel(mean)).mean(axis=(0, 1, 2))
                a = (a - per_channel(mean)) * per_channel(lax.rsqrt(var + _BN_EPS) * p["gamma"]) + per_channel(p["beta"])
                s = {"mean": (1 - _BN_MOMENTUM) * s["mean"] + _BN_MOMENTUM * lax.stop_gradient(mean),
                     "var": (1 - _BN_MOMENTUM) * s["var"] + _BN_MOMENTUM * lax.stop_gradient(var) * m / (m - 1)}
            elif kind == "relu":
                a = jax.nn.relu(a)
            elif kind == "maxpool":
                k = args[0]
                a = lax.reduce_window(a, -jnp.inf, lax.max, (1, k, k, 1), (1, k, k, 1), "VALID")
            elif kind == "flatten":
                a = a.reshape(a.shape[0], -1)
            elif kind == "gap":
                a = a.mean(axis=(1, 2))
            elif kind == "dense":
                a = a @ p["W"] + p["b"][None, :]
            new_state.append(s)
        return a, new_state

    return forward


def raw_cnn_step(workload):
    """`step(params, state, X, y) -> (params, state, loss)`: jit(value_and_grad) of the batch-mean
    cross-entropy and SGD, params and state donated."""
    forward, lr = raw_cnn_forward(workload), workload.lr

    def loss(params, state, X, y):
        logits, state = forward(params, state, X)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), state

    def step(params, state, X, y):
        (value, state), grads = jax.value_and_grad(loss, has_aux=True)(params, state, X, y)
        return jax.tree.map(lambda p, g: p - lr * g, params, grads), state, value

    return jax.jit(step, donate_argnums=(0, 1))


def torch_cnn_step(workload, params, X, y):
    """The CNN as a torch nn.Sequential with optim.SGD, from `params` (HWIO kernels transposed to
    OIHW) and the same batch (NHWC to NCHW): `(step, current_params)` as `torch_step`, or None
    without torch. `current_params()` reads the model back in fnnet's layout and list."""
    try:
        import torch
    except ImportError:
        return None

    class FlattenNHWC(torch.nn.Module):
        """NCHW activations flattened in fnnet's NHWC order, so the Dense weights carry over."""

        def forward(self, a):
            return a.permute(0, 2, 3, 1).flatten(1)

    modules, channels = [], workload.in_shape[-1]
    for (kind, *args), p in zip(workload.layers, params):
        if kind == "conv":
            n_out, k, activation = args
            conv = torch.nn.Conv2d(channels, n_out, k, padding=k // 2)
            with torch.no_grad():
                conv.weight.copy_(torch.from_numpy(np.array(p["W"]).transpose(3, 2, 0, 1)))
                conv.bias.copy_(torch.from_numpy(np.array(p["b"])))
            modules.append(torch.nn.Sequential(conv, torch.nn.ReLU()) if activation == "relu" else conv)
            channels = n_out
        elif kind == "bn":
            bn = torch.nn.BatchNorm2d(channels, eps=_BN_EPS, momentum=_BN_MOMENTUM)
            with torch.no_grad():
                bn.weight.copy_(torch.from_numpy(np.array(p["gamma"])))
                bn.bias.copy_(torch.from_numpy(np.array(p["beta"])))
            modules.append(bn)
        elif kind == "dense":
            linear = torch.nn.Linear(*np.shape(p["W"]))
            with torch.no_grad():
                linear.weight.copy_(torch.from_numpy(np.array(p["W"]).T))
                linear.bias.copy_(torch.from_numpy(np.array(p["b"])))
            modules.append(linear)
            channels = args[0]
        else:
            modules.append({"relu": torch.nn.ReLU, "maxpool": lambda: torch.nn.MaxPool2d(args[0]),
                            "flatten": FlattenNHWC,
                            "gap": lambda: torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten()),
                            }[kind]())
    model = torch.nn.Sequential(*modules).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=workload.lr)
    loss_fn = torch.nn.CrossEntropyLoss()
    Xt = torch.from_numpy(np.array(X).transpose(0, 3, 1, 2).copy())
    yt = torch.from_numpy(np.array(y)).long()

    step = _torch_sgd_step(model, optimizer, loss_fn, Xt, yt)

    def current_params():
        out = []
        for (kind, *_), m in zip(workload.layers, model):
            if kind == "conv":
                conv = m[0] if isinstance(m, torch.nn.Sequential) else m
                out.append({"W": conv.weight.detach().numpy().transpose(2, 3, 1, 0).copy(),
                            "b": conv.bias.detach().numpy().copy()})
            elif kind == "bn":
                out.append({"gamma": m.weight.detach().numpy().copy(), "beta": m.bias.detach().numpy().copy()})
            elif kind == "dense":
                out.append({"W": m.weight.detach().numpy().T.copy(), "b": m.bias.detach().numpy().copy()})
            else:
                out.append({})
        return out

    return step, current_params


def torch_conv(x, W, b, dz):
    """One "SAME" stride-1 convolution's forward and backward in torch (x NHWC, W HWIO, as
    numpy; moved to NCHW and OIHW once, here): `(run, result)`, or None without torch.

    `run(threads)` computes z = conv2d(x, W) + b and backpropagates dz into dx, dW and db;
    `result()` gives the last `(z, {"W": dW, "b": db}, dx)` in fnnet's layouts."""
    try:
        import torch
    except ImportError:
        return None
    xt = torch.from_numpy(x.transpose(0, 3, 1, 2).copy()).requires_grad_()
    Wt = torch.from_numpy(W.transpose(3, 2, 0, 1).copy()).requires_grad_()
    bt = torch.from_numpy(b.copy()).requires_grad_()
    dzt = torch.from_numpy(dz.transpose(0, 3, 1, 2).copy())
    last = {}

    def run(threads):
        torch.set_num_threads(threads)
        for t in (xt, Wt, bt):
            t.grad = None
        z = torch.nn.functional.conv2d(xt, Wt, bt, padding=W.shape[0] // 2)
        z.backward(dzt)
        last["z"] = z

    def result():
        nhwc = lambda t: t.detach().numpy().transpose(0, 2, 3, 1)
        return (nhwc(last["z"]), {"W": Wt.grad.numpy().transpose(2, 3, 1, 0), "b": bt.grad.numpy()}, nhwc(xt.grad))

    return run, result


def _torch_sgd_step(model, optimizer, loss_fn, Xt, yt):
    """`step(threads)`: one eager SGD step of `model` on the batch, on that many threads; its loss."""
    import torch

    def step(threads):
        torch.set_num_threads(threads)
        optimizer.zero_grad()
        loss = loss_fn(model(Xt), yt)
        loss.backward()
        optimizer.step()
        return loss.item()

    return step


# ---------- sequences: raw JAX (lax.scan, einsums + jax.grad) and PyTorch eager ----------

def raw_lstm_forward(params, X):
    """LSTM over X `(batch, T, n_in)` by PyTorch's equations (gates i, f, g, o), then the head on
    the last h: logits `(batch, 10)`. params `[{"Wx", "Wh", "b"}, {"W", "b"}]` as fnnet's."""
    lstm, head = params
    hidden = lstm["Wh"].shape[0]
    batch = X.shape[0]

    def cell(carry, x_t):
        h, c = carry
        z = x_t @ lstm["Wx"] + h @ lstm["Wh"] + lstm["b"][None, :]
        i, f, g, o = (z[:, k * hidden:(k + 1) * hidden] for k in range(4))
        c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
        return (jax.nn.sigmoid(o) * jnp.tanh(c), c), None

    zeros = jnp.zeros((batch, hidden), X.dtype)
    (h, _), _ = lax.scan(cell, (zeros, zeros), X.swapaxes(0, 1))
    return h @ head["W"] + head["b"][None, :]


def _layer_norm(p, x, eps=_BN_EPS):
    mean = x.mean(axis=-1, keepdims=True)
    var = jnp.square(x - mean).mean(axis=-1, keepdims=True)
    return (x - mean) * lax.rsqrt(var + eps) * p["gamma"][None, None, :] + p["beta"][None, None, :]


def raw_transformer_forward(n_heads):
    """`forward(params, X) -> logits (batch, T, 10)`: the pre-norm block x + MHA(LN(x)),
    x + MLP(LN(x)) (tanh-GELU) in explicit einsums, then the per-token head; params as fnnet's
    `[[{"block": [ln, mha], ...}, {"block": [ln, dense, dense], ...}], head]`."""

    def forward(params, X):
        (attention, mlp), head = params
        ln1, a = attention["block"]
        B, T, d = X.shape
        dk = d // n_heads
        u = _layer_norm(ln1, X)
        q, k, v = (jnp.einsum("btd,de->bte", u, a[f"W{n}"]).reshape(B, T, n_heads, dk) + a[f"b{n}"].reshape(
            1, 1, n_heads, dk) for n in "qkv")
        P = jax.nn.softmax(jnp.einsum("bihc,bjhc->bhij", q, k) / jnp.sqrt(jnp.float32(dk)), axis=-1)
        O = jnp.einsum("bhij,bjhc->bihc", P, v).reshape(B, T, d)
        X = X + jnp.einsum("btd,de->bte", O, a["Wo"]) + a["bo"][None, None, :]
        ln2, up, down = mlp["block"]
        hid = jax.nn.gelu(jnp.einsum("btd,df->btf", _layer_norm(ln2, X), up["W"]) + up["b"][None, None, :],
                          approximate=True)
        X = X + jnp.einsum("btf,fd->btd", hid, down["W"]) + down["b"][None, None, :]
        return jnp.einsum("btd,dk->btk", X, head["W"]) + head["b"][None, None, :]

    return forward


def raw_sequence_step(workload):
    """`step(params, X, y) -> (params, loss)`: jit(value_and_grad) of the mean cross-entropy (over
    the batch, and every token for the transformer) and SGD, params donated."""
    forward = raw_lstm_forward if workload.kind == "lstm" else raw_transformer_forward(workload.n_heads)
    lr = workload.lr

    def loss(params, X, y):
        return optax.softmax_cross_entropy_with_integer_labels(forward(params, X), y).mean()

    def step(params, X, y):
        value, grads = jax.value_and_grad(loss)(params, X, y)
        return jax.tree.map(lambda p, g: p - lr * g, params, grads), value

    return jax.jit(step, donate_argnums=0)


def torch_sequence_step(workload, params, X, y):
    """The sequence model in torch with optim.SGD, from `params` and on the same batch: `(step,
    current_params)` as `torch_step`, or None without torch. W7: `nn.LSTM(batch_first=True)` and
    a Linear on the last h; W8: `nn.TransformerEncoderLayer(norm_first=True, batch_first=True,
    dropout=0, tanh-GELU, eps 1e-5)` and a per-token Linear. `current_params()` reads the
    model back with `fnnet.from_torch`, in fnnet's tree."""
    try:
        import torch
    except ImportError:
        return None
    import fnnet

    t = lambda a: torch.from_numpy(np.array(a))
    torch.manual_seed(0)
    if workload.kind == "lstm":
        lstm_p, head_p = params
        n_in, hidden = np.shape(lstm_p["Wx"])[0], np.shape(lstm_p["Wh"])[0]
        body = torch.nn.LSTM(n_in, hidden, batch_first=True)
        with torch.no_grad():
            body.weight_ih_l0.copy_(t(lstm_p["Wx"]).T)
            body.weight_hh_l0.copy_(t(lstm_p["Wh"]).T)
            body.bias_ih_l0.copy_(t(lstm_p["b"]))
            body.bias_hh_l0.zero_()
        # fnnet's b is b_ih + b_hh: with both trained, SGD would move their sum by twice the step
        body.bias_hh_l0.requires_grad_(False)
    else:
        (attention_p, mlp_p), head_p = params
        (ln1, mha), (ln2, up, down) = attention_p["block"], mlp_p["block"]
        d = np.shape(mha["Wq"])[0]
        body = torch.nn.TransformerEncoderLayer(
            d, workload.n_heads, dim_feedforward=np.shape(up["W"])[1], dropout=0.0,
            activation=lambda a: torch.nn.functional.gelu(a, approximate="tanh"), layer_norm_eps=_BN_EPS,
            batch_first=True, norm_first=True)
        with torch.no_grad():
            body.self_attn.in_proj_weight.copy_(torch.cat([t(mha[f"W{n}"]).T for n in "qkv"]))
            body.self_attn.in_proj_bias.copy_(torch.cat([t(mha[f"b{n}"]) for n in "qkv"]))
            body.self_attn.out_proj.weight.copy_(t(mha["Wo"]).T)
            body.self_attn.out_proj.bias.copy_(t(mha["bo"]))
            for norm, p in ((body.norm1, ln1), (body.norm2, ln2)):
                norm.weight.copy_(t(p["gamma"]))
                norm.bias.copy_(t(p["beta"]))
            for linear, p in ((body.linear1, up), (body.linear2, down)):
                linear.weight.copy_(t(p["W"]).T)
                linear.bias.copy_(t(p["b"]))
    head = torch.nn.Linear(*np.shape(head_p["W"]))
    with torch.no_grad():
        head.weight.copy_(t(head_p["W"]).T)
        head.bias.copy_(t(head_p["b"]))

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.body, self.head = body, head

        def forward(self, x):
            if workload.kind == "lstm":
                return self.head(self.body(x)[1][0][0])  # h_n of the one layer: (batch, hidden)
            return self.head(self.body(x))

    model = Model().train()
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=workload.lr)
    cross_entropy = torch.nn.CrossEntropyLoss()
    loss_fn = lambda out, labels: cross_entropy(out.reshape(-1, out.shape[-1]), labels.reshape(-1))
    step = _torch_sgd_step(model, optimizer, loss_fn, t(X), t(y).long())

    def current_params():
        as_np = lambda tree: jax.tree.map(np.asarray, tree)
        if workload.kind == "lstm":
            return as_np([fnnet.from_torch(body), fnnet.from_torch(head)])
        attention = {"block": [fnnet.from_torch(body.norm1), fnnet.from_torch(body.self_attn)], "shortcut": {}}
        mlp = {"block": [fnnet.from_torch(body.norm2), fnnet.from_torch(body.linear1),
                         fnnet.from_torch(body.linear2)], "shortcut": {}}
        return as_np([[attention, mlp], fnnet.from_torch(head)])

    return step, current_params
