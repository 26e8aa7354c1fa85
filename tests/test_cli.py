"""The `fnnet` command, run as a user runs it: in a subprocess, checking exit codes and output."""

import json
import re
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from fnnet import activations, cli, losses


def fnnet(*args, code=None):
    command = [sys.executable, "-c", code, *args] if code else [sys.executable, "-m", "fnnet", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=300)


def main(capsys, *args):
    """`fnnet *args` in this process (no interpreter start-up): (exit code, stdout, stderr)."""
    try:
        code = cli.main(list(args))
    except SystemExit as e:  # argparse errors
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def test_console_script_gradcheck_passes():
    script = pathlib.Path(sys.executable).parent / "fnnet"
    result = subprocess.run([str(script), "gradcheck"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["#", "layer", "output", "shape", "params"]  # the model summary
    assert lines[-1] == "PASS: all 6 leaves agree with jax.grad and with finite differences (float64)"
    assert sum(line.startswith("[") for line in lines) == 6


def test_gradcheck_flags_and_json():
    result = fnnet("gradcheck", "--sizes", "2,4,1", "--activation", "relu", "--loss", "bce",
                   "--batch", "4", "--seed", "3", "--dtype", "float32", "--elementwise", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["ok"] is True and report["dtype"] == "float32"
    assert [leaf["path"] for leaf in report["leaves"]] == ["[0]['W']", "[0]['b']", "[1]['W']", "[1]['b']"]
    assert report["settings"]["elementwise"] is True


def test_gradcheck_all_sweeps_every_activation_and_loss():
    result = fnnet("gradcheck", "--all", "--sizes", "3", "5", "4", "--batch", "6")
    assert result.returncode == 0, result.stdout + result.stderr
    rows = [line.split() for line in result.stdout.splitlines()[1:-1]]
    assert {(r[0], r[1]) for r in rows} == {(a.name, l.name) for a in activations.ALL for l in losses.ALL}
    assert all(r[-1] == "ok" for r in rows)
    assert result.stdout.splitlines()[-1] == "40/40 activation × loss pairs pass (float64)"


def test_gradcheck_exits_1_and_names_the_leaf_when_backprop_is_wrong():
    # A backprop that forgets the 1/m: the command must fail and say where.
    code = (
        "import sys, jax, fnnet.gradcheck as g, fnnet.cli as cli\n"
        "right = g.backprop\n"
        "def wrong(net, p, X, y, loss):\n"
        "    value, grads = right(net, p, X, y, loss)\n"
        "    return value, jax.tree.map(lambda d: d * X.shape[0], grads)\n"
        "g.backprop = wrong\n"
        "sys.exit(cli.main(sys.argv[1:]))\n"
    )
    result = fnnet("gradcheck", code=code)
    assert result.returncode == 1
    assert result.stdout.splitlines()[-1].startswith("gradient mismatch at [0]['W'] index")


@pytest.mark.parametrize(
    "args,message",
    [
        (["gradcheck", "--activation", "rleu"], "unknown activation 'rleu'"),
        (["gradcheck", "--sizes", "2", "0", "1"], "sizes must list at least two positive ints"),
        (["gradcheck", "--sizes", "2,x"], "expected integers like 2,4,1, got '2,x'"),
        (["gradcheck", "--loss", "hinge"], "unknown loss 'hinge'"),
        (["gradcheck", "--dtype", "float16"], "invalid choice: 'float16'"),
        (["gradcheck", "--batch", "0"], "--batch must be ≥ 1, got 0"),
        (["gradcheck", "--activation", "relu,tanh", "--sizes", "2,3,1"], "activation lists 2 entries"),
        ([], "the following arguments are required: command"),
    ],
)
def test_bad_flags_exit_2_with_a_message(capsys, args, message):
    code, _, err = main(capsys, *args)
    assert code == 2 and message in err, err


def test_bad_flag_exits_2_from_the_shell():
    result = fnnet("gradcheck", "--activation", "rleu")
    assert result.returncode == 2 and "unknown activation 'rleu'" in result.stderr


def test_train_end_to_end_with_plot_and_json(tmp_path):
    plot = tmp_path / "curves.png"
    result = fnnet("train", "--data", "moons", "--hidden", "16,16", "--epochs", "60", "--batch-size", "32",
                   "--lr", "1e-2", "--plot", str(plot), "--json")
    assert result.returncode == 0, result.stderr
    results = json.loads(result.stdout)
    assert results["gradcheck_ok"] and results["sizes"] == [2, 16, 16, 1]
    assert results["loss_name"] == "sigmoid_binary_cross_entropy"
    assert results["test"]["accuracy"] >= 0.95  # moons is learnt
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and plot.stat().st_size > 10_000
    assert "gradient check (32 examples, float64): PASS" in result.stderr
    assert "epoch 60/60" in result.stderr


def test_train_prints_metrics():
    result = fnnet("train", "--data", "xor", "--hidden", "8", "--epochs", "300", "--batch-size", "0",
                   "--optimizer", "sgd", "--lr", "1.0", "--grad", "autodiff")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[-3].startswith("train: loss ") and lines[-2].startswith("test: loss ")
    assert lines[-2].endswith("accuracy 1.0000")  # xor: trained and evaluated on its 4 points
    assert "ms per epoch after compilation" in lines[-1]


@pytest.mark.parametrize(
    "args,message",
    [
        (["--data", "mnist"], "unknown dataset 'mnist'; expected one of xor, moons"),
        (["--data", "digits", "--sizes", "10,32,10"], "--sizes 10,32,10 does not fit digits: it has 64 features"),
        (["--data", "moons", "--sizes", "2,8,2"], "needs 1 outputs for sigmoid_binary_cross_entropy"),
        (["--data", "xor", "--batch-size", "100"], "--batch-size must be in [1, 4]"),
        (["--lr", "-1"], "--lr must be a positive number, got -1.0"),
        (["--epochs", "0"], "--epochs must be ≥ 1, got 0"),
        (["--optimizer", "rmsprop"], "invalid choice: 'rmsprop'"),
        (["--data", "digits", "--loss", "bce"], "sigmoid_binary_cross_entropy needs 2 classes; this dataset has 10"),
        (["--data", "xor", "--devices", "2"], "data_mesh: asked for 2 devices but JAX has 1 (cpu)"),
    ],
)
def test_train_rejects_bad_flags(capsys, args, message):
    code, _, err = main(capsys, "train", *args)
    assert code == 2 and message in err, err


def test_train_save_and_resume_bit_identically(capsys, tmp_path):
    import jax
    import numpy as np

    import fnnet as lib

    common = ["train", "--data", "moons", "--hidden", "8", "--batch-size", "32", "--lr", "1e-2"]
    straight, part = tmp_path / "straight", tmp_path / "part"
    assert main(capsys, *common, "--epochs", "12", "--save", str(straight))[0] == 0
    assert main(capsys, *common, "--epochs", "6", "--save", str(part))[0] == 0
    code, out, _ = main(capsys, *common, "--epochs", "12", "--resume", str(part), "--save", str(part))
    assert code == 0 and "resumed from" in out
    a, b = lib.load(straight / "latest.fnnet"), lib.load(part / "latest.fnnet")
    assert all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params)))
    assert a.metadata == b.metadata and a.metadata["epoch"] == 12
    assert (straight / "best.fnnet").exists()


def test_train_resume_errors(capsys, tmp_path):
    code, _, err = main(capsys, "train", "--data", "moons", "--resume", str(tmp_path / "nothing"))
    assert code == 2 and "--resume" in err and "No such file" in err
    assert main(capsys, "train", "--data", "moons", "--hidden", "8", "--epochs", "2", "--save", str(tmp_path))[0] == 0
    code, _, err = main(capsys, "train", "--data", "moons", "--hidden", "16", "--epochs", "4", "--resume", str(tmp_path))
    assert code == 2 and "saved for a different network" in err


def test_train_divergence_exits_1_with_the_last_good_checkpoint_on_disk(capsys, tmp_path):
    import jax
    import numpy as np

    import fnnet as lib

    # sgd lr 100 on moons overflows the logits a few epochs in; with 20 epochs every epoch is saved.
    code, _, err = main(capsys, "train", "--data", "moons", "--hidden", "8", "--epochs", "20", "--batch-size", "32",
                        "--optimizer", "sgd", "--lr", "100", "--save", str(tmp_path))
    assert code == 1, err
    epoch = int(re.search(r"non-finite at epoch (\d+), step \d+", err).group(1))
    assert epoch >= 1 and f"the last good checkpoint is {tmp_path / 'latest.fnnet'} (epoch {epoch})" in err
    ckpt = lib.load(tmp_path / "latest.fnnet")
    assert ckpt.metadata["epoch"] == epoch and len(ckpt.metadata["history"]["loss"]) == epoch
    assert all(np.isfinite(leaf).all() for leaf in jax.tree.leaves((ckpt.params, ckpt.opt_state)))
    # Diverging before the first save says there is no checkpoint rather than pointing at none.
    code, _, err = main(capsys, "train", "--data", "moons", "--hidden", "8", "--epochs", "1", "--batch-size", "32",
                        "--optimizer", "sgd", "--lr", "1e30", "--save", str(tmp_path / "fresh"))
    assert code == 1 and "no checkpoint was saved before it" in err, err


def _moons_table():
    import jax

    import fnnet as lib

    data = lib.datasets.moons(jax.random.key(0), n=60)
    return np.asarray(data.X, np.float64), np.asarray(data.y)


def test_train_reads_npz_and_csv_files(capsys, tmp_path):
    X, y = _moons_table()
    np.savez(tmp_path / "moons.npz", X=X, y=y)
    np.savetxt(tmp_path / "moons.csv", np.c_[X, y], delimiter=",", header="x0,x1,label", comments="")
    results = []
    for path in (tmp_path / "moons.npz", tmp_path / "moons.csv"):
        code, out, err = main(capsys, "train", "--data", str(path), "--hidden", "8", "--epochs", "3", "--json")
        assert code == 0, err
        results.append(json.loads(out))
    assert results[0]["sizes"] == [2, 8, 1] and results[0]["train"] == results[1]["train"]


@pytest.mark.parametrize(
    "content,message",
    [
        ("x0,x1,label\n0.5,1.0,0\n0.1,nan,1\n", r"X has 1 non-finite values \(first at row 1, column 1: nan\)"),
        ("0.5,1.0,0\n0.1,inf,1\n", r"first at row 1, column 1: inf"),
        ("0.5,1.0,0\n0.1,0.2,1.5\n", r"label 1.5 in row 1 is not a class index"),
        ("0.5,1.0,0\n0.1,0.2\n", r"data.csv: .*expected comma-separated numbers"),
        ("", r"data.csv: the file is empty"),
    ],
    ids=["nan", "inf", "fractional-label", "ragged", "empty"],
)
def test_train_rejects_bad_data_files(capsys, tmp_path, content, message):
    (tmp_path / "data.csv").write_text(content)
    code, _, err = main(capsys, "train", "--data", str(tmp_path / "data.csv"))
    assert code == 2 and re.search(message, err), err
