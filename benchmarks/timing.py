"""Interleaved timing: every candidate measured in turn (A B C A B C ...), medians and spread."""

import time

import numpy as np


def interleaved(candidates: dict, repeats: int, number, settle=0.2) -> dict:
    """Seconds per call of each candidate: `{name: {"median", "min", "max", "q25", "q75", "n"}}`.
    Arguments as in `interleaved_samples`."""
    return {name: summary(s) for name, s in interleaved_samples(candidates, repeats, number, settle).items()}


def interleaved_samples(candidates: dict, repeats: int, number, settle=0.2) -> dict:
    """Seconds per call of each candidate in each round: `{name: [seconds] * repeats}`.

    Args:
      candidates: name -> a function taking no arguments that runs the work once
        and blocks until it is done (`jax.block_until_ready`).
      repeats: rounds; each round times `number` calls of every candidate in turn,
        so slow drifts of the machine (heat, other processes) hit all alike.
      number: calls per timing, to rise above the clock's resolution: an int,
        or a dict with one per candidate.
      settle: seconds to pause before each turn, which then starts with one untimed
        call. Thread pools keep spinning after a call (numpy's OpenBLAS for about
        0.1 s, XLA's a little) and steal the cores from whoever runs next: without
        the pause a JAX step measured 2× slower right after numpy, and numpy up to
        10× slower right after JAX; torch's OpenMP workers for about 0.01 s.
    """
    number = number if isinstance(number, dict) else dict.fromkeys(candidates, number)
    samples = {name: [] for name in candidates}
    for _ in range(repeats):
        for name, run in candidates.items():
            time.sleep(settle)
            run()
            start = time.perf_counter()
            for _ in range(number[name]):
                run()
            samples[name].append((time.perf_counter() - start) / number[name])
    return samples


def paired_ratio(samples, reference) -> float:
    """Median over rounds of samples[i] / reference[i]: a ratio taken within each round, where
    both ran seconds apart on the same machine, so a drift between rounds cancels."""
    return float(np.median(np.asarray(samples) / np.asarray(reference)))


def summary(samples) -> dict:
    s = np.asarray(samples)
    return {"median": float(np.median(s)), "min": float(s.min()), "max": float(s.max()),
            "q25": float(np.quantile(s, 0.25)), "q75": float(np.quantile(s, 0.75)), "n": len(s)}


def calls_per_timing(run, target_seconds=0.02) -> int:
    """How many calls of `run` take about `target_seconds` (at least 1)."""
    start = time.perf_counter()
    run()
    once = max(time.perf_counter() - start, 1e-7)
    return max(1, int(target_seconds / once))
