"""Gradient checking: is a hand-written gradient right, leaf by leaf?

`check_grads` puts three opinions side by side for every parameter leaf:

1. the candidate — any `value_and_grad(params, *args) -> (value, grads)`;
2. JAX's gradient of the loss the candidate claims to differentiate: `jax.grad`
   (`modes=("rev",)`, the default), `jax.jacfwd` (`"fwd"`), or both;
3. central finite differences of that loss, in float64, along `directions`
   random unit directions inside each leaf (or, with `elementwise=True`, along
   every coordinate too), all evaluated in one compiled `lax.map`.

Each leaf is measured in units of its own RMS: the step along a unit direction v is
eps · RMS(leaf) (eps for a leaf of zeros), so leaves at 1e-8 and at 1e6 in one tree are
checked alike. A leaf passes when the candidate agrees with JAX element by element,

    |candidate − jax.grad| ≤ atol + rtol · (|candidate| + |jax.grad|),

and with the finite differences along each u = RMS(leaf) · v,

    |fd − ⟨candidate, u⟩| ≤ fd_atol + fd_rtol · max(|fd|, |⟨jax.grad, u⟩|).

Kinks. Where the loss has a kink within the step (ReLU at exactly 0) the one-sided
differences do not shrink with the step: a central difference cannot judge that direction.
Where the candidate differs from JAX only at such points it may be another valid
subgradient (JAX takes 0.5 for `jnp.maximum(x, 0)` at 0, a hand-written ReLU often 0): it
is one when, along the coordinate of each element that differs, it lies between the loss's
one-sided derivatives, and along candidate − jax.grad, where the loss is smooth, it
matches the central difference. The leaf then passes, and the report says so.

A loss JAX cannot trace (numpy code) is checked by the finite differences alone: the
central difference along every coordinate, evaluated on the host, is the reference.
`order=2` also checks the loss's Hessian-vector products against central differences of
its gradient.
"""

import contextlib
import dataclasses
import json
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from fnnet import losses as losses_lib
from fnnet._checks import is_int, tree_mismatch
from fnnet.backprop import backprop
from fnnet.layercheck import LayerReport, check_layers
from fnnet.network import Network

TOLERANCES = {  # dtype: (rtol, atol, fd_rtol, fd_atol)
    "float64": (1e-8, 1e-12, 1e-6, 1e-8),
    "float32": (1e-3, 1e-6, 1e-3, 1e-6),
}
MODES = {"rev": "jax.grad", "fwd": "jax.jacfwd"}  # autodiff mode: the gradient it gives
FD = "finite differences"  # the reference when JAX cannot trace the loss
_TINY = 1e-30
_MAX_ELEMENTS = 20_000  # coordinates taken one by one
_PROBES = 32  # elements per leaf that differ from JAX and are probed for a kink
_NO_SUBGRADIENT = " at a kink of the loss, and is no subgradient there"


@dataclasses.dataclass(frozen=True)
class LeafResult:
    """One parameter leaf's verdict.

    Attributes:
      path: key path, e.g. `[1]['W']`.
      shape, dtype: of the parameter.
      max_abs_error, max_rel_error: over the leaf, candidate vs the reference (jax.grad,
        or the finite differences for a loss JAX cannot trace), with rel. error
        |a − b| / max(|a| + |b|, tiny).
      worst_index: the element furthest outside the tolerance (or nearest to it).
      candidate, reference: the candidate's and the reference's values there.
      fd_max_error: largest |fd − ⟨candidate, v⟩| over the unit finite-difference
        directions v along which the loss is smooth.
      fd_ok: the finite differences agree with the candidate (None: they could not judge).
      ok: the leaf passes.
      problem: why it fails, in words; "" when it passes.
      step: the finite-difference step along a unit direction, eps · RMS(leaf).
      subgradient: the candidate differs from the reference only where the loss has a
        kink, and is a valid subgradient there.
      fd_worst_index: the coordinate whose finite difference is furthest outside the
        tolerance (None without coordinate directions).
      hvp_max_error: with `order=2`, the largest error of the Hessian-vector products along
        this leaf's directions (None otherwise, or where the gradient is not smooth).
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
    step: float = 0.0
    subgradient: bool = False
    fd_worst_index: "tuple | None" = None
    hvp_max_error: "float | None" = None


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
      settings: rtol, atol, eps, fd_rtol, fd_atol, directions, elementwise, modes, order.
      warnings: what the reader should know (float32, finite differences that
        disagree with jax.grad, a loss JAX cannot trace, ...).
      reference: what the candidate was compared with element by element: "jax.grad",
        "jax.jacfwd", or "finite differences" (a loss JAX cannot trace).
      layers: for `check_grads(net, ...)`, every layer's backward against `jax.vjp` of its
        own forward at the inputs it sees (`fnnet.check_layers`); `message` then names the
        broken layer by its path (a wrong dx makes every layer below it look wrong).
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
    reference: str = "jax.grad"
    layers: "LayerReport | None" = None

    def to_dict(self) -> dict:
        """Plain Python values, ready for `json.dumps`."""
        out = dataclasses.asdict(self)
        out["leaves"] = [dataclasses.asdict(leaf) for leaf in self.leaves]
        out["layers"] = None if self.layers is None else [
            {"path": r.path, "layer": r.layer, "ok": r.ok, "message": r.message} for r in self.layers.results]
        return json.loads(json.dumps(out, default=list))

    def to_json(self, **kwargs) -> str:
        return json.dumps(self.to_dict(), **kwargs)

    def __str__(self) -> str:
        s = self.settings
        fd = "every element" if s["elementwise"] else f"{s['directions']} random directions per leaf"
        steps = [leaf.step for leaf in self.leaves] or [s["eps"]]
        step = (f"{min(steps):.1e}" if f"{min(steps):.1e}" == f"{max(steps):.1e}"
                else f"{min(steps):.1e} to {max(steps):.1e}")
        fd = f"{fd}, step eps·RMS(leaf) with eps={s['eps']:.0e}: {step}"
        if self.reference == FD:
            head = (f"gradient check in {self.dtype}: candidate vs central differences in float64 alone "
                    f"({fd}; fd_rtol={s['fd_rtol']:.0e}, fd_atol={s['fd_atol']:.0e})")
        else:
            head = (f"gradient check in {self.dtype}: candidate vs {' and '.join(_names(s['modes']))} "
                    f"(rtol={s['rtol']:.0e}, atol={s['atol']:.0e}) and central differences in float64 ({fd})")
        second = s["order"] == 2
        if second:
            head += "; Hessian-vector products vs central differences of the gradient"
        columns = ("leaf", "shape", "dtype", "max abs err", "max rel err", "worst index",
                   "candidate", {FD: "fin. diff."}.get(self.reference, self.reference),
                   "fd max err", *(("hvp max err",) if second else ()), "result")
        rows = [columns] + [
            (leaf.path, str(leaf.shape), leaf.dtype, f"{leaf.max_abs_error:.1e}",
             f"{leaf.max_rel_error:.1e}", str(leaf.worst_index), f"{leaf.candidate:.6g}",
             f"{leaf.reference:.6g}", f"{leaf.fd_max_error:.1e}",
             *((f"{leaf.hvp_max_error:.1e}" if leaf.hvp_max_error is not None else "-",) if second else ()),
             (("ok (a subgradient at a kink)" if leaf.subgradient else "ok") if leaf.fd_ok is not None
              else "ok (fd could not judge)") if leaf.ok else f"FAIL: {leaf.problem}")
            for leaf in self.leaves
        ]
        widths = [max(len(r[i]) for r in rows) for i in range(len(columns) - 1)]
        table = ["  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[-1] for r in rows]
        value = (f"loss value: candidate {self.value:.10g}, loss {self.reference_value:.10g}, "
                 f"abs. error {abs(self.value - self.reference_value):.1e}: "
                 f"{'ok' if self.value_ok else 'FAIL'}")
        warnings = [f"warning: {w}" for w in self.warnings]
        layers = []
        if self.layers is not None and not self.layers.ok:  # which layer's backward is wrong
            layers = [f"layer check: {r.message}" for r in self.layers.results if not r.ok]
        return "\n".join([head, *table, value, *warnings, *layers, self.message])


def check_grads(candidate, *args, rtol=None, atol=None, eps=1e-6, directions=4,
                fd_rtol=None, fd_atol=None, elementwise=False, key=None,
                dtype="float64", modes=("rev",), order=1) -> GradCheckReport:
    """Check a gradient leaf by leaf against JAX's and float64 finite differences.

    Two forms:

        check_grads(value_and_grad, loss, params, *args)   # any user code, JAX or numpy
        check_grads(net, params, X, y, loss)                # fnnet.backprop on a Network

    Args:
      candidate: `value_and_grad(params, *args) -> (value, grads)`, the code under
        test; it may be jitted, a `custom_vjp`, use `vmap` inside, or be numpy code.
      loss: `loss(params, *args) -> scalar`, the function it claims to differentiate.
        A loss JAX cannot trace (numpy code) is evaluated on the host and checked by
        the central differences along every coordinate alone (up to 20,000 elements);
        the candidate and the loss then receive numpy arrays.
      params: a pytree of floating arrays.
      *args: the rest of the arguments of both (data, targets, ...).
      rtol, atol: element-wise tolerance against JAX; defaults by `dtype`:
        float64 (1e-8, 1e-12), float32 (1e-3, 1e-6).
      eps: finite-difference step (default 1e-6) in units of each leaf's RMS: along a
        unit direction inside a leaf the step is eps · RMS(leaf) (eps for a leaf of zeros).
      directions: random unit directions per leaf (default 4).
      fd_rtol, fd_atol: tolerance for fd against ⟨grads, u⟩ along u = RMS(leaf) · v;
        defaults by `dtype`: float64 (1e-6, 1e-8), float32 (1e-3, 1e-6).
      elementwise: also take finite differences along every coordinate (small
        parameter sets only; up to 20,000 elements).
      key: `jax.random` key for the directions (default `jax.random.key(0)`).
      dtype: `"float64"` (default): params and floating args are cast to float64
        and the check runs inside a scoped `jax.enable_x64`, restoring the global
        setting afterwards; `"float32"`: the candidate and JAX run in float32,
        the tolerances widen and the report says so. Finite differences are always
        float64.
      modes: the autodiff the candidate is compared with, element by element:
        `("rev",)` (default) `jax.grad`; `("fwd",)` `jax.jacfwd`, forward mode (a loss
        reverse mode cannot differentiate, such as a `lax.while_loop`; rules as
        `jax.jvp` uses them); `("fwd", "rev")` both.
      order: 2 also checks second derivatives: the Hessian-vector products H u of each
        mode (`jax.jvp` or `jax.vjp` of the gradient) against central differences of the
        gradient along the same directions u. Default 1.

    Returns:
      A `GradCheckReport`; `report.ok` is the verdict.

    Raises:
      ValueError: the candidate's gradient tree does not match `params` (a leaf
        missing, extra or of the wrong shape), named by key path.

    >>> import jax, jax.numpy as jnp, fnnet
    >>> loss = lambda p, X: jnp.mean(jnp.tanh(X @ p["w"]) ** 2)
    >>> fnnet.check_grads(jax.value_and_grad(loss), loss, {"w": jnp.ones(3)}, jnp.eye(3)).ok
    True
    """
    options = dict(rtol=rtol, atol=atol, eps=eps, directions=directions, fd_rtol=fd_rtol,
                   fd_atol=fd_atol, elementwise=elementwise, key=key, dtype=dtype, modes=modes,
                   order=order)
    if isinstance(candidate, Network):
        if len(args) != 4:
            raise TypeError(
                f"check_grads(net, params, X, y, loss): expected 4 arguments after the "
                f"network, got {len(args)}"
            )
        net, (params, X, y, loss) = candidate, args
        loss = losses_lib.get(loss)
        # Training mode: the network's initial state, and a fixed key for its dropout masks.
        state = net.init_state() if net.has_state else None
        k = jax.random.fold_in(jax.random.key(0) if key is None else key, 1) if net.root.uses_key else None

        def apply(p, X):
            return net.run(p, state, X, k, True)[0]

        extras = {**({"state": state} if state is not None else {}), **({"key": k} if k is not None else {})}
        report = check_grads(lambda p, X, y: backprop(net, p, X, y, loss, **extras)[:2],
                             lambda p, X, y: loss.value_and_delta(apply(p, X), y, net.input_mask(X))[0],
                             params, X, y, **options)
        with jax.enable_x64(True) if report.dtype == "float64" else contextlib.nullcontext():
            params_c, X_c = _cast((params, X), report.dtype)
            layers = check_layers(net, params_c, X_c, state=state, key=k, train=True)
        if layers.ok:
            return dataclasses.replace(report, layers=layers)
        culprit = layers.culprit.message
        if report.ok:  # the gradient passes (a valid subgradient at a kink, say): a layer differs only there
            return dataclasses.replace(report, layers=layers, warnings=report.warnings + (
                f"{culprit}, though the network's gradient passes (a kink of the layer at these inputs?)",))
        return dataclasses.replace(report, message=f"{report.message}; the broken layer: {culprit}", layers=layers)
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
    if (not isinstance(modes, (tuple, list)) or not modes or not set(modes) <= set(MODES)
            or len(set(modes)) != len(modes)):
        raise ValueError(f"check_grads: modes must be a non-empty tuple of 'rev' (jax.grad) and "
                         f"'fwd' (jax.jacfwd), e.g. modes=('fwd', 'rev'); got {modes!r}")
    if not is_int(order) or order not in (1, 2):
        raise ValueError(f"check_grads: order must be 1 or 2, got {order!r}")
    modes = tuple(m for m in MODES if m in modes)  # "rev" first: jax.grad leads where given
    settings = dict(rtol=rtol, atol=atol, eps=eps, fd_rtol=fd_rtol, fd_atol=fd_atol,
                    directions=directions, elementwise=elementwise, modes=modes, order=order)
    key = jax.random.key(0) if key is None else key
    _check_floating(params)

    warnings = []
    if dtype == "float32":
        warnings.append(f"checked in float32: tolerances widened to rtol={rtol:.0e}, atol={atol:.0e}; "
                        f"the default float64 check is far stricter")
    scope = jax.enable_x64(True) if dtype == "float64" else contextlib.nullcontext()
    with scope:
        params_c, data_c = _cast((params, data), dtype)
        ref_value, references, untraceable = _autodiff(loss_fn, modes, params_c, data_c)
        host = untraceable is not None
        if host:
            reason = f"{type(untraceable).__name__}: {(str(untraceable).splitlines() or [''])[0]}"
            if order == 2:
                raise ValueError(f"check_grads: order=2 needs JAX to differentiate the loss twice, but "
                                 f"JAX cannot trace or differentiate it ({reason})")
            warnings.append(f"jax.grad not available: JAX cannot trace or differentiate the loss ({reason}); "
                            f"it is checked by float64 central differences alone, every element, on the host")
            params_c, data_c = _host((params_c, data_c))
            try:
                ref_value = loss_fn(params_c, *data_c)
            except Exception:
                raise untraceable  # not numpy code after all: JAX's own error says what is wrong
        value, grads = candidate(params_c, *data_c)
        _check_structure(grads, params_c)
        g_leaves = [np.asarray(g) for g in jax.tree.leaves(grads)]
        references = {name: [np.asarray(r, np.float64) for r in jax.tree.leaves(tree)]
                      for name, tree in references.items()}
        value, ref_value = float(value), float(ref_value)
    settings["elementwise"] = coordinates = elementwise or host

    with jax.enable_x64(True):
        params64, data64 = _cast((params, data), "float64")
        if host:
            params64, data64 = _host((params64, data64))
        leaves64 = jax.tree.leaves(params64)
        sizes = [int(np.size(p)) for p in leaves64]
        offsets, scales = np.cumsum([0, *sizes]), np.array([_scale(p) for p in leaves64])
        n = int(offsets[-1])
        if coordinates and n > _MAX_ELEMENTS:
            why = (f"JAX cannot trace or differentiate the loss ({reason}), so central differences "
                   f"along every element are the reference" if host
                   else "elementwise=True costs two loss evaluations per element")
            raise ValueError(f"check_grads: {why}; {n} elements is over the limit of 20,000: "
                             + ("check a smaller problem" if host else "use directions"))
        # A direction is (leaf, u): u a vector inside the leaf, or the index of one of its elements.
        rng = np.random.default_rng(np.asarray(jax.random.key_data(key)).ravel().tolist())
        spec = [(leaf, rng.standard_normal(size)) for leaf, size in enumerate(sizes) for _ in range(directions)]
        if coordinates:
            spec += [(leaf, i) for leaf, size in enumerate(sizes) for i in range(size)]
        chunk = max(1, min(len(spec), (1 << 22) // max(n, 1)))
        differences = _differences(loss_fn, params64, data64, eps, chunk, host)
        # Non-finite entries are reported by their own leaf; here they would spill into every
        # direction through 0 · nan.
        flats = {name: _flat(t) for name, t in [("candidate", g_leaves), *references.items()]}
        rows = _evaluate(differences, spec, offsets, scales, flats, chunk, eps)
        if host:  # the central difference along each coordinate is the reference
            on = rows["coordinate"] >= 0
            r = np.zeros(n)
            r[offsets[rows["leaf"][on]] + rows["coordinate"][on]] = rows["fd"][on] / scales[rows["leaf"][on]]
            references = {FD: [r[o:o + size].reshape(np.shape(p)) for o, size, p in zip(offsets, sizes, leaves64)]}
        tols = (rtol, atol, fd_rtol, fd_atol)
        probes = _probes(g_leaves, references, scales, tols, coordinates)
        if probes:
            more = _evaluate(differences, probes, offsets, scales, flats, chunk, eps)
            rows = {k: np.concatenate([rows[k], more[k]]) for k in rows}
        second = (_second_order(loss_fn, params64, data64, spec, offsets, scales, eps, max(1, chunk // 4),
                                modes, fd_rtol, fd_atol) if order == 2 else None)

    paths = [jax.tree_util.keystr(p) for p, _ in jax.tree.flatten_with_path(params_c)[0]]
    param_dtypes = [np.dtype(p.dtype) for p in jax.tree.leaves(params_c)]
    leaves = _verdicts(paths, param_dtypes, g_leaves, references, rows, scales, eps, tols, warnings)
    for leaf, (error, problem) in enumerate(second or ()):
        fails = leaves[leaf].ok and problem is not None
        leaves[leaf] = dataclasses.replace(leaves[leaf], hvp_max_error=error, ok=leaves[leaf].ok and not fails,
                                           problem=problem if fails else leaves[leaf].problem)
        if error is None:
            warnings.append(f"Hessian-vector products cannot be judged at {paths[leaf]}: the gradient "
                            f"has a kink within the step along every direction tried")

    value_ok = abs(value - ref_value) <= atol + rtol * (abs(value) + abs(ref_value))
    if not math.isfinite(ref_value):
        warnings.append(f"the loss itself is {ref_value} at these params")
    failing = [leaf for leaf in leaves if not leaf.ok]
    primary = next(iter(references))
    ok = not failing and value_ok
    if failing:
        message = _mismatch_message(failing[0], primary)
    elif not value_ok:
        message = (f"loss value mismatch: candidate {value:.10g}, loss {ref_value:.10g}, "
                   f"abs. error {abs(value - ref_value):.1e}")
    else:
        unjudged = [leaf.path for leaf in leaves if leaf.fd_ok is None]
        kinks = sum(leaf.subgradient for leaf in leaves)
        message = (f"PASS: all {len(leaves)} leaves agree with "
                   + ("" if host else f"{' and '.join(references)} and with ") + f"finite differences ({dtype})"
                   + (f"; finite differences could not judge {', '.join(unjudged)} (a kink along every "
                      f"direction tried)" if unjudged else "")
                   + (f"; {kinks} as a valid subgradient where the loss has a kink" if kinks else "")
                   + ("; Hessian-vector products agree too" if order == 2 else ""))
    return GradCheckReport(ok, message, tuple(leaves), value, ref_value, bool(value_ok), dtype,
                           settings, tuple(warnings), primary)


def _tolerance(name, g, r, scale, tols):
    """The element-wise tolerance for |g − r|: JAX's rule, or for the central differences the
    fd rule along u = scale · e_i (fd_atol + fd_rtol · |fd| in units of the scale)."""
    rtol, atol, fd_rtol, fd_atol = tols
    if name == FD:
        return fd_atol / scale + fd_rtol * np.abs(r)
    return atol + rtol * (np.abs(g.astype(np.float64)) + np.abs(r))


def _probes(g_leaves, references, scales, tols, coordinates):
    """Directions that ask whether the candidate differs from a reference only at kinks: in
    each leaf where it differs, the coordinates of (up to `_PROBES` of) those elements unless
    every coordinate is taken anyway, and the direction candidate − reference."""
    probes = {}  # keyed, so an element two references disagree on is probed once
    for name, r_leaves in references.items():
        for leaf, (g, r) in enumerate(zip(g_leaves, r_leaves)):
            excess = _excess(g, r, _tolerance(name, g, r, scales[leaf], tols))
            differs = np.flatnonzero(excess > 1)
            if not differs.size or not np.isfinite(excess).all():
                continue
            if not coordinates:
                probes |= {(leaf, int(i)): int(i) for i in differs[np.argsort(-excess[differs])][:_PROBES]}
            probes[leaf, name] = (g.astype(np.float64) - r).ravel()
    return [(leaf, u) for (leaf, _), u in probes.items()]


def _verdicts(paths, param_dtypes, g_leaves, references, rows, scales, eps, tols, warnings):
    """One `LeafResult` per leaf, the first failing reference's (else the first's); the
    reader's notes appended to `warnings`."""
    _, _, fd_rtol, fd_atol = tols
    judge = {}  # per reference, along every direction: ⟨reference, u⟩, the fd tolerance, a kink?
    for name in references:
        reference = rows["fd" if name == FD else name]
        tol = fd_atol + fd_rtol * np.maximum(np.abs(rows["fd"]), np.abs(reference))
        # A kink within the step (ReLU at exactly 0) biases fd by up to |jump|/2: where that
        # matters and the jump does not shrink with the step, fd cannot judge.
        kinked = (np.abs(rows["jump"]) / 2 > tol) & (np.abs(rows["jump10"]) > 0.5 * np.abs(rows["jump"]))
        judge[name] = reference, tol, kinked
    primary = next(iter(references))
    leaves = []
    for leaf, path in enumerate(paths):
        here = rows["leaf"] == leaf
        mine = {k: rows[k][here] for k in ("coordinate", "fd", "candidate", "lo", "hi")}
        results = []
        for name, (reference, tol, kinked) in judge.items():
            g, r = g_leaves[leaf], references[name][leaf]
            result = _leaf_result(path, g, r, _tolerance(name, g, r, scales[leaf], tols), param_dtypes[leaf],
                                  mine | {"tol": tol[here], "kinked": kinked[here]}, scales[leaf],
                                  eps * scales[leaf], name)
            results.append(result)
            smooth = here & ~kinked
            if name != FD and result.fd_ok is not None and (np.abs(rows["fd"] - reference) > tol)[smooth].any():
                warnings.append(f"{name} itself disagrees with finite differences at {path}: a "
                                f"custom_jvp/custom_vjp rule inside the loss may be wrong")
        result = next((r for r in results if not r.ok), results[0])
        if result.fd_ok is None:
            warnings.append(f"finite differences cannot judge {path}: the loss has a kink within the step "
                            f"{result.step:.0e} along every direction tried (e.g. ReLU at exactly 0)")
        if result.ok and result.subgradient:
            warnings.append(
                f"{path} differs from {primary} only where the loss has a kink (e.g. index "
                f"{result.worst_index}: candidate {result.candidate:.6g}, {primary} {result.reference:.6g}), "
                f"and is a valid subgradient there: between the loss's one-sided derivatives along every "
                f"direction tried (" + ("central differences average the two sides" if primary == FD else
                                        f"{primary} takes another one, e.g. 0.5 for jnp.maximum(x, 0) at 0") + ")")
        leaves.append(result)
    return leaves


def _names(modes):
    return [MODES[m] for m in modes]


def _mismatch_message(leaf: LeafResult, reference: str) -> str:
    """The verdict line for a failing leaf; `reference` is the report's (FD for numpy code)."""
    compared = next((name for name in [*MODES.values(), reference]
                     if leaf.problem.startswith(f"differs from {name}")), None)
    if compared is not None:
        rel = abs(leaf.candidate - leaf.reference) / max(abs(leaf.candidate) + abs(leaf.reference), _TINY)
        return (f"gradient mismatch at {leaf.path} index {leaf.worst_index}: candidate "
                f"{leaf.candidate:.6g}, {compared} {leaf.reference:.6g}, rel. error {rel:.1e}"
                + (": the loss has a kink there, and the candidate is no subgradient of it (along some "
                   "direction tried, not between the loss's one-sided derivatives)"
                   if leaf.problem.endswith(_NO_SUBGRADIENT) else ""))
    if leaf.problem == "differs from finite differences":
        at = "" if leaf.fd_worst_index is None else f" index {leaf.fd_worst_index}"
        return (f"gradient mismatch at {leaf.path}{at}: float64 finite differences disagree with the "
                f"candidate by up to {leaf.fd_max_error:.1e}, though it matches {reference} of the loss: "
                f"check any custom_jvp/custom_vjp rule the loss uses")
    if leaf.problem.startswith("Hessian-vector products"):
        return (f"second-order mismatch at {leaf.path}: {leaf.problem} by up to {leaf.hvp_max_error:.1e}: "
                f"check the derivatives of any custom_jvp/custom_vjp rule the loss uses (a stop_gradient "
                f"inside a rule, say)")
    return f"gradient mismatch at {leaf.path}: {leaf.problem}"


def _excess(g, r, tol):
    """|g − r| / tol, element by element and flat; ∞ where g is not finite."""
    a = g.astype(np.float64)
    return np.where(np.isfinite(a), np.abs(a - r) / tol, np.inf).ravel()


def _leaf_result(path, g, r, tol, param_dtype, rows, scale, step, reference) -> LeafResult:
    """One leaf's verdict.

    Args:
      g, r: the candidate's and the reference's gradient of this leaf (same shape).
      tol: the element-wise tolerance for |g − r| (same shape).
      rows: this leaf's finite-difference directions u, each of length `scale` (the leaf's
        RMS), as arrays with one entry per direction: coordinate (the element u moves, −1
        for a direction that moves several), fd, candidate (⟨g, u⟩), lo and hi (the loss's
        one-sided derivatives along u, in order), kinked, tol.
      reference: the reference's name, "jax.grad", "jax.jacfwd" or "finite differences".
    """
    a = g.astype(np.float64)
    diff = np.abs(a - r)
    rel = diff / np.maximum(np.abs(a) + np.abs(r), _TINY)
    excess = _excess(g, r, tol)
    differs = excess > 1
    # Along a smooth direction the candidate must match the central difference. At a kink, a
    # coordinate where it differs from the reference asks instead whether it lies between the
    # loss's one-sided derivatives there: whether it is a valid subgradient.
    i, c, t, kinked = rows["coordinate"], rows["candidate"], rows["tol"], rows["kinked"]
    miss = np.where(kinked, np.maximum(rows["lo"] - c, c - rows["hi"]), np.abs(rows["fd"] - c))
    probe = kinked & np.isin(i, np.flatnonzero(differs))
    judged = ~kinked | probe
    fd_ok = bool((miss <= t)[judged].all()) if judged.any() else None
    at_kink = np.isin(np.arange(a.size), i[probe])
    unexplained = differs & ~np.isin(np.arange(a.size), i[probe & (miss <= t)])
    located = judged & (i >= 0)

    def index(flat):
        return tuple(int(k) for k in np.unravel_index(flat, a.shape)) if a.size else ()

    fd_worst = int(i[located][np.argmax((miss / t)[located])]) if located.any() else None
    worst = int(np.argmax(excess)) if a.size else 0
    problem = ""
    if g.dtype != param_dtype:
        problem = f"dtype {g.dtype}, expected {param_dtype} (the parameter's dtype)"
        if g.dtype == np.float32 and param_dtype == np.float64:
            problem += '; to check float32 code, pass dtype="float32"'
    elif not np.isfinite(a).all():
        problem = f"non-finite value {a[index(worst)]} at index {index(worst)}"
    elif unexplained.any():
        worst = int(np.argmax(np.where(unexplained, excess, -np.inf)))
        problem = f"differs from {reference}" + (_NO_SUBGRADIENT if at_kink[unexplained].all() else "")
    elif fd_ok is False and differs.any():
        problem = f"differs from {reference}{_NO_SUBGRADIENT}"
    elif fd_ok is False:
        problem = "differs from finite differences"
        worst = worst if fd_worst is None else fd_worst
    return LeafResult(
        path=path, shape=tuple(g.shape), dtype=str(g.dtype),
        max_abs_error=float(np.nan_to_num(diff, nan=np.inf).max(initial=0.0)),
        max_rel_error=float(np.nan_to_num(rel, nan=np.inf).max(initial=0.0)),
        worst_index=index(worst), candidate=float(a[index(worst)]) if a.size else 0.0,
        reference=float(r[index(worst)]) if a.size else 0.0,
        fd_max_error=float(miss[~kinked].max(initial=0.0) / scale), fd_ok=fd_ok, ok=not problem,
        problem=problem, step=float(step), subgradient=not problem and bool(differs.any()),
        fd_worst_index=None if fd_worst is None else index(fd_worst),
    )


def _autodiff(loss_fn, modes, params, data):
    """(the loss's value, {"jax.grad": grads, "jax.jacfwd": grads} for `modes`, None), each
    traced once; or (None, {}, the error) where JAX cannot trace or differentiate the loss.

    Numpy code fails in many ways when traced (`TracerArrayConversionError` in `np.exp`, a
    `ConcretizationTypeError` in `if`, broadcasting under `jax_numpy_rank_promotion`), so any
    error counts; the caller raises it after all if the loss fails on numpy arrays too.
    """
    grads = {}
    try:
        if "rev" in modes:
            value, grads["jax.grad"] = jax.jit(jax.value_and_grad(loss_fn))(params, *data)
        if "fwd" in modes:
            grads["jax.jacfwd"], value = jax.jit(
                jax.jacfwd(lambda p, *d: (loss_fn(p, *d),) * 2, has_aux=True))(params, *data)
    except Exception as e:  # noqa: BLE001 (see above)
        return None, {}, e
    return value, grads, None


def _host(tree):
    """The JAX arrays in `tree` as numpy arrays, as numpy code expects them."""
    return jax.tree.map(lambda x: np.asarray(x) if isinstance(x, jax.Array) else x, tree)


def _scale(leaf) -> float:
    """The leaf's RMS, the unit its finite differences are taken in; 1 for a leaf of zeros."""
    rms = float(np.sqrt(np.mean(np.square(np.asarray(leaf, np.float64))))) if np.size(leaf) else 0.0
    return rms if rms > _TINY else 1.0


def _flat(leaves):
    """The leaves as one float64 vector, non-finite entries as 0."""
    flat = np.concatenate([np.zeros(0)] + [np.ravel(np.asarray(x, np.float64)) for x in leaves])
    return np.nan_to_num(flat, nan=0.0, posinf=0.0, neginf=0.0)


def _matrix(spec, offsets, scales, n):
    """The directions of `spec` as the rows of V (k, n): inside leaf l, a unit vector (a random
    one, a coordinate i, or the given u normalised) times the leaf's scale."""
    V = np.zeros((len(spec), n))
    for row, (leaf, u) in enumerate(spec):
        start = offsets[leaf]
        if isinstance(u, int):
            V[row, start + u] = scales[leaf]
        else:
            V[row, start:start + u.size] = scales[leaf] * u / max(np.linalg.norm(u), _TINY)
    return V


def _evaluate(differences, spec, offsets, scales, flats, chunk, eps):
    """Finite differences along the directions u of `spec`, as numpy arrays keyed by name.

    fd: the central difference (L(p + εu) − L(p − εu)) / 2ε; jump, jump10: the forward minus
    the backward one-sided difference at ε and ε/10 (for a smooth loss they shrink with ε, at
    a kink they do not); lo, hi: the one-sided derivatives, extrapolated from ε and ε/10
    (Richardson), in order; ⟨t, u⟩ for each flat vector t of `flats`; leaf, coordinate (−1
    unless u is one).

    V is built `chunk` rows at a time, so memory stays bounded however many directions.
    """
    L, dots = [], {name: [] for name in flats}
    for start in range(0, len(spec), chunk):
        V = _matrix(spec[start:start + chunk], offsets, scales, int(offsets[-1]))
        L0, part = differences(V)
        L.append(part)
        for name, t in flats.items():
            dots[name].append(V @ t)
    plus, minus, plus10, minus10 = np.concatenate(L).T
    right, left = (plus - L0) / eps, (L0 - minus) / eps
    right10, left10 = (plus10 - L0) / (eps / 10), (L0 - minus10) / (eps / 10)
    lo, hi = np.sort([(10 * right10 - right) / 9, (10 * left10 - left) / 9], axis=0)
    return {"leaf": np.array([leaf for leaf, _ in spec]),
            "coordinate": np.array([u if isinstance(u, int) else -1 for _, u in spec]),
            "fd": (plus - minus) / (2 * eps), "jump": right - left, "jump10": right10 - left10,
            "lo": lo, "hi": hi} | {name: np.concatenate(x) for name, x in dots.items()}


def _differences(loss_fn, params, data, eps, chunk, host):
    """`differences(V) -> (L0, L)`: the loss at `params`, and at params + h·u for each row u of
    V (at most `chunk` rows) and h = ε, −ε, ε/10, −ε/10, as L of shape (rows, 4).

    A loss JAX can trace is evaluated by one compiled `lax.map`, V padded to `chunk` rows so it
    compiles once; numpy code on the host, direction by direction.
    """
    steps = (eps, -eps, eps / 10, -eps / 10)
    if host:
        leaves, treedef = jax.tree.flatten(params)
        flat = _flat(leaves)
        cuts = np.cumsum([np.size(p) for p in leaves])[:-1]

        def L(x):
            parts = [x.reshape(np.shape(p)) for x, p in zip(np.split(x, cuts), leaves)]
            return float(loss_fn(jax.tree.unflatten(treedef, parts), *data))

        L0 = L(flat)
        return lambda V: (L0, np.array([[L(flat + h * u) for h in steps] for u in V]))
    flat, unravel = ravel_pytree(params)

    @jax.jit
    def block(flat, data, V):
        def L(x):
            return loss_fn(unravel(x), *data)
        hs = jnp.asarray(steps, flat.dtype)  # the 4 steps as one batch: one copy of the loss in the program
        return L(flat), jax.lax.map(lambda u: jax.vmap(lambda h: L(flat + h * u))(hs), V)

    def differences(V):
        padded = np.concatenate([V, np.zeros((chunk - len(V), V.shape[1]))])  # one shape: one compilation
        L0, L = block(flat, data, jnp.asarray(padded))
        return float(L0), np.asarray(L)[: len(V)]

    return differences


def _second_order(loss_fn, params, data, spec, offsets, scales, eps, chunk, modes, fd_rtol, fd_atol):
    """Per leaf, (the largest error of H u over its directions u, the first failing mode's
    problem or None): the Hessian-vector products of each mode (`jax.jvp` or `jax.vjp` of the
    gradient) against the central difference (∇L(p + εu) − ∇L(p − εu)) / 2ε of the gradient
    (jax.grad, or jax.jacfwd without "rev"), in units of each element's leaf scale like the
    first order. A direction where the gradient has a kink within the step (its one-sided
    differences do not shrink with the step) is left out; (None, None) for a leaf with none left."""
    flat, unravel = ravel_pytree(params)
    gradient = (jax.grad if "rev" in modes else jax.jacfwd)(lambda x, *d: loss_fn(unravel(x), *d))
    grad_name = _names(modes)[0]

    @jax.jit
    def block(flat, data, V):
        def G(x):
            return gradient(x, *data)

        def one(u):
            hvp = {"fwd": lambda: jax.jvp(G, (flat,), (u,))[1], "rev": lambda: jax.vjp(G, flat)[1](u)[0]}
            hs = jnp.asarray((eps, -eps, eps / 10, -eps / 10), flat.dtype)
            return jnp.concatenate([jax.vmap(lambda h: G(flat + h * u))(hs), jnp.stack([hvp[m]() for m in modes])])

        return G(flat), jax.lax.map(one, V)

    n = int(offsets[-1])
    s = np.repeat(scales, np.diff(offsets))  # each element's leaf scale
    error = np.full(len(spec), -np.inf)
    failing = {m: np.zeros(len(spec), bool) for m in modes}
    for start in range(0, len(spec), chunk):
        V = _matrix(spec[start:start + chunk], offsets, scales, n)
        g0, out = block(flat, data, jnp.asarray(np.concatenate([V, np.zeros((chunk - len(V), n))])))
        g0, (plus, minus, plus10, minus10, *hvps) = np.asarray(g0), np.asarray(out)[: len(V)].transpose(1, 0, 2)
        fd = s * (plus - minus) / (2 * eps)
        tol = fd_atol + fd_rtol * np.abs(fd)
        jump, jump10 = s * (plus - 2 * g0 + minus) / eps, s * (plus10 - 2 * g0 + minus10) / (eps / 10)
        rows = slice(start, start + len(V))
        smooth = ~((np.abs(jump) / 2 > tol) & (np.abs(jump10) > 0.5 * np.abs(jump))).any(1)
        for m, h in zip(modes, hvps):
            err = np.abs(fd - s * h)
            failing[m][rows] = smooth & (err > fd_atol + fd_rtol * np.maximum(np.abs(fd), np.abs(s * h))).any(1)
            error[rows] = np.maximum(error[rows], np.where(smooth, err.max(1, initial=0.0), -np.inf))
    leaf_of = np.array([leaf for leaf, _ in spec])
    verdicts = []
    for leaf, scale in enumerate(scales):
        worst = error[leaf_of == leaf].max(initial=-np.inf)
        bad = next((m for m in modes if failing[m][leaf_of == leaf].any()), None)
        verdicts.append((float(worst / scale) if np.isfinite(worst) else None,
                         None if bad is None else
                         f"Hessian-vector products ({'jax.jvp' if bad == 'fwd' else 'jax.vjp'} of {grad_name}) "
                         f"differ from central differences of {grad_name}"))
    return verdicts


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
