"""The README's promises: its test command is the one CI runs, and its quickstart runs."""

import contextlib
import io
import pathlib
import re

import jax
import jax.numpy as jnp
import pytest

ROOT = pathlib.Path(__file__).parent.parent
README = (ROOT / "README.md").read_text()


def _commands():
    return re.findall(r"```bash\n(.*?)\n```", README, re.S)


def test_ci_runs_the_readme_test_command():
    test_command = next(c for c in _commands() if "pytest" in c)
    assert test_command in (ROOT / ".ci" / "run").read_text().splitlines()


def test_main_command_trains_with_gradient_verification():
    main = next(c for c in _commands() if "pytest" not in c)
    assert main.endswith("fnnet train --data digits") and '".[data,progress]"' in main


def test_quickstart_runs_and_its_claim_holds():
    code = re.search(r"## Quickstart\n\n```python\n(.*?)```", README, re.S).group(1)
    scope = {}
    with jax.enable_x64(False):  # as a user runs it
        exec(code, scope)
    assert jnp.abs(scope["value"] - scope["ref_value"]) <= 1e-6
    for g, r in zip(scope["jax"].tree.leaves(scope["grads"]), scope["jax"].tree.leaves(scope["ref"])):
        assert jnp.abs(g - r).max() <= 1e-6 * max(1.0, float(jnp.abs(r).max()))


def test_gradient_check_example_prints_the_report_shown():
    blocks = re.search(r"## Checking gradients.*?```python\n(.*?)```\n\n```\n(.*?)```", README, re.S)
    code, shown = blocks.groups()
    scope = {}
    with jax.enable_x64(False):  # as a user runs it
        exec(code, scope)
    assert str(scope["report"]) == shown.strip()


def _documented_errors():
    """The first cells of the "Errors you may see" table: messages, `...` standing for anything."""
    section = re.search(r"## Errors you may see\n(.*?)\n## ", README, re.S).group(1)
    return re.findall(r"^\| `(.*?)` \|", section, re.M)


def test_every_documented_error_is_what_fnnet_raises(tmp_path):
    """Each table row is produced, message and all, by the input the row describes."""
    import numpy as np
    import optax
    import pytest

    import fnnet

    net = fnnet.mlp([2, 4, 1])
    params = net.init(jax.random.key(0))
    X, y = jnp.ones((4, 2)), jnp.ones((4, 1))
    three = fnnet.mlp([2, 4, 3])
    X100, y100 = jnp.ones((100, 2)), jnp.ones((100, 1))
    adam = optax.adam(1e-3)
    (tmp_path / "bad.fnnet").write_bytes(b"PK\x03\x04 truncated")
    fnnet.save(tmp_path / "ok.fnnet", params, net=net)

    def wrong_grads(p, X, y):
        value, grads = fnnet.backprop(net, p, X, y, "bce")
        return value, jax.tree.map(lambda g: 2 * g, grads)

    calls = [
        lambda: net.apply(params, jnp.ones((4, 3))),
        lambda: fnnet.backprop(net, params, X, jnp.ones(4), "bce"),
        lambda: fnnet.backprop(three, three.init(jax.random.key(0)), X, jnp.array([0, 1, 2, 3]),
                               "softmax_cross_entropy_with_integer_labels"),
        lambda: net.apply(fnnet.mlp([4, 2, 1]).init(jax.random.key(0)), X),
        lambda: fnnet.mlp([2, 4, 1], activation="rleu"),
        lambda: fnnet.fit(net, params, (X100, y100), "bce", adam, epochs=1, batch_size=128),
        lambda: fnnet.fit(net, params, (X100.at[7, 0].set(jnp.nan).at[7, 1].set(0.5), y100), "bce", adam, epochs=1),
        lambda: fnnet.fit(net, params, (X, y), "bce", adam, epochs=1, opt_state=optax.sgd(0.1, momentum=0.9).init(params)),
        lambda: fnnet.fit(net, params, (X * 1e3, y), "mse", optax.sgd(1e30), epochs=3),
        lambda: fnnet.load(tmp_path / "bad.fnnet"),
        lambda: fnnet.load(tmp_path / "ok.fnnet", net=three),
        lambda: fnnet.testing.assert_grads_close(wrong_grads, lambda p, X, y: fnnet.losses.get("bce")(net.apply(p, X), y).mean(), params, X, y),
    ]
    documented = _documented_errors()
    assert len(documented) == len(calls)
    for message, call in zip(documented, calls):
        pattern = ".*".join(re.escape(part) for part in message.split("..."))
        with pytest.raises((ValueError, TypeError, AssertionError, FloatingPointError), match=pattern):
            call()


def test_predict_and_evaluate_snippet_runs_and_learns_xor():
    code = re.search(r"## Predicting and evaluating\n\n```python\n(.*?)```", README, re.S).group(1)
    scope = {}
    exec(code, scope)
    fnnet, net, params, X, y = (scope[k] for k in ("fnnet", "net", "params", "X", "y"))
    assert fnnet.evaluate(net, params, (X, y), "bce")["accuracy"] == 1.0
    assert fnnet.predict(net, params, X, loss="bce", output="labels").tolist() == [0, 1, 1, 0]


@pytest.mark.heavy
def test_every_python_block_runs_as_written_in_order(tmp_path, monkeypatch):
    """The README's Python blocks, top to bottom in one session, as a reader pastes them (shell
    blocks, which install or span hosts, are not run here)."""
    blocks = re.findall(r"```python\n(.*?)```", README, re.S)
    assert len(blocks) >= 7
    monkeypatch.chdir(tmp_path)  # the Checkpoints block writes run/latest.fnnet
    # "Which layer is wrong" prints what the README shows after it
    which, shown = re.search(r"\*\*Which layer is wrong\.\*\*.*?```python\n(.*?)```\n\n```\n(.*?)```", README,
                             re.S).groups()
    scope = {}
    with jax.enable_x64(False):
        for i, code in enumerate(blocks):
            out = io.StringIO()
            try:
                with contextlib.redirect_stdout(out):
                    exec(code, scope)
            except Exception as e:
                raise AssertionError(f"README Python block {i + 1} fails: {type(e).__name__}: {e}\n{code}") from e
            if code == which:
                assert out.getvalue().strip() == shown.strip()
                which = None
    assert which is None  # the block was found and checked
    assert (tmp_path / "run" / "latest.fnnet").exists()


def test_writing_your_own_layer_prints_what_its_comments_say():
    code = re.search(r"### Writing your own layer\n.*?```python\n(.*?)```", README, re.S).group(1)
    expected = [line.split("# ", 1)[1] for line in code.splitlines()
                if line.startswith(("print(", "# FAIL")) and "# " in line]
    out = io.StringIO()
    with contextlib.redirect_stdout(out), jax.enable_x64(False):
        exec("import jax, jax.numpy as jnp, fnnet\n" + code, {})
    assert out.getvalue().splitlines() == [e for e in expected if e.startswith(("PASS", "FAIL"))]

