"""Shared fixtures: one realistic 10,000-event user history (the BRIEF's anchor size)."""

from __future__ import annotations

import numpy as np
import pytest

from bench import workload as wl


@pytest.fixture(scope="session")
def history() -> dict[str, np.ndarray]:
    cfg = wl.WorkloadConfig()
    return wl.expected_last(wl.user_history(cfg, 4242, 10_000), 10_000)  # time-sorted


@pytest.fixture(scope="session")
def schema():
    seqvault = pytest.importorskip("seqvault")
    return seqvault.Schema.from_arrow(wl.ARROW_SCHEMA, user_column=wl.USER_COLUMN,
                                      time_column=wl.TIME_COLUMN)
