"""Short reads (docs/design/realtime.md, "Short reads"): a plain "newest N" read takes the
newest sources in arrival order (`reads.newest_sources`) and concatenates their newest rows
(`reads.assemble_newest`) when time order and arrival order agree, and falls back to the
general merge when they do not. Its answers must equal the general path's, on both decoders."""

from __future__ import annotations

import numpy as np
import pytest

from seqvault import Schema, SeqVault, reads
from seqvault.reads import Source, newest_sources

SCHEMA = {"columns": [{"name": "item", "type": "int64", "default": 0},
                      {"name": "act", "type": "string", "default": "v"}]}


def src(order: int, lo: int, hi: int, count: int | None = None) -> Source:
    return Source(order, count if count is not None else hi - lo + 1, lo, hi)


def orders(chosen: list[Source] | None) -> list[int] | None:
    return None if chosen is None else [s.order for s in chosen]


A, B, C = src(0, 0, 99), src(1, 100, 199), src(2, 200, 299)


def test_the_newest_source_alone_when_it_holds_last():
    assert orders(newest_sources([A, B, C], 100)) == [2]
    assert orders(newest_sources([A, B, C], 1)) == [2]


def test_older_sources_join_until_last_is_reached_in_arrival_order():
    assert orders(newest_sources([A, B, C], 101)) == [1, 2]
    assert orders(newest_sources([A, B, C], 300)) == [0, 1, 2]
    assert orders(newest_sources([A, B, C], 10_000)) == [0, 1, 2]


def test_no_sources_is_an_empty_plan():
    assert newest_sources([], 5) == []


def test_equal_timestamps_across_sources_keep_the_plan():
    # The older arrival's events sort first among equal timestamps, as concatenation has them.
    x, y = src(0, 0, 50), src(1, 50, 80)
    assert orders(newest_sources([x, y], 31)) == [1]  # y holds 31 events
    assert orders(newest_sources([x, y], 32)) == [0, 1]


def test_a_chosen_older_source_ending_after_a_newer_one_starts_gives_no_plan():
    late = src(1, 150, 160)  # arrived after B's range started: late events
    assert newest_sources([A, B, late], 20) is None


def test_a_left_out_source_ending_after_the_chosen_ones_start_gives_no_plan():
    # D arrived first but holds newer events than C: C alone is not the newest 10.
    d = src(0, 250, 400)
    c = src(1, 200, 299)
    assert newest_sources([d, c], 10) is None
    assert orders(newest_sources([src(0, 0, 10), src(1, 200, 299)], 10)) == [1]


def _store(tmp_path, late: bool) -> SeqVault:
    """A user with sealed real-time segments (tail_events=40), lifetime segments after a
    merge, a column added later (old segments lack it) and a memtable tail; with `late`,
    some appends carry timestamps older than what is already stored."""
    rng = np.random.default_rng(7 if late else 8)
    v = SeqVault.open(tmp_path / "s", schema=Schema.from_dict(SCHEMA), tail_events=40,
                      durability="none")
    t = 1_000
    extra: dict[str, np.ndarray] = {}
    for k in range(30):
        n = int(rng.integers(1, 25))
        ts = t + np.sort(rng.integers(0, 30, n))
        if late and k % 7 == 3:
            ts = ts - 200
        t = int(ts.max()) if not late or k % 7 != 3 else t
        v.append(1, {"ts": ts, "item": rng.integers(0, 1000, n),
                     "act": [f"a{int(x)}" for x in rng.integers(0, 4, n)],
                     **{c: rng.integers(0, 9, n) for c in extra}})
        if k == 12:
            v.flush()
            v.merge()
        if k == 18:
            d = dict(SCHEMA)
            d["columns"] = [*SCHEMA["columns"], {"name": "dwell", "type": "int32",
                                                 "default": -1}]
            v.evolve_schema(Schema.from_dict(d))
            extra["dwell"] = np.zeros(0)
    return v


@pytest.mark.parametrize("late", [False, True])
def test_short_reads_equal_the_general_path(tmp_path, decoder, monkeypatch, late):
    v = _store(tmp_path, late)
    try:
        lasts = [1, 5, 17, 40, 41, 100, 250, 10_000]
        got = {}
        for strings in ("decode", "codes"):
            for last in lasts:
                for cols in (None, ["act", "ts"], ["dwell"]):
                    got[strings, last, str(cols)] = v.read(1, last=last, columns=cols,
                                                           strings=strings)
        monkeypatch.setattr(reads, "newest_sources", lambda sources, last: None)
        monkeypatch.setattr(reads, "newest_plan", lambda *a: None)  # the walk's plan, too
        monkeypatch.setattr(reads, "choose_plan", lambda idx, h, tail, last, before, since:
                            reads.choose_sources(reads.sources_of(idx.extents_of(h), tail),
                                                 last, before, since))
        for (strings, last, cols), seq in got.items():
            want = v.read(1, last=last, columns=eval(cols), strings=strings)
            assert list(seq.keys()) == list(want.keys())
            assert len(seq) == len(want) == min(last, len(v.read(1)))
            for name in want:
                np.testing.assert_array_equal(seq[name], want[name])
                assert seq[name].dtype == want[name].dtype
            if strings == "codes":
                for name, lookup in want.dictionaries.items():
                    np.testing.assert_array_equal(seq.dictionaries[name], lookup)
    finally:
        v.close()


def test_short_reads_take_the_plan_on_ordered_data(tmp_path, monkeypatch):
    """The plan is really used (the test above would pass if it never were)."""
    v = _store(tmp_path, late=False)
    calls = []
    real = reads.assemble_newest
    monkeypatch.setattr(reads, "assemble_newest",
                        lambda *a, **k: calls.append(1) or real(*a, **k))
    try:
        v.read(1, last=10)
        v.read(1, last=200)
        assert len(calls) == 2
    finally:
        v.close()
