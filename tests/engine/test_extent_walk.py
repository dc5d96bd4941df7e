"""The extent walk (docs/design/realtime.md, "Walking the extent list"): a plain "newest N"
read plans over the index arrays (`reads.newest_plan`, `HashIndex.newest_walk`) instead of
one `Extent` and one `Source` per extent. Its plan must be exactly `newest_sources` over
`sources_of` (None included), and reads of users with many extents (tens of partial seals,
late events, a merge in between) must equal the general path's, value for value."""

from __future__ import annotations

import numpy as np
import pytest

from seqvault import Schema, SeqVault, reads
from seqvault.errors import CorruptionError
from seqvault.index import Extent, HashIndex
from seqvault.reads import choose_plan, choose_sources, newest_plan, newest_sources, sources_of
from seqvault.segment import key_bytes

SCHEMA = {"columns": [{"name": "item", "type": "int64", "default": 0},
                      {"name": "act", "type": "string", "default": "v"}]}


class Tail:
    """A memtable tail as `sources_of` and `newest_plan` see it."""

    def __init__(self, ts: np.ndarray) -> None:
        self.ts = np.sort(ts)
        self.count = int(ts.size)

    def sorted_arrays(self):
        return self.ts, {"item": self.ts * 10}


def plan_key(plan):
    if plan is None:
        return None
    return [(s.order, s.count, s.min_ts, s.max_ts, s.extent, s.mem is not None) for s in plan]


def random_extents(rng, n: int, overlap: float, grid: int = 1) -> list[Extent]:
    """n extents, oldest first, roughly in time order; with probability `overlap` one reaches
    back into (or past) older ones' ranges, as late events do. `grid` > 1 rounds the ranges
    to its multiples, so that sources share boundary timestamps (ties)."""
    out = []
    t = 0
    for i in range(n):
        count = int(rng.integers(1, 3_000))
        lo = t + int(rng.integers(0, 50))
        if rng.random() < overlap:
            lo = max(0, lo - int(rng.integers(1, 20_000)))
        hi = lo + int(rng.integers(0, 5_000))
        lo, hi = lo // grid * grid, hi // grid * grid
        t = max(t, hi)
        out.append(Extent(i % 7, i * 4_096, 4_000 + i, count, lo, hi))
    return out


@pytest.mark.parametrize("overlap", [0.0, 0.05, 0.3])
def test_the_walk_plans_exactly_as_newest_sources(overlap):
    rng = np.random.default_rng(int(overlap * 100) + 1)
    idx = HashIndex()
    checked = taken = 0
    for case in range(300):
        n = int(rng.integers(0, 70))
        exts = random_extents(rng, n, overlap)
        h = 1_000 + case
        idx.set_extents(h, list(reversed(exts)))  # the index keeps them newest first
        tail = None
        if rng.random() < 0.5:
            t_end = max((e.max_ts for e in exts), default=0)
            lo = t_end - int(rng.integers(-100, 3_000)) if rng.random() < 0.3 else t_end
            tail = Tail(lo + rng.integers(0, 2_000, int(rng.integers(0, 600))))
        for last in (1, 100, 1_000, 2_048, 5_000, 50_000):
            want = newest_sources(sources_of(idx.extents_of(h), tail), last)  # type: ignore[arg-type]
            got = newest_plan(idx, h, tail, last)  # type: ignore[arg-type]
            assert plan_key(got) == plan_key(want), (case, last)
            checked += 1
            taken += got is not None
    assert checked == 300 * 6
    assert 0 < taken < checked  # plans made, and fallbacks (late tails, overlaps) compared


@pytest.mark.parametrize("few", [8, 0])  # 0: the array steps even for a few sources
@pytest.mark.parametrize("one_by_one", [24, 0])  # 0: every choice by the whole-array step
@pytest.mark.parametrize("grid", [1, 2_000])
@pytest.mark.parametrize("overlap", [0.0, 0.2, 0.9])
def test_the_array_choice_is_exactly_choose_sources(overlap, grid, one_by_one, few,
                                                    monkeypatch):
    monkeypatch.setattr(reads, "VISITS_ONE_BY_ONE", one_by_one)
    monkeypatch.setattr(reads, "CHOOSE_OBJECTS_MAX", few)
    rng = np.random.default_rng(int(overlap * 100) + 5 + grid)
    idx = HashIndex()
    sizes = []
    for case in range(80):
        n = int(rng.integers(0, 90))
        exts = random_extents(rng, n, overlap, grid)
        h = 5_000 + case
        idx.set_extents(h, list(reversed(exts)))
        tail = None
        if rng.random() < 0.5:
            t_end = max((e.max_ts for e in exts), default=0)
            tail = Tail(t_end - int(rng.integers(-100, 30_000)) + rng.integers(0, 2_000, 50))
        t_end = max((e.max_ts for e in exts), default=1)
        for _ in range(8):
            last = [None, 1, 100, 1_000, 5_000, 10**6][int(rng.integers(0, 6))]
            before = int(rng.integers(0, t_end + 10)) if rng.random() < 0.4 else None
            since = int(rng.integers(0, t_end + 10)) if rng.random() < 0.4 else None
            want = choose_sources(sources_of(idx.extents_of(h), tail), last, before, since)  # type: ignore[arg-type]
            got = choose_plan(idx, h, tail, last, before, since)  # type: ignore[arg-type]
            assert plan_key(got) == plan_key(want), (case, last, before, since)
            sizes.append(len(got))
    assert min(sizes) == 0 and max(sizes) > 20  # empty choices and long ones were compared
    # past CHOOSE_VECTOR_MAX sources it hands over to choose_sources: still the same answer
    monkeypatch.setattr(reads, "CHOOSE_VECTOR_MAX", 3)
    exts = random_extents(rng, 40, overlap)
    idx.set_extents(1, list(reversed(exts)))
    for last in (None, 1, 3_000):
        assert plan_key(choose_plan(idx, 1, None, last, None, None)) == plan_key(
            choose_sources(sources_of(idx.extents_of(1), None), last, None, None))


def test_the_walk_of_an_unknown_user_is_an_empty_plan():
    idx = HashIndex()
    assert newest_plan(idx, 12345, None, 10) == []
    only_tail = newest_plan(idx, 12345, Tail(np.arange(5)), 10)  # type: ignore[arg-type]
    assert only_tail is not None and [s.count for s in only_tail] == [5]


def test_the_walk_stops_at_the_first_disagreement_in_left_out_extents():
    idx = HashIndex()
    # Oldest extent ends at 10_000, after the newest one starts: no plan for a short read.
    exts = [Extent(0, 0, 10, 5, 0, 10_000), Extent(0, 10, 10, 100, 100, 200),
            Extent(0, 20, 10, 100, 300, 400)]
    idx.set_extents(7, list(reversed(exts)))
    assert newest_plan(idx, 7, None, 50) is None
    assert newest_sources(sources_of(idx.extents_of(7), None), 50) is None


# ---------------------------------------------------------------------- whole reads
def _hot_store(tmp_path, late: bool) -> tuple[SeqVault, int]:
    """User 1 with tens of partially sealed extents (tail_events=64), a merge part way, more
    partial seals after it, and a memtable tail; with `late`, some appends reach back in
    time. Users 2..5 take appends in between so the extents interleave in the files."""
    rng = np.random.default_rng(11 if late else 12)
    v = SeqVault.open(tmp_path / "s", schema=Schema.from_dict(SCHEMA), tail_events=64,
                      durability="none")
    t = 100_000
    for k in range(120):
        n = int(rng.integers(20, 90))
        ts = t + np.sort(rng.integers(0, 40, n))
        if late and k % 13 == 5:
            ts = ts - int(rng.integers(50, 3_000))
        else:
            t = int(ts.max())
        v.append(1, {"ts": ts, "item": rng.integers(0, 10**6, n),
                     "act": [f"a{int(x)}" for x in rng.integers(0, 5, n)]})
        if k % 4 == 0:
            u = 2 + k % 4
            v.append(u, {"ts": np.arange(t, t + 10), "item": np.arange(10),
                         "act": ["z"] * 10})
        if k == 50:
            v.flush()
            v.merge()
    if late:  # the newest extent holds only late events: every older one ends after it starts
        v.flush()
        n = 70
        v.append(1, {"ts": t - 2_000 + np.arange(n), "item": rng.integers(0, 10**6, n),
                     "act": ["late"] * n})
        v.flush()
    idx = v.manifest.index
    return v, len(idx.extents_of(idx.slot_of(key_bytes(1)[1])))


def object_path(monkeypatch) -> None:
    """Reads take the path from before the walk: an `Extent` and a `Source` per extent,
    `choose_sources` over them, and no short-read plan (the general merge)."""
    monkeypatch.setattr(reads, "newest_plan", lambda *a: None)
    monkeypatch.setattr(reads, "newest_sources", lambda sources, last: None)
    monkeypatch.setattr(reads, "choose_plan", lambda idx, h, tail, last, before, since:
                        choose_sources(sources_of(idx.extents_of(h), tail), last, before,
                                       since))


@pytest.mark.parametrize("late", [False, True])
def test_reads_of_a_user_with_many_extents_equal_the_general_path(tmp_path, decoder,
                                                                   monkeypatch, late):
    v, n_ext = _hot_store(tmp_path, late)
    try:
        assert n_ext >= 20  # tens of partial seals after the merge
        lasts = [1, 30, 64, 65, 100, 500, 1_000, 2_000, 100_000]
        got = {}
        for strings in ("decode", "codes"):
            for last in lasts:
                for cols in (None, ["act"]):
                    got[strings, last, str(cols)] = v.read(1, last=last, columns=cols,
                                                           strings=strings)
        t_hi = int(v.read(1, last=1)["ts"][0])
        windows = [(b, s, n) for b in (None, t_hi - 500, t_hi - 3_000)
                   for s in (None, t_hi - 4_000, t_hi - 1_000) for n in (None, 50, 1_000)]
        windowed = {w: v.read(1, last=w[2], before=w[0], since=w[1]) for w in windows}
        object_path(monkeypatch)
        everything = v.read(1)
        for (strings, last, cols), seq in got.items():
            want = v.read(1, last=last, columns=eval(cols), strings=strings)
            assert list(seq.keys()) == list(want.keys())
            assert len(seq) == len(want) == min(last, len(everything))
            for name in want:
                np.testing.assert_array_equal(seq[name], want[name])
                assert seq[name].dtype == want[name].dtype
            if strings == "codes":
                for name, lookup in want.dictionaries.items():
                    np.testing.assert_array_equal(seq.dictionaries[name], lookup)
        for (b, s_, n), seq in windowed.items():
            want = v.read(1, last=n, before=b, since=s_)
            assert len(seq) == len(want)
            for name in want:
                np.testing.assert_array_equal(seq[name], want[name])
        assert any(len(seq) for seq in windowed.values())
        # and the general path itself is the whole history's tail
        np.testing.assert_array_equal(got["decode", 500, "None"]["item"],
                                      everything["item"][-500:])
    finally:
        v.close()


def test_reads_of_a_hot_user_take_the_walk_and_build_few_extents(tmp_path, monkeypatch):
    """On ordered data the walk is taken, and only the chosen extents become objects (the
    test above would pass if the walk were never used)."""
    v, n_ext = _hot_store(tmp_path, late=False)
    built = []
    real = HashIndex.extent_at
    monkeypatch.setattr(HashIndex, "extent_at", lambda self, e: built.append(e) or real(self, e))
    monkeypatch.setattr(HashIndex, "extents",
                        lambda self, row: pytest.fail("a per-extent list was built"))
    try:
        assert n_ext >= 20
        seq = v.read(1, last=100)
        assert len(seq) == 100
        assert 1 <= len(built) <= 3
    finally:
        v.close()


def test_a_damaged_extent_found_by_the_walk_is_detected(tmp_path):
    """Corruption is detected, never served: the walk hands the newest extent to the same
    verifying decoder."""
    v, _n = _hot_store(tmp_path, late=False)
    try:
        idx = v.manifest.index
        row = idx.find(idx.slot_of(key_bytes(1)[1]))
        e = int(idx.u_head[row])
        path = v.manifest.files.path(int(idx.e_file[e]))
        off, length = int(idx.e_off[e]), int(idx.e_len[e])
        with open(path, "r+b") as f:
            f.seek(off + length - 8)
            b = f.read(1)
            f.seek(off + length - 8)
            f.write(bytes([b[0] ^ 0xFF]))
        with pytest.raises(CorruptionError):
            v.read(1, last=2_000)
    finally:
        v.close()
