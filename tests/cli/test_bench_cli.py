"""`seqvault bench` runs the committed benchmark code (tiny sizes here; no timing asserts)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_seqvault_bench_tiny_writes_a_report(tmp_path):
    out = tmp_path / "res"
    proc = subprocess.run([sys.executable, "-m", "seqvault", "bench", "--tiny", "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = out / "report.md"
    assert report.exists(), sorted(p.name for p in out.iterdir())
    text = report.read_text()
    assert "SeqVault" in text and "RocksDB" in text


def test_seqvault_bench_rejects_full_and_tiny():
    proc = subprocess.run([sys.executable, "-m", "seqvault", "bench", "--tiny", "--full"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "exclude" in proc.stderr
