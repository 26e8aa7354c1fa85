"""Compiled training: one jitted step, whole epochs fused in `lax.scan`, and vmapped runs.

    step = train_step(net, loss, optax.sgd(1.0))               # jitted, pure
    params, opt_state, metrics = step(params, opt_state, X, y)
    params, history = fit(net, params, (X, y), loss, optax.adam(1e-3),
                          epochs=200, batch_size=128, key=key)
    grads = per_example_grads(net, params, X, y, loss)          # leading axis = example
    params, history = fit_ensemble(net, keys, (X, y), loss, optax.sgd, learning_rates=lrs, ...)

`grad="backprop"` uses fnnet's hand-written backward pass, `grad="autodiff"`
uses `jax.grad` of the same loss; both give the same trajectory.

| module | job |
|---|---|
| `grads.py` | the batch gradient by grad mode; `per_example_grads` |
| `step.py` | `train_step`: gradient, optimizer update, metrics |
| `epochs.py` | `fit`: whole epochs in one compiled program, guarded per block |
| `ensemble.py` | `fit_ensemble`: `fit`'s program vmapped over models |
"""

from fnnet.train.ensemble import fit_ensemble
from fnnet.train.epochs import BLOCK, Carry, DivergenceError, RecompileWarning, fit
from fnnet.train.grads import GRAD_MODES, per_example_grads, value_and_grad
from fnnet.train.step import evaluate_metrics as metrics
from fnnet.train.step import train_step

__all__ = ["BLOCK", "Carry", "DivergenceError", "GRAD_MODES", "RecompileWarning", "fit", "fit_ensemble",
           "metrics", "per_example_grads", "train_step", "value_and_grad"]
