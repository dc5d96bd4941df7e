"""laser_reader: every batch element checked against `vault.read(...)` (issue 7).

Rows cover users with no events, fewer events than max_len, exactly max_len and far more; events
sit both in sealed segments and in the memtable; ties in time keep arrival order.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from seqvault import Schema, SeqVault, ValidationError
from seqvault.laser_reader import LaserReader, StringMap, TimeBuckets

from ..conftest import behavior_schema_dict

MAX_LEN = 16
ACTIONS = ["click", "impression", "like", "share", "zzz-rare"]
ACTION_MAP = {"click": 1, "impression": 2, "like": 3, "share": 4}  # "zzz-rare" is OOV
OOV = 99


def make_schema(user_type: str = "int64") -> Schema:
    # The bundled item_id, action and category, plus a float column (dtype and padding tests).
    return Schema.from_dict(behavior_schema_dict(
        ["item_id", "action", "category"], user_type=user_type,
        extra=[{"name": "score", "type": "float32", "default": 0.0}]))


def events(rng: np.random.Generator, n: int, t0: int = 1_000_000) -> dict[str, object]:
    ts = t0 + np.sort(rng.integers(0, 50 * max(n, 1), size=n))
    if n > 4:
        ts[3] = ts[2]  # a tie: arrival order decides
    return {
        "ts": ts,
        "item_id": rng.integers(1, 1 << 40, size=n),
        "action": list(rng.choice(ACTIONS, size=n)),
        "category": rng.integers(0, 60000, size=n).astype(np.uint16),
        "score": rng.random(n).astype(np.float32),
    }


# user → number of events: none, fewer than max_len, exactly max_len, far more
SIZES = {1: 0, 2: 1, 3: 5, 4: MAX_LEN, 5: MAX_LEN + 1, 6: 10 * MAX_LEN, 7: 300}


@pytest.fixture(scope="module")
def vault(tmp_path_factory: pytest.TempPathFactory):
    rng = np.random.default_rng(7)
    path = tmp_path_factory.mktemp("lr") / "store"
    v = SeqVault.open(path, schema=make_schema())
    for u, n in SIZES.items():
        if n:
            v.append(u, events(rng, n))
    v.flush()  # sealed segments ...
    for u in (3, 6, 7):  # ... plus memtable tails, some interleaving in time with the segments
        v.append(u, events(rng, 7, t0=1_000_000 + 20 * SIZES[u]))
    yield v
    v.close()


def user_ids() -> list[int]:
    return [1, 2, 3, 4, 5, 6, 7, 404]  # 1 has no events, 404 was never written


def map_actions(arr: np.ndarray) -> np.ndarray:
    return np.array([ACTION_MAP.get(s, OOV) for s in arr], dtype=np.int64)


def check_batch(vault: SeqVault, reader: LaserReader, batch, users, befores, ref_times) -> None:
    b_count, width = batch.mask.shape
    assert b_count == len(users)
    assert list(batch.user_id) == users
    cols = reader.columns
    for b, u in enumerate(users):
        seq = vault.read(u, last=reader.max_len, columns=["ts", *cols], before=befores[b])
        n = len(seq)
        assert batch.lengths[b] == n
        real = slice(width - n, width) if reader.padding_side == "left" else slice(0, n)
        pad = np.ones(width, dtype=bool)
        pad[real] = False
        assert batch.mask[b, real].all() and not batch.mask[b, pad].any()
        for c in cols:
            want = map_actions(seq[c]) if c == "action" else seq[c]
            got = batch[c][b]
            np.testing.assert_array_equal(got[real], want)
            assert (got[pad] == reader.pad_values[c]).all()
            assert got.dtype == reader.dtypes[c]
        if batch.age_ms is not None:
            want_age = ref_times[b] - seq["ts"]  # ms store: age in ms
            np.testing.assert_array_equal(batch.age_ms[b, real], want_age)
            assert (batch.age_ms[b, pad] == 0).all() and (batch.age_bucket[b, pad] == 0).all()
            assert (batch.age_bucket[b, real] >= 1).all()
        if befores[b] is not None:
            assert (seq["ts"] < befores[b]).all()


@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("pad_to", ["max_len", "longest"])
@pytest.mark.parametrize("before_mode", ["none", "scalar", "per_user", "numpy"])
def test_read_batch_matches_read(vault, side, pad_to, before_mode):
    users = user_ids()
    reader = LaserReader(vault, ["item_id", "action", "category", "score"], max_len=MAX_LEN,
                         padding_side=side, pad_value={"item_id": -1, "category": 7},
                         string_maps={"action": ACTION_MAP}, oov_id=OOV, pad_to=pad_to)
    rng = np.random.default_rng(len(before_mode))
    per_user = [int(x) for x in rng.integers(1_000_000, 1_020_000, size=len(users))]
    if before_mode == "none":
        before, befores = None, [None] * len(users)
    elif before_mode == "scalar":
        before, befores = 1_003_000, [1_003_000] * len(users)
    elif before_mode == "per_user":
        before, befores = per_user, per_user
    else:
        before, befores = np.array(per_user, dtype=np.int64), per_user
    req = 2_000_000
    batch = reader.read_batch(users, before=before, request_time=req)
    if pad_to == "max_len":
        assert batch.mask.shape[1] == MAX_LEN
    else:
        assert batch.mask.shape[1] == max(1, int(batch.lengths.max()))
    check_batch(vault, reader, batch, users, befores, [req] * len(users))
    # the newest event sits in the last column with left padding, the first ones with right
    rows = batch.lengths > 0
    if side == "left":
        assert batch.mask[rows, -1].all()
    else:
        assert batch.mask[rows, 0].all()


def test_truncation_keeps_most_recent_and_long_user_hits_max_len(vault):
    reader = LaserReader(vault, ["ts", "item_id"], max_len=MAX_LEN, time_features=False)
    batch = reader.read_batch([6, 7])
    full = vault.read(6, columns=["ts", "item_id"])
    assert len(full) > MAX_LEN and batch.lengths[0] == MAX_LEN
    np.testing.assert_array_equal(batch["item_id"][0], full["item_id"][-MAX_LEN:])
    assert (np.diff(batch["ts"][0]) >= 0).all()  # chronological
    assert batch.age_ms is None and batch.age_bucket is None


def test_age_defaults_to_before_then_now(vault):
    reader = LaserReader(vault, ["ts"], max_len=MAX_LEN)
    befores = [1_002_000, 1_010_000, 1_004_000]
    batch = reader.read_batch([3, 6, 7], before=befores)
    np.testing.assert_array_equal(batch.request_time, befores)
    for b in range(3):
        m = batch.mask[b]
        np.testing.assert_array_equal(batch.age_ms[b, m], befores[b] - batch["ts"][b, m])
        assert (batch.age_ms[b, m] > 0).all()  # strictly before
    now_batch = reader.read_batch([3])
    assert now_batch.request_time[0] > 1_600_000_000_000  # wall clock in ms


def test_jagged_matches_padded(vault):
    users = user_ids()
    reader = LaserReader(vault, ["item_id", "action"], max_len=MAX_LEN,
                         string_maps={"action": ACTION_MAP}, oov_id=OOV)
    befores = [1_001_000 + 997 * i for i in range(len(users))]
    jag = reader.read_jagged(users, before=befores, request_time=3_000_000)
    pad = reader.read_batch(users, before=befores, request_time=3_000_000)
    assert jag.offsets.shape == (len(users) + 1,) and jag.offsets[0] == 0
    np.testing.assert_array_equal(np.diff(jag.offsets), pad.lengths)
    for b, u in enumerate(users):
        seq = vault.read(u, last=MAX_LEN, columns=["item_id", "action"], before=befores[b])
        np.testing.assert_array_equal(jag.row(b, "item_id"), seq["item_id"])
        np.testing.assert_array_equal(jag.row(b, "action"), map_actions(seq["action"]))
    back = pad.to_jagged()
    for c in ("item_id", "action"):
        np.testing.assert_array_equal(back.values[c], jag.values[c])
    np.testing.assert_array_equal(back.age_ms, jag.age_ms)
    np.testing.assert_array_equal(back.offsets, jag.offsets)


def test_time_buckets_log_spaced():
    tb = TimeBuckets(n_buckets=10, min_ms=1000, max_ms=1e9)
    ages = np.array([-5, 0, 999, 1000, 10_000, 1e9 - 1, 1e9, 1e12])
    got = tb.bucketize(ages)
    assert got[0] == got[1] == got[2] == 1
    assert got[3] == 2
    assert (np.diff(got) >= 0).all()
    assert got[-1] == got[-2] == 9 and got[-3] == 8
    assert len(tb.edges) == 8
    ratios = tb.edges[1:] / tb.edges[:-1]
    np.testing.assert_allclose(ratios, ratios[0])


def test_string_map_store_codes(vault):
    reader = LaserReader(vault, ["action"], max_len=MAX_LEN, string_maps={"action": "store"})
    batch = reader.read_batch([6])
    seq = vault.read(6, last=MAX_LEN, columns=["action"])
    codes = vault.dicts["action"].codes
    np.testing.assert_array_equal(batch["action"][0], [codes[s] + 1 for s in seq["action"]])


def test_string_map_unknown_without_oov_is_an_error(vault):
    reader = LaserReader(vault, ["action"], max_len=MAX_LEN,
                         string_maps={"action": {"click": 1}})
    with pytest.raises(ValidationError, match="action") as ei:
        reader.read_batch([6, 7])
    assert ei.value.column == "action" and ei.value.value in ACTIONS
    ok = LaserReader(vault, ["action"], max_len=MAX_LEN,
                     string_maps={"action": StringMap({"click": 1}, oov=5)})
    got = ok.read_batch([6])["action"][0]
    assert set(np.unique(got[got > 0])) <= {1, 5}


@pytest.mark.parametrize("kwargs, match", [
    ({"columns": ["nope"]}, "unknown column"),
    ({"columns": ["item_id"], "max_len": 0}, "max_len"),
    ({"columns": ["item_id"], "max_len": -3}, "max_len"),
    ({"columns": ["item_id"], "max_len": 2.5}, "max_len"),
    ({"columns": ["action"]}, "string column"),
    ({"columns": ["item_id"], "padding_side": "middle"}, "padding_side"),
    ({"columns": ["item_id"], "pad_to": "longer"}, "pad_to"),
    ({"columns": ["category"], "pad_value": -1}, "pad_value"),
    ({"columns": ["item_id"], "pad_value": {"score": 0}}, "pad_value"),
    ({"columns": ["item_id"], "string_maps": {"item_id": {}}}, "not a string column"),
    ({"columns": ["item_id"], "time_features": "yes"}, "time_features"),
])
def test_bad_construction(vault, kwargs, match):
    with pytest.raises(ValidationError, match=match):
        LaserReader(vault, **kwargs)


@pytest.mark.parametrize("before, match", [
    ([1, 2], "shape"),  # wrong length for 3 users
    (np.array([[1, 2, 3]]), "shape"),
    ([1.5, 2.0, 3.0], "integer"),
    (np.array([1.0, 2.0, 3.0]), "integer"),
    ("1000", "integer"),
    (1000.0, "integer"),
    (True, "integer"),
])
def test_bad_before(vault, before, match):
    reader = LaserReader(vault, ["item_id"], max_len=MAX_LEN)
    with pytest.raises(ValidationError, match=match):
        reader.read_batch([2, 3, 4], before=before)
    with pytest.raises(ValidationError, match=match):
        reader.read_batch([2, 3, 4], request_time=before)


def test_missing_users_and_empty_batch(vault):
    reader = LaserReader(vault, ["item_id"], max_len=MAX_LEN)
    batch = reader.read_batch([404, 1])
    assert list(batch.lengths) == [0, 0] and not batch.mask.any()
    assert (batch["item_id"] == 0).all()
    empty = reader.read_batch([])
    assert empty.mask.shape == (0, MAX_LEN) and empty["item_id"].shape == (0, MAX_LEN)
    assert reader.read_jagged([]).offsets.tolist() == [0]


def test_string_user_ids(tmp_path):
    rng = np.random.default_rng(1)
    with SeqVault.open(tmp_path / "s", schema=make_schema("string")) as v:
        v.append("alice", events(rng, 20))
        reader = LaserReader(v, ["item_id"], max_len=8)
        batch = reader.read_batch(["alice", "bob"])
        assert batch.user_id.tolist() == ["alice", "bob"]
        np.testing.assert_array_equal(batch["item_id"][0], v.read("alice", last=8)["item_id"])
        assert batch.lengths.tolist() == [8, 0]
        with pytest.raises(ValidationError):
            reader.read_batch([3])


def test_string_map_unicode_and_object_paths_agree():
    mapping = {"a": 1, "ab": 2, "": 3, "ümlaut": 4, "日本": 5, "a" * 40: 6, "b\x00": 7}
    rng = np.random.default_rng(0)
    pool = [*mapping, "abc", "ba", "日", "zz"]
    strings = [pool[i] for i in rng.integers(0, len(pool), size=2000)]
    want = np.array([mapping.get(s, -9) for s in strings])
    sm = StringMap(mapping, oov=-9, column="x")
    uni = np.array(strings)  # numpy unicode, what the store returns
    obj = np.array(strings, dtype=object)
    np.testing.assert_array_equal(sm.encode(obj), want)
    # numpy unicode cannot hold a trailing NUL ("b\x00" reads back as "b"), the rest agrees
    want_u = np.array([mapping.get(s, -9) for s in uni.tolist()])
    np.testing.assert_array_equal(sm.encode(uni), want_u)
    np.testing.assert_array_equal(sm.encode(uni[::3]), want_u[::3])  # non-contiguous view
    np.testing.assert_array_equal(sm.encode(np.array(["a", "ab"])), [1, 2])  # narrow width
    with pytest.raises(ValidationError, match="'zz'"):
        StringMap(mapping, column="x").encode(np.array(["a", "zz"]))


def test_before_as_tensor_or_arrow(vault):
    torch = pytest.importorskip("torch")
    import pyarrow as pa

    reader = LaserReader(vault, ["item_id"], max_len=MAX_LEN, time_features=False)
    befores = [1_001_000, 1_002_000, 1_003_000]
    want = reader.read_batch([5, 6, 7], before=befores)
    for form in (torch.tensor(befores), pa.array(befores, type=pa.int64())):
        got = reader.read_batch([5, 6, 7], before=form)
        np.testing.assert_array_equal(got["item_id"], want["item_id"])
    with pytest.raises(ValidationError, match="integer"):
        reader.read_batch([5, 6, 7], before=torch.tensor([1.0, 2.0, 3.0]))


def test_empty_rows_do_not_change_string_path(vault):
    """An empty user in the batch must not turn the store's unicode strings into objects."""
    seen = []
    sm = StringMap(ACTION_MAP, oov=OOV)
    orig = sm.encode

    def spy(arr):
        seen.append(arr.dtype.kind)
        return orig(arr)

    sm.encode = spy  # type: ignore[method-assign]
    reader = LaserReader(vault, ["action"], max_len=MAX_LEN, string_maps={"action": sm})
    reader.read_batch([1, 6, 404, 7])
    assert seen == ["U"]
    np.testing.assert_array_equal(reader.read_batch([1, 404])["action"], 0)


@settings(max_examples=60, deadline=None)
@given(lengths=st.lists(st.integers(0, 12), min_size=0, max_size=8),
       width=st.integers(1, 12), side=st.sampled_from(["left", "right"]),
       pad=st.integers(-5, 5))
def test_pad_matches_a_loop(lengths, width, side, pad):
    from seqvault.laser.batch import pad_flat, positions_mask

    lens = np.minimum(np.array(lengths, dtype=np.int64), width)
    flat = np.arange(int(lens.sum()), dtype=np.int64) + 100
    mask = positions_mask(lens, width, side)
    got = pad_flat(flat, mask, pad)
    want = np.full((len(lens), width), pad, dtype=np.int64)
    pos = 0
    for b, n in enumerate(lens.tolist()):
        row = flat[pos:pos + n]
        pos += n
        if side == "left":
            want[b, width - n:] = row
        else:
            want[b, :n] = row
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(mask.sum(axis=1), lens)
