"""The explorer page in headless Chromium against a real `seqvault serve`: what it shows after a
look-up, a zoom (a drag across the chart), paging and column choices equals `vault.read` of
the same range; the point-in-time view equals `LaserReader`; no script errors.

Rows are read out of the DOM in one script call per table (per-cell WebDriver calls would
cost a round trip each). Waits poll the page's own `data-busy` counter, never a fixed sleep.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from seqvault import SeqVault
from seqvault.laser_reader import LaserReader
from tests.ui.conftest import BIG_IDS_USER

ROWS_JS = """
const t = document.querySelector(arguments[0]);
return [[...t.tHead.rows[0].cells].map(c => c.textContent),
        [...t.tBodies[0].rows].map(r => [...r.querySelectorAll('td[data-col]')]
                                         .map(c => c.textContent))];
"""


def wait(driver: Any, cond: Callable[[], Any], what: str, timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if driver.execute_script("return document.body.dataset.busy") == "0":
                got = cond()
                if got:
                    return got
        except Exception:  # noqa: BLE001 - the DOM may be mid-update; poll again
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def rows_of(driver: Any, selector: str = "#events") -> tuple[list[str], list[list[str]]]:
    head, rows = driver.execute_script(ROWS_JS, selector)
    return head, rows


def expected(vault: SeqVault, user: Any, *, since: int | None = None,
             before: int | None = None, columns: list[str] | None = None,
             start: int = 0, n: int = 50) -> list[list[str]]:
    """Rows `start:start+n` of the newest-first listing, as text, from the embedded read."""
    seq = vault.read(user, since=since, before=before, columns=columns)
    cols = [seq.columns[c][::-1][start:start + n] for c in seq.columns]
    return [[str(v) for v in row] for row in zip(*(c.tolist() for c in cols))]


def look_up(driver: Any, url: str, user: Any) -> None:
    driver.get(url + "/ui")
    box = driver.find_element("id", "user")
    box.clear()
    box.send_keys(str(user))
    driver.find_element("css selector", "#lookup button[type=submit]").click()
    wait(driver, lambda: rows_of(driver)[1], f"user {user}'s events")


def range_of(driver: Any) -> tuple[int | None, int | None, int]:
    d = driver.execute_script("return Object.assign({}, "
                              "document.getElementById('range-label').dataset)")
    return (int(d["since"]) if d.get("since") else None,
            int(d["before"]) if d.get("before") else None, int(d["count"]))


def no_script_errors(driver: Any) -> None:
    errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, errors


# ============================================================ overview
def test_overview_shows_the_store(browser: Any, server_url: str, vault: SeqVault) -> None:
    browser.get(server_url + "/ui")
    stats = vault.stats()
    card = browser.find_element("css selector", "[data-card=users]").text
    assert f"{stats['users']:,} exactly" in card
    names = browser.execute_script(
        "return [...document.querySelectorAll('table.schema tbody tr')].map(r => r.dataset.col)")
    assert names == vault.schema.column_names
    assert "awaiting a flush" in browser.find_element("css selector", "[data-card=backlog]").text
    links = browser.execute_script(
        "return [...document.querySelectorAll('nav a')].map(a => a.getAttribute('href'))")
    assert {"/docs", "/metrics"} <= set(links)
    no_script_errors(browser)


# ============================================================ timeline + table
def test_look_up_zoom_and_page_show_what_vault_read_returns(
        browser: Any, server_url: str, vault: SeqVault, heavy_user: int) -> None:
    look_up(browser, server_url, heavy_user)
    head, rows = rows_of(browser)
    assert head[:2] == ["ts", "time (UTC)"]
    assert rows == expected(vault, heavy_user)
    assert range_of(browser) == (None, None, vault.read(heavy_user).count)
    assert browser.find_element("id", "chart").get_attribute("data-mode") == "bins"

    # Zoom: drag across the middle of the chart.
    from selenium.webdriver.common.action_chains import ActionChains

    hit = browser.find_element("id", "chart-hit")
    width = hit.rect["width"]
    (ActionChains(browser).move_to_element_with_offset(hit, int(-width * 0.25), 0)
     .click_and_hold().move_by_offset(int(width * 0.35), 0).release().perform())
    since, before, count = wait(browser, lambda: range_of(browser)[0] is not None
                                and range_of(browser), "the zoomed range")
    assert since is not None and before is not None and since < before
    assert count == vault.read(heavy_user, since=since, before=before).count > 50
    assert rows_of(browser)[1] == expected(vault, heavy_user, since=since, before=before)
    assert f"since={since}" in browser.current_url and f"before={before}" in browser.current_url

    # Page: older, older, newer.
    for clicks, start in (("older", 50), ("older", 100), ("newer", 50)):
        browser.find_element("id", clicks).click()
        wait(browser, lambda s=start: browser.find_element("id", "page-label")
             .get_attribute("data-page") == str(s // 50), f"page {start // 50}")
        assert rows_of(browser)[1] == expected(vault, heavy_user, since=since, before=before,
                                               start=start)

    # The URL is a deep link to the same view.
    browser.get(browser.current_url)
    wait(browser, lambda: rows_of(browser)[1], "the deep-linked view")
    assert range_of(browser) == (since, before, count)
    assert rows_of(browser)[1] == expected(vault, heavy_user, since=since, before=before)
    no_script_errors(browser)


def test_column_projection(browser: Any, server_url: str, vault: SeqVault,
                           heavy_user: int) -> None:
    look_up(browser, server_url, heavy_user)
    for col in ("item_id", "dwell_ms"):
        browser.find_element("css selector", f"#colpick input[data-col={col}]").click()
        wait(browser, lambda c=col: c not in rows_of(browser)[0], f"{col} to disappear")
    head, rows = rows_of(browser)
    assert head == ["ts", "time (UTC)", "action", "category", "scenario"]
    assert rows == expected(vault, heavy_user, columns=["ts", "action", "category", "scenario"])


def test_int64_ids_above_2_53_are_shown_exactly(browser: Any, server_url: str,
                                                vault: SeqVault) -> None:
    browser.get(f"{server_url}/ui?user={BIG_IDS_USER}")
    wait(browser, lambda: rows_of(browser)[1], "the big-id user's events")
    head, rows = rows_of(browser)
    want = vault.read(BIG_IDS_USER, last=50)["item_id"][::-1]
    assert [r[1] for r in rows] == [str(int(v)) for v in want]
    assert min(int(v) for v in want) > 2**53


def test_colour_by_column_draws_one_lane_per_value(browser: Any, server_url: str,
                                                   vault: SeqVault, heavy_user: int) -> None:
    browser.get(f"{server_url}/ui?user={heavy_user}&color=scenario")
    wait(browser, lambda: rows_of(browser)[1], "the timeline")
    lanes = browser.execute_script(
        "return [...document.querySelectorAll('#legend [data-lane]')].map(e => e.dataset.lane)")
    values, counts = np.unique(vault.read(heavy_user, columns=["scenario"])["scenario"],
                               return_counts=True)
    assert lanes == [str(v) for v in values[np.argsort(-counts, kind="stable")]]


def test_string_keys_that_need_escaping(browser: Any, string_store: Any) -> None:
    from tests.ui.conftest import STRING_USERS, served

    with served(string_store) as url, SeqVault.open(string_store, read_only=True) as v:
        for user in STRING_USERS[1:]:
            look_up(browser, url, user)
            assert rows_of(browser)[1] == expected(v, user)
            assert range_of(browser)[2] == v.read(user).count
    no_script_errors(browser)


# ============================================================ point in time
def test_point_in_time_from_a_row_is_what_laser_reader_gives(
        browser: Any, server_url: str, vault: SeqVault, heavy_user: int) -> None:
    look_up(browser, server_url, heavy_user)
    link = browser.find_elements("css selector", "#events tbody td[data-col=ts] a")[9]
    before = int(link.text)
    link.click()
    summary = wait(browser, lambda: browser.find_elements("id", "pit-summary"), "the PIT view")
    batch = LaserReader(vault, ["ts"], max_len=1000).read_batch([heavy_user], before=before)
    assert int(summary[0].get_attribute("data-length")) == int(batch.lengths[0])
    assert int(summary[0].get_attribute("data-padding")) == 1000 - int(batch.lengths[0])
    _, rows = rows_of(browser, "#pit-table")
    model_ts = batch.values["ts"][0][batch.mask[0]][::-1][:50]
    assert [int(r[0]) for r in rows] == model_ts.tolist()
    no_script_errors(browser)


@pytest.fixture(autouse=True)
def _fresh_logs(request: pytest.FixtureRequest) -> None:
    """Drain the browser console before each test, so each checks only its own errors."""
    if "browser" in request.fixturenames:
        request.getfixturevalue("browser").get_log("browser")
