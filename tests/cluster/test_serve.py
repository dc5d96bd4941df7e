"""Supervised shard servers: routed HTTP reads, appends on the single writer, failover to a
replica, restart of a killed server, and manifest refetch on a stale epoch."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from seqvault import Schema
from seqvault.cluster import SeqVaultCluster, init_cluster, status
from seqvault.cluster import manifest as mf
from seqvault.cluster.ingest import ingest
from seqvault.cluster.serve import serve

from .conftest import TIMEOUT_S
from .test_ingest import assert_same

TOKEN = "s3cret-token-for-tests"


@pytest.fixture
def served(tmp_path: Path, schema: Schema, ray_session: Any, logs: list[Path]) -> Any:
    root = tmp_path / "c"
    init_cluster(root, schema, 2, ["n0", "n1"], replication=2)
    ingest(root, logs, timeout_s=TIMEOUT_S)
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    servers = serve(root, token_file=str(token_file), timeout_s=TIMEOUT_S)
    try:
        yield root, servers
    finally:
        servers.stop()


def wait_for(pred: Any, timeout_s: float = 60.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout_s
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def test_serve_failover_restart_append_and_stale_epoch(served: Any, oracle: Any) -> None:
    root, servers = served
    m = mf.load(root)
    assert all(r.server for e in m.entries for r in e.replicas)
    st = status(root)
    assert all(r["healthy"] for r in st["replicas"])
    users = sorted(oracle.users())
    with SeqVaultCluster(root, mode="http", token=TOKEN, timeout_s=5.0) as c:
        # routed scatter-gather reads equal the single-node store
        for u, g in zip(users, c.read_many(users, last=50)):
            assert_same(g, oracle.read(u, last=50))
        # a killed primary: reads fail over to the replica, and the server comes back
        u0 = users[0]
        shard = c.shard_of(u0)
        servers.kill(shard, 0)
        assert_same(c.read(u0), oracle.read(u0))
        assert c.failovers >= 1
        wait_for(lambda: any(v["restarts"] >= 1 and v["ready"] for v in
                             servers.health().values()), what="the killed server's restart")
        before = c.failovers
        assert_same(c.read(u0), oracle.read(u0))
        assert c.failovers == before  # served by the primary again
        # appends go to the shard's single writer (the primary) and are read back
        n = c.append(u0, {"ts": [2_000_000, 2_000_001], "item_id": [1, 2],
                          "action": ["like", "click"], "dwell": [5, 6]})
        assert n == 2
        got = c.read(u0, last=2)
        assert got.columns["item_id"].tolist() == [1, 2]
        assert got.columns["action"].tolist() == ["like", "click"]
        # a newer epoch: the servers answer 409 stale-epoch, the client refetches and retries
        mf.publish(root, m.next("an unrelated change"))
        assert c.epoch == m.epoch
        assert c.read(users[1]).count == oracle.read(users[1]).count
        assert c.refetches == 1 and c.epoch == m.epoch + 1
    # a client that knows one server's URL only (no shared cluster directory)
    url = mf.load(root).entry(1).replicas[1].server
    with SeqVaultCluster(url, mode="http", timeout_s=5.0) as c2:
        assert c2.epoch == m.epoch + 1
        for u, g in zip(users[:30], c2.read_many(users[:30], last=10)):
            assert g.count == oracle.read(u, last=10).count or u == u0
        mf.publish(root, mf.load(root).next("another change"))
        assert c2.read(users[1]).count == oracle.read(users[1]).count
        assert c2.refetches == 1 and c2.epoch == m.epoch + 2


def test_embedded_mode_appends_and_reads(served: Any, oracle: Any) -> None:
    """Embedded mode opens the stores directly; the HTTP writers hold the primaries, so the
    embedded client is read-only here (its appends would be refused by the store lock)."""
    root, _ = served
    users = sorted(oracle.users())[:20]
    with SeqVaultCluster(root) as c:
        for u, g in zip(users, c.read_many(users, columns=["item_id"])):
            np.testing.assert_array_equal(g.columns["item_id"],
                                          oracle.read(u, columns=["item_id"]).columns["item_id"])
