"""The GPU sweep runner (`sweep.py`), its statistics and its report, run tiny on the CPU."""

from __future__ import annotations

import json
import math

import pytest

pytest.importorskip("torch")

from seqvault.model.metrics import diff_ci, mean_ci, t975  # noqa: E402
from seqvault.model.sweep import (  # noqa: E402
    PREDICTIONS,
    Options,
    Prediction,
    judge,
    plan_jobs,
    run_sweep,
)


def test_t_quantiles_and_intervals() -> None:
    assert t975(2) == pytest.approx(4.303) and t975(1000) == 1.96 and math.isnan(t975(0))
    m, h = mean_ci([1.0, 2.0, 3.0])
    assert m == 2.0 and h == pytest.approx(4.303 / math.sqrt(3))
    d, h = diff_ci([1.0, 2.0, 3.0], [0.0, 1.0, 2.0])
    # equal variances and sizes: Welch's df = 4, se = sqrt(2/3)
    assert d == 1.0 and h == pytest.approx(2.776 * math.sqrt(2 / 3))
    assert math.isnan(mean_ci([1.0])[1])


def _groups(a: list[float], b: list[float]) -> dict:
    return {"g": {"models": {"a": {"aucs": a}, "b": {"aucs": b}}}}


@pytest.mark.parametrize("a,b,sign,thr,verdict", [
    ([0.80, 0.81, 0.80], [0.70, 0.71, 0.70], +1, 0.5, "held"),
    ([0.70, 0.71, 0.70], [0.80, 0.81, 0.80], +1, 0.5, "refuted"),
    ([0.70, 0.75, 0.80], [0.70, 0.72, 0.74], +1, 0.5, "inconclusive"),
    ([0.700, 0.701, 0.700], [0.700, 0.700, 0.701], 0, 0.5, "held"),
    ([0.80, 0.81, 0.80], [0.70, 0.71, 0.70], 0, 0.5, "refuted"),
    ([0.70, 0.71, 0.70], [0.80, 0.81, 0.80], -1, 0.5, "held"),
])
def test_judge_verdicts(a: list[float], b: list[float], sign: int, thr: float,
                        verdict: str) -> None:
    p = Prediction("X", "x", "g", "a", "b", sign, thr)
    (row,) = judge(_groups(a, b), [p])
    assert row["verdict"] == verdict
    assert row["ci95_pt"][0] <= row["delta_pt"] <= row["ci95_pt"][1]
    (row,) = judge(_groups(a, [0.7]), [p])
    assert row["verdict"] == "not run"  # one seed: no interval


def test_predictions_name_groups_and_models_of_the_full_plan() -> None:
    jobs = plan_jobs("full") + plan_jobs("second")
    have = {(j.group, j.model) for j in jobs}
    for p in PREDICTIONS:
        for m in (p.a, p.b):
            model, _, group = m.partition("@")
            assert (group or p.group, model) in have, (p.pid, m)
    with pytest.raises(ValueError, match="unknown plan"):
        plan_jobs("huge")


def test_tiny_sweep_end_to_end_and_report(tmp_path) -> None:
    out = tmp_path / "out"
    r = run_sweep("tiny", out, tmp_path / "work",
                  Options(device="cpu", workers=1, deadline_s=300, threads=1), log=lambda m: None)
    assert len(r["runs"]) == 8 and not r["unfinished"]
    assert set(r["groups"]) == {"count-L100", "burst-s2-L100"}
    assert r["datasets"]["countq-u200"]["bayes_test"]["auc"] > 0.5
    assert all(run["curve"] for run in r["runs"])
    lines = (out / "runs.jsonl").read_text().splitlines()
    assert len(lines) == 8 and json.loads(lines[0])["job"]["group"]
    from seqvault.model.sweep_report import combine, write_report

    c = combine([out / "results.json"])
    text = write_report(c)
    assert "## count-L100" in text and "Pre-registered predictions" in text
    assert c["flops"]["laser"]["4000"] > c["flops"]["laser"]["1000"]
