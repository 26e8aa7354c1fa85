"""What fnnet is measured against: a hand-rolled raw-JAX step, the textbook numpy network (and its
maths for any depth), and PyTorch eager when it is installed."""

import jax
import jax.numpy as jnp
import numpy as np
import optax

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


def raw_jax_update(workload):
    """The pure SGD step of `raw_jax_step`, for use inside other transforms (lax.scan)."""
    act, loss_fn, lr = _ACTIVATIONS[workload.activation], _LOSSES[workload.loss], workload.lr

    def loss(params, X, y):
        a = X
        for i, p in enumerate(params):
            a = a @ p["W"] + p["b"]
            if i < len(params) - 1:
                a = act(a)
        return loss_fn(a, y)

    def step(params, X, y):
        value, grads = jax.value_and_grad(loss)(params, X, y)
        return jax.tree.map(lambda p, g: p - lr * g, params, grads), value

    return step


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
    """`step()` of nn.Sequential + optim.SGD on the same params and batch, or None without torch."""
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(max(1, torch.get_num_threads()))
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

    def step():
        optimizer.zero_grad()
        loss = loss_fn(model(Xt), yt)
        loss.backward()
        optimizer.step()
        return loss.item()

    return step
