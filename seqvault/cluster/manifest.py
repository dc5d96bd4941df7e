"""The cluster manifest: which store holds which shard, at which epoch (docs/format/cluster.md).

A cluster directory holds `cluster.json` (the current manifest) and `epochs/NNNNNNNN.json` (every
published epoch, kept for audit and for clients that ask "what changed"). Publishing writes the
new epoch file, fsyncs it, then swaps `cluster.json` with `os.replace` and fsyncs the directory:
a reader sees the old manifest or the new one, never a torn file. Epochs only grow; `publish`
refuses to write an epoch that is not exactly one above the one on disk (a concurrent
publisher lost the race and must reload).
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from ..errors import CorruptionError, FormatVersionError, NotFound, SeqVaultError, ValidationError
from ..wal import fsync_dir
from .shardmap import CLUSTER_SEED, HASH_VERSION, check_shards

MANIFEST_NAME = "cluster.json"
EPOCHS_DIR = "epochs"
LOCK_NAME = ".publish.lock"
FORMAT = "seqvault-cluster"
FORMAT_VERSION = 1


class StaleEpoch(SeqVaultError):
    """A publish or an answer was for an older epoch than the one now current."""


@dataclass(frozen=True)
class Replica:
    """One copy of a shard: a store directory on a node, and the server serving it (if any)."""

    node: str
    path: str
    server: str | None = None  # "http://127.0.0.1:PORT" once `cluster serve` started it

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ShardEntry:
    shard: int
    replicas: tuple[Replica, ...]  # replicas[0] is the primary: the shard's single writer

    @property
    def primary(self) -> Replica:
        return self.replicas[0]

    def to_dict(self) -> dict[str, Any]:
        return {"shard": self.shard, "replicas": [r.to_dict() for r in self.replicas]}


@dataclass(frozen=True)
class ClusterManifest:
    shards: int
    seed: int
    hash_version: int
    epoch: int
    schema: dict[str, Any]  # the stores' schema (Schema.to_dict()); every shard has the same
    entries: tuple[ShardEntry, ...]
    nodes: tuple[str, ...]
    replication: int = 1
    created_ns: int = 0
    published_ns: int = 0
    note: str = ""  # what this epoch changed ("init", "ingest job …", "move shard 3 …")
    ingests: tuple[str, ...] = field(default_factory=tuple)  # job ids committed so far

    def entry(self, shard: int) -> ShardEntry:
        return self.entries[shard]

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "format_version": FORMAT_VERSION, "shards": self.shards,
                "seed": self.seed, "hash_version": self.hash_version, "epoch": self.epoch,
                "replication": self.replication, "nodes": list(self.nodes),
                "created_ns": self.created_ns, "published_ns": self.published_ns,
                "note": self.note, "ingests": list(self.ingests), "schema": self.schema,
                "shard_map": [e.to_dict() for e in self.entries]}

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "manifest") -> ClusterManifest:
        if d.get("format") != FORMAT:
            raise CorruptionError(f"{where}: format {d.get('format')!r} is not {FORMAT!r}",
                                  path=where)
        if d.get("format_version") != FORMAT_VERSION:
            raise FormatVersionError(f"{where}: format_version {d.get('format_version')!r}; "
                                     f"this SeqVault reads version {FORMAT_VERSION}")
        if d.get("hash_version") != HASH_VERSION:
            raise FormatVersionError(f"{where}: hash_version {d.get('hash_version')!r}; this "
                                     f"SeqVault computes shards with version {HASH_VERSION}")
        entries = tuple(ShardEntry(int(e["shard"]), tuple(Replica(**r) for r in e["replicas"]))
                        for e in d["shard_map"])
        if [e.shard for e in entries] != list(range(int(d["shards"]))):
            raise CorruptionError(f"{where}: shard_map must list shards 0..{d['shards'] - 1} in "
                                  "order", path=where)
        return cls(shards=int(d["shards"]), seed=int(d["seed"]),
                   hash_version=int(d["hash_version"]), epoch=int(d["epoch"]),
                   schema=d["schema"], entries=entries, nodes=tuple(d["nodes"]),
                   replication=int(d.get("replication", 1)), created_ns=int(d["created_ns"]),
                   published_ns=int(d["published_ns"]), note=str(d.get("note", "")),
                   ingests=tuple(d.get("ingests", ())))

    def next(self, note: str, **changes: Any) -> ClusterManifest:
        """The manifest of the next epoch (not yet published)."""
        return replace(self, epoch=self.epoch + 1, note=note, **changes)


def new_manifest(cluster_dir: Path, schema: dict[str, Any], shards: int, nodes: list[str],
                 replication: int = 1, seed: int = CLUSTER_SEED) -> ClusterManifest:
    """Epoch 1: shard s (replica r) on node (s + r) % len(nodes), at
    <cluster_dir>/stores/<node>/shard-<s>-r<r> (a stand-in for a node-local disk)."""
    shards = check_shards(shards)
    if not nodes:
        raise ValidationError("nodes: need at least one node", column="nodes")
    if len(set(nodes)) != len(nodes):
        raise ValidationError(f"nodes: {nodes} has duplicates", column="nodes", value=nodes)
    if not 1 <= replication <= len(nodes):
        raise ValidationError(f"replication: {replication} must be from 1 to the number of "
                              f"nodes ({len(nodes)})", column="replication", value=replication)
    entries = []
    for s in range(shards):
        reps = []
        for r in range(replication):
            node = nodes[(s + r) % len(nodes)]
            reps.append(Replica(node, str(store_path(cluster_dir, node, s, r))))
        entries.append(ShardEntry(s, tuple(reps)))
    now = time.time_ns()
    return ClusterManifest(shards=shards, seed=seed, hash_version=HASH_VERSION, epoch=0,
                           schema=schema, entries=tuple(entries), nodes=tuple(nodes),
                           replication=replication, created_ns=now, published_ns=now)


def store_path(cluster_dir: Path, node: str, shard: int, replica: int, gen: int = 0) -> Path:
    suffix = f"-g{gen}" if gen else ""
    return Path(cluster_dir).resolve() / "stores" / node / f"shard-{shard:05d}-r{replica}{suffix}"


def load(cluster_dir: str | os.PathLike[str]) -> ClusterManifest:
    path = Path(cluster_dir) / MANIFEST_NAME
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise NotFound(f"{path}: no cluster manifest; create one with `seqvault cluster init "
                       f"--cluster {cluster_dir}`") from None
    try:
        d = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise CorruptionError(f"{path}: not valid JSON ({exc})", path=str(path)) from None
    return ClusterManifest.from_dict(d, str(path))


def _write_durable(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)



def publish(cluster_dir: str | os.PathLike[str], m: ClusterManifest) -> ClusterManifest:
    """Make `m` the current manifest. Its epoch must be the current one + 1 (or 1 for a new
    cluster). Returns it with `published_ns` set."""
    root = Path(cluster_dir)
    root.mkdir(parents=True, exist_ok=True)
    (root / EPOCHS_DIR).mkdir(exist_ok=True)
    # The check and the swap under one lock: two publishers of the same epoch cannot both win.
    with open(root / LOCK_NAME, "a+b") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        try:
            current = load(root).epoch
        except NotFound:
            current = 0
        if m.epoch != current + 1:
            raise StaleEpoch(f"epoch: publishing {m.epoch} but {root} is at epoch {current}; "
                             f"expected {current + 1} (reload the manifest and redo the change)")
        m = replace(m, published_ns=time.time_ns())
        data = json.dumps(m.to_dict(), indent=1).encode()
        _write_durable(root / EPOCHS_DIR / f"{m.epoch:08d}.json", data)
        _write_durable(root / MANIFEST_NAME, data)
        fsync_dir(root)
    return m
