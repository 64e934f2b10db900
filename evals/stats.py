"""Do two samplers produce the same distribution of a per-sequence statistic? (scipy tests)

Exact samplers (ASSD and its variants) must match sequential decoding: large p-values are
expected; a tiny one flags a bug (or, for mean-field decoding, the expected quality loss).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np

TESTS = ("t_test_paired", "t_test_ind", "wilcoxon", "mann_whitney", "ks")


def summary(x: Sequence[float]) -> dict[str, float]:
    """mean, standard error of the mean, std, n (nan-safe: non-finite values are dropped)."""
    a = np.asarray([v for v in x if v is not None and math.isfinite(v)], dtype=float)
    n = len(a)
    if n == 0:
        return {"mean": math.nan, "sem": math.nan, "std": math.nan, "n": 0}
    std = float(a.std(ddof=1)) if n > 1 else math.nan
    return {
        "mean": float(a.mean()),
        "sem": std / math.sqrt(n) if n > 1 else math.nan,
        "std": std,
        "n": n,
    }


def compare(
    reference: Sequence[float], other: Sequence[float], paired: bool = True
) -> dict[str, float]:
    """p-values of paired/independent t-tests, Wilcoxon signed-rank, Mann-Whitney U and the
    two-sample Kolmogorov-Smirnov test (sensitive to any difference in shape, not only location).

    Paired tests need equal lengths (item i of both lists comes from the same prompt);
    a test that is undefined for the data (too few items, zero variance) gives nan.
    """
    from scipy import stats as st

    a, b = np.asarray(reference, dtype=float), np.asarray(other, dtype=float)
    out = dict.fromkeys(TESTS, math.nan)
    out["n"] = int(min(len(a), len(b)))
    if len(a) >= 2 and len(b) >= 2:
        out["t_test_ind"] = _p(lambda: st.ttest_ind(a, b).pvalue)
        out["mann_whitney"] = _p(lambda: st.mannwhitneyu(a, b, alternative="two-sided").pvalue)
        out["ks"] = _p(lambda: st.ks_2samp(a, b).pvalue)
    if paired and len(a) == len(b) and len(a) >= 2:
        out["t_test_paired"] = _p(lambda: st.ttest_rel(a, b).pvalue)
        if np.any(a != b):
            out["wilcoxon"] = _p(lambda: st.wilcoxon(a, b, zero_method="zsplit").pvalue)
    return out


def difference(
    reference: Sequence[float], other: Sequence[float], paired: bool = True, power: float = 0.8
) -> dict[str, float]:
    """What the data can say about equality: mean(other) - mean(reference), its 95% confidence
    interval (paired t when item i of both lists comes from the same prompt, else Welch), and
    the smallest true difference a two-sided 5% t-test would detect with probability ``power``.

    "No significant difference" is only as strong as this: differences outside the interval are
    ruled out at 95%, differences below the detectable one could go unnoticed.
    """
    from scipy import stats as st

    a, b = np.asarray(reference, dtype=float), np.asarray(other, dtype=float)
    out = {"diff": math.nan, "ci95_low": math.nan, "ci95_high": math.nan, "detectable": math.nan}
    if len(a) < 2 or len(b) < 2:
        return out
    if paired and len(a) == len(b):
        d = b - a
        se, dof = float(d.std(ddof=1)) / math.sqrt(len(d)), len(d) - 1
    else:
        va, vb = float(a.var(ddof=1)) / len(a), float(b.var(ddof=1)) / len(b)
        se = math.sqrt(va + vb)
        dof = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1)) if se > 0 else 1
    diff = float(b.mean() - a.mean())
    t = float(st.t.ppf(0.975, dof))
    out.update(diff=diff, ci95_low=diff - t * se, ci95_high=diff + t * se)
    out["detectable"] = float((t + st.t.ppf(power, dof)) * se)
    return out


def _p(f) -> float:
    try:
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            v = float(f())
    except ValueError:
        return math.nan
    return v if math.isfinite(v) else math.nan
