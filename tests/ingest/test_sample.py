"""The shared sample helpers (seqvault.sample) agree with the bundled schema they stand for."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from seqvault import SeqVault, sample
from seqvault.schema import bundled_schema_path


def test_behavior_schema_is_the_bundled_file():
    s = sample.behavior_schema()
    assert s.to_dict() == type(s).load(bundled_schema_path("behavior")).to_dict()
    assert s.retention.to_dict() != {}
    bare = sample.behavior_schema(retention=False)
    assert bare.retention.to_dict() == {}
    assert bare.to_dict()["columns"] == s.to_dict()["columns"]


def test_events_table_has_the_schema_columns_and_arrow_types():
    s = sample.behavior_schema()
    t = sample.events_table(np.random.default_rng(0), 500, users=np.arange(1, 20))
    assert t.schema == sample.arrow_schema()
    assert t.column_names == [s.user_column, s.time_column, *(c.name for c in s.columns)]
    assert set(t.column("user_id").to_pylist()) <= set(range(1, 20))
    assert set(t.column("action").to_pylist()) <= set(sample.ACTIONS)
    assert set(t.column("scenario").to_pylist()) <= set(sample.SCENARIOS)
    ts = np.asarray(t.column("ts"))
    assert ts.max() <= 1_790_000_000_000 and np.unique(ts).size <= 1_000


def test_events_ties_sort_and_string_users():
    rng = np.random.default_rng(1)
    ev = sample.events(rng, 300, distinct_ts=5, step_ms=10, now_ms=1_000, sort=True)
    assert "user_id" not in ev
    assert np.all(np.diff(ev["ts"]) >= 0) and set(ev["ts"].tolist()) <= {1_000, 990, 980, 970, 960}
    t = sample.events_table(rng, 50, users=np.array(["ann", "bob"]))
    assert t.schema.field("user_id").type == pa.string()
    assert set(t.column("user_id").to_pylist()) <= {"ann", "bob"}


def test_events_append_to_a_store_of_the_bundled_schema(tmp_path):
    rng = np.random.default_rng(2)
    with SeqVault.open(tmp_path / "s", schema=sample.behavior_schema(retention=False)) as v:
        ev = sample.events(rng, 40, now_ms=5_000_000)
        v.append(7, ev)
        v.append_batch(sample.events_table(rng, 200, users=5, now_ms=5_000_000))
        got = v.read(7)
        assert got.count >= 40
        assert v.stats()["events"] == 240
