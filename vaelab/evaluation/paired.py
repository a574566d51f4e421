"""Paired comparison of two sets of per-point values on the same N points (e.g. two models' log p^(x_i)).

The difference of the means is the mean of the per-point differences d_i = a_i - b_i; its standard error over
points is sd(d) / sqrt(N) (the points are the sampling unit: the variation that both share, from easy and hard
points, cancels), far smaller than the two means' own se over points when a and b are correlated."""

from __future__ import annotations

import math

from torch import Tensor

from vaelab.errors import DataError
from vaelab.stats import mean_se


def against_data_density(exact: Tensor, estimate: Tensor) -> dict[str, float]:
    """A model's per-point log-likelihood `estimate` `[N]` beside the exact log p_data(x) `[N]` of the distribution
    that generated the points: `data_log_likelihood` (mean, with `_se` over points) and `gap_to_data` = mean(exact -
    estimate), paired, with its `_se`. Its expectation is KL(p_data || p_model) plus the estimator's own bias (an IS
    or ELBO lower bound makes it larger), so the best model has a gap near 0."""
    p = paired_difference(exact, estimate)
    return {
        "data_log_likelihood": p["mean_a"],
        "data_log_likelihood_se": p["se_a"],
        "gap_to_data": p["mean_diff"],
        "gap_to_data_se": p["se_diff"],
    }


def paired_difference(a: Tensor, b: Tensor) -> dict[str, float | int]:
    """The paired comparison of `a` and `b` `[N]` (the same points, in the same order), in float64: `n`, `mean_a`,
    `se_a`, `mean_b`, `se_b` (each over points), `mean_diff` = mean(a - b), `sd_diff`, `se_diff` = sd(a - b) /
    sqrt(N), `z` = mean_diff / se_diff, `frac_a_greater` (share of points with a_i > b_i) and `frac_ties`.
    Raises `DataError` for other shapes, fewer than 2 points, or a NaN or infinite value (whose mean would be)."""
    if a.dim() != 1 or a.shape != b.shape:
        raise DataError(f"a paired comparison needs two [N] tensors of the same points, got {tuple(a.shape)} and "
                        f"{tuple(b.shape)}")  # fmt: skip
    if a.numel() < 2:
        raise DataError(f"a paired comparison needs at least 2 points for its standard error, got {a.numel()}")
    a, b = a.double(), b.double()
    for name, t in (("a", a), ("b", b)):
        bad = (~t.isfinite()).nonzero().flatten()
        if bad.numel():
            raise DataError(f"{bad.numel()} of the {t.numel()} values of {name} are NaN or infinite (first at point "
                            f"{int(bad[0])}): their means would be too")  # fmt: skip
    d = a - b
    (mean_a, se_a), (mean_b, se_b), (mean_d, se_d) = mean_se(a), mean_se(b), mean_se(d)
    return {
        "n": a.numel(),
        "mean_a": mean_a,
        "se_a": se_a,
        "mean_b": mean_b,
        "se_b": se_b,
        "mean_diff": mean_d,
        "sd_diff": float(d.std()),
        "se_diff": se_d,
        "z": mean_d / se_d if se_d > 0 else math.copysign(math.inf, mean_d) if mean_d else math.nan,
        "frac_a_greater": float((d > 0).double().mean()),
        "frac_ties": float((d == 0).double().mean()),
    }
