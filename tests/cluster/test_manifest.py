"""Cluster manifest: published atomically, epochs only grow, bad files are refused by name."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from seqvault import Schema
from seqvault.cluster import init_cluster
from seqvault.cluster import manifest as mf
from seqvault.errors import CorruptionError, FormatVersionError, NotFound, SeqVaultError


def test_init_publishes_epoch_one(tmp_path: Path, schema: Schema) -> None:
    m = init_cluster(tmp_path / "c", schema, 8, ["a", "b", "c"], replication=2)
    assert m.epoch == 1 and m.shards == 8
    back = mf.load(tmp_path / "c")
    assert back == m
    assert [e.primary.node for e in back.entries][:4] == ["a", "b", "c", "a"]
    assert [r.node for r in back.entry(2).replicas] == ["c", "a"]
    assert (tmp_path / "c" / "epochs" / "00000001.json").exists()
    with pytest.raises(SeqVaultError, match="exists here already"):
        init_cluster(tmp_path / "c", schema, 8, ["a"])


def test_publish_requires_the_next_epoch(tmp_path: Path, schema: Schema) -> None:
    m = init_cluster(tmp_path / "c", schema, 2, ["a"])
    m2 = mf.publish(tmp_path / "c", m.next("second"))
    assert m2.epoch == 2
    with pytest.raises(mf.StaleEpoch, match="expected 3"):
        mf.publish(tmp_path / "c", m.next("lost the race"))
    assert sorted(p.name for p in (tmp_path / "c" / "epochs").iterdir()) == [
        "00000001.json", "00000002.json"]


def test_missing_and_damaged_manifests(tmp_path: Path, schema: Schema) -> None:
    with pytest.raises(NotFound, match="cluster init"):
        mf.load(tmp_path / "nothing")
    init_cluster(tmp_path / "c", schema, 2, ["a"])
    p = tmp_path / "c" / "cluster.json"
    d = json.loads(p.read_text())
    p.write_text(json.dumps({**d, "format_version": 99}))
    with pytest.raises(FormatVersionError, match="format_version 99"):
        mf.load(tmp_path / "c")
    p.write_text(json.dumps({**d, "hash_version": 2}))
    with pytest.raises(FormatVersionError, match="hash_version"):
        mf.load(tmp_path / "c")
    p.write_text("{not json")
    with pytest.raises(CorruptionError, match="not valid JSON"):
        mf.load(tmp_path / "c")


def test_bad_layouts_are_refused(tmp_path: Path, schema: Schema) -> None:
    with pytest.raises(SeqVaultError, match="replication"):
        init_cluster(tmp_path / "c", schema, 2, ["a"], replication=2)
    with pytest.raises(SeqVaultError, match="duplicates"):
        init_cluster(tmp_path / "d", schema, 2, ["a", "a"])


def test_concurrent_publishers_of_one_epoch_one_wins(tmp_path: Path, schema: Schema) -> None:
    import threading

    m = init_cluster(tmp_path / "c", schema, 2, ["a"])
    results: list[str] = []
    barrier = threading.Barrier(8)

    def publisher(i: int) -> None:
        barrier.wait()
        try:
            mf.publish(tmp_path / "c", m.next(f"publisher {i}"))
            results.append("won")
        except mf.StaleEpoch:
            results.append("lost")

    threads = [threading.Thread(target=publisher, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(results) == ["lost"] * 7 + ["won"]
    assert mf.load(tmp_path / "c").epoch == 2
