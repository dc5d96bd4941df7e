"""Finding 9 of issue 14: fsync failure is fail-stop, a full disk leaves the store as it was.

The loop of tests/safety/fault_loop.py fails every call of every file operation the engine
makes (write, fsync, ftruncate, replace, write-opens, the edges of the LMDB commit) in sync
appends, batch appends, a partial seal, a full flush, merge and reclamation, an ingest of a
small Parquet file, an index checkpoint, deletes and close; after each failure it checks the
error, the temporary files and the refusal of later writes, reopens (writer and a read-only
process) and compares every user's events with a model. The default run fails each call once
(EIO and ENOSPC alternating); the slow run fails each call with both, once, sticky, and
with every truncate failing too.
`python -m tests.safety.fault_loop --all` prints the counts (docs/design/safety.md, section 9).
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from seqvault import SeqVault, WriterFailed, faults

from . import fault_loop as loop


def _assert_clean(counts: loop.Counts) -> None:
    assert counts.problems == [], "\n".join(counts.problems[:40])
    assert counts.lost == 0 and counts.phantom == 0
    # every scenario ran, and failures were injected at many distinct places
    assert set(counts.ops) == set(loop.SCENARIOS)
    # only the background fsyncs of durability=batch vary in number between runs
    assert counts.injected >= counts.cases - counts.not_reached
    assert counts.not_reached <= counts.ops["batch durability"]
    assert len(counts.sites) >= 15


def test_fault_loop_every_call_once(tmp_path: Path) -> None:
    counts = loop.run_loop(tmp_path, errnos=loop.sample_errnos)
    print(counts.summary())
    _assert_clean(counts)


@pytest.mark.slow
def test_fault_loop_every_call_with_eio_and_enospc(tmp_path: Path) -> None:
    """Every call with both errnos: that call only, every later call of its kind (a disk
    that stays full), and that call with every truncate failing (a rollback that fails)."""
    counts = loop.run_loop(tmp_path, sticky=(False, True), double=True)
    print(counts.summary())
    _assert_clean(counts)


def test_the_layer_is_the_os_functions_when_not_armed() -> None:
    from seqvault import iofaults

    assert iofaults.write is os.write and iofaults.fsync is os.fsync
    assert iofaults.replace is os.replace and iofaults.open_fd is os.open
    with faults.armed("fsync", 1):
        assert iofaults.fsync is not os.fsync
    assert iofaults.fsync is os.fsync and iofaults.commit_point is iofaults.no_fault


def test_armed_fails_exactly_the_nth_call_and_records_its_site(tmp_path: Path) -> None:
    """The loop's instrument can fail: the 3rd log sync of sync appends fails, not the 2nd
    (the version-2 log writes its records with pwrite and syncs them with fdatasync)."""
    from .fault_loop import SCHEMA_DICT, SETTINGS, Schema

    v = SeqVault.open(tmp_path / "s", schema=Schema.from_dict(SCHEMA_DICT), **SETTINGS)
    with faults.armed("fdatasync", 3, errno.ENOSPC) as rec:
        v.append(1, loop.one_event(1, 1))
        v.append(1, loop.one_event(2, 2))
        with pytest.raises(WriterFailed, match="No space left on device"):
            v.append(1, loop.one_event(3, 3))
    assert rec.calls["fdatasync"] == 3 and rec.calls["pwrite"] >= 3
    assert [(i.op, i.nth, i.site.split(":")[0]) for i in rec.injected] == [
        ("fdatasync", 3, "wal.py")]
    v.close()


def test_the_model_comparison_can_fail() -> None:
    counts = loop.Counts()
    allowed = [{1: [(5, 1), (6, 2)]}, {1: [(5, 1), (6, 2), (7, 3)]}]
    assert loop.compare({1: [(5, 1), (6, 2), (7, 3)]}, allowed, counts, "x") is None
    assert loop.compare({1: [(5, 1)]}, allowed, counts, "x") is not None
    assert counts.lost == 1
    assert loop.compare({1: [(5, 1), (6, 2), (9, 9)]}, allowed, counts, "x") is not None
    assert counts.phantom == 1
