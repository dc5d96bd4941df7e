"""The background merger of `SeqVault.open(..., auto_merge=True)`: merge passes driven by a
daemon thread, their heavy part in the merge process (`merge_worker = "process"`, at CPU
niceness `merge_nice`) or in this thread at lowered priority (`"thread"`), paced by
`merge_duty`; appends wait while merge is far behind; a merge process that dies or fails is
reported and retried after a back-off (docs/design/merge.md, "Background merge")."""

from __future__ import annotations

import threading
import time
from typing import Any

from .engine import Engine
from .errors import MergeFailed, StoreClosed
from .merge import Merger, lower_thread_priority
from .reclaim import live_bytes

BACKOFF_MAX_S = 60.0  # longest wait before retrying after the merge process failed


class BackgroundMerger(threading.Thread):
    """`SeqVault.open(..., auto_merge=True)`: merge passes in a daemon thread, paced by
    `merge_duty`, started when `merge_trigger_flushes` flushes are unmerged; appends wait
    (`throttle`) while `merge_backpressure_flushes` or more are unmerged."""

    def __init__(self, engine: Engine, merger: Merger) -> None:
        super().__init__(name=f"seqvault-merge-{engine.path.name}", daemon=True)
        self.engine = engine
        self.merger = merger
        self.stop_event = threading.Event()
        self.wake = threading.Event()
        self.error: BaseException | None = None
        self.passes = 0
        self.failures = 0  # consecutive merge-process failures (reset by a good pass)
        self._idle_seq = -1

    def setting(self, name: str) -> Any:
        return self.engine.manifest.settings[name]

    def run(self) -> None:
        m = self.merger
        interval = float(self.setting("merge_interval"))
        if self.setting("merge_worker") == "thread":
            # The heavy part runs in this thread: lower its priority. With the merge process
            # this thread only plans and publishes under the store lock, and must not be
            # descheduled while it holds it (appends would wait behind a niced thread).
            lower_thread_priority(int(self.setting("merge_nice")))
        while not self.stop_event.is_set():
            self.wake.wait(interval)
            self.wake.clear()
            if self.stop_event.is_set():
                break
            try:
                behind = m.backlog()
                if behind < int(self.setting("merge_trigger_flushes")):
                    self._idle_compaction()
                    continue
                hard = behind >= int(self.setting("merge_backpressure_flushes"))
                duty = 1.0 if hard else float(self.setting("merge_duty"))
                m.run(stop=self.stop_event, duty=duty, **self._how())
                self.passes += 1
                self.failures = 0
            except StoreClosed:
                break
            except MergeFailed as exc:  # the merge process died or failed: retry, backed off
                self._failed(exc)
            except OSError as exc:  # e.g. ENOSPC writing the merge output: retry, backed off
                self._failed(exc)
            except BaseException as exc:  # keep the error for stats/close; stop merging
                self.error = exc
                break
            finally:
                with m.progress:
                    m.progress.notify_all()

    def _how(self) -> dict[str, Any]:
        return {"worker": str(self.setting("merge_worker")),
                "nice": int(self.setting("merge_nice"))}

    def _failed(self, exc: BaseException) -> None:
        """Count and show the failure, then wait merge_interval x 2^k (at most a minute)
        before the next attempt, so a process that keeps dying never spins."""
        self.failures += 1
        self.merger.totals["merge_process_failures"] += 1
        self.merger.last_failure = repr(exc)
        wait = min(BACKOFF_MAX_S, float(self.setting("merge_interval")) * 2 ** self.failures)
        self.stop_event.wait(wait)

    def _idle_compaction(self) -> None:
        """Nothing to merge: if garbage exceeds 1 − idle_reclaim_ratio of the data, reclaim
        files below that ratio (once per change of the store: no loop when it cannot help)."""
        v = self.engine
        ratio = float(self.setting("idle_reclaim_ratio"))
        with v.lock:
            m = v.manifest
            if m.seq == self._idle_seq:
                return
            data = sum(info.size for info in m.catalog.values())
            live = sum(live_bytes(m.index).values())
        if data and (data - live) / data > 1.0 - ratio:
            self.merger.run(stop=self.stop_event, duty=float(self.setting("merge_duty")),
                            reclaim_ratio=ratio, **self._how())
        with v.lock:
            self._idle_seq = v.manifest.seq

    def throttle(self) -> None:
        """Called by appends (outside the store lock): wait while merge is far behind."""
        m = self.merger
        limit = int(self.setting("merge_backpressure_flushes"))
        if m.backlog() < limit or not self.is_alive():
            return
        self.wake.set()
        deadline = time.monotonic() + float(self.setting("merge_backpressure_wait"))
        with m.progress:
            while (m.backlog() >= max(1, limit // 2) and self.is_alive()
                   and not self.stop_event.is_set()):
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                m.progress.wait(min(left, 0.1))

    def wait_merged(self, timeout: float | None = None) -> bool:
        """Wait until a completed pass has merged every flush made so far (True), or until
        `timeout` seconds passed or the merger stopped (False)."""
        m = self.merger
        target = self.engine.flush_count
        self.wake.set()
        deadline = None if timeout is None else time.monotonic() + timeout
        with m.progress:
            while m.merged_through_flush < target:
                if not self.is_alive() or self.stop_event.is_set():
                    return False
                left = 0.1 if deadline is None else deadline - time.monotonic()
                if left <= 0:
                    return False
                m.progress.wait(min(left, 0.1))
        return True

    def stop(self) -> None:
        self.stop_event.set()
        self.wake.set()
        if self.is_alive() and threading.current_thread() is not self:
            self.join()
