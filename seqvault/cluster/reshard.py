"""Resharding: move a whole shard to another node; grow the number of shards S.

Move (`move_shard`): copy → catch up → flip → final catch-up → retire.
    copy      every user of the old primary, read from a read-only snapshot, into a new store
              on the target node (BulkWriter, one commit);
    catch up  users whose event count changed since (appends kept arriving) are copied again
              whole (`BulkWriter.add(..., replace=True)`), until a round finds nothing;
    flip      publish the epoch that names the new store; from then on the old store's server
              answers 409 stale-epoch (it no longer owns the shard) and clients reroute;
    final     one more catch-up round for appends that reached the old store before the flip;
    retire    a marker `<name>.retired-e<epoch>` is written beside the old directory, which is
              left in place (a writer may still hold it open) for an operator to remove.

Grow (`grow_shards`, S → S+1): jump hash moves only the users whose shard under S+1 is the new
shard S, about 1/(S+1) of them, and never moves a user between two old shards. So: create the
new shard's store(s); for each old shard, export its users that now hash to S into the new
store; publish the epoch with S+1; then delete them from the old shards (`vault.delete(user)`,
after the publish so that no read routed by the old epoch finds a moved user missing; their
bytes leave the old stores at those stores' next merge). `keep_old_copies=True` skips the
delete and leaves unreachable copies on the old shards.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ValidationError
from ..schema import Schema
from . import manifest as mf
from .runtime import ClusterError
from .shardmap import shards_of

ProgressFn = Callable[[str, int, "int | None"], None]
MAX_CATCHUP_ROUNDS = 5


def _open(path: str, schema: Schema | None = None, read_only: bool = False) -> Any:
    from ..vault import SeqVault

    if read_only:
        return SeqVault.open(path, read_only=True, create=False)
    return SeqVault.open(path, schema=schema)


def _copy_users(src: Any, dst_path: str, schema: Schema, users: list[Any], *,
                replace_existing: bool, progress: ProgressFn | None = None,
                phase: str = "copy") -> int:
    """Copy users' whole histories from `src` into the store at `dst_path` (one commit)."""
    if not users:
        return 0
    names = [c.name for c in schema.columns]
    events = 0
    with _open(dst_path, schema) as dst:
        bw = dst.bulk_writer()
        try:
            for i, u in enumerate(users):
                seq = src.read(u, columns=names + [schema.time_column])
                if seq.count == 0:
                    continue
                ts = np.asarray(seq.columns[schema.time_column], dtype=np.int64)
                bw.add(u, ts, {n: seq.columns[n] for n in names}, replace=replace_existing)
                events += seq.count
                if progress and i % 1000 == 0:
                    progress(phase, i + 1, len(users))
            bw.commit()
        except BaseException:
            bw.abort()
            raise
    if progress:
        progress(phase, len(users), len(users))
    return events


def _changed_users(src: Any, dst_path: str) -> list[Any]:
    """Users whose event count differs between `src` and the store at `dst_path`."""
    cols = [src.schema.time_column]
    with _open(dst_path, read_only=True) as dst:
        out = []
        for u in src.users():
            if src.read(u, columns=cols).count != dst.read(u, columns=cols).count:
                out.append(u)
        return out


def move_shard(cluster_dir: str | os.PathLike[str], shard: int, to_node: str, *,
               progress: ProgressFn | None = None) -> mf.ClusterManifest:
    """Move shard `shard`'s primary replica to `to_node` (see the module doc)."""
    root = Path(cluster_dir).resolve()
    m = mf.load(root)
    if not 0 <= shard < m.shards:
        raise ValidationError(f"shard: {shard} is not in 0..{m.shards - 1}", column="shard",
                              value=shard)
    if to_node not in m.nodes:
        raise ValidationError(f"node: {to_node!r} is not a node of this cluster {list(m.nodes)}",
                              column="node", value=to_node)
    schema = Schema.from_dict(m.schema)
    old = m.entry(shard).primary
    gen = m.epoch + 1
    new_path = str(mf.store_path(root, to_node, shard, 0, gen))
    shutil.rmtree(new_path, ignore_errors=True)  # a failed earlier attempt
    Path(new_path).parent.mkdir(parents=True, exist_ok=True)
    if not (Path(old.path) / "meta").exists():
        _open(new_path, schema).close()
    else:
        with _open(old.path, read_only=True) as src:
            _copy_users(src, new_path, schema, list(src.users()), replace_existing=False,
                        progress=progress)
            for _ in range(MAX_CATCHUP_ROUNDS):
                src.refresh()
                changed = _changed_users(src, new_path)
                if not changed:
                    break
                _copy_users(src, new_path, schema, changed, replace_existing=True,
                            progress=progress, phase="catch up")
    entry = m.entry(shard)
    new_entry = replace(entry, replicas=(mf.Replica(to_node, new_path, None),
                                         *entry.replicas[1:]))
    entries = tuple(new_entry if e.shard == shard else e for e in m.entries)
    new = mf.publish(root, m.next(f"move shard {shard} from {old.node} to {to_node}",
                                  entries=entries))
    if (Path(old.path) / "meta").exists():
        with _open(old.path, read_only=True) as src:
            src.refresh()
            changed = _changed_users(src, new_path)
            _copy_users(src, new_path, schema, changed, replace_existing=True,
                        progress=progress, phase="final catch up")
        # The directory stays where it is: a writer may still hold it open (renaming a live
        # store under its writer breaks the writer's next checkpoint). A marker says it is
        # no longer the shard's and may be removed once no process uses it.
        Path(f"{old.path}.retired-e{new.epoch}").write_text(
            f"{old.path} left shard {shard} at epoch {new.epoch} ({new.note}); remove it once "
            "no process has it open\n")
    return new


def grow_shards(cluster_dir: str | os.PathLike[str], new_shards: int, *,
                node: str | None = None, keep_old_copies: bool = False,
                progress: ProgressFn | None = None) -> mf.ClusterManifest:
    """Grow S by one (jump hash: only users of the new shard move). See the module doc."""
    root = Path(cluster_dir).resolve()
    m = mf.load(root)
    if new_shards != m.shards + 1:
        raise ValidationError(f"shards: growing from {m.shards} to {new_shards}; grow one "
                              f"shard at a time (expected {m.shards + 1})", column="shards",
                              value=new_shards)
    schema = Schema.from_dict(m.schema)
    target = m.shards
    nodes = list(m.nodes)
    first = node if node is not None else nodes[target % len(nodes)]
    if first not in nodes:
        raise ValidationError(f"node: {first!r} is not a node of this cluster {nodes}",
                              column="node", value=first)
    i0 = nodes.index(first)
    reps = []
    for r in range(m.replication):
        n = nodes[(i0 + r) % len(nodes)]
        path = mf.store_path(root, n, target, r, m.epoch + 1)
        shutil.rmtree(path, ignore_errors=True)  # an unpublished earlier attempt
        path.parent.mkdir(parents=True, exist_ok=True)
        _open(str(path), schema).close()
        reps.append(mf.Replica(n, str(path), None))
    moved: dict[int, list[Any]] = {}
    for e in m.entries:
        src_path = e.primary.path
        if not (Path(src_path) / "meta").exists():
            continue
        with _open(src_path, read_only=True) as src:
            users = list(src.users())
            if not users:
                continue
            arr = np.empty(len(users), dtype=object) if schema.user_type == "string" \
                else np.asarray(users, dtype=np.int64)
            if schema.user_type == "string":
                arr[:] = users
            new_of = shards_of(arr, new_shards, m.seed)
            if np.any((new_of != e.shard) & (new_of != target)):
                raise ClusterError(f"shard {e.shard}: users would move between old shards; "
                                   "the manifest's hash does not match the stores")
            go = [u for u, s in zip(users, new_of) if s == target]
            moved[e.shard] = go
            for rep in reps:
                _copy_users(src, rep.path, schema, go, replace_existing=False,
                            progress=progress, phase=f"export shard {e.shard}")
    entries = (*m.entries, mf.ShardEntry(target, tuple(reps)))
    note = f"grow shards {m.shards} → {new_shards}: {sum(map(len, moved.values()))} users moved"
    if keep_old_copies:
        note += " (old copies kept)"
    published = mf.publish(root, m.next(note, shards=new_shards, entries=entries))
    if not keep_old_copies:
        # After the publish: the old shards no longer own these users. A crash here leaves
        # unreachable copies (as keep_old_copies does), never a user that reads as missing.
        for shard, users in moved.items():
            for rep in m.entry(shard).replicas:
                with _open(rep.path, schema) as vault:
                    for u in users:
                        vault.delete(u)
    return published
