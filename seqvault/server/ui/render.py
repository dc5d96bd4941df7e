"""Server-side HTML for the explorer: the page shell and the store overview fragment.

The overview is rendered here (not in the browser) so that the first paint already shows the
store's numbers, and the page's live refresh swaps in the same fragment from
`/ui/api/overview?format=html`: one renderer for both. Every interpolated value goes through
`html.escape`; data for the script travels as JSON in a `<script type="application/json">`
block with `<` escaped, so no stored string can close a tag.
"""

from __future__ import annotations

import datetime as dt
import json
from html import escape
from string import Template
from typing import Any

from ...schema import Schema
from .assets import PAGE_TEMPLATE, STATIC

_UNITS = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"]


# ============================================================ human units
def human_bytes(n: float | None) -> str:
    if n is None:
        return "–"
    n = float(n)
    for unit in _UNITS:
        if abs(n) < 1024 or unit == _UNITS[-1]:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} {_UNITS[-1]}"  # pragma: no cover - the loop always returns


def human_count(n: float | None) -> str:
    if n is None:
        return "–"
    n = float(n)
    for div, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= div:
            return f"{n / div:.3g}{suffix}"
    return f"{n:.0f}"


def human_seconds(s: float | None) -> str:
    if s is None:
        return "–"
    for div, unit in ((86400 * 365, "y"), (86400, "d"), (3600, "h"), (60, "min")):
        if s >= div:
            return f"{s / div:.3g} {unit}"
    return f"{s:.3g} s"


def _e(value: Any) -> str:
    return escape(str(value), quote=True)


# ============================================================ overview fragment
def _card(title: str, big: str, lines: list[str], key: str) -> str:
    rows = "".join(f"<div class='sub'>{line}</div>" for line in lines)
    return (f"<div class='card' data-card='{_e(key)}'><div class='k'>{_e(title)}</div>"
            f"<div class='v'>{big}</div>{rows}</div>")


def overview_html(doc: dict[str, Any]) -> str:
    s = doc["stats"]
    sch = doc["schema"]
    files = s.get("files", {})
    ret = sch["retention"]
    ret_policy = ", ".join(
        [f"newest {human_count(ret['max_events'])} events" if "max_events" in ret else "",
         f"{human_seconds(ret['max_age'])} max age" if "max_age" in ret else ""]).strip(", ")
    cards = [
        _card("users", f"<span data-stat='users'>{_e(human_count(s.get('users')))}</span>",
              [f"{_e(_exact(s.get('users')))} exactly"], "users"),
        _card("events", f"<span data-stat='events'>{_e(human_count(s.get('events')))}</span>",
              [f"{_e(human_count(s.get('sealed_events')))} sealed in segments",
               f"{_e(human_count(s.get('memtable_events')))} in memory (WAL), "
               f"{_e(human_bytes(s.get('memtable_bytes')))} held"], "events"),
        _card("on disk", _e(human_bytes(s.get("disk_bytes"))),
              [f"{_e(_per(doc.get('bytes_per_event')))} per event "
               f"({_e(_per(doc.get('data_bytes_per_event')))} in segments)",
               f"segments {_e(human_bytes(s.get('data_bytes')))} · WAL "
               f"{_e(human_bytes(s.get('wal_bytes')))} · meta "
               f"{_e(human_bytes(s.get('meta_bytes')))}"], "disk"),
        _card("segments", _e(human_count(s.get("segments"))),
              [f"files: {_e(files.get('lt', 0))} lifetime · {_e(files.get('rt', 0))} real-time",
               f"live {_e(human_bytes(s.get('live_bytes')))} · garbage "
               f"{_e(human_bytes(s.get('garbage_bytes')))}"], "segments"),
        _card("merge backlog", _e(human_count(s.get("merge_backlog_flushes", 0))) +
              " <small>flushes</small>",
              [f"{_e(human_count(s.get('memtable_events')))} events awaiting a flush",
               f"auto-merge {'on' if s.get('auto_merge') else 'off'} · "
               f"{_e(human_count(s.get('merged_events', 0)))} events merged this process"],
              "backlog"),
        _card("retention", _e(human_count(s.get("retention_dropped_events", 0))) +
              " <small>dropped</small>",
              [_e(ret_policy or "keep everything"),
               f"{_e(human_count(s.get('retention_dropped_by_count', 0)))} by count · "
               f"{_e(human_count(s.get('retention_dropped_by_age', 0)))} by age"], "retention"),
        _card("index (DRAM)", _e(human_bytes(s.get("index_bytes"))),
              [f"{_e(_per(s.get('index_bytes_per_user')))} per user"], "index"),
        _card("versions", f"format v{_e(doc['versions']['segment_format'])}",
              [f"schema v{_e(doc['versions']['schema'])} · seqvault "
               f"{_e(doc['versions']['seqvault'])}",
               f"commit {_e(s.get('commit_seq'))} · durability {_e(s.get('durability'))}"],
              "versions"),
    ]
    sample = doc["compression_sample"]
    rows = []
    for col in sch["columns"]:
        comp = col.get("compression") or {}
        ratio = comp.get("ratio")
        bpe = comp.get("bytes_per_event")
        rows.append(
            f"<tr data-col='{_e(col['name'])}'><td>{_e(col['name'])}</td>"
            f"<td>{_e(col['type'])}</td>"
            f"<td>{'' if col['default'] is None else _e(json.dumps(col['default']))}</td>"
            f"<td>v{_e(col['since_version'])}</td>"
            f"<td class='num'>{'–' if ratio is None else f'{ratio:.1f}×'}</td>"
            f"<td class='num'>{'–' if bpe is None else f'{bpe:.2f} B'}</td></tr>")
    history = " → ".join(f"v{_e(h['version'])} ({len(h['columns'])} columns)"
                         for h in sch["history"])
    refreshed = dt.datetime.fromtimestamp(doc["generated_at"], tz=dt.UTC).strftime(
        "%H:%M:%S UTC")
    return (
        f"<div class='cards'>{''.join(cards)}</div>"
        f"<h3>schema v{_e(sch['version'])} <small>user key {_e(sch['user'])} · history "
        f"{history}</small></h3>"
        "<table class='grid schema'><thead><tr><th>column</th><th>type</th><th>default</th>"
        "<th>since</th><th>compression</th><th>stored / event</th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table>"
        f"<p class='note'>Compression: estimated by re-encoding the newest events of "
        f"{_e(sample['users'])} users ({_e(human_count(sample['events']))} events) with the "
        f"segment codec; raw = the column's in-memory width. Refreshed {_e(refreshed)}.</p>")


def _exact(n: int | None) -> str:
    return "–" if n is None else f"{int(n):,}"


def _per(n: float | None) -> str:
    return "–" if n is None else f"{n:.1f} B"


# ============================================================ the page
def page_config(schema: Schema) -> dict[str, Any]:
    """What the script needs to know about the store to build its forms."""
    return {
        "time_column": schema.time_column, "time_unit": schema.time_unit,
        "user_type": schema.user_type, "user_column": schema.user_column,
        "columns": schema.column_names,
        "categorical": [c.name for c in schema.columns
                        if c.is_string or c.type in ("bool", "int8", "uint8", "int16",
                                                      "uint16")],
        "default_color": next((c.name for c in schema.columns if c.is_string), None),
    }


def _script_json(doc: Any) -> str:
    return json.dumps(doc).replace("<", "\\u003c").replace(">", "\\u003e")


def page_html(doc: dict[str, Any], schema: Schema) -> str:
    return Template(PAGE_TEMPLATE).substitute(
        store=_e(doc.get("path") or ""),
        version=_e(doc["versions"]["seqvault"]),
        overview=overview_html(doc),
        config=_script_json(page_config(schema)),
        css_v=STATIC["ui.css"].version,
        js_v=STATIC["ui.js"].version,
        icon_v=STATIC["favicon.svg"].version,
    )


def not_ready_html(detail: str) -> str:
    """The page while the store cannot be opened (missing, or its writer lock is held and
    recovery has not finished): the reason, and a reload every 2 seconds."""
    return ("<!doctype html><html lang='en'><head><meta charset='utf-8'>"
            "<meta http-equiv='refresh' content='2'><title>SeqVault · not ready</title>"
            "<link rel='stylesheet' href='/ui/static/ui.css?v="
            f"{STATIC['ui.css'].version}'></head><body><main><section><h2>Store not ready"
            f"</h2><p class='error'>{_e(detail)}</p><p class='hint'>This page reloads every 2 "
            "seconds; <a href='/readyz'>/readyz</a> says the same.</p></section></main>"
            "</body></html>")
