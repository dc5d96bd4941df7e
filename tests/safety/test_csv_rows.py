"""Finding 6: CSV ingest parses with the store's column types, so a bad value is reported at its
own line and data row (not as a string at row 0 of its block); an empty file and a short row are
clear errors, not pyarrow tracebacks. Nothing is published."""

from __future__ import annotations

from pathlib import Path

import pytest

from seqvault import SeqVault

from .conftest import SCHEMA_PATH, now_ms, one_line_error, seqvault_cli

HEADER = "user_id,ts,item_id,action,category,dwell_ms,scenario"


def _csv(path: Path, n: int, replace: dict[int, str] | None = None) -> Path:
    t0 = now_ms() - 86_400_000
    rows = [f"{i % 97},{t0 + i},{i},click,{i % 900},{i % 5000},feed" for i in range(n)]
    for i, text in (replace or {}).items():
        rows[i] = text
    path.write_text("\n".join([HEADER, *rows]) + "\n")
    return path


def _ingest(tmp_path: Path, csv: Path) -> tuple[int, str]:
    store = tmp_path / "s"
    r = seqvault_cli("ingest", str(csv), "--store", str(store), "--schema", str(SCHEMA_PATH))
    if store.exists():
        with SeqVault.open(store, read_only=True) as v:
            assert v.stats()["events"] == 0  # all or nothing
    return r.returncode, one_line_error(r) if r.returncode else ""


@pytest.mark.parametrize("n, bad", [(100, 51), (250_000, 200_000)])
def test_bad_value_is_reported_at_its_row(tmp_path: Path, n: int, bad: int) -> None:
    csv = _csv(tmp_path / "log.csv", n, {bad: f"3,{now_ms()}x,5,click,3,10,feed"})
    code, msg = _ingest(tmp_path, csv)
    assert code == 3
    assert f"line {bad + 2} (data row {bad})" in msg and "'ts'" in msg and "int64" in msg


def test_value_out_of_the_columns_range_names_its_row(tmp_path: Path) -> None:
    csv = _csv(tmp_path / "log.csv", 300, {120: f"3,{now_ms()},5,click,70000,10,feed"})
    code, msg = _ingest(tmp_path, csv)
    assert code == 3
    assert "data row 120" in msg and "'category'" in msg and "uint16" in msg


def test_old_timestamp_in_a_csv_names_its_row(tmp_path: Path) -> None:
    csv = _csv(tmp_path / "log.csv", 300, {77: "3,1732860000000,5,click,3,10,feed"})
    code, msg = _ingest(tmp_path, csv)
    assert code == 3 and "row 77 of the file" in msg and "max_age" in msg


def test_short_row(tmp_path: Path) -> None:
    csv = _csv(tmp_path / "log.csv", 100, {59: f"3,{now_ms()},5"})
    code, msg = _ingest(tmp_path, csv)
    assert code == 3 and "line 61 (data row 59)" in msg and "expected 7 fields" in msg


def test_empty_csv(tmp_path: Path) -> None:
    csv = tmp_path / "empty.csv"
    csv.write_text("")
    code, msg = _ingest(tmp_path, csv)
    assert code == 3 and "empty" in msg and "header" in msg


def test_header_only_csv_ingests_nothing(tmp_path: Path) -> None:
    csv = tmp_path / "header.csv"
    csv.write_text(HEADER + "\n")
    code, _ = _ingest(tmp_path, csv)
    assert code == 0


def test_bad_value_in_a_gzipped_csv_is_reported_at_its_row(tmp_path: Path) -> None:
    import gzip

    csv = _csv(tmp_path / "log.csv", 400, {333: f"3,{now_ms()},5,click,3,-1,feed"})
    gz = tmp_path / "log.csv.gz"
    gz.write_bytes(gzip.compress(csv.read_bytes()))
    code, msg = _ingest(tmp_path, gz)
    assert code == 3 and "line 335 (data row 333)" in msg and "'dwell_ms'" in msg
