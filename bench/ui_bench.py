"""The store explorer page (/ui) for a 100k-event user: requests, bytes, time to first paint.

    python -m bench.ui_bench                                  # prints a Markdown table
    python -m bench.ui_bench --json-out bench/results/ui_page.json --screenshots docs/ui

What it does:

1. builds a demo-like store in a temp dir: seqvault.sample's heavy-tailed log (--events) plus
   one "power user" with --user-events events spread over 300 days (daily rhythm, sessions,
   the sample's action and scenario mix), loaded with `seqvault ingest`;
2. starts `seqvault serve` (one worker, read-only) on 127.0.0.1;
3. loads `/ui?user=<power user>` in headless Chromium --loads times, the browser cache
   disabled (every load fetches every asset), and reads the browser's own Resource Timing and
   Paint Timing entries: the number of requests, bytes on the wire (transferSize: headers +
   gzipped bodies) and decoded, first paint / first contentful paint, and the page's marks for
   "timeline drawn" and "events table drawn";
4. then, in the last load, measures one zoom (the chart's middle third) and one "older" page:
   the requests and bytes each costs;
5. optionally saves screenshots of the overview, the timeline and the point-in-time view.

The first load also pays the server's first compression sample (see docs/design/ui.md), so it
is reported apart from the median of the others. The figures in docs/design/ui.md come from
this script.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.serve_proc import start_serve

REPO = Path(__file__).resolve().parent.parent
SCHEMA = REPO / "schema" / "behavior.toml"
DAY_MS = 86_400_000
POWER_USER = 10**12 + 7

COLLECT_JS = """
const nav = performance.getEntriesByType('navigation')[0];
const res = performance.getEntriesByType('resource');
const paint = Object.fromEntries(performance.getEntriesByType('paint').map(p => [p.name, p.startTime]));
const mark = n => { const m = performance.getEntriesByName(n); return m.length ? m[m.length-1].startTime : null; };
return {
  requests: [nav, ...res].map(e => ({name: e.name, transfer: e.transferSize, encoded: e.encodedBodySize,
                                     decoded: e.decodedBodySize, start: e.startTime, end: e.responseEnd})),
  first_paint: paint['first-paint'] ?? null, first_contentful_paint: paint['first-contentful-paint'] ?? null,
  dom_content_loaded: nav.domContentLoadedEventEnd, load: nav.loadEventEnd,
  timeline_drawn: mark('sv:timeline-drawn'), events_drawn: mark('sv:events-drawn'),
};
"""


def power_user_log(path: Path, n: int, now_ms: int, seed: int = 11) -> None:
    """`n` events of one user over 300 days: sessions in the user's waking hours, bursts of
    equal timestamps (a feed page), the sample log's action and scenario mix."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from seqvault.sample import ACTION_P, ACTIONS, SCENARIO_P, SCENARIOS, arrow_schema

    rng = np.random.default_rng(seed)
    n_sessions = max(1, n // 40)
    day = rng.integers(0, 300, n_sessions)
    hour = rng.choice(24, n_sessions, p=np.array(
        [1, 1, 1, 1, 1, 1, 2, 4, 6, 5, 4, 4, 5, 4, 4, 4, 5, 6, 8, 10, 11, 10, 7, 3],
        dtype=float) / 108)
    starts = now_ms - 300 * DAY_MS + day * DAY_MS + hour * 3_600_000 + rng.integers(
        0, 3_600_000, n_sessions)
    which = rng.integers(0, n_sessions, n)
    offsets = rng.integers(0, 1_200, n) * 1_000  # within 20 minutes
    ts = np.sort(starts[which] + offsets)
    ts[rng.integers(0, n, n // 5)] = ts[rng.integers(0, n, n // 5)]  # feed-page bursts
    ts.sort()
    action = rng.choice(len(ACTIONS), n, p=ACTION_P)
    opened = action != 0
    table = pa.table({
        "user_id": pa.array(np.full(n, POWER_USER, dtype=np.int64)),
        "ts": pa.array(ts.astype(np.int64)),
        "item_id": pa.array((rng.zipf(1.3, n) % 5_000_000).astype(np.int64)),
        "action": pa.array(np.array(ACTIONS, dtype=object)[action]),
        "category": pa.array(rng.integers(0, 997, n).astype(np.uint16)),
        "dwell_ms": pa.array(np.where(opened, rng.exponential(20_000, n), 0).astype(np.uint32)),
        "scenario": pa.array(np.array(SCENARIOS, dtype=object)[
            rng.choice(len(SCENARIOS), n, p=SCENARIO_P)]),
    }, schema=arrow_schema())
    pq.write_table(table, path, compression="zstd")


def build_store(root: Path, events: int, user_events: int) -> Path:
    from seqvault.sample import generate

    now_ms = int(time.time() * 1000)
    logs = root / "logs"
    logs.mkdir()
    generate(logs / "sample.parquet", events, now_ms=now_ms)
    power_user_log(logs / "power.parquet", user_events, now_ms)
    store = root / "store"
    subprocess.run([sys.executable, "-m", "seqvault", "ingest", str(logs), "--store",
                    str(store), "--schema", str(SCHEMA)], check=True, capture_output=True,
                   env={**os.environ, "PYTHONPATH": str(REPO)})
    return store


def start_server(store: Path) -> tuple[subprocess.Popen[bytes], str]:
    return start_serve(store, backlog=128)


def chrome(width: int = 1280, height: int = 1000) -> Any:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                f"--window-size={width},{height}", "--hide-scrollbars"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver") or
                                              "/usr/bin/chromedriver"), options=opts)
    driver.execute_cdp_cmd("Network.enable", {})
    driver.execute_cdp_cmd("Network.setCacheDisabled", {"cacheDisabled": True})
    return driver


def wait_idle(driver: Any, cond: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if driver.execute_script(f"return document.body.dataset.busy === '0' && ({cond})"):
            return
        time.sleep(0.02)
    raise TimeoutError(cond)


def summarize(entries: list[dict[str, Any]]) -> dict[str, Any]:
    return {"count": len(entries), "transfer_bytes": sum(e["transfer"] for e in entries),
            "decoded_bytes": sum(e["decoded"] for e in entries),
            "by_request": [{"path": e["name"].split("/", 3)[-1].split("?")[0] or "ui",
                            "transfer": e["transfer"], "decoded": e["decoded"]}
                           for e in entries]}


def measure(url: str, loads: int, shots: Path | None, pit_before: int) -> dict[str, Any]:
    driver = chrome()
    try:
        runs = []
        for _ in range(loads):
            driver.get("about:blank")
            driver.get(f"{url}/ui?user={POWER_USER}")
            wait_idle(driver, "document.querySelector('#events tbody tr') && "
                      "performance.getEntriesByName('sv:timeline-drawn').length")
            doc = driver.execute_script(COLLECT_JS)
            doc.update(summarize(doc.pop("requests")))
            runs.append(doc)
        # One zoom and one page of the last load: what each interaction costs.
        before_n = driver.execute_script("return performance.getEntriesByType('resource').length")
        from selenium.webdriver.common.action_chains import ActionChains

        hit = driver.find_element("id", "chart-hit")
        w = hit.rect["width"]
        (ActionChains(driver).move_to_element_with_offset(hit, int(-w / 6), 0).click_and_hold()
         .move_by_offset(int(w / 3), 0).release().perform())
        wait_idle(driver, "document.getElementById('range-label').dataset.since")
        entries = driver.execute_script(
            "return performance.getEntriesByType('resource').slice(arguments[0]).map(e => "
            "({name: e.name, transfer: e.transferSize, decoded: e.decodedBodySize}))", before_n)
        zoom = summarize(entries)
        zoom["events_in_range"] = int(driver.execute_script(
            "return document.getElementById('range-label').dataset.count"))
        before_n += len(entries)
        driver.find_element("id", "older").click()
        wait_idle(driver, "document.getElementById('page-label').dataset.page === '1'")
        entries = driver.execute_script(
            "return performance.getEntriesByType('resource').slice(arguments[0]).map(e => "
            "({name: e.name, transfer: e.transferSize, decoded: e.decodedBodySize}))", before_n)
        page = summarize(entries)
        if shots is not None:
            screenshots(driver, url, shots, pit_before)
        return {"loads": runs, "zoom": zoom, "older_page": page}
    finally:
        driver.quit()


def screenshots(driver: Any, url: str, out: Path, pit_before: int) -> None:
    out.mkdir(parents=True, exist_ok=True)
    driver.set_window_size(1280, 1000)
    driver.get(f"{url}/ui?user={POWER_USER}")
    wait_idle(driver, "document.querySelector('#events tbody tr')")
    driver.find_element("id", "overview-section").screenshot(str(out / "overview.png"))
    driver.set_window_size(1280, 1500)
    driver.find_element("id", "user-section").screenshot(str(out / "timeline.png"))
    # point in time: early in the history, so that the model's window has padding
    box = driver.find_element("id", "pit-before")
    box.clear()
    box.send_keys(str(pit_before))
    driver.find_element("css selector", "#pit-form button[type=submit]").click()
    wait_idle(driver, "document.getElementById('pit-summary')")
    driver.set_window_size(1280, 3200)  # an element screenshot is clipped to the window
    driver.execute_script("document.getElementById('pit-section').scrollIntoView()")
    driver.find_element("id", "pit-section").screenshot(str(out / "point-in-time.png"))


def server_times(store: Path, repeat: int = 7) -> dict[str, float]:
    """Median milliseconds of each view computed in-process (what the server spends on a
    request before encoding), for the power user."""
    from seqvault import SeqVault
    from seqvault.server.ui import views

    out: dict[str, float] = {}
    with SeqVault.open(store, read_only=True) as v:
        sampler = views.CompressionSampler()
        whole = views.Range(None, None)
        t0 = time.perf_counter()
        views.overview(v, sampler)
        out["overview (first: compression sample)"] = (time.perf_counter() - t0) * 1e3
        cases = {
            "overview (cached sample)": lambda: views.overview(v, sampler),
            "timeline, whole history, colour by action": lambda: views.timeline(
                v, POWER_USER, whole, "action"),
            "events, first page of 50": lambda: views.events_page(
                v, POWER_USER, whole, None, 50, None),
            "point in time, max_len 1000": lambda: views.point_in_time(
                v, POWER_USER, 1 << 62, 1000, None),
        }
        for name, fn in cases.items():
            fn()  # warm: page cache, lazy imports
            times = []
            for _ in range(repeat):
                t0 = time.perf_counter()
                fn()
                times.append((time.perf_counter() - t0) * 1e3)
            out[name] = statistics.median(times)
    return out


def report(result: dict[str, Any]) -> str:
    loads = result["loads"]
    rest = loads[1:] or loads

    def med(key: str) -> float:
        return statistics.median(r[key] for r in rest)

    first = loads[0]
    lines = [
        f"Power user: {result['user_events']:,} events; store: {result['store_events']:,} events "
        f"of {result['store_users']:,} users. {len(loads)} cold loads (browser cache off).",
        "",
        "| load | requests | on the wire | decoded | first paint | first contentful paint "
        "| timeline drawn | events table drawn |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, r in (("first (server cold)", first),
                    (f"median of {len(rest)} more", {k: med(k) for k in (
                        "count", "transfer_bytes", "decoded_bytes", "first_paint",
                        "first_contentful_paint", "timeline_drawn", "events_drawn")})):
        lines.append(f"| {name} | {r['count']:.0f} | {r['transfer_bytes'] / 1024:.1f} KiB | "
                     f"{r['decoded_bytes'] / 1024:.1f} KiB | {r['first_paint']:.0f} ms | "
                     f"{r['first_contentful_paint']:.0f} ms | {r['timeline_drawn']:.0f} ms | "
                     f"{r['events_drawn']:.0f} ms |")
    lines += ["", "Requests of one load (bytes on the wire / decoded):", ""]
    for e in loads[-1]["by_request"]:
        lines.append(f"- `{e['path']}`: {e['transfer']:,} / {e['decoded']:,} B")
    z, p = result["zoom"], result["older_page"]
    lines += ["", f"Zoom to the middle third ({z['events_in_range']:,} events in range): "
              f"{z['count']} requests, {z['transfer_bytes']:,} B on the wire. "
              f"Next page: {p['count']} request, {p['transfer_bytes']:,} B."]
    lines += ["", "Server time per view, in-process (median ms):", ""]
    for name, ms in result["server_ms"].items():
        lines.append(f"- {name}: {ms:.1f} ms")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--events", type=int, default=300_000, help="sample log size")
    ap.add_argument("--user-events", type=int, default=100_000)
    ap.add_argument("--loads", type=int, default=6)
    ap.add_argument("--json-out", type=Path)
    ap.add_argument("--screenshots", type=Path, help="folder for PNG screenshots")
    args = ap.parse_args()
    from seqvault import SeqVault

    with tempfile.TemporaryDirectory(prefix="ui-bench-") as tmp:
        store = build_store(Path(tmp), args.events, args.user_events)
        with SeqVault.open(store, read_only=True) as v:
            stats = v.stats()
            ts = v.read(POWER_USER, columns=["ts"])["ts"]
            n_user = int(ts.size)
            pit_before = int(ts[min(600, ts.size - 1)])  # 600 events before: 400 padding
        server_ms = server_times(store)
        proc, url = start_server(store)
        try:
            result = measure(url, args.loads, args.screenshots, pit_before)
        finally:
            proc.terminate()
            proc.wait(timeout=15)
    result.update(server_ms=server_ms, user_events=n_user, store_events=stats["events"], store_users=stats["users"])
    text = report(result)
    print(text)
    if args.json_out:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
