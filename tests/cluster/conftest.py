"""Cluster fixtures: one local Ray for the whole session (2 CPUs, a small object store, four
custom resources standing in for nodes), and small behaviour logs as Parquet files.

Ray starts once (~15 s here) and is shut down at the end of the session; every wait in the
cluster code has a timeout, and tests pass short ones, so a hang fails instead of stalling CI.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from seqvault import Schema

ray = pytest.importorskip("ray", reason="needs the cluster extra: pip install 'seqvault[cluster]'")

NODES = ["n0", "n1", "n2", "n3"]
TIMEOUT_S = 240.0
SCHEMA_DICT: dict[str, Any] = {
    "user": {"column": "user_id", "type": "int64"},
    "time": {"column": "ts", "unit": "ms"},
    "columns": [
        {"name": "item_id", "type": "int64", "default": 0},
        {"name": "action", "type": "string", "default": "view"},
        {"name": "dwell", "type": "uint32", "default": 0},
    ],
}
ACTIONS = ["view", "click", "like", "share"]


@pytest.fixture(scope="session")
def ray_session() -> Any:
    from seqvault.cluster.runtime import init_local

    started = init_local(NODES, num_cpus=2, object_store_mb=200)
    import ray.data

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    yield ray
    if started:
        ray.shutdown()


@pytest.fixture
def schema() -> Schema:
    return Schema.from_dict(SCHEMA_DICT)


def write_log(path: Path, rng: np.random.Generator, n_users: int, n_events: int,
              user0: int = 0, t0: int = 1_000_000, row_group: int = 2_000) -> Path:
    """A Parquet behaviour log with many equal timestamps (to check tie order)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    ts = rng.integers(t0, t0 + 5_000, n_events)
    ts[rng.integers(0, n_events, n_events // 3)] = t0 + 2_500
    table = pa.table({
        "user_id": rng.integers(user0, user0 + n_users, n_events),
        "ts": ts,
        "item_id": np.arange(n_events, dtype=np.int64) + user0 * 1_000_000,
        "action": [ACTIONS[i] for i in rng.integers(0, 4, n_events)],
        "dwell": rng.integers(0, 10_000, n_events).astype(np.uint32),
    })
    pq.write_table(table, path, row_group_size=row_group)
    return path


@pytest.fixture
def logs(tmp_path: Path) -> list[Path]:
    rng = np.random.default_rng(7)
    d = tmp_path / "input"
    d.mkdir()
    return [write_log(d / "part-0.parquet", rng, 300, 6_000),
            write_log(d / "part-1.parquet", rng, 300, 4_000, user0=200)]


@pytest.fixture
def cluster(tmp_path: Path, schema: Schema, ray_session: Any, logs: list[Path]) -> Path:
    """A 4-shard cluster over 4 nodes, with `logs` ingested."""
    from seqvault.cluster import init_cluster
    from seqvault.cluster.ingest import ingest

    root = tmp_path / "cluster"
    init_cluster(root, schema, 4, NODES)
    ingest(root, logs, timeout_s=TIMEOUT_S)
    return root


@pytest.fixture
def oracle(tmp_path: Path, schema: Schema, logs: list[Path]) -> Any:
    """A single-node store built from the same input: what every cluster read must equal."""
    from seqvault import SeqVault
    from seqvault.ingest import ingest

    v = SeqVault.open(tmp_path / "oracle", schema=schema)
    ingest(v, logs)
    yield v
    v.close()
