"""The "read p99 during a merge" phase compares like with like (issue 12: "read p99 during a
merge <= 2x the quiet p99"): the quiet reads are the same users' reads on the same data, taken
before the merge starts, not after it on the merged layout. Structure only, no timing asserts."""

from __future__ import annotations

import time
from typing import Any

import pytest

pytest.importorskip("rocksdict")

from bench.scenarios import PRESETS, Runner  # noqa: E402


@pytest.mark.parametrize("mode", ["background", "explicit"])
def test_quiet_reads_see_the_state_the_merge_starts_from(tmp_path, mode):
    runner = Runner("seqvault", PRESETS["tiny"], str(tmp_path / "sv"))
    runner.do("load")
    runner.do("appends:batch:20")
    store = runner.store
    store.merge_mode, store.merge_worker = mode, "thread"
    reads: list[tuple[int, int, int, int]] = []  # (start ns, end ns, commit seq, user)
    started: dict[str, Any] = {}
    read_last, maintenance = store.read_last, store.maintenance

    def traced_read(user: int, n: int) -> Any:
        t = time.perf_counter_ns()
        out = read_last(user, n)
        reads.append((t, time.perf_counter_ns(), store.vault.manifest.seq, user))
        return out

    def traced_maintenance() -> Any:
        work = maintenance()

        def traced_work() -> Any:
            started.update(ns=time.perf_counter_ns(), seq=store.vault.manifest.seq)
            return work()

        return traced_work

    store.read_last, store.maintenance = traced_read, traced_maintenance
    runner.do("merge")
    out = runner.out["merge"]
    assert out.get("error") is None, out
    warm, n_quiet, n_during = runner.cfg.warmup, out["quiet_ops"], out["during_ops"]
    assert n_quiet > 0 and n_during > 0
    quiet = reads[warm:warm + n_quiet]
    during = reads[warm + n_quiet:warm + n_quiet + n_during]
    # Quiet: all before the merge, on exactly the commit the merge starts from.
    assert all(end <= started["ns"] for _s, end, _q, _u in quiet)
    assert {seq for _s, _e, seq, _u in quiet} == {started["seq"]}
    # During: started once the merge had, and the same users in the same order as the quiet.
    assert all(s >= started["ns"] for s, _e, _q, _u in during)
    k = min(n_quiet, n_during)
    assert [u for *_x, u in quiet[:k]] == [u for *_x, u in during[:k]]
    for key in ("quiet_p99_ms", "during_p99_ms", "after_p99_ms", "quiet_tcpu_p99_ms"):
        assert out[key] > 0, key
    runner.store.close()
