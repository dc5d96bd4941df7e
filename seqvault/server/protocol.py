"""uvicorn's HTTP protocol, tuned for small responses on keep-alive connections.

Two changes, both measured on loopback (docs/design/http.md, "Transport"):

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
from typing import Any

try:  # the C parser when it is installed, else the pure-Python one uvicorn always has
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as _Base
except ImportError:  # pragma: no cover - depends on the environment
    from uvicorn.protocols.http.h11_impl import H11Protocol as _Base  # type: ignore[assignment]

IMPORT_STRING = "seqvault.server.protocol:NoDelayHTTPProtocol"
HOLD_MAX = 8192  # only small writes (a response head) are held back


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


class NoDelayHTTPProtocol(_Base):  # type: ignore[misc,valid-type]
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        set_nodelay(transport)
        wrapped: Any = CoalescingTransport(transport, asyncio.get_running_loop())
        super().connection_made(wrapped)
