"""The `fnnet` command, run as a user runs it: in a subprocess, checking exit codes and output."""

import io
import json
import os
import pathlib
import re
import subprocess
import sys
import time

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


@pytest.mark.heavy
def test_gradcheck_all_sweeps_every_activation_and_the_losses_asked_printing_rows_as_they_finish():
    """`--all --loss bce,mse`: every activation × those two losses (test_backprop checks all 40
    pairs; here, the sweep and its streaming)."""
    command = [sys.executable, "-m", "fnnet", "gradcheck", "--all", "--loss", "bce,mse", "--sizes", "3", "5", "1",
               "--batch", "6"]
    began = time.perf_counter()
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as process:
        lines = [process.stdout.readline().rstrip("\n"), process.stdout.readline().rstrip("\n")]
        first_row, still_running = time.perf_counter() - began, process.poll() is None
        lines += process.stdout.read().splitlines()
    # The first row arrived while the 19 other checks were still to run, not all at the end.
    assert still_running and first_row < 0.75 * (time.perf_counter() - began)
    assert process.returncode == 0, lines
    rows = [line.split() for line in lines[1:-1]]
    swept = (losses.sigmoid_binary_cross_entropy, losses.mean_squared_error)
    assert [(r[0], r[1]) for r in rows] == [(a.name, l.name) for a in activations.ALL for l in swept]
    assert all(r[-1] == "ok" for r in rows)
    assert lines[-1] == "20/20 activation × loss pairs pass (float64)"


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
        (["gradcheck", "--loss", "bce,mse"], "--loss bce,mse: several losses are for the --all sweep"),
        (["gradcheck", "--all", "--loss", "bce,hinge"], "unknown loss 'hinge'"),
        (["gradcheck", "--dtype", "float16"], "invalid choice: 'float16'"),
        (["gradcheck", "--batch", "0"], "--batch must be ≥ 1, got 0"),
        (["gradcheck", "--activation", "relu,tanh", "--sizes", "2,3,1"], "activation lists 2 entries"),
        (["gradcheck", "--layers", "dense:3", "--sizes", "4,3"],
         "--layers gives the whole network, and --sizes describes an MLP: give one or the other"),
        (["gradcheck", "--layers", "dense:3", "--all"], "--all sweeps the MLP's hidden activation: put activations"),
        (["gradcheck", "--in-shape", "4"], "--in-shape is for --layers; an MLP's input is the first of --sizes"),
        (["gradcheck", "--layers", "conv:4:3,dense:3"],
         "--layers item 2 'dense:3': expects flat rows (n,) per example but gets (6, 6, 4); put flatten or gap"),
        (["gradcheck", "--layers", "dense:3", "--in-shape", "4,4,2"],
         "--layers item 1 'dense:3': expects flat rows (n,) per example but gets (4, 4, 2)"),
        (["gradcheck", "--layers", "res(conv:4:3"], "--layers item 1 'res(conv:4:3': '(' is never closed"),
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
    assert set(results) >= {"train", "validation", "test", "selected_epoch"}
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and plot.stat().st_size > 10_000
    assert f"plot written to {plot}" in result.stderr
    assert "gradient check (32 examples, float64): PASS" in result.stderr
    assert "moons: 140 training, 20 validation, 40 test rows" in result.stderr
    # A log (stderr is a pipe here) gets plain lines: the first before compiling, none wider than 80.
    lines = [line for line in result.stderr.splitlines() if line.startswith("epoch ")]
    assert lines[0] == "epoch 0/60  compiling (the first update includes it)"
    assert re.fullmatch(r"epoch 60/60  loss \S+  val_loss \S+  val_acc \S+  \(\d+\.\d s, eta 0 s\)", lines[-1])
    assert len(lines) == 21 and max(map(len, lines)) <= 80


def test_train_prints_metrics():
    result = fnnet("train", "--data", "xor", "--hidden", "8", "--epochs", "300", "--batch-size", "0",
                   "--optimizer", "sgd", "--lr", "1.0", "--grad", "autodiff")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert [line.split(":")[0] for line in lines[-4:-1]] == ["train", "validation", "test"]
    assert lines[-2].endswith("accuracy 1.0000")  # xor: trained and evaluated on its 4 points
    assert "ms per epoch after compilation" in lines[-1]


def test_help_lists_the_valid_names_and_the_defaults(capsys):
    code, out, _ = main(capsys, "train", "--help")
    text = " ".join(out.split())  # argparse wraps lines
    assert code == 0
    for name in [a.name for a in activations.ALL] + [l.name for l in losses.ALL] + list(cli.train.OPTIMIZERS):
        assert name in text, name
    assert "--layers SPEC|@FILE" in text and "res(BLOCK[|SHORTCUT])" in text
    for flag, default in [("--epochs", "100"), ("--seed", "0"), ("--test-fraction", "0.2"),
                          ("--val-fraction", "0.1"), ("--lr", "0.001"), ("--activation", "relu")]:
        assert re.search(re.escape(flag) + r" \S+ .*?\(default " + re.escape(default), text), flag
    code, out, _ = main(capsys, "--version")
    import fnnet as lib
    assert code == 0 and out.startswith(f"fnnet {lib.__version__} (jax ")


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
        (["--activation", "rleu"], "unknown activation 'rleu'"),
        (["--data", "digits", "--loss", "bce"], "sigmoid_binary_cross_entropy needs 2 classes; this dataset has 10"),
        (["--data", "xor", "--devices", "2"], "data_mesh: asked for 2 devices but JAX has 1 (cpu)"),
        (["--devices", "0"], "--devices must be ≥ 1, got 0"),
        (["--devices", "-1"], "--devices must be ≥ 1, got -1"),
        (["--warmup", "100"], "--warmup must be in [0, --epochs) = [0, 100), got 100"),
        (["--weight-decay", "-1"], "--weight-decay must be ≥ 0, got -1.0"),
        (["--val-fraction", "0.8"], "--val-fraction must be in [0, 1 − --test-fraction) = [0, 0.8), got 0.8"),
        (["--patience", "0"], "--patience must be ≥ 1 epochs, got 0"),
        (["--patience", "5", "--val-fraction", "0"], "--patience stops on the validation loss and needs"),
        (["--log-every", "0"], "--log-every must be ≥ 1, got 0"),
        (["--plot", "curves.pngg"], "--plot curves.pngg: unknown image type 'pngg'; expected one of"),
        (["--save", "/proc/fnnet-run"], "--save /proc/fnnet-run: cannot write there"),  # a read-only location
        (["--save", "/proc"], "--save /proc: cannot write there"),  # an existing read-only directory
        (["--save", "/etc/hostname"], "--save /etc/hostname: is a file; expected a directory"),
        (["--resume", "nothing-here"], "--resume nothing-here: no checkpoint there; expected the directory given"),
        (["--layers", "conv:8:3,maxpol:2"],
         "--layers item 2 'maxpol:2': unknown layer 'maxpol' (did you mean maxpool?)"),
        (["--layers", ""], "--layers is empty; expected layers separated by commas"),
        (["--layers", "@no/such/spec.txt"], "argument --layers: cannot read the spec file 'no/such/spec.txt'"),
        (["--layers", "dense:10", "--hidden", "8"], "--layers gives the whole network, and --hidden describes an MLP"),
        (["--layers", "dense:10", "--activation", "tanh"], "and --activation describes an MLP: give one or the other"),
        (["--data", "digits", "--layers", "conv:4:3,dense:10"],
         "--layers item 2 'dense:10': expects flat rows (n,) per example but gets (8, 8, 4); put flatten or gap"),
        (["--data", "digits", "--layers", "conv:4:3,gap,dense:5"],
         "--layers: the last layer outputs (5,) per example; softmax_cross_entropy_with_integer_labels on digits "
         "(10 classes) needs (10,): end the spec with dense:10"),
        (["--data", "digits", "--layers", "conv:4:3"], "outputs (8, 8, 4) per example; softmax_cross_entropy_with_"
         "integer_labels on digits (10 classes) needs (10,): end the spec with flatten,dense:10 (or gap,dense:10)"),
        (["--data", "moons", "--layers", "conv:4:3,gap,dense:1"],  # moons' rows are points, not images
         "--layers item 1 'conv:4:3': expects images (H, W, C) per example but gets flat rows (2,); put "
         "reshape:H:W:C before it"),
        (["--data", "moons", "--layers", "res(dense:8:relu,dense:8)"],
         "--layers item 1 'res(dense:8:relu,dense:8)': the block maps (2,) to (8,) but the shortcut to (2,)"),
        # --data text: windows of character ids
        (["--data", "text", "--hidden", "32"], "--hidden describes an MLP on rows of features; --data text trains "
                                               "a network on windows of characters: give it as --layers"),
        (["--data", "moons", "--context", "32"], "--context is the window length of --data text, an int ≥ 1; got "
                                                 "--context 32 with --data moons"),
        (["--data", "text", "--loss", "mse"], "--loss mean_squared_error: --data text predicts each next character"),
        (["--data", "text", "--layers", "dense:16,dense:104"],
         "--layers item 1 'dense:16': the data are token ids (T,) = (64,) per example; start the spec with embed:DIM"),
        (["--data", "text", "--layers", "embed:16,res(layernorm,mha:2),dense:104"],
         "--layers item 2.2 'mha:2': attends to later positions, whose characters it is to predict; on --data "
         "text write causal=true, e.g. mha:2:causal=true"),
        (["--data", "text", "--layers", "embed:16,lstm:16:seq=false,dense:104"],
         "the last layer outputs (104,) per example; softmax_cross_entropy_with_integer_labels on text (104 symbols "
         "at each position) needs (64, 104): end the spec with sequences to the end (seq=true on lstm, gru, rnn)"),
        (["--data", "text", "--layers", "embed:16,lstm:16:seq=maybe,dense:104"],
         "--layers item 2 'lstm:16:seq=maybe': seq must be true or false, got 'maybe'"),
        (["--data", "text", "--layers", "embed:16,conv:4:3,dense:104"],
         "--layers item 2 'conv:4:3': expects images (H, W, C) per example but gets sequences (T, d) = (64, 16)"),
        (["--data", "digits", "--layers", "embed:8,dense:10"],
         "--layers item 1 'embed:8': embed takes its vocab from token data, and only fnnet train --data text gives"),
        (["--data", "text", "--layers", "embed:16,embed:16,dense:104"],
         "--layers item 2 'embed:16': embed reads token ids: it can only be the first item"),
        (["--data", "text", "--layers", "embed:16,res(seq(embed:16,layernorm)),dense:104"],
         "--layers item 2.1.1 'embed:16': embed reads token ids: it can only be the first item"),
        (["--data", "text", "--context", "30000"], "--val-fraction 0.05: windows: 23249 ids fill no window of 30000"),
    ],
)
def test_train_rejects_bad_flags_in_one_line_before_training(capsys, args, message):
    code, out, err = main(capsys, "train", *args)
    assert code == 2 and message in err, err
    assert err.count("\n") == 1 and err.startswith("fnnet train: error: ") and out == ""  # nothing ran


def test_train_text_checks_gradients_learns_characters_samples_and_resumes(capsys, tmp_path):
    """--data text: a small causal Transformer on windows of 32 characters beats the add-one
    unigram baseline of the test text, which is the text's last 10% in order (no window of it in
    training); it samples from "The "; its checkpoint resumes, and fnnet predict refuses it."""
    from fnnet import text

    spec = "embed:16,pos,transformer:2:causal=true,layernorm,dense:104"
    args = ["train", "--data", "text", "--context", "32", "--layers", spec, "--schedule", "constant", "--save",
            str(tmp_path), "--json"]
    code, out, err = main(capsys, *args, "--epochs", "1")
    assert code == 0, err
    results = json.loads(out)
    assert results["gradcheck_ok"] and results["in_shape"] == [32] and results["epochs"] == 1
    assert "gradient check (4 examples, float64): PASS" in err
    corpus = text.python_docs(held_out=0.15)
    test_ids = corpus.held_out[round(len(corpus.held_out) / 3):]  # the last 10% of 15%
    counts = np.bincount(corpus.train, minlength=corpus.vocab)
    unigram = -np.log2((counts[test_ids] + 1) / (counts.sum() + corpus.vocab)).mean()
    test = results["test"]
    assert test["bits_per_char"] == pytest.approx(test["loss"] / np.log(2)) and test["bits_per_char"] < unigram
    assert results["sample"].startswith("The ") and len(results["sample"]) == 4 + 200
    code, out, err = main(capsys, "train", "--resume", str(tmp_path), "--epochs", "2", "--json",
                          "--no-gradcheck")
    assert code == 0 and "resumed from" in err and json.loads(out)["epochs"] == 2, err
    (tmp_path / "rows.csv").write_text("1,2\n")
    code, _, err = main(capsys, "predict", "--checkpoint", str(tmp_path / "latest.fnnet"), "--data",
                        str(tmp_path / "rows.csv"))
    assert code == 2 and "a language model of fnnet train --data text; fnnet predict reads rows" in err


def test_train_save_refuses_an_unwritable_directory_before_training(capsys, tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root writes into read-only directories (the /proc cases above cover it)")
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    code, out, err = main(capsys, "train", "--data", "xor", "--save", str(locked))
    assert code == 2 and f"--save {locked}: cannot write there" in err and out == ""


def test_train_save_keeps_an_earlier_run(capsys, tmp_path):
    common = ["train", "--data", "xor", "--hidden", "4", "--epochs", "2", "--save", str(tmp_path)]
    assert main(capsys, *common)[0] == 0
    before = (tmp_path / "latest.fnnet").read_bytes()
    code, out, err = main(capsys, *common)
    assert code == 2 and f"{tmp_path / 'latest.fnnet'} holds an earlier run; continue it with --resume" in err
    assert (tmp_path / "latest.fnnet").read_bytes() == before and out == ""


MOONS = ["--data", "moons", "--hidden", "8", "--batch-size", "32", "--lr", "1e-2", "--optimizer", "momentum",
         "--weight-decay", "1e-3", "--seed", "3", "--no-gradcheck"]


def _leaves_equal(a, b):
    import jax

    return all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))


def test_train_resume_alone_restores_the_run_and_extends_it_bit_identically(capsys, tmp_path):
    import fnnet as lib

    straight, part = tmp_path / "straight", tmp_path / "part"
    assert main(capsys, "train", *MOONS, "--epochs", "12", "--save", str(straight))[0] == 0
    assert main(capsys, "train", *MOONS, "--epochs", "6", "--save", str(part))[0] == 0
    code, out, err = main(capsys, "train", "--resume", str(part), "--epochs", "12")  # no other flag
    assert code == 0 and f"resumed from {part / 'latest.fnnet'} at epoch 6" in out, err
    a, b = lib.load(straight / "latest.fnnet"), lib.load(part / "latest.fnnet")  # saved in part: the default
    assert _leaves_equal(a.params, b.params) and a.metadata["history"] == b.metadata["history"]
    assert b.metadata["epoch"] == b.metadata["run"]["flags"]["epochs"] == 12 and b.metadata["run"]["horizon"] == 6
    assert (straight / "best.fnnet").exists()
    # A flag that repeats the run's own value is fine; one that contradicts it is refused by name.
    assert main(capsys, "train", "--resume", str(part / "latest.fnnet"), "--epochs", "14", "--lr", "1e-2",
                "--save", str(tmp_path / "more"))[0] == 0
    for flag, value, saved in [("--lr", "0.1", "0.01"), ("--hidden", "16", "8"), ("--seed", "0", "3"),
                               ("--weight-decay", "0.0", "0.001"), ("--data", "circles", "moons")]:
        code, _, err = main(capsys, "train", "--resume", str(part), "--epochs", "20", flag, value)
        assert code == 2 and (f"{flag} {value} contradicts {part / 'latest.fnnet'}, trained with {flag} {saved}; "
                              f"a resumed run keeps its configuration") in err, err


def test_train_resume_keeps_the_schedule_horizon(capsys, tmp_path):
    import fnnet as lib

    run = ["train", "--data", "moons", "--hidden", "4", "--schedule", "cosine", "--warmup", "1", "--no-gradcheck"]
    assert main(capsys, *run, "--epochs", "4", "--save", str(tmp_path / "a"))[0] == 0
    code, _, err = main(capsys, "train", "--resume", str(tmp_path / "a"), "--epochs", "8")
    assert code == 2 and "--epochs 8 runs past the end of the cosine schedule" in err and "(epoch 4," in err
    assert lib.load(tmp_path / "a" / "latest.fnnet").metadata["run"]["horizon"] == 4


def test_train_resume_errors(capsys, tmp_path):
    import fnnet as lib

    assert main(capsys, "train", "--data", "xor", "--hidden", "4", "--epochs", "2", "--save", str(tmp_path))[0] == 0
    code, _, err = main(capsys, "train", "--resume", str(tmp_path), "--epochs", "2")
    assert code == 2 and "is already at epoch 2 ≥ --epochs 2: pass a larger --epochs" in err
    ckpt = lib.load(tmp_path / "latest.fnnet")
    lib.save(tmp_path / "plain.fnnet", ckpt.params, net=ckpt.net)  # from Python: no run in it
    code, _, err = main(capsys, "train", "--resume", str(tmp_path / "plain.fnnet"))
    assert code == 2 and "holds no run configuration (it was not written by fnnet train)" in err


def test_train_checkpoint_is_self_contained(capsys, tmp_path):
    import jax

    import fnnet as lib

    assert main(capsys, "train", *MOONS, "--epochs", "2", "--save", str(tmp_path))[0] == 0
    run = lib.load(tmp_path / "latest.fnnet").metadata["run"]
    assert run["flags"]["optimizer"] == "momentum" and run["resolved"]["weight_decay"] == 1e-3
    assert run["resolved"]["loss"] == "sigmoid_binary_cross_entropy" and run["horizon"] == 2
    assert run["data"] == {"source": "moons", "task": "classification", "n": 200, "d": 2, "n_classes": 2,
                           "classes": None, "features": None, "sha256": None}
    # The standardisation is the training rows' own: recompute it from the split the run made.
    k_data, k_split, _, _ = jax.random.split(jax.random.key(3), 4)
    data = lib.datasets.load("moons", k_data)
    k_test, k_val = jax.random.split(k_split)
    rest, _ = lib.datasets.split(data, k_test, 0.2)
    (X_train, _), _ = lib.datasets.split(rest, k_val, 0.1 / 0.8)
    np.testing.assert_allclose(run["mean"], np.mean(X_train, 0), rtol=1e-6)
    np.testing.assert_allclose(run["std"], np.std(X_train, 0), rtol=1e-5)


def test_train_monitors_and_selects_on_validation_and_touches_the_test_set_once(capsys, tmp_path, monkeypatch):
    import fnnet as lib

    seen, evaluated = [], []
    fit, evaluate = cli.train.fit, cli.train.evaluate
    monkeypatch.setattr(cli.train, "fit", lambda *a, validation, **k: seen.append(len(validation[0])) or
                        fit(*a, validation=validation, **k))
    monkeypatch.setattr(cli.train, "evaluate", lambda net, p, data, loss, **k: evaluated.append(len(data[0])) or
                        evaluate(net, p, data, loss, **k))
    code, out, err = main(capsys, "train", *MOONS, "--epochs", "40", "--log-every", "4", "--json",
                          "--save", str(tmp_path))
    results = json.loads(out)
    assert code == 0 and set(seen) == {20} and evaluated == [140, 20, 40]  # test (40 rows): once, at the end
    best = lib.load(tmp_path / "best.fnnet")
    assert best.metadata["epoch"] == results["selected_epoch"] == best.metadata["best"]["epoch"]
    chunk_ends = np.asarray(best.metadata["history"]["val_loss"])[3::4]
    assert results["selected_epoch"] == 4 * (1 + int(np.argmin(chunk_ends)))  # lowest validation loss
    np.testing.assert_allclose(results["validation"]["loss"], best.metadata["best"]["val_loss"], rtol=1e-5)


def test_train_patience_stops_early(capsys):
    code, out, err = main(capsys, "train", *MOONS, "--lr", "0.3", "--epochs", "400", "--log-every", "5",
                          "--patience", "20", "--json")
    results = json.loads(out)
    stopped = results["stopped_early_at"]
    assert code == 0 and stopped is not None and stopped < 400, err
    assert stopped - results["selected_epoch"] >= 20 and stopped % 5 == 0
    assert f"stopped early at epoch {stopped}: the validation loss has not improved for" in err


def test_default_batch_divides_the_training_set_and_a_batch_that_drops_rows_is_announced(capsys):
    assert [cli.train._default_batch(n, 1) for n in (40, 160, 159, 157, 1258)] == [40, 40, 53, 64, 37]
    assert cli.train._default_batch(160, 8) == 40 and cli.train._default_batch(157, 8) == 64
    code, _, err = main(capsys, "train", "--data", "moons", "--hidden", "4", "--epochs", "1", "--batch-size", "50")
    assert code == 0 and "note: batch size 50 leaves 40 of the 140 training rows out of each epoch" in err
    code, _, err = main(capsys, "train", "--data", "moons", "--hidden", "4", "--epochs", "1", "--batch-size", "35")
    assert code == 0 and "note:" not in err


def test_optimizer_schedule_and_weight_decay():
    import jax
    import jax.numpy as jnp

    flags = cli.train.DEFAULTS | {"optimizer": "sgd", "lr": 0.5, "schedule": "cosine", "warmup": 1}
    params = [{"W": jnp.ones((2, 2)), "b": jnp.ones(2)}]
    zero = jax.tree.map(jnp.zeros_like, params)
    grads = jax.tree.map(jnp.ones_like, params)

    def rates(optimizer, steps):  # the learning rate of each step, from an update with gradient 1
        state, out = optimizer.init(params), []
        for _ in range(steps):
            update, state = optimizer.update(grads, state, params)
            out.append(-float(update[0]["b"][0]))
        return np.array(out)

    lr = rates(cli.train._optimizer(flags, 0.0, steps=2, horizon=4), 10)  # 2 steps per epoch: warm-up 2 steps
    np.testing.assert_allclose(lr[:3], [0.0, 0.25, 0.5], atol=1e-7)  # linear warm-up to the peak
    assert np.all(np.diff(lr[2:8]) < 0) and abs(lr[8]) < 1e-7 and abs(lr[9]) < 1e-7  # cosine to 0 at epoch 4
    constant = rates(cli.train._optimizer(cli.train.DEFAULTS | {"optimizer": "sgd", "lr": 0.5}, 0.0, 2, 4), 3)
    np.testing.assert_allclose(constant, 0.5)
    for name in ("sgd", "adam", "adamw"):  # decay: the weights only, never the biases
        optimizer = cli.train._optimizer(cli.train.DEFAULTS | {"optimizer": name, "lr": 0.1}, 0.01, 1, 1)
        update, _ = optimizer.update(zero, optimizer.init(params), params)
        assert float(update[0]["b"][0]) == 0 and float(update[0]["W"][0, 0]) < 0, name


def test_train_without_gradcheck_and_divergence_speaks_to_the_shell(capsys, tmp_path):
    import jax

    import fnnet as lib

    # sgd lr 300 on moons overflows the logits a few epochs in; with 20 epochs every epoch is saved.
    code, out, err = main(capsys, "train", "--data", "moons", "--hidden", "8", "--epochs", "20", "--batch-size",
                          "32", "--optimizer", "sgd", "--lr", "300", "--save", str(tmp_path), "--no-gradcheck")
    assert code == 1, err
    assert "gradient check skipped (--no-gradcheck)" in out and "gradient check (" not in out
    epoch = int(re.search(r"fnnet train: training diverged: the loss or the parameters became non-finite at "
                          r"epoch (\d+), step \d+; try a lower --lr \(now 300.0\)", err).group(1))
    assert ".params" not in err and "Traceback" not in err
    assert epoch >= 1 and f"the last good checkpoint is {tmp_path / 'latest.fnnet'} (epoch {epoch})" in err
    ckpt = lib.load(tmp_path / "latest.fnnet")
    assert ckpt.metadata["epoch"] == epoch and len(ckpt.metadata["history"]["loss"]) == epoch
    assert all(np.isfinite(leaf).all() for leaf in jax.tree.leaves((ckpt.params, ckpt.opt_state)))
    # Diverging before the first save says there is no checkpoint rather than pointing at none.
    code, _, err = main(capsys, "train", "--data", "moons", "--hidden", "8", "--epochs", "1", "--batch-size", "32",
                        "--optimizer", "sgd", "--lr", "1e30", "--save", str(tmp_path / "fresh"))
    assert code == 1 and "no checkpoint was saved before it" in err, err


def test_train_plot_without_matplotlib_fails_before_training():
    code = ("import sys; sys.modules['matplotlib'] = None\n"  # as if not installed
            "import fnnet.cli as cli; sys.exit(cli.main(sys.argv[1:]))\n")
    result = fnnet("train", "--data", "xor", "--plot", "curves.png", code=code)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr == "fnnet train: error: --plot needs matplotlib: pip install 'fnnet[plot]'\n"


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_is_a_tqdm_bar_that_fits_the_terminal(monkeypatch):
    from fnnet.cli.progress import Progress

    monkeypatch.setenv("COLUMNS", "80")
    history = {"loss": np.array([0.123456]), "val_loss": np.array([0.2]), "val_accuracy": np.array([0.96])}
    terminal = _Terminal()
    progress = Progress(0, 100, stream=terminal)
    assert "compiling" in terminal.getvalue()  # shown before the first chunk, which compiles
    for epoch in (5, 10, 100):
        progress.update(epoch, history)
    progress.close()
    frames = [f for f in re.split(r"[\r\n]", terminal.getvalue()) if f.strip()]
    assert max(len(f) for f in frames) <= 80 and "100/100" in frames[-1]
    assert re.search(r"\[\d\d:\d\d<\d\d:\d\d, +[\d.]+ep/s, loss 0.123 val 0.2 acc 0.96\]", frames[-1]), frames[-1]
    # Without tqdm a terminal gets plain lines too.
    monkeypatch.setitem(sys.modules, "tqdm", None)
    terminal = _Terminal()
    progress = Progress(0, 100, stream=terminal)
    progress.update(5, history)
    assert terminal.getvalue().splitlines()[1].startswith("epoch 5/100  loss 0.1235  val_loss 0.2  val_acc 0.96  (")


def test_predict_maps_labels_back_to_the_training_names(capsys, tmp_path):
    import jax

    import fnnet as lib

    rng = np.random.default_rng(0)
    names = np.array(["cat", "dog", "emu"])
    X = rng.normal(size=(150, 2)) + 4 * np.repeat(np.eye(3, 2), 50, axis=0)
    y = names[np.repeat(np.arange(3), 50)]
    rows = [f"{a:.4f};{b:.4f};{label}" for (a, b), label in zip(X, y)]
    (tmp_path / "train.csv").write_text("height;weight;animal\n" + "\n".join(rows) + "\n")
    (tmp_path / "new.csv").write_text("height;weight\n" + "\n".join(r.rsplit(";", 1)[0] for r in rows[::10]))
    (tmp_path / "labelled.csv").write_text("height;weight;animal\n" + "\n".join(rows[::10]))
    code, _, err = main(capsys, "train", "--data", str(tmp_path / "train.csv"), "--hidden", "8", "--epochs", "30",
                        "--lr", "1e-2", "--save", str(tmp_path / "run"))
    assert code == 0, err
    code, out, err = main(capsys, "predict", "--checkpoint", str(tmp_path / "run" / "best.fnnet"),
                          "--data", str(tmp_path / "new.csv"))
    assert code == 0 and len(out.splitlines()) == 15 and set(out.split()) <= set(names), err
    assert np.mean(np.array(out.split()) == y[::10]) >= 0.9  # separable blobs
    # Exactly the library's predictions on the checkpoint's standardisation of the raw rows.
    ckpt = lib.load(tmp_path / "run" / "best.fnnet")
    run = ckpt.metadata["run"]
    assert run["data"]["classes"] == ["cat", "dog", "emu"] and run["data"]["features"] == ["height", "weight"]
    expected = lib.predict(ckpt.net, ckpt.params, (X[::10].round(4) - run["mean"][None]) / run["std"][None],
                           loss=run["resolved"]["loss"], output="labels")
    assert out.split() == list(names[expected])
    code, out, err = main(capsys, "predict", "--checkpoint", str(tmp_path / "run" / "best.fnnet"),
                          "--data", str(tmp_path / "labelled.csv"), "--json")
    rows = json.loads(out)
    assert code == 0 and [r["label"] for r in rows] == list(names[expected])
    assert all(set(r["probabilities"]) == set(names) and abs(sum(r["probabilities"].values()) - 1) < 1e-5
               for r in rows)
    assert re.search(r"labelled.csv: 15 labelled rows: loss \S+, accuracy \S+", err)
    # Bad input names what is wrong.
    (tmp_path / "wide.csv").write_text("1,2,3,4\n")
    (tmp_path / "renamed.csv").write_text("height;mass\n1;2\n")
    (tmp_path / "unknown.csv").write_text("1;2;gnu\n")
    for data, message in [("wide.csv", "rows have 4 columns; expected 2 features, then optionally the label"),
                          ("renamed.csv", "column 2 is 'mass'; the checkpoint was trained with 'weight' there"),
                          ("unknown.csv", "label 'gnu' was not a class in training (classes cat, dog, emu)")]:
        code, _, err = main(capsys, "predict", "--checkpoint", str(tmp_path / "run" / "best.fnnet"),
                            "--data", str(tmp_path / data))
        assert code == 2 and message in err and err.count("\n") == 1, err
    lib.save(tmp_path / "plain.fnnet", ckpt.params, net=ckpt.net)
    code, _, err = main(capsys, "predict", "--checkpoint", str(tmp_path / "plain.fnnet"),
                        "--data", str(tmp_path / "new.csv"))
    assert code == 2 and "no run description in it (it was not written by fnnet train --save)" in err


def test_train_and_predict_regression_targets_from_csv(capsys, tmp_path):
    rng = np.random.default_rng(1)
    X = rng.uniform(size=(200, 2))
    t = 3 * X[:, 0] - 2 * X[:, 1] + 0.5
    np.savetxt(tmp_path / "reg.csv", np.c_[X, t], delimiter=",", header="a,b,target", comments="")
    code, out, err = main(capsys, "train", "--data", str(tmp_path / "reg.csv"), "--loss", "mse", "--hidden", "16",
                          "--epochs", "60", "--lr", "1e-2", "--json", "--save", str(tmp_path / "run"))
    results = json.loads(out)
    assert code == 0 and set(results["test"]) == {"loss"} and results["test"]["loss"] < 0.05, err
    code, out, _ = main(capsys, "predict", "--checkpoint", str(tmp_path / "run" / "best.fnnet"),
                        "--data", str(tmp_path / "reg.csv"))
    assert code == 0 and np.abs(np.array(out.split(), float) - t).mean() < 0.2


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
        ("x0,x1,label\n0.5,1.0,0\n0.1,nan,1\n", r"X has 1 non-finite values \(the first at row 3, column 2 \('x1'\): nan\)"),
        ("0.5,1.0,0\n0.1,inf,1\n", r"the first at row 2, column 2: inf"),
        ("0.5,1.0,0\n0.1,0.2,1.5\n", r"row 2, column 3: label '1.5' is not a whole number"),
        ("0.5,1.0,0\n0.1,0.2\n", r"data.csv: row 2 has 2 columns; expected 3, like row 1"),
        ("", r"data.csv: the file is empty"),
    ],
    ids=["nan", "inf", "fractional-label", "ragged", "empty"],
)
def test_train_rejects_bad_data_files(capsys, tmp_path, content, message):
    (tmp_path / "data.csv").write_text(content)
    code, out, err = main(capsys, "train", "--data", str(tmp_path / "data.csv"))
    assert code == 2 and re.search(message, err) and err.count("\n") == 1 and out == "", err


# ---------- --layers: the network as a spec ----------


@pytest.mark.parametrize("text,expected,images", [
    ("conv:16:3", lambda L: [L.Conv2D(16, 3)], True),
    ("CONV:8:3x1:Tanh:stride=2:padding=valid:dilation=2:groups=2",
     lambda L: [L.Conv2D(8, (3, 1), stride=2, padding="VALID", dilation=2, groups=2, activation="tanh")], True),
    ("conv:8:3:act=relu:groups=4", lambda L: [L.Conv2D(8, 3, activation="relu", groups=4)], True),
    ("dense:10", lambda L: [L.Dense(10)], False),
    ("dense:10:relu", lambda L: [L.Dense(10, "relu")], False),
    ("maxpool:2", lambda L: [L.MaxPool2D(2)], True),
    ("maxpool:3:2:same", lambda L: [L.MaxPool2D(3, 2, "SAME")], True),
    ("avgpool:2x1:stride=1", lambda L: [L.AvgPool2D((2, 1), 1)], True),
    ("gap,globalavgpool", lambda L: [L.GlobalAvgPool2D()] * 2, True),
    ("flatten,dense:3", lambda L: [L.Flatten(), L.Dense(3)], False),
    ("reshape:8:8:-1,conv:4:3", lambda L: [L.Reshape((8, 8, -1)), L.Conv2D(4, 3)], False),  # rows made images
    ("bn,batchnorm:0.01:eps=1e-3,conv:4:3", lambda L: [L.BatchNorm(), L.BatchNorm(0.01, 1e-3), L.Conv2D(4, 3)], True),
    ("layernorm,ln:axis=-2:eps=1e-6", lambda L: [L.LayerNorm(), L.LayerNorm(-2, 1e-6)], False),
    ("dropout:0.25", lambda L: [L.Dropout(0.25)], False),
    ("relu,gelu_exact,swish,linear", lambda L: [L.Activation(a) for a in ("relu", "gelu_exact", "silu", "identity")],
     False),
    ("res(relu)", lambda L: [L.Residual(L.Activation("relu"))], False),
    ("res(conv:4:3,bn,relu)",
     lambda L: [L.Residual(L.Sequential(L.Conv2D(4, 3), L.BatchNorm(), L.Activation("relu")))], True),
    ("res(conv:4:3:stride=2|conv:4:1:stride=2)", lambda L: [L.Residual(L.Conv2D(4, 3, stride=2),
                                                                       L.Conv2D(4, 1, stride=2))], True),
    ("seq(relu,res(dense:4:tanh,seq(relu,dropout:0.5)|dense:4))",
     lambda L: [L.Sequential(L.Activation("relu"), L.Residual(
         L.Sequential(L.Dense(4, "tanh"), L.Sequential(L.Activation("relu"), L.Dropout(0.5))), L.Dense(4)))], False),
    (" conv:4:3 ,\n relu\t, gap ", lambda L: [L.Conv2D(4, 3), L.Activation("relu"), L.GlobalAvgPool2D()], True),
])
def test_layers_spec_builds_every_layer_and_nests(text, expected, images):
    import fnnet as lib
    from fnnet.cli import spec

    items = spec.parse(text)
    assert [item.layer for item in items] == expected(lib)
    assert spec.wants_images(items) is images


@pytest.mark.parametrize("text,message", [
    ("  ", "--layers is empty; expected layers separated by commas, e.g. --layers conv:16:3:relu,maxpool:2,"
           "flatten,dense:10"),
    ("conv", "--layers item 1 'conv': conv needs n_out and kernel, e.g. conv:16:3"),
    ("relu,conv:16", "--layers item 2 'conv:16': conv needs kernel, e.g. conv:16:3"),
    ("conv:x:3", "--layers item 1 'conv:x:3': n_out must be an int ≥ 1, got 'x'"),
    ("conv:8:0", "--layers item 1 'conv:8:0': kernel must be an int ≥ 1 or rows×columns like 3x1, got '0'"),
    ("conv:8:3:2", "--layers item 1 'conv:8:3:2': act must be an activation: identity, relu, leaky_relu, elu, "
                   "sigmoid, tanh, softplus, silu, gelu, gelu_exact, got '2'"),
    ("conv:16:3:strid=2", "--layers item 1 'conv:16:3:strid=2': unknown argument 'strid'; conv takes n_out, "
                          "kernel, act, stride, padding, dilation, groups"),
    ("conv:16:3:stride=2:relu", "--layers item 1 'conv:16:3:stride=2:relu': 'relu' by position after an "
                                "argument by name; name it too (conv takes n_out, kernel, act, stride, "),
    ("conv:16:3:padding=full", "--layers item 1 'conv:16:3:padding=full': padding must be same or valid, got 'full'"),
    ("dense:10:relu:act=tanh", "--layers item 1 'dense:10:relu:act=tanh': act given twice"),
    ("dense:10:relu:3", "--layers item 1 'dense:10:relu:3': too many arguments (3); dense takes n_out, act"),
    ("gap:3", "--layers item 1 'gap:3': too many arguments (1); gap takes no arguments"),
    ("relu:2", "--layers item 1 'relu:2': the activation relu takes no arguments; write relu alone"),
    ("dense:8,maxpol:2", "--layers item 2 'maxpol:2': unknown layer 'maxpol' (did you mean maxpool?); expected "
                         "one of conv, dense, maxpool, avgpool, gap, flatten, reshape, bn, layernorm, dropout, "
                         "embed, pos, transformer, mha, lstm, gru, rnn, res(...), seq(...), or an activation "
                         "(identity, relu, "),
    ("dense:10,,relu", "--layers item 2 '': an empty item; expected a layer between the commas (a doubled or "
                       "trailing comma?)"),
    ("dense:10,", "--layers item 2 '': an empty item"),
    ("dropout", "--layers item 1 'dropout': dropout needs rate, e.g. dropout:0.1"),
    ("dropout:1.5", "--layers item 1 'dropout:1.5': rate must be a number in [0, 1), the probability of "
                    "dropping each element"),  # the layer's own check, without its repr
    ("bn:momentum=2", "--layers item 1 'bn:momentum=2': momentum must be a number in [0, 1]"),
    ("reshape", "--layers item 1 'reshape': reshape needs a shape, e.g. reshape:8:8:1"),
    ("reshape:8:x", "--layers item 1 'reshape:8:x': each dimension must be an int ≥ 1, or -1 for the rest, got 'x'"),
    ("relu,res(conv:8:3", "--layers item 2 'res(conv:8:3': '(' is never closed; expected ')' after the block"),
    ("relu)", "--layers item 1 'relu)': ')' closes no '('; expected res(...) or seq(...) around a block"),
    ("foo(relu)", "--layers item 1 'foo(relu)': only res(...) and seq(...) take parentheses, with nothing "
                  "after the ')'; e.g. res(conv:16:3,bn,relu)"),
    ("res(relu)x", "--layers item 1 'res(relu)x': only res(...) and seq(...) take parentheses"),
    ("res(relu|relu|relu)", "--layers item 1 'res(relu|relu|relu)': '|' separates res's block from its "
                            "shortcut, once: res(block|shortcut)"),
    ("seq(relu|relu)", "--layers item 1 'seq(relu|relu)': seq(...) takes no '|'; a shortcut belongs in "
                       "res(block|shortcut)"),
    ("res()", "--layers item 1 'res()': an empty block; expected layers inside, e.g. res(conv:16:3,bn,relu)"),
    ("res(relu|)", "--layers item 1 'res(relu|)': an empty shortcut; expected layers inside"),
    ("relu|tanh", "--layers item 1 'relu|tanh': '|' separates a block from its shortcut inside res(...)"),
    ("relu,res(conv:8:3,bnn)", "--layers item 2.2 'bnn': unknown layer 'bnn' (did you mean bn?)"),
    ("res(relu,seq(tanh,dense:0))", "--layers item 1.2.2 'dense:0': n_out must be an int ≥ 1, got '0'"),
    ("res(relu|relu,dense:x)", "--layers item 1|2 'dense:x': n_out must be an int ≥ 1, got 'x'"),
])
def test_layers_spec_errors_name_the_item_and_what_was_expected(text, message):
    from fnnet.cli import spec

    with pytest.raises(ValueError, match="^" + re.escape(message)):
        spec.parse(text)


@pytest.mark.parametrize("text,in_shape,message", [
    ("conv:8:3:groups=3", (8, 8, 1), "--layers item 1 'conv:8:3:groups=3': n_out=8 is not divisible by groups=3"),
    ("maxpool:2,maxpool:9", (8, 8, 1), "--layers item 2 'maxpool:9': the window spans 9 pixels along the height, "
                                       "more than the input's 4"),
    ("conv:8:3,res(conv:8:3,maxpool:9)", (8, 8, 1), "--layers item 2.2 'maxpool:9': the window spans 9 pixels"),
    ("res(relu|conv:8:3,dense:3)", (8, 8, 8), "--layers item 1|2 'dense:3': expects flat rows (n,) per example but "
                                              "gets (8, 8, 8); put flatten or gap before it"),
    ("res(conv:8:3)", (8, 8, 1), "--layers item 1 'res(conv:8:3)': the block maps (8, 8, 1) to (8, 8, 8) but the "
                                 "shortcut to (8, 8, 1); the two are added, so they must match"),
    ("dense:10,conv:8:3", (64,), "--layers item 2 'conv:8:3': expects images (H, W, C) per example but gets flat "
                                 "rows (10,); put reshape:H:W:C before it (e.g. reshape:8:8:1 for 8×8 pixels)"),
    ("reshape:7:7:1", (64,), "--layers item 1 'reshape:7:7:1': cannot reshape examples of shape (64,) (64 elements) "
                             "to (7, 7, 1), which needs 49 elements"),
    ("ln:axis=3", (8, 8, 1), "--layers item 1 'ln:axis=3': axis 3 is out of range for examples of shape (8, 8, 1)"),
])
def test_layers_spec_shape_errors_name_the_innermost_item(text, in_shape, message):
    from fnnet.cli import spec

    with pytest.raises(ValueError, match="^" + re.escape(message)):
        spec.network(spec.parse(text), in_shape)


def test_layers_locate_maps_layer_paths_back_to_items():
    from fnnet.cli import spec

    items = spec.parse("conv:4:3,res(conv:4:3,relu|conv:4:1),seq(relu,seq(tanh,bn)),res(relu)")
    where = {path: getattr(spec.locate(items, path), "where", None)
             for path in ["[0]", "[1]['block'][0]", "[1]['shortcut']", "[2][1][1]", "[2][1]", "[3]['block']",
                          "[9]", "[0]['block']", "[1]['block']"]}
    assert where == {"[0]": "1", "[1]['block'][0]": "2.1", "[1]['shortcut']": "2|1", "[2][1][1]": "3.2.2",
                     "[2][1]": "3.2", "[3]['block']": "4.1", "[9]": None, "[0]['block']": None,
                     "[1]['block']": "2"}  # the block of several items: the res item that holds them


CONV = "conv:8:3,bn,relu,maxpool:2,flatten,dense:10"


def test_train_conv_spec_on_digits_images_with_batchnorm_then_predict(capsys, tmp_path):
    import fnnet as lib

    code, out, err = main(capsys, "train", "--data", "digits", "--layers", CONV, "--epochs", "3", "--lr", "3e-3",
                          "--no-gradcheck", "--json", "--save", str(tmp_path / "run"))
    results = json.loads(out)
    assert code == 0, err
    assert results["layers"] == CONV and results["sizes"] is None and results["in_shape"] == [8, 8, 1]
    assert results["test"]["accuracy"] >= 0.85, results  # 3 epochs of a small CNN
    summary = err.split("\ndigits: ")[0].splitlines()  # the model summary comes first
    assert summary[1].split() == ["input", "(8,", "8,", "1)"] and summary[-1] == "1,386 parameters"
    assert [line.split()[1].split("(")[0] for line in summary[2:-1]] == [
        "Conv2D", "BatchNorm", "Activation", "MaxPool2D", "Flatten", "Dense"]
    # Both checkpoints carry BatchNorm's running statistics, moved away from their start.
    ckpt = lib.load(tmp_path / "run" / "best.fnnet")
    latest = lib.load(tmp_path / "run" / "latest.fnnet")
    assert ckpt.net.in_shape == (8, 8, 1) and latest.state is not None and ckpt.state is not None
    assert not np.allclose(ckpt.state[1]["mean"], 0) and not np.allclose(ckpt.state[1]["var"], 1)
    # fnnet predict reads rows of 64 pixels, standardises them, shapes them (8, 8, 1), uses the state.
    data = lib.datasets.digits()
    X, y = np.asarray(data.X)[:60], np.asarray(data.y)[:60]
    np.savetxt(tmp_path / "rows.csv", np.c_[X, y], delimiter=",", fmt="%g")
    code, out, err = main(capsys, "predict", "--checkpoint", str(tmp_path / "run" / "best.fnnet"),
                          "--data", str(tmp_path / "rows.csv"))
    assert code == 0, err
    run = ckpt.metadata["run"]
    images = ((X - run["mean"][None]) / run["std"][None]).reshape(-1, 8, 8, 1)
    expected = lib.predict(ckpt.net, ckpt.params, images, loss=run["resolved"]["loss"], output="labels",
                           state=ckpt.state)
    assert out.split() == [str(k) for k in expected] and np.mean(expected == y) >= 0.85
    fresh = lib.predict(ckpt.net, ckpt.params, images, state=ckpt.net.init_state())
    assert not np.allclose(fresh, lib.predict(ckpt.net, ckpt.params, images, state=ckpt.state))  # the state counts
    assert re.search(r"rows.csv: 60 labelled rows: loss \S+, accuracy \S+", err)


BN_DROPOUT = "dense:16,bn,relu,dropout:0.2,dense:1"


def test_train_batchnorm_and_dropout_spec_resumes_bit_identically(capsys, tmp_path):
    import fnnet as lib

    (tmp_path / "spec.txt").write_text("# a spec file: newlines and comments are fine\n"
                                       "dense:16, bn, relu,   # normalised hidden layer\n"
                                       "dropout:0.2,\n"
                                       "dense:1\n")
    common = ["train", "--data", "moons", "--batch-size", "32", "--lr", "1e-2", "--seed", "3", "--no-gradcheck"]
    straight, part = tmp_path / "straight", tmp_path / "part"
    assert main(capsys, *common, "--layers", BN_DROPOUT, "--epochs", "4", "--save", str(straight))[0] == 0
    assert main(capsys, *common, "--layers", f"@{tmp_path / 'spec.txt'}", "--epochs", "2", "--save", str(part))[0] == 0
    code, out, err = main(capsys, "train", "--resume", str(part), "--epochs", "4")
    assert code == 0 and f"resumed from {part / 'latest.fnnet'} at epoch 2" in out, err
    a, b = lib.load(straight / "latest.fnnet"), lib.load(part / "latest.fnnet")
    assert b.metadata["run"]["flags"]["layers"] == BN_DROPOUT  # the file's spec, as text, in the checkpoint
    assert _leaves_equal(a.params, b.params) and _leaves_equal(a.state, b.state)  # dropout keys from the seed
    assert a.metadata["history"] == b.metadata["history"]
    assert not np.allclose(b.state[1]["mean"], 0)
    best_a, best_b = lib.load(straight / "best.fnnet"), lib.load(part / "best.fnnet")  # best.fnnet keeps it too
    assert best_a.metadata["epoch"] == best_b.metadata["epoch"] and _leaves_equal(best_a.state, best_b.state)
    # Contradicting the spec is refused by name, as any other flag.
    code, _, err = main(capsys, "train", "--resume", str(part), "--epochs", "6", "--layers", "dense:1")
    assert code == 2 and (f"--layers dense:1 contradicts {part / 'latest.fnnet'}, trained with --layers "
                          f"{BN_DROPOUT}") in err


def test_gradcheck_layers_prints_the_summary_and_names_the_broken_layer(capsys, monkeypatch):
    from fnnet.layers import dense

    right = dense.Dense.backward

    def wrong(self, params, cache, da):  # a backward that doubles dx
        dparams, dx = right(self, params, cache, da)
        return dparams, 2 * dx

    monkeypatch.setattr(dense.Dense, "backward", wrong)
    # A network no other test compiles (backprop is jitted per network: no stale program to reuse).
    code, out, _ = main(capsys, "gradcheck", "--layers", "dense:3:tanh,res(dense:3,relu),dense:2",
                        "--in-shape", "5", "--batch", "3")
    lines = out.splitlines()
    assert code == 1
    assert lines[0].split() == ["#", "layer", "output", "shape", "params"]  # the model summary first
    assert lines[1].split() == ["input", "(5,)"] and lines[4].split()[0] == "1.block"
    assert lines[-2].startswith("gradient mismatch at [0]['W']") and "dx differs from jax.vjp" in lines[-2]
    assert "; the broken layer: layer [0] Dense(" in lines[-2]  # by its path in the summary
    assert lines[-1] == "the broken layer is --layers item 1 'dense:3:tanh'"


class _FailedCheck:
    """A failed gradient check whose layer check blames the layer at `path`: what the commands print."""

    ok = False
    message = "gradient mismatch at [0]['W']; the broken layer: layer [2] Dense(...): dx differs"

    def __init__(self, path):
        from types import SimpleNamespace

        self.layers = SimpleNamespace(culprit=SimpleNamespace(path=path))

    def __str__(self):
        return self.message

    def to_dict(self):
        return {"ok": False, "message": self.message}


def test_train_and_gradcheck_json_name_the_spec_item_of_the_broken_layer(capsys, monkeypatch):
    monkeypatch.setattr(cli.train, "check_grads", lambda *a, **k: _FailedCheck("[2]"))
    code, out, err = main(capsys, "train", "--data", "xor", "--layers", "dense:4,relu,dense:1", "--epochs", "1")
    assert code == 1 and out.splitlines()[-2:] == [_FailedCheck.message, "the broken layer is --layers item 3 "
                                                                          "'dense:1'"], err
    assert "epoch" not in err  # stopped before training
    monkeypatch.setattr(cli.gradcheck, "check_grads", lambda *a, **k: _FailedCheck("[1]['block'][0]"))
    code, out, _ = main(capsys, "gradcheck", "--layers", "dense:4,res(dense:4,relu),dense:3", "--json")
    assert code == 1 and json.loads(out) == {"ok": False, "message": _FailedCheck.message,
                                             "blame": "the broken layer is --layers item 2.1 'dense:4'"}
