"""The pure wire-format pieces: string columns to Arrow, negotiation, encodings."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from seqvault.server.formats import arrow_strings, choose_encoding, negotiate
from seqvault.server.problems import Problem


@pytest.mark.parametrize("values", [
    ["a", "bb", "a", "", "ccc", "bb", "a"],
    ["naïve", "日本語", "naïve", "emoji 🎉", "日本語"],
    [],
    [""] * 5,
    [f"user-{i % 97}" for i in range(5000)],
    [f"u{i}" for i in range(3000)],  # every value distinct
])
@pytest.mark.parametrize("kind", ["unicode", "object", "object-distinct"])
def test_arrow_strings_round_trip(values: list[str], kind: str) -> None:
    if kind == "unicode":
        arr = np.array(values, dtype=np.str_)
    elif kind == "object":
        lookup = np.array(sorted(set(values)), dtype=object)
        arr = lookup[np.searchsorted(lookup, np.array(values, dtype=object))] if values else \
            np.array([], dtype=object)
    else:  # equal strings held by distinct objects
        arr = np.array(["".join(list(v)) for v in values], dtype=object)
    out = arrow_strings(arr)
    assert out.to_pylist() == values
    if len(out):
        assert pa.types.is_dictionary(out.type)
        assert len(set(out.dictionary.to_pylist())) == len(out.dictionary)


def test_arrow_strings_of_a_slice() -> None:
    arr = np.array(["x", "y", "z"] * 10, dtype=np.str_)[5:17]
    assert arrow_strings(arr).to_pylist() == arr.tolist()


def test_negotiate_prefers_specific_then_q_then_order() -> None:
    assert negotiate("application/vnd.msgpack, application/vnd.apache.arrow.stream") == \
        "msgpack"
    assert negotiate("application/vnd.msgpack;q=0.2, */*") == "json"
    with pytest.raises(Problem) as info:
        negotiate("text/plain, application/json;q=0")
    assert info.value.status == 406


@pytest.mark.parametrize("header,want", [
    (None, None), ("", None), ("gzip, deflate", "gzip"), ("gzip, deflate, zstd", "zstd"),
    ("zstd;q=0, gzip", "gzip"), ("*;q=0.5, gzip;q=0.1", "zstd"), ("identity", None)])
def test_choose_encoding(header: str | None, want: str | None) -> None:
    assert choose_encoding(header) == want


# ------------------------------------------------------------------ transport tuning
class FakeTransport:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))

    def writelines(self, chunks: list[bytes]) -> None:
        self.writes.append(b"".join(chunks))

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed


def test_coalescing_transport_joins_head_and_body() -> None:
    import asyncio

    from seqvault.server.protocol import HOLD_MAX, CoalescingTransport

    async def scenario() -> FakeTransport:
        fake = FakeTransport()
        t = CoalescingTransport(fake, asyncio.get_running_loop())  # type: ignore[arg-type]
        t.write(b"HTTP/1.1 200 OK\r\n\r\n")
        t.write(b"body")
        assert fake.writes == [b"HTTP/1.1 200 OK\r\n\r\nbody"]
        t.write(b"head-only")
        assert fake.writes[1:] == []
        await asyncio.sleep(0)  # the end of the loop iteration flushes a held write
        assert fake.writes[1:] == [b"head-only"]
        t.write(b"x" * (HOLD_MAX + 1))  # large writes are never held
        assert len(fake.writes) == 3
        t.write(b"head")
        t.write(b"y" * (HOLD_MAX + 1))  # a large body after a held head: both, in order
        assert b"".join(fake.writes[3:]) == b"head" + b"y" * (HOLD_MAX + 1)
        t.write(b"last")
        t.close()  # close flushes first
        assert fake.writes[-1] == b"last" and fake.closed
        assert t.is_closing()  # other attributes are delegated
        return fake

    asyncio.run(scenario())


def test_server_connections_have_tcp_nodelay(tmp_path, serve) -> None:  # type: ignore[no-untyped-def]
    import socket

    from .helpers import make_store

    store = make_store(tmp_path / "s", {1: 2})
    with serve(store) as srv, srv.client() as c:
        assert c.get("/users/1/sequence").status_code == 200  # keep-alive: still connected
        conns = list(srv.server.server_state.connections)
        assert conns
        for proto in conns:
            sock = proto.transport.get_extra_info("socket")
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
