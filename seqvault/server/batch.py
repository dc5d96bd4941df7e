"""`POST /sequences:batchGet`: plan (dedup, budget) before any work, then stream per user.

The response budget (docs/design/http.md, "Response budget"):

- at most `max_batch_users` ids per call (the body model says so);
- duplicates are answered once: entries are keyed by (user, before), first occurrence wins;
- the worst case, distinct users × `last`, must fit `max_response_events`, else the call is
  refused with 422 `over-limit` before a single read;
- the body is streamed one user at a time (read, encode, send), so server memory holds one
  user's sequence at most; when the bytes sent would pass `max_response_bytes`, that user and
  every later one get a per-user 422 `over-limit` entry instead of data.

A failure of one user (a bad id of any JSON type, corrupt data, an engine error) is that
user's entry, never the call's: status and problem in the entry, details in the server log
under the request id. A `before` list has exactly one value per id (JSON Schema cannot state
this rule; a list of another length is refused with 422).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import SeqVaultError, ValidationError
from ..schema import Schema
from ..vault import SeqVault
from .formats import BatchEncoder, BatchItem
from .params import parse_user
from .problems import Problem, bounded, from_engine

log = logging.getLogger("seqvault.server")


@dataclass
class Entry:
    """One distinct (user, before) of a batch; `problem` set when the id itself is bad."""

    raw: Any
    key: int | str | None
    before: int | None
    problem: dict[str, Any] | None = None


def plan(schema: Schema, user_ids: Sequence[Any], befores: Sequence[int | None]
         ) -> list[Entry]:
    """Distinct entries in first-seen order; bad ids become problem entries (no reads)."""
    entries: list[Entry] = []
    seen: set[Any] = set()
    for raw, before in zip(user_ids, befores):
        try:
            key = parse_user(schema, raw)
        except ValidationError as exc:
            dedup: Any = ("bad", json.dumps(raw, sort_keys=True), before)
            if dedup not in seen:
                seen.add(dedup)
                # the id is echoed (so the client can match it), cut to the echo limits
                entries.append(Entry(bounded(raw), None, before, from_engine(exc).to_dict()))
            continue
        if (key, before) not in seen:
            seen.add((key, before))
            entries.append(Entry(raw, key, before))
    return entries


def over_budget(n_users: int, last: int, max_events: int) -> Problem | None:
    """422 when the call's worst case (every user has `last` events) is over the budget."""
    if n_users * last <= max_events:
        return None
    return Problem(422, "over-limit",
                   f"last: {n_users} distinct users x last={last} = {n_users * last} events "
                   f"is over this server's budget of {max_events} events per response "
                   f"(max_response_events); ask for last <= {max(max_events // n_users, 1)} "
                   "or split the call", field="last", value=last, setting="max_response_events",
                   limit=max_events)


def stream(vault: SeqVault, entries: list[Entry], fmt: str, names: list[str] | None,
           last: int, since: int | None, *, ids_as_string: bool, max_bytes: int,
           request_id: str | None, lengths: list[int]) -> Iterator[bytes]:
    """The encoded body, one piece per user (a sync generator: Starlette runs each step in
    the thread pool, so reads and encoding stay off the event loop). `lengths` collects the
    sequence lengths served, for the metrics."""
    schema = vault.schema
    out_names = names if names is not None else schema.column_names
    enc = BatchEncoder(fmt, schema, out_names, len(entries), ids_as_string=ids_as_string)
    head = enc.head()
    sent = len(head) + 2  # + the JSON tail; Arrow's tail is a flush, counted as estimated
    yield head
    exhausted: dict[str, Any] | None = None
    n = 0
    for e in entries:
        if e.problem is not None:
            item = BatchItem(e.raw, e.problem["status"], problem=e.problem)
        elif exhausted is not None:
            item = BatchItem(e.key, 422, problem=exhausted)
        else:
            item = read_one(vault, e, names, last, since, request_id)
        # Arrow groups users into record batches, so its size is estimated before encoding;
        # JSON and msgpack entries are encoded and measured.
        piece = b"" if fmt == "arrow" else enc.item(item)
        size = enc.estimate(item) if fmt == "arrow" else len(piece) + 1
        if exhausted is None and sent + size > max_bytes:
            exhausted = Problem(
                422, "over-limit", f"the response reached this server's budget of {max_bytes} "
                "bytes (max_response_bytes) before this user; ask for fewer users, fewer "
                "columns or a smaller last", setting="max_response_bytes",
                limit=max_bytes).to_dict()
            item = BatchItem(e.key if e.key is not None else e.raw, 422, problem=exhausted)
            piece = b"" if fmt == "arrow" else enc.item(item)
            size = enc.estimate(item) if fmt == "arrow" else len(piece) + 1
        elif item.status == 200:
            lengths.append(item.count)
        if fmt == "arrow":
            piece = enc.item(item)
        elif fmt == "json" and n:
            piece = b"," + piece
        n += 1
        sent += size
        if piece:
            yield piece
    yield enc.tail()


def coalesce(pieces: Iterator[bytes], size: int) -> Iterator[bytes]:
    """Join small pieces into chunks of at least `size` bytes: each chunk is one hop to the
    thread pool and one chunk on the wire, so per-user pieces of a few KiB would cost more in
    hops than in work. Memory stays bounded by `size` plus one user's piece."""
    buf: list[bytes] = []
    held = 0
    for piece in pieces:
        buf.append(piece)
        held += len(piece)
        if held >= size:
            yield b"".join(buf)
            buf, held = [], 0
    if buf:
        yield b"".join(buf)


def read_one(vault: SeqVault, e: Entry, names: list[str] | None, last: int,
             since: int | None, request_id: str | None) -> BatchItem:
    """One user's read, its failure kept to its own entry."""
    try:
        seq = vault.read(e.key, last=last, columns=names, before=e.before, since=since)
    except SeqVaultError as exc:
        # from_engine logs non-input errors with the request id and hides their text
        prob = from_engine(exc, request_id).to_dict(request_id=request_id)
        return BatchItem(e.key, prob["status"], problem=prob)
    except Exception:  # noqa: BLE001 - one user's bug must not fail the others
        log.exception("request %s: batchGet read of user %r failed", request_id, e.key)
        prob = Problem(500, "internal", f"reading this user failed unexpectedly (request id "
                       f"{request_id}: the server log has the details)").to_dict(
                           request_id=request_id)
        return BatchItem(e.key, 500, problem=prob)
    return BatchItem(e.key, 200, seq.count, seq.columns)
