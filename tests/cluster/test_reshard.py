"""Resharding: a whole-shard move, and growing S from 4 to 5."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from seqvault import SeqVault
from seqvault.cluster import SeqVaultCluster, shard_of
from seqvault.cluster import manifest as mf
from seqvault.cluster.reshard import grow_shards, move_shard

from .test_ingest import assert_same


def test_move_a_shard_catches_up_appends_made_during_the_copy(cluster: Path, oracle: Any) -> None:
    m = mf.load(cluster)
    old = m.entry(1).primary
    target = next(n for n in m.nodes if n != old.node)
    users = sorted(oracle.users())
    u1 = next(u for u in users if shard_of(u, 4) == 1)
    with SeqVaultCluster(cluster) as c:
        c.append(u1, {"ts": [3_000_000], "item_id": [41], "action": ["share"], "dwell": [1]})
        c.flush()
        appended: list[int] = []

        def during_copy(phase: str, done: int, total: int | None) -> None:
            # An append lands on the old primary after the copy read it: catch-up must bring it.
            if phase == "copy" and not appended:
                appended.append(c.append(u1, {"ts": [3_000_001], "item_id": [42],
                                              "action": ["like"], "dwell": [2]}))
                c.flush()

        new = move_shard(cluster, 1, target, progress=during_copy)
        assert appended == [1]
        assert new.epoch == m.epoch + 1
        assert new.entry(1).primary.node == target
        assert Path(f"{old.path}.retired-e{new.epoch}").exists()  # the old store: retired
        c.refresh()
        got = c.read(u1, last=2)
        assert got.columns["item_id"].tolist() == [41, 42]
        for u in users:
            if u != u1:
                assert_same(c.read(u), oracle.read(u))
    with SeqVault.open(new.entry(1).primary.path, read_only=True, create=False) as v:
        assert all(shard_of(u, 4) == 1 for u in v.users())


def test_grow_shards_deletes_moved_users_from_the_old_shards(cluster: Path, oracle: Any) -> None:
    before = mf.load(cluster)
    new = grow_shards(cluster, 5)
    assert new.shards == 5 and new.epoch > before.epoch
    users = sorted(oracle.users())
    moved = [u for u in users if shard_of(u, 5) == 4]
    assert moved
    for e in before.entries:  # the old shards hold only the users they still own
        with SeqVault.open(e.primary.path, read_only=True, create=False) as v:
            left = sorted(v.users())
            assert left and all(shard_of(u, 5) == e.shard for u in left)
            assert v.stats()["deleted_users"] == sum(shard_of(u, 4) == e.shard for u in moved)
    with SeqVaultCluster(cluster) as c:
        for u, g in zip(users, c.read_many(users)):
            assert g.shard == shard_of(u, 5)
            assert_same(g, oracle.read(u))


def test_grow_shards_moves_only_users_into_the_new_shard(cluster: Path, oracle: Any) -> None:
    new = grow_shards(cluster, 5, keep_old_copies=True)
    assert new.shards == 5 and len(new.entries) == 5
    users = sorted(oracle.users())
    moved = [u for u in users if shard_of(u, 5) != shard_of(u, 4)]
    assert moved and all(shard_of(u, 5) == 4 for u in moved)
    with SeqVault.open(new.entry(4).primary.path, read_only=True, create=False) as v:
        assert sorted(v.users()) == moved
    with SeqVaultCluster(cluster) as c:
        for u, g in zip(users, c.read_many(users)):
            assert g.shard == shard_of(u, 5)
            assert_same(g, oracle.read(u))
