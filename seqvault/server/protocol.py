"""uvicorn's HTTP protocol, tuned for small responses and guarded against slow clients.

Connection-level limits (docs/design/http.md, "Connection limits"): uvicorn closes a
keep-alive connection that stays idle *between* requests, but has no deadline for reading a
request: a client that connects and sends nothing, or half a header, or half a body, holds its
connection (and a file descriptor) forever. `ConnectionLimits` adds, per connection:

- a head deadline (`header_timeout`): from the connection's first moment, or from the first
  byte of the next request on a keep-alive connection, the request head must be complete in
  time, else 408 and close;
- a body deadline (`body_timeout`): from the end of the head, the whole body must arrive in
  time, else the connection is closed (the app sees a disconnect);
- a cap on head bytes (`max_header_bytes`, 431) and on open connections per worker
  (`max_connections`: the next one gets 503 and is closed at once).

Transport changes, both measured on loopback (docs/design/http.md, "Transport"):

1. TCP_NODELAY on every connection. asyncio only sets it on accepted sockets whose listening
   socket says proto=IPPROTO_TCP; uvicorn's `--fd` (socket.fromfd(..., AF_UNIX, ...)) and
   `--workers N` (socket.socket(family)) listeners say proto=0, so their connections keep
   Nagle's algorithm: uvicorn writes the response head and body separately, the body waits for
   the ACK of the head, and the client's delayed ACK adds ~40 ms to every keep-alive request
   (/livez: 45 ms → 3 ms).
2. The response head is held until the body is written (or the event-loop iteration ends) and
   both leave in one send(): on loopback each send() also runs the receiver's TCP path and
   wakes it, so one send per response instead of two saves CPU on both sides.

`seqvault serve` and the tests use this class (uvicorn's `http=` setting).
"""

from __future__ import annotations

import asyncio
import json
import os
from dataclasses import dataclass, fields
from typing import Any

try:  # the C parser when it is installed, else the pure-Python one uvicorn always has
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as _Base
except ImportError:  # pragma: no cover - depends on the environment
    from uvicorn.protocols.http.h11_impl import H11Protocol as _Base  # type: ignore[assignment]

IMPORT_STRING = "seqvault.server.protocol:NoDelayHTTPProtocol"
HOLD_MAX = 8192  # only small writes (a response head) are held back
ENV_PREFIX = "SEQVAULT_SERVE_CONN_"


@dataclass(frozen=True)
class ConnectionLimits:
    """Per-connection deadlines and caps of one worker; 0 turns a deadline off.

    The defaults survive the slow-client cases of docs/design/http.md: an idle or
    half-sent connection is closed after at most `header_timeout` (or `body_timeout` once
    its head is in), so 20,000 idle sockets cannot pile up.
    """

    header_timeout: float = 10.0  # s from connect / first byte to the end of the head
    body_timeout: float = 60.0  # s from the end of the head to the end of the body
    max_header_bytes: int = 16_384  # bytes of request head (h11's own default too)
    max_connections: int = 1_024  # open connections per worker; more get 503 and close

    def to_env(self) -> dict[str, str]:
        return {ENV_PREFIX + f.name.upper(): str(getattr(self, f.name)) for f in fields(self)}

    @classmethod
    def from_env(cls, env: Any = None) -> ConnectionLimits:
        env = os.environ if env is None else env
        kw: dict[str, Any] = {}
        for f in fields(cls):
            raw = env.get(ENV_PREFIX + f.name.upper())
            if raw is not None:
                kw[f.name] = float(raw) if f.type in ("float", float) else int(raw)
        return cls(**kw)


_REASONS = {408: "Request Timeout", 431: "Request Header Fields Too Large",
            503: "Service Unavailable"}


def set_nodelay(transport: asyncio.BaseTransport) -> None:
    import socket

    # No family check: uvicorn's --fd labels an inherited TCP socket AF_UNIX; on a real Unix
    # socket the call fails with EOPNOTSUPP, which is ignored.
    sock: Any = transport.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass


class CoalescingTransport:
    """Wraps a transport: a small write is held until the next write (joined with it) or the
    end of the current loop iteration; everything else is delegated unchanged."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: bytes | None = None

    def write(self, data: Any) -> None:
        if not data:
            return
        held = self._held
        if held is not None:
            self._held = None
            if len(data) <= HOLD_MAX:
                self._transport.write(held + bytes(data))
            else:  # no copy of a large body: Python 3.12+ sends both with one sendmsg()
                self._transport.writelines([held, data])
        elif len(data) <= HOLD_MAX:
            self._held = bytes(data)
            self._loop.call_soon(self.flush)
        else:
            self._transport.write(data)

    def writelines(self, chunks: Any) -> None:
        self.write(b"".join(chunks))

    def flush(self) -> None:
        held = self._held
        if held is not None:
            self._held = None
            self._transport.write(held)

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def abort(self) -> None:
        self._held = None
        self._transport.abort()

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + len(self._held or b"")

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


def _canned_response(status: int, detail: str) -> bytes:
    """A complete problem+json answer written straight to the socket, for the cases where no
    request (and so no app) exists yet."""
    reason = _REASONS[status]
    body = json.dumps({"type": "urn:seqvault:problem:connection-limit", "title": reason,
                       "status": status, "detail": detail}).encode()
    retry = b"Retry-After: 1\r\n" if status == 503 else b""
    return (b"HTTP/1.1 %d %s\r\nContent-Type: application/problem+json\r\n%s"
            b"Connection: close\r\nContent-Length: %d\r\n\r\n"
            % (status, reason.encode(), retry, len(body)) + body)


class NoDelayHTTPProtocol(_Base):  # type: ignore[misc,valid-type]
    """uvicorn's protocol + TCP_NODELAY + one send per small response + `ConnectionLimits`.

    Only public members of uvicorn's protocol are used: `cycle` (the current request, and
    its `more_body`), `connections`, `transport` and the `data_received` /
    `on_response_complete` / `connection_lost` hooks. Phases of a connection: "head" (waiting
    for a request head: deadline `header_timeout`), "body" (`body_timeout`), "app" (the app
    works and answers: no deadline here), "closed".
    """

    limits: ConnectionLimits | None = None  # None: read SEQVAULT_SERVE_CONN_* once

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        cls = type(self)
        if cls.limits is None:
            cls.limits = ConnectionLimits.from_env()
        self._lim = cls.limits
        self._timer: asyncio.TimerHandle | None = None
        self._phase = "head"  # "head": waiting for a request head; "body"; "app"
        self._head_bytes = 0
        self._seen_cycle: Any = None
        set_nodelay(transport)
        wrapped: Any = CoalescingTransport(transport, asyncio.get_running_loop())
        super().connection_made(wrapped)
        if self._lim.max_connections and len(self.connections) > self._lim.max_connections:
            self._refuse(503, f"this worker already holds {self._lim.max_connections} "
                              "connections (--max-connections)")
            return
        self._arm(self._lim.header_timeout)

    # ------------------------------------------------------------- deadlines
    def _arm(self, seconds: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if seconds > 0:
            self._timer = asyncio.get_running_loop().call_later(seconds, self._expired)

    def _expired(self) -> None:
        self._timer = None
        if self.transport is None or self.transport.is_closing():
            return
        if self._phase == "head":
            self._refuse(408, f"the request head did not arrive within "
                              f"{self._lim.header_timeout:g} s (--header-timeout)")
        elif self._phase == "body":
            # The app is waiting in receive(): closing turns that into http.disconnect.
            self.transport.close()

    def _refuse(self, status: int, detail: str) -> None:
        self._phase = "closed"
        self.transport.write(_canned_response(status, detail))
        self.transport.close()

    def data_received(self, data: bytes) -> None:
        if self._phase == "closed":
            return
        if self._phase == "head":
            self._head_bytes += len(data)
        super().data_received(data)
        self._advance()
        if self._phase == "head" and self._head_bytes:
            # A head is still incomplete. No timer was armed for a request that arrives whole
            # (the common case costs nothing); the clock starts at its first partial chunk.
            if self._lim.max_header_bytes and self._head_bytes > self._lim.max_header_bytes:
                self._refuse(431, f"the request head is over {self._lim.max_header_bytes} "
                                  "bytes")
            elif self._timer is None:
                self._arm(self._lim.header_timeout)

    def _advance(self) -> None:
        """Move the deadline along after uvicorn parsed what it could."""
        cycle = self.cycle
        if self._phase == "head" and cycle is not None and cycle is not self._seen_cycle:
            self._seen_cycle = cycle  # a new request head was parsed
            self._head_bytes = 0
            if cycle.more_body:
                self._phase = "body"
                self._arm(self._lim.body_timeout)
            else:
                self._phase = "app"
                self._arm(0)
        if self._phase == "body" and cycle is not None and not cycle.more_body:
            self._phase = "app"
            self._arm(0)

    def on_response_complete(self) -> None:
        # Back to waiting for a head; uvicorn's keep-alive timer covers the idle gap and our
        # head deadline starts with the next request's first byte (or pipelined data now).
        self._phase = "head"
        self._head_bytes = 0
        self._arm(0)
        super().on_response_complete()
        self._advance()

    def connection_lost(self, exc: Exception | None) -> None:
        self._arm(0)
        self._phase = "closed"
        super().connection_lost(exc)


def protocol_with(limits: ConnectionLimits) -> type[NoDelayHTTPProtocol]:
    """A protocol class with these limits (for in-process servers; `seqvault serve` workers
    read theirs from SEQVAULT_SERVE_CONN_* instead, as a class cannot cross a spawn)."""
    return type("LimitedHTTPProtocol", (NoDelayHTTPProtocol,), {"limits": limits})
