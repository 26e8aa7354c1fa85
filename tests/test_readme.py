"""The README's promises: its test command is the one CI runs, and its quickstart runs."""

import contextlib
import io
import os
import pathlib
import re
import subprocess
import sys

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



def _section_block(heading):
    """The first Python block after `heading`, and the plain block printed after it (if any)."""
    match = re.search(rf"{heading}.*?```python\n(.*?)```(?:\n\n```\n(.*?)```)?", README, re.S)
    return match.group(1), match.group(2)


def run_blocks_as_written(workdir):
    """The README's Python blocks, top to bottom in one session, as a reader pastes them (shell
    blocks, which install or span hosts, are not run); after each block, its claims: the
    quickstart's gradients equal jax.grad's, the printed reports are the ones shown, the
    predicting snippet learns XOR, and "Writing your own layer" prints what its comments say.
    An AssertionError names the first block that fails. Run by the test below in a fresh process."""
    blocks = re.findall(r"```python\n(.*?)```", README, re.S)
    assert len(blocks) >= 7
    os.chdir(workdir)  # the Checkpoints block writes run/latest.fnnet
    quickstart, _ = _section_block(r"## Quickstart\n")
    gradcheck, gradcheck_shown = _section_block(r"## Checking gradients\n")
    which, which_shown = _section_block(r"\*\*Which layer is wrong\.\*\*")
    predicting, _ = _section_block(r"## Predicting and evaluating\n")
    own_layer, _ = _section_block(r"### Writing your own layer\n")
    checked = set()
    scope = {}
    for i, code in enumerate(blocks):
        out = io.StringIO()
        try:
            with contextlib.redirect_stdout(out):
                exec(code, scope)
        except Exception as e:
            raise AssertionError(f"README Python block {i + 1} fails: {type(e).__name__}: {e}\n{code}") from e
        printed = out.getvalue()
        if code == quickstart:
            assert jnp.abs(scope["value"] - scope["ref_value"]) <= 1e-6
            for g, r in zip(jax.tree.leaves(scope["grads"]), jax.tree.leaves(scope["ref"])):
                assert jnp.abs(g - r).max() <= 1e-6 * max(1.0, float(jnp.abs(r).max()))
        elif code == gradcheck:
            assert str(scope["report"]) == gradcheck_shown.strip()
        elif code == which:
            assert printed.strip() == which_shown.strip()
        elif code == predicting:
            fnnet, net, params, X, y = (scope[k] for k in ("fnnet", "net", "params", "X", "y"))
            assert fnnet.evaluate(net, params, (X, y), "bce")["accuracy"] == 1.0
            assert fnnet.predict(net, params, X, loss="bce", output="labels").tolist() == [0, 1, 1, 0]
        elif code == own_layer:
            expected = [line.split("# ", 1)[1] for line in code.splitlines()
                        if line.startswith(("print(", "# FAIL")) and "# " in line]
            assert printed.splitlines() == [e for e in expected if e.startswith(("PASS", "FAIL"))]
        else:
            continue
        checked.add(code)
    assert checked == {quickstart, gradcheck, which, predicting, own_layer}  # each found and checked


@pytest.mark.heavy
def test_every_python_block_runs_as_written_in_order_and_says_what_the_readme_says(tmp_path):
    """`run_blocks_as_written` in a fresh Python process, with JAX's defaults as a reader has them
    (float32, XLA's full optimisation: the reports shown are printed to the last digit)."""
    code = (f"import sys; sys.path.insert(0, {str(ROOT / 'tests')!r}); import test_readme; "
            f"test_readme.run_blocks_as_written({str(tmp_path)!r})")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-4000:]
    assert (tmp_path / "run" / "latest.fnnet").exists()
