"""Many-user batches (docs/design/realtime.md, "Many-user batches"): every bulk path gives what
the per-user path gives — the same segment bytes, the same index lists, the same tails, the
same events read back, the same extent files on disk."""

from __future__ import annotations

import zlib

import numpy as np
import pytest

from seqvault import Schema, SeqVault, sealing
from seqvault import segment_batch as sb
from seqvault.crc_many import crc_ranges, crc_rows
from seqvault.index import (
    EXTENT_DTYPE,
    Extent,
    ExtentBatch,
    HashIndex,
    pack_extents,
    user_hash,
    user_hashes_int64,
)
from seqvault.memtable import MemTable
from seqvault.segment import KEY_INT64, KEY_STRING, encode_segment, key_bytes, verify_segment

INT_TYPES = ("int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64")


def _schema(user_type: str = "int64") -> Schema:
    return Schema.from_dict({
        "user": {"column": "user_id", "type": user_type},
        "time": {"column": "ts", "unit": "ms"},
        "columns": [
            {"name": "item_id", "type": "int64"},
            {"name": "action", "type": "string"},
            {"name": "dwell", "type": "uint32"},
            {"name": "cat", "type": "int16"},
            {"name": "score", "type": "float32"},
            {"name": "liked", "type": "bool"},
        ],
    })


# ---------------------------------------------------------------------- checksums, hashes
def test_crc_rows_and_ranges_equal_zlib():
    rng = np.random.default_rng(3)
    rows = rng.integers(0, 256, (500, 41), dtype=np.uint8)
    rows[:, :10] = 7  # positions where every row agrees cost nothing; still right
    assert crc_rows(rows).tolist() == [zlib.crc32(r.tobytes()) for r in rows]
    buf = rng.integers(0, 256, 50_000, dtype=np.uint8)
    starts = rng.integers(0, 40_000, 3_000)
    lengths = np.concatenate(([0, 1, 700, 5000], rng.integers(0, 30, 2_996)))
    want = [zlib.crc32(buf[s:s + n].tobytes()) for s, n in zip(starts, lengths)]
    assert crc_ranges(buf, starts, lengths).tolist() == want


def test_user_hashes_int64_equal_user_hash():
    rng = np.random.default_rng(4)
    keys = np.concatenate(([0, 1, -1, 2**63 - 1, -2**63], rng.integers(-2**63, 2**63 - 1, 2000)))
    assert user_hashes_int64(keys).tolist() == [user_hash(key_bytes(int(k))[1]) for k in keys]


# ---------------------------------------------------------------------- the encoder
@pytest.mark.parametrize("copy", ["compiled", "numpy"])  # segment_batch._lay_out's two paths
@pytest.mark.parametrize("seed", range(6))
def test_encode_many_equals_encode_segment_for_random_users_and_schemas(seed, copy,
                                                                        monkeypatch):
    if copy == "numpy":
        from seqvault import crc_many

        monkeypatch.setattr(crc_many, "KERNEL", None)
    rng = np.random.default_rng(seed)
    n_users = int(rng.integers(1, 120))
    counts = rng.choice([1, 2, 3, 5, 40, 70, 300], n_users)
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    n = int(counts.sum())
    ts = np.concatenate([np.sort(rng.integers(0, 10 ** int(rng.integers(1, 13)), c))
                         for c in counts.tolist()]).astype(np.int64)
    spec = []
    for col_id in range(1, int(rng.integers(1, 7)) + 1):
        dtype = (INT_TYPES + ("float32", "float64", "bool"))[int(rng.integers(0, 11))]
        if dtype in ("float32", "float64"):
            values = (rng.standard_normal(n) * 10 ** int(rng.integers(0, 6))).astype(dtype)
            spec.append((col_id, dtype, values, int(rng.integers(1, 4))))
            continue
        if dtype == "bool":
            spec.append((col_id, dtype, rng.random(n) < rng.random(), 3))
            continue
        info = np.iinfo(dtype)
        top = min(int(info.max), 10 ** int(rng.integers(0, 19)))
        values = rng.integers(max(int(info.min), -top), top, n, dtype=np.int64 if info.min < 0
                              else np.uint64, endpoint=True).astype(dtype)
        if rng.random() < 0.3:
            values[:] = values[0]  # constant: CONST for every user
        spec.append((col_id, dtype, values, int(rng.integers(1, 4))))
    string_keys = seed % 2 == 1
    keys = [f"u{int(k)}-{'x' * int(k % 7)}" for k in rng.integers(0, 10**6, n_users)] \
        if string_keys else rng.integers(-2**63, 2**63 - 1, n_users).tolist()
    kbytes = [key_bytes(k)[1] for k in keys]
    enc = sb.encode_many(KEY_STRING if string_keys else KEY_INT64,
                         kbytes if string_keys else np.asarray(keys, dtype=np.int64),
                         3, ts, spec, starts, counts)
    assert len(enc) == n_users
    for u, (key, s, c) in enumerate(zip(keys, starts.tolist(), counts.tolist())):
        want = encode_segment(key, 3, ts[s:s + c],
                              [(cid, t, v[s:s + c], lvl) for cid, t, v, lvl in spec])
        assert enc.blob(u) == want, (u, key)
        head = verify_segment(enc.blob(u))
        assert (head.count, head.min_ts, head.max_ts) == (
            int(enc.counts[u]), int(enc.mins[u]), int(enc.maxs[u]))
    assert enc.buf.tobytes() == b"".join(enc.blob(u) for u in range(n_users))


# ---------------------------------------------------------------------- the index
def _random_lists(rng, hashes):
    return {h: [Extent(int(rng.integers(1, 6)), int(rng.integers(0, 1 << 30)),
                       int(rng.integers(1, 500)), int(rng.integers(1, 9)), 1, 2)
                for _ in range(int(rng.integers(0, 4)))] for h in hashes}


def test_set_extents_many_equals_set_extents_round_after_round():
    rng = np.random.default_rng(5)
    universe = rng.integers(1, 2**63, 300).astype(np.uint64)
    one, many = HashIndex(), HashIndex()
    for _round in range(25):
        hashes = np.unique(rng.choice(universe, int(rng.integers(1, 80))))
        lists = _random_lists(rng, hashes.tolist())
        for h, exts in lists.items():
            one.set_extents(h, exts)
        counts = np.array([len(x) for x in lists.values()], dtype=np.int64)
        ext = np.frombuffer(b"".join(pack_extents(x) for x in lists.values()), EXTENT_DTYPE)
        many.set_extents_many(ExtentBatch(hashes, counts, ext))
        for h in universe.tolist():
            assert many.extents_of(h) == one.extents_of(h)
            assert many.count_of(h) == one.count_of(h)
        assert (len(many), many.live_extents, many.total_events) == (
            len(one), one.live_extents, one.total_events)
        # Its checkpoint reloads to the same lists, free list included.
        again = HashIndex.from_bytes(many.to_bytes())
        assert again.n_free == many.n_free
        assert all(again.extents_of(h) == one.extents_of(h) for h in universe.tolist())


def test_find_many_and_chains_equal_find_and_extents():
    rng = np.random.default_rng(6)
    idx = HashIndex()
    hashes = rng.integers(1, 2**63, 500).astype(np.uint64)
    lists = _random_lists(rng, hashes.tolist())
    for h, exts in lists.items():
        idx.set_extents(h, exts)
    probe = np.concatenate((hashes, rng.integers(1, 2**63, 100).astype(np.uint64)))
    rows = idx.find_many(probe)
    assert rows.tolist() == [idx.find(int(h)) for h in probe]
    slots, counts = idx.chains(rows)
    recs = idx.extent_records(slots)
    pos = 0
    for r, c in zip(rows.tolist(), counts.tolist()):
        got = [Extent(int(x["file"]), int(x["off"]), int(x["len"]), int(x["count"]),
                      int(x["min_ts"]), int(x["max_ts"])) for x in recs[pos:pos + c]]
        assert got == idx.extents(r)
        pos += c


# ---------------------------------------------------------------------- the memtable
def _calls(rng, n_calls, users):
    out, end = [], 0
    for _ in range(n_calls):
        keys = sorted(set(rng.choice(users, int(rng.integers(1, 60))).tolist()))
        counts = rng.integers(1, 5, len(keys)).tolist()
        n = sum(counts)
        end += 100
        out.append((keys, counts, rng.integers(0, 1000, n).astype(np.int64),
                    {"v": rng.integers(0, 9, n).astype(np.int64)}, end))
    return out


def test_memtable_many_user_insert_equals_one_user_insert():
    rng = np.random.default_rng(7)
    users = np.arange(40)
    bulk, small = MemTable(), MemTable()
    small.SMALL = 1 << 30  # every call through the plain loop
    for keys, counts, ts, cols, end in _calls(rng, 60, users):
        full_b = bulk.add_grouped(keys, counts, ts, cols, end=end, seal_at=30)
        full_s = small.add_grouped(keys, counts, ts, cols, end=end, seal_at=30)
        assert full_b == full_s
        if rng.random() < 0.3:  # a reader's tail built midway keeps growing with the chunks
            k = int(rng.choice(users))
            assert (bulk.get(k) is None) == (small.get(k) is None)
        if rng.random() < 0.1:  # a partial seal of one user
            k = int(rng.choice(users))
            assert bulk.drop_through(k, end - 100) == small.drop_through(k, end - 100)
    assert bulk.events == small.events and len(bulk) == len(small)
    for k in users.tolist():
        tb, ts_ = bulk.get(k), small.get(k)
        assert (tb is None) == (ts_ is None)
        if tb is not None:
            a, b = tb.sorted_arrays(), ts_.sorted_arrays()
            assert tb.count == ts_.count
            assert a[0].tolist() == b[0].tolist() and a[1]["v"].tolist() == b[1]["v"].tolist()
    gb, gs = bulk.grouped(), small.grouped()
    assert gb[0] == gs[0] and gb[1].tolist() == gs[1].tolist()
    assert gb[4].tolist() == gs[4].tolist()


# ---------------------------------------------------------------------- the store
def _batches(rng, n_users, per_user, t0, key=int):
    users = np.repeat(np.arange(n_users), per_user)
    order = rng.permutation(users.size)
    n = users.size
    return {"user_id": [key(u) for u in users[order].tolist()] if key is str else users[order],
            "ts": (t0 + rng.integers(0, 86_400_000, n)).astype(np.int64),
            "item_id": rng.integers(0, 1 << 40, n),
            "action": np.array(["view", "click", "like"])[rng.integers(0, 3, n)],
            "dwell": rng.integers(0, 100_000, n).astype(np.uint32),
            "cat": rng.integers(-300, 300, n).astype(np.int16),
            "score": rng.random(n).astype(np.float32), "liked": rng.random(n) < 0.3}


def _load(path, schema, rounds, monkeypatch=None):
    """append_batch rounds, each followed by a full flush; the later rounds hold late events
    (older than what the first flush sealed) for some users."""
    with SeqVault.open(path, schema=schema, durability="none") as v:
        for data in rounds:
            v.append_batch(data)
            v.flush()
    return path


@pytest.mark.parametrize("user_type", ["int64", "string"])
def test_vectorised_flush_writes_the_bytes_of_the_per_user_flush(tmp_path, monkeypatch,
                                                                 user_type):
    schema = _schema(user_type)
    key = str if user_type == "string" else int
    rng = np.random.default_rng(8)
    t0 = 1_790_000_000_000
    rounds = [_batches(rng, 500, 3, t0, key), _batches(rng, 300, 2, t0 - 3_600_000, key),
              _batches(rng, 700, 1, t0 + 86_400_000, key)]
    fast = _load(tmp_path / "fast", schema, rounds)
    calls = []
    real = sealing._seal_each
    monkeypatch.setattr(sealing, "_seal_many", lambda m, w, mem, *a: calls.append(1) or real(
        m, w, mem))
    slow = _load(tmp_path / "slow", schema, rounds)
    assert calls, "the per-user flush did not run"
    fast_files = sorted(p.name for p in (fast / "data").iterdir())
    assert fast_files == sorted(p.name for p in (slow / "data").iterdir())
    for name in fast_files:
        assert (fast / "data" / name).read_bytes() == (slow / "data" / name).read_bytes(), name
    every = np.concatenate([r["user_id"] if key is int else np.array(r["user_id"])
                            for r in rounds])
    with SeqVault.open(fast, read_only=True) as a, SeqVault.open(slow, read_only=True) as b:
        for u in np.unique(every).tolist()[::7]:
            u = key(u)
            ra, rb = a.read(u), b.read(u)
            assert len(ra) == len(rb) > 0
            for c in ra:
                assert ra[c].tolist() == rb[c].tolist()
        # late events became a segment of their own: some users have three extents
        assert a.stats()["segments"] == b.stats()["segments"] > 1500


def test_many_user_batch_reads_back_every_event_across_flush_merge_and_reopen(tmp_path):
    schema = _schema()
    rng = np.random.default_rng(9)
    t0 = 1_790_000_000_000
    data = _batches(rng, 3000, 3, t0)
    want: dict[int, list[int]] = {}
    for u, t in zip(data["user_id"].tolist(), data["ts"].tolist()):
        want.setdefault(u, []).append(t)
    path = tmp_path / "s"
    with SeqVault.open(path, schema=schema, durability="batch", memtable_events=4000) as v:
        for i in range(0, 9000, 1000):  # memtable cap: full flushes in the middle of the load
            v.append_batch({k: c[i:i + 1000] for k, c in data.items()})
        for u in list(want)[:50]:  # from memtable and segments alike
            assert v.read(u)["ts"].tolist() == sorted(want[u])
        v.flush()
        v.merge()
    with SeqVault.open(path, read_only=True) as r:
        assert r.stats()["events"] == 9000
        for u, ts in want.items():
            assert r.read(u)["ts"].tolist() == sorted(ts)


# ---------------------------------------------------------------------- decode and merge
def test_decode_many_inverts_encode_many_and_checks_every_checksum():
    from seqvault.decode_batch import decode_many
    from seqvault.errors import CorruptionError

    rng = np.random.default_rng(10)
    counts = rng.choice([1, 2, 3, 9, 80, 700], 300)
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    n = int(counts.sum())
    ts = np.concatenate([np.sort(rng.integers(0, 10**12, c)) for c in counts]).astype(np.int64)
    spec = [(1, "int64", rng.integers(-2**50, 2**50, n), 3),
            (2, "uint16", rng.integers(0, 60_000, n).astype(np.uint16), 3),
            (3, "string", rng.integers(0, 5, n).astype(np.uint32), 3),
            (4, "float64", rng.standard_normal(n), 3), (5, "bool", rng.random(n) < 0.4, 3),
            (6, "int8", np.full(n, -3, np.int8), 3)]
    cols = [(cid, np.dtype(np.uint32 if t == "string" else t)) for cid, t, _v, _l in spec]
    enc = sb.encode_many(KEY_INT64, np.arange(300, dtype=np.int64), 1, ts, spec, starts, counts)
    buf = enc.buf.tobytes()
    dec = decode_many(buf, enc.offsets, enc.lengths, cols)
    assert dec is not None
    assert dec.counts.tolist() == counts.tolist() and dec.ts.tolist() == ts.tolist()
    for cid, _t, values, _l in spec:
        assert dec.cols[cid].tolist() == values.tolist(), cid
    assert np.ascontiguousarray(dec.keys).view("<i8").reshape(-1).tolist() == list(range(300))
    for where in (int(enc.offsets[7]) + 30, int(enc.offsets[8] + enc.lengths[8]) - 1):
        bad = bytearray(buf)
        bad[where] ^= 0x40  # a header byte of segment 7, the last payload byte of segment 8
        with pytest.raises(CorruptionError):
            decode_many(bytes(bad), enc.offsets, enc.lengths, cols)
    assert decode_many(buf, enc.offsets, enc.lengths, cols[:-1]) is None  # another layout


def test_merge_of_many_small_users_equals_the_per_user_merge(tmp_path, monkeypatch):
    import seqvault.merge_work as work_mod

    schema = _schema()
    rng = np.random.default_rng(11)
    t0 = 1_790_000_000_000
    rounds = [_batches(rng, 400, 2, t0), _batches(rng, 300, 3, t0 + 3_600_000),
              _batches(rng, 500, 1, t0 - 60_000)]
    a = _load(tmp_path / "a", schema, rounds)
    b = _load(tmp_path / "b", schema, rounds)
    real = work_mod.build_small
    batched: list[int] = []

    def counted(*args):
        out = real(*args)
        batched.append(0 if out is None else len(out))
        return out

    monkeypatch.setattr(work_mod, "build_small", counted)
    with SeqVault.open(a) as v:  # (explicit merges run their jobs in a thread of this process)
        got_a = v.merge()
    assert sum(batched) == 400, "the many-small-users path did not take the merged users"
    taken = []
    monkeypatch.setattr(work_mod, "build_small", lambda *args: taken.append(1))
    with SeqVault.open(b) as v:
        got_b = v.merge()
    assert taken, "the per-user merge did not run"
    for k in ("users_merged", "segments_in", "segments_out", "events_in", "bytes_written"):
        assert got_a[k] == got_b[k], k
    assert got_a["users_merged"] == 400  # users 400.. have one real-time segment: left alone
    with SeqVault.open(a, read_only=True) as ra, SeqVault.open(b, read_only=True) as rb:
        for u in range(500):
            x, y = ra.read(u), rb.read(u)
            assert len(x) > 0 and all(x[c].tolist() == y[c].tolist() for c in x), u
            ea, eb = ra.index.extents_of(user_hash(key_bytes(u)[1])), \
                rb.index.extents_of(user_hash(key_bytes(u)[1]))
            assert len(ea) == len(eb) == 1
            if u < 400:  # the merged ones: the same lifetime segment, byte for byte
                assert ra.files.pread(ea[0].file, ea[0].off, ea[0].length) == \
                    rb.files.pread(eb[0].file, eb[0].off, eb[0].length)
