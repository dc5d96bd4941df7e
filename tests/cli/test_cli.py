"""The `seqvault` command line, run as a real subprocess (`python -m seqvault`) so exit codes,
stdout/stderr separation and `--json` output are what a user's shell sees."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from seqvault import SeqVault, sample
from seqvault.files import file_name
from seqvault.schema import bundled_schema_path

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = str(bundled_schema_path("behavior"))
NOW_MS = 1_790_000_000_000


def sv(*args: str, store: Path | None = None, stdin: str | None = None,
       env: dict | None = None) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    full_env.pop("SEQVAULT_STORE", None)
    if env and "SEQVAULT_STORE" in env:
        full_env["SEQVAULT_STORE"] = env["SEQVAULT_STORE"]
    cmd = [sys.executable, "-m", "seqvault", *args]
    if store is not None:
        cmd += ["--store", str(store)]
    return subprocess.run(cmd, input=stdin, capture_output=True, text=True, env=full_env,
                          timeout=120)


def _log(path: Path, n: int = 5_000, seed: int = 0) -> pa.Table:
    t = sample.events_table(np.random.default_rng(seed), n, users=np.arange(1, 100),
                            now_ms=NOW_MS, distinct_ts=1_000)
    pq.write_table(t, path, row_group_size=1_000)
    return t


@pytest.fixture(scope="module")
def loaded(tmp_path_factory) -> tuple[Path, Path, pa.Table]:
    d = tmp_path_factory.mktemp("cli")
    log = d / "events.parquet"
    t = _log(log)
    store = d / "store"
    r = sv("ingest", str(log), "--schema", SCHEMA, "--json", store=store)
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["events"] == 5_000
    return store, log, t


def test_ingest_json_summary_and_duplicate_exit_code(loaded):
    store, log, _t = loaded
    r = sv("ingest", str(log), "--json", store=store)
    assert r.returncode == 9, (r.returncode, r.stderr)
    assert "already ingested" in r.stderr and "--force" in r.stderr
    assert r.stdout == ""


def test_ingest_summary_fields(tmp_path):
    log = tmp_path / "e.parquet"
    _log(log, 2_000, seed=3)
    r = sv("ingest", str(log), "--json", store=tmp_path / "s")  # schema inferred from data
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)
    for key in ("events", "users", "input_bytes", "bytes_written", "compression_ratio",
                "events_per_s", "elapsed_s", "peak_rss_bytes", "files"):
        assert key in s
    assert s["events"] == 2_000 and s["files"][0]["rows"] == 2_000
    assert "Inferred a schema" in r.stderr
    # human summary goes to stderr, nothing on stdout
    log2 = tmp_path / "f.parquet"
    _log(log2, 100, seed=4)
    r = sv("ingest", str(log2), store=tmp_path / "s")
    assert r.returncode == 0 and r.stdout == "" and "Ingested 100 events" in r.stderr
    assert "read + partition" not in r.stderr  # no progress bar in a pipe
    log3 = tmp_path / "g.parquet"
    _log(log3, 100, seed=5)
    r = sv("ingest", str(log3), "--progress", store=tmp_path / "s")  # forced on
    assert r.returncode == 0 and "read + partition" in r.stderr and r.stdout == ""


def test_bad_data_exit_code_3_names_file_and_column(tmp_path):
    log = tmp_path / "bad.parquet"
    pq.write_table(pa.table({"user_id": pa.array([1, None], pa.int64()),
                             "ts": pa.array([NOW_MS, NOW_MS], pa.int64()),
                             "item_id": [1, 2], "action": ["a", "b"], "category": [1, 2],
                             "dwell_ms": [0, 0], "scenario": ["feed", "feed"]}), log)
    r = sv("ingest", str(log), "--schema", SCHEMA, store=tmp_path / "s")
    assert r.returncode == 3
    assert "bad.parquet" in r.stderr and "'user_id'" in r.stderr and "row group 0" in r.stderr


def test_get_json_nl_and_filters(loaded):
    store, _log_path, t = loaded
    users = t.column("user_id").to_numpy()
    u = int(users[0])
    mask = users == u
    ts = np.sort(t.column("ts").to_numpy()[mask], kind="stable")
    r = sv("get", str(u), "--last", "3", "--json", store=store)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["user_id"] == u and out["count"] == 3
    assert out["columns"]["ts"] == ts[-3:].tolist()
    assert set(out["columns"]) == {"ts", "item_id", "action", "category", "dwell_ms",
                                   "scenario"}
    r = sv("get", str(u), "--nl", "--columns", "ts,action", "--before", str(int(ts[-1])),
           store=store)
    lines = [json.loads(x) for x in r.stdout.splitlines()]
    assert [x["ts"] for x in lines] == [x for x in ts.tolist() if x < ts[-1]]
    assert set(lines[0]) == {"ts", "action"}
    r = sv("get", str(u), "--since", str(int(ts[-1])), "--json", store=store)
    assert json.loads(r.stdout)["columns"]["ts"] == [x for x in ts.tolist() if x >= ts[-1]]
    r = sv("get", "not-a-number", store=store)
    assert r.returncode == 2 and "int64" in r.stderr


def test_store_from_environment_and_missing_store(loaded, tmp_path):
    store, _log_path, _t = loaded
    r = sv("stats", "--json", env={"SEQVAULT_STORE": str(store)})
    assert r.returncode == 0 and json.loads(r.stdout)["events"] == 5_000
    r = sv("stats", store=tmp_path / "nowhere")
    assert r.returncode == 7 and "not a SeqVault store" in r.stderr


def test_append_json_lines_from_stdin(tmp_path):
    store = tmp_path / "s"
    assert sv("init", "--schema", SCHEMA, store=store).returncode == 0
    lines = [json.dumps({"user_id": 7, "ts": NOW_MS + i, "item_id": i, "action": "click",
                         "category": 3, "dwell_ms": 10, "scenario": "feed"}) for i in range(25)]
    r = sv("append", "--batch-size", "10", "--json", store=store, stdin="\n".join(lines) + "\n")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["appended"] == 25
    r = sv("get", "7", "--json", store=store)
    assert json.loads(r.stdout)["columns"]["item_id"] == list(range(25))
    bad = lines[:2] + [json.dumps({"user_id": 7, "ts": "yesterday"})]
    r = sv("append", store=store, stdin="\n".join(bad))
    assert r.returncode == 3 and "line" in r.stderr


def test_init_refuses_existing_store(tmp_path):
    store = tmp_path / "s"
    assert sv("init", "--schema", SCHEMA, store=store).returncode == 0
    r = sv("init", "--schema", SCHEMA, store=store)
    assert r.returncode == 1 and "already a SeqVault store" in r.stderr


def test_verify_clean_then_corrupt_exit_code_5(loaded, tmp_path):
    store, log, _t = loaded
    r = sv("verify", "--json", store=store)
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert rep["ok"] and rep["users"] > 0 and rep["segments"] >= rep["users"]
    # corrupt a copy: flip one byte inside the first lifetime file's payload
    bad = tmp_path / "bad-store"
    store2 = tmp_path / "s2"
    assert sv("ingest", str(log), "--schema", SCHEMA, store=store2).returncode == 0
    with SeqVault.open(store2, read_only=True) as v:
        fid = next(f for f, info in v.catalog.items() if info.kind == "lt")
        ext = v.index.extents(0)[0]
        target = v.path / "data" / file_name("lt", ext.file)
        offset = ext.off + ext.length - 3
    del bad, fid
    with open(target, "r+b") as fh:
        fh.seek(offset)
        b = fh.read(1)
        fh.seek(offset)
        fh.write(bytes([b[0] ^ 0xFF]))
    r = sv("verify", store=store2)
    assert r.returncode == 5, (r.returncode, r.stderr)
    assert "CORRUPT" in r.stdout and target.name in r.stdout
    r = sv("verify", "--json", store=store2)
    rep = json.loads(r.stdout)
    assert r.returncode == 5 and not rep["ok"] and rep["problems"][0]["user_id"] is not None


def test_export_round_trip(loaded, tmp_path):
    store, _log_path, t = loaded
    out = tmp_path / "out.parquet"
    r = sv("export", str(out), "--json", store=store)
    assert r.returncode == 0, r.stderr
    back = pq.read_table(out)
    assert back.num_rows == t.num_rows
    key = ["user_id", "ts", "item_id"]
    a = sorted(zip(*(t.column(k).to_pylist() for k in key)))
    b = sorted(zip(*(back.column(k).to_pylist() for k in key)))
    assert a == b
    u = int(t.column("user_id")[0].as_py())
    r = sv("export", str(out), "-u", str(u), "--columns", "ts,action", store=store)
    back = pq.read_table(out)
    assert set(back.column("user_id").to_pylist()) == {u}
    assert back.column_names == ["user_id", "ts", "action"]


def test_schema_show_and_evolve(tmp_path):
    store = tmp_path / "s"
    assert sv("init", "--schema", SCHEMA, store=store).returncode == 0
    r = sv("schema", "show", "--json", store=store)
    schema = json.loads(r.stdout)
    assert schema["user"]["column"] == "user_id"
    new = Path(SCHEMA).read_text() + ('\n[[columns]]\nname = "price"\ntype = "float32"\n'
                                      'default = 0.0\n')
    f = tmp_path / "v2.toml"
    f.write_text(new)
    r = sv("schema", "evolve", str(f), store=store)
    assert r.returncode == 0, r.stderr
    r = sv("schema", "show", store=store)
    assert "price" in r.stdout
    bad = tmp_path / "bad.toml"
    bad.write_text(Path(SCHEMA).read_text().replace('name = "dwell_ms"', 'name = "dwell"'))
    r = sv("schema", "evolve", str(bad), store=store)
    assert r.returncode == 3


def test_stats_info_ledger_merge(loaded):
    store, log, _t = loaded
    info = json.loads(sv("info", "--json", store=store).stdout)
    assert info["ingested_files"] == 1 and info["schema"]["time"]["column"] == "ts"
    led = json.loads(sv("ledger", "--json", store=store).stdout)
    assert led[0]["path"] == str(log.resolve()) and led[0]["rows"] == 5_000


def test_merge_folds_appended_events(tmp_path):
    store = tmp_path / "s"
    assert sv("init", "--schema", SCHEMA, store=store).returncode == 0
    lines = [json.dumps({"user_id": 3, "ts": NOW_MS + i, "item_id": i, "action": "click",
                         "category": 3, "dwell_ms": 10, "scenario": "feed"}) for i in range(40)]
    for chunk in (lines[:20], lines[20:]):  # two appends, each sealed on close: 2 segments
        assert sv("append", store=store, stdin="\n".join(chunk)).returncode == 0
    if not hasattr(SeqVault, "merge"):
        r = sv("merge", store=store)
        assert r.returncode == 1 and "merge is not available" in r.stderr
        return
    r = sv("merge", "--json", "--user", "3", store=store)
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    assert result["users_merged"] == 1 and result["events_out"] == 40
    r = sv("get", "3", "--json", store=store)
    assert json.loads(r.stdout)["columns"]["item_id"] == list(range(40))


def test_delete_all_and_before(tmp_path):
    store = tmp_path / "s"
    assert sv("init", "--schema", SCHEMA, store=store).returncode == 0
    lines = [json.dumps({"user_id": u, "ts": NOW_MS + i, "item_id": i, "action": "click",
                         "category": 3, "dwell_ms": 10, "scenario": "feed"})
             for u in (3, 4) for i in range(10)]
    assert sv("append", store=store, stdin="\n".join(lines)).returncode == 0
    r = sv("delete", "3", "--json", store=store)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"user_id": 3, "deleted_events": 10, "before": None}
    r = sv("delete", "4", "--before", str(NOW_MS + 6), store=store)
    assert r.returncode == 0 and "Deleted 6 events with ts <" in r.stderr, r.stderr
    assert "next `seqvault merge`" in r.stderr
    r = sv("delete", "999", store=store)  # unknown user: a no-op, not an error
    assert r.returncode == 0 and "Deleted 0 events" in r.stderr
    assert json.loads(sv("get", "3", "--json", store=store).stdout)["count"] == 0
    got = json.loads(sv("get", "4", "--json", store=store).stdout)
    assert got["columns"]["item_id"] == [6, 7, 8, 9]
    st = json.loads(sv("stats", "--json", store=store).stdout)
    assert st["deleted_users"] == 1 and st["deleted_events"] == 16
    assert sv("delete", "x", store=store).returncode == 2  # int64 user column: usage error


def test_help_version_and_usage_errors():
    r = sv("-h")
    assert r.returncode == 0 and "ingest" in r.stdout and "verify" in r.stdout
    r = sv("--version")
    assert r.returncode == 0 and "seqvault" in r.stdout
    r = sv("get")
    assert r.returncode == 2 and "USER" in r.stderr
    r = sv("ingest", "-h")
    assert r.returncode == 0 and "--force" in r.stdout


def test_nl_output_into_a_closed_pipe_exits_quietly(loaded):
    store, _log_path, t = loaded
    u = int(t.column("user_id")[0].as_py())
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    p = subprocess.run(f"{sys.executable} -m seqvault get {u} --nl --store {store} | head -1",
                       shell=True, capture_output=True, text=True, env=env, timeout=60)
    assert p.returncode == 0
    assert len(p.stdout.splitlines()) == 1
    assert "Traceback" not in p.stderr
