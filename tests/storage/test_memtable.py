"""The memtable (unsealed events, readable at once) and string dictionaries, through their
public methods: MemTable.add_grouped / get / sorted_users / clear and its event counts;
StringDict codes, check_room, decode (with a missing-column fill) and truncate."""

from __future__ import annotations

import numpy as np
import pytest

from seqvault import memtable as memtable_mod
from seqvault.errors import CorruptionError, ValidationError
from seqvault.memtable import MemTable, StringDict


def chunk(ts: list[int], items: list[int]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    return np.array(ts, dtype=np.int64), {"item": np.array(items, dtype=np.int64)}


def tail_arrays(m: MemTable, key):
    tail = m.get(key)
    assert tail is not None
    ts, cols = tail.arrays()
    return ts.tolist(), cols["item"].tolist()


def filled() -> MemTable:
    m = MemTable()
    # Call 1: user "b" (3 rows) then user "a" (2 rows), rows grouped by user.
    m.add_grouped(["b", "a"], [3, 2], *chunk([5, 1, 5, 7, 7], [10, 11, 12, 20, 21]))
    # Call 2: "a" again (ties with call 1 at ts 7), then a new user "c".
    m.add_grouped(["a", "c"], [2, 1], *chunk([7, 0, 3], [22, 23, 30]))
    return m


def test_get_returns_each_users_events_in_arrival_order():
    m = filled()
    assert tail_arrays(m, "b") == ([5, 1, 5], [10, 11, 12])
    assert tail_arrays(m, "a") == ([7, 7, 7, 0], [20, 21, 22, 23])
    assert tail_arrays(m, "c") == ([3], [30])
    assert m.get("zz") is None
    assert m.get("a").count == 4 and m.get("b").count == 3 and m.get("c").count == 1


def test_arrays_are_stable_across_calls_and_later_adds():
    m = filled()
    first = tail_arrays(m, "a")
    assert tail_arrays(m, "a") == first  # a second read sees the same
    m.add_grouped(["a"], [1], *chunk([-1], [24]))
    assert tail_arrays(m, "a") == ([7, 7, 7, 0, -1], [20, 21, 22, 23, 24])


def test_event_counts():
    m = MemTable()
    assert len(m) == 0 and m.events == 0 and m.max_tail == 0
    m = filled()
    assert len(m) == 3  # users
    assert m.events == 8
    assert m.max_tail == 4  # the longest tail ("a")


def test_sorted_users_sorts_by_ts_and_keeps_arrival_order_for_ties():
    m = filled()
    got = [(k, ts.tolist(), cols["item"].tolist()) for k, ts, cols in m.sorted_users()]
    # Users in first-arrival order; each sorted by ts, equal ts in arrival order.
    assert got == [
        ("b", [1, 5, 5], [11, 10, 12]),
        ("a", [0, 7, 7, 7], [23, 20, 21, 22]),
        ("c", [3], [30]),
    ]
    again = [(k, ts.tolist(), cols["item"].tolist()) for k, ts, cols in m.sorted_users()]
    assert again == got  # does not consume or reorder the memtable


def test_sorted_users_of_an_empty_memtable_yields_nothing():
    assert list(MemTable().sorted_users()) == []


def test_sorted_users_with_many_ties_is_stable():
    rng = np.random.default_rng(0)
    m = MemTable()
    all_ts: list[np.ndarray] = []
    for call in range(5):
        ts = rng.integers(0, 4, 50).astype(np.int64)
        m.add_grouped([1], [50], ts, {"item": np.arange(50, dtype=np.int64) + 100 * call})
        all_ts.append(ts)
    ((key, ts, cols),) = list(m.sorted_users())
    ts_all = np.concatenate(all_ts)
    items_all = np.concatenate([np.arange(50) + 100 * c for c in range(5)])
    order = np.argsort(ts_all, kind="stable")
    assert key == 1
    assert ts.tolist() == ts_all[order].tolist()
    assert cols["item"].tolist() == items_all[order].tolist()


def test_clear_forgets_everything():
    m = filled()
    m.clear()
    assert len(m) == 0 and m.events == 0 and m.max_tail == 0
    assert m.get("a") is None and list(m.sorted_users()) == []
    m.add_grouped(["c"], [1], *chunk([9], [99]))  # usable again; "c" is a fresh user
    assert [(k, t.tolist()) for k, t, _c in m.sorted_users()] == [("c", [9])]


def strs(*xs: str) -> np.ndarray:
    return np.array(xs, dtype=object)


def test_string_codes_in_first_seen_order_and_stable():
    d = StringDict("action")
    assert d.encode(strs("view", "click", "view")).tolist() == [0, 1, 0]
    assert d.encode(strs("like", "click")).tolist() == [2, 1]
    assert d.code_of("click") == 1 and d.code_of("nope") is None
    assert d.values == ["view", "click", "like"]
    assert d.encode(strs()).tolist() == []


def test_string_codes_for_large_calls_agree_with_small_ones():
    rng = np.random.default_rng(1)
    big = np.array([f"s{i}" for i in rng.integers(0, 300, 10_000)], dtype=object)
    d = StringDict("c", ["s5", "s7"])
    codes = d.encode(big)
    assert d.code_of("s5") == 0 and d.code_of("s7") == 1  # existing codes unchanged
    assert d.decode(codes).tolist() == big.tolist()
    assert d.encode(big[:100]).tolist() == codes[:100].tolist()  # same strings, same codes


def test_pending_lists_codes_added_since_load():
    d = StringDict("c", ["x", "y"])
    assert d.pending() == []
    d.encode(strs("y", "z", "w"))
    assert d.pending() == [(2, "z"), (3, "w")]


def test_decode_and_missing_fill():
    d = StringDict("c", ["a", "bb"])
    assert d.decode(np.array([1, 0, 1], dtype=np.uint32)).tolist() == ["bb", "a", "bb"]
    absent = np.array([0, 0xFFFF_FFFF, 1], dtype=np.uint32)
    assert d.decode(absent, missing="a-much-longer-default").tolist() == [
        "a", "a-much-longer-default", "bb"]  # the fill is not cut to the values' width
    empty = StringDict("c")
    assert empty.decode(np.full(2, 0xFFFF_FFFF, dtype=np.uint32), missing="dflt").tolist() == [
        "dflt", "dflt"]


def test_decode_of_an_unknown_code_is_corruption():
    d = StringDict("c", ["a"])
    with pytest.raises(CorruptionError, match="code 5"):
        d.decode(np.array([0, 5], dtype=np.uint32))


def test_truncate_forgets_later_codes_and_replay_reassigns_them():
    d = StringDict("c", ["a"])
    d.encode(strs("b", "c"))
    d.truncate(1)
    assert d.values == ["a"] and d.code_of("b") is None and d.code_of("c") is None
    assert d.decode(np.array([0], dtype=np.uint32)).tolist() == ["a"]
    with pytest.raises(CorruptionError):
        d.decode(np.array([1], dtype=np.uint32))
    assert d.encode(strs("b", "c")).tolist() == [1, 2]  # the same codes, as a replay needs


def test_check_room_refuses_before_passing_the_cardinality_limit(monkeypatch):
    monkeypatch.setattr(memtable_mod, "MAX_STRING_CARDINALITY", 4)
    d = StringDict("action", ["a", "b", "c"])
    d.check_room(strs("d"))                      # exactly at the limit: fine
    d.check_room(strs("a", "b", "c", "a", "d"))  # many rows, one new string: fine
    with pytest.raises(ValidationError, match="'action'.*limit of 4"):
        d.check_room(strs("d", "e"))
    assert d.values == ["a", "b", "c"]  # checking adds nothing


@pytest.mark.parametrize("compiled", [True, False], ids=["kernel", "python"])
def test_grouped_uids_matches_each_tail_after_partial_seals(monkeypatch, compiled):
    """grouped_uids (the flush's input, built with whole-array steps over every chunk) agrees
    with each user's own tail, sorted, for calls of every size (the small loop, the vectorised
    and the compiled add) and after per-user seals ("sealed through") that drop older chunks."""
    from seqvault import prepare

    if not compiled:
        monkeypatch.setattr(prepare, "KERNEL", None)
    elif prepare.KERNEL is None:
        pytest.skip("the append kernel is not built here")
    rng = np.random.default_rng(7)
    m = MemTable()
    end = 0
    for call in range(300):
        n_users = int(rng.choice([1, 3, 60]))  # 60 > MemTable.SMALL: the vectorised add
        keys = [int(k) for k in rng.choice(80, size=n_users, replace=False)]
        counts = [int(c) for c in rng.integers(1, 5, n_users)]
        total = sum(counts)
        end += 100
        ts = rng.integers(0, 50, total).astype(np.int64)  # ties and late events
        m.add_grouped(keys, counts, ts, {"item": np.arange(total, dtype=np.int64) + 1000 * call},
                      end=end)
        if call % 37 == 36:  # seal one user's events through the log's current end
            m.drop_through(keys[0], end)
    uids, ts, cols, starts, counts = m.grouped_uids()
    assert int(counts.sum()) == m.events
    got = {}
    for i, uid in enumerate(uids.tolist()):
        s, e = int(starts[i]), int(starts[i] + counts[i])
        got[m.keys[uid]] = (ts[s:e].tolist(), cols["item"][s:e].tolist())
    want = {}
    for key in m.users:
        tail = m.get(key)
        assert tail is not None
        t, c = tail.arrays()
        order = np.argsort(t, kind="stable")  # by time, ties in arrival order
        want[key] = (t[order].tolist(), c["item"][order].tolist())
    want = {k: v for k, v in want.items() if v[0]}
    assert got == want
    assert len(want) > 10 and any(m.through.values())


@pytest.mark.parametrize("compiled", [True, False], ids=["kernel", "python"])
def test_tail_for_seal_and_whole_tail_drop_match_a_model(monkeypatch, compiled):
    """A partial seal takes a user's whole tail: `tail_for_seal` (the C walk-and-gather when
    the tail is not built, the built tail otherwise) must give that user's unsealed events
    sorted by time, ties in arrival order, and `drop_through` at the log's end (which then
    skips building the tail) must forget exactly them: later appends of the user, the event
    count and the flush's input (`grouped_uids`) all agree with a model."""
    from seqvault import prepare

    if not compiled:
        monkeypatch.setattr(prepare, "KERNEL", None)
    elif prepare.KERNEL is None:
        pytest.skip("the append kernel is not built here")
    rng = np.random.default_rng(23)
    m = MemTable()
    model: dict[int, list[tuple[int, int]]] = {}
    end = 0
    sealed = built = 0
    for call in range(400):
        n_users = int(rng.choice([1, 2, 55]))  # 55 > MemTable.SMALL: the vectorised add
        keys = [int(k) for k in rng.choice(70, size=n_users, replace=False)]
        counts = [int(c) for c in rng.integers(1, 4, n_users)]
        total = sum(counts)
        end += 100
        ts = rng.integers(0, 30, total).astype(np.int64)
        items = np.arange(total, dtype=np.int64) + 1000 * call
        m.add_grouped(keys, counts, ts, {"item": items}, end=end)
        row = 0
        for k, c in zip(keys, counts):
            model.setdefault(k, []).extend(zip(ts[row:row + c].tolist(),
                                               items[row:row + c].tolist()))
            row += c
        if call % 5 == 4:
            key = keys[0]
            if call % 3 == 0:
                m.get(key)  # a read built this user's tail: the seal takes the built one
                built += 1
            tail = m.tail_for_seal(key)
            assert tail is not None and tail.count == len(model[key])
            t, c = tail.sorted_arrays()
            want = sorted(model[key], key=lambda e: e[0])  # stable: ties in arrival order
            assert list(zip(t.tolist(), c["item"].tolist())) == want
            assert m.drop_through(key, end) == len(model[key])
            assert m.get(key) is None and m.tail_for_seal(key) is None
            del model[key]
            sealed += 1
    assert m.events == sum(len(v) for v in model.values())
    uids, ts, cols, starts, counts = m.grouped_uids()
    got = {m.keys[u]: list(zip(ts[s:s + n].tolist(), cols["item"][s:s + n].tolist()))
           for u, s, n in zip(uids.tolist(), starts.tolist(), counts.tolist())}
    assert got == {k: sorted(v, key=lambda e: e[0]) for k, v in model.items() if v}
    assert sealed > 50 and built > 10


@pytest.mark.parametrize("seed", range(4))
def test_a_tails_sorted_cache_grows_with_appends_and_equals_a_fresh_sort(seed, append_kernel):
    # A user's sorted tail is cached and the slices appended since are added to it: appended
    # in place when newer than everything cached, merged when some are late; a seal's drop
    # rebuilds it. Either way it must equal sorting the whole tail anew (stable: ties in
    # arrival order), and arrays handed out earlier never change (readers keep them outside
    # the store lock while later appends grow the run).
    rng = np.random.default_rng(seed)
    m = MemTable()
    t, item, end, dropped = 100, 0, 0, []
    handed: list[tuple[np.ndarray, np.ndarray, list[int], list[int]]] = []
    for step in range(120):
        users = ["hot", "other"] if rng.random() < 0.5 else ["hot"]
        counts = [int(rng.integers(1, 6)) for _ in users]
        ts, items = [], []
        for n in counts:
            late = rng.random() < 0.15
            base = t - int(rng.integers(1, 50)) if late else t
            vals = sorted(base + int(x) for x in rng.integers(0, 3, n))  # ties within a call
            if not late:
                t = max(t, vals[-1])
            ts += vals
            items += list(range(item, item + n))
            item += n
        end += 1
        m.add_grouped(users, counts, *chunk(ts, items), end=end)
        if rng.random() < 0.6:  # a read: uses and extends the cache
            tail = m.get("hot")
            got_ts, got_cols = tail.sorted_arrays()
            fresh = type(tail)(tail.uid)
            fresh.refs, fresh.count = list(tail.refs), tail.count
            want_ts, want_cols = fresh.sorted_arrays()
            assert got_ts.tolist() == want_ts.tolist(), step
            assert got_cols["item"].tolist() == want_cols["item"].tolist(), step
            assert got_ts.size == tail.count
            handed.append((got_ts, got_cols["item"], got_ts.tolist(), got_cols["item"].tolist()))
            for a_ts, a_item, was_ts, was_item in handed:
                assert a_ts.tolist() == was_ts and a_item.tolist() == was_item, step
        if rng.random() < 0.05:  # a partial seal of everything so far
            dropped.append(m.drop_through("hot", end))
