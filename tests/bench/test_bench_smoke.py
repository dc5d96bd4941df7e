"""Smoke test of the benchmark harness (issue 6): tiny sizes, seconds, no timing asserts.

It runs ``python -m bench.run --tiny`` end to end, so the generator, both RocksDB baselines,
the SeqVault adapter, the report and the plots cannot rot unnoticed. It checks structure and
correctness (every system returned the reference answers), never speed.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("rocksdict")
pytest.importorskip("matplotlib")

from bench import workload as wl  # noqa: E402
from bench.report import HAND_WRITTEN_MARKER, ISSUE_ROWS, targets  # noqa: E402
from bench.report import main as report_main  # noqa: E402
from bench.run import SYSTEMS, run_all  # noqa: E402


def test_generator_is_deterministic_and_has_the_promised_shapes():
    cfg = wl.WorkloadConfig(n_users=50)
    a = wl.user_history(cfg, 42, 5_000)
    b = wl.user_history(cfg, 42, 5_000)
    assert all(np.array_equal(a[c], b[c]) for c in wl.EVENT_COLUMNS)
    assert {c: v.dtype for c, v in a.items()} == wl.COLUMN_DTYPES
    ts = a["ts"]
    assert (np.diff(ts) < 0).any(), "late events: arrival order is not time order"
    assert (np.diff(np.sort(ts)) == 0).any(), "equal-timestamp bursts"
    _, lengths = wl.population_users(cfg)
    assert lengths.min() >= 1 and lengths.max() <= cfg.max_len
    last = wl.expected_last(a, 10)
    assert len(last["ts"]) == 10 and (np.diff(last["ts"]) >= 0).all()


def test_tiny_run_writes_a_report_with_every_system(tmp_path):
    out = tmp_path / "results"
    publish = tmp_path / "docs" / "benchmarks.md"
    publish.parent.mkdir()
    publish.write_text("old\n" + HAND_WRITTEN_MARKER + "\nnotes by hand\n")
    results = run_all("tiny", out, SYSTEMS, data_dir=str(tmp_path), publish=publish,
                      log=lambda _m: None)
    assert results["skipped"] == {}, results["skipped"]
    saved = json.loads((out / "results.json").read_text())
    for system in SYSTEMS:
        r = saved["systems"][system]
        assert r["verify"]["n_mismatches"] == 0, r["verify"]["mismatches"]
        assert r["load"]["events"] > 0 and r["load"]["disk_bytes_per_event"] > 0
        assert {x["last"] for x in r["reads"]} == {100, 1_000}
        assert r["sweep"] and r["appends"] and r["mix"]["ops"] > 0
        for row in r["reads"] + r["sweep"] + r["appends"]:
            assert row["ops"] > 0 and row["p50_ms"] <= row["max_ms"]
        hot = r["hot_mix"]
        assert hot["ops"] > 0 and hot["hot_events_appended"] > 0
        assert hot["hot_read_p50_ms"] <= hot["hot_read_max_ms"]
        bl = r["batch_load"]
        assert bl["events"] == bl["users"] * bl["events_per_user"] and bl["cpu_seconds"] > 0
        assert bl["mismatches"] == 0, "many-user batch load reads back what was written"
        assert r["clean_load"]["events"] == r["after_appends"]["events"] > r["load"]["events"]
        assert {"load", "hotmix", "batchload"} <= set(r.get("step_peak_rss_bytes", {}))
    report = (out / "report.md").read_text()
    assert "## Targets" in report and "SeqVault" in report
    # Every row of issue 12's targets table is in the report, measured or "not measured".
    for row in ISSUE_ROWS:
        assert row in report, row
    tg = targets(saved)
    assert {t["group"] for t in tg} == set(ISSUE_ROWS)
    assert all(t["met"] is not None for t in tg if "mix" in t["target"]), "mixes are measured"
    for section in ("## The same mix with one hot user", "## Many-user batch load",
                    "## Disk after the append workloads", "## Memory", "Run-to-run spread"):
        assert section in report, section
    for png in ("latency_vs_history.png", "bytes_per_event.png", "append_throughput.png",
                "mixes.png"):
        assert (out / png).stat().st_size > 0
    # Re-rendering with an earlier run (here: itself) adds the run-to-run spread table.
    assert report_main([str(out / "results.json"), "--compare", str(out / "results.json")]) == 0
    assert "Median spread 1.00×" in (out / "report.md").read_text()
    published = publish.read_text()
    assert published.endswith("\nnotes by hand\n"), "hand-written part survives a regeneration"
    assert "](../results/latency_vs_history.png)" in published
