"""Cluster set-up and inspection: `init_cluster`, `status`."""

from __future__ import annotations

import os
import urllib.request
from pathlib import Path
from typing import Any

from ..errors import SeqVaultError
from ..schema import Schema
from . import manifest as mf
from .shardmap import CLUSTER_SEED


def init_cluster(cluster_dir: str | os.PathLike[str], schema: Schema | str | os.PathLike[str],
                 shards: int, nodes: list[str], *, replication: int = 1,
                 seed: int = CLUSTER_SEED) -> mf.ClusterManifest:
    """Create a cluster: publish epoch 1 (S shards, their nodes and store paths). The stores
    themselves are created by the first ingest (or by `serve`)."""
    root = Path(cluster_dir).resolve()
    if (root / mf.MANIFEST_NAME).exists():
        raise SeqVaultError(f"{root}: a cluster exists here already (epoch "
                            f"{mf.load(root).epoch}); pick another --cluster directory")
    if not isinstance(schema, Schema):
        schema = Schema.load(schema)
    m = mf.new_manifest(root, schema.to_dict(), shards, nodes, replication, seed)
    return mf.publish(root, m.next("init"))


def _server_ok(url: str | None) -> bool | None:
    if url is None:
        return None
    try:
        with urllib.request.urlopen(url + "/readyz", timeout=1.0) as r:
            return bool(r.status == 200)
    except OSError:
        return False


def status(cluster_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """Per shard replica: node, users, events, bytes on disk, server and its health."""
    from ..vault import SeqVault

    m = mf.load(cluster_dir)
    rows = []
    for e in m.entries:
        for r, rep in enumerate(e.replicas):
            row: dict[str, Any] = {"shard": e.shard, "replica": r, "node": rep.node,
                                   "path": rep.path, "server": rep.server,
                                   "healthy": _server_ok(rep.server), "users": 0, "events": 0,
                                   "bytes": 0}
            if (Path(rep.path) / "meta").exists():
                try:
                    with SeqVault.open(rep.path, read_only=True, create=False) as v:
                        st = v.stats()
                    row.update(users=st["users"], events=st["events"], bytes=st["disk_bytes"])
                except SeqVaultError as exc:
                    row["error"] = str(exc)
            rows.append(row)
    primaries = [r for r in rows if r["replica"] == 0]
    return {"epoch": m.epoch, "shards": m.shards, "nodes": list(m.nodes),
            "replication": m.replication, "note": m.note,
            "users": sum(r["users"] for r in primaries),
            "events": sum(r["events"] for r in primaries),
            "bytes": sum(r["bytes"] for r in rows), "replicas": rows}
