"""bregflax.paper.stats: the t quantile and the paired-seed interval, checked against scipy."""

import math

import numpy as np
import pytest
from scipy import stats as scipy_stats

from bregflax.paper import stats


@pytest.mark.parametrize("df", [*range(1, 31), 31, 40, 60, 120, 1000])
def test_t_quantile_matches_scipy(df):
    assert stats.t975(df) == pytest.approx(scipy_stats.t.ppf(0.975, df), abs=1e-6)


def test_t_quantile_rejects_zero_degrees_of_freedom():
    with pytest.raises(ValueError):
        stats.t975(0)


def _scipy_interval(diffs):
    diffs = np.asarray(diffs, dtype=np.float64)
    sem = scipy_stats.sem(diffs)
    return scipy_stats.t.interval(0.95, diffs.size - 1, loc=diffs.mean(), scale=sem)


def test_paired_interval_matches_scipy():
    a = {0: 0.61, 1: 0.58, 2: 0.64, 3: 0.60, 4: 0.63}
    b = {0: 0.57, 1: 0.57, 2: 0.60, 3: 0.59, 4: 0.58}
    p = stats.paired(a, b)
    diffs = [a[s] - b[s] for s in range(5)]
    low, high = _scipy_interval(diffs)
    assert p.n == 5 and p.seeds == (0, 1, 2, 3, 4)
    assert (p.low, p.high) == (pytest.approx(low), pytest.approx(high))
    assert p.diff == pytest.approx(np.mean(diffs))
    assert p.mean_a == pytest.approx(np.mean(list(a.values())))
    assert p.sd_b == pytest.approx(np.std(list(b.values()), ddof=1))
    # the same verdict as scipy's paired t test, one-sided at 2.5%
    assert scipy_stats.ttest_rel(list(a.values()), list(b.values())).pvalue < 0.05
    assert p.verdict == stats.HELD


def test_verdicts():
    base = {0: 1.0, 1: 2.0, 2: 3.0}
    better = {0: 1.5, 1: 2.4, 2: 3.6}
    noisy = {0: 2.0, 1: 1.0, 2: 3.1}
    assert stats.paired(better, base).verdict == stats.HELD
    assert stats.paired(base, better).verdict == stats.NOT_HELD
    assert stats.paired(noisy, base).verdict == stats.INCONCLUSIVE
    # lower is better (seconds per epoch): a faster arm A holds the claim
    assert stats.paired(base, better, higher_is_better=False).verdict == stats.HELD
    assert stats.paired(better, base, higher_is_better=False).verdict == stats.NOT_HELD


def test_only_shared_seeds_are_paired():
    p = stats.paired({0: 1.0, 1: 2.0, 5: 9.0}, {0: 0.5, 1: 1.0, 7: 0.0})
    assert p.n == 2 and p.seeds == (0, 1)
    assert p.diff == pytest.approx(0.75)
    assert p.mean_a == pytest.approx(1.5)  # seed 5 has no partner: left out


def test_fewer_than_two_pairs_are_inconclusive():
    p = stats.paired({0: 0.9}, {0: 0.1})
    assert p.n == 1 and p.low is None and p.high is None
    assert p.verdict == stats.INCONCLUSIVE and p.diff == pytest.approx(0.8)
    empty = stats.paired({}, {1: 0.5})
    assert empty.n == 0 and math.isnan(empty.diff)


def test_mean_sd():
    assert stats.mean_sd([2.0, 4.0, 9.0]) == (5.0, pytest.approx(np.std([2, 4, 9], ddof=1)))
    assert stats.mean_sd([3.0]) == (3.0, 0.0)
