"""Gradient checking: is a hand-written gradient right, leaf by leaf?

`check_grads` puts three opinions side by side for every parameter leaf:

1. the candidate — any `value_and_grad(params, *args) -> (value, grads)`;
2. `jax.grad` of the loss the candidate claims to differentiate;
3. central finite differences of that loss, in float64, along `directions`
   random unit directions inside each leaf (or, with `elementwise=True`, along
   every coordinate), all evaluated in one compiled `lax.map`.

A leaf passes when the candidate agrees with `jax.grad` element by element,

    |candidate − jax.grad| ≤ atol + rtol · (|candidate| + |jax.grad|),

and with the finite differences, fd vs ⟨candidate, v⟩ within `fd_atol` and
`fd_rtol`. Where the finite differences disagree with `jax.grad` itself (a kink
of ReLU within `eps`, say) they cannot judge, and the report warns instead.
"""

import contextlib
import dataclasses
import json
import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from fnnet import losses as losses_lib
from fnnet._checks import is_int, tree_mismatch
from fnnet.backprop import backprop
from fnnet.network import Network

TOLERANCES = {  # dtype: (rtol, atol, fd_rtol, fd_atol)
    "float64": (1e-8, 1e-12, 1e-6, 1e-8),
    "float32": (1e-3, 1e-6, 1e-3, 1e-6),
}
_TINY = 1e-30


@dataclasses.dataclass(frozen=True)
class LeafResult:
    """One parameter leaf's verdict.

    Attributes:
      path: key path, e.g. `[1]['W']`.
      shape, dtype: of the parameter.
      max_abs_error, max_rel_error: over the leaf, candidate vs jax.grad, with
        rel. error |a − b| / max(|a| + |b|, tiny).
      worst_index: the element furthest outside the tolerance (or nearest to it).
      candidate, reference: the candidate's and jax.grad's values there.
      fd_max_error: largest |fd − ⟨candidate, v⟩| over the finite-difference directions.
      fd_ok: the finite differences agree with the candidate (None: they could not judge).
      ok: the leaf passes.
      problem: why it fails, in words; "" when it passes.
    """

    path: str
    shape: tuple
    dtype: str
    max_abs_error: float
    max_rel_error: float
    worst_index: tuple
    candidate: float
    reference: float
    fd_max_error: float
    fd_ok: "bool | None"
    ok: bool
    problem: str = ""


@dataclasses.dataclass(frozen=True)
class GradCheckReport:
    """What `check_grads` found. `str(report)` is a table; `report.to_dict()` is for scripts.

    Attributes:
      ok: every leaf and the loss value pass.
      message: one line: the verdict, naming the first failing leaf and index.
      leaves: one `LeafResult` per parameter leaf, in tree order.
      value, reference_value: the candidate's loss value and the loss itself.
      value_ok: they agree within the tolerances.
      dtype: the precision the check ran in.
      settings: rtol, atol, eps, fd_rtol, fd_atol, directions, elementwise.
      warnings: what the reader should know (float32, finite differences that
        disagree with jax.grad, ...).
    """

    ok: bool
    message: str
    leaves: tuple[LeafResult, ...]
    value: float
    reference_value: float
    value_ok: bool
    dtype: str
    settings: dict
    warnings: tuple[str, ...]

    def to_dict(self) -> dict:
        """Plain Python values, ready for `json.dumps`."""
        out = dataclasses.asdict(self)
        out["leaves"] = [dataclasses.asdict(leaf) for leaf in self.leaves]
        return json.loads(json.dumps(out, default=list))

    def to_json(self, **kwargs) -> str:
        return json.dumps(self.to_dict(), **kwargs)

    def __str__(self) -> str:
        s = self.settings
        fd = (f"every element" if s["elementwise"] else f"{s['directions']} random directions per leaf")
        head = (f"gradient check in {self.dtype}: candidate vs jax.grad (rtol={s['rtol']:.0e}, "
                f"atol={s['atol']:.0e}) and central differences in float64 ({fd}, eps={s['eps']:.0e})")
        columns = ("leaf", "shape", "dtype", "max abs err", "max rel err", "worst index",
                   "candidate", "jax.grad", "fd max err", "result")
        rows = [columns] + [
            (leaf.path, str(leaf.shape), leaf.dtype, f"{leaf.max_abs_error:.1e}",
             f"{leaf.max_rel_error:.1e}", str(leaf.worst_index), f"{leaf.candidate:.6g}",
             f"{leaf.reference:.6g}", f"{leaf.fd_max_error:.1e}",
             ("ok" if leaf.fd_ok is not None else "ok (fd could not judge)") if leaf.ok
             else f"FAIL: {leaf.problem}")
            for leaf in self.leaves
        ]
        widths = [max(len(r[i]) for r in rows) for i in range(len(columns) - 1)]
        table = ["  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[-1] for r in rows]
        value = (f"loss value: candidate {self.value:.10g}, loss {self.reference_value:.10g}, "
                 f"abs. error {abs(self.value - self.reference_value):.1e}: "
                 f"{'ok' if self.value_ok else 'FAIL'}")
        warnings = [f"warning: {w}" for w in self.warnings]
        return "\n".join([head, *table, value, *warnings, self.message])


def check_grads(candidate, *args, rtol=None, atol=None, eps=1e-6, directions=4,
                fd_rtol=None, fd_atol=None, elementwise=False, key=None,
                dtype="float64") -> GradCheckReport:
    """Check a gradient leaf by leaf against jax.grad and float64 finite differences.

    Two forms:

        check_grads(value_and_grad, loss, params, *args)   # any user code
        check_grads(net, params, X, y, loss)                # fnnet.backprop on a Network

    Args:
      candidate: `value_and_grad(params, *args) -> (value, grads)`, the code under
        test; it may be jitted, a `custom_vjp`, or use `vmap` inside.
      loss: `loss(params, *args) -> scalar`, the function it claims to differentiate.
      params: a pytree of floating arrays.
      *args: the rest of the arguments of both (data, targets, ...).
      rtol, atol: element-wise tolerance against jax.grad; defaults by `dtype`:
        float64 (1e-8, 1e-12), float32 (1e-3, 1e-6).
      eps: finite-difference step (default 1e-6), in units of a unit direction.
      directions: random unit directions per leaf (default 4).
      fd_rtol, fd_atol: tolerance for fd against ⟨grads, v⟩; defaults by `dtype`:
        float64 (1e-6, 1e-8), float32 (1e-3, 1e-6).
      elementwise: also take finite differences along every coordinate (small
        parameter sets only; up to 20,000 elements).
      key: `jax.random` key for the directions (default `jax.random.key(0)`).
      dtype: `"float64"` (default): params and floating args are cast to float64
        and the check runs inside a scoped `jax.enable_x64`, restoring the global
        setting afterwards; `"float32"`: the candidate and jax.grad run in float32,
        the tolerances widen and the report says so. Finite differences are always
        float64.

    Returns:
      A `GradCheckReport`; `report.ok` is the verdict.

    Raises:
      ValueError: the candidate's gradient tree does not match `params` (a leaf
        missing, extra or of the wrong shape), named by key path.
    """
    if isinstance(candidate, Network):
        if len(args) != 4:
            raise TypeError(
                f"check_grads(net, params, X, y, loss): expected 4 arguments after the "
                f"network, got {len(args)}"
            )
        net, (params, X, y, loss) = candidate, args
        loss = losses_lib.get(loss)
        return check_grads(
            lambda p, X, y: backprop(net, p, X, y, loss),
            lambda p, X, y: loss(net.apply(p, X), y).mean(),
            params, X, y, rtol=rtol, atol=atol, eps=eps, directions=directions,
            fd_rtol=fd_rtol, fd_atol=fd_atol, elementwise=elementwise, key=key, dtype=dtype,
        )
    if not args:
        raise TypeError("check_grads(value_and_grad, loss, params, *args): missing loss and params")
    loss_fn, params, *data = args
    if not callable(candidate) or not callable(loss_fn):
        raise TypeError(
            f"check_grads: expected callables value_and_grad and loss first, got "
            f"{type(candidate).__name__} and {type(loss_fn).__name__}"
        )
    dtype = jnp.dtype(dtype).name
    if dtype not in TOLERANCES:
        raise ValueError(f"check_grads: dtype must be float64 or float32, got {dtype!r}")
    rtol, atol, fd_rtol, fd_atol = (
        default if given is None else given
        for given, default in zip((rtol, atol, fd_rtol, fd_atol), TOLERANCES[dtype])
    )
    if not is_int(directions, 1) or not eps > 0:
        raise ValueError(f"check_grads: need directions ≥ 1 and eps > 0, got {directions!r}, {eps!r}")
    settings = dict(rtol=rtol, atol=atol, eps=eps, fd_rtol=fd_rtol, fd_atol=fd_atol,
                    directions=directions, elementwise=elementwise)
    key = jax.random.key(0) if key is None else key
    _check_floating(params)

    warnings = []
    if dtype == "float32":
        warnings.append(f"checked in float32: tolerances widened to rtol={rtol:.0e}, atol={atol:.0e}; "
                        f"the default float64 check is far stricter")
    scope = jax.enable_x64(True) if dtype == "float64" else contextlib.nullcontext()
    with scope:
        params_c, data_c = _cast((params, data), dtype)
        value, grads = candidate(params_c, *data_c)
        ref_value, ref = jax.jit(jax.value_and_grad(loss_fn))(params_c, *data_c)
        _check_structure(grads, params_c)
        grads_np = jax.tree.map(np.asarray, grads)
        ref_np = jax.tree.map(np.asarray, ref)
        value, ref_value = float(value), float(ref_value)
    with jax.enable_x64(True):
        params64, data64 = _cast((params, data), "float64")
        fd = _finite_differences(loss_fn, params64, data64, grads_np, ref_np, key, eps,
                                 directions, elementwise)

    leaves = []
    paths = [jax.tree_util.keystr(p) for p, _ in jax.tree.flatten_with_path(params_c)[0]]
    for i, (path, g, r, p) in enumerate(zip(paths, jax.tree.leaves(grads_np),
                                            jax.tree.leaves(ref_np), jax.tree.leaves(params_c))):
        d = {name: x[fd["leaf"] == i] for name, x in fd.items()}
        tol = fd_atol + fd_rtol * np.maximum(np.abs(d["fd"]), np.abs(d["reference"]))
        # A kink within eps (ReLU at exactly 0) biases fd by up to |jump|/2: where that
        # matters and the jump does not shrink with eps, these differences cannot judge.
        kinked = (np.abs(d["jump"]) / 2 > tol) & (np.abs(d["jump10"]) > 0.5 * np.abs(d["jump"]))
        err_c = np.abs(d["fd"] - d["candidate"])[~kinked]
        fd_ok = bool((err_c <= tol[~kinked]).all()) if (~kinked).any() else None
        if fd_ok is None:
            warnings.append(f"finite differences cannot judge {path}: the loss has a kink within "
                            f"eps={eps:.0e} along every direction tried (e.g. ReLU at exactly 0)")
        elif (np.abs(d["fd"] - d["reference"])[~kinked] > tol[~kinked]).any():
            warnings.append(f"jax.grad itself disagrees with finite differences at {path}: a "
                            f"custom_jvp/custom_vjp rule inside the loss may be wrong")
        leaves.append(_leaf_result(path, g, r, p.dtype, rtol, atol, err_c.max(initial=0.0), fd_ok))

    value_ok = abs(value - ref_value) <= atol + rtol * (abs(value) + abs(ref_value))
    if not math.isfinite(ref_value):
        warnings.append(f"the loss itself is {ref_value} at these params")
    failing = [leaf for leaf in leaves if not leaf.ok]
    ok = not failing and value_ok
    if failing:
        message = _mismatch_message(failing[0])
    elif not value_ok:
        message = (f"loss value mismatch: candidate {value:.10g}, loss {ref_value:.10g}, "
                   f"abs. error {abs(value - ref_value):.1e}")
    else:
        unjudged = sum(leaf.fd_ok is None for leaf in leaves)
        message = (f"PASS: all {len(leaves)} leaves agree with jax.grad and with finite "
                   f"differences ({dtype})"
                   + (f"; finite differences could not judge {unjudged}" if unjudged else ""))
    return GradCheckReport(ok, message, tuple(leaves), value, ref_value, bool(value_ok), dtype,
                           settings, tuple(warnings))


def _mismatch_message(leaf: LeafResult) -> str:
    if leaf.problem == "differs from jax.grad":
        rel = abs(leaf.candidate - leaf.reference) / max(abs(leaf.candidate) + abs(leaf.reference), _TINY)
        return (f"gradient mismatch at {leaf.path} index {leaf.worst_index}: candidate "
                f"{leaf.candidate:.6g}, jax.grad {leaf.reference:.6g}, rel. error {rel:.1e}")
    if leaf.problem == "differs from finite differences":
        return (f"gradient mismatch at {leaf.path}: float64 finite differences disagree with the "
                f"candidate by up to {leaf.fd_max_error:.1e}, though it matches jax.grad of the loss: "
                f"check any custom_jvp/custom_vjp rule the loss uses")
    return f"gradient mismatch at {leaf.path}: {leaf.problem}"


def _leaf_result(path, g, r, param_dtype, rtol, atol, fd_max_error, fd_ok) -> LeafResult:
    a, b = g.astype(np.float64), r.astype(np.float64)
    diff = np.abs(a - b)
    total = np.abs(a) + np.abs(b)
    rel = diff / np.maximum(total, _TINY)
    excess = diff / (atol + rtol * total)
    finite = np.isfinite(a)
    excess = np.where(finite, excess, np.inf)
    flat = int(np.argmax(excess)) if a.size else 0
    index = tuple(int(i) for i in np.unravel_index(flat, a.shape)) if a.size else ()
    problem = ""
    if g.dtype != param_dtype:
        problem = f"dtype {g.dtype}, expected {param_dtype} (the parameter's dtype)"
    elif not finite.all():
        problem = f"non-finite value {a[index]} at index {index}"
    elif a.size and excess[index] > 1:
        problem = "differs from jax.grad"
    elif fd_ok is False:
        problem = "differs from finite differences"
    return LeafResult(
        path=path, shape=tuple(g.shape), dtype=str(g.dtype),
        max_abs_error=float(np.nan_to_num(diff, nan=np.inf).max(initial=0.0)),
        max_rel_error=float(np.nan_to_num(rel, nan=np.inf).max(initial=0.0)),
        worst_index=index, candidate=float(a[index]) if a.size else 0.0,
        reference=float(b[index]) if b.size else 0.0,
        fd_max_error=float(fd_max_error), fd_ok=fd_ok, ok=not problem, problem=problem,
    )


def _finite_differences(loss_fn, params, data, grads, ref, key, eps, directions, elementwise):
    """Finite differences along directions v, as numpy arrays keyed by name.

    fd: central difference (L(p + εv) − L(p − εv)) / 2ε; jump, jump10: the forward
    minus the backward one-sided difference at ε and ε/10 (for a smooth loss they
    shrink with ε, at a kink they do not); candidate, reference: ⟨grads, v⟩ and
    ⟨jax.grad, v⟩; leaf: the leaf each v lies in.

    Directions: `directions` random unit vectors inside each leaf, then (with
    `elementwise`) every coordinate. They are drawn on the host and evaluated in
    chunks of at most 2²² numbers by one compiled `lax.map`, so memory stays
    bounded and nothing recompiles per leaf.
    """
    flat, unravel = ravel_pytree(params)
    n, sizes = flat.size, [leaf.size for leaf in jax.tree.leaves(params)]
    segment = np.repeat(np.arange(len(sizes)), sizes)  # leaf index of each coordinate
    leaf_of = np.repeat(np.arange(len(sizes)), directions)
    coordinate = np.full(leaf_of.shape, -1)  # -1: a random direction inside the leaf
    if elementwise:
        if n > 20_000:
            raise ValueError(f"check_grads: elementwise=True costs two loss evaluations per "
                             f"element; {n} elements is over the limit of 20,000: use directions")
        leaf_of, coordinate = np.concatenate([leaf_of, segment]), np.concatenate([coordinate, np.arange(n)])
    # Non-finite entries are reported by their own leaf; here they would spill into every
    # direction through 0 · nan.
    g_flat, r_flat = (np.nan_to_num(np.asarray(ravel_pytree(t)[0], np.float64), nan=0.0, posinf=0.0,
                                    neginf=0.0) for t in (grads, ref))
    rng = np.random.default_rng(np.asarray(jax.random.key_data(key)).ravel().tolist())

    def rows(leaves, coordinates):
        V = np.zeros((len(leaves), n))
        for row, (leaf, i) in enumerate(zip(leaves, coordinates)):
            if i >= 0:
                V[row, i] = 1.0
            else:
                v = rng.standard_normal(sizes[leaf])
                V[row, segment == leaf] = v / max(np.linalg.norm(v), _TINY)
        return V

    @jax.jit
    def differences(flat, data, V):
        """Per direction: central difference at eps, and forward − backward at eps and eps/10."""
        L0 = loss_fn(unravel(flat), *data)

        def one(v):
            def L(h):
                return loss_fn(unravel(flat + h * v), *data)
            plus, minus, plus10, minus10 = L(eps), L(-eps), L(eps / 10), L(-eps / 10)
            return ((plus - minus) / (2 * eps),
                    (plus - 2 * L0 + minus) / eps,
                    (plus10 - 2 * L0 + minus10) / (eps / 10))

        return jax.lax.map(one, V)

    chunk = max(1, min(len(leaf_of), (1 << 22) // max(n, 1)))
    out = {"fd": [], "jump": [], "jump10": [], "candidate": [], "reference": []}
    for start in range(0, len(leaf_of), chunk):
        V = rows(leaf_of[start : start + chunk], coordinate[start : start + chunk])
        padded = np.concatenate([V, np.zeros((chunk - len(V), n))])  # one shape: one compilation
        for name, x in zip(("fd", "jump", "jump10"), differences(flat, data, jnp.asarray(padded))):
            out[name].append(np.asarray(x)[: len(V)])
        out["candidate"].append(V @ g_flat)
        out["reference"].append(V @ r_flat)
    return {name: np.concatenate(x) for name, x in out.items()} | {"leaf": leaf_of}


def _cast(tree, dtype):
    """Floating leaves of `tree` as `dtype`; everything else unchanged."""
    def cast(x):
        x = jnp.asarray(x) if isinstance(x, (np.ndarray, float)) else x
        if isinstance(x, jax.Array) and jnp.issubdtype(x.dtype, jnp.floating):
            return x.astype(dtype)
        return x
    return jax.tree.map(cast, tree)


def _check_floating(params):
    for path, leaf in jax.tree.flatten_with_path(params)[0]:
        if not jnp.issubdtype(jnp.result_type(leaf), jnp.floating):
            raise ValueError(
                f"check_grads: params{jax.tree_util.keystr(path)} has dtype "
                f"{jnp.result_type(leaf)}; expected floating-point parameters"
            )


def _check_structure(grads, params):
    mismatch = tree_mismatch(grads, params)
    if mismatch is not None and mismatch.path is None:
        raise ValueError(f"gradient tree does not match the parameter tree: {mismatch.detail}")
    if mismatch is not None:
        raise ValueError(f"gradient at {jax.tree_util.keystr(mismatch.path)} has shape {mismatch.got}, "
                         f"expected {mismatch.want} (the parameter's shape)")


def random_batch(key, net, loss, m, dtype=jnp.float32):
    """X `(m, *in_shape)` ~ N(0, 1) and targets `y` that fit `loss` for `net`'s output
    (`loss.targets`: class labels, softmax targets, probabilities, or N(0, 1))."""
    loss = losses_lib.get(loss)
    kx, ky = jax.random.split(key)
    return jax.random.normal(kx, (m, *net.in_shape), dtype), loss.targets(ky, (m, *net.out_shape), dtype)
