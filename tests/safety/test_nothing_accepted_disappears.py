"""Finding 3: an accepted event is an event reads return. Timestamps outside the retention window
or in a coarser unit than the column's are refused, with the column, the row, the value and
what was expected, by the API, the command line, ingest and HTTP alike; nothing is written."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from seqvault import SeqVault
from seqvault.errors import ValidationError

from .conftest import ROOT, now_ms, one_line_error, recent_events, seqvault_cli

DAY_MS = 86_400_000
OLD = 1_732_860_000_000  # 2024-11-29: the README's old example, older than 730 days today


def test_readme_python_example_runs_as_written(tmp_path: Path) -> None:
    """The README's first Python block, run in a fresh directory: both events read back."""
    text = (ROOT / "README.md").read_text()
    block = re.search(r"## Use it from Python\s+```python\n(.*?)```", text, re.S)
    assert block, "README lost its Python example"
    (tmp_path / "schema").symlink_to(ROOT / "schema")
    scope: dict[str, object] = {}
    import os

    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        exec(compile(block.group(1), "README.md", "exec"), scope)  # noqa: S102
    finally:
        os.chdir(cwd)
    seq = scope["seq"]
    assert len(seq) == 2  # type: ignore[arg-type]
    assert seq["item_id"].tolist() == [7, 9]  # type: ignore[index]
    with SeqVault.open(tmp_path / "store", read_only=True) as r:
        assert r.stats()["events"] == 2 and len(r.read(42)) == 2


@pytest.mark.parametrize("ts, row, words", [
    ([now_ms(), OLD], 1, "older than the schema's retention max_age of 730d"),
    ([0], 0, "older than the schema's retention"),  # a 1970 timestamp
    ([now_ms(), now_ms() // 1000], 1, "read as seconds"),  # seconds into a ms column
    ([now_ms() * 1000], 0, "looks like microseconds"),  # microseconds: past year 9999 in ms
])
def test_append_refuses_what_reads_would_not_return(tmp_path: Path, behavior, ts, row,
                                                     words) -> None:
    with SeqVault.open(tmp_path / "s", schema=behavior) as v:
        ev = recent_events(len(ts))
        ev["ts"] = ts
        with pytest.raises(ValidationError) as info:
            v.append(7, ev)
        err = info.value
        assert (err.column, err.row, err.value) == ("ts", row, ts[row])
        assert words in str(err) and f"row {row}" in str(err) and str(ts[row]) in str(err)
        batch = {"user_id": [7] * len(ts), **ev}
        with pytest.raises(ValidationError, match=re.escape(words)):
            v.append_batch(batch)
        # Nothing written, and stats counts only what reads return.
        assert v.stats()["events"] == 0 and len(v.read(7)) == 0


def test_stats_counts_exactly_what_reads_return(tmp_path: Path, behavior) -> None:
    with SeqVault.open(tmp_path / "s", schema=behavior) as v:
        for u in range(5):
            v.append(u, recent_events(20, seed=u))
            with pytest.raises(ValidationError):
                v.append(u, {**recent_events(1), "ts": [OLD]})
        v.flush()
        v.append(9, recent_events(3))
        readable = sum(len(v.read(u)) for u in [*range(5), 9])
        assert v.stats()["events"] == readable == 103


def test_cli_append_refuses_an_old_event_naming_the_line(tmp_path: Path, behavior) -> None:
    store = tmp_path / "s"
    with SeqVault.open(store, schema=behavior):
        pass
    good = {"user_id": 1, "ts": now_ms(), "item_id": 5, "action": "click", "category": 1,
            "dwell_ms": 10, "scenario": "feed"}
    lines = [json.dumps(good), json.dumps({**good, "ts": OLD})]
    r = seqvault_cli("append", "--store", str(store), stdin="\n".join(lines) + "\n")
    assert r.returncode == 3, r.stderr
    msg = one_line_error(r)
    assert "stdin line 2" in msg and str(OLD) in msg and "max_age" in msg
    assert json.loads(seqvault_cli("stats", "--store", str(store), "--json").stdout)[
        "events"] == 0


def _log(path: Path, n: int, bad_row: int, bad_ts: int) -> Path:
    ev = recent_events(n)
    ts = np.asarray(ev["ts"]).copy()
    ts[bad_row] = bad_ts
    table = pa.table({"user_id": pa.array(np.arange(n) % 13, pa.int64()),
                      "ts": pa.array(ts, pa.int64()),
                      **{k: pa.array(v) for k, v in ev.items() if k != "ts"}})
    pq.write_table(table, path, row_group_size=1000)
    return path


@pytest.mark.parametrize("bad_ts, words", [(OLD, "max_age"), (1_790_000_000, "read as seconds")])
def test_ingest_refuses_with_the_file_row(tmp_path: Path, behavior, bad_ts, words) -> None:
    log = _log(tmp_path / "log.parquet", 5000, 2345, bad_ts)
    store = tmp_path / "s"
    with SeqVault.open(store, schema=behavior):
        pass
    r = seqvault_cli("ingest", str(log), "--store", str(store))
    assert r.returncode == 3, r.stderr
    msg = one_line_error(r)
    assert "row 2345 of the file" in msg and str(bad_ts) in msg and words in msg
    with SeqVault.open(store, read_only=True) as v:
        assert v.stats()["events"] == 0  # all or nothing


def test_http_write_of_a_1970_timestamp_is_refused(tmp_path: Path, serve) -> None:
    httpx = pytest.importorskip("httpx")
    from tests.server.helpers import TOKEN

    from .conftest import make_store

    store = make_store(tmp_path / "s", {1: 5})
    ev = recent_events(2)
    body = {"columns": {k: (np.asarray(v).tolist()) for k, v in ev.items()}}
    body["columns"]["ts"] = [now_ms(), 5_000]
    auth = {"Authorization": f"Bearer {TOKEN}"}
    with serve(store, read_only=False, token=TOKEN) as srv, srv.client() as c:
        r = c.post("/users/2/events", json=body, headers=auth)
        assert r.status_code == 422, r.text
        problem = r.json()
        assert "ts" in problem["detail"] and "5000" in problem["detail"]
        assert "max_age" in problem["detail"]
        assert c.get("/users/2/sequence").json()["count"] == 0
        assert c.get("/stats").json()["events"] == 5
        assert isinstance(c, httpx.Client)


def test_seconds_log_into_a_new_store_is_refused_and_the_rerun_works(tmp_path: Path) -> None:
    """Ingest infers ms for an integer time column; a log in seconds is refused with the fix
    (--time-unit s), and the store this failed command created is gone, so the fix works."""
    n = 50
    now_s = now_ms() // 1000
    pq.write_table(pa.table({"user_id": pa.array(np.arange(n), pa.int64()),
                             "ts": pa.array(now_s - np.arange(n), pa.int64()),
                             "x": pa.array(np.arange(n), pa.int32())}), tmp_path / "s.parquet")
    store = tmp_path / "new"
    r = seqvault_cli("ingest", str(tmp_path / "s.parquet"), "--store", str(store))
    assert r.returncode == 3 and "--time-unit s" in one_line_error(r)
    assert not store.exists()
    r = seqvault_cli("ingest", str(tmp_path / "s.parquet"), "--store", str(store),
                     "--time-unit", "s")
    assert r.returncode == 0, r.stderr
    with SeqVault.open(store, read_only=True) as v:
        assert v.schema.time_unit == "s" and v.stats()["events"] == n
        assert v.read(7)["ts"].tolist() == [now_s - 7]


@pytest.mark.parametrize("user_type", ["int64", "string"])
def test_ingest_expired_drop_leaves_old_rows_out_and_counts_them(tmp_path: Path,
                                                                 user_type: str) -> None:
    """A historic log longer than the window: `--expired drop` loads the rest and says how
    many it left out; what is stored is exactly what reads return."""
    from seqvault import Schema

    n = 3000
    ev = recent_events(n)
    ts = np.asarray(ev["ts"]).copy()
    old = np.arange(0, n, 7)  # every 7th row is three years old
    ts[old] = now_ms() - 3 * 365 * DAY_MS
    users = np.arange(n) % 11
    table = pa.table({"user_id": pa.array(users if user_type == "int64"
                                          else [f"u{u}" for u in users]),
                      "ts": pa.array(ts, pa.int64()),
                      **{k: pa.array(v) for k, v in ev.items() if k != "ts"}})
    pq.write_table(table, tmp_path / "log.parquet", row_group_size=500)
    d = Schema.load(ROOT / "schema" / "behavior.toml").to_dict()
    d["user"]["type"] = user_type
    store = tmp_path / "s"
    with SeqVault.open(store, schema=Schema.from_dict(d)):
        pass
    r = seqvault_cli("ingest", str(tmp_path / "log.parquet"), "--store", str(store),
                     "--expired", "drop", "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["dropped_expired"] == old.size and doc["events"] == n - old.size
    assert doc["files"][0]["rows"] == n  # the ledger records the file's own row count
    with SeqVault.open(store, read_only=True) as v:
        keys = [int(u) if user_type == "int64" else f"u{u}" for u in range(11)]
        assert v.stats()["events"] == sum(len(v.read(k)) for k in keys) == n - old.size
