"""uvicorn's HTTP protocol with TCP_NODELAY on every connection.

asyncio only sets TCP_NODELAY on accepted sockets whose listening socket says proto=IPPROTO_TCP.
uvicorn's `--fd` (socket.fromfd(..., AF_UNIX, ...)) and `--workers N` (socket.socket(family))
listeners say proto=0, so their connections keep Nagle's algorithm on: uvicorn writes the
response head and body separately, the body waits for the ACK of the head, and the client's
delayed ACK adds ~40 ms to every keep-alive request (measured: 45 ms → 3 ms for /livez on
loopback). `seqvault serve` and the tests use this class (`http=` in uvicorn's config).
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

try:  # the C parser when it is installed, else the pure-Python one uvicorn always has
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as _Base
except ImportError:  # pragma: no cover - depends on the environment
    from uvicorn.protocols.http.h11_impl import H11Protocol as _Base  # type: ignore[assignment]

IMPORT_STRING = "seqvault.server.protocol:NoDelayHTTPProtocol"


def set_nodelay(transport: asyncio.BaseTransport) -> None:
    # No family check: uvicorn's --fd labels an inherited TCP socket AF_UNIX; on a real Unix
    # socket the call fails with EOPNOTSUPP, which is ignored.
    sock: Any = transport.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass


class NoDelayHTTPProtocol(_Base):  # type: ignore[misc,valid-type]
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        set_nodelay(transport)
        super().connection_made(transport)
