"""Finding 5: filesystem faults are one-line messages naming the path, with the documented exit
codes, never tracebacks or a wrong diagnosis:

- a store on a read-only filesystem opens read-only (get, stats, verify, export: exit 0); a
  write there is exit 8 (read-only store), not 5 (corruption);
- a full disk during ingest: exit 1, "disk full", nothing published, no spill files left;
- a directory that cannot be created or written: exit 1, "permission denied", the path.

Real filesystems: a read-only bind mount and a small tmpfs, inside a user + mount namespace
(`unshare -rm`), so the tests need no root and leave nothing mounted."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from seqvault.sample import generate

from .conftest import ROOT, SCHEMA_PATH, make_store, needs_userns, one_line_error, seqvault_cli

pytestmark = needs_userns


def in_namespace(script: str, *, user: bool = False) -> subprocess.CompletedProcess[str]:
    """Run a shell script in a fresh mount namespace (as namespace root; with `user`, as an
    unprivileged user who owns the files, so permission bits apply)."""
    prefix = (["unshare", "-U", "--map-user=1000", "--map-group=1000"] if user
              else ["unshare", "-rm"])
    env_py = f"SEQVAULT_NO_PROGRESS=1 PYTHONPATH={shlex.quote(str(ROOT))} {shlex.quote(sys.executable)}"
    script = script.replace("SEQVAULT", f"{env_py} -m seqvault")
    return subprocess.run([*prefix, "sh", "-c", script], capture_output=True, text=True,
                          timeout=300)


def _last_json(text: str) -> dict:
    return json.loads([ln for ln in text.splitlines() if ln.startswith("{")][-1])


def test_read_only_filesystem_serves_reads_and_refuses_writes(tmp_path: Path) -> None:
    store = make_store(tmp_path / "s", {1: 7, 2: 3})
    q = shlex.quote(str(tmp_path))
    s = shlex.quote(str(store))
    r = in_namespace(
        f"mount --bind {q} {q} && mount -o remount,bind,ro {q} || exit 99\n"
        f"SEQVAULT get 1 --store {s} --json; echo rc-get=$?\n"
        f"SEQVAULT stats --store {s} --json; echo rc-stats=$?\n"
        f"SEQVAULT verify --store {s} --json; echo rc-verify=$?\n"
        f"SEQVAULT export /tmp/ns-export-$$.parquet --store {s}; echo rc-export=$?\n"
        f"echo '{{}}' | SEQVAULT append --store {s}; echo rc-append=$?\n")
    assert "rc-get=0" in r.stdout and "rc-stats=0" in r.stdout, r.stdout + r.stderr
    assert "rc-verify=0" in r.stdout and "rc-export=0" in r.stdout, r.stdout + r.stderr
    assert '"count": 7' in r.stdout and '"ok": true' in r.stdout
    assert "rc-append=8" in r.stdout, r.stdout + r.stderr
    assert "Traceback" not in r.stderr and "corrupt" not in r.stderr.lower()
    assert "read-only filesystem" in r.stderr and str(store) in r.stderr


@pytest.fixture(scope="module")
def log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("log") / "events.parquet"
    generate(path, 400_000)
    return path


@pytest.mark.parametrize("size, spill", [("6m", "none"), ("5m", "zstd"), ("5500k", "zstd")])
def test_full_disk_during_ingest(tmp_path: Path, log: Path, size: str, spill: str) -> None:
    """Sizes that fill the disk in the spill (6m, uncompressed spill), while writing segments
    (5m) and at the metadata commit (5500k), for this seeded 400k-event log: each time one
    line, exit 1, the store as it was, no spill folder left."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    m = shlex.quote(str(mnt))
    r = in_namespace(
        f"mount -t tmpfs -o size={size} tmpfs {m} || exit 99\n"
        f"SEQVAULT init --store {m}/st --schema {shlex.quote(str(SCHEMA_PATH))} || exit 98\n"
        f"SEQVAULT ingest {shlex.quote(str(log))} --store {m}/st --partition-rows 10000 "
        f"--spill-compression {spill}; echo rc-ingest=$?\n"
        f"ls -a {m}/st; echo\n"
        f"SEQVAULT verify --store {m}/st --json; echo rc-verify=$?\n")
    assert "rc-ingest=1" in r.stdout, r.stdout + r.stderr
    err = [ln for ln in r.stderr.splitlines() if ln.startswith("Error")]
    assert len(err) == 1 and "Traceback" not in r.stderr, r.stderr
    assert "disk full" in err[0] or "metadata write failed" in err[0], err[0]
    assert str(mnt / "st") in err[0]
    assert "tmp-ingest-" not in r.stdout  # the spill folder is gone
    report = _last_json(r.stdout)
    assert "rc-verify=0" in r.stdout and report["ok"] and report["users"] == 0


def test_directory_that_cannot_be_created(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    store = make_store(tmp_path / "s", {1: 3})
    target = shlex.quote(str(locked / "store"))
    r = in_namespace(
        f"SEQVAULT init --store {target}; echo rc-init=$?\n"
        f"SEQVAULT export {shlex.quote(str(locked / 'x.parquet'))} --store "
        f"{shlex.quote(str(store))}; echo rc-export=$?\n", user=True)
    assert "rc-init=1" in r.stdout and "rc-export=1" in r.stdout, r.stdout + r.stderr
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("Error")]
    assert len(errors) == 2 and "Traceback" not in r.stderr, r.stderr
    assert all("permission denied" in e for e in errors)
    assert str(locked / "store") in errors[0] and str(locked) in errors[1]


def test_unwritable_store_is_a_permission_error_not_corruption(tmp_path: Path) -> None:
    store = make_store(tmp_path / "s", {1: 3})
    for p in [store, *store.rglob("*")]:
        p.chmod(0o555 if p.is_dir() else 0o444)
    r = in_namespace(f"SEQVAULT stats --store {shlex.quote(str(store))}; echo rc=$?",
                     user=True)
    assert "rc=1" in r.stdout, r.stdout + r.stderr
    line = [ln for ln in r.stderr.splitlines() if ln.startswith("Error")]
    assert len(line) == 1 and "permission denied" in line[0] and "lock.mdb" in line[0]


def test_one_line_helper_sees_tracebacks() -> None:
    """The helper the tests above rely on refuses a traceback."""
    r = seqvault_cli("get", "1", "--store", "/nonexistent/store")
    assert r.returncode == 7
    one_line_error(r)
