"""The README's promises: its test command is the one CI runs, and its quickstart runs."""

import pathlib
import re

import jax
import jax.numpy as jnp

ROOT = pathlib.Path(__file__).parent.parent
README = (ROOT / "README.md").read_text()


def _commands():
    return re.findall(r"```bash\n(.*?)\n```", README, re.S)


def test_ci_runs_the_readme_test_command():
    test_command = next(c for c in _commands() if "pytest" in c)
    assert test_command in (ROOT / ".ci" / "run").read_text().splitlines()


def test_main_command_trains_with_gradient_verification():
    main = next(c for c in _commands() if "pytest" not in c)
    assert main.endswith("fnnet train --data digits") and '".[data]"' in main


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
