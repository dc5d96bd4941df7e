"""HTTP `DELETE /users/{user_id}` (issue 14, finding 8): behind the write token, `before` to
cut, problem+json errors, and a store left unchanged by every refused call."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from .helpers import TOKEN, make_store

if TYPE_CHECKING:
    from .conftest import ServerThread

AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture()
def store(tmp_path: Path) -> Path:
    return make_store(tmp_path / "store", {1: 10, 2: 10, 3: 4})


@pytest.fixture()
def client(store: Path, serve: Any) -> Iterator[httpx.Client]:
    srv: ServerThread
    with serve(store, read_only=False, token=TOKEN) as srv, srv.client() as c:
        yield c


def seq(client: httpx.Client, user: Any) -> dict[str, Any]:
    return client.get(f"/users/{user}/sequence").json()


def test_delete_a_user_and_cut_another(client: httpx.Client) -> None:
    resp = client.delete("/users/1", headers=AUTH)
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"user_id": 1, "deleted_events": 10, "before": None}
    assert seq(client, 1)["count"] == 0
    ts = seq(client, 2)["columns"]["ts"]
    resp = client.delete("/users/2", params={"before": ts[6]}, headers=AUTH)
    assert resp.json() == {"user_id": 2, "deleted_events": 6, "before": ts[6]}
    assert seq(client, 2)["columns"]["ts"] == ts[6:]
    resp = client.delete("/users/999", headers=AUTH)  # unknown: a no-op, not an error
    assert resp.status_code == 200 and resp.json()["deleted_events"] == 0
    stats = client.get("/stats").json()
    assert stats["deleted_users"] == 1 and stats["deleted_events"] == 16
    assert stats["users"] == 2 and stats["events"] == 8


@pytest.mark.parametrize("path,params,headers,status", [
    ("/users/1", {}, {}, 401),
    ("/users/1", {}, {"Authorization": "Bearer wrong"}, 403),
    ("/users/1", {"before": "soon"}, AUTH, 422),
    ("/users/x", {}, AUTH, 422),  # the store's user column is int64
])
def test_refused_deletes_change_nothing(client: httpx.Client, path: str, params: dict,
                                        headers: dict, status: int) -> None:
    resp = client.delete(path, params=params, headers=headers)
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"] == "application/problem+json"
    assert seq(client, 1)["count"] == 10


@pytest.mark.parametrize("path,allow", [("/users/1/events", "POST"),
                                        ("/users/1/sequence", "GET")])
def test_delete_on_a_sub_resource_is_405(client: httpx.Client, path: str, allow: str) -> None:
    resp = client.delete(path, headers=AUTH)
    assert resp.status_code == 405 and resp.headers["allow"] == allow
    assert seq(client, 1)["count"] == 10


def test_read_only_server_refuses_delete_with_405(store: Path, serve: Any) -> None:
    with serve(store) as srv, srv.client() as c:
        resp = c.delete("/users/1", headers=AUTH)
        assert resp.status_code == 405
        assert resp.headers["content-type"] == "application/problem+json"
        assert seq(c, 1)["count"] == 10
