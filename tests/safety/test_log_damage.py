"""The log knows what it acknowledged (issue 14, findings 1 and 2; docs/design/safety.md,
section 7): a cut or damaged log is detected and reported with its byte, sequence and event
ranges, read-only opens serve everything intact, the writer refuses naming `seqvault repair`,
and the repair keeps exactly the good records."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from seqvault import CorruptionError, Schema, SeqVault
from seqvault import wal as walmod

from .conftest import ROOT, seqvault_cli

SCHEMA = Schema.from_dict({"columns": [{"name": "call", "type": "int64", "default": 0},
                                       {"name": "act", "type": "string", "default": "v"}]})
USERS = 7
RECORDS = 30


def call_events(i: int) -> dict:
    """Append call `i`: user i % 7, 1 + i % 4 events, each naming its call."""
    n = 1 + i % 4
    return {"ts": [1000 + i] * n, "call": [i] * n, "act": [f"a{i % 5}"] * n}


def model(calls: list[int]) -> dict[int, list[int]]:
    """What reads must return per user (the `call` column) for these append calls."""
    out: dict[int, list[int]] = {u: [] for u in range(USERS)}
    for i in calls:
        out[i % USERS].extend([i] * (1 + i % 4))
    return out


def read_all(v: SeqVault) -> dict[int, list[int]]:
    return {u: v.read(u)["call"].tolist() for u in range(USERS)}


@pytest.fixture(scope="module")
def small_log(tmp_path_factory) -> Path:
    """A store whose log holds RECORDS sync-acknowledged append records (closed cleanly, not
    flushed: every event lives in the log only)."""
    store = tmp_path_factory.mktemp("small") / "s"
    with SeqVault.open(store, schema=SCHEMA, durability="sync") as v:
        for i in range(RECORDS):
            v.append(i % USERS, call_events(i))
        v.close(flush=False)
    return store


def fresh_copy(src: Path, dst: Path) -> tuple[Path, Path, list[int], int]:
    shutil.copytree(src, dst)
    log = next((dst / "wal").glob("wal-*.log"))
    scanned = walmod.scan(log)
    return dst, log, [r.offset for r in scanned.records], scanned.end


def cut_points(offs: list[int], end: int) -> list[tuple[int, int]]:
    """(cut offset, records left): every record boundary, and a few points inside records."""
    bounds = offs + [end]
    points = [(b, k) for k, b in enumerate(bounds)]
    for k in (0, 7, 18, RECORDS - 1):
        for into in (1, walmod.RECORD_HEADER_SIZE + 3, (bounds[k + 1] - bounds[k]) - 1):
            points.append((bounds[k] + into, k))
    return points


def test_truncation_at_every_record_boundary_and_inside_records(small_log, tmp_path):
    events_of = [1 + i % 4 for i in range(RECORDS)]
    for n, (cut, left) in enumerate(cut_points(*fresh_copy(small_log, tmp_path / "probe")[2:])):
        store, log, offs, _end = fresh_copy(small_log, tmp_path / f"c{n}")
        with open(log, "r+b") as fh:
            fh.truncate(cut)
        # detected and reported with the right range
        (p,) = walmod.scan(log).problems
        assert p.kind == "truncated", (cut, p)
        assert p.start == ([*offs, _end][left]) and p.seq_first == left + 1, (cut, p)
        if left < RECORDS:
            assert (p.seq_last, p.events) == (RECORDS, sum(events_of[left:])), (cut, p)
        with pytest.raises(CorruptionError, match="seqvault repair"):
            SeqVault.open(store)
        # read-only serves the prefix and says what is missing
        with SeqVault.open(store, read_only=True) as r:
            assert read_all(r) == model(list(range(left))), cut
            assert r.stats()["log_damage"][0]["seq_first"] == left + 1
            report = r.verify()
            assert not report["ok"] and report["problems"][0]["offset_start"] == p.start
        # the repair keeps exactly the intact records, and the store works again
        rep = SeqVault.repair_log(store)
        assert rep["repaired"] and rep["records"] == left
        with SeqVault.open(store) as v:
            assert read_all(v) == model(list(range(left))), cut
            assert v.verify()["ok"]
            v.append(0, call_events(700))
        shutil.rmtree(store)


def test_a_flipped_byte_in_every_record(small_log, tmp_path):
    events_of = [1 + i % 4 for i in range(RECORDS)]
    for k in range(RECORDS):
        store, log, offs, end = fresh_copy(small_log, tmp_path / f"f{k}")
        bounds = offs + [end]
        length = bounds[k + 1] - bounds[k]
        at = bounds[k] + (k * 7) % length  # header bytes for some records, payload for others
        raw = bytearray(log.read_bytes())
        raw[at] ^= 0x5A
        log.write_bytes(bytes(raw))
        (p,) = walmod.scan(log).problems
        assert p.kind == "damaged" and p.start == bounds[k], (k, at, p)
        assert (p.seq_first, p.seq_last, p.events) == (k + 1, k + 1, events_of[k]), (k, at, p)
        with pytest.raises(CorruptionError, match="seqvault repair"):
            SeqVault.open(store)
        others = [i for i in range(RECORDS) if i != k]
        with SeqVault.open(store, read_only=True) as r:
            assert read_all(r) == model(others), k
        rep = SeqVault.repair_log(store)
        assert rep["repaired"] and rep["records"] == RECORDS - 1
        assert rep["dropped_events"] == events_of[k]
        assert Path(rep["saved_copy"]).read_bytes() == bytes(raw)
        with SeqVault.open(store) as v:
            assert read_all(v) == model(others) and v.verify()["ok"]
        shutil.rmtree(store)


def test_repair_respects_sealed_through_records(tmp_path):
    """Partial seals record "sealed through" log offsets: neither the read-only replay nor the
    repair may bring sealed events back a second time, and a damaged record whose events were
    already sealed loses nothing."""
    from seqvault.manifest import sealed_through
    from seqvault.segment import key_bytes

    store = tmp_path / "s"
    with SeqVault.open(store, schema=SCHEMA, durability="sync", tail_events=6) as v:
        for i in range(RECORDS):
            v.append(i % USERS, call_events(i))
        assert v.stats()["tail_seals"] > 0
        sealed = dict(v.manifest.sealed)
        v.close(flush=False)
    log = next((store / "wal").glob("wal-*.log"))
    recs = walmod.scan(log).records
    in_segment = [sealed_through(sealed, key_bytes(i % USERS)[1]) >= recs[i].end
                  for i in range(RECORDS)]
    hit_sealed = in_segment.index(True)
    hit_live = max(i for i in range(RECORDS) if not in_segment[i])
    raw = bytearray(log.read_bytes())
    for k in (hit_sealed, hit_live):
        raw[recs[k].offset + 40] ^= 0xFF
    log.write_bytes(bytes(raw))
    expect = model([i for i in range(RECORDS) if i != hit_live])
    with SeqVault.open(store, read_only=True) as r:
        assert read_all(r) == expect and len(r.log_damage) == 2
    SeqVault.repair_log(store)
    for _reopen in range(2):
        with SeqVault.open(store) as v:
            assert read_all(v) == expect and v.verify()["ok"]


def test_cli_reports_serves_and_repairs(small_log, tmp_path):
    store, log, offs, _end = fresh_copy(small_log, tmp_path / "s")
    raw = bytearray(log.read_bytes())
    raw[offs[12] + 35] ^= 0xFF
    log.write_bytes(bytes(raw))
    r = seqvault_cli("verify", "--store", str(store))
    assert r.returncode == 5 and "log damaged" in r.stdout and "records 13..13" in r.stdout
    got = seqvault_cli("get", "5", "--store", str(store), "--json")
    assert got.returncode == 0 and "Warning: log damaged" in got.stderr
    assert "seqvault repair" in got.stderr
    import json

    assert json.loads(got.stdout)["columns"]["call"] == model(
        [i for i in range(RECORDS) if i != 12])[5]
    stats = json.loads(seqvault_cli("stats", "--store", str(store), "--json").stdout)
    assert stats["log_damage"][0]["seq_first"] == 13
    w = seqvault_cli("append", "--store", str(store), stdin='{"user_id": 1, "ts": 5, "call": 1}\n')
    assert w.returncode == 5 and "seqvault repair" in w.stderr and "Traceback" not in w.stderr
    dry = seqvault_cli("repair", "--store", str(store), "--dry-run")
    assert dry.returncode == 5 and "DROPPED" in dry.stdout and log.read_bytes() == bytes(raw)
    fix = seqvault_cli("repair", "--store", str(store))
    assert fix.returncode == 0 and "Repaired" in fix.stderr, fix.stderr
    assert seqvault_cli("verify", "--store", str(store)).returncode == 0
    again = seqvault_cli("repair", "--store", str(store))
    assert again.returncode == 0 and "nothing to repair" in again.stderr


def test_a_deleted_log_is_reported_and_sealed_data_still_served(tmp_path):
    store = tmp_path / "s"
    with SeqVault.open(store, schema=SCHEMA, durability="sync") as v:
        for i in range(10):
            v.append(i % USERS, call_events(i))
        v.flush()  # calls 0..9 sealed
        for i in range(10, 20):
            v.append(i % USERS, call_events(i))
        v.delete(6)  # a commit: the manifest marks how far the log was synced
        v.close(flush=False)
    log = next((store / "wal").glob("wal-*.log"))
    log.unlink()
    sealed = model([i for i in range(10) if i % USERS != 6])
    with pytest.raises(CorruptionError, match="missing.*seqvault repair"):
        SeqVault.open(store)
    with SeqVault.open(store, read_only=True) as r:
        assert read_all(r) == sealed
        (p,) = r.log_damage
        assert p["kind"] == "missing" and (p["seq_first"], p["seq_last"]) == (1, 10)
        assert p["events"] == sum(1 + i % 4 for i in range(10, 20))
        r.refresh()
        assert read_all(r) == sealed
    rep = SeqVault.repair_log(store)
    assert rep["repaired"] and rep["saved_copy"] is None
    with SeqVault.open(store) as v:
        assert read_all(v) == sealed and v.verify()["ok"]


# ---------------------------------------------------------------------- real processes
CHILD = textwrap.dedent("""
    import sys, time
    from seqvault import SeqVault
    path, start, stop = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    v = SeqVault.open(path, durability="sync", memtable_events=10**6, wal_bytes=1 << 30)
    for i in range(start, stop):
        n = 1 + i % 4
        v.append(i % 7, {"ts": [1000 + i] * n, "call": [i] * n, "act": [f"a{i % 5}"] * n})
        sys.stdout.write(f"{i}\\n")
        sys.stdout.flush()
    time.sleep(60)  # killed here, before any flush
""")


def run_child(store: Path, start: int, stop: int, kill_after: float | None):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(store), str(start), str(stop)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    acked: list[int] = []
    assert proc.stdout is not None
    if kill_after is None:
        while len(acked) < stop - start:
            line = proc.stdout.readline()
            assert line, proc.stderr.read() if proc.stderr else ""
            acked.append(int(line))
    else:
        first = proc.stdout.readline()
        assert first
        acked.append(int(first))
        time.sleep(kill_after)
    proc.send_signal(signal.SIGKILL)
    acked += [int(x) for x in proc.stdout.read().split()]
    proc.wait()
    return acked


def test_a_clean_crash_is_not_damage_and_loses_nothing(tmp_path):
    store = tmp_path / "s"
    SeqVault.open(store, schema=SCHEMA).close()
    rng = np.random.default_rng(3)
    acked: list[int] = []
    present: list[int] = []
    for _kill in range(6):
        start = max(present, default=-1) + 1
        acked += run_child(store, start, start + 10**6, float(rng.uniform(0.05, 0.4)))
        log = next((store / "wal").glob("wal-*.log"))
        assert walmod.scan(log).problems == []
        with SeqVault.open(store, read_only=True) as r:
            assert r.log_damage == [] and r.verify()["ok"]
        with SeqVault.open(store) as v:
            got = read_all(v)
            assert v.verify()["ok"]
            v.close(flush=False)
        present = sorted({c for calls in got.values() for c in calls})
        assert set(acked) <= set(present)
        assert set(present) - set(acked) <= {max(acked) + 1}  # the append in flight
        assert got == model(present)
        acked = present


def test_finding_1_a_log_cut_in_half_fails_verify_with_the_missing_range(tmp_path):
    store = tmp_path / "s"
    SeqVault.open(store, schema=SCHEMA).close()
    acked = run_child(store, 0, 1000, None)
    assert acked == list(range(1000))
    log = next((store / "wal").glob("wal-*.log"))
    scanned = walmod.scan(log)
    assert len(scanned.records) == 1000
    half = scanned.records[0].offset + (scanned.end - scanned.records[0].offset) // 2
    with open(log, "r+b") as fh:
        fh.truncate(half)
    kept = [r for r in scanned.records if r.end <= half]
    lost_events = sum(1 + i % 4 for i in range(len(kept), 1000))
    r = seqvault_cli("verify", "--store", str(store), "--json")
    assert r.returncode == 5
    import json

    (p,) = json.loads(r.stdout)["problems"]
    assert p["kind"] == "truncated" and p["offset_start"] == kept[-1].end
    # The header mark lags behind a killed writer by at most wal.MARK_INTERVAL of fsyncs
    # (rule W3), so the last few records are "maybe"; what it claims, it claims exactly.
    assert p["seq_first"] == len(kept) + 1 and len(kept) < p["seq_last"] <= 1000
    assert p["events"] == sum(1 + i % 4 for i in range(len(kept), p["seq_last"]))
    assert p["events"] <= lost_events
    got = seqvault_cli("get", "3", "--store", str(store), "--json")
    assert got.returncode == 0 and "Warning: log truncated" in got.stderr
    assert json.loads(got.stdout)["columns"]["call"] == model(list(range(len(kept))))[3]
    assert seqvault_cli("repair", "--store", str(store)).returncode == 0
    assert seqvault_cli("verify", "--store", str(store)).returncode == 0
    with SeqVault.open(store) as v:
        assert read_all(v) == model(list(range(len(kept))))
