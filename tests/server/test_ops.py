"""Operations: probes, /metrics, /schema, /stats, OpenAPI (the exported file must match the app),
`seqvault serve` as a real subprocess (several workers; writes with a token file; SIGKILL),
and the demo's serve-and-fetch."""

from __future__ import annotations

import io
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from seqvault import NotFound, Schema, SeqVault

from .helpers import ROOT, TOKEN, events, make_store

if TYPE_CHECKING:
    from .conftest import ServerThread


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_store(tmp_path_factory.mktemp("ops") / "store", {1: 120, 2: 5})


@pytest.fixture(scope="module")
def server(store: Path, serve: Any) -> Iterator[ServerThread]:
    with serve(store) as srv:
        yield srv


def test_probes(server: ServerThread) -> None:
    with server.client() as c:
        assert c.get("/livez").json() == {"status": "alive"}
        ready = c.get("/readyz").json()
        assert ready["status"] == "ready" and ready["read_only"] is True


def test_schema_and_stats_match_the_store(server: ServerThread, store: Path) -> None:
    with server.client() as c, SeqVault.open(store, read_only=True) as v:
        assert c.get("/schema").json() == v.schema.to_dict()
        stats = c.get("/stats").json()
        assert stats["users"] == 2 and stats["events"] == 125
        assert stats["server"]["writes"] is False and stats["server"]["pid"] == os.getpid()


def _sample(text: str, name: str, **labels: str) -> float:
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} {labels} not in /metrics")


def test_metrics_count_requests_latency_lengths_and_bytes(server: ServerThread) -> None:
    ep = "/users/{user_id}/sequence"
    with server.client(headers={"Accept-Encoding": "identity"}) as c:
        before = c.get("/metrics").text
        n0 = _sample(before, "seqvault_http_requests_total", endpoint=ep, status="200") \
            if 'status="200"' in before and ep in before else 0.0
        sizes = 0
        for last in (1, 10, 100):
            resp = c.get("/users/1/sequence", params={"last": last},
                         headers={"Accept": "application/vnd.msgpack"})
            sizes += len(resp.content)
        assert c.get("/users/1/sequence?last=0").status_code == 422
        text = c.get("/metrics").text
    assert text.startswith("# HELP") or "# HELP" in text
    assert _sample(text, "seqvault_http_requests_total", endpoint=ep, status="200") == n0 + 3
    assert _sample(text, "seqvault_http_requests_total", endpoint=ep, status="422") >= 1
    assert _sample(text, "seqvault_http_request_duration_seconds_count", endpoint=ep) >= 4
    assert _sample(text, "seqvault_http_response_bytes_total", endpoint=ep) >= sizes
    lengths = "seqvault_http_sequence_events_bucket"
    assert _sample(text, lengths, endpoint=ep, format="msgpack", le="1.0") == 1
    assert _sample(text, lengths, endpoint=ep, format="msgpack", le="10.0") == 2
    assert _sample(text, lengths, endpoint=ep, format="msgpack", le="100.0") == 3
    names = set(re.findall(r"^# TYPE (\S+) (\S+)", text, re.M))
    for name, kind in names:
        if name.startswith("seqvault_http") and kind == "counter":
            assert name.endswith("_total") or name + "_total" in text
        if name.startswith("seqvault_http") and kind == "histogram":
            assert name.endswith(("_seconds", "_events"))


def test_openapi_file_matches_the_app(server: ServerThread) -> None:
    from seqvault.server.openapi import DEFAULT_OUT, render

    committed = (ROOT / "http" / "openapi.json").read_text()
    assert DEFAULT_OUT == ROOT / "http" / "openapi.json"
    assert render() == committed, "run: python -m seqvault.server.openapi"
    from seqvault.server.contract import specialise

    with server.client() as c:
        # served: the committed document specialised to the open store (contract.py)
        schema = Schema.from_dict(c.get("/schema").json())
        assert c.get("/openapi.json").json() == specialise(json.loads(committed), schema)
        docs = c.get("/docs")
        assert docs.status_code == 200 and "swagger" in docs.text.lower()
    doc = json.loads(committed)
    for path in ("/users/{user_id}/sequence", "/sequences:batchGet", "/users/{user_id}/events",
                 "/events:batchAppend", "/livez", "/readyz", "/metrics", "/schema", "/stats"):
        assert path in doc["paths"], path
    content = doc["paths"]["/users/{user_id}/sequence"]["get"]["responses"]["200"]["content"]
    assert set(content) == {"application/json", "application/vnd.msgpack",
                            "application/vnd.apache.arrow.stream"}


def test_openapi_check_command_detects_a_stale_file(tmp_path: Path) -> None:
    from seqvault.server.openapi import main

    stale = tmp_path / "openapi.json"
    stale.write_text("{}\n")
    assert main(["--out", str(stale), "--check"]) == 1
    assert main(["--out", str(stale)]) == 0
    assert main(["--out", str(stale), "--check"]) == 0
    assert stale.read_text() == (ROOT / "http" / "openapi.json").read_text()


def test_help_does_not_import_fastapi() -> None:
    out = subprocess.run([sys.executable, "-X", "importtime", "-m", "seqvault", "--help"],
                         env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True,
                         text=True, check=True)
    assert "serve" in out.stdout
    imported = {line.rsplit("|", 1)[-1].strip() for line in out.stderr.splitlines()}
    assert not any(m.split(".")[0] in ("fastapi", "uvicorn", "starlette") for m in imported)


# ------------------------------------------------------------------ `seqvault serve`
def test_serve_with_two_workers_sees_new_writes(tmp_path: Path, serve_subprocess: Any) -> None:
    store = make_store(tmp_path / "s", {1: 10})
    proc, url, sock = serve_subprocess(store, "--workers", "2")
    try:
        pids: set[int] = set()
        for _ in range(200):  # a fresh connection each time: the kernel spreads accepts
            with httpx.Client(base_url=url, timeout=10) as c:
                pids.add(c.get("/stats").json()["server"]["pid"])
            if len(pids) == 2:
                break
        assert len(pids) == 2, "the second worker never answered"
        with SeqVault.open(store) as writer:
            writer.append(1, events(7, seed=3))
        # every worker must see the new events (within refresh_interval, 50 ms)
        seen: dict[int, int] = {}
        deadline = time.monotonic() + 20
        while len([p for p, n in seen.items() if n == 17]) < 2:
            assert time.monotonic() < deadline, seen
            with httpx.Client(base_url=url, timeout=10) as c:
                pid = c.get("/stats").json()["server"]["pid"]
                seen[pid] = c.get("/users/1/sequence").json()["count"]
        metrics = httpx.get(url + "/metrics", timeout=10).text
        assert "seqvault_http_requests_total" in metrics
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        sock.close()
    assert proc.returncode == 0


def test_serve_allow_writes_with_token_file_then_sigkill(tmp_path: Path,
                                                         serve_subprocess: Any) -> None:
    store = make_store(tmp_path / "s", {1: 4})
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    proc, url, sock = serve_subprocess(store, "--allow-writes", "--token-file", str(token_file))
    acked = 0
    try:
        with httpx.Client(base_url=url, timeout=10) as c:
            ev = events(50, seed=4)
            assert c.post("/users/8/events", json={"columns": {k: v[:5].tolist() for k, v in
                                                               ev.items()}}).status_code == 401
            for i in range(10):
                part = {k: v[i * 5:(i + 1) * 5].tolist() for k, v in ev.items()}
                resp = c.post("/users/8/events", json={"columns": part},
                              headers={"Authorization": f"Bearer {TOKEN}"})
                assert resp.status_code == 200, resp.text
                acked += 5
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        sock.close()
    with SeqVault.open(store) as v:  # every acknowledged append survives the kill
        seq = v.read(8)
        assert len(seq) == acked == 50
        assert seq["ts"].tolist() == ev["ts"].tolist()


@pytest.mark.parametrize("args,message", [
    (["--allow-writes"], "--token-file"),
    (["--allow-writes", "--token-file", "TOKEN", "--workers", "2"], "one worker"),
    (["--allow-writes", "--token-file", "EMPTY"], "empty"),
])
def test_serve_usage_errors(tmp_path: Path, args: list[str], message: str) -> None:
    from click.testing import CliRunner

    from seqvault.cli.serve import serve as serve_cmd

    store = make_store(tmp_path / "s", {1: 1})
    token_file, empty = tmp_path / "token", tmp_path / "empty"
    token_file.write_text(TOKEN)
    empty.write_text("\n")
    args = [{"TOKEN": str(token_file), "EMPTY": str(empty)}.get(a, a) for a in args]
    result = CliRunner().invoke(serve_cmd, ["--store", str(store), *args])
    assert result.exit_code == 2 and message in result.output


def test_serve_refuses_a_path_that_is_not_a_store(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from seqvault.cli.serve import serve as serve_cmd

    result = CliRunner().invoke(serve_cmd, ["--store", str(tmp_path / "nothing")])
    assert isinstance(result.exception, NotFound) and result.exception.exit_code == 7
    assert "not a SeqVault store" in str(result.exception)


def test_demo_serve_and_fetch(tmp_path: Path) -> None:
    from seqvault.server.demo import serve_and_fetch

    store = make_store(tmp_path / "s", {42: 30})
    buf = io.StringIO()
    doc = serve_and_fetch(store, last=4, out=buf)
    with SeqVault.open(store, read_only=True) as v:
        want = v.read(42, last=4)
    assert doc["user_id"] == 42 and doc["count"] == 4
    assert doc["columns"]["ts"] == want["ts"].tolist()
    text = buf.getvalue()
    assert "200 application/json, 4 events" in text and str(want["item_id"][0]) in text
