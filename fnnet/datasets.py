"""Datasets: small synthetic ones from a key, two real ones, files; split and scale.

Every dataset is a `Dataset`: features `X` of shape `(n, d)`, float32, and labels
`y` of shape `(n,)`, int32 class indices in `[0, n_classes)`, binary tasks
included. (For `sigmoid_binary_cross_entropy` the caller makes targets of shape
`(n, 1)` with `y[:, None].astype(X.dtype)`; for
`softmax_cross_entropy_with_integer_labels` `y` is used as it is.) A file read
with `from_file` may instead hold real-valued targets (`task="regression"`: `y`
float32, `n_classes` None) or, read with `n_features`, no labels (`y` None).
Rows of pixels say so with `image_shape`: digits' rows are 8×8 images with one
channel, `image_shape=(8, 8, 1)`, and `data.images()` is X as `(n, 8, 8, 1)` for
`Conv2D` (row-major, as `jnp.reshape`). The rows stay flat, so `split` and
`standardize` (per pixel) treat them as any other features.

| name | n × d | classes | source |
|---|---|---|---|
| `xor` | 4 × 2 | 2 | the textbook's four points |
| `moons` | n × 2 | 2 | two interleaved half circles, from `key` |
| `spirals` | n × 2 | 2 | two interleaved Archimedean spirals, from `key` |
| `circles` | n × 2 | 2 | two concentric circles, from `key` |
| `digits` | 1797 × 64 | 10 | scikit-learn's bundled 8×8 digits, pixels 0..16; `image_shape` (8, 8, 1) |
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

import csv
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
    """Features and labels of a classification or regression task, or features alone.

    Attributes:
      X: features, `(n, d)` float32.
      y: classification: class indices, `(n,)` int32, each in `[0, n_classes)`;
        regression: real-valued targets, `(n,)` float32, all finite;
        unlabelled (new data to predict on): None.
      name: the name `load` knows it by (for a file, its path).
      n_classes: classification: number of classes, an int ≥ 1 (2 for the binary
        tasks); regression and unlabelled: None.
      classes: None, the class indices being the names; or, for classification, a
        tuple of `n_classes` distinct str, `classes[i]` the name of index i (as a
        file wrote it).
      features: None, or a tuple of d str, the names of the columns of X.
      image_shape: None, or `(H, W, C)` positive ints with H·W·C = d when each row is an
        image, its pixels row-major (channels fastest): see `images`.

    Compared by identity (`eq=False`): the fields hold arrays.
    """

    X: jax.Array
    y: "jax.Array | None"
    name: str
    n_classes: "int | None"
    classes: "tuple[str, ...] | None" = None
    features: "tuple[str, ...] | None" = None
    image_shape: "tuple[int, int, int] | None" = None

    def __post_init__(self):
        where = f"Dataset {self.name!r}"
        X_shape, y_shape = jnp.shape(self.X), None if self.y is None else jnp.shape(self.y)
        if len(X_shape) != 2 or y_shape not in (None, X_shape[:1]):
            if y_shape is None:
                raise ValueError(f"{where}: X has shape {X_shape}; expected X of shape (n, d)")
            raise ValueError(
                f"{where}: X has shape {X_shape} and y has shape {y_shape}; "
                f"expected X of shape (n, d) and y of shape (n,), one label per row of X"
            )
        if self.y is None:
            self._check_unlabelled(where)
        elif self.n_classes is None:
            self._check_regression(where)
        else:
            self._check_classification(where)
        d = X_shape[1]
        if self.features is not None and not _is_names(self.features, d):
            raise ValueError(f"{where}: features={self.features!r}; expected None or a tuple of {d} "
                             f"str, one name per column of X")
        if self.image_shape is not None and not (
                isinstance(self.image_shape, tuple) and len(self.image_shape) == 3
                and all(is_int(n, 1) for n in self.image_shape) and math.prod(self.image_shape) == d):
            raise ValueError(f"{where}: image_shape={self.image_shape!r}; expected None or a tuple (H, W, C) "
                             f"of positive ints with H·W·C = {d}, the columns of X")

    def images(self) -> jax.Array:
        """X as images, `(n, H, W, C)` for `image_shape` `(H, W, C)`; a ValueError without one.

        >>> digits().images().shape
        (1797, 8, 8, 1)
        """
        if self.image_shape is None:
            raise ValueError(f"Dataset {self.name!r}: its rows are not images (image_shape=None); "
                             f"reshape X yourself, e.g. X.reshape(n, H, W, C)")
        return jnp.reshape(self.X, (self.X.shape[0], *self.image_shape))

    def _check_unlabelled(self, where):
        if self.n_classes is not None or self.classes is not None:
            raise ValueError(f"{where}: y is None (no labels) but n_classes={self.n_classes!r} and "
                             f"classes={self.classes!r}; expected both None for unlabelled data")
        if self.X.dtype != jnp.float32:
            raise TypeError(f"{where}: X is {self.X.dtype}; expected float32 features")

    def _check_regression(self, where):
        if self.X.dtype != jnp.float32 or self.y.dtype != jnp.float32:
            raise TypeError(
                f"{where}: X is {self.X.dtype} and y is {self.y.dtype}; expected float32 features "
                f"and, with n_classes=None (regression), float32 targets; for class indices pass n_classes"
            )
        if self.classes is not None:
            raise ValueError(f"{where}: classes={self.classes!r} but n_classes=None (regression); "
                             f"expected classes=None")
        if not isinstance(self.y, jax.core.Tracer):  # values unknown inside jit
            targets = np.asarray(self.y)
            bad = np.flatnonzero(~np.isfinite(targets))
            if bad.size:
                raise ValueError(f"{where}: y has {bad.size} non-finite targets (the first "
                                 f"y[{bad[0]}] = {targets[bad[0]]}); expected finite real-valued targets")

    def _check_classification(self, where):
        if self.X.dtype != jnp.float32 or self.y.dtype != jnp.int32:
            raise TypeError(
                f"{where}: X is {self.X.dtype} and y is {self.y.dtype}; "
                f"expected float32 features and int32 class indices"
            )
        if not is_int(self.n_classes, 1):
            raise ValueError(f"{where}: n_classes must be an int ≥ 1, got {self.n_classes!r} "
                             f"(n_classes=None: regression, with float32 targets y)")
        if not isinstance(self.y, jax.core.Tracer) and self.y.size:  # values unknown inside jit
            labels = np.asarray(self.y)
            lo, hi = int(labels.min()), int(labels.max())
            if lo < 0 or hi >= self.n_classes:
                raise ValueError(
                    f"{where}: labels range over [{lo}, {hi}]; expected class "
                    f"indices in [0, {self.n_classes - 1}] for n_classes={self.n_classes}"
                )
        if self.classes is not None and not (_is_names(self.classes, self.n_classes)
                                             and len(set(self.classes)) == self.n_classes):
            raise ValueError(f"{where}: classes={self.classes!r}; expected None or a tuple of "
                             f"{self.n_classes} distinct str, classes[i] the name of class index i")

    def __repr__(self):
        n, d = self.X.shape
        if self.y is None:
            labels = "y=None"
        elif self.n_classes is None:
            labels = "task='regression'"
        else:
            labels = f"n_classes={self.n_classes}"
            if self.classes is not None:
                labels += f", classes={self.classes!r}"
        if self.image_shape is not None:
            labels += f", image_shape={self.image_shape!r}"
        return f"Dataset(name={self.name!r}, n={n}, d={d}, {labels})"


def _is_names(names, count) -> bool:
    """`names` is a tuple of `count` str."""
    return isinstance(names, tuple) and len(names) == count and all(isinstance(s, str) for s in names)


def _dataset(name, X, y, n_classes, image_shape=None) -> Dataset:
    return Dataset(jnp.asarray(X, jnp.float32), jnp.asarray(y, jnp.int32), name, n_classes,
                   image_shape=image_shape)


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

    Row-major pixels, unscaled (use `standardize`, or divide by 16); `image_shape`
    `(8, 8, 1)`, so `images()` gives them as `(1797, 8, 8, 1)` for `Conv2D`. Needs
    scikit-learn (`pip install 'fnnet[data]'`); reads a file bundled with it.

    >>> digits()
    Dataset(name='digits', n=1797, d=64, n_classes=10, image_shape=(8, 8, 1))
    """
    data = _sklearn_datasets("digits").load_digits()
    return _dataset("digits", data.data, data.target, 10, image_shape=(8, 8, 1))


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
TASKS = ("classification", "regression")
"""What a file's labels are: class labels, or real-valued targets."""
_DELIMITERS = ",;\t"
_MAX_INDEX = np.iinfo(np.int32).max  # class indices are int32, and n_classes = largest + 1


def from_file(path, *, task: str = "classification", n_features: "int | None" = None) -> Dataset:
    """A dataset read from a `.npz` or `.csv` file; its name is the path.

    `.npz`: arrays `X` of shape `(n, d)` and `y` of shape `(n,)`, read without
    pickle. `.csv`: one example per row, the features then the label in the
    last column. The delimiter is `,`, `;` or a tab, whichever splits the
    first non-blank line into the most fields; fields may be quoted; blank
    lines are skipped. That first line is a header if one of its features is
    text, not a number; its names become `features`.

    The labels, with `task="classification"`: whole numbers ≥ 0 are the class
    indices (`n_classes` the largest plus one, `classes` None). Other whole
    numbers (such as -1 and 1), sorted numerically, or text labels (such as
    "cat" and "dog"), sorted as text, become `classes`, each named by its text
    as first written, and `y` indexes them; a fractional label is an error.
    With `task="regression"`: finite real-valued targets, `n_classes` None.

    Args:
      path: a `.npz` or `.csv` file.
      task: "classification" or "regression": what the labels are.
      n_features: None: every row holds features then a label. An int d ≥ 1,
        to read new data to predict on: rows of d fields are features alone
        (`y` None), rows of d + 1 end with a label; a `.npz` may then lack `y`.

    Returns:
      A `Dataset`: X `(n, d)` float32; y `(n,)` int32 class indices, `(n,)`
      float32 targets, or None; `features` the header's names of X's columns
      (a `.csv` with a header), else None.

    Raises:
      ValueError: an empty file, rows of different lengths, a missing array,
        wrong shapes, a feature not a number or not finite, a label empty or
        not valid for `task`. The message starts with the path and names the
        first bad value by row and column counted from 1, as a spreadsheet
        shows them (a `.csv` row is its line number; a `.npz` row is index + 1),
        and by the column's name in the header.
    """
    if task not in TASKS:
        raise ValueError(f"from_file: task must be one of {', '.join(map(repr, TASKS))}, got {task!r}")
    if not (n_features is None or is_int(n_features, 1)):
        raise ValueError(f"from_file: n_features must be None or an int ≥ 1 (the number of "
                         f"features), got {n_features!r}")
    path = str(path)
    if path.endswith(".npz"):
        X, y, n_classes, classes, features = _read_npz(path, task, n_features)
    elif path.endswith(".csv"):
        X, y, n_classes, classes, features = _read_csv(path, task, n_features)
    else:
        raise ValueError(f"{path}: unknown file type; expected one of {', '.join(FILE_SUFFIXES)}")
    if y is not None:
        y = jnp.asarray(y, jnp.float32 if n_classes is None else jnp.int32)
    return Dataset(jnp.asarray(X), y, path, n_classes, classes, features)


def _read_npz(path, task, n_features):
    """X `(n, d)` float32, y `(n,)` (or None), n_classes, classes and features of a `.npz` file."""
    try:
        with np.load(path, allow_pickle=False) as f:
            missing = ({"X", "y"} if n_features is None else {"X"}) - set(f.files)
            if missing:
                raise ValueError(f"{path}: no array named {', '.join(sorted(missing))}; expected arrays "
                                 f"X (n, d) and y (n,), e.g. np.savez(path, X=X, y=y); it holds "
                                 f"{', '.join(f.files) or 'nothing'} (pass n_features to read X without y)")
            X, y = f["X"], f["y"] if "y" in f.files else None
    except (OSError, EOFError, ValueError) as e:
        if str(e).startswith(path):
            raise
        raise ValueError(f"{path}: not a readable .npz of numeric arrays ({e})") from None
    arrays = (X,) if y is None else (X, y)
    shapes = " and ".join(f"{a} has shape {b.shape}" for a, b in zip("Xy", arrays))
    if X.ndim != 2 or not len(X) or y is not None and y.shape != X.shape[:1]:
        raise ValueError(f"{path}: {shapes}; expected X of shape (n, d)"
                         f"{'' if y is None else ' and y of shape (n,)'} with n ≥ 1")
    if n_features is not None and X.shape[1] != n_features:
        raise ValueError(f"{path}: X has shape {X.shape}, {X.shape[1]} features; expected "
                         f"n_features={n_features}")
    if not all(np.issubdtype(a.dtype, np.number) for a in arrays):
        raise ValueError(f"{path}: {' and '.join(f'{a} is {b.dtype}' for a, b in zip('Xy', arrays))}; "
                         f"expected numbers")
    X = _finite_features(path, X, range(1, len(X) + 1), None)
    if y is None:
        return X, None, None, None, None
    if task == "regression":
        with np.errstate(over="ignore"):  # out of float32's range: inf, reported below
            y32 = y.astype(np.float32)
        bad = np.flatnonzero(~np.isfinite(y32))
        if bad.size:
            raise ValueError(f"{path}: y has {bad.size} non-finite targets (the first in row {bad[0] + 1}: "
                             f"{y[bad[0]]}{_in_float32(y[bad[0]])}); task='regression' needs finite "
                             f"real-valued targets")
        return X, y32, None, None, None
    whole = np.isfinite(y) & (y >= 0) & (y == np.round(y)) & (y < _MAX_INDEX)
    if not whole.all():
        i = int(np.argmin(whole))
        raise ValueError(f"{path}: label {y[i]} in row {i + 1} is not a class index; expected whole "
                         f"numbers 0, 1, ... in array y (for real-valued targets, task='regression')")
    return X, y, int(y.max()) + 1, None, None


def _read_csv(path, task, n_features):
    """X `(n, d)` float32, y `(n,)` (or None), n_classes, classes and features of a `.csv` file."""
    rows, cells = _csv_records(path)
    if not cells:
        raise ValueError(f"{path}: the file is empty; expected rows of features then a label")
    k = len(cells[0])
    if n_features is None and k < 2:
        raise ValueError(f"{path}: rows have {k} column; expected features then a label, separated by "
                         f"',', ';' or tabs")
    if n_features is not None and k not in (n_features, n_features + 1):
        raise ValueError(f"{path}: rows have {k} columns; expected {n_features} features, then "
                         f"optionally the label")
    for row, fields in zip(rows, cells):
        if len(fields) != k:
            raise ValueError(f"{path}: row {row} has {len(fields)} columns; expected {k}, like row {rows[0]}")
    d = k - 1 if n_features is None else n_features
    header = None
    if any(c.strip() and _number(c) is None for c in cells[0][:d]):
        if len(cells) == 1:
            raise ValueError(f"{path}: only a header (row {rows[0]}); expected rows of data below it")
        header, rows, cells = tuple(c.strip() for c in cells[0]), rows[1:], cells[1:]
    try:
        X = np.array([[float(c) for c in fields[:d]] for fields in cells])
    except ValueError:
        row, j, c = next((row, j, c) for row, fields in zip(rows, cells)
                         for j, c in enumerate(fields[:d]) if _number(c) is None)
        raise ValueError(f"{path}: {_cell(row, j, header)}: {c!r} is not a number; expected numeric "
                         f"features") from None
    X = _finite_features(path, X, rows, header)
    features = None if header is None else header[:d]
    if k == d:
        return X, None, None, None, features
    labels = [fields[d].strip() for fields in cells]
    return (X, *_csv_labels(path, labels, lambda i: _cell(rows[i], d, header), task), features)


def _csv_records(path):
    """The line numbers `(n,)` and the fields of the non-blank records of a csv file."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            first = next((line for line in f if line.strip()), "")
            delimiter = max(_DELIMITERS, key=lambda s: len(next(csv.reader([first], delimiter=s), [])))
            f.seek(0)
            reader = csv.reader(f, delimiter=delimiter, skipinitialspace=True)
            rows, cells, end = [], [], 0
            for fields in reader:
                start, end = end + 1, reader.line_num  # a quoted field may span lines
                if len(fields) > 1 or fields and fields[0].strip():
                    rows.append(start)
                    cells.append(fields)
    except (UnicodeDecodeError, csv.Error) as e:
        raise ValueError(f"{path}: not a readable csv file ({e})") from None
    return rows, cells


def _csv_labels(path, labels, where, task):
    """y `(n,)`, n_classes and classes from the label column's texts `(n,)`; `where(i)` names the
    cell of label i."""
    empty = next((i for i, label in enumerate(labels) if not label), None)
    if empty is not None:
        raise ValueError(f"{path}: {where(empty)}: the label is empty; expected a label in every row")
    numbers = [_number(label) for label in labels]
    if task == "regression":
        with np.errstate(over="ignore"):  # out of float32's range: inf, reported below
            y = np.array([math.nan if x is None else x for x in numbers], np.float32)
        bad = np.flatnonzero(~np.isfinite(y))
        if bad.size:
            x = numbers[bad[0]]
            raise ValueError(f"{path}: {where(bad[0])}: target {labels[bad[0]]!r} is not a finite number"
                             f"{'' if x is None else _in_float32(x)}; task='regression' needs "
                             f"real-valued targets")
        return y, None, None
    if None in numbers:  # text labels: classes in text order
        classes = tuple(sorted(set(labels)))
    else:
        fraction = next((i for i, x in enumerate(numbers) if not x.is_integer()), None)
        if fraction is not None:
            raise ValueError(f"{path}: {where(fraction)}: label {labels[fraction]!r} is not a whole number, "
                             f"so not a class; for real-valued targets use task='regression' (in the "
                             f"CLI: --loss mean_squared_error)")
        if 0 <= min(numbers) and max(numbers) < _MAX_INDEX:  # class indices already
            return np.array(numbers), int(max(numbers)) + 1, None
        name = {}  # each number's text as first written: "-1" and "-1.0" are one class
        for x, label in zip(numbers, labels):
            name.setdefault(x, label)
        classes = tuple(name[x] for x in sorted(name))
        labels = [name[x] for x in numbers]
    index = {c: i for i, c in enumerate(classes)}
    return np.array([index[label] for label in labels]), len(classes), classes


def _finite_features(path, X, rows, header):
    """X as float32; a ValueError at its first non-finite value, in row `rows[i]` for X[i]."""
    with np.errstate(over="ignore"):  # out of float32's range: inf, reported below
        X32 = np.asarray(X).astype(np.float32)
    bad = np.argwhere(~np.isfinite(X32))
    if len(bad):
        i, j = bad[0]
        raise ValueError(f"{path}: X has {len(bad)} non-finite values (the first at "
                         f"{_cell(rows[i], j, header)}: {X[i, j]}{_in_float32(X[i, j])}); "
                         f"clean or impute them")
    return X32


def _in_float32(x) -> str:
    """Why a value reported as non-finite is: "" if it is, else that float32 cannot hold it."""
    return ", beyond float32's range" if math.isfinite(x) else ""


def _cell(row, j, header):
    """Where column j of a row is, counted from 1 as a spreadsheet does, with the header's name."""
    return f"row {row}, column {j + 1}" + ("" if header is None else f" ({header[j]!r})")


def _number(text):
    """The float `text` spells, or None."""
    try:
        return float(text)
    except ValueError:
        return None


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
      **kwargs: the dataset's own arguments, e.g. `n=500, noise=0.2` for moons,
        or `task=` and `n_features=` for a file (see `from_file`); an argument
        the dataset does not take is an error.

    >>> load("xor")
    Dataset(name='xor', n=4, d=2, n_classes=2)
    >>> load("circles", jax.random.key(0), noise=0.0, factor=0.3)
    Dataset(name='circles', n=200, d=2, n_classes=2)
    """
    if not isinstance(name, str):
        raise TypeError(f"load: expected a dataset name (str), got {type(name).__name__} {name!r}")
    if name.endswith(FILE_SUFFIXES) and name not in _LOADERS:
        unknown = sorted(set(kwargs) - {"task", "n_features"})
        if unknown:
            raise TypeError(f"load: a dataset read from a file takes only task and n_features "
                            f"(see from_file), got {', '.join(unknown)}")
        return from_file(name, **kwargs)
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
    if isinstance(data, Dataset) and data.y is None:
        raise ValueError(f"split: dataset {data.name!r} has no labels (y=None); expected labelled data")
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
