"""The newcomer path: `make demo` prints commands that work as shown, never deletes a store a
process has open, a server whose store was removed is not ready, `stats` speaks human units on a
terminal (raw numbers in --json), and the CLI's JSON names the user `user_id`, as HTTP does."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from seqvault import demo
from seqvault.cli.common import store_in_use

from .conftest import ROOT, make_store, seqvault_cli


@pytest.mark.parametrize("where", ["repo", "elsewhere"])
def test_demo_prints_a_seqvault_command_that_runs(tmp_path: Path, where: str) -> None:
    cwd = ROOT if where == "repo" else tmp_path
    code = ("import os, sys; os.chdir(sys.argv[1]); from seqvault.demo import seqvault_command;"
            " print(seqvault_command())")
    cmd = subprocess.run([sys.executable, "-c", code, str(cwd)], capture_output=True,
                         text=True, env={**os.environ, "PATH": "/usr/bin:/bin"},
                         check=True).stdout.strip()
    # What a user pastes into a shell that does not have the venv on PATH.
    r = subprocess.run(["sh", "-c", f"{cmd} --version"], cwd=cwd, capture_output=True,
                       text=True, env={**os.environ, "PATH": "/usr/bin:/bin"})
    assert r.returncode == 0 and "seqvault" in r.stdout, (cmd, r.stderr)


def test_demo_never_deletes_a_store_in_use(tmp_path: Path) -> None:
    store = make_store(tmp_path / "demo-store", {1: 5})
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from seqvault import SeqVault; "
         "v = SeqVault.open(sys.argv[1], read_only=True); print('open', flush=True); "
         "time.sleep(60)", str(store)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "open"
        assert store_in_use(store) is not None
        with pytest.raises(SystemExit) as info:
            demo.remove_store(store)
        assert str(holder.pid) in str(info.value) or "another process" in str(info.value)
        assert (store / "meta" / "data.mdb").exists()
    finally:
        holder.kill()
        holder.wait()
    assert store_in_use(store) is None
    demo.remove_store(store)
    assert not store.exists()


def test_server_whose_store_was_removed_is_not_ready(tmp_path: Path, serve) -> None:
    pytest.importorskip("uvicorn")

    store = make_store(tmp_path / "s", {1: 5})
    with serve(store) as srv, srv.client() as c:
        assert c.get("/readyz").status_code == 200
        shutil.rmtree(store)
        r = c.get("/readyz")
        assert r.status_code == 503 and "removed" in r.json()["detail"]
        # Re-created under the same name (by another process, as `make demo` would): still
        # not the store this server has open.
        assert seqvault_cli("init", "--store", str(store)).returncode == 0
        assert c.get("/readyz").status_code == 503


def test_stats_in_human_units_on_a_terminal_and_raw_in_json(tmp_path: Path) -> None:
    import pty

    store = make_store(tmp_path / "s", {u: 200 for u in range(50)})
    raw = json.loads(seqvault_cli("stats", "--store", str(store), "--json").stdout)
    assert isinstance(raw["disk_bytes"], int) and raw["events"] == 10_000
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "seqvault", "stats", "--store", str(store)],
                            stdout=slave, stderr=subprocess.DEVNULL,
                            env={**os.environ, "COLUMNS": "200", "PYTHONPATH": str(ROOT)})
    os.close(slave)
    chunks = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            data = os.read(master, 65536)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    proc.wait(timeout=60)
    os.close(master)
    shown = b"".join(chunks).decode(errors="replace")
    assert "KiB" in shown or "MiB" in shown, shown
    assert "10,000" in shown  # events with thousands separators
    assert str(raw["disk_bytes"]) not in shown  # no raw byte counts for people


def test_cli_json_says_user_id_like_http(tmp_path: Path) -> None:
    store = make_store(tmp_path / "s", {42: 3})
    doc = json.loads(seqvault_cli("get", "42", "--store", str(store), "--json").stdout)
    assert doc["user_id"] == 42 and "user" not in doc and doc["count"] == 3
