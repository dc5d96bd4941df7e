"""laser_reader → PyTorch: tensor conversion and the mask helpers inside real attention layers."""

from __future__ import annotations

import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402

from seqvault import Schema, SeqVault  # noqa: E402
from seqvault.laser.batch import import_torch  # noqa: E402
from seqvault.laser_reader import LaserReader  # noqa: E402

from ..conftest import behavior_schema_dict  # noqa: E402

pytestmark = pytest.mark.torch
T = 10


@pytest.fixture(scope="module")
def batch(tmp_path_factory: pytest.TempPathFactory):
    # Two bundled columns; time in seconds (the time features convert units).
    schema = Schema.from_dict(behavior_schema_dict(["item_id", "category"], unit="s"))
    rng = np.random.default_rng(0)
    with SeqVault.open(tmp_path_factory.mktemp("t") / "s", schema=schema) as v:
        for u, n in {1: 3, 2: T, 3: 25, 4: 1}.items():
            v.append(u, {"ts": np.arange(n) * 60, "item_id": rng.integers(1, 50, size=n),
                         "category": rng.integers(0, 9, size=n).astype(np.uint16)})
        return {side: LaserReader(v, ["item_id", "category"], max_len=T, padding_side=side)
                .read_batch([1, 2, 3, 4, 99], request_time=10_000) for side in ("left", "right")}


def test_to_torch_dtypes_and_values(batch):
    nb = batch["left"]
    tb = nb.to_torch()
    assert tb.mask.dtype == torch.bool and tb["item_id"].dtype == torch.int64
    assert tb["category"].dtype == torch.int64  # uint16 widened for embedding lookups
    assert tb.lengths.tolist() == [3, T, T, 1, 0]
    np.testing.assert_array_equal(tb["category"].numpy(), nb["category"])
    np.testing.assert_array_equal(tb.age_ms.numpy(), nb.age_ms)
    assert tb.user_id.tolist() == [1, 2, 3, 4, 99]
    # seconds store: ages are reported in ms
    m = nb.mask[0]
    np.testing.assert_array_equal(nb.age_ms[0, m], (10_000 - np.arange(3) * 60) * 1000)
    assert torch.equal(tb.key_padding_mask(), ~tb.mask)
    assert tb.sdpa_mask().shape == (5, 1, 1, T)


def test_pin_memory_without_cuda_warns(batch):
    if torch.cuda.is_available():
        pytest.skip("CUDA present: pinning works")
    with pytest.warns(RuntimeWarning, match="pin_memory"):
        batch["left"].to_torch(pin_memory=True)


def test_missing_torch_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(ImportError, match=r"pip install 'seqvault\[torch\]'"):
        import_torch()


def _embed(tb, garbage: bool):
    torch.manual_seed(0)
    emb = torch.nn.Embedding(64, 8)
    x = emb(tb["item_id"])
    if garbage:  # whatever sits in padded positions must not matter
        noise = torch.randn_like(x) * 100
        x = torch.where(tb.mask[..., None], x, noise)
    return x


@pytest.mark.parametrize("side", ["left", "right"])
def test_key_padding_mask_in_multihead_attention(batch, side):
    tb = batch[side].to_torch()
    mha = torch.nn.MultiheadAttention(8, 2, batch_first=True)
    q = torch.randn(5, 1, 8)
    outs = []
    for garbage in (False, True):
        x = _embed(tb, garbage)
        out, _ = mha(q, x, x, key_padding_mask=tb.key_padding_mask())
        outs.append(out)
    rows = tb.lengths > 0
    assert torch.allclose(outs[0][rows], outs[1][rows], atol=1e-6)
    assert not torch.isnan(outs[0][rows]).any()
    # and it equals attention over the unpadded history
    x = _embed(tb, False)
    for b in torch.nonzero(rows).flatten().tolist():
        keep = tb.mask[b]
        ref, _ = mha(q[b:b + 1], x[b:b + 1, keep], x[b:b + 1, keep])
        assert torch.allclose(ref, outs[0][b:b + 1], atol=1e-6)


@pytest.mark.parametrize("side", ["left", "right"])
def test_sdpa_masks(batch, side):
    tb = batch[side].to_torch()
    rows = tb.lengths > 0
    q = torch.randn(5, 2, 1, 8)
    x = [_embed(tb, g)[:, None].expand(5, 2, T, 8) for g in (False, True)]
    outs = [F.scaled_dot_product_attention(q, k, k, attn_mask=tb.sdpa_mask()) for k in x]
    assert torch.allclose(outs[0][rows], outs[1][rows], atol=1e-5)
    # causal: every real position sees only real events at or before it; no NaN anywhere
    cm = tb.sdpa_mask(causal=True)
    assert cm.shape == (5, 1, T, T)
    c_outs = [F.scaled_dot_product_attention(k, k, k, attn_mask=cm) for k in x]
    assert not torch.isnan(c_outs[0]).any()
    real = tb.mask[:, None, :, None].expand_as(c_outs[0])
    assert torch.allclose(c_outs[0][real], c_outs[1][real], atol=1e-5)
    for b in torch.nonzero(rows).flatten().tolist():
        keep = tb.mask[b]
        xs = x[0][b:b + 1, :, keep]
        ref = F.scaled_dot_product_attention(xs, xs, xs, is_causal=True)
        assert torch.allclose(ref, c_outs[0][b:b + 1, :, keep], atol=1e-5)


def test_numpy_sdpa_mask_matches_torch(batch):
    nb = batch["left"]
    np.testing.assert_array_equal(nb.sdpa_mask(causal=True),
                                  nb.to_torch().sdpa_mask(causal=True).numpy())
    np.testing.assert_array_equal(nb.key_padding_mask(), ~nb.mask)
