"""Request parameters and bodies: parsing, checking, and the body models the contract shows.

Shared by the routes of app.py and by batch.py; every refusal is a problem naming the field,
the value and what was expected.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictStr, create_model

from ..errors import ValidationError
from ..schema import Schema
from ..validate import coerce_user
from . import contract
from .problems import Problem

_INT_RE = re.compile(r"[+-]?[0-9]{1,20}")

IdsAs = Literal["number", "string"]


def _json_int(v: Any) -> Any:
    """JSON Schema's "integer": ints and integral floats (401.0), never strings or booleans."""
    if isinstance(v, float) and v.is_integer():
        return int(v)
    if isinstance(v, bool) or not isinstance(v, int):
        raise ValueError("Input should be an integer")
    return v


# (constraints before the validator: that order gives JSON Schema's minimum/maximum names)
Int64 = Annotated[int, Field(ge=-(1 << 63), le=(1 << 63) - 1), BeforeValidator(_json_int)]



class BatchGetBase(BaseModel):
    """`POST /sequences:batchGet` body. Ids may be numbers or strings (an int64 store accepts
    decimal strings too, so JavaScript clients can send ids they received with
    `?ids_as=string`); an id of any other JSON type fails only its own entry (422)."""

    model_config = ConfigDict(extra="forbid")
    columns: list[StrictStr] | None = Field(
        None, min_length=1, description="default: every column, time column first")
    before: Int64 | list[Int64] | None = Field(
        None, description="keep ts < before: one value, or one per user")
    since: Int64 | None = Field(None, description="keep ts >= since")


def batch_request_model(max_batch_users: int, max_last: int) -> type[BaseModel]:
    """The body model with this app's limits in it, so the OpenAPI document states them."""
    return create_model(
        "BatchGetRequest", __base__=BatchGetBase,
        user_ids=(list[Any], Field(min_length=1, max_length=max_batch_users,
                                   description="user ids; duplicates are answered once")),
        last=(Annotated[int, Field(gt=0, le=max_last), BeforeValidator(_json_int)] | None,
              Field(None, description="newest N events per user")),
    )


def parse_user(schema: Schema, raw: Any) -> int | str:
    """A user id from a path segment or a batch list (any JSON value), checked against the
    schema's type."""
    if not isinstance(raw, int | str) or isinstance(raw, bool):
        kind = {bool: "a boolean", float: "a number with a fraction", type(None): "null",
                list: "a list", dict: "an object"}.get(type(raw), type(raw).__name__)
        raise ValidationError(f"user_id: {raw!r} is {kind}; this store's user ids are "
                              f"{schema.user_type}" + (" (numbers or decimal strings)"
                                                       if schema.user_type == "int64" else ""),
                              column="user_id", value=raw)
    if schema.user_type == "int64" and isinstance(raw, str):
        if not contract.INT64_ID_RE.fullmatch(raw):
            raise ValidationError(f"user_id: {raw!r} is not an integer; this store's user "
                                  f"column {schema.user_column!r} is int64",
                                  column="user_id", value=raw)
        raw = int(raw)
    try:
        return coerce_user(schema, raw)
    except ValidationError as exc:
        raise ValidationError(f"user_id: {exc}", column="user_id", value=exc.value) from None


def bad_param(name: str, value: Any, expected: str) -> Problem:
    return Problem(422, "invalid-parameter", f"{name}: {value!r} {expected}", field=name,
                   value=value, errors=[{"field": name, "in": "query", "message": expected,
                                         "value": value}])


def query_int(params: Any, name: str, *, minimum: int | None = None,
              maximum: int | None = None) -> int | None:
    """An optional integer query parameter, or 422 naming it, its value and the range."""
    raw = params.get(name)
    if raw is None:
        return None
    if not _INT_RE.fullmatch(raw):
        raise bad_param(name, raw, "is not an integer")
    value = int(raw)
    lo = -(1 << 63) if minimum is None else minimum
    hi = (1 << 63) - 1 if maximum is None else maximum
    if not lo <= value <= hi:
        why = (f"is over this server's maximum of {hi}" if value > hi and maximum is not None
               else f"must be at least {lo}" if value < lo and minimum is not None
               else "does not fit int64")
        raise bad_param(name, value, why)
    return value


def parse_columns(schema: Schema, columns: str | Sequence[str] | None) -> list[str] | None:
    if columns is None:
        return None
    # no stripping: the contract's pattern has no blanks, and the server accepts what it says
    names = columns.split(",") if isinstance(columns, str) else list(columns)
    if not names or any(not n for n in names):
        raise Problem(422, "invalid-parameter",
                      f"columns: {columns!r} must be a comma-separated list of column names "
                      f"from {schema.column_names}", field="columns", value=columns)
    unknown = [n for n in names if n not in schema.column_names]
    if unknown:
        raise Problem(422, "invalid-parameter",
                      f"columns: unknown column(s) {unknown}; the schema has "
                      f"{schema.column_names}", field="columns", value=unknown[0])
    return list(dict.fromkeys(names))
