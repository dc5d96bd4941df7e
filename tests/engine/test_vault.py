"""The store API: append, append_batch, read semantics, validation, atomicity, processes."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pytest

from seqvault import (
    NotFound,
    ReadOnlyError,
    SchemaError,
    SeqVault,
    StoreLocked,
    ValidationError,
)

from ..conftest import make_events


def one(ts, item=None, action="view"):
    n = len(ts)
    return {"ts": ts, "item_id": item if item is not None else list(range(n)),
            "action": [action] * n, "dwell": [1] * n, "score": [0.5] * n, "liked": [False] * n}


@pytest.fixture
def vault(tmp_path, schema):
    v = SeqVault.open(tmp_path / "store", schema=schema, durability="none")
    yield v
    v.close()


def test_unknown_user_reads_empty(vault):
    seq = vault.read(12345)
    assert len(seq) == 0
    assert set(seq) == {"ts", "item_id", "action", "dwell", "score", "liked"}
    assert all(len(a) == 0 for a in seq.values())
    assert seq["dwell"].dtype == np.uint32


def test_reads_sorted_by_ts_with_ties_in_arrival_order(vault):
    vault.append(1, one([30, 10, 20, 10], item=[1, 2, 3, 4]))
    vault.append(1, one([10, 5], item=[5, 6]))
    seq = vault.read(1)
    assert seq["ts"].tolist() == [5, 10, 10, 10, 20, 30]
    assert seq["item_id"].tolist() == [6, 2, 4, 5, 3, 1]
    vault.flush()  # same answer from segments
    vault.append(1, one([10], item=[7]))  # and from segments + memtable
    seq = vault.read(1)
    assert seq["item_id"].tolist() == [6, 2, 4, 5, 7, 3, 1]


@pytest.mark.parametrize("flush", [False, True])
def test_last_before_since(vault, flush):
    vault.append(2, one(list(range(100)), item=list(range(100))))
    if flush:
        vault.flush()
    assert vault.read(2, last=3)["ts"].tolist() == [97, 98, 99]
    assert vault.read(2, before=10, last=2)["ts"].tolist() == [8, 9]
    assert vault.read(2, since=95)["ts"].tolist() == [95, 96, 97, 98, 99]
    assert vault.read(2, since=50, before=53)["ts"].tolist() == [50, 51, 52]
    assert vault.read(2, since=50, before=50)["ts"].tolist() == []
    assert vault.read(2, last=1000).count == 100
    proj = vault.read(2, last=2, columns=["item_id"])
    assert list(proj) == ["item_id"] and proj["item_id"].tolist() == [98, 99]


def test_last_across_many_segments_with_late_events(tmp_path, schema):
    # Small segments and late arrivals: "last N" must still be the N newest by timestamp.
    rng = np.random.default_rng(3)
    with SeqVault.open(tmp_path / "s", schema=schema, durability="none") as v:
        all_ts, all_items = [], []
        for i in range(30):
            ts = rng.integers(0, 1000, 7) if i % 3 else rng.integers(1000 * i, 1000 * i + 50, 7)
            items = rng.integers(0, 1 << 30, 7)
            v.append(9, one(ts.tolist(), item=items.tolist()))
            all_ts.append(ts)
            all_items.append(items)
            if i % 4 == 0:
                v.flush()
        order = np.argsort(np.concatenate(all_ts), kind="stable")
        want_items = np.concatenate(all_items)[order]
        for last in (1, 5, 20, 100, 500):
            assert v.read(9, last=last)["item_id"].tolist() == want_items[-last:].tolist()
        ts_sorted = np.concatenate(all_ts)[order]
        for before in (10, 500, 5000, 29_000):
            keep = ts_sorted < before
            assert v.read(9, last=5, before=before)["item_id"].tolist() == \
                want_items[keep][-5:].tolist()


def test_append_batch_groups_users_and_keeps_call_order(vault):
    t = pa.table({"user_id": [3, 1, 3, 1, 2], "ts": [5, 5, 5, 1, 9], "item_id": [1, 2, 3, 4, 5],
                  "action": ["view", "click", "like", "view", "share"], "dwell": [0] * 5,
                  "score": [0.0] * 5, "liked": [True] * 5})
    assert vault.append_batch(t) == 5
    assert vault.read(3)["item_id"].tolist() == [1, 3]
    assert vault.read(1)["item_id"].tolist() == [4, 2]
    assert vault.read(2)["action"].tolist() == ["share"]
    assert vault.stats()["users"] == 3


def test_string_user_ids(tmp_path, string_schema):
    with SeqVault.open(tmp_path / "s", schema=string_schema) as v:
        v.append("alice", one([1, 2]))
        v.append_batch({"user_id": ["bob", "alice"], **one([3, 4])})
        assert v.read("alice")["ts"].tolist() == [1, 2, 4]
        with pytest.raises(ValidationError, match="string"):
            v.read(5)
    with SeqVault.open(tmp_path / "s", read_only=True) as r:
        assert r.read("bob")["ts"].tolist() == [3]
        assert sorted(r.users()) == ["alice", "bob"]


BAD_INPUTS = [
    ({"nope": [1]}, "nope", "unknown column"),
    ({"drop": "liked"}, "liked", "missing column"),
    ({"item_id": [1, 2, 3]}, "item_id", "same length"),
    ({"item_id": [1.5, 2.0]}, "item_id", "fractional"),
    ({"dwell": [-1, 3]}, "dwell", "-1"),
    ({"dwell": [1, 2**32]}, "dwell", "4294967296"),
    ({"item_id": [2**63, 1]}, "item_id", "9223372036854775808"),
    ({"score": [float("nan"), 1.0]}, "score", "NaN"),
    ({"score": [None, 1.0]}, "score", "None"),
    ({"action": ["view", None]}, "action", "None"),
    ({"action": ["view", 3]}, "action", "not a string"),
    ({"ts": [-5, 1]}, "ts", "timestamp"),
    ({"ts": [1, 10**20]}, "ts", "timestamp"),
    ({"liked": [2, 0]}, "liked", "bool"),
    ({"item_id": ["a", "b"]}, "item_id", "string"),
]


@pytest.mark.parametrize("change, column, needle", BAD_INPUTS)
def test_bad_input_names_column_and_writes_nothing(vault, tmp_path, change, column, needle):
    vault.append(7, one([100]))
    events = one([1, 2])
    if "drop" in change:
        del events[change["drop"]]
    else:
        events.update(change)
    with pytest.raises(ValidationError, match=needle) as info:
        vault.append(7, events)
    assert info.value.column == column
    assert column in str(info.value)
    batch = {"user_id": [7] * len(next(iter(events.values()))), **events}
    with pytest.raises(ValidationError):
        vault.append_batch(batch)
    assert vault.read(7)["ts"].tolist() == [100]
    vault.close()
    with SeqVault.open(tmp_path / "store", read_only=True) as r:  # nothing in the log either
        assert r.read(7)["ts"].tolist() == [100]


def test_bad_value_reports_row(vault):
    with pytest.raises(ValidationError) as info:
        vault.append(1, one([1, 2, 3], item=[1, 2, 3.25]))
    assert info.value.row == 2 and info.value.value == 3.25
    assert "row 2" in str(info.value)


@pytest.mark.parametrize("user", ["7", 1.5, None, True])
def test_wrong_user_type(vault, user):
    with pytest.raises(ValidationError, match="user"):
        vault.append(user, one([1]))
    with pytest.raises(ValidationError):
        vault.read(user)


@pytest.mark.parametrize("kwargs", [{"last": 0}, {"last": -3}, {"last": True}, {"last": 1.5},
                                    {"columns": ["zzz"]}, {"before": "x"}, {"since": 1.5}])
def test_bad_read_arguments(vault, kwargs):
    with pytest.raises(ValidationError):
        vault.read(1, **kwargs)


def test_batch_user_column_wrong_type_writes_nothing(vault):
    with pytest.raises(ValidationError, match="user_id"):
        vault.append_batch({"user_id": ["a", "b"], **one([1, 2])})
    with pytest.raises(ValidationError, match="user_id"):
        vault.append_batch(one([1, 2]))
    assert vault.stats()["events"] == 0


def test_reopen_keeps_everything_and_settings(tmp_path, schema):
    rng = np.random.default_rng(0)
    with SeqVault.open(tmp_path / "s", schema=schema, durability="sync", memtable_events=50) as v:
        for u in range(20):
            v.append(u, make_events(rng, 13))
        before = {u: v.read(u).to_dict() for u in range(20)}
        assert v.stats()["flushes"] >= 1
    with SeqVault.open(tmp_path / "s") as v:
        assert v.settings["durability"] == "sync" and v.settings["memtable_events"] == 50
        assert {u: v.read(u).to_dict() for u in range(20)} == before


def test_reopen_without_flush_replays_log(tmp_path, schema):
    rng = np.random.default_rng(1)
    v = SeqVault.open(tmp_path / "s", schema=schema)
    v.append(1, make_events(rng, 40))
    want = v.read(1).to_dict()
    v.close(flush=False)
    with SeqVault.open(tmp_path / "s") as v2:
        assert v2.read(1).to_dict() == want
        assert v2.stats()["recovered_events"] == 40


def test_second_writer_fails_with_pid(tmp_path, schema):
    with SeqVault.open(tmp_path / "s", schema=schema):
        code = ("import sys; from seqvault import SeqVault, StoreLocked\n"
                "try:\n SeqVault.open(sys.argv[1])\nexcept StoreLocked as e:\n"
                " print('LOCKED', e.pid); sys.exit(0)\nsys.exit(1)")
        out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "s")],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        assert out.stdout.split() == ["LOCKED", str(os.getpid())]
        with pytest.raises(StoreLocked):
            SeqVault.open(tmp_path / "s")
    SeqVault.open(tmp_path / "s").close()  # released on close


def test_read_only_open_sees_writer_and_refuses_writes(tmp_path, schema):
    with SeqVault.open(tmp_path / "s", schema=schema) as w:
        w.append(1, one([1, 2]))
        with SeqVault.open(tmp_path / "s", read_only=True) as r:
            assert r.read(1)["ts"].tolist() == [1, 2]
            with pytest.raises(ReadOnlyError):
                r.append(1, one([3]))
            w.append(1, one([3]))
            r.refresh()
            assert r.read(1)["ts"].tolist() == [1, 2, 3]
            w.flush()
            w.append(1, one([0]))
            r.refresh()
            assert r.read(1)["ts"].tolist() == [0, 1, 2, 3]


def test_read_only_in_another_process(tmp_path, schema):
    with SeqVault.open(tmp_path / "s", schema=schema) as w:
        w.append(5, one([10, 20]))
        w.flush()
        w.append(5, one([15]))
        code = ("import sys, json; from seqvault import SeqVault\n"
                "v = SeqVault.open(sys.argv[1], read_only=True)\n"
                "print(json.dumps(v.read(5)['ts'].tolist()))")
        out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "s")],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == "[10, 15, 20]"


def test_missing_store(tmp_path):
    with pytest.raises(NotFound):
        SeqVault.open(tmp_path / "nothing", read_only=True)
    with pytest.raises(SchemaError, match="schema"):
        SeqVault.open(tmp_path / "nothing2")


def test_retention_is_honoured_by_reads(tmp_path):
    from seqvault import Schema

    s = Schema.from_dict({"columns": [{"name": "x", "type": "int8", "default": 0}],
                          "retention": {"max_events": 3, "max_age": "1d"}})
    import time

    now = int(time.time() * 1000)
    # Writes refuse events already outside the window (docs/design/safety.md), so the event
    # ages out the way it does in production: written under a longer max_age, then retention
    # shrinks (an online schema change).
    wide = Schema.from_dict({**s.to_dict(), "retention": {"max_events": 3, "max_age": "7d"}})
    with SeqVault.open(tmp_path / "s", schema=wide) as v:
        v.append(1, {"ts": [now - 3 * 86_400_000, now - 5, now - 4, now - 3, now - 2],
                     "x": [1, 2, 3, 4, 5]})
        v.evolve_schema(s)
        assert v.read(1)["x"].tolist() == [3, 4, 5]
        assert v.read(1, last=10)["x"].tolist() == [3, 4, 5]
        assert v.read(1, last=2)["x"].tolist() == [4, 5]
        # Retention keeps the newest 3 events (x = 3, 4, 5) whatever the read asks; of those,
        # only x = 3 is strictly before now - 3.
        assert v.read(1, before=now - 3)["x"].tolist() == [3]


def test_strings_as_codes_with_dictionaries(tmp_path, schema):
    from seqvault import Schema

    with SeqVault.open(tmp_path / "s", schema=schema) as v:
        v.append(1, one([1, 2, 3], action="click"))
        v.flush()
        v.append(1, {**one([4]), "action": ["share"]})
        d = {**schema.to_dict()}
        d["columns"] = [*d["columns"], {"name": "scene", "type": "string", "default": "feed"}]
        v.evolve_schema(Schema.from_dict(d))
        v.append(1, {**one([5]), "action": ["view"], "scene": ["search"]})
        plain = v.read(1)
        coded = v.read(1, strings="codes")
        for name in ("action", "scene"):
            assert coded[name].dtype == np.uint32
            assert coded.dictionaries[name][coded[name]].tolist() == plain[name].tolist()
        assert plain["scene"].tolist() == ["feed"] * 4 + ["search"]
        empty = v.read(999, strings="codes")
        assert empty["action"].dtype == np.uint32 and "action" in empty.dictionaries
        with pytest.raises(ValidationError, match="strings"):
            v.read(1, strings="bytes")


def test_store_whose_creation_was_interrupted_can_be_created_again(tmp_path, schema):
    # What a SIGKILL between opening LMDB and committing the creating transaction leaves.
    from seqvault.meta import Meta

    (tmp_path / "s" / "meta").mkdir(parents=True)
    Meta(tmp_path / "s" / "meta", read_only=False).close()
    with pytest.raises(NotFound):
        SeqVault.open(tmp_path / "s", read_only=True)
    with pytest.raises(SchemaError, match="schema"):
        SeqVault.open(tmp_path / "s")
    with SeqVault.open(tmp_path / "s", schema=schema) as v:
        v.append(1, one([1]))
    with SeqVault.open(tmp_path / "s", read_only=True) as r:
        assert r.read(1).count == 1
