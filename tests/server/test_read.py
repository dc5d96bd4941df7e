"""HTTP reads against a real uvicorn server: every format decoded and compared with the embedded
read of the same request, content negotiation, compression, batchGet, and every read error."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import msgpack
import numpy as np
import pyarrow as pa
import pytest
import zstandard

from seqvault import Schema, SeqVault

from .helpers import SCHEMA, events, make_store

if TYPE_CHECKING:
    from .conftest import ServerThread

ARROW = "application/vnd.apache.arrow.stream"
MSGPACK = "application/vnd.msgpack"
USERS = {1: 6000, 2: 40, 3: 1, 2**62 + 1: 25}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("read") / "store"
    make_store(path, USERS)
    with SeqVault.open(path) as v:  # a memtable tail on top of the sealed segments
        v.append(1, events(50, seed=99))
        v.close(flush=False)
    return path


@pytest.fixture(scope="module")
def server(store: Path, serve: Any) -> Iterator[ServerThread]:
    with serve(store, max_last=5000) as srv:
        yield srv


@pytest.fixture(scope="module")
def client(server: ServerThread) -> Iterator[httpx.Client]:
    # identity unless a test asks: httpx would otherwise advertise gzip/zstd itself
    with server.client(headers={"Accept-Encoding": "identity"}) as c:
        yield c


@pytest.fixture(scope="module")
def vault(store: Path) -> Iterator[SeqVault]:
    with SeqVault.open(store, read_only=True) as v:
        yield v


def decode(resp: httpx.Response) -> tuple[Any, int, dict[str, np.ndarray]]:
    """(user_id, count, columns) from a JSON, msgpack or Arrow sequence response."""
    ctype = resp.headers["content-type"]
    if ctype.startswith("application/json"):
        doc = resp.json()
        return doc["user_id"], doc["count"], {k: np.asarray(v) for k, v in doc["columns"].items()}
    if ctype == MSGPACK:
        doc = msgpack.unpackb(resp.content, raw=False)
        return doc["user_id"], doc["count"], {k: np.asarray(v) for k, v in doc["columns"].items()}
    assert ctype == ARROW
    table = pa.ipc.open_stream(resp.content).read_all()
    meta = table.schema.metadata
    cols = {n: table.column(n).to_numpy(zero_copy_only=False) for n in table.column_names}
    return meta[b"seqvault.user_id"].decode(), int(meta[b"seqvault.count"]), cols


def assert_same(got: dict[str, np.ndarray], want: Any) -> None:
    assert list(got) == list(want.columns)
    for name, arr in want.columns.items():
        g = got[name]
        if arr.dtype == object:
            assert g.tolist() == arr.tolist(), name
        else:
            np.testing.assert_array_equal(g.astype(arr.dtype), arr, err_msg=name)


@pytest.mark.parametrize("accept", ["application/json", MSGPACK, "application/x-msgpack", ARROW])
@pytest.mark.parametrize("query", [
    {"last": 100},
    {"last": 5000},
    {},
    {"last": 7, "columns": "action,ts,item_id"},
    {"before": "BEFORE", "last": 10},
    {"since": "SINCE"},
    {"since": "SINCE", "before": "BEFORE"},
])
def test_sequence_matches_embedded_read(client: httpx.Client, vault: SeqVault, accept: str,
                                        query: dict[str, Any]) -> None:
    full = vault.read(1)
    ts = full["ts"]
    marks = {"BEFORE": int(ts[len(ts) // 2]), "SINCE": int(ts[len(ts) // 3])}
    params = {k: marks.get(v, v) if isinstance(v, str) else v for k, v in query.items()}
    resp = client.get("/users/1/sequence", params=params, headers={"Accept": accept})
    assert resp.status_code == 200, resp.text
    assert "Accept" in resp.headers["vary"]
    uid, count, cols = decode(resp)
    want = vault.read(1, last=params.get("last", 5000),
                      columns=params["columns"].split(",") if "columns" in params else None,
                      before=params.get("before"), since=params.get("since"))
    assert str(uid) == "1"
    assert count == len(want) == int(resp.headers["x-seqvault-count"])
    assert_same(cols, want)


def test_default_last_is_the_configured_maximum(client: httpx.Client, vault: SeqVault) -> None:
    _, count, _ = decode(client.get("/users/1/sequence"))
    assert count == 5000 and len(vault.read(1)) > 5000


def test_json_is_columnar_and_ascending(client: httpx.Client) -> None:
    doc = client.get("/users/2/sequence").json()
    assert set(doc) == {"user_id", "count", "columns"}
    assert doc["user_id"] == 2 and doc["count"] == 40
    assert list(doc["columns"]) == ["ts", "item_id", "action", "category", "dwell_ms", "scenario"]
    assert all(len(v) == 40 for v in doc["columns"].values())
    assert doc["columns"]["ts"] == sorted(doc["columns"]["ts"])


def test_unknown_user_is_an_empty_sequence(client: httpx.Client) -> None:
    for accept in ("application/json", MSGPACK, ARROW):
        resp = client.get("/users/777/sequence", headers={"Accept": accept})
        assert resp.status_code == 200
        _, count, cols = decode(resp)
        assert count == 0 and all(v.size == 0 for v in cols.values())


def test_big_int64_ids_as_strings(client: httpx.Client, vault: SeqVault) -> None:
    big = 2**62 + 1
    as_num = client.get(f"/users/{big}/sequence").json()
    assert as_num["user_id"] == big and as_num["count"] == 25
    as_str = client.get(f"/users/{big}/sequence", params={"ids_as": "string"}).json()
    assert as_str["user_id"] == str(big)
    batch = client.post("/sequences:batchGet", params={"ids_as": "string"},
                        json={"user_ids": [str(big)], "last": 3}).json()
    assert batch["results"][0]["user_id"] == str(big) and batch["results"][0]["count"] == 3


@pytest.mark.parametrize("accept,fmt", [
    (None, "application/json"),
    ("*/*", "application/json"),
    ("application/*", "application/json"),
    ("text/html, application/vnd.apache.arrow.stream;q=0.9", ARROW),
    ("application/json;q=0.5, application/vnd.msgpack", MSGPACK),
    ("application/x-msgpack", MSGPACK),
    ("*/*;q=0.1, application/vnd.apache.arrow.stream", ARROW),
    ("APPLICATION/VND.APACHE.ARROW.STREAM", ARROW),
])
def test_content_negotiation(client: httpx.Client, accept: str | None, fmt: str) -> None:
    headers = {"Accept": accept} if accept is not None else {}
    if accept is None:
        client.headers.pop("accept", None)
    resp = client.get("/users/2/sequence", headers=headers)
    assert resp.status_code == 200
    assert resp.headers["content-type"].split(";")[0] == fmt


@pytest.mark.parametrize("accept", ["text/html", "application/xml", "application/json;q=0",
                                    "image/*"])
def test_406_when_nothing_fits(client: httpx.Client, accept: str) -> None:
    resp = client.get("/users/2/sequence", headers={"Accept": accept})
    assert resp.status_code == 406
    assert resp.headers["content-type"] == "application/problem+json"
    assert ARROW in resp.json()["available"]


@pytest.mark.parametrize("accept_encoding,encoding", [
    ("zstd", "zstd"), ("gzip", "gzip"), ("gzip, zstd", "zstd"), ("zstd;q=0.5, gzip", "gzip"),
    ("br", None), ("identity", None), ("*", "zstd"), ("gzip;q=0", None)])
def test_compression_of_large_bodies(client: httpx.Client, vault: SeqVault,
                                     accept_encoding: str, encoding: str | None) -> None:
    plain = client.get("/users/1/sequence", params={"last": 2000}, headers={"Accept": ARROW})
    with httpx.Client(base_url=str(client.base_url)) as raw:
        req = raw.build_request("GET", "/users/1/sequence", params={"last": 2000},
                                headers={"Accept": ARROW, "Accept-Encoding": accept_encoding})
        resp = raw.send(req, stream=True)
        body = resp.read() if encoding is None else b"".join(resp.iter_raw())
        resp.close()
    assert resp.headers.get("content-encoding") == encoding
    if encoding == "zstd":
        body = zstandard.ZstdDecompressor().decompressobj().decompress(body)
    elif encoding == "gzip":
        body = gzip.decompress(body)
    assert body == plain.content
    if encoding:
        assert int(resp.headers["content-length"]) < len(plain.content)
    assert "Accept-Encoding" in resp.headers["vary"]


def test_small_bodies_are_not_compressed(client: httpx.Client) -> None:
    resp = client.get("/users/3/sequence", headers={"Accept-Encoding": "zstd, gzip"})
    assert resp.status_code == 200 and "content-encoding" not in resp.headers


# ------------------------------------------------------------------ batchGet
@pytest.mark.parametrize("accept", ["application/json", MSGPACK, ARROW])
def test_batch_get_matches_embedded_reads(client: httpx.Client, vault: SeqVault,
                                          accept: str) -> None:
    ids = [1, 2, "3", "not-a-number", 404]
    body = {"user_ids": ids, "last": 30, "columns": ["ts", "action", "dwell_ms"]}
    resp = client.post("/sequences:batchGet", json=body, headers={"Accept": accept})
    assert resp.status_code == 200, resp.text
    if accept == ARROW:
        table = pa.ipc.open_stream(resp.content).read_all()
        rows = table.to_pylist()
        results = [{"user_id": r["user_id"], "status": r["status"], "count": r["count"],
                    "columns": {c: r[c] for c in body["columns"]} if r["status"] == 200
                    else None, "error": r["error"]} for r in rows]
        assert table.schema.field("ts").type == pa.large_list(
            pa.field("item", pa.int64(), nullable=False))
    else:
        doc = resp.json() if accept == "application/json" else msgpack.unpackb(resp.content)
        results = doc["results"]
    assert [r["status"] for r in results] == [200, 200, 200, 422, 200]
    for raw_id, r in zip(ids, results):
        if r["status"] != 200:
            continue
        want = vault.read(int(raw_id), last=30, columns=body["columns"])
        assert r["user_id"] == int(raw_id) and r["count"] == len(want)
        assert_same({k: np.asarray(v) for k, v in r["columns"].items()}, want)
    bad = results[3]
    if accept == ARROW:
        assert "not an integer" in bad["error"]
    else:
        assert bad["user_id"] == "not-a-number"
        assert bad["problem"]["type"] == "urn:seqvault:problem:validation"


def test_batch_get_before_per_user(client: httpx.Client, vault: SeqVault) -> None:
    t1 = int(vault.read(1)["ts"][100])
    t2 = int(vault.read(2)["ts"][10])
    doc = client.post("/sequences:batchGet",
                      json={"user_ids": [1, 2], "before": [t1, t2], "last": 1000}).json()
    assert [r["count"] for r in doc["results"]] == [100, 10]
    assert doc["results"][0]["columns"]["ts"][-1] < t1


@pytest.mark.parametrize("body,field", [
    ({"user_ids": []}, "user_ids"),
    ({"user_ids": [1], "last": 0}, "last"),
    ({"user_ids": [1], "last": 5001}, "last"),
    ({"user_ids": [1], "last": "10"}, "last"),
    ({"user_ids": [1], "columns": ["nope"]}, "columns"),
    ({"user_ids": [1, 2], "before": [1]}, "before"),
    ({"user_ids": [1], "before": "yesterday"}, "before"),
    ({"user_ids": [1], "before": 2**64}, "before"),
    ({"user_ids": [1, 2], "before": [1, -(2**64)]}, "before"),
    ({"user_ids": [1], "since": 2**63}, "since"),
    ({"user_ids": [1], "extra": 1}, "extra"),
    ({"user_ids": list(range(1001))}, "user_ids"),
])
def test_batch_get_bad_requests(client: httpx.Client, body: dict[str, Any], field: str) -> None:
    resp = client.post("/sequences:batchGet", json=body)
    assert resp.status_code == 422, resp.text
    assert resp.headers["content-type"] == "application/problem+json"
    assert field in json.dumps(resp.json())


def test_batch_get_malformed_json(client: httpx.Client) -> None:
    resp = client.post("/sequences:batchGet", content=b"{not json",
                       headers={"Content-Type": "application/json"})
    assert resp.status_code == 422
    assert resp.headers["content-type"] == "application/problem+json"


# ------------------------------------------------------------------ read errors
@pytest.mark.parametrize("path,field", [
    ("/users/1/sequence?last=0", "last"),
    ("/users/1/sequence?last=-3", "last"),
    ("/users/1/sequence?last=5001", "last"),
    ("/users/1/sequence?last=ten", "last"),
    ("/users/1/sequence?columns=item_id,nope", "columns"),
    ("/users/1/sequence?columns=", "columns"),
    ("/users/1/sequence?columns=ts,,action", "columns"),
    ("/users/1/sequence?before=abc", "before"),
    ("/users/1/sequence?before=1.5", "before"),
    ("/users/1/sequence?since=2024-01-01", "since"),
    (f"/users/1/sequence?before={2**63}", "before"),
    (f"/users/1/sequence?since=-{2**64}", "since"),
    ("/users/abc/sequence", "user_id"),
    ("/users/1.0/sequence", "user_id"),
    (f"/users/{2**63}/sequence", "user_id"),
    ("/users/1/sequence?ids_as=hex", "ids_as"),
])
def test_422_problem_details(client: httpx.Client, path: str, field: str) -> None:
    resp = client.get(path)
    assert resp.status_code == 422, resp.text
    assert resp.headers["content-type"] == "application/problem+json"
    doc = resp.json()
    assert doc["status"] == 422 and doc["type"].startswith("urn:seqvault:problem:")
    assert doc["title"] and field in doc["detail"]
    assert doc["instance"] == path.split("?")[0]


def test_404_and_405_are_problems(client: httpx.Client) -> None:
    resp = client.get("/nothing/here")
    assert resp.status_code == 404
    assert resp.headers["content-type"] == "application/problem+json"
    resp = client.delete("/users/1/sequence")
    assert resp.status_code == 405 and resp.json()["status"] == 405
    assert "GET" in resp.headers["allow"]


def test_string_user_store(tmp_path: Path, serve: Any) -> None:
    d = Schema.load(SCHEMA).to_dict()
    d["user"]["type"] = "string"
    path = make_store(tmp_path / "s", {"alice": 12, "b/ob": 3, "123": 4},
                      schema=Schema.from_dict(d))
    with serve(path) as srv, srv.client() as c, SeqVault.open(path, read_only=True) as v:
        doc = c.get("/users/alice/sequence").json()
        assert doc["user_id"] == "alice" and doc["count"] == 12
        assert c.get("/users/123/sequence").json()["count"] == 4  # a string id, not a number
        assert c.get("/users/b%2Fob/sequence").status_code in (200, 404)
        resp = c.post("/sequences:batchGet", json={"user_ids": ["alice", 5]},
                      headers={"Accept": ARROW})
        rows = pa.ipc.open_stream(resp.content).read_all().to_pylist()
        assert rows[0]["user_id"] == "alice" and rows[0]["count"] == 12
        assert rows[1]["status"] == 422 and rows[1]["user_id"] == "5"
        assert rows[0]["ts"] == v.read("alice")["ts"].tolist()
