"""Schema: loading, validation of the declaration itself, inference from Arrow, evolution."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from seqvault import Schema, SchemaError, SeqVault
from seqvault.schema import bundled_schema_path

from ..conftest import SCHEMA_DICT


def test_bundled_behavior_schema_loads():
    s = Schema.load(bundled_schema_path("behavior"))
    assert s.user_column == "user_id" and s.time_column == "ts" and s.time_unit == "ms"
    assert [c.name for c in s.columns] == ["item_id", "action", "category", "dwell_ms", "scenario"]
    assert s.column("action").is_string
    assert s.retention.max_events == 100_000
    assert s.retention.max_age == 730 * 86400


def test_toml_round_trip(tmp_path):
    s = Schema.from_dict({**SCHEMA_DICT, "retention": {"max_events": 5, "max_age": "2h"}})
    p = tmp_path / "s.toml"
    p.write_text(s.to_toml())
    assert Schema.load(p) == s


@pytest.mark.parametrize(
    "mutate, needle",
    [
        (lambda d: d["columns"].append({"name": "item_id", "type": "int64"}), "declared twice"),
        (lambda d: d["columns"].append({"name": "x", "type": "int128"}), "int128"),
        (lambda d: d["columns"].append({"name": "1bad", "type": "int8"}), "1bad"),
        (lambda d: d["columns"].append({"name": "y", "type": "uint8", "default": 300}), "300"),
        (lambda d: d.update(time={"column": "ts", "unit": "minutes"}), "minutes"),
        (lambda d: d.update(user={"column": "user_id", "type": "float64"}), "float64"),
        (lambda d: d.update(retention={"max_events": 0}), "max_events"),
        (lambda d: d.update(retention={"max_age": "ten days"}), "ten days"),
        (lambda d: d.update(bogus=1), "bogus"),
    ],
)
def test_invalid_schema_is_refused_with_the_field_named(mutate, needle):
    d = {**SCHEMA_DICT, "columns": [dict(c) for c in SCHEMA_DICT["columns"]]}
    mutate(d)
    with pytest.raises(SchemaError, match=needle):
        Schema.from_dict(d)


def test_missing_schema_file_is_a_clear_error(tmp_path):
    with pytest.raises(SchemaError, match="does not exist"):
        Schema.load(tmp_path / "nope.toml")


def test_from_arrow_infers_types():
    t = pa.schema([("uid", pa.string()), ("when", pa.timestamp("us")), ("item", pa.int64()),
                   ("act", pa.dictionary(pa.int8(), pa.string())), ("w", pa.float32()),
                   ("ok", pa.bool_()), ("c", pa.uint16())])
    s = Schema.from_arrow(t, user_column="uid", time_column="when")
    assert s.user_type == "string" and s.time_unit == "us"
    assert {c.name: c.type for c in s.columns} == {"item": "int64", "act": "string",
                                                   "w": "float32", "ok": "bool", "c": "uint16"}


def test_from_arrow_missing_user_column():
    with pytest.raises(SchemaError, match="user_id"):
        Schema.from_arrow(pa.schema([("ts", pa.int64())]))


def test_adding_a_column_with_default_is_online_and_old_data_reads_default(tmp_path, schema):
    with SeqVault.open(tmp_path / "s", schema=schema) as v:
        v.append(1, {"ts": [1, 2], "item_id": [5, 6], "action": ["view", "click"],
                     "dwell": [0, 1], "score": [0.5, 0.25], "liked": [True, False]})
        v.flush()
        v.append(1, {"ts": [3], "item_id": [7], "action": ["like"], "dwell": [2], "score": [1.0],
                     "liked": [False]})  # in the log when the schema changes
    d = {**SCHEMA_DICT, "columns": [*SCHEMA_DICT["columns"],
                                    {"name": "scene", "type": "string", "default": "feed"},
                                    {"name": "price", "type": "float64", "default": 1.5}]}
    with SeqVault.open(tmp_path / "s", schema=Schema.from_dict(d)) as v:
        assert v.schema.version == 2
        seq = v.read(1)
        assert seq["scene"].tolist() == ["feed"] * 3
        assert seq["price"].tolist() == [1.5] * 3
        v.append(1, {"ts": [4], "item_id": [8], "action": ["view"], "dwell": [3], "score": [0.0],
                     "liked": [True], "scene": ["search"], "price": [9.0]})
        assert v.read(1)["scene"].tolist() == ["feed"] * 3 + ["search"]
    with SeqVault.open(tmp_path / "s", read_only=True) as r:
        assert r.read(1, last=1)["price"].tolist() == [9.0]
        assert [s.version for s in r.schema_history()] == [1, 2]


@pytest.mark.parametrize("change, needle", [
    (lambda cols: cols.pop(0), "removing"),
    (lambda cols: cols.__setitem__(0, {"name": "item_id", "type": "int32", "default": 0}), "type"),
    (lambda cols: cols.append({"name": "nodefault", "type": "int8"}), "default"),
])
def test_removing_or_retyping_a_column_is_refused(tmp_path, schema, change, needle):
    with SeqVault.open(tmp_path / "s", schema=schema):
        pass
    cols = [dict(c) for c in SCHEMA_DICT["columns"]]
    change(cols)
    with pytest.raises(SchemaError, match=needle):
        SeqVault.open(tmp_path / "s", schema=Schema.from_dict({**SCHEMA_DICT, "columns": cols}))
    with SeqVault.open(tmp_path / "s", read_only=True) as r:  # nothing changed
        assert r.schema.version == 1


def test_schema_default_types_are_checked():
    with pytest.raises(SchemaError, match="not a string"):
        Schema.from_dict({**SCHEMA_DICT, "columns": [{"name": "a", "type": "string", "default": 1}]})
    s = Schema.from_dict({**SCHEMA_DICT, "columns": [{"name": "a", "type": "float32", "default": 1}]})
    assert s.columns[0].default == 1.0 and s.columns[0].dtype == np.float32
