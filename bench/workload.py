"""Deterministic behaviour-log generator: the data every benchmarked system receives.

Everything is derived from one seed, per user, so a worker process can regenerate any user's
history without holding the whole log in memory, and every system sees byte-identical input.

Shapes (why each exists):

- history lengths are log-normal (heavy tail), clipped to ``max_len`` (100,000 by default):
  most users are short, a few are very long, and the long ones dominate bytes and read cost;
- item ids follow a Zipf law over a 10M-item catalogue, scrambled so hot items are not small ids
  (small ids would flatter varint/narrow-int encodings);
- timestamps come in equal-timestamp bursts (a page of impressions logged in one millisecond):
  these test the stable ordering of ties;
- 10% of events arrive late (after events with a later timestamp): these test that every store
  returns time order, not arrival order.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import asdict, dataclass

import numpy as np
import pyarrow as pa

USER_COLUMN = "user_id"
TIME_COLUMN = "ts"
# Six event columns, the shape of schema/behavior.toml (item, time, action, category, dwell,
# scenario); the BRIEF's decode floor is quoted for six columns.
COLUMN_DTYPES: dict[str, np.dtype] = {
    "ts": np.dtype("int64"),
    "item_id": np.dtype("int64"),
    "action": np.dtype("int8"),
    "category": np.dtype("int32"),
    "dwell_ms": np.dtype("int32"),
    "scenario": np.dtype("int8"),
}
EVENT_COLUMNS = tuple(COLUMN_DTYPES)
ARROW_SCHEMA = pa.schema(
    [pa.field(USER_COLUMN, pa.int64(), nullable=False)]
    + [pa.field(name, pa.from_numpy_dtype(dt), nullable=False) for name, dt in COLUMN_DTYPES.items()]
)

BASE_TS_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z in milliseconds
# Real-time appends happen "later" than any loaded history (100k events at ~30 s apart is about
# 35 days), so appended events mostly land at the tail, as in production; late ones may not.
STREAM_BASE_TS_MS = BASE_TS_MS + 365 * 86_400_000
SWEEP_USER_BASE = 1_000_000_000
_ITEM_SCRAMBLE = 2_654_435_761  # odd multiplier: a bijection on the catalogue modulo 2**31


@dataclass(frozen=True)
class WorkloadConfig:
    """The data set: population, sweep cohorts and distribution parameters."""

    seed: int = 20261129
    n_users: int = 2_000
    median_len: int = 200
    len_sigma: float = 1.6
    max_len: int = 100_000
    # History-length sweep: dedicated users with exactly this many events.
    sweep_lengths: tuple[int, ...] = (100, 1_000, 10_000, 100_000)
    sweep_users: tuple[int, ...] = (16, 16, 16, 2)
    n_items: int = 10_000_000
    item_zipf_a: float = 1.15
    user_zipf_a: float = 1.1
    mean_gap_ms: float = 30_000.0
    burst_prob: float = 0.15  # chance that the next event shares the previous timestamp
    late_frac: float = 0.10
    late_max_shift: int = 64  # a late event arrives up to this many events after its slot
    blob_cap: int = 10_000  # LastN cap of the blob-per-user baseline

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> WorkloadConfig:
        d = dict(d)
        for key in ("sweep_lengths", "sweep_users"):
            d[key] = tuple(d[key])
        return cls(**d)


def population_users(cfg: WorkloadConfig) -> tuple[np.ndarray, np.ndarray]:
    """Ids and history lengths of the heavy-tailed population."""
    rng = np.random.default_rng([cfg.seed, 1])
    lengths = rng.lognormal(np.log(cfg.median_len), cfg.len_sigma, cfg.n_users)
    lengths = np.clip(lengths.astype(np.int64), 1, cfg.max_len)
    # Spread the ids over the int64 range a little, as real ids are, rather than 0..n.
    ids = np.arange(1, cfg.n_users + 1, dtype=np.int64) * 7_919 + 13
    return ids, lengths


def sweep_users(cfg: WorkloadConfig) -> list[tuple[int, np.ndarray]]:
    """(length, user ids) for each sweep cohort."""
    out = []
    for i, (length, count) in enumerate(zip(cfg.sweep_lengths, cfg.sweep_users, strict=True)):
        base = SWEEP_USER_BASE + i * 100_000
        out.append((int(length), np.arange(base, base + count, dtype=np.int64)))
    return out


def all_users(cfg: WorkloadConfig) -> tuple[np.ndarray, np.ndarray]:
    ids, lengths = population_users(cfg)
    parts_i, parts_l = [ids], [lengths]
    for length, uids in sweep_users(cfg):
        parts_i.append(uids)
        parts_l.append(np.full(len(uids), length, dtype=np.int64))
    return np.concatenate(parts_i), np.concatenate(parts_l)


def zipf_ranks(rng: np.random.Generator, a: float, n: int, k: int) -> np.ndarray:
    """``k`` ranks in 1..``n`` from the Zipf law truncated to ``n`` (P(r) ∝ r^-a, r <= n).

    Never clamp ``rng.zipf`` onto ``n``: for a near 1 most of the mass lies beyond any
    realistic ``n`` (a=1.1 over 2,000 users: 44%), and clamping hands all of it to rank ``n``,
    one user who then receives almost half the traffic by accident. Small ``n``: inverse CDF
    over 1..n (exact, one draw each); large ``n``: rejection (redraw ranks beyond ``n``), which
    is exact too and needs no n-sized table.
    """
    if n < 1:
        raise ValueError(f"zipf_ranks: population n={n}, expected >= 1")
    if n <= _INVERSE_CDF_MAX:
        cdf = _zipf_cdf(float(a), int(n))
        ranks = np.searchsorted(cdf, rng.random(k) * cdf[-1], side="right") + 1
        return np.minimum(ranks, n).astype(np.int64)  # guards float round-off at u ~ 1 only
    ranks = rng.zipf(a, k).astype(np.int64)
    while (bad := ranks > n).any():
        ranks[bad] = rng.zipf(a, int(bad.sum()))
    return ranks


_INVERSE_CDF_MAX = 2_000_000


@functools.lru_cache(maxsize=8)
def _zipf_cdf(a: float, n: int) -> np.ndarray:
    return np.cumsum(np.arange(1, n + 1, dtype=np.float64) ** -a)


def zipf_top_share(a: float, n: int) -> float:
    """The analytic share of rank 1 under the Zipf law truncated to ``n``: 1 / H(n, a)."""
    return float(1.0 / _zipf_cdf(float(a), int(n))[-1])


def _items(rng: np.random.Generator, cfg: WorkloadConfig, n: int) -> np.ndarray:
    ranks = zipf_ranks(rng, cfg.item_zipf_a, cfg.n_items, n)
    return (ranks * _ITEM_SCRAMBLE) % (1 << 31)


def _side_columns(rng: np.random.Generator, items: np.ndarray) -> dict[str, np.ndarray]:
    n = len(items)
    return {
        "item_id": items,
        "action": rng.choice(5, n, p=[0.70, 0.15, 0.08, 0.05, 0.02]).astype(np.int8),
        # Category is a function of the item, as in a real catalogue (so it compresses like one).
        "category": ((items * 40_503) % 997).astype(np.int32),
        "dwell_ms": np.clip(rng.lognormal(8.0, 1.2, n), 0, 2**31 - 1).astype(np.int32),
        "scenario": rng.integers(0, 4, n).astype(np.int8),
    }


def _late_order(rng: np.random.Generator, n: int, frac: float, max_shift: int) -> np.ndarray:
    """Arrival order: a permutation where ``frac`` of events arrive after later-ts events."""
    key = np.arange(n, dtype=np.float64)
    late = rng.random(n) < frac
    key[late] += rng.integers(1, max_shift + 1, int(late.sum())) + 0.5
    return np.argsort(key, kind="stable")


def user_history(cfg: WorkloadConfig, user: int, n: int) -> dict[str, np.ndarray]:
    """One user's full history, columns in *arrival* order (not time order)."""
    rng = np.random.default_rng([cfg.seed, 2, int(user) & 0x7FFF_FFFF_FFFF_FFFF])
    gaps = rng.exponential(cfg.mean_gap_ms, n).astype(np.int64) + 1
    gaps[rng.random(n) < cfg.burst_prob] = 0
    ts = BASE_TS_MS + int(rng.integers(0, 86_400_000)) + np.cumsum(gaps)
    cols = {"ts": ts, **_side_columns(rng, _items(rng, cfg, n))}
    order = _late_order(rng, n, cfg.late_frac, cfg.late_max_shift)
    return {k: v[order] for k, v in cols.items()}


def iter_histories(
    cfg: WorkloadConfig, users: np.ndarray, lengths: np.ndarray
) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
    for user, n in zip(users.tolist(), lengths.tolist(), strict=True):
        yield user, user_history(cfg, user, n)


def expected_last(cols: dict[str, np.ndarray], last: int) -> dict[str, np.ndarray]:
    """The reference answer: time order, ties in arrival order, the newest ``last`` events."""
    order = np.argsort(cols["ts"], kind="stable")[-last:]
    return {k: v[order] for k, v in cols.items()}


def pick_users(
    rng: np.random.Generator, users: np.ndarray, k: int, skew: str, zipf_a: float = 1.1
) -> np.ndarray:
    """``k`` users drawn uniformly or Zipf-skewed (a few hot users get most requests)."""
    if skew == "uniform":
        return users[rng.integers(0, len(users), k)]
    # Rank 1 is hottest; a fixed permutation decides which user holds which rank. Ranks are
    # drawn over the whole population (truncated Zipf), never clamped onto the last user.
    perm = np.random.default_rng(7).permutation(len(users))
    ranks = zipf_ranks(rng, zipf_a, len(users), k) - 1
    return users[perm[ranks]]


def hottest_user(users: np.ndarray) -> int:
    """The user ``pick_users(..., "zipf")`` gives rank 1 (the most requests)."""
    return int(users[np.random.default_rng(7).permutation(len(users))[0]])


def event_stream(cfg: WorkloadConfig, users: np.ndarray, n: int, salt: int) -> dict:
    """``n`` real-time events interleaved across Zipf-active users, in arrival order."""
    rng = np.random.default_rng([cfg.seed, 3, salt])
    who = pick_users(rng, users, n, "zipf", cfg.user_zipf_a)
    ts = STREAM_BASE_TS_MS + salt * 10_000_000_000 + np.cumsum(rng.integers(0, 20, n))
    late = rng.random(n) < cfg.late_frac
    # Late events carry a timestamp up to ten minutes old: they sort before the user's newest.
    ts[late] -= rng.integers(1, 600_000, int(late.sum()))
    return {USER_COLUMN: who.astype(np.int64), "ts": ts, **_side_columns(rng, _items(rng, cfg, n))}


def slice_columns(cols: dict, start: int, stop: int) -> dict:
    return {k: v[start:stop] for k, v in cols.items()}


def hot_event_stream(cfg: WorkloadConfig, users: np.ndarray, n: int, salt: int, hot: int,
                     share: float) -> dict:
    """``event_stream`` where each event belongs to the ``hot`` user with probability
    ``share`` (the rest stay Zipf over ``users``): a bot, a power user, a viral feed."""
    cols = event_stream(cfg, users, n, salt)
    rng = np.random.default_rng([cfg.seed, 4, salt])
    cols[USER_COLUMN] = np.where(rng.random(n) < share, np.int64(hot), cols[USER_COLUMN])
    return cols


MANY_USER_BASE = 3_000_000_000


def many_user_rows(cfg: WorkloadConfig, n_users: int, per_user: int) -> dict:
    """``n_users`` distinct new users with ``per_user`` events each, rows shuffled so that every
    batch holds many users with a few events each (a log of a busy minute, not a backfill)."""
    n = n_users * per_user
    rng = np.random.default_rng([cfg.seed, 6, n_users, per_user])
    users = MANY_USER_BASE + np.repeat(np.arange(n_users, dtype=np.int64), per_user) * 7
    ts = STREAM_BASE_TS_MS + rng.integers(0, 86_400_000, n)
    cols = {USER_COLUMN: users, "ts": ts, **_side_columns(rng, _items(rng, cfg, n))}
    order = rng.permutation(n)
    return {k: v[order] for k, v in cols.items()}
