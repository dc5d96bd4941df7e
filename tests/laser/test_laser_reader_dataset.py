"""ImpressionDataset: leakage-free histories, exactly-once sharding, determinism (issue 7)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

torch = pytest.importorskip("torch")

from seqvault import Schema, SeqVault, ValidationError  # noqa: E402
from seqvault.laser_reader import ImpressionBatch, ImpressionDataset  # noqa: E402

from ..conftest import behavior_schema_dict  # noqa: E402

pytestmark = pytest.mark.torch

MAX_LEN = 12
CATS = {"news": 1, "sport": 2, "music": 3}


def schema() -> Schema:
    return Schema.from_dict(behavior_schema_dict(["item_id", "action"]))  # two columns suffice


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory):
    """A store of 25 users (user 0 has no events) and 240 impressions, some of them exactly at
    an event's timestamp (the boundary a leak would cross)."""
    rng = np.random.default_rng(3)
    root = tmp_path_factory.mktemp("ds")
    path = root / "store"
    event_ts: dict[int, np.ndarray] = {}
    with SeqVault.open(path, schema=schema()) as v:
        for u in range(1, 25):
            n = int(rng.integers(1, 60))
            ts = np.sort(rng.integers(0, 100_000, size=n)).astype(np.int64)
            event_ts[u] = ts
            v.append(u, {"ts": ts, "item_id": rng.integers(1, 1000, size=n),
                         "action": list(rng.choice(["click", "like"], size=n))})
            if u % 3 == 0:
                v.flush()
    n_imp = 240
    users = rng.integers(0, 27, size=n_imp)  # 0, 25, 26: no events
    ts = rng.integers(0, 110_000, size=n_imp).astype(np.int64)
    for i in range(0, n_imp, 4):  # on an event's timestamp exactly
        u = int(users[i])
        if u in event_ts:
            ts[i] = event_ts[u][len(event_ts[u]) // 2]
    table = pa.table({
        "user_id": users.astype(np.int64),
        "ts": ts,
        "target_item": rng.integers(1, 1000, size=n_imp),
        "target_cat": rng.choice(list(CATS), size=n_imp),
        "label": rng.integers(0, 2, size=n_imp),
    })
    pq.write_table(table, root / "imp.parquet")
    return path, table, root / "imp.parquet"


def make(data, **kw) -> ImpressionDataset:
    path, table, _ = data
    args = dict(history_columns=["ts", "item_id"], target_columns=["target_item", "target_cat"],
                label_column="label", max_len=MAX_LEN, batch_size=32, seed=5,
                string_maps={"target_cat": CATS}, output="numpy")
    args.update(kw)
    return ImpressionDataset(str(path), table, **args)


def check_rows(data, batches: list[ImpressionBatch]) -> np.ndarray:
    """Every row against vault.read(before=impression ts); returns the rows seen."""
    path, table, _ = data
    imp_ts = table.column("ts").to_numpy()
    imp_user = table.column("user_id").to_numpy()
    cats = table.column("target_cat").to_pylist()
    rows = []
    with SeqVault.open(path, read_only=True) as v:
        for batch in batches:
            h = batch.history
            to_np = (lambda x: x.numpy()) if isinstance(h.mask, torch.Tensor) else np.asarray
            mask, hts, items = to_np(h.mask), to_np(h["ts"]), to_np(h["item_id"])
            age = to_np(h.age_ms)
            row_ids = to_np(batch.row)
            for b, r in enumerate(row_ids):
                t, u = int(imp_ts[r]), int(imp_user[r])
                assert int(to_np(batch.ts)[b]) == t and int(to_np(batch.user_id)[b]) == u
                # no leakage: every history event strictly before the impression
                assert (hts[b][mask[b]] < t).all()
                assert (age[b][mask[b]] > 0).all()
                seq = v.read(u, last=MAX_LEN, columns=["ts", "item_id"], before=t)
                n = len(seq)
                assert mask[b].sum() == n and mask[b, MAX_LEN - n:].all()
                np.testing.assert_array_equal(hts[b, MAX_LEN - n:], seq["ts"])
                np.testing.assert_array_equal(items[b, MAX_LEN - n:], seq["item_id"])
                assert int(to_np(batch.target["target_cat"])[b]) == CATS[cats[r]]
                assert int(to_np(batch.target["target_item"])[b]) == \
                    table.column("target_item")[int(r)].as_py()
                assert float(to_np(batch.label)[b]) == table.column("label")[int(r)].as_py()
            rows.extend(int(r) for r in row_ids)
    return np.array(rows)


def test_in_process_matches_read_and_no_leakage(data):
    batches = list(make(data))
    assert all(len(b) == 32 for b in batches[:-1]) and len(batches[-1]) == 240 - 7 * 32
    rows = check_rows(data, batches)
    assert sorted(rows) == list(range(240))
    # the boundary case is really exercised: some impression sits on an event's timestamp
    path, table, _ = data
    with SeqVault.open(path, read_only=True) as v:
        hits = sum(int(t) in set(v.read(int(u), columns=["ts"])["ts"].tolist())
                   for u, t in zip(table.column("user_id").to_numpy(),
                                   table.column("ts").to_numpy()))
    assert hits >= 20


def test_dataloader_two_workers_exactly_once_and_no_leakage(data):
    ds = make(data, output="torch")
    loader = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=2)
    batches = list(loader)
    assert isinstance(batches[0].history.mask, torch.Tensor)
    assert batches[0].history.mask.dtype == torch.bool
    rows = check_rows(data, batches)
    assert sorted(rows) == list(range(240))  # each impression exactly once


def test_parquet_path_equals_table(data):
    path, table, pq_path = data
    a = list(make(data))
    b = list(ImpressionDataset(str(path), str(pq_path), ["ts", "item_id"],
                               ["target_item", "target_cat"], "label", max_len=MAX_LEN,
                               batch_size=32, seed=5, string_maps={"target_cat": CATS},
                               output="numpy"))
    assert len(a) == len(b)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x.row, y.row)
        np.testing.assert_array_equal(x.history["item_id"], y.history["item_id"])


def test_deterministic_for_a_seed(data):
    def order(ds):
        return np.concatenate([b.row for b in ds])

    a, b = order(make(data, seed=11)), order(make(data, seed=11))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, order(make(data, seed=12)))
    ds = make(data, seed=11)
    ds.set_epoch(1)
    e1 = order(ds)
    assert not np.array_equal(a, e1) and sorted(e1) == list(range(240))
    np.testing.assert_array_equal(order(make(data, shuffle=False)), np.arange(240))
    # same through a 2-worker DataLoader, twice
    def loader_rows():
        dl = torch.utils.data.DataLoader(make(data, seed=11), batch_size=None, num_workers=2)
        return np.concatenate([b.row for b in dl])
    np.testing.assert_array_equal(loader_rows(), loader_rows())


@pytest.mark.parametrize("world", [1, 3, 4])
def test_sharding_across_ranks_exactly_once(data, world):
    seen = []
    per_rank = []
    for rank in range(world):
        rows = np.concatenate([b.row for b in make(data, rank=rank, world_size=world)])
        per_rank.append(rows)
        seen.extend(rows.tolist())
    assert sorted(seen) == list(range(240))
    sizes = [r.size for r in per_rank]
    assert max(sizes) - min(sizes) <= 1  # balanced


def test_drop_last(data):
    batches = list(make(data, drop_last=True, batch_size=50))
    assert [len(b) for b in batches] == [50] * 4


def test_bad_arguments(data):
    path, table, _ = data
    with SeqVault.open(path, read_only=True) as v, pytest.raises(ValidationError, match="path"):
        ImpressionDataset(v, table, ["item_id"])
    with pytest.raises(ValidationError, match="missing column"):
        make(data, label_column="clicked")
    with pytest.raises(ValidationError, match="rank"):
        make(data, rank=3, world_size=2)
    with pytest.raises(ValidationError, match="batch_size"):
        make(data, batch_size=0)
    with pytest.raises(ValidationError, match="target_cat"):
        list(make(data, string_maps={}))
    with pytest.raises(ValidationError, match="unknown column"):
        list(make(data, history_columns=["nope"]))


def test_factory_and_arrow_timestamps(data):
    path, table, _ = data
    ts = table.column("ts").cast(pa.timestamp("ms"))
    t2 = table.set_column(table.schema.get_field_index("ts"), "ts", ts)
    ds = ImpressionDataset(lambda: SeqVault.open(path, read_only=True), t2, ["ts", "item_id"],
                           ["target_item", "target_cat"], max_len=MAX_LEN, batch_size=64,
                           string_maps={"target_cat": CATS}, output="numpy")
    rows = check_rows(data, list(ds))
    assert sorted(rows) == list(range(240))


def _dist_rank(rank: int, world: int, init_file: str, store: str, out_dir: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                            world_size=world)
    try:
        imp = pq.read_table(f"{out_dir}/imp.parquet")
        ds = ImpressionDataset(store, imp, ["item_id", "action"], ["target_item"], max_len=MAX_LEN,
                               batch_size=16, seed=1, string_maps={"action": "store"},
                               output="numpy")
        assert ds.shard() == (rank, world)
        rows = np.concatenate([b.row for b in ds])
        np.save(f"{out_dir}/rows{rank}.npy", rows)
    finally:
        dist.destroy_process_group()


def test_torch_distributed_ranks_shard_exactly_once(data, tmp_path):
    import torch.multiprocessing as mp

    path, table, pq_path = data
    pq.write_table(table, tmp_path / "imp.parquet")
    world = 2
    # fork: the children need no fresh interpreter (torch is already imported); the store is
    # opened only inside each child, from its path.
    mp.start_processes(_dist_rank, args=(world, str(tmp_path / "init"), str(path), str(tmp_path)),
                       nprocs=world, join=True, start_method="fork")
    parts = [np.load(tmp_path / f"rows{r}.npy") for r in range(world)]
    assert not set(parts[0].tolist()) & set(parts[1].tolist())
    assert sorted(np.concatenate(parts).tolist()) == list(range(240))
