"""bench/appends.py's disk floor for `sync`: a positive rate, and it leaves no file behind."""

from __future__ import annotations

from bench.appends import sync_floor


def test_sync_floor_measures_rounds_and_cleans_up(tmp_path):
    rate = sync_floor(str(tmp_path), seconds=0.05)
    assert rate > 0
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []
