"""Segment layout (seqvault.layout): where one user's sorted events are cut into lifetime
segments. Counting from the newest event, segments hold 2,048 × 4^k events capped at the
target; the oldest segment takes the remainder; a run of equal timestamps is never split."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from seqvault.layout import RECENT_SEGMENT_EVENTS, expected_segments, segment_bounds


def widths_newest_first(bounds: list[int]) -> list[int]:
    return [b - a for a, b in zip(bounds[:-1], bounds[1:])][::-1]


def test_recent_segment_is_2048_events():
    assert RECENT_SEGMENT_EVENTS == 2_048


def test_tiers_grow_by_four_from_the_newest_and_the_oldest_takes_the_remainder():
    n = 2_048 + 8_192 + 32_768 + 100
    bounds = segment_bounds(np.arange(n, dtype=np.int64), max_events=1 << 20)
    assert bounds == [0, 100, 100 + 32_768, 100 + 32_768 + 8_192, n]
    assert widths_newest_first(bounds) == [2_048, 8_192, 32_768, 100]


def test_tiers_are_capped_at_max_events():
    n = 2_048 + 3 * 5_000 + 7
    bounds = segment_bounds(np.arange(n, dtype=np.int64), max_events=5_000)
    assert widths_newest_first(bounds) == [2_048, 5_000, 5_000, 5_000, 7]


def test_max_events_below_recent_caps_every_segment():
    bounds = segment_bounds(np.arange(1_000, dtype=np.int64), max_events=300)
    assert widths_newest_first(bounds) == [300, 300, 300, 100]


def test_custom_recent_size():
    bounds = segment_bounds(np.arange(100, dtype=np.int64), max_events=1_000, recent=4)
    assert widths_newest_first(bounds) == [4, 16, 64, 16]


@pytest.mark.parametrize("n", [1, 2, 2_047, 2_048])
def test_history_that_fits_the_recent_tier_is_one_segment(n):
    assert segment_bounds(np.arange(n, dtype=np.int64), max_events=32_768) == [0, n]


def test_empty_history_has_no_segment():
    assert segment_bounds(np.zeros(0, dtype=np.int64), max_events=32_768) == [0]
    assert expected_segments(np.array([0]), 32_768).tolist() == [0]


def test_all_equal_timestamps_stay_one_segment():
    assert segment_bounds(np.full(10_000, 5, dtype=np.int64), max_events=1_000) == [0, 10_000]


def test_a_tie_run_across_a_cut_moves_the_cut_to_the_start_of_the_run():
    ts = np.arange(3_000, dtype=np.int64)
    ts[900:1_000] = 900  # the natural cut (3,000 - 2,048 = 952) falls inside this run
    bounds = segment_bounds(ts, max_events=32_768)
    assert bounds == [0, 900, 3_000]


def test_a_run_from_the_first_event_moves_the_cut_past_the_run():
    ts = np.arange(3_000, dtype=np.int64)
    ts[:1_000] = 0  # the natural cut (952) is inside a run that starts at event 0
    bounds = segment_bounds(ts, max_events=32_768)
    assert bounds == [0, 1_000, 3_000]


# A unique first event keeps expected_segments' tie-free premise; runs from event 0 are
# tested by test_all_equal_timestamps_stay_one_segment.
sorted_ts = st.lists(st.integers(0, 60), min_size=0, max_size=400).map(
    lambda xs: np.array([-1, *sorted(xs)], dtype=np.int64))


@settings(max_examples=200, deadline=None)
@given(ts=sorted_ts, max_events=st.integers(1, 64), recent=st.integers(1, 16))
def test_bounds_cover_everything_and_never_split_ties(ts, max_events, recent):
    bounds = segment_bounds(ts, max_events, recent=recent)
    assert bounds[0] == 0 and bounds[-1] == ts.size
    assert all(a < b for a, b in zip(bounds[:-1], bounds[1:]))  # no empty segment
    for cut in bounds[1:-1]:
        assert ts[cut - 1] < ts[cut]  # equal timestamps are never on both sides of a cut


@settings(max_examples=200, deadline=None)
@given(counts=st.lists(st.integers(0, 30_000), min_size=1, max_size=5),
       target=st.integers(16, 40_000), recent=st.sampled_from([4, 64, 2_048]))
def test_expected_segments_agrees_with_segment_bounds_without_ties(counts, target, recent):
    got = expected_segments(np.array(counts), target, recent=recent)
    want = [len(segment_bounds(np.arange(n, dtype=np.int64), target, recent=recent)) - 1
            for n in counts]
    assert got.tolist() == want


@pytest.mark.parametrize("seed", range(3))
def test_group_time_order_is_lexsorts_order_whether_or_not_the_key_packs(seed):
    # The packed-key sort (group bits + time-span bits ≤ 64) and the lexsort fallback give the
    # same stable order: ties keep their input order (old rows before new in a fold).
    from seqvault.layout import group_time_order

    rng = np.random.default_rng(seed)
    for _ in range(200):
        n = int(rng.integers(0, 400))
        group = rng.integers(0, int(rng.choice([1, 3, 1_000, 2**40])), n)
        span = int(rng.choice([5, 10**6, 2**62]))
        ts = rng.integers(-span, span, n)
        if n and rng.random() < 0.3:  # presorted runs, as a flush's old and new rows are
            half = n // 2
            for a, b in ((0, half), (half, n)):
                o = np.lexsort((ts[a:b], group[a:b]))
                group[a:b], ts[a:b] = group[a:b][o], ts[a:b][o]
        assert np.array_equal(group_time_order(group, ts), np.lexsort((ts, group)))
