"""`seqvault model eval --quick` end to end (tiny), and the CLI's lazy torch import."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytest.importorskip("torch")

from click.testing import CliRunner  # noqa: E402

from seqvault.model.cli import model_cli  # noqa: E402


def test_cli_module_does_not_import_torch() -> None:
    code = "import sys, seqvault.model.cli; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_eval_quick_smoke(tmp_path) -> None:
    out = tmp_path / "eval"
    res = CliRunner().invoke(model_cli, [
        "eval", "--quick", "--data", "synthetic", "--models", "base,laser",
        "--seeds", "2", "--users", "150", "--epochs", "1", "--segments", "20",
        "--no-ablations", "--device", "cpu", "--source", "auto", "--threads", "2",
        "--out", str(out),
    ])
    assert res.exit_code == 0, res.output
    r = json.loads((out / "results.json").read_text())
    assert set(r["summary"]) == {"base", "laser", "laser-w20"}
    assert len(r["runs"]) == 6
    assert 0.0 <= r["summary"]["laser"]["auc_mean"] <= 1.0
    assert "bayes" in r
    from seqvault.model.store_adapter import store_available

    if store_available() is None:  # trained on histories read back through laser_reader
        assert r["source"].startswith("store")
    report = (out / "report.md").read_text()
    assert "| LASER |" in report and "Bayes ceiling" in report and "Segment size" in report
    flops = {(f["model"], f["length"]): f["flops_full"] for f in r["flops"]}
    assert flops[("laser", 4000)] > flops[("laser", 1000)]


def test_eval_rejects_unknown_model(tmp_path) -> None:
    res = CliRunner().invoke(model_cli, ["eval", "--quick", "--models", "gpt", "--out",
                                         str(tmp_path)])
    assert res.exit_code != 0 and "unknown model" in res.output


def test_eval_deadline_keeps_tables_of_what_ran(tmp_path) -> None:
    out = tmp_path / "eval"
    res = CliRunner().invoke(model_cli, [
        "eval", "--quick", "--models", "laser", "--users", "100", "--seeds", "2",
        "--no-ablations", "--segments", "", "--source", "arrays", "--device", "cpu",
        "--deadline", "0", "--out", str(out),
    ])
    assert res.exit_code == 0, res.output
    r = json.loads((out / "results.json").read_text())
    assert r["runs"] == [] and r["unfinished"] == ["laser seed 0", "laser seed 1"]
    assert "not run (deadline)" in (out / "report.md").read_text()
