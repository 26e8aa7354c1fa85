"""The examples run as a user runs them: in a fresh process, default float32."""

import pathlib
import re
import subprocess
import sys

import pytest

EXAMPLES = pathlib.Path(__file__).parent.parent / "examples"


def run(script, *args):
    return subprocess.run([sys.executable, str(EXAMPLES / script), *args],
                          capture_output=True, text=True, timeout=300)


def test_xor_checks_gradients_and_reaches_full_accuracy():
    result = run("xor.py")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "PASS: all 4 leaves agree with jax.grad and with finite differences (float64)" in out
    rows = re.findall(r"^(\[\d\]\['[Wb]'\]) .* float64 +(\S+) +(\S+) .* ok", out, re.M)
    assert [r[0] for r in rows] == ["[0]['W']", "[0]['b']", "[1]['W']", "[1]['b']"]
    assert max(float(r[2]) for r in rows) <= 1e-12  # max rel. error against jax.grad
    losses = [float(v) for v in re.findall(r"Epoch (?:0|500|1000|1500|2000), Loss: (\S+)", out)]
    assert len(losses) == 5 and losses == sorted(losses, reverse=True) and losses[-1] < 0.01
    assert "accuracy 100%" in out


def test_xor_reports_failure_with_nonzero_exit():
    # One epoch cannot learn XOR: the example must say so through its exit code.
    result = run("xor.py", "--epochs", "1", "--restarts", "1")
    assert result.returncode == 1 and "accuracy 100%" not in result.stdout


def test_xor_rejects_bad_flags():
    result = run("xor.py", "--lr", "-1")
    assert result.returncode == 2 and "--lr > 0" in result.stderr


@pytest.mark.heavy
def test_digits_reaches_97_percent_mean_test_accuracy():
    result = run("digits.py")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "gradient check: PASS" in result.stdout
    accuracies = [float(a) for a in re.findall(r"split \d: test accuracy ([\d.]+)%", result.stdout)]
    assert len(accuracies) == 5 and sum(accuracies) / 5 >= 97.0


def test_ensemble_trains_64_models_in_one_call():
    result = run("ensemble.py", "--epochs", "500")
    assert result.returncode == 0, result.stdout + result.stderr
    converged = int(re.search(r"(\d+)/64 models reach 100% accuracy", result.stdout).group(1))
    assert converged >= 32  # about 2/3 of 2-4-1 ReLU initialisations solve XOR
    assert re.search(r"the ensemble costs [\d.]+× one model", result.stdout)


def test_per_example_gradients_find_flipped_labels():
    result = run("per_example_grads.py")
    assert result.returncode == 0, result.stdout + result.stderr
    found, total = map(int, re.search(r"largest \d+ gradient norms: (\d+) of them are the (\d+)", result.stdout).groups())
    assert found / total >= 0.5


@pytest.mark.heavy
def test_cnn_digits_checks_gradients_and_reaches_98_5_percent_mean_test_accuracy():
    result = run("cnn_digits.py")
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "gradient check: PASS" in out
    accuracies = [float(a) for a in re.findall(r"^split \d: test accuracy ([\d.]+)%", out, re.M)]
    assert len(accuracies) == 5 and sum(accuracies) / 5 >= 98.5
    assert re.search(r"^per epoch: \d+ ms \(median, after compilation", out, re.M)


@pytest.mark.heavy
def test_rnn_digits_checks_bptt_and_reaches_97_percent_mean_test_accuracy():
    result = run("rnn_digits.py")  # the LSTM; the GRU is the same code path with its own step
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "gradient check: PASS" in out
    accuracies = [float(a) for a in re.findall(r"^split \d: test accuracy ([\d.]+)%", out, re.M)]
    assert len(accuracies) == 5 and sum(accuracies) / 5 >= 97


@pytest.mark.heavy
def test_cnn_beats_mlp_by_10_points_on_shapes_at_random_positions():
    result = run("cnn_shapes.py")
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    means = {}
    for model in ("CNN", "MLP"):
        accuracies = [float(a) for a in re.findall(rf"^seed \d: {model} test accuracy ([\d.]+)%", out, re.M)]
        assert len(accuracies) == 3
        means[model] = sum(accuracies) / 3
    assert means["CNN"] >= 90 and means["MLP"] <= 75 and means["CNN"] - means["MLP"] >= 10
    gap = float(re.search(r"^gap: CNN − MLP = ([\d.]+) points", out, re.M).group(1))
    assert abs(gap - (means["CNN"] - means["MLP"])) < 0.05


def test_cnn_examples_reject_bad_flags():
    for script, flag in (("cnn_digits.py", "--splits"), ("cnn_shapes.py", "--seeds")):
        result = run(script, "--epochs", "1")
        assert result.returncode == 2 and f"{flag} must be ≥ 1 and --epochs ≥ 2" in result.stderr
