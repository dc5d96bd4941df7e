"""Distributed ingest against a single-node oracle built from the same files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from seqvault import Schema, SeqVault
from seqvault.cluster import SeqVaultCluster, init_cluster, shard_of, status
from seqvault.cluster import manifest as mf
from seqvault.cluster.ingest import ingest
from seqvault.cluster.vocab import load_vocab
from seqvault.errors import DuplicateIngest, ValidationError

from .conftest import NODES, TIMEOUT_S


def assert_same(got: Any, want: Any) -> None:
    assert got.count == want.count
    for name, arr in want.columns.items():
        np.testing.assert_array_equal(got.columns[name], arr, err_msg=name)


def test_every_user_lands_in_its_shard_with_exact_counts(cluster: Path, oracle: Any) -> None:
    m = mf.load(cluster)
    assert m.epoch == 2 and len(m.ingests) == 1
    per_shard_events: dict[int, int] = {}
    for u in oracle.users():
        per_shard_events[shard_of(u, 4)] = per_shard_events.get(shard_of(u, 4), 0) + \
            oracle.read(u).count
    for e in m.entries:
        with SeqVault.open(e.primary.path, read_only=True, create=False) as v:
            users = list(v.users())
            assert all(shard_of(u, 4) == e.shard for u in users)
            assert v.stats()["events"] == per_shard_events.get(e.shard, 0)
    st = status(cluster)
    assert st["events"] == oracle.stats()["events"] == 10_000
    assert st["users"] == oracle.stats()["users"]


def test_cluster_reads_equal_the_single_node_store(cluster: Path, oracle: Any) -> None:
    users = sorted(oracle.users()) + [10**9]  # and one unknown user
    with SeqVaultCluster(cluster) as c:
        got = c.read_many(users)
        assert [g.user for g in got] == users  # the order asked
        for u, g in zip(users, got):
            assert_same(g, oracle.read(u))
        before = [1_002_500] * len(users)
        for u, g in zip(users, c.read_many(users, last=5, before=before)):
            assert_same(g, oracle.read(u, last=5, before=1_002_500))


def test_rerun_changes_nothing(cluster: Path, logs: list[Path]) -> None:
    before = status(cluster)
    with pytest.raises(DuplicateIngest, match="already ingested into this cluster"):
        ingest(cluster, logs, timeout_s=TIMEOUT_S)
    after = status(cluster)
    assert after["events"] == before["events"] and after["epoch"] == before["epoch"]


def test_retry_after_a_partial_commit_is_idempotent(tmp_path: Path, schema: Schema,
                                                    ray_session: Any, logs: list[Path],
                                                    oracle: Any, monkeypatch: Any) -> None:
    """The job fails after its shards committed but before publishing: nothing is published,
    staging is cleaned, and the rerun finds every shard already loaded (store ledgers)."""
    from seqvault.cluster import ingest as ingest_mod

    root = tmp_path / "c"
    init_cluster(root, schema, 4, NODES)

    def boom(*a: Any, **k: Any) -> None:
        raise OSError("disk full while writing the vocabulary")

    monkeypatch.setattr(ingest_mod, "extend_vocabs", boom)
    with pytest.raises(OSError, match="disk full"):
        ingest(root, logs, timeout_s=TIMEOUT_S)
    assert mf.load(root).epoch == 1
    assert not any((root / "staging").iterdir())
    monkeypatch.undo()
    s = ingest(root, logs, timeout_s=TIMEOUT_S)
    assert (s.committed, s.already) == (0, 4)
    assert status(root)["events"] == 10_000 and mf.load(root).epoch == 2
    assert load_vocab(root, "action") == {"click": 1, "like": 2, "share": 3, "view": 4}


def test_bad_input_writes_nothing_anywhere(tmp_path: Path, schema: Schema, ray_session: Any,
                                           logs: list[Path]) -> None:
    root = tmp_path / "c"
    init_cluster(root, schema, 4, NODES)
    bad = tmp_path / "bad.parquet"
    t = pq.read_table(logs[0])
    ts = t.column("ts").to_numpy().copy()
    ts[4321] = -5
    pq.write_table(t.set_column(1, "ts", pa.array(ts)), bad, row_group_size=2_000)
    with pytest.raises(ValidationError, match=r"bad.parquet \(row 4321 of the file\): column 'ts'"):
        ingest(root, [logs[1], bad], timeout_s=TIMEOUT_S)
    assert status(root)["events"] == 0 and mf.load(root).epoch == 1
    assert not any((root / "staging").iterdir())


def test_equal_timestamps_keep_input_order_across_files(tmp_path: Path, schema: Schema,
                                                        ray_session: Any) -> None:
    """Every event of user 1 has the same ts, spread over two files and several row groups:
    the cluster returns them in file order, then row order, like a single-node ingest."""
    root = tmp_path / "c"
    init_cluster(root, schema, 3, NODES[:2], replication=2)
    paths = []
    for f in range(2):
        n = 500
        p = tmp_path / f"tie-{f}.parquet"
        pq.write_table(pa.table({"user_id": np.ones(n, dtype=np.int64),
                                 "ts": np.full(n, 7, dtype=np.int64),
                                 "item_id": np.arange(n, dtype=np.int64) + 1000 * f,
                                 "action": ["view"] * n,
                                 "dwell": np.zeros(n, dtype=np.uint32)}), p, row_group_size=64)
        paths.append(p)
    s = ingest(root, paths, timeout_s=TIMEOUT_S)
    assert s.shard_tasks == 2 and s.committed == 2  # one shard, two replicas
    want = np.concatenate([np.arange(500), np.arange(500) + 1000])
    m = mf.load(root)
    for rep in m.entry(shard_of(1, 3)).replicas:
        with SeqVault.open(rep.path, read_only=True, create=False) as v:
            np.testing.assert_array_equal(v.read(1).columns["item_id"], want)


def test_csv_and_json_lines_inputs_match_a_single_node_ingest(tmp_path: Path, schema: Schema,
                                                               ray_session: Any,
                                                               logs: list[Path]) -> None:
    import pyarrow.csv as pacsv

    t = pq.read_table(logs[1])
    csv = tmp_path / "part.csv"
    pacsv.write_csv(t.slice(0, 2_000), csv)
    jsonl = tmp_path / "part.jsonl"
    with open(jsonl, "w") as f:
        for row in t.slice(2_000).to_pylist():
            f.write(json.dumps(row) + "\n")
    root = tmp_path / "c"
    init_cluster(root, schema, 3, NODES[:3])
    s = ingest(root, [csv, jsonl], timeout_s=TIMEOUT_S)
    assert s.events == t.num_rows
    from seqvault.ingest import ingest as single_ingest

    with SeqVault.open(tmp_path / "single", schema=schema) as one, SeqVaultCluster(root) as c:
        single_ingest(one, [csv, jsonl])
        users = sorted(one.users())
        for u, g in zip(users, c.read_many(users)):
            assert_same(g, one.read(u))
