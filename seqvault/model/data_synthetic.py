"""The synthetic planted-interest benchmark: sparse interests buried in popularity noise.

Generative story (every draw from one seeded numpy Generator, fully vectorised):

* Items 1..n_items each belong to one of n_topics topics (the `cat` column) and have a
  popularity (Zipf) and a latent quality z ~ N(0, 1).
* A user has a history of n events, n log-uniform in [min_len, max_len]. Every event is noise:
  an item drawn by popularity. Then 1–3 interest topics are planted: a few items of each topic
  replace noise events at random positions inside the latest `window` events but never in the
  latest `recent_guard` (interests sit far from the recent window; a model that looks at the last
  100 events only cannot see them).
* Each user gets `impressions_per_user` candidates at one request time (just after the last
  event): with probability `interest_target_frac` an item of one of the user's interest topics,
  otherwise a popular item. The true click probability is

      p = σ(b0 + b1 · min(m, cap) + b_item · z_item),

  m = the number of events among the user's latest `window` with the candidate's topic. The label
  is Bernoulli(p); p is kept, so the Bayes ceiling (AUC and logloss of p itself) is known.
* Leakage bait: after the request time the log continues — every clicked candidate appears as an
  event, followed by a few noise events. A history that is not point-in-time sees its own label.
* Users are split 80/10/10 into train/validation/test (all impressions of a user together).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

from .data import Dataset, EventLog, Impressions


@dataclass(frozen=True)
class SyntheticConfig:
    n_users: int = 30000
    n_items: int = 20000
    n_topics: int = 200
    min_len: int = 50
    max_len: int = 3000
    window: int = 1000  # the truth looks at the latest `window` events (= the models' L)
    recent_guard: int = 100  # planted events never among the latest `recent_guard`
    min_interests: int = 1
    max_interests: int = 3
    min_planted: int = 3  # per interest topic
    max_planted: int = 12
    impressions_per_user: int = 4
    interest_target_frac: float = 0.5
    future_events: int = 5
    zipf: float = 1.1
    b0: float = -2.5
    b1: float = 0.35
    cap: int = 12
    b_item: float = 0.4
    val_frac: float = 0.1
    test_frac: float = 0.1
    seed: int = 0

    @classmethod
    def quick(cls, **changes: Any) -> SyntheticConfig:
        """A small version for `--quick` and tests: L=100, a few thousand users."""
        base = cls(n_users=2000, n_items=2000, n_topics=50, min_len=20, max_len=300, window=100,
                   recent_guard=20, min_planted=3, max_planted=8)
        return replace(base, **changes)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def generate(cfg: SyntheticConfig) -> Dataset:
    """Draw the data set described in the module docstring."""
    if cfg.min_len < 1 or cfg.max_len < cfg.min_len:
        raise ValueError(f"SyntheticConfig: min_len={cfg.min_len}, max_len={cfg.max_len}; "
                         "expected 1 <= min_len <= max_len")
    if cfg.recent_guard >= cfg.window:
        raise ValueError(f"SyntheticConfig.recent_guard: got {cfg.recent_guard}, expected less "
                         f"than window={cfg.window}")
    rng = np.random.default_rng(cfg.seed)
    n_items, n_topics, n_users = cfg.n_items, cfg.n_topics, cfg.n_users

    item_topic = np.concatenate([[0], rng.integers(1, n_topics + 1, n_items)])  # 0 = padding
    pop = np.arange(1, n_items + 1, dtype=np.float64) ** -cfg.zipf
    pop = pop[rng.permutation(n_items)]
    pop /= pop.sum()
    quality = np.concatenate([[0.0], rng.normal(size=n_items)])
    # items grouped by topic, to draw "an item of topic t" uniformly
    by_topic = np.argsort(item_topic[1:], kind="stable") + 1
    topic_start = np.searchsorted(item_topic[by_topic], np.arange(1, n_topics + 2))

    def item_of_topic(topics: np.ndarray) -> np.ndarray:
        lo, hi = topic_start[topics - 1], topic_start[topics]
        empty = hi <= lo
        pick = lo + (rng.random(len(topics)) * np.maximum(hi - lo, 1)).astype(np.int64)
        out = by_topic[np.minimum(pick, n_items - 1)]
        return np.where(empty, rng.integers(1, n_items + 1, len(topics)), out)

    # ---- histories: popularity noise
    lengths = np.exp(rng.uniform(np.log(cfg.min_len), np.log(cfg.max_len + 1), n_users))
    lengths = np.clip(lengths.astype(np.int64), cfg.min_len, cfg.max_len)
    starts = np.concatenate([[0], np.cumsum(lengths)])
    total = int(starts[-1])
    items = rng.choice(n_items, size=total, p=pop) + 1

    # ---- planted interests
    n_int = rng.integers(cfg.min_interests, cfg.max_interests + 1, n_users)
    int_user = np.repeat(np.arange(n_users), n_int)
    int_topic = rng.integers(1, n_topics + 1, len(int_user))
    n_plant = rng.integers(cfg.min_planted, cfg.max_planted + 1, len(int_user))
    p_user = np.repeat(int_user, n_plant)
    p_topic = np.repeat(int_topic, n_plant)
    ln = lengths[p_user]
    lo = np.maximum(ln - cfg.window, 0)
    hi = ln - cfg.recent_guard
    short = hi <= lo  # too short to keep clear of the recent window: anywhere in it
    lo = np.where(short, 0, lo)
    hi = np.where(short, ln, hi)
    pos = lo + (rng.random(len(p_user)) * (hi - lo)).astype(np.int64)
    items[starts[p_user] + pos] = item_of_topic(p_topic)
    cats = item_topic[items]

    # ---- timestamps (ms): a start per user, exponential gaps of about a minute
    user_col = np.repeat(np.arange(n_users), lengths)
    gaps = rng.exponential(60_000.0, total).astype(np.int64) + 1
    t0 = rng.integers(1_700_000_000_000, 1_700_000_000_000 + 86_400_000 * 30, n_users)
    cum = np.cumsum(gaps)
    first = cum[starts[:-1]] - gaps[starts[:-1]]
    ts = t0[user_col] + cum - first[user_col]
    request_ts = ts[starts[1:] - 1] + 1000

    # ---- impressions
    k = cfg.impressions_per_user
    imp_user = np.repeat(np.arange(n_users), k)
    from_interest = rng.random(len(imp_user)) < cfg.interest_target_frac
    # pick one of the user's interest topics uniformly
    first_int = np.concatenate([[0], np.cumsum(n_int)])[:-1]
    which = first_int[imp_user] + (rng.random(len(imp_user)) * n_int[imp_user]).astype(np.int64)
    cand_interest = item_of_topic(int_topic[which])
    cand_pop = rng.choice(n_items, size=len(imp_user), p=pop) + 1
    imp_item = np.where(from_interest, cand_interest, cand_pop)
    imp_cat = item_topic[imp_item]

    # m = events of the candidate's topic among the latest `window` events of the user
    in_window = np.arange(total) >= (starts[1:][user_col] - cfg.window)
    counts = np.bincount(user_col[in_window] * (n_topics + 1) + cats[in_window],
                         minlength=n_users * (n_topics + 1))
    m = counts[imp_user * (n_topics + 1) + imp_cat]
    prob = _sigmoid(cfg.b0 + cfg.b1 * np.minimum(m, cfg.cap) + cfg.b_item * quality[imp_item])
    label = (rng.random(len(prob)) < prob).astype(np.float32)
    imp_ts = request_ts[imp_user]

    # ---- leakage bait: clicks and a few more events after the request time
    clicked = np.flatnonzero(label > 0)
    f_user = np.concatenate([imp_user[clicked], np.repeat(np.arange(n_users), cfg.future_events)])
    f_item = np.concatenate([imp_item[clicked],
                             rng.choice(n_items, size=n_users * cfg.future_events, p=pop) + 1])
    f_ts = request_ts[f_user] + 1 + rng.integers(0, 3_600_000, len(f_user))

    # ---- split by user
    perm = rng.permutation(n_users)
    split_of_user = np.zeros(n_users, dtype=np.int8)
    n_test = int(round(cfg.test_frac * n_users))
    n_val = int(round(cfg.val_frac * n_users))
    split_of_user[perm[:n_test]] = 2
    split_of_user[perm[n_test:n_test + n_val]] = 1

    events = EventLog(
        user=np.concatenate([user_col, f_user]).astype(np.int64),
        item=np.concatenate([items, f_item]).astype(np.int64),
        cat=np.concatenate([cats, item_topic[f_item]]).astype(np.int64),
        aux=np.zeros(total + len(f_user), dtype=np.int64),
        ts=np.concatenate([ts, f_ts]).astype(np.int64),
    )
    imps = Impressions(
        user=imp_user.astype(np.int64), item=imp_item.astype(np.int64),
        cat=imp_cat.astype(np.int64), ts=imp_ts.astype(np.int64), label=label,
        split=split_of_user[imp_user], prob=prob.astype(np.float64),
    )
    info: dict[str, object] = {
        "config": asdict(cfg),
        "events": int(len(events)),
        "history_events": total,
        "mean_history_length": float(lengths.mean()),
        "click_rate": float(label.mean()),
        "interest_candidate_frac": float(from_interest.mean()),
    }
    return Dataset("synthetic", events, imps, n_items, n_topics, 0, info)
