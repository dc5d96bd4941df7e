"""Sealing memtable tails into real-time segments: one long tail on its own (a partial seal),
or every tail at once (a full flush). Encodes and appends through a `SegmentWriter`, and
returns each user's new extent list for the caller's `Edit`; publishing, the log and the
memtable stay with the store (docs/design/realtime.md).

Late events (a timestamp at or below the newest one the user already has sealed) go to a
segment of their own: the in-order segment then starts strictly after everything older, so a
"last N" read stops at it (reads.choose_sources) instead of decoding every older segment that
one late event made overlap.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import fold, segment_batch
from .crc_many import crc_rows, gather_rows
from .fold import read_segments
from .index import EXTENT_DTYPE, Extent, ExtentBatch, user_hash, user_hashes_int64
from .layout import segment_bounds
from .manifest import Manifest
from .memtable import GatheredTail, MemTable, UserTail
from .owners import DICT_CAP as OWNER_DICT_CAP
from .segment import CRC, DIR_SIZE, FIXED_SIZE, KEY_INT64, KEY_STRING, MAGIC, key_bytes
from .segment_writer import SegmentWriter, encode_user_segment

WRITE_CHUNK = 8 << 20  # bytes of segments per write() in a full flush
ENCODE_PIECES = 65_536  # users' pieces per encoder call in a full flush


def seal_tails(m: Manifest, w: SegmentWriter,
               tails: list[tuple[Any, UserTail | GatheredTail]]
               ) -> tuple[dict[int, list[Extent]], int]:
    """Each tail, sorted and cut into recency tiers, appended to `w`. Returns the users' new
    extent lists (the new segments before the old ones) and the number of events."""
    seg_max = int(m.settings["segment_events"])
    level = int(m.settings["zstd_level"])
    users: dict[int, list[Extent]] = {}
    events = 0
    for key, tail in tails:
        ts, cols = tail.sorted_arrays()
        h = m.claim(key)  # its slot: a new key may not take another's (hash collisions)
        old = m.index.extents_of(h)
        cut = late_cut(ts, old)
        fresh = []
        for a, b in ((0, cut), (cut, int(ts.size))):  # late part, then the in-order part
            if b <= a:
                continue
            bounds = segment_bounds(ts[a:b], seg_max)
            for lo, hi in zip(bounds[:-1], bounds[1:]):
                lo, hi = lo + a, hi + a
                blob = encode_user_segment(m.schema, key, ts[lo:hi],
                                           {k: v[lo:hi] for k, v in cols.items()}, level)
                fresh.append(w.append(blob, hi - lo, int(ts[lo]), int(ts[hi - 1])))
        users[h] = list(reversed(fresh)) + old
        events += int(ts.size)
    return users, events


def late_cut(ts: np.ndarray, old: list[Extent]) -> int:
    """Index in sorted `ts` where events newer than every sealed one start (0: none late)."""
    if not old or not ts.size:
        return 0
    newest = max(e.max_ts for e in old)
    return int(np.searchsorted(ts, newest, side="right"))


def seal_memtable(m: Manifest, w: SegmentWriter, mem: MemTable
                  ) -> dict[int, list[Extent]] | ExtentBatch:
    """Every tail of `mem` appended to `w`; returns each user's new extent list (a dict, or
    arrays for the vectorised path). Tails are short (a long one is sealed on its own), so all
    users are encoded at once by the vectorised encoder when the schema allows it."""
    schema = m.schema
    seg_max = int(m.settings["segment_events"])
    if segment_batch.supported(schema):
        uids, ts, cols, starts, counts = mem.grouped_uids()
        if not uids.size:
            return {}
        if int(counts.max()) <= seg_max:
            return _seal_many(m, w, mem, uids, ts, cols, starts, counts)
    return _seal_each(m, w, mem)


def _seal_many(m: Manifest, w: SegmentWriter, mem: MemTable, uids: np.ndarray, ts: np.ndarray,
               cols: dict[str, np.ndarray], starts: np.ndarray, counts: np.ndarray
               ) -> ExtentBatch:
    """The vectorised full flush: no Python step per user (docs/design/realtime.md, "Many-user
    batches"). Each user becomes one piece, or two when it has late events (the late part
    first), and the pieces are encoded together as if they were users."""
    schema = m.schema
    level = int(m.settings["zstd_level"])
    n = uids.size
    if schema.user_type == "string":
        keys = mem.key_array(uids)
        kbytes: list[bytes] | np.ndarray = [key_bytes(k)[1] for k in keys.tolist()]
        assert isinstance(kbytes, list)
        hashes = np.fromiter((user_hash(b) for b in kbytes), dtype=np.uint64, count=n)
        key_type = KEY_STRING
    else:
        keys = kbytes = mem.key_array(uids, np.int64)
        hashes = user_hashes_int64(keys)
        key_type = KEY_INT64
    idx = m.index
    rows = idx.find_many(hashes)
    hashes, rows = claim_many(m, keys, kbytes, hashes, rows)
    old_slots, old_counts = idx.chains(rows)
    # Users whose small real-time segments are folded into their new one (fold.py): their
    # events join the memtable's, and their old extents leave the new list.
    folded = fold.fold_old(m, kbytes, hashes, old_slots, old_counts, counts)
    if folded is not None:
        ts, cols, starts, counts = fold.join(folded, m.schema, ts, cols, starts, counts)
        old_slots = old_slots[~np.repeat(folded.fold, old_counts)]
        old_counts = np.where(folded.fold, 0, old_counts)
    # Late events: at or below the newest timestamp the user already has sealed (late_cut).
    newest = np.full(n, np.iinfo(np.int64).min, dtype=np.int64)
    if old_slots.size:
        owner = np.repeat(np.arange(n), old_counts)
        np.maximum.at(newest, owner, idx.e_max[old_slots])
    user_of = np.repeat(np.arange(n), counts)
    late = np.add.reduceat((ts <= newest[user_of]).astype(np.int64), starts)
    # Pieces, user by user: [late part, in-order part], the empty ones left out.
    p_starts = np.stack([starts, starts + late], axis=1).ravel()
    p_counts = np.stack([late, counts - late], axis=1).ravel()
    p_user = np.repeat(np.arange(n), 2)
    keep = p_counts > 0
    p_starts, p_counts, p_user = p_starts[keep], p_counts[keep], p_user[keep]
    p_kbytes = (kbytes[p_user] if isinstance(kbytes, np.ndarray)
                else [kbytes[u] for u in p_user.tolist()])
    fresh = np.zeros(p_user.size, dtype=EXTENT_DTYPE)
    # Encoded and written ENCODE_PIECES at a time: the encoder's temporaries are several times
    # its input, and a memtable of 2M events encoded at once peaked at ~700 MiB above it
    # (docs/design/realtime.md, "The memtable's cap in bytes").
    for i in range(0, p_user.size, ENCODE_PIECES):
        j = min(i + ENCODE_PIECES, p_user.size)
        a = int(p_starts[i])
        b = int(p_starts[j - 1] + p_counts[j - 1])  # the pieces tile the rows, in order
        spec = [(c.id, c.type, cols[c.name][a:b], c.level if c.level is not None else level)
                for c in schema.columns]
        enc = segment_batch.encode_many(key_type, p_kbytes[i:j], schema.version, ts[a:b],
                                        spec, p_starts[i:j] - a, p_counts[i:j])
        part = fresh[i:j]
        part["file"], part["off"] = write_pieces(w, enc)
        part["len"], part["count"] = enc.lengths, enc.counts
        part["min_ts"], part["max_ts"] = enc.mins, enc.maxs
        del enc
    # Each user's new list, newest first: its pieces reversed, then its old extents.
    n_fresh = np.bincount(p_user, minlength=n)
    total = n_fresh + old_counts
    first = np.zeros(n, dtype=np.int64)
    np.cumsum(total[:-1], out=first[1:])
    out = np.zeros(int(total.sum()), dtype=EXTENT_DTYPE)
    p_first = np.zeros(n, dtype=np.int64)
    np.cumsum(n_fresh[:-1], out=p_first[1:])
    rank = np.arange(p_user.size) - p_first[p_user]  # 0 = the user's first (oldest) piece
    out[first[p_user] + (n_fresh[p_user] - 1 - rank)] = fresh
    if old_slots.size:
        o_first = np.zeros(n, dtype=np.int64)
        np.cumsum(old_counts[:-1], out=o_first[1:])
        owner = np.repeat(np.arange(n), old_counts)
        o_rank = np.arange(old_slots.size) - o_first[owner]
        out[first[owner] + n_fresh[owner] + o_rank] = idx.extent_records(old_slots)
    return ExtentBatch(hashes, total.astype(np.int64), out)


def claim_many(m: Manifest, keys: np.ndarray, kbytes: list[bytes] | np.ndarray,
               hashes: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The slots of a vectorised flush's users (`Manifest.claim` semantics, docs/format/
    index.md "Slot hashes"): `hashes` are the default slots and `rows` their index rows. A
    user whose default slot is free — no extents there, no other user of this batch or of this
    operation on it, not an alternate slot, and the key has no alias — takes it as it is, in
    whole-array steps. The rest go through `claim` one by one: aliased keys, keys sharing a
    default slot, and keys whose slot has extents that the writer does not know to be theirs
    (`Manifest.owners`; else `claim` reads the owner's key from its segment header).
    Returns (slots, rows)."""
    n = hashes.size
    idx = m.index

    def kb_of(i: int) -> bytes:
        return (kbytes[i] if isinstance(kbytes, list)
                else int(kbytes[i]).to_bytes(8, "little", signed=True))

    special = np.zeros(n, dtype=bool)
    heads = np.full(n, -1, dtype=np.int64)
    has = rows >= 0
    heads[has] = idx.u_head[rows[has]]
    taken = np.flatnonzero(heads >= 0)  # default slots with extents: whose?
    owners = m.owners
    if taken.size:
        if isinstance(kbytes, list):
            t_kb = [kbytes[i] for i in taken.tolist()]
            known = np.asarray([owners.get(h) == kb
                                for h, kb in zip(hashes[taken].tolist(), t_kb)], dtype=bool)
        else:  # int64 keys: one whole-array lookup (a million users a flush, at 1M users)
            known = owners.known_int(hashes[taken], kbytes[taken])
        if not known.all():  # read the owners' keys from their newest headers, all at once
            ask = np.flatnonzero(~known)
            ask_kb = ([t_kb[i] for i in ask.tolist()] if isinstance(kbytes, list) else
                      _int_key_bytes(kbytes[taken[ask]]))
            known[ask] = own_heads(m, heads[taken[ask]], ask_kb)
        special[taken[~known]] = True
    uniq, inverse, dup = np.unique(hashes, return_inverse=True, return_counts=True)
    if bool((dup > 1).any()):  # two keys of this batch with one default slot
        special |= (dup > 1)[inverse]
    # Slots that are an alias's or already claimed by this operation, and the default slots of
    # aliased keys (such a key's slot is its alias): whole-array membership tests.
    busy = [*idx.alias_slots, *m.claimed, *(user_hash(kb) for kb in idx.aliases)]
    if busy:
        special |= np.isin(hashes, np.fromiter(busy, dtype=np.uint64, count=len(busy)))
    plain = np.flatnonzero(~special)
    # A later seal of these users skips the header read (seqvault/owners.py).
    if not isinstance(kbytes, list):
        owners.set_int(hashes[plain], kbytes[plain])
    elif plain.size <= OWNER_DICT_CAP:
        owners.update(list(zip(hashes[plain].tolist(), [kbytes[i] for i in plain.tolist()])))
    odd = np.flatnonzero(special)
    if not odd.size:
        return hashes, rows
    # The plain users' slots are this operation's too: `claim` must not hand them out.
    for i in plain.tolist():
        kb = kb_of(i)
        m.claims[kb] = int(hashes[i])
        m.claimed[int(hashes[i])] = kb
    hashes = hashes.copy()
    for i in odd.tolist():
        hashes[i] = m.claim(keys[i].item() if isinstance(keys[i], np.generic) else keys[i])
    rows = rows.copy()
    rows[odd] = idx.find_many(hashes[odd])
    return hashes, rows


def own_heads(m: Manifest, heads: np.ndarray, kbs: list[bytes]) -> np.ndarray:
    """Whether the segment at each extent slot `heads` is the key's in `kbs` (bool each): its
    header, read in bulk, has the magic, that key and a good header checksum for the current
    schema's column count. False sends the user to `Manifest.claim`, which reads the header
    on its own (another key's, an older layout, or damage it reports)."""
    n = len(kbs)
    idx = m.index
    ncols = len(m.schema.columns) + 1
    klen = np.fromiter((len(k) for k in kbs), dtype=np.int64, count=n)
    size = FIXED_SIZE + klen + ncols * DIR_SIZE + CRC.size
    ext = idx.extent_records(heads)
    ext["len"] = np.minimum(ext["len"], size)
    buf, offsets = read_segments(m.files, ext)
    out = np.zeros(n, dtype=bool)
    if buf is None:
        return out
    data = np.frombuffer(buf, dtype=np.uint8)
    full = ext["len"].astype(np.int64) == size
    for length in np.unique(size).tolist():
        sel = np.flatnonzero(full & (size == length))
        if not sel.size:
            continue
        o = offsets[sel]
        if np.array_equal(o, o[0] + np.arange(o.size) * length):
            # The usual case (one key length, every header read whole): the headers lie one
            # after another, so a reshape; the gather below builds an int64 index per byte.
            rows = data[int(o[0]):int(o[0]) + o.size * length].reshape(o.size, length)
        else:
            rows = gather_rows(data, o, length)
        k = length - FIXED_SIZE - ncols * DIR_SIZE - CRC.size
        want = np.frombuffer(b"".join(kbs[i] for i in sel.tolist()),
                             dtype=np.uint8).reshape(sel.size, k)
        crc = rows[:, -CRC.size:].copy().view("<u4").reshape(-1)
        ok = ((rows[:, :4] == np.frombuffer(MAGIC, dtype=np.uint8)).all(axis=1)
              & (rows[:, 18].astype(np.int64) + (rows[:, 19].astype(np.int64) << 8) == k)
              & (rows[:, FIXED_SIZE:FIXED_SIZE + k] == want).all(axis=1)
              & (crc_rows(rows[:, :-CRC.size]) == crc))
        out[sel] = ok
    return out


def _int_key_bytes(keys: np.ndarray) -> list[bytes]:
    """`key_bytes` of many int64 keys (8 bytes little-endian each)."""
    raw = np.ascontiguousarray(keys, dtype="<i8").tobytes()
    return [raw[j:j + 8] for j in range(0, len(raw), 8)]


def write_pieces(w: SegmentWriter, enc: segment_batch.Encoded) -> tuple[np.ndarray, np.ndarray]:
    """Append every segment of `enc` in writes of about WRITE_CHUNK bytes (a file rolls over
    only between writes); returns each segment's (file id, offset)."""
    n = len(enc)
    files = np.zeros(n, dtype=np.int64)
    offs = np.zeros(n, dtype=np.int64)
    ends = enc.offsets + enc.lengths
    view = enc.buf.data  # a memoryview: no copy until the write's join
    i = 0
    while i < n:
        base = int(enc.offsets[i])
        # As many segments as fit in WRITE_CHUNK from here (at least one).
        j = max(i + 1, int(np.searchsorted(ends, base + WRITE_CHUNK, side="right")))
        fid, off = w.append_many([view[base:int(ends[j - 1])]])
        files[i:j] = fid
        offs[i:j] = off + (enc.offsets[i:j] - base)
        i = j
    return files, offs


def _seal_each(m: Manifest, w: SegmentWriter, mem: MemTable) -> dict[int, list[Extent]]:
    """A full flush one user at a time: schemas the vectorised encoder does not take (float
    or bool columns), or a tail longer than a segment."""
    schema = m.schema
    seg_max = int(m.settings["segment_events"])
    level = int(m.settings["zstd_level"])
    keys, ts, cols, starts, counts = mem.grouped()
    limit = fold.fold_limit(m)
    users: dict[int, list[Extent]] = {}
    slots = [m.claim(key) for key in keys]  # a new key may not take another's (collisions)
    olds = [m.index.extents_of(h) for h in slots]
    # fold.candidates, one user at a time; fold.FOLD_MIN_USERS of them, or nobody is folded
    can = [bool(old) and all(m.catalog[x.file].kind == "rt" for x in old)
           and sum(x.count for x in old) + int(c) <= limit for old, c in zip(olds, counts)]
    folding = sum(can) >= max(1, fold.FOLD_MIN_USERS)
    for i, key in enumerate(keys):
        h, old = slots[i], olds[i]
        s, e = int(starts[i]), int(starts[i] + counts[i])
        u_ts, u_cols = ts[s:e], {k: v[s:e] for k, v in cols.items()}
        got = fold.old_events(m, h, list(reversed(old))) if folding and can[i] else None
        if got is not None:  # folded (fold.py): one segment of old and new events
            o_ts, o_cols = got
            u_ts = np.concatenate((o_ts, u_ts))
            order = np.argsort(u_ts, kind="stable")  # ties: the old events first
            u_ts = u_ts[order]
            u_cols = {c.name: np.concatenate((o_cols[c.id].astype(u_cols[c.name].dtype),
                                              u_cols[c.name]))[order] for c in schema.columns}
            old = []
        cut = late_cut(u_ts, old)
        pieces: list[Extent] = []
        for a, b in ((0, cut), (cut, int(u_ts.size))):
            for lo in range(a, b, seg_max):
                hi = min(lo + seg_max, b)
                blob = encode_user_segment(schema, key, u_ts[lo:hi],
                                           {k: v[lo:hi] for k, v in u_cols.items()}, level)
                pieces.append(w.append(blob, hi - lo, int(u_ts[lo]), int(u_ts[hi - 1])))
        users[h] = list(reversed(pieces)) + old
    return users
