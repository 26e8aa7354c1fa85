"""What fnnet is measured against: hand-rolled raw JAX (the step, the bare XOR scan, per-example
gradients), the textbook numpy network (and its maths for any depth), and PyTorch eager when it
is installed (`pip install -e .[bench]`)."""

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax

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

    def step(threads):
        torch.set_num_threads(threads)
        optimizer.zero_grad()
        loss = loss_fn(model(Xt), yt)
        loss.backward()
        optimizer.step()
        return loss.item()

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
