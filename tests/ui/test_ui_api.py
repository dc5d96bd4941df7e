"""The explorer's data, without a browser: each view against `vault.read` / `LaserReader`,
and the /ui routes over a real `seqvault serve` (errors, assets, no external URLs, bounds)."""

from __future__ import annotations

import re
import time
from typing import Any

import httpx
import numpy as np
import pytest

from seqvault import SeqVault
from seqvault.laser_reader import LaserReader
from seqvault.server.ui import views
from tests.ui.conftest import BIG_IDS_USER, BURSTY_USER


def cells(values: np.ndarray) -> list[str]:
    """What the table must show for a column: exact integers, plain strings."""
    return [str(v) for v in values.tolist()]


def all_pages(vault: SeqVault, user: Any, limit: int, rng: views.Range,
              columns: list[str] | None = None) -> tuple[list[list[str]], int]:
    rows: list[list[str]] = []
    cursor = None
    pages = 0
    while True:
        page = views.events_page(vault, user, rng, columns, limit, cursor)
        pages += 1
        assert len(page["rows"]) <= limit
        rows += page["rows"]
        if page["next_cursor"] is None:
            return rows, pages
        cursor = views.parse_cursor(page["next_cursor"])


def expected_rows(vault: SeqVault, user: Any, rng: views.Range,
                  columns: list[str] | None = None) -> list[list[str]]:
    seq = vault.read(user, since=rng.since, before=rng.before, columns=columns)
    names = list(seq.columns)
    cols = [cells(seq.columns[n][::-1]) for n in names]
    return [list(r) for r in zip(*cols)] if seq.count else []


# ============================================================ events table
@pytest.mark.parametrize("limit", [1, 7, 25, 26, 230, 500])
def test_paging_through_bursts_of_equal_timestamps_shows_every_event_once(
        vault: SeqVault, limit: int) -> None:
    rng = views.Range(None, None)
    rows, _ = all_pages(vault, BURSTY_USER, limit, rng)
    assert rows == expected_rows(vault, BURSTY_USER, rng)


def test_paging_a_zoomed_range_of_the_heavy_user(vault: SeqVault, heavy_user: int) -> None:
    ts = vault.read(heavy_user, columns=["ts"])["ts"]
    rng = views.Range(int(ts[len(ts) // 4]), int(ts[3 * len(ts) // 4]))
    rows, pages = all_pages(vault, heavy_user, 50, rng, ["ts", "item_id", "action"])
    assert pages > 2
    assert rows == expected_rows(vault, heavy_user, rng, ["ts", "item_id", "action"])


def test_events_keep_int64_ids_above_2_53_exact(vault: SeqVault) -> None:
    page = views.events_page(vault, BIG_IDS_USER, views.Range(None, None), ["item_id"], 10,
                             None)
    want = vault.read(BIG_IDS_USER, last=10, columns=["ts", "item_id"])["item_id"][::-1]
    assert [r[1] for r in page["rows"]] == [str(int(v)) for v in want]
    assert all(int(r[1]) > 2**53 for r in page["rows"])


def test_events_page_names_the_equivalent_public_read(vault: SeqVault,
                                                      heavy_user: int) -> None:
    first = views.events_page(vault, heavy_user, views.Range(None, None), None, 50, None)
    cursor = views.parse_cursor(first["next_cursor"])
    second = views.events_page(vault, heavy_user, views.Range(None, None), None, 50, cursor)
    p = second["api_params"]
    seq = vault.read(heavy_user, last=p["last"], before=p["before"])
    skip = second["api_skip_newest"]
    want = [cells(seq.columns[n][: seq.count - skip][::-1]) for n in seq.columns]
    assert second["rows"] == [list(r) for r in zip(*want)]


# ============================================================ timeline
def test_timeline_points_for_a_small_user(vault: SeqVault) -> None:
    doc = views.timeline(vault, BURSTY_USER, views.Range(None, None), "action")
    seq = vault.read(BURSTY_USER, columns=["ts", "action"])
    assert doc["mode"] == "points" and doc["count"] == seq.count
    lanes = np.array(doc["lanes"])[doc["points"]["lane"]]
    assert lanes.tolist() == seq["action"].tolist()
    assert doc["points"]["t_ms"] == seq["ts"].astype(float).tolist()


def test_timeline_downsamples_a_heavy_user_and_keeps_every_count(vault: SeqVault,
                                                                  heavy_user: int) -> None:
    seq = vault.read(heavy_user, columns=["ts", "action"])
    assert seq.count > views.MAX_POINTS, "the demo store's heaviest user should be binned"
    doc = views.timeline(vault, heavy_user, views.Range(None, None), "action", bins=100)
    assert doc["mode"] == "bins" and "points" not in doc
    counts = np.array(doc["bins"]["counts"])
    assert counts.shape == (len(doc["lanes"]), 100)
    assert int(counts.sum()) == seq.count == doc["count"]
    values, n = np.unique(seq["action"], return_counts=True)
    by_lane = dict(zip(doc["lanes"], counts.sum(axis=1).tolist()))
    assert {str(v): int(c) for v, c in zip(values, n)} == {
        k: v for k, v in by_lane.items() if k != views.OTHER}
    assert sum(doc["activity"]["counts"]) == seq.count == sum(doc["activity"]["hour_of_day_utc"])


def test_timeline_folds_rare_values_into_other(vault: SeqVault, heavy_user: int) -> None:
    doc = views.timeline(vault, heavy_user, views.Range(None, None), "category")
    assert len(doc["lanes"]) == views.MAX_LANES and doc["lanes"][-1] == views.OTHER
    assert int(np.sum(doc["bins"]["counts"])) == doc["count"]


def test_timeline_of_a_range_counts_what_read_returns(vault: SeqVault,
                                                      heavy_user: int) -> None:
    ts = vault.read(heavy_user, columns=["ts"])["ts"]
    since, before = int(ts[100]), int(ts[-100])
    doc = views.timeline(vault, heavy_user, views.Range(since, before), None)
    assert doc["count"] == vault.read(heavy_user, since=since, before=before).count
    assert doc["range_ms"] == [float(since), float(before)]


# ============================================================ point in time
@pytest.mark.parametrize("max_len", [10, 1000, 50_000])
def test_point_in_time_is_what_laser_reader_gives(vault: SeqVault, heavy_user: int,
                                                  max_len: int) -> None:
    ts = vault.read(heavy_user, columns=["ts"])["ts"]
    before = int(ts[len(ts) // 2])
    doc = views.point_in_time(vault, heavy_user, before, max_len, ["ts", "item_id", "action"])
    batch = LaserReader(vault, ["ts", "item_id"], max_len=max_len).read_batch(
        [heavy_user], before=before)
    length = int(batch.lengths[0])
    assert doc["length"] == length and doc["padding"] == max_len - length
    assert int((~batch.mask[0]).sum()) == doc["padding"]  # left padding, True = event
    shown = [int(r["values"][0]) for r in doc["rows"]]
    want = batch.values["ts"][0][batch.mask[0]][::-1][: views.MAX_PIT_ROWS]
    assert shown == want.tolist()
    assert all(int(r["values"][0]) < before for r in doc["rows"])
    assert doc["rows_omitted"] == length - len(doc["rows"])


# ============================================================ overview
def test_overview_numbers_are_the_stores(vault: SeqVault) -> None:
    doc = views.overview(vault, views.CompressionSampler())
    stats = vault.stats()
    assert doc["stats"]["users"] == stats["users"]
    assert doc["stats"]["events"] == stats["events"]
    assert doc["stats"]["memtable_events"] > 0  # the WAL tail the fixture left
    comp = doc["schema"]["columns"]
    assert [c["name"] for c in comp] == vault.schema.column_names
    assert all(c["compression"]["ratio"] > 1 for c in comp)


# ============================================================ routes over HTTP
def test_page_and_assets_need_nothing_from_outside(client: httpx.Client) -> None:
    page = client.get("/ui")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    texts = [page.text]
    for ref in re.findall(r'(?:src|href)="(/ui/static/[^"]+)"', page.text):
        r = client.get(ref)
        assert r.status_code == 200, ref
        assert r.headers["cache-control"].startswith("public")
        again = client.get(ref, headers={"If-None-Match": r.headers["etag"]})
        assert again.status_code == 304
        texts.append(r.text)
    assert len(texts) == 4  # page, favicon, css, js
    for text in texts:
        text = text.replace("http://www.w3.org/2000/svg", "")  # a namespace name, not a fetch
        assert not re.search(r"(?:https?:)?//[a-z0-9.-]+\.[a-z]{2,}", text, re.I), \
            "the page must work offline: no CDN or external URL"


def test_page_renders_the_overview_server_side(client: httpx.Client, vault: SeqVault) -> None:
    page = client.get("/ui").text
    users = vault.stats()["users"]
    assert f"{users:,} exactly" in page
    assert "schema v1" in page


def test_ui_routes_stay_out_of_the_openapi_contract(client: httpx.Client) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert not [p for p in paths if p.startswith("/ui")]


@pytest.mark.parametrize("path, field", [
    ("/ui/api/users/abc/timeline", "user"),
    ("/ui/api/users/1/timeline?color=nope", "color"),
    ("/ui/api/users/1/timeline?color=ts", "color"),
    ("/ui/api/users/1/timeline?bins=0", "bins"),
    ("/ui/api/users/1/timeline?since=soon", "since"),
    ("/ui/api/users/1/events?cursor=x", "cursor"),
    ("/ui/api/users/1/events?limit=100000", "limit"),
    ("/ui/api/users/1/events?columns=ts,nope", "columns"),
    ("/ui/api/users/1/pit", "before"),
    ("/ui/api/users/1/pit?before=5&max_len=0", "max_len"),
])
def test_bad_parameters_are_422_problems_naming_the_field(client: httpx.Client, path: str,
                                                          field: str) -> None:
    r = client.get(path)
    assert r.status_code == 422, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["field"] == field and field in r.json()["detail"]


def test_unknown_asset_is_404(client: httpx.Client) -> None:
    assert client.get("/ui/static/../app.py").status_code == 404
    assert client.get("/ui/static/secret.js").status_code == 404


def test_api_bodies_are_bounded_for_the_heaviest_user(client: httpx.Client,
                                                      heavy_user: int) -> None:
    tl = client.get(f"/ui/api/users/{heavy_user}/timeline", params={"color": "action"})
    doc = tl.json()
    assert doc["mode"] == "bins" and tl.headers["content-encoding"] == "gzip"
    ev = client.get(f"/ui/api/users/{heavy_user}/events", params={"limit": 500}).json()
    assert len(ev["rows"]) == 500
    pit = client.get(f"/ui/api/users/{heavy_user}/pit",
                     params={"before": 2**62, "max_len": 100_000}).json()
    assert len(pit["rows"]) == views.MAX_PIT_ROWS


# ============================================================ string user keys
def test_string_keys_that_need_escaping_round_trip(string_store: Any) -> None:
    from urllib.parse import quote

    from tests.ui.conftest import STRING_USERS, served

    with served(string_store) as url, httpx.Client(base_url=url, timeout=30) as c, \
            SeqVault.open(string_store, read_only=True) as v:
        for user in STRING_USERS:
            path = f"/ui/api/users/{quote(user, safe='')}"
            doc = c.get(path + "/events", params={"limit": 500}).json()
            assert doc["user"] == user
            assert doc["rows"] == expected_rows(v, user, views.Range(None, None))
            assert c.get(path + "/timeline").json()["count"] == v.read(user).count
        page = c.get("/ui")
        assert page.status_code == 200 and "<script>x</script>" not in page.text
        assert "'self'" in page.headers["content-security-policy"]


def test_the_page_says_why_a_store_is_not_ready(tmp_path: Any) -> None:
    """`create_app` starts on a store that cannot be opened yet (here: none at all) and
    retries; the page explains instead of answering problem+json to a person."""
    import socket
    import threading

    import uvicorn

    from seqvault.server import create_app

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(create_app(tmp_path / "missing"),
                                           log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)
        r = httpx.get(f"http://127.0.0.1:{sock.getsockname()[1]}/ui", timeout=30)
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        sock.close()
    assert r.status_code == 503 and r.headers["content-type"].startswith("text/html")
    assert "Store not ready" in r.text and "http-equiv='refresh'" in r.text


def test_overview_fragment_follows_the_writer(tmp_path: Any) -> None:
    """The page's live refresh: a read-only server's overview shows what a writer process
    commits after the page was loaded."""
    from seqvault import Schema
    from tests.ui.conftest import SCHEMA, bursty_events, served

    now_ms = int(1000 * time.time())
    with SeqVault.open(tmp_path / "s", schema=Schema.load(SCHEMA)) as writer:
        writer.append(1, bursty_events(20, now_ms))
        writer.flush()
        with served(tmp_path / "s") as url, httpx.Client(base_url=url, timeout=30) as c:
            def users_card() -> str:
                html = c.get("/ui/api/overview", params={"format": "html"}).text
                return re.search(r"data-card='users'>.*?</div></div>", html, re.S).group(0)

            assert "1 exactly" in users_card()
            writer.append(2, bursty_events(20, now_ms))
            writer.flush()
            deadline = time.monotonic() + 10
            while "2 exactly" not in users_card():  # read-only opens refresh within 50 ms
                assert time.monotonic() < deadline, users_card()
