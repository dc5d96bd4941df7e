"""Distributed ingest: `ingest(cluster_dir, paths)` (docs/design/cluster.md, "Ingest").

    fingerprint inputs → refuse files the cluster ingested before (cluster ledger)
    stage  (Ray Data): pieces (file, row groups) → read + validate + tag shard → StageSink
           writes staging/<job>/sNNNNN/<file>-<first row>.parquet
    commit (Ray tasks): one task per shard replica, pinned to its node: concatenate the shard's
           staged files in name order (= input order) into one file, run the store's own
           all-or-nothing `ingest`; a store that already holds that exact file (a retry after
           a partial failure) answers DuplicateIngest and counts as committed
    publish: only when every shard replica committed: vocabularies, the next manifest epoch,
           then the cluster ledger; the staging area is removed whatever happened

Equal timestamps keep input order: within a shard the staged rows are concatenated by (input
file index, row number within the file), which is exactly the order a single-node ingest of the
same files reads them in; the store's stable (user, ts) sort then does the rest.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DuplicateIngest, SeqVaultError, ValidationError
from ..ingest import expand_paths, fingerprint
from ..ingest.sources import InputFile
from ..schema import Schema
from ..validate import coerce_column, coerce_time, coerce_users
from . import manifest as mf
from .runtime import DEFAULT_TIMEOUT_S, ClusterError, cause_of, import_ray, node_resource
from .shardmap import shards_of
from .vocab import extend_vocabs

ProgressFn = Callable[[str, int, "int | None"], None]
STAGING_DIR = "staging"
LEDGER_DIR = "ledger"
ROW_GROUPS_PER_PIECE = 4
POS_COLUMN, SHARD_COLUMN, FILE_COLUMN = "__pos", "__shard", "__file"


@dataclass
class ClusterIngestSummary:
    job_id: str = ""
    files: list[str] = field(default_factory=list)
    events: int = 0
    pieces: int = 0
    shard_tasks: int = 0
    committed: int = 0  # shard replicas that committed in this run
    already: int = 0  # shard replicas that held this job's data already (a retry)
    epoch: int = 0
    per_shard_events: dict[int, int] = field(default_factory=dict)
    elapsed_s: float = 0.0
    events_per_s: float = 0.0
    phases_s: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ---------------------------------------------------------------------- stage
def _pieces(files: list[Path], schema: Schema) -> list[dict[str, Any]]:
    """Units of read parallelism: a few Parquet row groups, or a whole CSV / JSON file."""
    import pyarrow.parquet as pq

    out: list[dict[str, Any]] = []
    for i, p in enumerate(files):
        f = InputFile.open(p)
        if f.kind == "parquet":
            n_rg = pq.ParquetFile(p).metadata.num_row_groups
            first_row = 0
            md = pq.ParquetFile(p).metadata
            for start in range(0, max(n_rg, 1), ROW_GROUPS_PER_PIECE):
                rgs = list(range(start, min(start + ROW_GROUPS_PER_PIECE, n_rg)))
                out.append({"file": i, "path": str(p), "rgs": json.dumps(rgs),
                            "first_row": first_row})
                first_row += sum(md.row_group(r).num_rows for r in rgs)
        else:
            out.append({"file": i, "path": str(p), "rgs": "null", "first_row": 0})
    return out


class ReadAndTag:
    """Ray Data map: one piece → an Arrow table of validated rows tagged with shard, file index
    and row number in the file. Validation happens here, before anything is committed, so bad
    input fails the whole job with nothing written anywhere."""

    def __init__(self, schema: dict[str, Any], shards: int, seed: int) -> None:
        self.schema = Schema.from_dict(schema)
        self.shards = shards
        self.seed = seed

    def __call__(self, batch: dict[str, np.ndarray]) -> Any:
        import pyarrow as pa

        tables = [self.read_piece(int(batch["file"][i]), str(batch["path"][i]),
                                  json.loads(str(batch["rgs"][i])), int(batch["first_row"][i]))
                  for i in range(len(batch["file"]))]
        return pa.concat_tables(tables) if tables else None

    def read_piece(self, file_idx: int, path: str, rgs: list[int] | None, first_row: int) -> Any:
        import pyarrow as pa
        import pyarrow.parquet as pq

        s = self.schema
        needed = [s.user_column, s.time_column, *(c.name for c in s.columns)]
        strings = tuple(c.name for c in s.columns if c.is_string)
        if s.user_type == "string":
            strings += (s.user_column,)
        out = []
        if rgs is not None:
            pf = pq.ParquetFile(path)
            have = pf.schema_arrow.names
            missing = [c for c in needed if c not in have]
            if missing:
                raise ValidationError(f"{path}: missing column(s) {missing}; the cluster's "
                                      f"schema needs {needed} (columns in the file: {have})",
                                      column=missing[0])
            batches: Iterable[Any] = (pf.iter_batches(batch_size=262_144, row_groups=rgs,
                                                      columns=needed) if rgs else [])
        else:
            f = InputFile.open(Path(path), string_columns=strings)
            batches = (b.data for b in f.batches(needed, 262_144))
        row = first_row
        for rb in batches:
            out.append(self.convert(rb, path, row, file_idx))
            row += rb.num_rows
        if not out:
            return pa.table({SHARD_COLUMN: pa.array([], pa.int32())})
        return pa.concat_tables(out)

    def convert(self, rb: Any, path: str, row0: int, file_idx: int) -> Any:
        import pyarrow as pa

        s = self.schema
        names = rb.schema.names
        missing = [c for c in (s.user_column, s.time_column, *(c.name for c in s.columns))
                   if c not in names]
        if missing:
            raise ValidationError(f"{path}: missing column(s) {missing}; the cluster's schema "
                                  f"needs them (columns in the file: {names})", column=missing[0])
        try:
            users = coerce_users(s, rb.column(s.user_column).to_numpy(zero_copy_only=False))
            ts = coerce_time(s, rb.column(s.time_column).to_numpy(zero_copy_only=False))
            cols = {c.name: coerce_column(c, rb.column(c.name).to_numpy(zero_copy_only=False))
                    for c in s.columns}
        except ValidationError as exc:
            where = f" (row {row0 + exc.row} of the file)" if exc.row is not None else ""
            raise ValidationError(f"{path}{where}: {exc}", column=exc.column, value=exc.value,
                                  row=None if exc.row is None else row0 + exc.row) from None
        n = ts.size
        arrays = {
            SHARD_COLUMN: pa.array(shards_of(users, self.shards, self.seed).astype(np.int32)),
            FILE_COLUMN: pa.array(np.full(n, file_idx, dtype=np.int32)),
            POS_COLUMN: pa.array(np.arange(row0, row0 + n, dtype=np.int64)),
            s.user_column: pa.array(users, pa.string() if s.user_type == "string"
                                    else pa.int64()),
            s.time_column: pa.array(ts, pa.int64()),
        }
        for c in s.columns:
            v = cols[c.name]
            arrays[c.name] = pa.array(v, pa.string()) if c.is_string else pa.array(v)
        return pa.table(arrays)


def read_and_tag(batch: dict[str, np.ndarray], schema: dict[str, Any], shards: int,
                 seed: int) -> Any:
    return ReadAndTag(schema, shards, seed)(batch)


def _stage_sink(root: Path) -> Any:
    """A Ray Data Datasink writing each block's rows to per-shard files (built lazily so that
    importing this module does not import Ray)."""
    from ray.data import Datasink
    from ray.data.block import BlockAccessor

    class StageSink(Datasink):  # type: ignore[misc]
        """Every (shard, input file) run of a block becomes one file named by the file index
        and its first row: names sort in input order and never collide across blocks."""

        def __init__(self, root: Path) -> None:
            self.root = root

        def write(self, blocks: Iterable[Any], ctx: Any) -> int:
            import pyarrow.parquet as pq

            rows = 0
            for block in blocks:
                t = BlockAccessor.for_block(block).to_arrow()
                if t.num_rows == 0:
                    continue
                key = (t.column(SHARD_COLUMN).to_numpy().astype(np.int64) << 32) | \
                    t.column(FILE_COLUMN).to_numpy().astype(np.int64)
                order = np.argsort(key, kind="stable")
                k = key[order]
                cuts = np.flatnonzero(k[1:] != k[:-1]) + 1
                pos = t.column(POS_COLUMN).to_numpy()
                for idx in np.split(order, cuts):
                    shard, file_idx = int(key[idx[0]] >> 32), int(key[idx[0]] & 0xFFFFFFFF)
                    d = self.root / f"s{shard:05d}"
                    d.mkdir(parents=True, exist_ok=True)
                    name = f"{file_idx:06d}-{int(pos[idx[0]]):012d}.parquet"
                    tmp = d / f".{name}.tmp"
                    pq.write_table(t.take(idx), tmp, compression="none")
                    os.replace(tmp, d / name)
                    rows += idx.size
            return rows

    return StageSink(root)


def _run_with_timeout(fn: Callable[[], Any], timeout_s: float, what: str) -> Any:
    """Ray Data's own stall detector waits 30 minutes; ours gives up after `timeout_s`."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # handed to the caller's thread
            box["error"] = exc

    th = threading.Thread(target=target, name="seqvault-stage", daemon=True)
    th.start()
    th.join(timeout_s)
    if th.is_alive():
        raise ClusterError(f"{what}: no result within {timeout_s:.0f} s (timeout_s)")
    if "error" in box:
        exc = box["error"]
        inner = cause_of(exc)
        raise inner from (exc if inner is not exc else None)
    return box.get("value")


# ---------------------------------------------------------------------- commit
def ingest_shard(store: str, schema: dict[str, Any], staged: list[str], merged: str,
                 string_columns: list[str], collect_strings: bool) -> dict[str, Any]:
    """Runs on the shard's node: one all-or-nothing single-node ingest of the shard's rows."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from ..ingest import ingest
    from ..vault import SeqVault

    table = pa.concat_tables([pq.read_table(p) for p in sorted(staged)])
    table = table.drop_columns([SHARD_COLUMN, FILE_COLUMN, POS_COLUMN])
    # Fixed writer settings: the same rows give the same bytes, so the same fingerprint, so a
    # retry of this job is refused by the store's ledger instead of loading the rows twice.
    Path(merged).parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, merged, compression="none", row_group_size=1 << 20)
    strings: dict[str, list[str]] = {}
    if collect_strings:
        for c in string_columns:
            strings[c] = sorted(set(table.column(c).unique().to_pylist()))
    status = "committed"
    with SeqVault.open(store, schema=Schema.from_dict(schema)) as vault:
        try:
            ingest(vault, [merged])
        except DuplicateIngest:
            status = "already"
    os.unlink(merged)
    return {"status": status, "events": table.num_rows, "strings": strings}


# ---------------------------------------------------------------------- the job
def _ledger_path(cluster_dir: Path, fp: str) -> Path:
    return cluster_dir / LEDGER_DIR / f"{fp}.json"


def ingest(cluster_dir: str | os.PathLike[str], paths: Sequence[str | os.PathLike[str]], *,
           force: bool = False, progress: ProgressFn | None = None,
           timeout_s: float = DEFAULT_TIMEOUT_S, cpus_per_task: float = 0.5) -> ClusterIngestSummary:
    """Load files into every shard of the cluster at `cluster_dir`; publish the next epoch
    only when every shard replica committed. Ray must be initialised (see runtime.init_local)."""
    ray = import_ray()
    t0 = time.perf_counter()
    root = Path(cluster_dir)
    m = mf.load(root)
    schema = Schema.from_dict(m.schema)
    files = expand_paths(list(paths))
    fps: list[str] = []
    for p in files:
        fp = fingerprint(p)
        prev = _ledger_path(root, fp)
        if prev.exists() and not force:
            info = json.loads(prev.read_text())
            raise DuplicateIngest(f"{p} was already ingested into this cluster by job "
                                  f"{info['job_id']} (epoch {info['epoch']}, as "
                                  f"{info['path']!r}); nothing was written. Pass --force to "
                                  "load it again (its events would be stored twice)")
        if fp in fps and not force:
            raise DuplicateIngest(f"{p} has the same content as {files[fps.index(fp)]} given "
                                  "earlier in this ingest; pass --force to load it twice")
        fps.append(fp)
    job_id = hashlib.blake2b(("\n".join(fps) + f"\n{m.shards}\n{force}").encode(),
                             digest_size=8).hexdigest()
    summary = ClusterIngestSummary(job_id=job_id, files=[str(p) for p in files])
    summary.phases_s["fingerprint"] = time.perf_counter() - t0
    staging = root / STAGING_DIR / job_id
    shutil.rmtree(staging, ignore_errors=True)  # what a failed attempt left
    staging.mkdir(parents=True)
    try:
        # ------------------------------------------------------------ stage (Ray Data)
        t1 = time.perf_counter()
        pieces = _pieces(files, schema)
        summary.pieces = len(pieces)
        # A ValidationError must reach the caller as itself, not as UserCodeException text.
        ray.data.DataContext.get_current().raise_original_map_exception = True
        ds = ray.data.from_items(pieces, override_num_blocks=max(1, len(pieces)))
        # Tasks, not an actor pool: a pool holding every CPU upstream of a later stage
        # deadlocked in the probe (issue 15); fractional CPUs leave room for the writers.
        ds = ds.map_batches(read_and_tag, fn_kwargs={"schema": m.schema, "shards": m.shards,
                                                     "seed": m.seed},
                            batch_size=1, batch_format="numpy", num_cpus=cpus_per_task)
        if progress:
            progress("stage", 0, len(pieces))
        # Same resources as the map: Ray Data then fuses read → tag → write into one task per
        # piece (no block crosses the object store between them).
        _run_with_timeout(lambda: ds.write_datasink(
            _stage_sink(staging / "rows"), ray_remote_args={"num_cpus": cpus_per_task}),
            timeout_s, "cluster ingest: staging")
        if progress:
            progress("stage", len(pieces), len(pieces))
        summary.phases_s["stage"] = time.perf_counter() - t1
        # ------------------------------------------------------------ commit (one per replica)
        t2 = time.perf_counter()
        remote = ray.remote(ingest_shard)
        strings = [c.name for c in schema.columns if c.is_string]
        refs: dict[Any, tuple[int, int]] = {}
        rows_dir = staging / "rows"
        for e in m.entries:
            d = rows_dir / f"s{e.shard:05d}"
            staged = sorted(str(p) for p in d.glob("*.parquet")) if d.is_dir() else []
            if not staged:
                continue
            for r, rep in enumerate(e.replicas):
                merged = str(staging / "merged" / f"s{e.shard:05d}-r{r}.parquet")
                ref = remote.options(num_cpus=cpus_per_task, max_retries=2,
                                     resources=node_resource(rep.node)).remote(
                    rep.path, m.schema, staged, merged, strings, r == 0)
                refs[ref] = (e.shard, r)
        summary.shard_tasks = len(refs)
        pending = list(refs)
        deadline = time.monotonic() + timeout_s
        vocab_new: dict[str, set[str]] = {c: set() for c in strings}
        done_n = 0
        while pending:
            left = deadline - time.monotonic()
            if left <= 0:
                raise ClusterError(f"cluster ingest: {len(pending)} shard task(s) unfinished "
                                   f"after {timeout_s:.0f} s (timeout_s); nothing published")
            ready, pending = ray.wait(pending, num_returns=1, timeout=min(left, 5.0))
            for ref in ready:
                shard, r = refs[ref]
                try:
                    res = ray.get(ref, timeout=timeout_s)
                except Exception as exc:
                    inner = cause_of(exc)
                    if isinstance(inner, SeqVaultError):
                        raise inner from exc
                    raise ClusterError(f"cluster ingest: shard {shard} replica {r}: {exc}; "
                                       "nothing published (rerun the same command: shards "
                                       "that committed are skipped)") from exc
                if res["status"] == "committed":
                    summary.committed += 1
                else:
                    summary.already += 1
                if r == 0:
                    summary.per_shard_events[shard] = res["events"]
                    summary.events += res["events"]
                    for c, vals in res["strings"].items():
                        vocab_new[c].update(vals)
                done_n += 1
                if progress:
                    progress("commit", done_n, len(refs))
        summary.phases_s["commit"] = time.perf_counter() - t2
        # ------------------------------------------------------------ publish
        extend_vocabs(root, vocab_new)
        new = mf.publish(root, m.next(f"ingest job {job_id}: {len(files)} file(s), "
                                      f"{summary.events} events",
                                      ingests=(*m.ingests, job_id)))
        summary.epoch = new.epoch
        (root / LEDGER_DIR).mkdir(exist_ok=True)
        for p, fp in zip(files, fps):
            (_ledger_path(root, fp)).write_text(json.dumps(
                {"path": str(p.resolve()), "job_id": job_id, "epoch": new.epoch,
                 "ingested_ns": time.time_ns(), "bytes": p.stat().st_size}))
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    summary.elapsed_s = time.perf_counter() - t0
    summary.events_per_s = summary.events / summary.elapsed_s if summary.elapsed_s else 0.0
    return summary
