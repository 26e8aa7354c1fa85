"""Tests for fnnet.datasets.

Oracles: closed-form geometry of the noise-free generators; a least-squares linear
classifier and a 1-nearest-neighbour classifier written in numpy (the synthetic
sets must beat the first and not the second); scikit-learn's own arrays for the
real datasets; numpy float64 statistics for `standardize`; sorting rows to show
that `split` is a partition.
"""

import builtins
import importlib.util
import re
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fnnet import datasets as D

needs_sklearn = pytest.mark.skipif(
    importlib.util.find_spec("sklearn") is None, reason="needs scikit-learn: pip install 'fnnet[data]'")

KEY = jax.random.key(0)
SYNTHETIC = {"moons": D.moons, "spirals": D.spirals, "circles": D.circles}
# Each generator compiles once per n, at a cost of about a second on CPU: so the tests
# use the default n and vary only traced arguments (noise, factor, turns, key).
N = 200


def keys(n, seed=0):
    return list(jax.random.split(jax.random.key(seed), n))


# ---------- numpy oracles ----------


def linear_accuracy(X, y):
    """Training accuracy of least squares on [X, 1] → ±1: what a linear classifier can do."""
    A = np.c_[X, np.ones(len(X))]
    w = np.linalg.lstsq(A, 2.0 * y - 1, rcond=None)[0]
    return ((A @ w > 0) == y).mean()


def nearest_neighbour_accuracy(X_train, y_train, X, y):
    """Accuracy on (X, y) of the 1-nearest-neighbour rule fitted on (X_train, y_train)."""
    d2 = ((X[:, None, :] - X_train[None, :, :]) ** 2).sum(axis=-1)
    return (y_train[d2.argmin(axis=1)] == y).mean()


def host(data):
    return np.asarray(data.X, np.float64), np.asarray(data.y)


def sorted_rows(X, y):
    """Rows of [X | y] in lexicographic order, to compare datasets as multisets."""
    rows = np.c_[np.asarray(X, np.float64), np.asarray(y, np.float64)]
    return rows[np.lexsort(rows.T[::-1])]


# ---------- Dataset, xor ----------


def test_xor_is_the_textbook_table():
    data = D.xor()
    assert (data.name, data.n_classes) == ("xor", 2)
    assert data.X.dtype == jnp.float32 and data.y.dtype == jnp.int32
    np.testing.assert_array_equal(data.X, [[0, 0], [0, 1], [1, 0], [1, 1]])
    np.testing.assert_array_equal(data.y, [0, 1, 1, 0])


def test_dataset_checks_its_arrays():
    X, y = jnp.zeros((3, 2), jnp.float32), jnp.zeros(3, jnp.int32)
    assert repr(D.Dataset(X, y, "toy", 2)) == "Dataset(name='toy', n=3, d=2, n_classes=2)"
    with pytest.raises(ValueError, match=r"X has shape \(3, 2\) and y has shape \(3, 1\); expected X of shape \(n, d\) and y of shape \(n,\)"):
        D.Dataset(X, y[:, None], "toy", 2)
    with pytest.raises(ValueError, match=r"X has shape \(3,\)"):
        D.Dataset(X[:, 0], y, "toy", 2)
    with pytest.raises(TypeError, match="X is float64 and y is int32; expected float32 features and int32 class indices"):
        D.Dataset(X.astype(jnp.float64), y, "toy", 2)
    with pytest.raises(ValueError, match=r"Dataset 'toy': labels range over \[0, 2\]; expected class indices in \[0, 1\] for n_classes=2"):
        D.Dataset(X, y.at[1].set(2), "toy", 2)
    with pytest.raises(ValueError, match=r"Dataset 'toy': labels range over \[-1, 0\]"):
        D.Dataset(X, y.at[1].set(-1), "toy", 2)
    with pytest.raises(ValueError, match="Dataset 'toy': n_classes must be an int ≥ 1, got 2.0"):
        D.Dataset(X, y, "toy", 2.0)


# ---------- synthetic: shapes, balance, determinism, purity ----------


@pytest.mark.parametrize("name", SYNTHETIC)
def test_synthetic_shapes_dtypes_and_balance(name):
    data = SYNTHETIC[name](KEY)
    assert (data.name, data.n_classes) == (name, 2)
    assert data.X.shape == (N, 2) and data.X.dtype == jnp.float32
    assert data.y.shape == (N,) and data.y.dtype == jnp.int32
    assert np.isfinite(data.X).all()
    np.testing.assert_array_equal(np.bincount(data.y, minlength=2), [N // 2, N // 2])


def test_odd_n_gives_class_0_the_extra_example():
    # one generator stands for the three: they share the labelling (another n, another compile)
    data = D.moons(KEY, n=3)
    assert data.X.shape == (3, 2)
    np.testing.assert_array_equal(np.bincount(data.y, minlength=2), [2, 1])


@pytest.mark.parametrize("name", SYNTHETIC)
def test_synthetic_is_a_function_of_the_key(name):
    make = SYNTHETIC[name]
    a, b, c = make(jax.random.key(3)), make(jax.random.key(3)), make(jax.random.key(4))
    np.testing.assert_array_equal(a.X, b.X)
    np.testing.assert_array_equal(a.y, b.y)
    assert not np.array_equal(a.X, c.X)
    # as sets too, not just in another order
    assert not np.array_equal(sorted_rows(a.X, a.y), sorted_rows(c.X, c.y))


@pytest.mark.parametrize("name", SYNTHETIC)
def test_synthetic_rows_are_shuffled(name):
    y = np.asarray(SYNTHETIC[name](KEY).y)
    assert not (np.diff(y) >= 0).all() and not (np.diff(y) <= 0).all()


def test_synthetic_under_jit_and_vmap():
    # one dataset per key in one compiled call, e.g. for an ensemble; jit(vmap) covers both
    ks = jnp.stack(keys(3))
    batched = jax.jit(jax.vmap(lambda k: D.moons(k).X))(ks)
    assert batched.shape == (3, N, 2)
    np.testing.assert_allclose(batched[1], D.moons(ks[1]).X, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", SYNTHETIC)
@pytest.mark.parametrize("noise", [0.05, 0.3])
def test_noise_is_gaussian_with_that_standard_deviation(name, noise):
    # Same key: the same clean points in the same order, so the difference is the noise.
    make = SYNTHETIC[name]
    clean, noisy = make(KEY, noise=0.0), make(KEY, noise=noise)
    np.testing.assert_array_equal(clean.y, noisy.y)
    eps = np.asarray(noisy.X, np.float64) - np.asarray(clean.X, np.float64)
    assert abs(eps.mean()) < 4 * noise / np.sqrt(eps.size)
    assert abs(eps.std() / noise - 1) < 4 / np.sqrt(2 * eps.size)  # 4 standard errors


# ---------- synthetic: geometry ----------


def test_moons_lie_on_their_half_circles():
    X, y = host(D.moons(KEY, noise=0.0))
    upper, lower = X[y == 0], X[y == 1] - [1.0, 0.5]
    np.testing.assert_allclose(np.hypot(*upper.T), 1, atol=1e-6)
    np.testing.assert_allclose(np.hypot(*lower.T), 1, atol=1e-6)
    assert (upper[:, 1] >= -1e-6).all() and (lower[:, 1] <= 1e-6).all()
    # t ~ U[0, π] spreads the points along the whole arc
    assert upper[:, 0].min() < -0.95 and upper[:, 0].max() > 0.95


@pytest.mark.parametrize("factor", [0.2, 0.5, 0.9])
def test_circles_radii(factor):
    X, y = host(D.circles(KEY, noise=0.0, factor=factor))
    r = np.hypot(*X.T)
    np.testing.assert_allclose(r[y == 0], 1, atol=1e-6)
    np.testing.assert_allclose(r[y == 1], factor, atol=1e-6)
    # with noise, on average: inner radius ≈ factor × outer radius
    X, y = host(D.circles(KEY, noise=0.05, factor=factor))
    r = np.hypot(*X.T)
    assert abs(r[y == 1].mean() / r[y == 0].mean() - factor) < 0.03


@pytest.mark.parametrize("turns", [0.75, 1.5, 3.0])
def test_spirals_follow_the_archimedean_arms(turns):
    X, y = host(D.spirals(KEY, noise=0.0, turns=turns))
    r = np.hypot(*X.T)
    assert r.max() <= 1 + 1e-6
    theta = 2 * np.pi * turns * r + np.pi * y
    np.testing.assert_allclose(X, r[:, None] * np.c_[np.cos(theta), np.sin(theta)], atol=2e-5)
    # r = √u: uniform density along the arms, so radii below ρ are a fraction ρ² of them
    assert abs((r < 0.5).mean() - 0.25) < 0.1


@pytest.mark.parametrize("name, linear_below", [("moons", 0.95), ("spirals", 0.8), ("circles", 0.7)])
def test_synthetic_is_not_linear_but_nearest_neighbour_separable(name, linear_below):
    make = SYNTHETIC[name]
    k_train, k_test = keys(2)
    X_train, y_train = host(make(k_train, noise=0.0))
    X_test, y_test = host(make(k_test, noise=0.0))
    assert linear_accuracy(np.r_[X_train, X_test], np.r_[y_train, y_test]) < linear_below
    assert nearest_neighbour_accuracy(X_train, y_train, X_test, y_test) >= 0.98


# ---------- synthetic: argument errors ----------


@pytest.mark.parametrize("name", SYNTHETIC)
def test_synthetic_argument_errors(name):
    make = SYNTHETIC[name]
    for n in (1, 0, 2.5, True, "10"):
        with pytest.raises(ValueError, match=rf"{name}: n is the number of examples and must be an int ≥ 2 \(one per class\), got {re.escape(repr(n))}"):
            make(KEY, n=n)
    for noise in (-0.1, float("nan"), None):
        with pytest.raises(ValueError, match=rf"{name}: noise is a standard deviation and must be ≥ 0, got {noise!r}"):
            make(KEY, noise=noise)
    for key in (0, np.array([0, 1, 2], np.uint32), None):
        with pytest.raises(TypeError, match=rf"{name}: expected a JAX random key such as jax.random.key\(0\), got {type(key).__name__}"):
            make(key)


def test_circles_factor_and_spirals_turns_errors():
    for factor in (0, 1, 1.5, -0.5):
        with pytest.raises(ValueError, match=rf"circles: factor is the inner radius over the outer one and must be in \(0, 1\), got {factor}"):
            D.circles(KEY, factor=factor)
    for turns in (0, -1, float("inf")):
        with pytest.raises(ValueError, match=rf"spirals: turns must be a positive number, got {turns}"):
            D.spirals(KEY, turns=turns)


def test_legacy_uint32_keys_work():
    X, y = labelled(37)
    a, b = (D.split((X, y), jax.random.PRNGKey(5)) for _ in range(2))
    np.testing.assert_array_equal(a[1][0], b[1][0])


# ---------- real datasets ----------


@needs_sklearn
@pytest.mark.parametrize("name, shape, counts", [
    ("digits", (1797, 64), [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]),
    ("breast_cancer", (569, 30), [212, 357]),
])
def test_real_datasets_are_sklearns_arrays(name, shape, counts):
    import sklearn.datasets

    data = getattr(D, name)()
    ref = getattr(sklearn.datasets, f"load_{name}")()
    assert (data.name, data.n_classes) == (name, len(counts))
    assert data.X.shape == shape and data.X.dtype == jnp.float32
    assert data.y.shape == shape[:1] and data.y.dtype == jnp.int32
    np.testing.assert_array_equal(data.X, ref.data.astype(np.float32))
    np.testing.assert_array_equal(data.y, ref.target)
    np.testing.assert_array_equal(np.bincount(data.y), counts)


@needs_sklearn
def test_digits_pixels_are_integers_0_to_16():
    X = np.asarray(D.digits().X)
    assert X.min() == 0 and X.max() == 16 and (X == np.round(X)).all()


@needs_sklearn
def test_digits_rows_are_8x8_images_row_major():
    import sklearn.datasets

    data = D.digits()
    assert data.image_shape == (8, 8, 1) and repr(data).endswith("n_classes=10, image_shape=(8, 8, 1))")
    images = data.images()
    assert images.shape == (1797, 8, 8, 1) and images.dtype == jnp.float32
    np.testing.assert_array_equal(images[..., 0], sklearn.datasets.load_digits().images)  # sklearn's own 8×8


def test_image_shape_must_cover_the_columns():
    X, y = jnp.zeros((3, 12), jnp.float32), jnp.zeros(3, jnp.int32)
    assert D.Dataset(X, y, "toy", 2, image_shape=(2, 2, 3)).images().shape == (3, 2, 2, 3)
    assert D.moons(KEY).image_shape is None and D.xor().image_shape is None
    for bad in [(2, 2, 2), (12,), (2, 6), [2, 2, 3], (4, 3, 1.0), (0, 4, 3)]:
        with pytest.raises(ValueError, match=re.escape(f"Dataset 'toy': image_shape={bad!r}; expected None or a "
                                                       f"tuple (H, W, C) of positive ints with H·W·C = 12")):
            D.Dataset(X, y, "toy", 2, image_shape=bad)
    with pytest.raises(ValueError, match=r"^Dataset 'toy': its rows are not images \(image_shape=None\); reshape"):
        D.Dataset(X, y, "toy", 2).images()


@needs_sklearn
def test_breast_cancer_labels_0_malignant_1_benign():
    import sklearn.datasets

    assert list(sklearn.datasets.load_breast_cancer().target_names) == ["malignant", "benign"]


@pytest.mark.parametrize("name", ["digits", "breast_cancer"])
def test_missing_sklearn_says_how_to_install_it(name, monkeypatch):
    # None in sys.modules makes `import sklearn.datasets` fail, even though it was imported
    monkeypatch.setitem(sys.modules, "sklearn", None)
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    hint = re.escape(f"the {name} dataset is read from scikit-learn, which is not installed; "
                     "install it with: pip install 'fnnet[data]'")
    with pytest.raises(ModuleNotFoundError, match=hint):
        getattr(D, name)()
    with pytest.raises(ImportError, match=hint):
        D.load(name)


def test_a_broken_sklearn_is_not_reported_as_missing(monkeypatch):
    real_import = builtins.__import__

    def import_(name, *args, **kwargs):
        if name.startswith("sklearn"):
            raise ModuleNotFoundError("No module named 'scipy'", name="scipy")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", import_)
    with pytest.raises(ModuleNotFoundError, match="^No module named 'scipy'$"):
        D.digits()


# ---------- load ----------


@needs_sklearn
def test_load_dispatches_by_name():
    assert D.NAMES == ("xor", "moons", "spirals", "circles", "digits", "breast_cancer")
    for name in D.NAMES:
        key = KEY if name in D.SYNTHETIC else None
        data = D.load(name, key)
        assert data.name == name
    a, b = D.load("spirals", KEY, n=N, turns=2.0, noise=0.0), D.spirals(KEY, n=N, noise=0.0, turns=2.0)
    np.testing.assert_array_equal(a.X, b.X)
    # the fixed datasets ignore a key, so a caller may always pass one
    np.testing.assert_array_equal(D.load("xor", KEY).X, D.xor().X)


def test_load_errors():
    names = "xor, moons, spirals, circles, digits, breast_cancer"
    with pytest.raises(ValueError, match=f"unknown dataset 'mnist'; expected one of: {names}, or a .npz or .csv file$"):
        D.load("mnist")
    with pytest.raises(TypeError, match="load: expected a dataset name \\(str\\), got function"):
        D.load(D.moons)
    for name in D.SYNTHETIC:
        with pytest.raises(ValueError, match=rf"load: dataset '{name}' is drawn at random and needs a key, e.g. load\('{name}', jax.random.key\(0\)\); got key=None"):
            D.load(name, n=10)
    with pytest.raises(TypeError, match="load: dataset 'moons' got unexpected arguments factor, nosie; it takes n, noise$"):
        D.load("moons", KEY, nosie=0.1, factor=0.5)
    with pytest.raises(TypeError, match="load: dataset 'digits' got unexpected arguments n; it takes none$"):
        D.load("digits", n=10)


# ---------- files ----------


def test_files_round_trip_the_arrays(tmp_path):
    X = np.random.default_rng(0).normal(size=(7, 3))
    y = np.array([0, 2, 1, 2, 0, 1, 1])
    np.savez(tmp_path / "d.npz", X=X, y=y)
    np.savetxt(tmp_path / "d.csv", np.c_[X, y], delimiter=",", header="a,b,c,label", comments="")
    np.savetxt(tmp_path / "plain.csv", np.c_[X, y], delimiter=",")
    for name in ("d.npz", "d.csv", "plain.csv"):
        data = D.load(str(tmp_path / name))
        assert (data.name, data.n_classes, data.classes) == (str(tmp_path / name), 3, None)
        assert data.features == (("a", "b", "c") if name == "d.csv" else None)
        np.testing.assert_array_equal(data.X, X.astype(np.float32))
        np.testing.assert_array_equal(data.y, y)


def test_file_errors(tmp_path):
    np.savez(tmp_path / "noy.npz", X=np.zeros((3, 2)))
    np.savez(tmp_path / "objects.npz", X=np.zeros((2, 1)), y=np.array([0, {"a": 1}], dtype=object))
    np.savez(tmp_path / "shapes.npz", X=np.zeros((3, 2)), y=np.zeros(4))
    np.savez(tmp_path / "negative.npz", X=np.zeros((2, 2)), y=np.array([0, -1]))
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    (tmp_path / "text.csv").write_text("1,2,0\n3,four,1\n")
    cases = [
        ("noy.npz", r"noy.npz: no array named y; expected arrays X \(n, d\) and y \(n,\).*it holds X"),
        ("objects.npz", r"objects.npz: not a readable .npz of numeric arrays \(Object arrays cannot be loaded"),
        ("shapes.npz", r"X has shape \(3, 2\) and y has shape \(4,\); expected X of shape \(n, d\)"),
        ("negative.npz", r"label -1 in row 2 is not a class index"),
        ("junk.npz", r"junk.npz: not a readable .npz"),
        ("text.csv", r"text.csv: row 2, column 2: 'four' is not a number; expected numeric features"),
        ("missing.csv", r"No such file"),
    ]
    for name, message in cases:
        with pytest.raises((ValueError, OSError), match=message):
            D.load(str(tmp_path / name))
    with pytest.raises(TypeError, match=r"load: a dataset read from a file takes only task and n_features \(see from_file\), got n$"):
        D.load(str(tmp_path / "noy.npz"), n=3, task="regression")


def csv_file(tmp_path, text, name="data.csv"):
    """The path (str) of a new file `name` in tmp_path holding `text`."""
    path = tmp_path / name
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize("sep", [",", ";", "\t"], ids=["comma", "semicolon", "tab"])
def test_csv_delimiters_and_quoted_fields(tmp_path, sep):
    # the quoted header name holds the delimiter itself
    text = f'"x{sep}1"{sep}x2{sep}label\n1.5{sep}"2"{sep}"cat"\n-3{sep}4e1{sep}dog\n'
    data = D.from_file(csv_file(tmp_path, text))
    assert (data.features, data.classes) == ((f"x{sep}1", "x2"), ("cat", "dog"))
    np.testing.assert_array_equal(data.X, [[1.5, 2], [-3, 40]])
    np.testing.assert_array_equal(data.y, [0, 1])


@pytest.mark.parametrize("text,features", [
    ("x,label\n1.5,cat\n2,dog\n", ("x",)),  # a header over text labels
    ("1.5,cat\n2,dog\n", None),  # text labels alone make no header
    ("a,b,label\n1,2,0\n3,4,1\n", ("a", "b")),
    (",a,label\n0,1,cat\n1,2,dog\n", ("", "a")),  # pandas' index column has no name
], ids=["header-text-labels", "no-header-text-labels", "header-numbers", "header-unnamed-column"])
def test_csv_header_is_a_first_line_with_text_features(tmp_path, text, features):
    data = D.from_file(csv_file(tmp_path, text))
    assert data.features == features and data.X.shape[0] == 2


def test_csv_text_labels_become_classes_sorted_as_text(tmp_path):
    data = D.from_file(csv_file(tmp_path, "5.1,virginica\n4.9,setosa\n6.0, versicolor\n5.0,setosa\n"))
    assert (data.n_classes, data.classes) == (3, ("setosa", "versicolor", "virginica"))
    assert data.y.dtype == jnp.int32
    np.testing.assert_array_equal(data.y, [2, 0, 1, 0])
    assert repr(data).endswith("n=4, d=1, n_classes=3, classes=('setosa', 'versicolor', 'virginica'))")


def test_csv_negative_whole_labels_become_classes_sorted_as_numbers(tmp_path):
    # -1 < +1 as numbers (as text "+1" < "-1"); each named as first written, "-1.0" is "-1"
    data = D.from_file(csv_file(tmp_path, "0.5,+1\n0.1,-1\n0.2,1\n0.3,-1.0\n"))
    assert (data.n_classes, data.classes) == (2, ("-1", "+1"))
    np.testing.assert_array_equal(data.y, [1, 0, 1, 0])


def test_csv_real_valued_targets_need_task_regression(tmp_path):
    path = csv_file(tmp_path, "x,target\n1,0\n\n2,-0.5\n")
    with pytest.raises(ValueError, match=re.escape(
            f"{path}: row 4, column 2 ('target'): label '-0.5' is not a whole number, so not a class; for "
            "real-valued targets use task='regression' (in the CLI: --loss mean_squared_error)")):
        D.from_file(path)
    data = D.from_file(path, task="regression")
    assert (data.n_classes, data.classes, data.features, data.y.dtype) == (None, None, ("x",), jnp.float32)
    np.testing.assert_array_equal(data.y, [0, -0.5])
    assert repr(data) == f"Dataset(name={path!r}, n=2, d=1, task='regression')"


@pytest.mark.parametrize("text,kwargs,message", [
    # a blank line (row 3) before each bad row: rows are the file's lines, counted from 1
    ("x,age,label\n1,2,0\n\n3,abc,1\n", {}, r"row 4, column 2 \('age'\): 'abc' is not a number; expected numeric features$"),
    ('"x\ny",age,label\n1,abc,0\n', {}, r"row 3, column 2 \('age'\): 'abc'"),  # a quoted header spans rows 1-2
    ("x,age,label\n1,2,0\n\n3,nan,1\n4,inf,0\n", {},
     r"X has 2 non-finite values \(the first at row 4, column 2 \('age'\): nan\); clean or impute them$"),
    ("1,2,0\n1e39,2,0\n", {}, r"X has 1 non-finite values \(the first at row 2, column 1: 1e\+39, beyond float32's range\)"),
    ("x,age,label\n1,2,0\n\n3,1\n", {}, r"row 4 has 2 columns; expected 3, like row 1$"),
    ("1,2,0\n\n3,4,\n", {}, r"row 3, column 3: the label is empty; expected a label in every row$"),
    ("x,price\n1,2\n\n3,cheap\n", {"task": "regression"},
     r"row 4, column 2 \('price'\): target 'cheap' is not a finite number; task='regression' needs real-valued targets$"),
    ("x,label\n\n", {}, r"only a header \(row 1\); expected rows of data below it$"),
    ("1\n2\n", {}, r"rows have 1 column; expected features then a label, separated by ',', ';' or tabs$"),
    ("1,2,3,4\n", {"n_features": 2}, r"rows have 4 columns; expected 2 features, then optionally the label$"),
], ids=["not-a-number", "multiline-header", "non-finite", "beyond-float32", "ragged", "empty-label",
        "regression-target", "header-only", "one-column", "n_features-width"])
def test_csv_errors_name_row_and_column_from_1(tmp_path, text, kwargs, message):
    path = csv_file(tmp_path, text)
    with pytest.raises(ValueError, match=f"^{re.escape(path)}: {message}"):
        D.from_file(path, **kwargs)


def test_csv_n_features_reads_rows_with_or_without_the_label(tmp_path):
    new = D.load(csv_file(tmp_path, "a,b\n1,2\n3,4\n"), n_features=2)
    assert (new.y, new.n_classes, new.features) == (None, None, ("a", "b"))
    assert repr(new).endswith("n=2, d=2, y=None)")
    np.testing.assert_array_equal(new.X, [[1, 2], [3, 4]])
    labelled = D.load(csv_file(tmp_path, "1,2,cat\n3,4,dog\n"), n_features=2)
    assert (labelled.classes, labelled.features) == (("cat", "dog"), None)
    one = D.from_file(csv_file(tmp_path, "x\n7\n8\n"), n_features=1)
    assert (one.y, one.features, one.X.shape) == (None, ("x",), (2, 1))


def test_npz_regression_unlabelled_and_errors_from_1(tmp_path):
    X = np.arange(6.0).reshape(3, 2)
    np.savez(tmp_path / "r.npz", X=X, y=np.array([0.5, -2, 3]))
    data = D.from_file(tmp_path / "r.npz", task="regression")
    assert (data.n_classes, data.y.dtype) == (None, jnp.float32)
    np.testing.assert_array_equal(data.y, [0.5, -2, 3])
    np.savez(tmp_path / "x.npz", X=X)
    assert D.from_file(tmp_path / "x.npz", n_features=2).y is None
    np.savez(tmp_path / "nan.npz", X=np.where(X == 2, np.nan, X), y=np.zeros(3))
    np.savez(tmp_path / "nan_y.npz", X=X, y=np.array([1.0, 2, np.nan]))
    cases = [
        ("r.npz", {}, r"label 0.5 in row 1 is not a class index; expected whole numbers 0, 1, ... in array y \(for real-valued targets, task='regression'\)"),
        ("x.npz", {"n_features": 3}, r"X has shape \(3, 2\), 2 features; expected n_features=3$"),
        ("x.npz", {}, r"no array named y; .*\(pass n_features to read X without y\)$"),
        ("nan.npz", {}, r"X has 1 non-finite values \(the first at row 2, column 1: nan\)"),
        ("nan_y.npz", {"task": "regression"}, r"y has 1 non-finite targets \(the first in row 3: nan\); task='regression'"),
    ]
    for name, kwargs, message in cases:
        with pytest.raises(ValueError, match=f"^{re.escape(str(tmp_path / name))}: {message}"):
            D.from_file(tmp_path / name, **kwargs)


def test_from_file_checks_task_and_n_features(tmp_path):
    path = csv_file(tmp_path, "1,0\n")
    with pytest.raises(ValueError, match="^from_file: task must be one of 'classification', 'regression', got 'regresion'$"):
        D.load(path, task="regresion")
    for n in (0, 2.0, True):
        with pytest.raises(ValueError, match=rf"^from_file: n_features must be None or an int ≥ 1 \(the number of features\), got {n!r}$"):
            D.from_file(path, n_features=n)


def test_dataset_checks_targets_and_names():
    X, y, t = jnp.zeros((3, 2), jnp.float32), jnp.zeros(3, jnp.int32), jnp.array([0.5, -1, 2], jnp.float32)
    assert repr(D.Dataset(X, y, "toy", 2, ("cat", "dog"), ("a", "b"))) == \
        "Dataset(name='toy', n=3, d=2, n_classes=2, classes=('cat', 'dog'))"
    assert repr(D.Dataset(X, t, "toy", None)) == "Dataset(name='toy', n=3, d=2, task='regression')"
    assert repr(D.Dataset(X, None, "toy", None)) == "Dataset(name='toy', n=3, d=2, y=None)"
    cases = [
        (lambda: D.Dataset(X, y, "toy", 2, ("cat",)), ValueError,
         r"classes=\('cat',\); expected None or a tuple of 2 distinct str, classes\[i\] the name of class index i$"),
        (lambda: D.Dataset(X, y, "toy", 2, ("cat", "cat")), ValueError, r"classes=\('cat', 'cat'\); expected"),
        (lambda: D.Dataset(X, y, "toy", 2, ["cat", "dog"]), ValueError, r"classes=\['cat', 'dog'\]; expected"),
        (lambda: D.Dataset(X, y, "toy", 2, features=("a",)), ValueError,
         r"features=\('a',\); expected None or a tuple of 2 str, one name per column of X$"),
        (lambda: D.Dataset(X, t, "toy", None, ("cat", "dog")), ValueError,
         r"classes=\('cat', 'dog'\) but n_classes=None \(regression\); expected classes=None$"),
        (lambda: D.Dataset(X, y, "toy", None), TypeError,
         r"X is float32 and y is int32; expected float32 features and, with n_classes=None \(regression\), "
         r"float32 targets; for class indices pass n_classes$"),
        (lambda: D.Dataset(X, t.at[1].set(jnp.inf), "toy", None), ValueError,
         r"y has 1 non-finite targets \(the first y\[1\] = inf\); expected finite real-valued targets$"),
        (lambda: D.Dataset(X, None, "toy", 2), ValueError,
         r"y is None \(no labels\) but n_classes=2 and classes=None; expected both None for unlabelled data$"),
        (lambda: D.Dataset(X[:, 0], None, "toy", None), ValueError, r"X has shape \(3,\); expected X of shape \(n, d\)$"),
    ]
    for make, error, message in cases:
        with pytest.raises(error, match=f"^Dataset 'toy': {message}"):
            make()


# ---------- split ----------


def labelled(n, n_classes=3, seed=0):
    """X `(n, 2)` float32 with unique rows that encode their index; random labels y."""
    X = np.c_[np.arange(n), -np.arange(n)].astype(np.float32)
    y = np.random.default_rng(seed).integers(0, n_classes, n).astype(np.int32)
    return X, y


def check_partition(X, y, train, test, indexed=False):
    """Train and test hold the rows of (X, y) between them, each once; with `indexed`
    (data from `labelled`), each row also still has its own label."""
    X_train, y_train, X_test, y_test = map(np.asarray, (*train, *test))
    np.testing.assert_array_equal(
        sorted_rows(np.r_[X_train, X_test], np.r_[y_train, y_test]), sorted_rows(X, y))
    if indexed:
        idx = np.asarray(np.r_[X_train, X_test][:, 0], int)
        np.testing.assert_array_equal(np.r_[y_train, y_test], np.asarray(y)[idx])


# n from a short list: each n compiles a permutation
@settings(max_examples=30, deadline=None)
@given(n=st.sampled_from([2, 10, 37]), test_fraction=st.floats(0.01, 0.99),
       seed=st.integers(0, 2**16), stratify=st.booleans())
def test_split_is_a_partition_of_the_requested_sizes(n, test_fraction, seed, stratify):
    X, y = labelled(n, seed=seed)
    n_test = int(np.floor(test_fraction * n + 0.5))
    if not 0 < n_test < n:
        with pytest.raises(ValueError, match="both sides need at least one example"):
            D.split((X, y), jax.random.key(seed), test_fraction, stratify)
        return
    train, test = D.split((X, y), jax.random.key(seed), test_fraction, stratify)
    assert test[0].shape == (n_test, 2) and train[0].shape == (n - n_test, 2)
    check_partition(X, y, train, test, indexed=True)
    if stratify:
        counts, test_counts = np.bincount(y, minlength=3), np.bincount(test[1], minlength=3)
        assert (np.abs(test_counts - counts * n_test / n) < 1).all()


@needs_sklearn
@pytest.mark.parametrize("name", ["digits", "breast_cancer"])
def test_stratified_split_keeps_class_proportions(name):
    data = D.load(name)
    train, test = D.split(data, KEY, test_fraction=0.25)
    counts = np.bincount(data.y)
    test_counts = np.bincount(test[1], minlength=data.n_classes)
    assert test_counts.sum() == round(0.25 * len(data.y))
    assert (np.abs(test_counts - 0.25 * counts) <= 1).all()
    np.testing.assert_array_equal(np.bincount(train[1], minlength=data.n_classes), counts - test_counts)
    assert train[0].dtype == jnp.float32 and train[1].dtype == jnp.int32
    check_partition(np.asarray(data.X), np.asarray(data.y), train, test)


def test_unstratified_split_is_a_random_subset():
    X, y = labelled(200)
    train, test = D.split((X, y), KEY, test_fraction=0.3, stratify=False)
    assert len(test[1]) == 60
    check_partition(X, y, train, test, indexed=True)
    # shuffled: not the first 60 rows, nor in order
    assert not np.array_equal(np.sort(test[0][:, 0]), np.arange(60))
    assert not (np.diff(train[0][:, 0]) > 0).all()


def test_split_is_a_function_of_the_key():
    data = D.moons(KEY)
    a, b, c = (D.split(data, k) for k in (jax.random.key(1), jax.random.key(1), jax.random.key(2)))
    np.testing.assert_array_equal(a[1][0], b[1][0])
    assert not np.array_equal(a[1][0], c[1][0])
    # a Dataset and its (X, y) pair split alike
    np.testing.assert_array_equal(D.split((data.X, data.y), jax.random.key(1))[1][0], a[1][0])


def test_split_errors():
    X, y = labelled(37)
    for f in (0, 1, -0.2, 1.5, float("nan"), "0.2", None):
        with pytest.raises(ValueError, match=rf"split: test_fraction must be in \(0, 1\), got {re.escape(repr(f))}"):
            D.split((X, y), KEY, f)
    with pytest.raises(ValueError, match=r"split: test_fraction=0.01 of 37 examples leaves 0 for test and 37 for training; both sides need at least one example"):
        D.split((X, y), KEY, 0.01)
    with pytest.raises(ValueError, match="split: test_fraction=0.99 of 37 examples leaves 37 for test and 0 for training"):
        D.split((X, y), KEY, 0.99)
    with pytest.raises(ValueError, match=r"split: X has shape \(37, 2\) and y has shape \(36,\); expected the same leading axis"):
        D.split((X, y[:36]), KEY)
    with pytest.raises(ValueError, match=r"split: stratify=True needs integer class labels y of shape \(37,\), got float32 of shape \(37, 1\); pass class indices, or stratify=False"):
        D.split((X, y[:, None].astype(np.float32)), KEY)
    D.split((X, y[:, None].astype(np.float32)), KEY, stratify=False)  # fine unstratified
    with pytest.raises(TypeError, match="split: expected a Dataset or a pair \\(X, y\\), got tuple of length 3"):
        D.split((X, y, y), KEY)
    with pytest.raises(TypeError, match="split: expected a Dataset or a pair \\(X, y\\), got ndarray"):
        D.split(X, KEY)
    with pytest.raises(TypeError, match="split: expected a JAX random key"):
        D.split((X, y), 0)
    with pytest.raises(ValueError, match=r"^split: dataset 'new.csv' has no labels \(y=None\); expected labelled data$"):
        D.split(D.Dataset(X, None, "new.csv", None), KEY)


# ---------- standardize ----------


def test_standardize_uses_train_statistics_only():
    rng = np.random.default_rng(0)
    X_train = (rng.standard_normal((100, 4)) * [1, 10, 0.1, 3] + [0, 5, -2, 100]).astype(np.float32)
    X_test = X_train[:30] + 7.0  # shifted by a constant: must stay shifted, not re-centred
    X_train_std, X_test_std, (mean, std) = D.standardize(X_train, X_test)
    assert X_train_std.dtype == X_test_std.dtype == jnp.float32
    assert mean.shape == std.shape == (1, 4)
    np.testing.assert_allclose(X_train_std.mean(axis=0), 0, atol=1e-5)
    np.testing.assert_allclose(X_train_std.std(axis=0), 1, rtol=1e-5)
    ref_mean, ref_std = X_train.astype(np.float64).mean(axis=0), X_train.astype(np.float64).std(axis=0)
    np.testing.assert_allclose(mean[0], ref_mean, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(std[0], ref_std, rtol=1e-5)
    np.testing.assert_allclose(X_test_std, np.asarray(X_train_std)[:30] + 7.0 / ref_std, rtol=1e-4, atol=1e-4)
    # (mean, std) apply to new data the same way
    np.testing.assert_allclose((X_test - mean) / std, X_test_std, rtol=1e-6, atol=1e-6)


@needs_sklearn
def test_standardize_constant_columns_map_to_zero_not_nan():
    X_train = np.array([[0.1, 1.0], [0.1, 3.0], [0.1, 5.0]], np.float32)
    X_test = np.array([[0.6, 3.0]], np.float32)
    X_train_std, X_test_std, (mean, std) = D.standardize(X_train, X_test)
    np.testing.assert_array_equal(X_train_std[:, 0], 0)
    np.testing.assert_allclose(std[0], [1.0, np.std([1.0, 3.0, 5.0])], rtol=1e-6)
    np.testing.assert_allclose(X_test_std, [[0.5, 0.0]], atol=1e-6)
    # digits has all-zero pixels; one example alone is constant everywhere
    X = D.digits().X
    assert np.isfinite(D.standardize(X, X)[0]).all()
    np.testing.assert_array_equal(D.standardize(X[:1], X[1:3])[0], 0)


def test_standardize_runs_under_jit_and_keeps_dtypes():
    X64 = np.arange(12.0).reshape(6, 2)
    a = D.standardize(X64, X64[:2])
    b = jax.jit(D.standardize)(X64, X64[:2])
    assert a[0].dtype == jnp.float64
    jax.tree.map(np.testing.assert_array_equal, a, b)


def test_standardize_errors():
    X = np.zeros((5, 3), np.float32)
    with pytest.raises(ValueError, match=r"standardize: X_train has shape \(5, 3\) and X_test has shape \(5, 2\); expected \(n_train, d\) and \(n_test, d\) with the same d"):
        D.standardize(X, X[:, :2])
    with pytest.raises(ValueError, match=r"X_train has shape \(5,\)"):
        D.standardize(X[:, 0], X)
    with pytest.raises(ValueError, match=r"standardize: X_train has shape \(0, 3\): no examples to take statistics from"):
        D.standardize(X[:0], X)
    with pytest.raises(TypeError, match=r"standardize: X_test has dtype int32; expected floating features, e.g. X_test.astype\(jnp.float32\)"):
        D.standardize(X, X.astype(np.int32))
