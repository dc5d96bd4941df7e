"""Schemas: what a store holds, and the rules for changing it.

A schema names the user key column (int64 or string), the timestamp column (int64 with a unit),
the event columns with their types and defaults, and retention (`max_events`, `max_age`).
Each column carries a stable numeric id: segments refer to columns by id, so a column added later
simply is absent from old segments and reads back as its default. Removing, retyping or renaming a
column is refused (`SchemaError`) because old segments would then be read wrongly.
"""

from __future__ import annotations

import json
import os
import re
import time
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from .errors import SchemaError

# Event column types. "string" is a dictionary-encoded, low-cardinality string (action, scenario).
NUMERIC_TYPES: dict[str, np.dtype[Any]] = {
    "bool": np.dtype(np.bool_),
    "int8": np.dtype(np.int8),
    "int16": np.dtype(np.int16),
    "int32": np.dtype(np.int32),
    "int64": np.dtype(np.int64),
    "uint8": np.dtype(np.uint8),
    "uint16": np.dtype(np.uint16),
    "uint32": np.dtype(np.uint32),
    "uint64": np.dtype(np.uint64),
    "float32": np.dtype(np.float32),
    "float64": np.dtype(np.float64),
}
STRING_TYPE = "string"
COLUMN_TYPES = (*NUMERIC_TYPES, STRING_TYPE)
_TYPE_ALIASES = {"dict": STRING_TYPE, "category": STRING_TYPE, "str": STRING_TYPE, "int": "int64",
                 "float": "float64", "double": "float64"}
USER_TYPES = ("int64", "string")
TIME_UNITS = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}
# Timestamps must lie in [0, year 9999) in their unit (ns is capped by int64, i.e. year 2262).
_MAX_SECONDS = 253_402_300_800
MAX_STRING_CARDINALITY = 1 << 24

_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
_AGE_RE = re.compile(r"^\s*(\d+)\s*(ms|s|m|h|d|w)?\s*$")
_AGE_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, None: 1}


def parse_age(value: Any) -> float | None:
    """Parse a retention age: seconds as a number, or a string like "30d", "12h", "90m"."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise SchemaError(f"retention.max_age: {value!r} is not an age (expected e.g. '30d' or seconds)")
    if isinstance(value, int | float):
        if value <= 0:
            raise SchemaError(f"retention.max_age: {value!r} must be positive")
        return float(value)
    match = _AGE_RE.match(str(value))
    if not match:
        raise SchemaError(
            f"retention.max_age: {value!r} is not an age (expected a number of seconds or "
            "'<n>ms|s|m|h|d|w', e.g. '30d')"
        )
    seconds = int(match.group(1)) * _AGE_SECONDS[match.group(2)]
    if seconds <= 0:
        raise SchemaError(f"retention.max_age: {value!r} must be positive")
    return float(seconds)


@dataclass(frozen=True)
class Column:
    """One event column. `id` is stable across schema versions; `since_version` is the schema
    version that added it (old segments read back `default`)."""

    name: str
    type: str
    default: Any = None
    id: int = -1
    since_version: int = 1
    allow_nan: bool = False
    level: int | None = None  # zstd level hint; None = the store default

    @cached_property
    def dtype(self) -> np.dtype[Any]:
        """The numpy dtype values are held in (string columns hold uint32 dictionary codes)."""
        if self.type == STRING_TYPE:
            return np.dtype(np.uint32)
        return NUMERIC_TYPES[self.type]

    @cached_property
    def is_string(self) -> bool:
        return self.type == STRING_TYPE

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "type": self.type, "id": self.id,
                               "since_version": self.since_version}
        if self.default is not None:
            out["default"] = self.default
        if self.allow_nan:
            out["allow_nan"] = True
        if self.level is not None:
            out["level"] = self.level
        return out


@dataclass(frozen=True)
class Retention:
    max_events: int | None = None
    max_age: float | None = None  # seconds

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.max_events is not None:
            out["max_events"] = self.max_events
        if self.max_age is not None:
            out["max_age"] = self.max_age
        return out


@dataclass(frozen=True)
class Schema:
    """The declared shape of a store. Build one with `load`, `from_dict` or `from_arrow`."""

    user_column: str
    user_type: str
    time_column: str
    time_unit: str
    columns: tuple[Column, ...]
    retention: Retention = field(default_factory=Retention)
    version: int = 1

    # ----------------------------------------------------------------- construction
    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Schema:
        """Load a schema from a TOML file (see schema/behavior.toml)."""
        path = Path(path)
        try:
            with path.open("rb") as fh:
                data = tomllib.load(fh)
        except FileNotFoundError as exc:
            raise SchemaError(f"schema file {str(path)!r} does not exist") from exc
        except tomllib.TOMLDecodeError as exc:
            raise SchemaError(f"schema file {str(path)!r} is not valid TOML: {exc}") from exc
        return cls.from_dict(data)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Schema:
        """Build a schema from a mapping shaped like the TOML file.

        ``{"user": {"column": "user_id", "type": "int64"}, "time": {"column": "ts", "unit": "ms"},
        "columns": [{"name": "item_id", "type": "int64", "default": 0}, ...],
        "retention": {"max_events": 10000, "max_age": "365d"}}``
        """
        if not isinstance(data, Mapping):
            raise SchemaError(f"schema must be a mapping, got {type(data).__name__}")
        unknown = set(data) - {"user", "time", "columns", "retention", "version"}
        if unknown:
            raise SchemaError(f"schema: unknown section(s) {sorted(unknown)} "
                              "(expected user, time, columns, retention)")
        user = _section(data, "user")
        time = _section(data, "time")
        user_column = _name(user.get("column", "user_id"), "user.column")
        user_type = _canonical_type(user.get("type", "int64"), "user.type")
        if user_type not in USER_TYPES:
            raise SchemaError(f"user.type: {user_type!r} is not allowed (expected int64 or string)")
        time_column = _name(time.get("column", "ts"), "time.column")
        unit = time.get("unit", "ms")
        if unit not in TIME_UNITS:
            raise SchemaError(f"time.unit: {unit!r} is not a unit (expected one of {list(TIME_UNITS)})")
        raw_columns = data.get("columns", [])
        if not isinstance(raw_columns, list):
            raise SchemaError("columns: expected a list of tables ([[columns]] in TOML)")
        columns = []
        seen = {user_column, time_column}
        if user_column == time_column:
            raise SchemaError(f"time.column: {time_column!r} is also the user column")
        has_ids = all(isinstance(c, Mapping) and "id" in c for c in raw_columns)
        for i, raw in enumerate(raw_columns):
            if not isinstance(raw, Mapping):
                raise SchemaError(f"columns[{i}]: expected a table, got {raw!r}")
            name = _name(raw.get("name"), f"columns[{i}].name")
            if name in seen:
                raise SchemaError(f"columns[{i}].name: {name!r} is declared twice")
            seen.add(name)
            ctype = _canonical_type(raw.get("type"), f"columns[{i}].type ({name})")
            extra = set(raw) - {"name", "type", "default", "id", "since_version", "allow_nan", "level"}
            if extra:
                raise SchemaError(f"columns[{i}] ({name}): unknown key(s) {sorted(extra)}")
            level = raw.get("level")
            if level is not None and (not isinstance(level, int) or not -7 <= level <= 22):
                raise SchemaError(f"columns[{i}].level ({name}): {level!r} is not a zstd level (-7..22)")
            col = Column(
                name=name,
                type=ctype,
                default=raw.get("default"),
                id=int(raw["id"]) if has_ids else i + 1,
                since_version=int(raw.get("since_version", 1)),
                allow_nan=bool(raw.get("allow_nan", False)),
                level=level,
            )
            columns.append(replace(col, default=_check_default(col)))
        retention = _retention(data.get("retention", {}))
        schema = cls(user_column, user_type, time_column, unit, tuple(columns), retention,
                     int(data.get("version", 1)))
        ids = [c.id for c in schema.columns]
        if len(set(ids)) != len(ids) or 0 in ids:
            raise SchemaError(f"columns: ids must be unique and non-zero, got {ids}")
        return schema

    @classmethod
    def from_arrow(cls, arrow_schema: Any, user_column: str = "user_id", time_column: str = "ts",
                   *, time_unit: str | None = None, string_columns: tuple[str, ...] = (),
                   retention: Mapping[str, Any] | None = None) -> Schema:
        """Infer a schema from a pyarrow schema. String and dictionary columns become
        dictionary-encoded string columns; a timestamp time column keeps its unit."""
        import pyarrow as pa

        names = list(arrow_schema.names)
        for role, col in (("user_column", user_column), ("time_column", time_column)):
            if col not in names:
                raise SchemaError(f"{role}: {col!r} is not a column of the data (columns: {names})")
        utype = arrow_schema.field(user_column).type
        if pa.types.is_integer(utype):
            user_type = "int64"
        elif pa.types.is_string(utype) or pa.types.is_large_string(utype) or (
            pa.types.is_dictionary(utype) and pa.types.is_string(utype.value_type)
        ):
            user_type = "string"
        else:
            raise SchemaError(f"user column {user_column!r}: type {utype} is not int64 or string")
        ttype = arrow_schema.field(time_column).type
        if pa.types.is_timestamp(ttype):
            unit = ttype.unit
        elif pa.types.is_integer(ttype):
            unit = time_unit or "ms"
        else:
            raise SchemaError(f"time column {time_column!r}: type {ttype} is not an integer or timestamp")
        cols: list[dict[str, Any]] = []
        for f in arrow_schema:
            if f.name in (user_column, time_column):
                continue
            t = f.type
            if pa.types.is_dictionary(t):
                t = t.value_type
            if pa.types.is_string(t) or pa.types.is_large_string(t) or f.name in string_columns:
                cols.append({"name": f.name, "type": STRING_TYPE, "default": ""})
            elif pa.types.is_boolean(t):
                cols.append({"name": f.name, "type": "bool", "default": False})
            elif pa.types.is_integer(t) or pa.types.is_floating(t):
                tname = str(t).replace("float", "float").replace("double", "float64")
                tname = {"halffloat": "float32", "float": "float32"}.get(tname, tname)
                default: Any = 0.0 if pa.types.is_floating(t) else 0
                cols.append({"name": f.name, "type": tname, "default": default})
            elif pa.types.is_timestamp(t):
                cols.append({"name": f.name, "type": "int64", "default": 0})
            else:
                raise SchemaError(f"column {f.name!r}: arrow type {f.type} has no SeqVault type "
                                  f"(expected bool, integers, floats or strings)")
        return cls.from_dict({
            "user": {"column": user_column, "type": user_type},
            "time": {"column": time_column, "unit": unit},
            "columns": cols,
            "retention": dict(retention or {}),
        })

    # ----------------------------------------------------------------- accessors
    @cached_property
    def column_names(self) -> list[str]:
        """The time column and the event columns, in declared order (what a read returns)."""
        return [self.time_column, *(c.name for c in self.columns)]

    def column(self, name: str) -> Column:
        return self.by_name[name]

    @cached_property
    def by_name(self) -> dict[str, Column]:
        return {c.name: c for c in self.columns}

    @cached_property
    def max_ts(self) -> int:
        return min(_MAX_SECONDS * TIME_UNITS[self.time_unit], np.iinfo(np.int64).max)

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "user": {"column": self.user_column, "type": self.user_type},
            "time": {"column": self.time_column, "unit": self.time_unit},
            "columns": [c.to_dict() for c in self.columns],
            "retention": self.retention.to_dict(),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    def to_toml(self) -> str:
        """Render as TOML (the format `Schema.load` reads)."""
        lines = [f"version = {self.version}", "", "[user]",
                 f'column = "{self.user_column}"', f'type = "{self.user_type}"', "",
                 "[time]", f'column = "{self.time_column}"', f'unit = "{self.time_unit}"', ""]
        if self.retention.max_events is not None or self.retention.max_age is not None:
            lines.append("[retention]")
            if self.retention.max_events is not None:
                lines.append(f"max_events = {self.retention.max_events}")
            if self.retention.max_age is not None:
                lines.append(f"max_age = {self.retention.max_age}")
            lines.append("")
        for c in self.columns:
            lines.append("[[columns]]")
            for k, v in c.to_dict().items():
                lines.append(f"{k} = {json.dumps(v)}")
            lines.append("")
        return "\n".join(lines)

    @classmethod
    def from_json(cls, text: str | bytes) -> Schema:
        return cls.from_dict(json.loads(text))

    # ----------------------------------------------------------------- evolution
    def evolve_to(self, new: Schema) -> Schema:
        """Return `new` as the next version of this schema, or raise SchemaError.

        Allowed: adding columns that have a default; changing retention. Refused: removing,
        retyping or renaming a column, changing the user or time column. Columns are matched by
        name; existing ids are kept and added columns get fresh ids.
        """
        if (new.user_column, new.user_type) != (self.user_column, self.user_type):
            raise SchemaError(f"user column: cannot change {self.user_column} ({self.user_type}) "
                              f"to {new.user_column} ({new.user_type})")
        if (new.time_column, new.time_unit) != (self.time_column, self.time_unit):
            raise SchemaError(f"time column: cannot change {self.time_column} ({self.time_unit}) "
                              f"to {new.time_column} ({new.time_unit})")
        new_by_name = new.by_name
        for old in self.columns:
            if old.name not in new_by_name:
                raise SchemaError(f"column {old.name!r}: removing a column is not supported "
                                  "(old segments hold it; keep it in the schema)")
            cand = new_by_name[old.name]
            if cand.type != old.type:
                raise SchemaError(f"column {old.name!r}: cannot change type {old.type} to "
                                  f"{cand.type} (old segments are encoded as {old.type})")
        next_id = max((c.id for c in self.columns), default=0) + 1
        version = self.version + 1
        cols = []
        old_by_name = self.by_name
        for c in new.columns:
            if c.name in old_by_name:
                o = old_by_name[c.name]
                cols.append(replace(o, level=c.level, allow_nan=c.allow_nan))
            else:
                if c.default is None:
                    raise SchemaError(f"column {c.name!r}: an added column needs a default "
                                      "(old events read it back)")
                cols.append(replace(c, id=next_id, since_version=version))
                next_id += 1
        changed = [c.name for c in cols if c.name not in old_by_name]
        if not changed and new.retention == self.retention and [c.name for c in cols] == [
            c.name for c in self.columns
        ]:
            return self
        return replace(self, columns=tuple(cols), retention=new.retention, version=version)


def _section(data: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    value = data.get(name, {})
    if not isinstance(value, Mapping):
        raise SchemaError(f"{name}: expected a table, got {value!r}")
    return value


def _name(value: Any, where: str) -> str:
    if not isinstance(value, str) or not _NAME_RE.match(value):
        raise SchemaError(f"{where}: {value!r} is not a valid column name "
                          "(letters, digits and _, not starting with a digit, at most 63 chars)")
    return value


def _canonical_type(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise SchemaError(f"{where}: type is missing or not a string (got {value!r}; "
                          f"expected one of {list(COLUMN_TYPES)})")
    t = _TYPE_ALIASES.get(value.lower(), value.lower())
    if t not in COLUMN_TYPES:
        raise SchemaError(f"{where}: {value!r} is not a column type (expected one of {list(COLUMN_TYPES)})")
    return t


def _check_default(col: Column) -> Any:
    d = col.default
    if d is None:
        return None
    if col.is_string:
        if not isinstance(d, str):
            raise SchemaError(f"column {col.name!r}: default {d!r} is not a string")
        return d
    if col.type == "bool":
        if not isinstance(d, bool):
            raise SchemaError(f"column {col.name!r}: default {d!r} is not a bool")
        return d
    if col.type.startswith("float"):
        if isinstance(d, bool) or not isinstance(d, int | float):
            raise SchemaError(f"column {col.name!r}: default {d!r} is not a number")
        return float(d)
    if isinstance(d, bool) or not isinstance(d, int):
        raise SchemaError(f"column {col.name!r}: default {d!r} is not an integer")
    info = np.iinfo(NUMERIC_TYPES[col.type])
    if not info.min <= d <= info.max:
        raise SchemaError(f"column {col.name!r}: default {d} does not fit {col.type} "
                          f"({info.min}..{info.max})")
    return d


def _retention(raw: Any) -> Retention:
    if not isinstance(raw, Mapping):
        raise SchemaError(f"retention: expected a table, got {raw!r}")
    extra = set(raw) - {"max_events", "max_age"}
    if extra:
        raise SchemaError(f"retention: unknown key(s) {sorted(extra)} (expected max_events, max_age)")
    max_events = raw.get("max_events")
    if max_events is not None and (isinstance(max_events, bool) or not isinstance(max_events, int)
                                   or max_events <= 0):
        raise SchemaError(f"retention.max_events: {max_events!r} must be a positive integer")
    return Retention(max_events, parse_age(raw.get("max_age")))


def bundled_schema_path(name: str = "behavior") -> Path:
    """Path of a schema file shipped with SeqVault (the repo's schema/ folder, or the wheel's copy)."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "_bundled_schema" / f"{name}.toml",
                      here.parent / "schema" / f"{name}.toml"):
        if candidate.exists():
            return candidate
    raise SchemaError(f"no bundled schema named {name!r}")


def retention_cutoff(schema: Schema, now: float | None = None) -> int | None:
    """The oldest timestamp `max_age` keeps (in the schema's unit), or None without max_age.
    One definition for reads (which hide older events) and merge (which drops them)."""
    if schema.retention.max_age is None:
        return None
    now = time.time() if now is None else now
    return int((now - schema.retention.max_age) * TIME_UNITS[schema.time_unit])
