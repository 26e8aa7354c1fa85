"""pytest helpers for gradient code."""

from fnnet.gradcheck import GradCheckReport, check_grads


def assert_grads_close(candidate, *args, **options) -> GradCheckReport:
    """`check_grads(candidate, *args, **options)`, raising AssertionError on any mismatch.

    The error's first line names the leaf and index, e.g. "gradient mismatch at
    [1]['W'] index (2, 5): candidate 0.412, jax.grad 0.399, rel. error 1.6e-02";
    the full report follows. Returns the report when everything agrees.
    """
    report = check_grads(candidate, *args, **options)
    if not report.ok:
        raise AssertionError(f"{report.message}\n{report}")
    return report
