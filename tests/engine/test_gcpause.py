"""The full flush pauses Python's cyclic collector (seqvault/gcpause.py) and must leave it as it
found it: enabled after a flush that found it enabled, disabled after one that found it
disabled, also when the flush fails, and nested or overlapping pauses re-enable only at the
last one out."""

from __future__ import annotations

import gc
import threading

import numpy as np
import pytest

from seqvault import SeqVault, gcpause, sealing

from ..conftest import make_events


@pytest.fixture(autouse=True)
def restore_gc():
    was = gc.isenabled()
    yield
    (gc.enable if was else gc.disable)()


def _store(tmp_path, schema):
    v = SeqVault.open(tmp_path / "s", schema=schema)
    for u in range(5):
        v.append(u, make_events(np.random.default_rng(u), 3))
    return v


def test_flush_pauses_the_collector_and_restores_it(tmp_path, monkeypatch, schema):
    v = _store(tmp_path, schema)
    seen = []
    real = sealing.seal_memtable

    def spy(*a, **k):
        seen.append(gc.isenabled())
        return real(*a, **k)

    monkeypatch.setattr(sealing, "seal_memtable", spy)
    gc.enable()
    v.flush()
    assert seen == [False] and gc.isenabled()
    v.append(9, make_events(np.random.default_rng(9), 2))
    gc.disable()  # the caller's own choice is kept
    v.flush()
    assert seen == [False, False] and not gc.isenabled()
    v.close()


def test_a_failing_flush_restores_the_collector(tmp_path, monkeypatch, schema):
    v = _store(tmp_path, schema)

    def boom(*a, **k):
        raise RuntimeError("injected")

    monkeypatch.setattr(sealing, "seal_memtable", boom)
    gc.enable()
    with pytest.raises(RuntimeError):
        v.flush()
    assert gc.isenabled()


def test_overlapping_pauses_re_enable_at_the_last_one_out():
    gc.enable()
    inside = threading.Event()
    release = threading.Event()

    def other():
        with gcpause.paused():
            inside.set()
            release.wait(5)

    t = threading.Thread(target=other)
    t.start()
    assert inside.wait(5)
    with gcpause.paused():
        assert not gc.isenabled()
    assert not gc.isenabled()  # the other pause is still open
    release.set()
    t.join(5)
    assert gc.isenabled()
