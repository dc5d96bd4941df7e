"""`SeqVaultCluster`: routed reads and appends over a cluster's shards.

Two modes over one routing layer:
- "embedded": opens each shard's store directly (read-only for reads; the primary replica's
  writer for appends, opened on first append) — a training job or a batch pipeline on a host
  that sees the stores' disks;
- "http": talks to the shard servers that `cluster serve` started (batchGet for reads,
  POST /users/<id>/events for appends with the writers' bearer token).

Reads go to one replica per shard (the primary first; on a connection error or 5xx the next
replica, so a killed server costs a retry, not an error). `read_many` groups users by shard,
sends one batchGet per shard (in parallel threads in HTTP mode) and puts the answers back in
the order asked. Every HTTP request carries the manifest epoch the client routed with; a 409
`stale-epoch` answer, or a connection error, makes the client reload the manifest and retry.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import SeqVaultError, ValidationError
from ..schema import Schema
from . import manifest as mf
from .runtime import ClusterError
from .shardmap import shard_of, shards_of

MODES = ("embedded", "http")


@dataclass
class ClusterSequence:
    """One user's events: columns as numpy arrays in ascending time order."""

    user: Any
    shard: int
    count: int
    columns: dict[str, np.ndarray]

    def __getitem__(self, name: str) -> np.ndarray:
        return self.columns[name]


class SeqVaultCluster:
    def __init__(self, cluster_dir: str | os.PathLike[str], mode: str = "embedded", *,
                 token: str | None = None, timeout_s: float = 10.0, retries: int = 20,
                 max_threads: int = 16) -> None:
        if mode not in MODES:
            raise ValidationError(f"mode: {mode!r} must be one of {MODES}", column="mode",
                                  value=mode)
        # A URL (any shard server's) bootstraps an HTTP client that sees no shared directory:
        # the manifest is then fetched from GET /cluster/manifest of a live server.
        self.seed_url = str(cluster_dir).rstrip("/") if str(cluster_dir).startswith(
            ("http://", "https://")) else None
        if self.seed_url is not None and mode != "http":
            raise ValidationError(f"mode: {mode!r} cannot open stores through a URL; use "
                                  "mode='http' or the cluster directory", column="mode",
                                  value=mode)
        self.cluster_dir = Path(cluster_dir) if self.seed_url is None else Path(".")
        self.mode = mode
        self.token = token
        self.timeout_s = timeout_s
        self.retries = retries
        self._http: Any = None
        self.manifest = self._load_manifest(None)
        self.schema = Schema.from_dict(self.manifest.schema)
        self.refetches = 0
        self.failovers = 0
        self._readers: dict[str, Any] = {}
        self._writers: dict[str, Any] = {}
        self._pool = ThreadPoolExecutor(max_workers=max_threads) if mode == "http" else None

    # ------------------------------------------------------------------ routing
    @property
    def epoch(self) -> int:
        return self.manifest.epoch

    def refresh(self) -> bool:
        """Reload the manifest; True when the epoch changed (stores may have moved)."""
        new = self._load_manifest(self.manifest)
        changed = new.epoch != self.manifest.epoch
        if changed:
            self.refetches += 1
            moved = {r.path for e in self.manifest.entries for r in e.replicas} - {
                r.path for e in new.entries for r in e.replicas}
            for path in moved:
                for cache in (self._readers, self._writers):
                    v = cache.pop(path, None)
                    if v is not None:
                        v.close()
            self.manifest = new
        return changed

    def _load_manifest(self, current: mf.ClusterManifest | None) -> mf.ClusterManifest:
        if self.seed_url is None:
            return mf.load(self.cluster_dir)
        import httpx

        urls = [self.seed_url]
        if current is not None:  # any live server will do: the seed may be the one that died
            urls += [r.server for e in current.entries for r in e.replicas if r.server]
        errors = []
        for url in dict.fromkeys(urls):
            try:
                r = self._client().get(url + "/cluster/manifest")
            except httpx.HTTPError as exc:
                errors.append(f"{url}: {exc!r}")
                continue
            if r.status_code == 200:
                return mf.ClusterManifest.from_dict(r.json(), f"{url}/cluster/manifest")
            errors.append(f"{url}: HTTP {r.status_code}")
        raise ClusterError(f"no server answered GET /cluster/manifest ({'; '.join(errors[:3])})")

    def shard_of(self, user: Any) -> int:
        return shard_of(user, self.manifest.shards, self.manifest.seed)

    # ------------------------------------------------------------------ public API
    def read(self, user: Any, last: int | None = None, columns: Sequence[str] | None = None,
             before: int | None = None, since: int | None = None) -> ClusterSequence:
        return self.read_many([user], last=last, columns=columns, before=before, since=since)[0]

    def read_many(self, users: Iterable[Any], last: int | None = None,
                  columns: Sequence[str] | None = None, before: Any = None,
                  since: int | None = None) -> list[ClusterSequence]:
        """Scatter-gather: one call per shard; answers in the order asked."""
        users = list(users)
        if not users:
            return []
        per_user_before = before is not None and not isinstance(before, int | np.integer)
        befores = list(before) if per_user_before else []
        if per_user_before and len(befores) != len(users):
            raise ValidationError(f"before: {len(befores)} values for {len(users)} users",
                                  column="before")
        for attempt in range(self.retries + 1):
            m = self.manifest
            shards = self._shards(users, m)
            groups: dict[int, np.ndarray] = {}
            order = np.argsort(shards, kind="stable")
            s_sorted = shards[order]
            cuts = np.flatnonzero(s_sorted[1:] != s_sorted[:-1]) + 1
            for idx in np.split(order, cuts):
                groups[int(shards[idx[0]])] = idx
            jobs = []
            for shard, idx in groups.items():
                us = [users[i] for i in idx]
                bs = [befores[i] for i in idx] if per_user_before else before
                jobs.append((shard, idx, us, bs))
            try:
                if self._pool is not None and len(jobs) > 1:
                    results = list(self._pool.map(
                        lambda j, m=m: self._read_shard(m, j[0], j[2], last, columns, j[3],
                                                        since),
                        jobs))
                else:
                    results = [self._read_shard(m, j[0], j[2], last, columns, j[3], since)
                               for j in jobs]
            except _Stale:
                if attempt == self.retries:
                    raise ClusterError(f"read_many: still routed to stale shards after "
                                       f"{self.retries} manifest refetches") from None
                self.refresh()
                time.sleep(min(0.05 * (attempt + 1), 0.5))
                continue
            out: list[ClusterSequence | None] = [None] * len(users)
            for (_, idx, _, _), seqs in zip(jobs, results):
                for i, seq in zip(idx, seqs):
                    out[int(i)] = seq
            return [s for s in out if s is not None]
        raise AssertionError("unreachable")

    def append(self, user: Any, events: Mapping[str, Any]) -> int:
        """Append one user's events on the shard's single writer (the primary replica)."""
        for attempt in range(self.retries + 1):
            m = self.manifest
            shard = shard_of(user, m.shards, m.seed)
            rep = m.entry(shard).primary
            try:
                if self.mode == "embedded":
                    return int(self._writer(rep.path).append(user, events))
                return self._http_append(m, shard, rep, user, events)
            except _Stale:
                if attempt == self.retries:
                    raise ClusterError(f"append: shard {shard} still stale after "
                                       f"{self.retries} manifest refetches") from None
                self.refresh()
                time.sleep(min(0.05 * (attempt + 1), 0.5))
        raise AssertionError("unreachable")

    def flush(self) -> None:
        for w in self._writers.values():
            w.flush()

    def close(self) -> None:
        for cache in (self._readers, self._writers):
            for v in cache.values():
                v.close()
            cache.clear()
        if self._http is not None:
            self._http.close()
            self._http = None
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def __enter__(self) -> SeqVaultCluster:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ------------------------------------------------------------------ embedded
    def _shards(self, users: list[Any], m: mf.ClusterManifest) -> np.ndarray:
        if self.schema.user_type == "string":
            arr = np.empty(len(users), dtype=object)
            arr[:] = users
            return shards_of(arr, m.shards, m.seed)
        return shards_of(np.asarray(users, dtype=np.int64), m.shards, m.seed)

    def _reader(self, path: str) -> Any:
        from ..vault import SeqVault

        v = self._writers.get(path) or self._readers.get(path)
        if v is None:
            if not (Path(path) / "meta").exists():
                return None  # a shard that never got rows: every user reads empty
            v = self._readers[path] = SeqVault.open(path, read_only=True, create=False)
        return v

    def _writer(self, path: str) -> Any:
        from ..vault import SeqVault

        v = self._writers.get(path)
        if v is None:
            old = self._readers.pop(path, None)
            if old is not None:
                old.close()
            v = self._writers[path] = SeqVault.open(path, schema=self.schema)
        return v

    def _read_shard(self, m: mf.ClusterManifest, shard: int, users: list[Any],
                    last: int | None, columns: Sequence[str] | None, before: Any,
                    since: int | None) -> list[ClusterSequence]:
        if self.mode == "http":
            return self._http_read(m, shard, users, last, columns, before, since)
        errors = []
        for rep in m.entry(shard).replicas:
            try:
                v = self._reader(rep.path)
            except (SeqVaultError, OSError) as exc:  # a lost replica: try the next one
                errors.append(f"{rep.path}: {exc}")
                self.failovers += 1
                continue
            if v is None:
                return [ClusterSequence(u, shard, 0, {}) for u in users]
            seqs = v.read_many(users, last=last, columns=columns, before=before, since=since)
            return [ClusterSequence(u, shard, s.count, dict(s.columns))
                    for u, s in zip(users, seqs)]
        raise ClusterError(f"shard {shard}: no replica could be opened ({'; '.join(errors)})")

    # ------------------------------------------------------------------ http
    def _client(self) -> Any:
        if self._http is None:
            import httpx

            self._http = httpx.Client(timeout=self.timeout_s,
                                      limits=httpx.Limits(max_connections=64))
        return self._http

    def _http_read(self, m: mf.ClusterManifest, shard: int, users: list[Any],
                   last: int | None, columns: Sequence[str] | None, before: Any,
                   since: int | None) -> list[ClusterSequence]:
        import httpx
        import msgpack

        body: dict[str, Any] = {"user_ids": users}
        if last is not None:
            body["last"] = last
        if columns is not None:
            body["columns"] = list(columns)
        if before is not None:
            body["before"] = [int(b) for b in before] if isinstance(before, list) else int(before)
        if since is not None:
            body["since"] = int(since)
        headers = {"Accept": "application/vnd.msgpack", "X-SeqVault-Epoch": str(m.epoch)}
        errors = []
        for rep in m.entry(shard).replicas:
            if rep.server is None:
                errors.append(f"{rep.path}: no server")
                continue
            try:
                r = self._client().post(rep.server + "/sequences:batchGet", json=body,
                                        headers=headers)
            except httpx.HTTPError as exc:
                errors.append(f"{rep.server}: {exc!r}")
                self.failovers += 1
                continue
            if r.status_code == 409:
                raise _Stale()
            if r.status_code >= 500:
                errors.append(f"{rep.server}: HTTP {r.status_code}")
                self.failovers += 1
                continue
            if r.status_code != 200:
                raise ClusterError(f"shard {shard}: {rep.server} answered {r.status_code}: "
                                   f"{r.text[:300]}")
            results = msgpack.unpackb(r.content, raw=False)["results"]
            return [self._decode(u, shard, res) for u, res in zip(users, results)]
        # Every replica failed: the servers may have moved (manifest changed) or be restarting.
        raise _Stale(f"shard {shard}: {'; '.join(errors)}")

    def _decode(self, user: Any, shard: int, res: dict[str, Any]) -> ClusterSequence:
        if res["status"] != 200:
            raise ValidationError(f"user {user!r}: {res.get('problem', {}).get('detail')}",
                                  value=user)
        cols = {}
        for name, vals in res["columns"].items():
            if name == self.schema.time_column:
                cols[name] = np.asarray(vals, dtype=np.int64)
            else:
                c = self.schema.column(name)
                cols[name] = (np.array(vals, dtype=object) if c.is_string
                              else np.asarray(vals, dtype=c.dtype))
        return ClusterSequence(user, shard, int(res["count"]), cols)

    def _http_append(self, m: mf.ClusterManifest, shard: int, rep: mf.Replica, user: Any,
                     events: Mapping[str, Any]) -> int:
        import httpx
        import msgpack

        if rep.server is None:
            raise _Stale(f"shard {shard}: primary has no server")
        if not self.token:
            raise ValidationError("token: HTTP appends need the writers' bearer token "
                                  "(SeqVaultCluster(..., token=...))", column="token")
        payload = {k: (v.tolist() if isinstance(v, np.ndarray) else list(v))
                   for k, v in events.items()}
        try:
            r = self._client().post(
                f"{rep.server}/users/{user}/events", content=msgpack.packb({"columns": payload}),
                headers={"Content-Type": "application/vnd.msgpack",
                         "Authorization": f"Bearer {self.token}",
                         "X-SeqVault-Epoch": str(m.epoch)})
        except httpx.HTTPError as exc:
            # Only the primary takes writes: wait for its supervisor to restart it.
            raise _Stale(f"{rep.server}: {exc!r}") from None
        if r.status_code == 409 or r.status_code >= 500:
            raise _Stale(f"{rep.server}: HTTP {r.status_code}")
        if r.status_code != 200:
            raise ClusterError(f"append to shard {shard}: {rep.server} answered "
                               f"{r.status_code}: {r.text[:300]}")
        return int(r.json()["appended"])

    def __repr__(self) -> str:
        where = self.seed_url or str(self.cluster_dir)
        return (f"SeqVaultCluster({where!r}, mode={self.mode!r}, "
                f"shards={self.manifest.shards}, epoch={self.manifest.epoch})")


class _Stale(SeqVaultError):
    """Internal: the routing used an old manifest (or every replica of a shard was down)."""


__all__ = ["ClusterSequence", "SeqVaultCluster"]
