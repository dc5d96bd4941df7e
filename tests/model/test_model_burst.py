"""The planted-burst benchmark, the diagnostic probes and the training-protocol knobs of issue 16."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from seqvault.model.data import ArrayHistory, CachedHistory, iterate_batches  # noqa: E402
from seqvault.model.data_synthetic import SyntheticConfig, generate  # noqa: E402
from seqvault.model.layers import ModelConfig  # noqa: E402
from seqvault.model.registry import build_model  # noqa: E402
from seqvault.model.train import TrainConfig, _micro, make_batch, train_and_evaluate  # noqa: E402

from .conftest import make_batch as random_batch  # noqa: E402


def _segment_counts(ds, rows: np.ndarray, window: int, w: int) -> np.ndarray:
    """Brute force: per row, the events of the candidate's topic in each segment of w among
    the latest `window` events, segments cut from the newest."""
    imps = ds.impressions
    h = ArrayHistory(ds.events).gather(imps.user[rows], imps.ts[rows], window)
    hit = (h.cat == imps.cat[rows][:, None]) & h.mask
    return hit[:, ::-1].reshape(len(rows), window // w, w).sum(axis=2)


def test_burst_truth_is_the_densest_segment_not_the_total() -> None:
    cfg = SyntheticConfig.burst(quick=True, n_users=300, scatter=2)
    ds = generate(cfg)
    imps = ds.impressions
    rows = np.arange(len(imps))
    seg = _segment_counts(ds, rows, cfg.window, cfg.segment)
    densest = np.minimum(seg.max(axis=1), cfg.cap)
    assert imps.hint is not None and np.array_equal(imps.hint, densest)
    # the truth is a function of the densest segment and the item: rows with the same item
    # and the same densest count have the same p, whatever their total count
    key = imps.item * 100 + imps.hint
    for k in np.unique(key)[:200]:
        assert np.ptp(imps.prob[key == k]) < 1e-12
    assert ds.info["corr_m_driver"] < 0.95  # the total is only a proxy
    assert (imps.hint >= 2).mean() > 0.2  # bursts exist


def test_burst_segments_with_nothing_sit_next_to_segments_with_several() -> None:
    cfg = SyntheticConfig.burst(quick=True, n_users=300, scatter=2)
    ds = generate(cfg)
    seg = _segment_counts(ds, np.arange(len(ds.impressions)), cfg.window, cfg.segment)
    burst_rows = seg.max(axis=1) >= 3
    assert burst_rows.any()
    # most rows with a burst also have segments with no event of the topic (at quick size 50
    # topics share 100 events, so the most popular topics turn up in every segment)
    assert ((seg[burst_rows] == 0).sum(axis=1) >= 1).mean() > 0.7


def test_count_variant_hint_is_the_capped_window_count() -> None:
    cfg = SyntheticConfig.quick(n_users=200)
    ds = generate(cfg)
    seg = _segment_counts(ds, np.arange(len(ds.impressions)), cfg.window, cfg.segment)
    assert np.array_equal(ds.impressions.hint, np.minimum(seg.sum(axis=1), cfg.cap))
    parts = ds.info["ceiling_parts_test"]
    assert 0.5 < parts["auc_item_term_only"] < parts["auc_sequence_term_only"] < 1.0


def test_burst_rejects_an_unknown_variant() -> None:
    with pytest.raises(ValueError, match="variant"):
        generate(SyntheticConfig.quick(variant="bursty"))


def test_oracle_reads_the_hint_and_needs_it(tiny_cfg: ModelConfig) -> None:
    model = build_model("oracle", tiny_cfg)
    b = random_batch(tiny_cfg, [5, 3], t=8)
    with pytest.raises(ValueError, match="hint"):
        model(b)
    b.hint = torch.tensor([[0, 1], [2, 3]])
    out1 = model(b)
    b.hist_item = torch.randint(1, tiny_cfg.n_items + 1, b.hist_item.shape)  # history unused
    assert torch.equal(out1, model(b))
    b.hint = torch.tensor([[3, 1], [2, 0]])
    assert not torch.equal(out1, model(b))


@pytest.mark.parametrize("name", ["laser+noitem", "laser-softmax+noitem", "transformer+noitem"])
def test_noitem_variants_ignore_item_ids(name: str, tiny_cfg: ModelConfig) -> None:
    torch.manual_seed(0)
    model = build_model(name, tiny_cfg).eval()
    b = random_batch(tiny_cfg, [20, 7, 12], t=24)
    out = model(b)
    b.hist_item = torch.randint(1, tiny_cfg.n_items + 1, b.hist_item.shape)
    b.target_item = torch.randint(1, tiny_cfg.n_items + 1, b.target_item.shape)
    assert torch.allclose(out, model(b))
    b.hist_cat = torch.randint(1, tiny_cfg.n_cats + 1, b.hist_cat.shape)
    assert not torch.allclose(out, model(b))


def test_length_buckets_cover_every_row_once_in_similar_lengths() -> None:
    ds = generate(SyntheticConfig.quick(n_users=300))
    imps = ds.impressions
    cached = CachedHistory(ArrayHistory(ds.events), imps, 100)
    rows = imps.rows("train")
    seen, spreads, plain = [], [], []
    for r, h in iterate_batches(imps, rows, cached, 100, 32, shuffle=True, seed=3, buckets=4):
        seen.append(r)
        spreads.append(np.ptp(h.mask.sum(1)))
    for _, h in iterate_batches(imps, rows, cached, 100, 32, shuffle=True, seed=3):
        plain.append(np.ptp(h.mask.sum(1)))
    assert np.array_equal(np.sort(np.concatenate(seen)), np.sort(rows))
    assert np.mean(spreads) < 0.5 * np.mean(plain)


def test_micro_batches_give_the_full_batch_gradient(tiny_cfg: ModelConfig) -> None:
    torch.manual_seed(0)
    model = build_model("laser", tiny_cfg)
    b = random_batch(tiny_cfg, [20, 7, 12, 3, 24], t=24, c=1)
    b.label = torch.tensor([[1.0], [0.0], [1.0], [0.0], [1.0]])
    loss_fn = torch.nn.BCEWithLogitsLoss()

    def grads(parts: list) -> list[torch.Tensor]:
        model.zero_grad()
        for part, frac in parts:
            (loss_fn(model(part), part.label) * frac).backward()
        return [p.grad.clone() for p in model.parameters() if p.grad is not None]

    full, micro = grads(_micro(b, 0)), grads(_micro(b, 2))
    assert len(_micro(b, 2)) == 3
    assert all(torch.allclose(x, y, atol=1e-6) for x, y in zip(full, micro, strict=True))


def test_training_records_a_learning_curve() -> None:
    ds = generate(SyntheticConfig.quick(n_users=120))
    mcfg = ModelConfig(n_items=ds.n_items, n_cats=ds.n_cats, embed_dim=8, d_model=16, qk_dim=4,
                       max_len=100, segment=10, base_len=20, twin_topk=20, head_hidden=(16,))
    cached = CachedHistory(ArrayHistory(ds.events), ds.impressions, 100)
    r = train_and_evaluate("oracle", mcfg, ds, cached,
                           TrainConfig(batch_size=64, max_epochs=2, length_buckets=2, seed=1))
    assert len(r.curve) >= 2
    assert {"step", "epoch", "train_loss", "train_auc", "val_auc"} <= set(r.curve[0])
    assert r.curve[-1]["epoch"] <= 2.0 and r.val_auc == max(c["val_auc"] for c in r.curve)
    b = make_batch(ds, np.arange(3), cached.rows(np.arange(3)))
    assert b.hint is not None and b.hint.shape == (3, 1)
