"""The benchmark's Zipf user picker draws ranks over the whole population (issue 12).

The old picker clamped ``rng.zipf`` ranks above the population onto the last user, so with
a=1.1 over 2,000 users one user received ~44% of every Zipf workload. These tests compare the
most frequent user's share with the truncated Zipf law's analytic share, 1 / H(n, a).
No timings here.
"""

from __future__ import annotations

import numpy as np
import pytest

from bench import workload as wl


@pytest.mark.parametrize("n_users,a", [(2_000, 1.1), (40, 1.1), (50_000, 1.3)])
def test_most_frequent_user_gets_the_truncated_zipf_share(n_users, a):
    users = np.arange(n_users, dtype=np.int64) * 7_919 + 13
    k = 200_000
    picked = wl.pick_users(np.random.default_rng(3), users, k, "zipf", a)
    assert np.isin(picked, users).all()
    _, counts = np.unique(picked, return_counts=True)
    share = counts.max() / k
    want = wl.zipf_top_share(a, n_users)
    # The binomial standard error at k=200,000 is under 0.0012 for these shares.
    assert share == pytest.approx(want, abs=0.01), (share, want)


def test_ranks_follow_the_law_and_stay_in_the_population():
    n, a, k = 1_000, 1.1, 300_000
    ranks = wl.zipf_ranks(np.random.default_rng(5), a, n, k)
    assert ranks.min() >= 1 and ranks.max() <= n
    counts = np.bincount(ranks, minlength=n + 1)[1:] / k
    expected = np.arange(1, n + 1, dtype=np.float64) ** -a
    expected /= expected.sum()
    # The top ranks and the tail's mass agree with the analytic law (no pile-up at rank n).
    np.testing.assert_allclose(counts[:5], expected[:5], atol=0.005)
    assert counts[-1] < 5 * expected[-1] + 0.001
    assert counts[500:].sum() == pytest.approx(expected[500:].sum(), abs=0.01)


def test_large_populations_use_rejection_and_stay_exact():
    n = 3_000_000  # beyond the inverse-CDF table: the rejection branch
    ranks = wl.zipf_ranks(np.random.default_rng(9), 1.15, n, 200_000)
    assert ranks.min() >= 1 and ranks.max() <= n
    share = float(np.mean(ranks == 1))
    assert share == pytest.approx(wl.zipf_top_share(1.15, n), abs=0.01)
    # The clamped draw would pile ~9% of the mass on rank n; none may land there.
    assert np.mean(ranks == n) < 0.001


def test_event_stream_spreads_appends_over_the_population():
    cfg = wl.WorkloadConfig(n_users=2_000)
    pop, _ = wl.population_users(cfg)
    s = wl.event_stream(cfg, pop, 100_000, salt=1)
    _, counts = np.unique(s[wl.USER_COLUMN], return_counts=True)
    assert counts.max() / 100_000 == pytest.approx(
        wl.zipf_top_share(cfg.user_zipf_a, len(pop)), abs=0.01)
