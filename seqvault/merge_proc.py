"""The merge process (`merge_worker = "process"`): the heavy part of every merge batch —
reading and verifying source segments, merging, encoding, zstd, writing and fsyncing the new
lifetime file — runs in a child process, so it never holds the writer's GIL; the writer only
plans and publishes (docs/design/merge.md, "The merge process").

The child is `python -m seqvault.merge_child` started with `subprocess` (fork + exec: the
writer has threads, so a plain fork is unsafe; multiprocessing's "spawn" would re-import the
caller's `__main__`, which re-runs an unguarded user script). It talks over two pipes with
`multiprocessing.connection` framing: the parent sends a `MergeJob`, the child answers
("ok", JobResult) or ("error", description). It is started at the first job and kept for the
next ones; `close()` stops it. A watchdog thread in the child exits when the writer is gone
(its parent pid changes), and a child that outlives its writer can only write bytes no
published extent refers to (see the design note).
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import threading
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from .errors import CorruptionError, MergeFailed
from .faults import Faults
from .merge_work import Fault, JobResult, MergeJob, run_job

PREFIX = "merge_proc:"
# Crash-test kill points (seqvault/faults.py; docs/design/merge.md, "Crash safety").
CHILD_POINTS = (  # the merge process kills itself
    "merge_proc:after_write",  # its batch written to the output file, not fsynced
    "merge_proc:after_sync",  # output fsynced, result not yet sent
)
WRITER_POINTS = (  # the writer kills itself during a process merge
    "merge_proc:running",  # the job sent, the merge process working on it
    "merge:after_snapshot",  # extent lists snapshotted, nothing sent
    "merge:after_sync",  # the result received (written, fsynced), nothing published
    "merge:after_commit",  # the batch published
)
POLL_S = 0.05  # how often a waiting parent checks that the child is alive / stop was asked


class MergeProcess:
    """The writer's handle on its merge child. One job at a time (the caller serialises)."""

    def __init__(self, label: str, nice: int) -> None:
        self.label = label  # shown in the child's command line (the store path)
        self.nice = nice
        self.proc: subprocess.Popen[bytes] | None = None
        self.to_child: Connection | None = None
        self.from_child: Connection | None = None
        self.started = 0  # children started (a dead one is replaced at the next job)

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None and self.proc.poll() is None else None

    def _start(self) -> None:
        r_job, w_job = os.pipe()
        r_res, w_res = os.pipe()
        pkg_root = str(Path(__file__).resolve().parents[1])
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (pkg_root, env.get("PYTHONPATH")) if p)
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "seqvault.merge_child", str(r_job), str(w_res),
                 str(os.getpid()), str(self.nice), self.label],
                # stdout is never ours to write (a `seqvault get --nl | head` pipeline); a
                # crash's traceback still reaches stderr.
                pass_fds=(r_job, w_res), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                env=env)
        except BaseException:
            os.close(w_job)
            os.close(r_res)
            raise
        finally:
            os.close(r_job)
            os.close(w_res)
        self.to_child = Connection(w_job, readable=False)
        self.from_child = Connection(r_res, writable=False)
        self.started += 1
        kind, _payload = self._wait(None)  # its imports done: batch times exclude start-up
        if kind != "ready":
            code = self.proc.wait()
            self._discard()
            raise MergeFailed(f"merge process of {self.label} did not start (exit status "
                              f"{code})")

    def ensure_started(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            self._discard()
            self._start()

    def _wait(self, stop: threading.Event | None) -> tuple[str, Any]:
        """The child's next message, ("died", None) if it exits first; kills it and raises
        MergeStopped if `stop` is set meanwhile."""
        assert self.from_child is not None and self.proc is not None
        while True:
            if stop is not None and stop.is_set():
                self.kill()
                raise MergeStopped("merge stopped (the store is closing)")
            try:
                if self.from_child.poll(POLL_S):
                    kind, payload = self.from_child.recv()
                    return kind, payload
            except (EOFError, OSError):
                return "died", None
            if self.proc.poll() is not None:
                return "died", None

    def run(self, job: MergeJob, stop: threading.Event | None, fault: Fault) -> JobResult:
        """Send the job and wait for its result. Raises MergeFailed when the child dies (it is
        replaced at the next job) and MergeStopped when `stop` is set meanwhile (the child is
        killed: `close()` never waits for a batch); the job's errors are re-raised here."""
        self.ensure_started()
        assert self.to_child is not None and self.from_child is not None and self.proc
        try:
            self.to_child.send(job)
        except OSError as exc:
            self.kill()
            raise MergeFailed(f"merge process {self.proc.pid} is gone ({exc})") from exc
        fault(PREFIX + "running")  # crash tests: the writer dies while the child works
        kind, payload = self._wait(stop)
        if kind == "ok":
            assert isinstance(payload, JobResult)
            return payload
        if kind == "died":
            code = self.proc.wait()
            self._discard()
            how = f"killed by signal {-code}" if code < 0 else f"exit status {code}"
            raise MergeFailed(f"merge process of {self.label} died ({how}) during a batch "
                              "of " f"{len(job.users)} users; nothing of it was published")
        raise rebuild_error(payload)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._discard()

    def close(self, timeout: float = 10.0) -> None:
        """Ask the child to exit (it is idle between jobs), kill it if it does not."""
        if self.proc is not None and self.proc.poll() is None and self.to_child is not None:
            try:
                self.to_child.send(None)
                self.proc.wait(timeout)
            except (OSError, subprocess.TimeoutExpired):
                pass
        self.kill()

    def _discard(self) -> None:
        for c in (self.to_child, self.from_child):
            if c is not None:
                c.close()
        self.to_child = self.from_child = None
        if self.proc is not None and self.proc.poll() is not None:
            self.proc = None


class MergeStopped(Exception):
    """The merge was stopped while the child worked (close()); not an error to report."""


def describe(exc: BaseException) -> dict[str, Any]:
    """An exception as plain data (custom exception classes need not pickle)."""
    return {"type": type(exc).__name__, "message": str(exc),
            "errno": getattr(exc, "errno", None), "filename": getattr(exc, "filename", None),
            "path": getattr(exc, "path", None), "user": getattr(exc, "user", None)}


def rebuild_error(d: dict[str, Any]) -> BaseException:
    """The parent's exception for a child's error: the same class where it matters."""
    t, msg = d.get("type"), d.get("message", "")
    if t == "CorruptionError":
        return CorruptionError(msg, path=d.get("path"), user=d.get("user"))
    if t == "FileNotFoundError":
        return FileNotFoundError(d.get("errno") or errno.ENOENT, msg, d.get("filename"))
    if d.get("errno") is not None:  # OSError and its kind (ENOSPC, EIO, ...)
        return OSError(d["errno"], msg, d.get("filename"))
    return MergeFailed(f"merge process: {t}: {msg}")


# ---------------------------------------------------------------------- the child
def _watch_parent(ppid: int) -> None:
    """Exit as soon as the writer is gone (re-parenting changes our parent pid)."""
    while True:
        if os.getppid() != ppid:
            # At once, from this thread, whatever the main thread is doing (sys.exit here
            # would only end this thread).
            os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(0.1)


def main(argv: list[str]) -> int:
    r_job, w_res, ppid, nice = int(argv[0]), int(argv[1]), int(argv[2]), int(argv[3])
    threading.Thread(target=_watch_parent, args=(ppid,), daemon=True).start()
    if nice > 0:
        try:
            os.nice(nice)
        except OSError:
            pass
    jobs = Connection(r_job, writable=False)
    results = Connection(w_res, readable=False)
    fault = Faults()
    try:
        results.send(("ready", os.getpid()))
    except OSError:
        return 0
    while True:
        try:
            job = jobs.recv()
        except (EOFError, OSError):
            return 0
        if job is None:
            return 0
        try:
            reply: tuple[str, Any] = ("ok", run_job(job, None, fault, PREFIX))
        except BaseException as exc:  # reported to the writer, which decides
            reply = ("error", describe(exc))
        try:
            results.send(reply)
        except OSError:
            return 0
