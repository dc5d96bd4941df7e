"""Read pruning (seqvault.reads.choose_sources): which of a user's sources (sealed extents and
the memtable tail) a read has to decode. Time filters drop sources outside [since, before);
`last` stops once `last` events are certain to be newer than every source not yet visited;
the sources kept come back in arrival order (ties between sources are resolved by it)."""

from __future__ import annotations

import numpy as np

from seqvault.reads import Source, choose_sources


def src(order: int, lo: int, hi: int, count: int | None = None) -> Source:
    return Source(order, count if count is not None else hi - lo + 1, lo, hi)


def orders(sources: list[Source]) -> list[int]:
    return [s.order for s in sources]


# Three sealed, disjoint sources in arrival order: ts 0..99, 100..199, 200..299.
A, B, C = src(0, 0, 99), src(1, 100, 199), src(2, 200, 299)


def test_no_filter_keeps_every_source_in_arrival_order():
    assert orders(choose_sources([A, B, C], None, None, None)) == [0, 1, 2]


def test_empty_and_single_source():
    assert choose_sources([], 10, None, None) == []
    assert orders(choose_sources([B], 1, None, None)) == [1]


def test_since_drops_sources_entirely_older():
    assert orders(choose_sources([A, B, C], None, None, 199)) == [1, 2]  # 199 is B's max: kept
    assert orders(choose_sources([A, B, C], None, None, 200)) == [2]
    assert orders(choose_sources([A, B, C], None, None, 300)) == []


def test_before_drops_sources_entirely_newer_or_equal():
    assert orders(choose_sources([A, B, C], None, 200, None)) == [0, 1]  # before is exclusive
    assert orders(choose_sources([A, B, C], None, 201, None)) == [0, 1, 2]
    assert orders(choose_sources([A, B, C], None, 0, None)) == []


def test_since_and_before_together():
    assert orders(choose_sources([A, B, C], None, 150, 150)) == [1]


def test_last_stops_once_newer_sources_surely_hold_enough():
    assert orders(choose_sources([A, B, C], 1, None, None)) == [2]
    assert orders(choose_sources([A, B, C], 100, None, None)) == [2]
    assert orders(choose_sources([A, B, C], 101, None, None)) == [1, 2]
    assert orders(choose_sources([A, B, C], 200, None, None)) == [1, 2]
    assert orders(choose_sources([A, B, C], 201, None, None)) == [0, 1, 2]
    assert orders(choose_sources([A, B, C], 10_000, None, None)) == [0, 1, 2]


def test_last_with_before_does_not_count_a_source_reaching_past_before():
    # C (200..299) straddles before=250: its events are not all inside the window, so it does
    # not make B unnecessary; B does make A unnecessary.
    assert orders(choose_sources([A, B, C], 50, 250, None)) == [1, 2]
    # With before above C, C alone is certain to hold the newest 50.
    assert orders(choose_sources([A, B, C], 50, 300, None)) == [2]


def test_overlapping_sources_are_all_kept():
    # Late events: a source that arrived last but spans old and new timestamps.
    late = src(3, 50, 250, count=5)
    assert orders(choose_sources([A, B, C, late], 10, None, None)) == [2, 3]
    assert orders(choose_sources([A, B, C, late], 101, None, None)) == [1, 2, 3]


def test_arrival_order_is_kept_when_it_differs_from_time_order():
    new_first = src(0, 1_000, 1_099)   # arrived first, newest timestamps
    old_late = src(1, 0, 99)           # arrived later with older timestamps
    mid_later = src(2, 500, 1_050)     # overlaps the first
    got = choose_sources([new_first, old_late, mid_later], 150, None, None)
    assert orders(got) == [0, 2]
    got = choose_sources([new_first, old_late, mid_later], 10_000, None, None)
    assert orders(got) == [0, 1, 2]


def test_memtable_source_is_pruned_and_kept_like_any_other():
    ts = np.array([120, 130, 140], dtype=np.int64)
    cols = {"item_id": np.array([1, 2, 3], dtype=np.int64)}
    mem_old = Source(3, 3, 120, 140, mem=(ts, cols))        # unsealed, but older than C
    assert orders(choose_sources([A, B, C, mem_old], 50, None, None)) == [2]
    mem_new = Source(3, 3, 400, 420, mem=(ts + 280, cols))  # unsealed, newest
    got = choose_sources([A, B, C, mem_new], 3, None, None)
    assert got == [mem_new] and got[0].mem is not None and got[0].extent is None
    assert got[0].mem[1]["item_id"].tolist() == [1, 2, 3]
    got = choose_sources([A, B, C, mem_new], 4, None, None)
    assert orders(got) == [2, 3]
    assert orders(choose_sources([A, B, C, mem_new], None, None, 300)) == [3]
    assert orders(choose_sources([A, B, C, mem_new], None, 400, None)) == [0, 1, 2]
