"""Finding 4: `seqvault export` writes a temporary file and renames it when complete: a failed
export (here: a corrupt extent, exit 5) leaves an existing file of that name untouched and no
temporary file behind. The fast path (dictionary codes, reader processes) exports exactly what
reads return."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from seqvault import SeqVault

from .conftest import make_store, one_line_error, seqvault_cli


def _expected(store: Path) -> list[dict]:
    rows = []
    with SeqVault.open(store, read_only=True) as v:
        for u in sorted(v.users()):
            seq = v.read(u)
            for i in range(len(seq)):
                rows.append({"user_id": u, **{k: seq[k][i].item() for k in seq}})
    return rows


def _rows(path: Path) -> list[dict]:
    t = pq.read_table(path)
    return sorted(t.to_pylist(), key=lambda r: (r["user_id"], r["ts"]))


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_export_is_what_reads_return(tmp_path: Path, jobs: str) -> None:
    store = make_store(tmp_path / "s", {u: 3 + 17 * u for u in range(1, 40)})
    out = tmp_path / "out.parquet"
    r = seqvault_cli("export", str(out), "--store", str(store), "--jobs", jobs, "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    expected = sorted(_expected(store), key=lambda r: (r["user_id"], r["ts"]))
    assert doc["events"] == len(expected) and doc["users"] == 39
    assert _rows(out) == expected
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out")] == []


def test_failed_export_leaves_the_previous_file_untouched(tmp_path: Path) -> None:
    store = make_store(tmp_path / "s", {u: 50 for u in range(1, 30)})
    out = tmp_path / "out.parquet"
    assert seqvault_cli("export", str(out), "--store", str(store)).returncode == 0
    good = out.read_bytes()
    # Damage one extent in the middle of the data file: reading that user fails (exit 5).
    data = next((store / "data").iterdir())
    raw = bytearray(data.read_bytes())
    mid = len(raw) // 2
    raw[mid:mid + 64] = bytes(b ^ 0xFF for b in raw[mid:mid + 64])
    data.write_bytes(bytes(raw))
    r = seqvault_cli("export", str(out), "--store", str(store))
    assert r.returncode == 5, r.stderr
    assert "checksum" in one_line_error(r).lower() or "corrupt" in r.stderr.lower()
    assert out.read_bytes() == good  # the previous export, byte for byte
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.parquet", "s"]  # no temp file


def test_failed_first_export_leaves_no_file(tmp_path: Path) -> None:
    store = make_store(tmp_path / "s", {u: 50 for u in range(1, 30)})
    data = next((store / "data").iterdir())
    raw = bytearray(data.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    data.write_bytes(bytes(raw))
    out = tmp_path / "new.parquet"
    r = seqvault_cli("export", str(out), "--store", str(store))
    assert r.returncode == 5, r.stderr
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["s"]


def test_export_into_a_missing_directory_is_one_line(tmp_path: Path) -> None:
    store = make_store(tmp_path / "s", {1: 5})
    r = seqvault_cli("export", str(tmp_path / "nope" / "out.parquet"), "--store", str(store))
    assert r.returncode == 1
    assert "nope" in one_line_error(r)
