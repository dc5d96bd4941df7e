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

`variant="burst"` (the planted-burst benchmark, built to separate STA's sigmoid gate from
softmax; see docs/model.md): interest is expressed as *bursts*. Segments of `segment` events are
cut from the newest event at request time, exactly as LASER cuts them. Each interest topic gets
one burst of k ∈ [burst_min, burst_max] events inside one segment; every planted topic (interest
and decoy) also gets U{0..2·scatter} scattered singletons, each in its own segment; 1–2 decoy
topics per user get singletons only. The truth counts the densest segment, not the total:

    p = σ(b0 + b1 · min(k*, cap) + b_item · z_item),
    k* = max over the segments of the latest `window` events of the events of the candidate's topic

so the total count m = k + scatter is only a noisy proxy of k*. Softmax inside a segment
normalises k away (a segment with one match and one with eight give the same vector when the
match dominates); a sigmoid gate keeps it. `scatter` is the noise level.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

from .data import Dataset, EventLog, Impressions
from .metrics import roc_auc


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
    # the planted-burst variant (module docstring); ignored by variant="count"
    variant: str = "count"  # "count" | "burst"
    segment: int = 10  # the truth's segment width (= LASER's w)
    burst_min: int = 1
    burst_max: int = 8
    scatter: int = 4  # noise level: singletons per planted topic ~ U{0..2·scatter}
    min_decoys: int = 1
    max_decoys: int = 2
    decoy_target_frac: float = 0.3  # candidates from a decoy topic (the rest: interest/popular)

    @classmethod
    def quick(cls, **changes: Any) -> SyntheticConfig:
        """A small version for `--quick` and tests: L=100, a few thousand users."""
        base = cls(n_users=2000, n_items=2000, n_topics=50, min_len=20, max_len=300, window=100,
                   recent_guard=20, min_planted=3, max_planted=8)
        return replace(base, **changes)

    @classmethod
    def burst(cls, quick: bool = False, **changes: Any) -> SyntheticConfig:
        """The planted-burst variant: b1 per event of the densest segment is larger than the
        count benchmark's per event in the window, since k* spans 0..8 rather than 0..12+."""
        base = cls.quick() if quick else cls()
        base = replace(base, variant="burst", b0=-2.5, b1=0.5, cap=8,
                       interest_target_frac=0.4)
        return replace(base, **changes)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def generate(cfg: SyntheticConfig) -> Dataset:
    """Draw the data set described in the module docstring."""
    if cfg.min_len < 1 or cfg.max_len < cfg.min_len:
        raise ValueError(f"SyntheticConfig: min_len={cfg.min_len}, max_len={cfg.max_len}; "
                         "expected 1 <= min_len <= max_len")
    if cfg.variant not in ("count", "burst"):
        raise ValueError(f"SyntheticConfig.variant: got {cfg.variant!r}, expected count|burst")
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
    if cfg.variant == "count":
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
        dec_user = dec_topic = np.zeros(0, dtype=np.int64)
    else:
        n_dec = rng.integers(cfg.min_decoys, cfg.max_decoys + 1, n_users)
        dec_user = np.repeat(np.arange(n_users), n_dec)
        dec_topic = rng.integers(1, n_topics + 1, len(dec_user))
        # decoys first: where a later interest event lands on the same position it wins; the
        # truth is counted from the final log either way
        for users, topics, burst in ((dec_user, dec_topic, False), (int_user, int_topic, True)):
            pos, which = _burst_positions(cfg, rng, lengths[users], burst)
            items[starts[users[which]] + pos] = item_of_topic(topics[which])
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
    u01 = rng.random(len(imp_user))
    from_interest = u01 < cfg.interest_target_frac

    def topic_of_user(owner: np.ndarray, topics: np.ndarray, count: np.ndarray) -> np.ndarray:
        """One of each impression user's `topics` (grouped by `owner`), uniformly."""
        first = np.concatenate([[0], np.cumsum(count)])[:-1]
        pick = first[imp_user] + (rng.random(len(imp_user)) * count[imp_user]).astype(np.int64)
        return topics[np.minimum(pick, max(len(topics) - 1, 0))]

    cand_interest = item_of_topic(topic_of_user(int_user, int_topic, n_int))
    cand_pop = rng.choice(n_items, size=len(imp_user), p=pop) + 1
    imp_item = np.where(from_interest, cand_interest, cand_pop)
    from_decoy = np.zeros(len(imp_user), dtype=bool)
    if cfg.variant == "burst":
        from_decoy = ~from_interest & (u01 < cfg.interest_target_frac + cfg.decoy_target_frac)
        cand_decoy = item_of_topic(topic_of_user(dec_user, dec_topic, n_dec))
        imp_item = np.where(from_decoy, cand_decoy, imp_item)
    imp_cat = item_topic[imp_item]

    # m = events of the candidate's topic among the latest `window` events of the user
    in_window = np.arange(total) >= (starts[1:][user_col] - cfg.window)
    counts = np.bincount(user_col[in_window] * (n_topics + 1) + cats[in_window],
                         minlength=n_users * (n_topics + 1))
    m = counts[imp_user * (n_topics + 1) + imp_cat]
    if cfg.variant == "burst":
        driver = densest_segment_count(user_col, cats, starts, lengths, cfg.window, cfg.segment,
                                       n_topics)[imp_user * (n_topics + 1) + imp_cat]
    else:
        driver = m
    seq_logit = cfg.b0 + cfg.b1 * np.minimum(driver, cfg.cap)
    prob = _sigmoid(seq_logit + cfg.b_item * quality[imp_item])
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
        hint=np.minimum(driver, cfg.cap).astype(np.int64),
    )
    te = split_of_user[imp_user] == 2
    # What part of the ceiling the sequence carries: the truth without the item-quality term,
    # and the item-quality term alone (the part a model must learn from the item table).
    partial = {"auc_sequence_term_only": roc_auc(label[te], seq_logit[te]),
               "auc_item_term_only": roc_auc(label[te], quality[imp_item][te])}
    info: dict[str, object] = {
        "config": asdict(cfg),
        "events": int(len(events)),
        "history_events": total,
        "mean_history_length": float(lengths.mean()),
        "click_rate": float(label.mean()),
        "interest_candidate_frac": float(from_interest.mean()),
        "decoy_candidate_frac": float(from_decoy.mean()),
        "ceiling_parts_test": partial,
        # how well the total count m stands in for the driver of the truth (1.0 for "count")
        "corr_m_driver": float(np.corrcoef(m, driver)[0, 1]) if m.std() and driver.std() else 1.0,
    }
    return Dataset("synthetic", events, imps, n_items, n_topics, 0, info)


def _burst_positions(cfg: SyntheticConfig, rng: np.random.Generator, ln: np.ndarray,
                     burst: bool) -> tuple[np.ndarray, np.ndarray]:
    """Positions (from each history's start) for planted topics of histories of length `ln`:
    with `burst`, one segment holds k ∈ [burst_min, burst_max] events; each topic also gets
    U{0..2·scatter} singletons, every one in a segment of its own. Returns (positions, index of
    the planted topic each position belongs to)."""
    w = cfg.segment
    n = len(ln)
    s_max = max(cfg.window // w, 1)
    # usable segments, counted from the newest (0): complete, inside the window, clear of the
    # recent guard; a history too short for that uses whatever complete segments it has
    j_lo = np.full(n, -(-cfg.recent_guard // w))
    j_hi = np.minimum(np.minimum(ln, cfg.window) // w, s_max)  # exclusive
    short = j_hi <= j_lo
    j_lo = np.where(short, 0, j_lo)
    j_hi = np.maximum(j_hi, 1)
    seg = np.arange(s_max)[None, :]
    keys = np.where((seg >= j_lo[:, None]) & (seg < j_hi[:, None]), rng.random((n, s_max)), 2.0)
    order = np.argsort(keys, axis=1)  # a random order of each topic's usable segments
    usable = j_hi - j_lo
    n_single = rng.integers(0, 2 * cfg.scatter + 1, n)
    n_single = np.minimum(n_single, usable - (1 if burst else 0)).clip(0)
    pos_list, who_list = [], []
    if burst:
        k = rng.integers(cfg.burst_min, cfg.burst_max + 1, n)
        j = order[:, 0]
        offs = np.argsort(rng.random((n, w)), axis=1)  # k distinct offsets inside the segment
        take = np.arange(w)[None, :] < k[:, None]
        who, col = np.nonzero(take)
        pos_list.append(ln[who] - 1 - (j[who] * w + offs[who, col]))
        who_list.append(who)
    first = 1 if burst else 0
    take = np.arange(s_max)[None, :] < n_single[:, None]
    who, col = np.nonzero(take)
    j = order[who, col + first]
    pos_list.append(ln[who] - 1 - (j * w + rng.integers(0, w, len(who))))
    who_list.append(who)
    pos, who = np.concatenate(pos_list), np.concatenate(who_list)
    ok = pos >= 0  # a history shorter than one segment: drop what does not fit
    return pos[ok], who[ok]


def densest_segment_count(user_col: np.ndarray, cats: np.ndarray, starts: np.ndarray,
                          lengths: np.ndarray, window: int, w: int, n_topics: int) -> np.ndarray:
    """[n_users * (n_topics + 1)]: for each (user, topic), the largest number of that topic's
    events in one segment of `w` among the user's latest `window` events, segments cut from the
    newest event (as LASER cuts them)."""
    n_users = len(lengths)
    from_newest = starts[1:][user_col] - 1 - np.arange(len(user_col))
    inw = from_newest < window
    n_seg = -(-window // w)
    key = ((user_col[inw] * n_seg + from_newest[inw] // w) * (n_topics + 1) + cats[inw])
    uniq, cnt = np.unique(key, return_counts=True)
    user_topic = (uniq // ((n_topics + 1) * n_seg)) * (n_topics + 1) + uniq % (n_topics + 1)
    out = np.zeros(n_users * (n_topics + 1), dtype=np.int64)
    np.maximum.at(out, user_topic, cnt)
    return out
