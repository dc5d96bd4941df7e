"""Data for the model: point-in-time histories, the synthetic benchmark, metrics, MovieLens."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")

from seqvault.model.data import ArrayHistory, EventLog  # noqa: E402
from seqvault.model.data_synthetic import SyntheticConfig, generate  # noqa: E402
from seqvault.model.metrics import logloss, roc_auc  # noqa: E402


def _log(rng: np.random.Generator, n: int = 400) -> EventLog:
    ts = rng.integers(0, 50, n)  # many ties
    return EventLog(user=rng.integers(0, 7, n) * 3, item=rng.integers(1, 99, n),
                    cat=rng.integers(1, 5, n), aux=rng.integers(0, 3, n), ts=ts)


def test_array_history_matches_brute_force_point_in_time() -> None:
    rng = np.random.default_rng(1)
    log = _log(rng)
    src = ArrayHistory(log)
    users = np.array([0, 3, 6, 9, 18, 5, 100, 0])  # 5 and 100 have no events
    before = np.array([0, 10, 25, 49, 60, 30, 30, 1])
    h = src.gather(users, before, max_len=16)
    for r, (u, t) in enumerate(zip(users, before, strict=True)):
        sel = np.flatnonzero((log.user == u) & (log.ts < t))
        sel = sel[np.argsort(log.ts[sel], kind="stable")][-16:]  # stable: arrival order for ties
        n = len(sel)
        assert h.mask[r].sum() == n and h.mask[r, 16 - n:].all()  # left padding, newest last
        assert h.item[r, 16 - n:].tolist() == log.item[sel].tolist()
        assert (h.item[r, :16 - n] == 0).all()


def test_synthetic_data_is_deterministic_and_has_a_ceiling() -> None:
    cfg = SyntheticConfig.quick(n_users=300)
    a, b = generate(cfg), generate(cfg)
    assert np.array_equal(a.events.item, b.events.item)
    imps = a.impressions
    assert imps.prob is not None and len(imps) == 300 * cfg.impressions_per_user
    assert set(np.unique(imps.split)) == {0, 1, 2}
    # a user's split is one: no user is in two splits
    per_user = {u: set(imps.split[imps.user == u]) for u in np.unique(imps.user)}
    assert all(len(s) == 1 for s in per_user.values())
    assert 0.6 < roc_auc(imps.label, imps.prob) < 0.95


def test_synthetic_histories_are_point_in_time_and_future_is_bait() -> None:
    ds = generate(SyntheticConfig.quick(n_users=200))
    imps = ds.impressions
    src = ArrayHistory(ds.events)
    h = src.gather(imps.user, imps.ts, 100)
    # the log holds events after each request (clicks, noise) that no history may contain
    after = np.zeros(len(imps), dtype=bool)
    for u in range(200):
        after[imps.user == u] = (ds.events.ts[ds.events.user == u] >= imps.ts[imps.user == u][0]
                                 ).any()
    assert after.all()
    lengths = h.mask.sum(1)
    cfg = SyntheticConfig.quick()
    assert lengths.max() <= cfg.window and lengths.min() >= 1


def test_planted_interests_stay_out_of_the_recent_window() -> None:
    """Base (last 20 of L=100 in the quick config) should see much less signal than the window."""
    ds = generate(SyntheticConfig.quick(n_users=600))
    imps = ds.impressions
    h = ArrayHistory(ds.events).gather(imps.user, imps.ts, 100)
    full = (h.cat == imps.cat[:, None]).sum(1)
    recent = (h.cat[:, -20:] == imps.cat[:, None]).sum(1)
    assert roc_auc(imps.label, full) > roc_auc(imps.label, recent) + 0.05


def test_auc_and_logloss() -> None:
    y = np.array([0, 0, 1, 1, 1, 0])
    s = np.array([0.1, 0.4, 0.35, 0.8, 0.4, 0.2])
    pairs = [(i, j) for i in range(6) for j in range(6) if y[i] == 1 and y[j] == 0]
    brute = np.mean([1.0 if s[i] > s[j] else 0.5 if s[i] == s[j] else 0.0 for i, j in pairs])
    assert roc_auc(y, s) == pytest.approx(brute)
    assert np.isnan(roc_auc(np.ones(3), np.ones(3)))
    assert logloss(np.array([1, 0]), np.array([0.5, 0.5])) == pytest.approx(np.log(2))


def test_movielens_missing_files_give_a_clear_error(tmp_path) -> None:
    from seqvault.model.data_movielens import load_movielens

    with pytest.raises(FileNotFoundError, match="fetch_movielens.sh"):
        load_movielens(tmp_path)


def test_movielens_loader_on_a_tiny_fake(tmp_path) -> None:
    from seqvault.model.data_movielens import load_movielens

    (tmp_path / "ml-1m.item").write_text(
        "item_id:token\tmovie_title:token\trelease_year:float\tgenre:token\n"
        "A (1990)\tA\t1990\tComedy Drama\nB (1991)\tB\t1991\tAction\n")
    lines = ["user_id:token\titem_id:token\trating:float\ttimestamp:float"]
    for u in range(20):
        for k in range(12):
            lines.append(f"u{u}\t{'A (1990)' if k % 2 else 'B (1991)'}\t{1 + (k + u) % 5}\t{k}")
    (tmp_path / "ml-1m.inter").write_text("\n".join(lines) + "\n")
    ds = load_movielens(tmp_path, verify=False)
    imps = ds.impressions
    assert len(imps) == 20  # 12 ratings → 1 impression each (the latest)
    assert (imps.ts == 11_000).all()
    h = ArrayHistory(ds.events).gather(imps.user, imps.ts, 50)
    assert (h.mask.sum(1) == 11).all()  # strictly before the impression's timestamp
    assert set(np.unique(h.aux[h.mask])) <= {1, 2, 3, 4, 5}
    with pytest.raises(ValueError, match="sha256"):
        load_movielens(tmp_path, verify=True)
