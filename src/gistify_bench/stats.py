"""The statistics every table of the harness and the trainers shares: bootstrap intervals over examples, and
paired differences (two ways scored on the same examples: the interval of the mean difference, which is what
tells a 0.02-nat effect from noise when the unpaired intervals are +-0.25)."""

from __future__ import annotations

import numpy as np


def interval95(values: list[float], resamples: int = 2000, seed: int = 0) -> list[float] | None:
    """95% percentile-bootstrap interval of the mean of per-example scores (0/1 accuracy, a fraction of values
    found, or a perplexity): resampling examples, the unit the tasks draw, seeded so a report is reproducible."""
    if len(values) < 2:
        return None
    x = np.asarray(values, dtype=np.float64)
    means = x[np.random.default_rng(seed).integers(0, len(x), (resamples, len(x)))].mean(axis=1)
    return [float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))]


def summary(values: list[float]) -> dict:
    """Mean, median, 95% bootstrap interval and count of per-example values."""
    return {
        "mean": round(float(np.mean(values)), 4),
        "median": round(float(np.median(values)), 4),
        "ci95": [round(x, 4) for x in interval95(values) or []],
        "n": len(values),
    }


def paired(a: list[float], b: list[float]) -> dict:
    """a - b on the same examples: the mean difference with its 95% bootstrap interval (resampling examples, so
    the pairs stay together), the share of examples where a is lower, and whether the interval excludes 0."""
    if len(a) != len(b):
        raise ValueError(f"paired values need the same examples, got {len(a)} and {len(b)}")
    d = [x - y for x, y in zip(a, b)]
    ci = interval95(d) or []
    return {
        "mean": round(float(np.mean(d)), 4),
        "ci95": [round(x, 4) for x in ci],
        "n": len(d),
        "a_lower": round(float(np.mean([x < 0 for x in d])), 3),
        "clear_of_zero": bool(ci) and (ci[0] > 0 or ci[1] < 0),
    }
