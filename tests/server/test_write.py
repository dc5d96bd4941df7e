"""HTTP writes: token checks, every write error, atomicity (a bad request never changes the store),
readiness (503), and readers that stay consistent while a writer appends."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import msgpack
import numpy as np
import pyarrow as pa
import pytest

from seqvault import SeqVault
from seqvault.server import create_app

from .helpers import TOKEN, events, make_store

if TYPE_CHECKING:
    from .conftest import ServerThread

ARROW = "application/vnd.apache.arrow.stream"
MSGPACK = "application/vnd.msgpack"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def as_json(ev: dict[str, np.ndarray]) -> dict[str, Any]:
    return {"columns": {k: v.tolist() for k, v in ev.items()}}


def as_arrow(ev: dict[str, Any]) -> bytes:
    table = pa.table({k: pa.array(np.asarray(v)) if np.asarray(v).dtype != object
                      else pa.array(list(v), type=pa.string()) for k, v in ev.items()})
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as w:
        w.write_table(table)
    return sink.getvalue().to_pybytes()


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_store(tmp_path_factory.mktemp("write") / "store", {1: 10})


@pytest.fixture(scope="module")
def server(store: Path, serve: Any) -> Iterator[ServerThread]:
    with serve(store, read_only=False, token=TOKEN, max_body_bytes=200_000) as srv:
        yield srv


@pytest.fixture(scope="module")
def client(server: ServerThread) -> Iterator[httpx.Client]:
    with server.client() as c:
        yield c


def snapshot(client: httpx.Client) -> tuple[int, int]:
    s = client.get("/stats").json()
    return s["users"], s["events"]


def read_all(client: httpx.Client, user: Any) -> dict[str, list[Any]]:
    doc = client.get(f"/users/{user}/sequence").json()
    return doc["columns"]


@pytest.mark.parametrize("fmt", ["json", "msgpack", "x-msgpack", "arrow"])
def test_append_one_user_every_body_format(client: httpx.Client, fmt: str) -> None:
    user = {"json": 101, "msgpack": 102, "x-msgpack": 103, "arrow": 104}[fmt]
    ev = events(30, seed=user)
    if fmt == "json":
        resp = client.post(f"/users/{user}/events", json=as_json(ev), headers=AUTH)
    elif fmt == "arrow":
        resp = client.post(f"/users/{user}/events", content=as_arrow(ev),
                           headers={**AUTH, "Content-Type": ARROW})
    else:
        ctype = "application/vnd.msgpack" if fmt == "msgpack" else "application/x-msgpack"
        resp = client.post(f"/users/{user}/events", content=msgpack.packb(as_json(ev)),
                           headers={**AUTH, "Content-Type": ctype})
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"user_id": user, "appended": 30}
    got = read_all(client, user)
    for k, v in ev.items():
        assert got[k] == v.tolist(), k


@pytest.mark.parametrize("fmt", ["json", "msgpack", "arrow"])
def test_batch_append_every_body_format(client: httpx.Client, fmt: str) -> None:
    base = {"json": 200, "msgpack": 300, "arrow": 400}[fmt]
    ev = events(40, seed=base)
    users = np.array([base + 1, base + 2] * 20, dtype=np.int64)
    cols = {"user_id": users, **ev}
    if fmt == "json":
        resp = client.post("/events:batchAppend", json=as_json(cols), headers=AUTH)
    elif fmt == "msgpack":
        resp = client.post("/events:batchAppend", content=msgpack.packb(as_json(cols)),
                           headers={**AUTH, "Content-Type": MSGPACK})
    else:
        resp = client.post("/events:batchAppend", content=as_arrow(cols),
                           headers={**AUTH, "Content-Type": ARROW})
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"appended": 40}
    for u in (base + 1, base + 2):
        got = read_all(client, u)
        mask = users == u
        assert got["ts"] == ev["ts"][mask].tolist()
        assert got["action"] == ev["action"][mask].tolist()


@pytest.mark.parametrize("headers,status", [
    ({}, 401),
    ({"Authorization": "Bearer wrong"}, 403),
    ({"Authorization": f"Bearer {TOKEN}x"}, 403),
    ({"Authorization": f"Basic {TOKEN}"}, 403),
    ({"Authorization": "Bearer"}, 403),
])
def test_token_required(client: httpx.Client, headers: dict[str, str], status: int) -> None:
    before = snapshot(client)
    for path in ("/users/1/events", "/events:batchAppend"):
        body = as_json(events(3)) if path.startswith("/users") else as_json(
            {"user_id": np.array([1, 1, 1]), **events(3)})
        resp = client.post(path, json=body, headers=headers)
        assert resp.status_code == status, resp.text
        assert resp.headers["content-type"] == "application/problem+json"
        if status == 401:
            assert resp.headers["www-authenticate"].startswith("Bearer")
    assert snapshot(client) == before


def _bad_bodies() -> list[tuple[str, dict[str, str], bytes | None, Any, int]]:
    good = as_json(events(5))
    missing = {"columns": {k: v for k, v in good["columns"].items() if k != "action"}}
    wrong_type = {"columns": {**good["columns"], "category": [1, 2, "x", 4, 5]}}
    overflow = {"columns": {**good["columns"], "category": [1, 2, 3, 70000, 5]}}
    unknown = {"columns": {**good["columns"], "color": [1] * 5}}
    ragged = {"columns": {**good["columns"], "dwell_ms": [1, 2]}}
    negative_ts = {"columns": {**good["columns"], "ts": [-1, 2, 3, 4, 5]}}
    u = "/users/1/events"
    return [
        (u, {}, b"{not json", None, 400),
        (u, {"Content-Type": MSGPACK}, b"\xc1\xc1", None, 400),
        (u, {"Content-Type": ARROW}, b"not arrow", None, 400),
        (u, {"Content-Type": "text/csv"}, b"a,b", None, 415),
        (u, {}, None, {"events": good["columns"]}, 422),
        (u, {}, None, [1, 2, 3], 422),
        (u, {}, None, {"columns": {"ts": 5}}, 422),
        (u, {}, None, missing, 422),
        (u, {}, None, wrong_type, 422),
        (u, {}, None, overflow, 422),
        (u, {}, None, unknown, 422),
        (u, {}, None, ragged, 422),
        (u, {}, None, negative_ts, 422),
        ("/users/abc/events", {}, None, good, 422),
        ("/events:batchAppend", {}, None, good, 422),  # no user column
        ("/events:batchAppend", {}, None,
         {"columns": {"user_id": [1, 2, 3, 4, "x"], **good["columns"]}}, 422),
        # the last row is bad: nothing of the call may land (atomic)
        ("/events:batchAppend", {}, None,
         {"columns": {"user_id": [1, 2, 3, 4, 5], **overflow["columns"]}}, 422),
    ]


@pytest.mark.parametrize("path,headers,raw,doc,status", _bad_bodies())
def test_bad_writes_never_change_the_store(client: httpx.Client, store: Path, path: str,
                                           headers: dict[str, str], raw: bytes | None, doc: Any,
                                           status: int) -> None:
    before = snapshot(client)
    seq_before = {u: read_all(client, u)["ts"] for u in (1, 2, 3)}
    if raw is not None:
        resp = client.post(path, content=raw, headers={"Content-Type": "application/json",
                                                       **headers, **AUTH})
    else:
        resp = client.post(path, json=doc, headers={**headers, **AUTH})
    assert resp.status_code == status, resp.text
    problem = resp.json()
    assert resp.headers["content-type"] == "application/problem+json"
    assert problem["status"] == status and problem["detail"]
    assert snapshot(client) == before
    assert {u: read_all(client, u)["ts"] for u in (1, 2, 3)} == seq_before


def test_validation_problem_names_column_row_and_value(client: httpx.Client) -> None:
    good = as_json(events(5))
    bad = {"columns": {**good["columns"], "category": [1, 2, 3, 70000, 5]}}
    problem = client.post("/users/1/events", json=bad, headers=AUTH).json()
    assert problem["column"] == "category" and problem["row"] == 3
    assert problem["value"] == 70000 and "70000" in problem["detail"]


def test_413_for_large_bodies(client: httpx.Client) -> None:
    before = snapshot(client)
    big = as_json(events(3000))  # well over the 200 kB limit of this server
    resp = client.post("/users/1/events", json=big, headers=AUTH)
    assert resp.status_code == 413
    assert resp.headers["content-type"] == "application/problem+json"
    assert resp.json()["limit"] == 200_000

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit applies while reading
        yield b'{"columns": {"ts": ['
        for _ in range(30_000):
            yield b"1234567890123,"
        yield b"1]}}"

    with httpx.Client(base_url=str(client.base_url), timeout=30) as raw:
        resp = raw.post("/users/1/events", content=chunks(),
                        headers={**AUTH, "Content-Type": "application/json"})
    assert resp.status_code == 413
    assert snapshot(client) == before


def test_read_only_server_refuses_writes_with_405(tmp_path: Path, serve: Any) -> None:
    store = make_store(tmp_path / "s", {1: 4})
    with serve(store) as srv, srv.client() as c:
        for path in ("/users/1/events", "/events:batchAppend"):
            resp = c.post(path, json=as_json(events(2)), headers=AUTH)
            assert resp.status_code == 405
            assert resp.headers["content-type"] == "application/problem+json"
            assert "allow-writes" in resp.json()["detail"]
        assert c.get("/users/1/sequence").json()["count"] == 4


def test_writable_app_needs_a_token(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="token"):
        create_app(tmp_path, read_only=False)


# ------------------------------------------------------------------ readiness
def test_503_until_the_store_exists(tmp_path: Path, serve: Any) -> None:
    path = tmp_path / "later"
    with serve(path) as srv, srv.client() as c:
        assert c.get("/livez").status_code == 200
        for p in ("/readyz", "/users/1/sequence", "/schema", "/stats"):
            resp = c.get(p)
            assert resp.status_code == 503, p
            assert resp.headers["content-type"] == "application/problem+json"
            assert resp.headers["retry-after"] == "1"
        assert c.post("/sequences:batchGet", json={"user_ids": [1]}).status_code == 503
        assert "seqvault_store_ready 0.0" in c.get("/metrics").text
        make_store(path, {1: 6})
        deadline = time.monotonic() + 10
        while c.get("/readyz").status_code != 200:
            assert time.monotonic() < deadline, "never became ready"
            time.sleep(0.1)
        assert c.get("/users/1/sequence").json()["count"] == 6
        assert "seqvault_store_ready 1.0" in c.get("/metrics").text


def test_writer_server_503_while_another_writer_holds_the_lock(tmp_path: Path, serve: Any) -> None:
    store = make_store(tmp_path / "s", {1: 4})
    holder = SeqVault.open(store)
    try:
        with serve(store, read_only=False, token=TOKEN) as srv, srv.client() as c:
            resp = c.post("/users/1/events", json=as_json(events(2)), headers=AUTH)
            assert resp.status_code == 503
            assert "open for writing by another process" in resp.json()["detail"]
            holder.close()
            deadline = time.monotonic() + 10
            while c.get("/readyz").status_code != 200:
                assert time.monotonic() < deadline
                time.sleep(0.1)
            resp = c.post("/users/1/events", json=as_json(events(2)), headers=AUTH)
            assert resp.status_code == 200, resp.text
            assert c.get("/users/1/sequence").json()["count"] == 6
    finally:
        holder.close()


# ------------------------------------------------------------------ concurrency
def _check_prefix(doc_cols: dict[str, list[Any]], want: dict[str, np.ndarray]) -> int:
    n = len(doc_cols["ts"])
    assert doc_cols["ts"] == want["ts"][:n].tolist()
    assert doc_cols["item_id"] == want["item_id"][:n].tolist()
    assert doc_cols["action"] == want["action"][:n].tolist()
    return n


def _run_readers(url: str, user: int, want: dict[str, np.ndarray], stop: threading.Event,
                 errors: list[BaseException], seen: list[int], n_threads: int = 3) -> list[
                     threading.Thread]:
    def reader() -> None:
        last = 0
        try:
            with httpx.Client(base_url=url, timeout=30) as c:
                while not stop.is_set():
                    accept = ARROW if last % 2 else "application/json"
                    resp = c.get(f"/users/{user}/sequence", headers={"Accept": accept})
                    assert resp.status_code == 200, resp.text
                    if accept == ARROW:
                        t = pa.ipc.open_stream(resp.content).read_all()
                        cols = {k: t.column(k).to_pylist() for k in t.column_names}
                    else:
                        cols = resp.json()["columns"]
                    n = _check_prefix(cols, want)
                    assert n >= last, f"count went back from {last} to {n}"
                    last = n
                    seen.append(n)
        except BaseException as exc:  # noqa: BLE001 - reported by the test thread
            errors.append(exc)

    threads = [threading.Thread(target=reader) for _ in range(n_threads)]
    for t in threads:
        t.start()
    return threads


def test_readers_stay_consistent_while_http_writer_appends(client: httpx.Client,
                                                           server: ServerThread) -> None:
    user, chunk, rounds = 5000, 25, 30
    want = events(chunk * rounds, seed=5)
    stop, errors, seen = threading.Event(), [], []  # type: ignore[var-annotated]
    threads = _run_readers(server.url, user, want, stop, errors, seen)
    try:
        for i in range(rounds):
            part = {k: v[i * chunk:(i + 1) * chunk] for k, v in want.items()}
            resp = client.post(f"/users/{user}/events", json=as_json(part), headers=AUTH)
            assert resp.status_code == 200, resp.text
        # on a loaded machine the 30 writes can end before any reader's first answer
        deadline = time.monotonic() + 30
        while not seen and not errors and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not errors, errors[0]
    assert len(seen) > 0
    assert _check_prefix(read_all(client, user), want) == chunk * rounds


def test_read_only_server_sees_an_external_writer(tmp_path: Path, serve: Any) -> None:
    """The deployment model: read-only workers, the writer elsewhere (here: this process)."""
    store = make_store(tmp_path / "s", {1: 3})
    user, chunk, rounds = 9, 20, 25
    want = events(chunk * rounds, seed=9)
    with serve(store) as srv, SeqVault.open(store) as writer:
        stop, errors, seen = threading.Event(), [], []  # type: ignore[var-annotated]
        threads = _run_readers(srv.url, user, want, stop, errors, seen)
        try:
            for i in range(rounds):
                writer.append(user, {k: v[i * chunk:(i + 1) * chunk] for k, v in want.items()})
                if i == rounds // 2:
                    writer.flush()  # a seal (new segments, log rotation) in the middle
                time.sleep(0.005)
            writer.sync()
            deadline = time.monotonic() + 10
            with srv.client() as c:
                while c.get(f"/users/{user}/sequence").json()["count"] != chunk * rounds:
                    assert time.monotonic() < deadline, "the read-only server never caught up"
                    time.sleep(0.02)
        finally:
            stop.set()
            for t in threads:
                t.join()
        assert not errors, errors[0]
        assert seen and max(seen) == chunk * rounds
