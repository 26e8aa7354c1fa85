"""examples/char_lm.py in its fast mode (`--smoke`), run as a user runs it: a fresh process."""

import re
import time

import pytest

from test_examples import run


@pytest.mark.heavy
def test_char_lm_smoke_run_checks_gradients_beats_the_unigram_baseline_and_samples():
    start = time.perf_counter()
    result = run("char_lm.py", "--smoke")
    seconds = time.perf_counter() - start
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert "gradient check: PASS" in out
    baselines = re.search(r"add-one unigram ([\d.]+), add-one bigram ([\d.]+), add-0\.1 trigram ([\d.]+)", out)
    assert baselines, out
    unigram, bigram, trigram = map(float, baselines.groups())
    for got, want in ((unigram, 4.67), (bigram, 3.35), (trigram, 2.50)):
        assert abs(got - want) <= 0.05, (got, want)
    bits = float(re.search(r"^held-out: ([\d.]+) bits per character", out, re.M).group(1))
    assert bits < unigram
    sample = re.search(r"^sample \(temperature [\d.]+, prompt '([^']*)'\):\n(.*)", out, re.M | re.S)
    assert sample and sample.group(2).startswith(sample.group(1))
    assert len(sample.group(2)) >= len(sample.group(1)) + 300
    assert seconds < 90, f"the fast mode took {seconds:.0f} s"  # about 50 s on a 2-core CPU
