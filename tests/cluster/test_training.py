"""Training input: Ray Data impressions → point-in-time histories (LaserReader) → torch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from seqvault import Schema, SeqVault
from seqvault.cluster import init_cluster
from seqvault.cluster.ingest import ingest
from seqvault.cluster.vocab import load_vocab

from .conftest import NODES, TIMEOUT_S

torch = pytest.importorskip("torch")

TRAIN_SCHEMA = {
    "user": {"column": "user_id", "type": "int64"},
    "time": {"column": "ts", "unit": "ms"},
    "columns": [{"name": "item_id", "type": "int64", "default": 0},
                {"name": "cat", "type": "string", "default": "none"}],
}


@pytest.fixture
def train_setup(tmp_path: Path, ray_session: Any) -> tuple[Path, Path, Any]:
    rng = np.random.default_rng(3)
    n_users, n_ev = 60, 3_000
    users = rng.integers(0, n_users, n_ev)
    ts = rng.integers(0, 100_000, n_ev)
    items = rng.integers(1, 500, n_ev)
    cats = np.array([f"c{i % 17}" for i in items], dtype=object)
    events = pa.table({"user_id": users, "ts": ts, "item_id": items, "cat": cats.tolist()})
    ev_path = tmp_path / "events.parquet"
    pq.write_table(events, ev_path)
    root = tmp_path / "c"
    schema = Schema.from_dict(TRAIN_SCHEMA)
    init_cluster(root, schema, 4, NODES)
    ingest(root, [ev_path], timeout_s=TIMEOUT_S)
    n_imp = 400
    imp = pa.table({"user_id": rng.integers(0, n_users + 5, n_imp),  # a few unknown users
                    "ts": rng.integers(0, 110_000, n_imp),
                    "item_id": rng.integers(1, 500, n_imp),
                    "cat": [f"c{i}" for i in rng.integers(0, 20, n_imp)],  # c17..c19: OOV
                    "label": (rng.random(n_imp) < 0.3).astype(np.float32)})
    imp_path = tmp_path / "impressions.parquet"
    pq.write_table(imp, imp_path)
    oracle = SeqVault.open(tmp_path / "oracle", schema=schema)
    from seqvault.ingest import ingest as single_ingest

    single_ingest(oracle, [ev_path])
    yield root, imp_path, oracle
    oracle.close()


def test_histories_are_point_in_time_and_use_global_ids(train_setup: Any) -> None:
    from seqvault.cluster.training import history_dataset

    root, imp_path, oracle = train_setup
    vocab = load_vocab(root, "cat")
    assert sorted(vocab, key=vocab.get) == sorted(f"c{i}" for i in range(17))
    ds = history_dataset(root, imp_path, columns=["item_id", "cat"], max_len=20, batch_size=64)
    seen = 0
    for b in ds.iter_batches(batch_size=64, batch_format="numpy"):
        for i in range(len(b["ts"])):
            want = oracle.read(int(b["user_id"][i]), last=20, before=int(b["ts"][i]))
            n = want.count
            assert b["hist_len"][i] == n
            assert b["hist_mask"][i].tolist() == [False] * (20 - n) + [True] * n
            got_items = b["hist_item_id"][i][20 - n:]
            np.testing.assert_array_equal(got_items, want.columns["item_id"])
            np.testing.assert_array_equal(b["hist_cat"][i][20 - n:],
                                          [vocab[s] for s in want.columns["cat"]])
            seen += 1
        assert set(b["cat"].tolist()) <= set(range(1, len(vocab) + 2))  # OOV = len + 1
    assert seen == 400


def test_feeds_the_bundled_model_for_an_epoch(train_setup: Any) -> None:
    from seqvault.cluster.training import train_one_epoch

    root, imp_path, _ = train_setup
    res = train_one_epoch(root, imp_path, item_column="item_id", cat_column="cat",
                          max_len=20, batch_size=64, n_items=512)
    assert res["rows"] == 400 and res["steps"] == 7
    assert np.isfinite(res["mean_loss"])
