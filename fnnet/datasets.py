"""Datasets for classification: small synthetic ones from a key, two real ones, split and scale.

Every dataset is a `Dataset`: features `X` of shape `(n, d)`, float32, and labels
`y` of shape `(n,)`, int32 class indices in `[0, n_classes)`, binary tasks
included. (For `sigmoid_binary_cross_entropy` the caller makes targets of shape
`(n, 1)` with `y[:, None].astype(X.dtype)`; for
`softmax_cross_entropy_with_integer_labels` `y` is used as it is.)

| name | n × d | classes | source |
|---|---|---|---|
| `xor` | 4 × 2 | 2 | the textbook's four points |
| `moons` | n × 2 | 2 | two interleaved half circles, from `key` |
| `spirals` | n × 2 | 2 | two interleaved Archimedean spirals, from `key` |
| `circles` | n × 2 | 2 | two concentric circles, from `key` |
| `digits` | 1797 × 64 | 10 | scikit-learn's bundled 8×8 digits, pixels 0..16 |
| `breast_cancer` | 569 × 30 | 2 | scikit-learn's bundled Wisconsin data (0 malignant, 1 benign) |

The synthetic generators are pure: the same key gives the same arrays. Their
classes are balanced (counts differ by at most one, for odd `n`) and their rows
come shuffled. The real datasets need the optional scikit-learn
(`pip install 'fnnet[data]'`), which reads them from files inside its package:
nothing is ever downloaded.

`split` shuffles and splits (stratified by class by default); `standardize`
scales with the training set's statistics only.

>>> data = load("moons", jax.random.key(0))
>>> (X_train, y_train), (X_test, y_test) = split(data, jax.random.key(1))
>>> X_train, X_test, (mean, std) = standardize(X_train, X_test)
>>> X_train.shape, X_test.shape, mean.shape
((160, 2), (40, 2), (1, 2))
"""

import functools
import inspect
import math
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from fnnet._checks import check_key, is_int

INSTALL_HINT = "pip install 'fnnet[data]'"


@dataclass(frozen=True, eq=False)
class Dataset:
    """Features and integer class labels of a classification task.

    Attributes:
      X: features, `(n, d)` float32.
      y: class indices, `(n,)` int32, each in `[0, n_classes)`.
      name: the name `load` knows it by.
      n_classes: number of classes (2 for the binary tasks).

    Compared by identity (`eq=False`): the fields hold arrays.
    """

    X: jax.Array
    y: jax.Array
    name: str
    n_classes: int

    def __post_init__(self):
        X_shape, y_shape = jnp.shape(self.X), jnp.shape(self.y)
        if len(X_shape) != 2 or y_shape != X_shape[:1]:
            raise ValueError(
                f"Dataset {self.name!r}: X has shape {X_shape} and y has shape {y_shape}; "
                f"expected X of shape (n, d) and y of shape (n,), one label per row of X"
            )
        if self.X.dtype != jnp.float32 or self.y.dtype != jnp.int32:
            raise TypeError(
                f"Dataset {self.name!r}: X is {self.X.dtype} and y is {self.y.dtype}; "
                f"expected float32 features and int32 class indices"
            )
        if not is_int(self.n_classes, 1):
            raise ValueError(f"Dataset {self.name!r}: n_classes must be an int ≥ 1, got {self.n_classes!r}")
        if not isinstance(self.y, jax.core.Tracer) and self.y.size:  # values unknown inside jit
            labels = np.asarray(self.y)
            lo, hi = int(labels.min()), int(labels.max())
            if lo < 0 or hi >= self.n_classes:
                raise ValueError(
                    f"Dataset {self.name!r}: labels range over [{lo}, {hi}]; expected class "
                    f"indices in [0, {self.n_classes - 1}] for n_classes={self.n_classes}"
                )

    def __repr__(self):
        n, d = self.X.shape
        return f"Dataset(name={self.name!r}, n={n}, d={d}, n_classes={self.n_classes})"


def _dataset(name, X, y, n_classes) -> Dataset:
    return Dataset(jnp.asarray(X, jnp.float32), jnp.asarray(y, jnp.int32), name, n_classes)


# ---------- synthetic ----------


def xor() -> Dataset:
    """The textbook's XOR: X `(4, 2)` float32 the corners of the unit square, y `[0, 1, 1, 0]`.

    >>> xor().X.tolist(), xor().y.tolist()
    ([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]], [0, 1, 1, 0])
    """
    return _dataset("xor", [[0, 0], [0, 1], [1, 0], [1, 1]], [0, 1, 1, 0], 2)


def moons(key, n: int = 200, noise: float = 0.1) -> Dataset:
    """Two interleaved half circles (scikit-learn's `make_moons`, drawn with `jax.random`).

    Class 0: (cos t, sin t); class 1: (1 − cos t, 1/2 − sin t); t ~ U[0, π],
    then Gaussian noise of standard deviation `noise` on each coordinate.

    Args:
      key: a `jax.random.key`; the same key gives the same dataset.
      n: number of examples, ≥ 2; class 0 gets ⌈n/2⌉ of them.
      noise: standard deviation of the noise, ≥ 0.

    Returns:
      A `Dataset`: X `(n, 2)` float32, y `(n,)` int32 in {0, 1}, shuffled.

    >>> moons(jax.random.key(0), n=3)
    Dataset(name='moons', n=3, d=2, n_classes=2)
    """
    check_key("moons", key)
    _check_args("moons", n, noise)
    return _dataset("moons", *_moons(key, int(n), noise), 2)


def spirals(key, n: int = 200, noise: float = 0.05, turns: float = 1.5) -> Dataset:
    """Two interleaved Archimedean spirals, one the other turned by half a turn.

    Class c ∈ {0, 1}: r (cos θ, sin θ) with θ = 2π·turns·r + πc and
    r = √u, u ~ U[0, 1] (so points are spread evenly along the arms), then
    Gaussian noise of standard deviation `noise` on each coordinate. The arms
    reach radius 1; at a given angle the two classes' arms are 1/(2·turns) apart.

    Args:
      key: a `jax.random.key`; the same key gives the same dataset.
      n: number of examples, ≥ 2; class 0 gets ⌈n/2⌉ of them.
      noise: standard deviation of the noise, ≥ 0.
      turns: how many turns each arm makes, > 0.

    Returns:
      A `Dataset`: X `(n, 2)` float32, y `(n,)` int32 in {0, 1}, shuffled.
    """
    check_key("spirals", key)
    _check_args("spirals", n, noise)
    _check_positive("spirals", "turns", turns)
    return _dataset("spirals", *_spirals(key, int(n), noise, turns), 2)


def circles(key, n: int = 200, noise: float = 0.05, factor: float = 0.5) -> Dataset:
    """Two concentric circles (scikit-learn's `make_circles`, drawn with `jax.random`).

    Class 0 on the unit circle, class 1 on the circle of radius `factor`, at
    angles ~ U[0, 2π), then Gaussian noise of standard deviation `noise` on each
    coordinate.

    Args:
      key: a `jax.random.key`; the same key gives the same dataset.
      n: number of examples, ≥ 2; class 0 (outer) gets ⌈n/2⌉ of them.
      noise: standard deviation of the noise, ≥ 0.
      factor: inner radius over outer radius, in (0, 1).

    Returns:
      A `Dataset`: X `(n, 2)` float32, y `(n,)` int32 in {0, 1}, shuffled.
    """
    check_key("circles", key)
    _check_args("circles", n, noise)
    if not (_is_real(factor) and 0 < factor < 1):
        raise ValueError(
            f"circles: factor is the inner radius over the outer one and must be in (0, 1), "
            f"got {factor!r}"
        )
    return _dataset("circles", *_circles(key, int(n), noise, factor), 2)


def _labels(n):
    """`(n,)` int32: ⌈n/2⌉ zeros, then ⌊n/2⌋ ones."""
    return (jnp.arange(n) >= n - n // 2).astype(jnp.int32)


def _noisy_shuffled(key, X, y, noise):
    """X `(n, 2)` plus N(0, noise²) per coordinate; rows of X and y in one random order."""
    k_noise, k_perm = jax.random.split(key)
    X = X + noise * jax.random.normal(k_noise, X.shape, jnp.float32)
    perm = jax.random.permutation(k_perm, X.shape[0])
    return X[perm], y[perm]


@functools.partial(jax.jit, static_argnums=1)
def _moons(key, n, noise):
    k_t, k_rest = jax.random.split(key)
    y = _labels(n)
    t = jax.random.uniform(k_t, (n,), jnp.float32, 0.0, jnp.pi)
    upper = jnp.stack([jnp.cos(t), jnp.sin(t)], axis=1)
    lower = jnp.stack([1 - jnp.cos(t), 0.5 - jnp.sin(t)], axis=1)
    X = jnp.where((y == 1)[:, None], lower, upper)
    return _noisy_shuffled(k_rest, X, y, jnp.float32(noise))


@functools.partial(jax.jit, static_argnums=1)
def _spirals(key, n, noise, turns):
    k_r, k_rest = jax.random.split(key)
    y = _labels(n)
    r = jnp.sqrt(jax.random.uniform(k_r, (n,), jnp.float32))
    theta = 2 * jnp.pi * (jnp.float32(turns) * r) + jnp.pi * y.astype(jnp.float32)
    X = r[:, None] * jnp.stack([jnp.cos(theta), jnp.sin(theta)], axis=1)
    return _noisy_shuffled(k_rest, X, y, jnp.float32(noise))


@functools.partial(jax.jit, static_argnums=1)
def _circles(key, n, noise, factor):
    k_angle, k_rest = jax.random.split(key)
    y = _labels(n)
    angle = jax.random.uniform(k_angle, (n,), jnp.float32, 0.0, 2 * jnp.pi)
    r = jnp.where(y == 1, jnp.float32(factor), jnp.float32(1))
    X = r[:, None] * jnp.stack([jnp.cos(angle), jnp.sin(angle)], axis=1)
    return _noisy_shuffled(k_rest, X, y, jnp.float32(noise))


# ---------- real, from scikit-learn's bundled files ----------


def digits() -> Dataset:
    """scikit-learn's 8×8 handwritten digits: X `(1797, 64)` float32 pixels in 0..16, y 0..9.

    Row-major pixels, unscaled (use `standardize`, or divide by 16). Needs
    scikit-learn (`pip install 'fnnet[data]'`); reads a file bundled with it.

    >>> digits()
    Dataset(name='digits', n=1797, d=64, n_classes=10)
    """
    data = _sklearn_datasets("digits").load_digits()
    return _dataset("digits", data.data, data.target, 10)


def breast_cancer() -> Dataset:
    """scikit-learn's Wisconsin breast cancer data: X `(569, 30)` float32, y 0 malignant, 1 benign.

    The 30 features are on very different scales (use `standardize`). Needs
    scikit-learn (`pip install 'fnnet[data]'`); reads a file bundled with it.

    >>> breast_cancer()
    Dataset(name='breast_cancer', n=569, d=30, n_classes=2)
    """
    data = _sklearn_datasets("breast_cancer").load_breast_cancer()
    return _dataset("breast_cancer", data.data, data.target, 2)


def _sklearn_datasets(name):
    """`sklearn.datasets`, or an ImportError that says how to install it."""
    try:
        import sklearn.datasets
    except ModuleNotFoundError as err:
        if err.name is None or err.name.split(".")[0] != "sklearn":
            raise  # scikit-learn is there but something it needs is not: say that instead
        raise ModuleNotFoundError(
            f"the {name} dataset is read from scikit-learn, which is not installed; "
            f"install it with: {INSTALL_HINT}",
            name="sklearn",
        ) from err
    return sklearn.datasets


# ---------- from a file ----------

FILE_SUFFIXES = (".npz", ".csv")


def from_file(path) -> Dataset:
    """A dataset read from a `.npz` or `.csv` file; its name is the path.

    `.npz`: arrays `X` of shape `(n, d)` and `y` of shape `(n,)` (read without
    pickle). `.csv`: one example per row, the features then the class label in
    the last column; a first line that is not numbers is taken as a header.
    Labels must be whole numbers ≥ 0; `n_classes` is the largest plus one.

    Raises:
      ValueError: a missing array, wrong shapes, non-finite features (naming the
        first bad row and column) or labels that are not class indices.
    """
    path = str(path)
    if path.endswith(".npz"):
        try:
            with np.load(path, allow_pickle=False) as f:
                missing = {"X", "y"} - set(f.files)
                if missing:
                    raise ValueError(f"{path}: no array named {', '.join(sorted(missing))}; expected arrays "
                                     f"X (n, d) and y (n,), e.g. np.savez(path, X=X, y=y); it holds "
                                     f"{', '.join(f.files) or 'nothing'}")
                X, y = f["X"], f["y"]
        except (OSError, EOFError, ValueError) as e:
            if str(e).startswith(path):
                raise
            raise ValueError(f"{path}: not a readable .npz of numeric arrays ({e})") from None
    elif path.endswith(".csv"):
        with open(path) as f:
            lines = [line for line in f.read().splitlines() if line.strip()]
        try:
            float(lines[0].split(",")[0])
        except ValueError:
            lines = lines[1:]  # a header
        except IndexError:
            raise ValueError(f"{path}: the file is empty; expected rows of features then a label") from None
        try:
            table = np.loadtxt(lines, delimiter=",", ndmin=2)
        except ValueError as e:
            raise ValueError(f"{path}: {e}; expected comma-separated numbers, the label last") from None
        if table.shape[1] < 2:
            raise ValueError(f"{path}: rows have {table.shape[1]} column; expected features then a label")
        X, y = table[:, :-1], table[:, -1]
    else:
        raise ValueError(f"{path}: unknown file type; expected one of {', '.join(FILE_SUFFIXES)}")
    if X.ndim != 2 or y.shape != X.shape[:1] or not len(X):
        raise ValueError(f"{path}: X has shape {X.shape} and y has shape {y.shape}; expected X of shape "
                         f"(n, d) and y of shape (n,) with n ≥ 1")
    if not (np.issubdtype(X.dtype, np.number) and np.issubdtype(y.dtype, np.number)):
        raise ValueError(f"{path}: X is {X.dtype} and y is {y.dtype}; expected numbers")
    bad = np.argwhere(~np.isfinite(X))
    if len(bad):
        row, col = bad[0]
        raise ValueError(f"{path}: X has {len(bad)} non-finite values (first at row {row}, column {col}: "
                         f"{X[row, col]}); clean or impute them before training")
    whole = np.isfinite(y) & (y >= 0) & (y == np.round(y))
    if not whole.all():
        row = int(np.argmin(whole))
        raise ValueError(f"{path}: label {y[row]} in row {row} is not a class index; expected whole "
                         f"numbers 0, 1, ... in the last column (or array y)")
    return _dataset(path, X, y, int(y.max()) + 1)


# ---------- by name ----------

_LOADERS = {
    "xor": xor,
    "moons": moons,
    "spirals": spirals,
    "circles": circles,
    "digits": digits,
    "breast_cancer": breast_cancer,
}
NAMES = tuple(_LOADERS)
"""The names `load` knows."""
SYNTHETIC = ("moons", "spirals", "circles")
"""The names whose data `load` draws from a key."""


def load(name: str, key=None, **kwargs) -> Dataset:
    """The dataset called `name`, one of `NAMES`, or read from a file (`from_file`).

    Args:
      name: "xor", "moons", "spirals", "circles", "digits" or "breast_cancer",
        or the path of a `.npz` or `.csv` file.
      key: a `jax.random.key`, required by the synthetic datasets (`SYNTHETIC`);
        the fixed ones (xor, digits, breast_cancer) ignore it, so a caller may
        pass a key whatever the name.
      **kwargs: the dataset's own arguments, e.g. `n=500, noise=0.2` for moons;
        an argument the dataset does not take is an error.

    >>> load("xor")
    Dataset(name='xor', n=4, d=2, n_classes=2)
    >>> load("circles", jax.random.key(0), noise=0.0, factor=0.3)
    Dataset(name='circles', n=200, d=2, n_classes=2)
    """
    if not isinstance(name, str):
        raise TypeError(f"load: expected a dataset name (str), got {type(name).__name__} {name!r}")
    if name.endswith(FILE_SUFFIXES) and name not in _LOADERS:
        if kwargs:
            raise TypeError(f"load: a dataset read from a file takes no arguments, got {', '.join(kwargs)}")
        return from_file(name)
    if name not in _LOADERS:
        raise ValueError(f"unknown dataset {name!r}; expected one of: {', '.join(NAMES)}, "
                         f"or a {' or '.join(FILE_SUFFIXES)} file")
    loader = _LOADERS[name]
    params = list(inspect.signature(loader).parameters)
    takes = [p for p in params if p != "key"]
    unknown = sorted(set(kwargs) - set(takes))
    if unknown:
        raise TypeError(
            f"load: dataset {name!r} got unexpected arguments {', '.join(unknown)}; "
            + (f"it takes {', '.join(takes)}" if takes else "it takes none")
        )
    if name not in SYNTHETIC:
        return loader(**kwargs)
    if key is None:
        raise ValueError(
            f"load: dataset {name!r} is drawn at random and needs a key, e.g. "
            f"load({name!r}, jax.random.key(0)); got key=None"
        )
    return loader(key, **kwargs)


# ---------- splitting and scaling ----------


def split(data, key, test_fraction: float = 0.2, stratify: bool = True):
    """Shuffle with `key` and split into training and test sets.

    The test set gets n_test = ⌊test_fraction · n + ½⌋ examples. With `stratify`, each
    class c of nᶜ examples gives the test set its share of them, nᶜ · n_test / n,
    rounded so the shares add up to n_test (largest remainders first, ties to
    the lower class): class proportions agree on both sides to within one
    example per class. Without it, the test set is the first n_test examples of
    one random permutation. Both sides keep the random order; the split is a
    partition (every example lands on exactly one side).

    Args:
      data: a `Dataset`, or a pair `(X, y)` of arrays with the same leading axis
        n; with `stratify`, `y` must be `(n,)` integer class labels.
      key: a `jax.random.key`.
      test_fraction: fraction of examples for the test set, in (0, 1).
      stratify: keep the class proportions on both sides.

    Returns:
      `((X_train, y_train), (X_test, y_test))`, jax arrays with the dtypes of
      `X` and `y` and leading axes n − n_test and n_test.

    >>> (X_train, y_train), (X_test, y_test) = split(xor(), jax.random.key(0), 0.5)
    >>> sorted(y_test.tolist()), X_train.shape
    ([0, 1], (2, 2))
    """
    # On the host: the sizes depend on the labels, and numpy indexing compiles nothing.
    X, y = (np.asarray(data.X), np.asarray(data.y)) if isinstance(data, Dataset) else _pair(data)
    check_key("split", key)
    n = X.shape[0] if X.ndim else 0
    if y.ndim == 0 or y.shape[0] != n:
        raise ValueError(
            f"split: X has shape {X.shape} and y has shape {y.shape}; expected the same "
            f"leading axis, one label per example"
        )
    if not (_is_real(test_fraction) and 0 < test_fraction < 1):
        raise ValueError(f"split: test_fraction must be in (0, 1), got {test_fraction!r}")
    n_test = math.floor(test_fraction * n + 0.5)
    if not 0 < n_test < n:
        raise ValueError(
            f"split: test_fraction={test_fraction} of {n} examples leaves {n_test} for test "
            f"and {n - n_test} for training; both sides need at least one example: use more "
            f"examples or a test_fraction nearer 0.5"
        )
    perm = np.asarray(_permutation(key, n))
    if stratify:
        if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
            raise ValueError(
                f"split: stratify=True needs integer class labels y of shape ({n},), got "
                f"{y.dtype} of shape {y.shape}; pass class indices, or stratify=False"
            )
        in_test = _stratified_test_mask(y[perm], n_test)
    else:
        in_test = np.arange(n) < n_test
    train, test = perm[~in_test], perm[in_test]
    return (jnp.asarray(X[train]), jnp.asarray(y[train])), (jnp.asarray(X[test]), jnp.asarray(y[test]))


_permutation = jax.jit(jax.random.permutation, static_argnums=1)


def _pair(data):
    if not (isinstance(data, (tuple, list)) and len(data) == 2):
        raise TypeError(
            f"split: expected a Dataset or a pair (X, y), got {type(data).__name__}"
            + (f" of length {len(data)}" if isinstance(data, (tuple, list)) else "")
        )
    return np.asarray(data[0]), np.asarray(data[1])


def _stratified_test_mask(labels, n_test):
    """Boolean `(n,)`: the first `n_test·nᶜ/n` (rounded) examples of each class c, in order."""
    classes, counts = np.unique(labels, return_counts=True)
    exact = counts * n_test / labels.size
    quota = np.floor(exact).astype(int)
    by_remainder = np.argsort(-(exact - quota), kind="stable")
    quota[by_remainder[: n_test - quota.sum()]] += 1
    in_test = np.zeros(labels.size, bool)
    for c, q in zip(classes, quota):
        in_test[np.flatnonzero(labels == c)[:q]] = True
    return in_test


def standardize(X_train, X_test):
    """Scale features to zero mean and unit variance with the training set's statistics.

    x̂ = (x − μ) / σ, with μ and σ the per-feature mean and (population) standard
    deviation of `X_train` only, so nothing about the test set leaks into the
    scaling. A feature constant in `X_train` gets σ = 1 (and μ its value), so
    it maps to exactly 0 there instead of NaN.

    Args:
      X_train: `(n_train, d)` floating features, n_train ≥ 1.
      X_test: `(n_test, d)` floating features, same d.

    Returns:
      `(X_train_std, X_test_std, (mean, std))`: the two scaled arrays, with the
      dtypes of the inputs, and μ and σ of shape `(1, d)`; apply them to new
      data `X` of shape `(m, d)` as `(X - mean) / std`.

    >>> X_train = jnp.array([[0.0, 5.0], [2.0, 5.0]], jnp.float32)
    >>> X_train_std, X_test_std, (mean, std) = standardize(X_train, X_train + 1)
    >>> X_train_std.tolist(), X_test_std.tolist()
    ([[-1.0, 0.0], [1.0, 0.0]], [[0.0, 1.0], [2.0, 1.0]])
    """
    X_train, X_test = jnp.asarray(X_train), jnp.asarray(X_test)
    if X_train.ndim != 2 or X_test.ndim != 2 or X_train.shape[1] != X_test.shape[1]:
        raise ValueError(
            f"standardize: X_train has shape {X_train.shape} and X_test has shape "
            f"{X_test.shape}; expected (n_train, d) and (n_test, d) with the same d"
        )
    if X_train.shape[0] == 0:
        raise ValueError(
            f"standardize: X_train has shape {X_train.shape}: no examples to take statistics from"
        )
    for which, X in (("X_train", X_train), ("X_test", X_test)):
        if not jnp.issubdtype(X.dtype, jnp.floating):
            raise TypeError(
                f"standardize: {which} has dtype {X.dtype}; expected floating features, "
                f"e.g. {which}.astype(jnp.float32)"
            )
    return _standardize(X_train, X_test)


@jax.jit
def _standardize(X_train, X_test):
    # Test for constant columns exactly: a float std of a constant column can come out
    # as rounding noise instead of 0, and dividing by it would blow the noise up.
    constant = (X_train.max(axis=0, keepdims=True) == X_train.min(axis=0, keepdims=True))
    mean = jnp.where(constant, X_train[:1], X_train.mean(axis=0, keepdims=True))
    std = jnp.where(constant, 1, X_train.std(axis=0, keepdims=True)).astype(X_train.dtype)
    return (X_train - mean) / std, ((X_test - mean) / std).astype(X_test.dtype), (mean, std)


# ---------- argument checks ----------


def _is_real(x) -> bool:
    return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, bool) \
        and math.isfinite(x)


def _check_positive(where, name, value):
    if not (_is_real(value) and value > 0):
        raise ValueError(f"{where}: {name} must be a positive number, got {value!r}")


def _check_args(where, n, noise):
    if not (isinstance(n, (int, np.integer)) and not isinstance(n, bool) and n >= 2):
        raise ValueError(
            f"{where}: n is the number of examples and must be an int ≥ 2 (one per class), "
            f"got {n!r}"
        )
    if not (_is_real(noise) and noise >= 0):
        raise ValueError(f"{where}: noise is a standard deviation and must be ≥ 0, got {noise!r}")
