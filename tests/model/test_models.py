"""Model invariants: shapes, masking, the sigmoid gate, per-user K/V sharing, FLOPs."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from seqvault.model.laser import Laser, segmented_target_attention  # noqa: E402
from seqvault.model.layers import ModelConfig, SeqBatch  # noqa: E402
from seqvault.model.registry import build_model  # noqa: E402

from .conftest import ALL, make_batch  # noqa: E402

LENGTHS = [0, 1, 5, 13, 24, 30]  # empty, shorter than w, ..., longer than L (truncated)


def _model(name: str, cfg: ModelConfig) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(name, cfg).eval()


@pytest.mark.parametrize("name", ALL)
def test_output_shape_finite_and_trainable(name: str, tiny_cfg: ModelConfig) -> None:
    m = _model(name, tiny_cfg).train()
    b = make_batch(tiny_cfg, LENGTHS, t=30, c=3)
    out = m(b)
    assert out.shape == (len(LENGTHS), 3)
    assert torch.isfinite(out).all()
    out.sum().backward()
    grads = [p.grad for p in m.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("name", ALL)
def test_padded_positions_never_change_outputs(name: str, tiny_cfg: ModelConfig) -> None:
    m = _model(name, tiny_cfg)
    b = make_batch(tiny_cfg, LENGTHS, t=30)
    with torch.no_grad():
        ref = m(b)
        # 1. other junk in the padded positions
        junk = make_batch(tiny_cfg, LENGTHS, t=30, seed=7)
        pad = ~b.mask
        b2 = SeqBatch(
            torch.where(pad, junk.hist_item, b.hist_item),
            torch.where(pad, junk.hist_cat, b.hist_cat),
            torch.where(pad, junk.hist_aux, b.hist_aux),
            b.mask, b.target_item, b.target_cat,
        )
        torch.testing.assert_close(m(b2), ref)
        # 2. more left padding (T 30 → 37, not a multiple of w)
        extra = 7

        def padl(x: torch.Tensor, value: int | bool) -> torch.Tensor:
            return torch.nn.functional.pad(x, (extra, 0), value=value)

        b3 = SeqBatch(padl(b.hist_item, 5), padl(b.hist_cat, 2), padl(b.hist_aux, 1),
                      padl(b.mask, False), b.target_item, b.target_cat)
        torch.testing.assert_close(m(b3), ref)


@pytest.mark.parametrize("name", ALL)
def test_user_state_shared_across_candidates_equals_recomputation(
    name: str, tiny_cfg: ModelConfig
) -> None:
    m = _model(name, tiny_cfg)
    b = make_batch(tiny_cfg, LENGTHS, t=30, c=4)
    with torch.no_grad():
        state = m.encode_user(b)  # once per user
        shared = m.score(state, b)
        for c in range(4):
            one = SeqBatch(b.hist_item, b.hist_cat, b.hist_aux, b.mask,
                           b.target_item[:, c:c + 1], b.target_cat[:, c:c + 1])
            torch.testing.assert_close(shared[:, c:c + 1], m(one), rtol=1e-5, atol=1e-6)


def _gate_case(gate: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Two segments of w=3: segment 0 holds events irrelevant to the target (keys opposite to
    the query), segment 1 relevant ones (keys along it)."""
    h, dk, dv, w = 1, 4, 5, 3
    q = torch.zeros(1, 1, h, dk)
    q[..., 0] = 1.0
    k = torch.zeros(1, 2 * w, h, dk)
    k[:, :w, :, 0] = -40.0  # irrelevant: score -20 after 1/√dk
    k[:, w:, :, 0] = 40.0
    v = torch.randn(1, 2 * w, h, dv, generator=torch.Generator().manual_seed(0))
    mask = torch.ones(1, 2 * w, dtype=torch.bool)
    seg, seg_mask = segmented_target_attention(q, k, v, mask, w, gate=gate)
    assert seg.shape == (1, 1, 2, h * dv) and seg_mask.all()
    return seg[0, 0, 0], seg[0, 0, 1]


def test_sigmoid_gate_silences_irrelevant_segment() -> None:
    silent, loud = _gate_case("sigmoid")
    assert silent.abs().max() < 1e-6  # σ(-20) ≈ 2e-9: the segment goes quiet
    assert loud.abs().max() > 0.1


def test_softmax_gate_cannot_silence_a_segment() -> None:
    forced, _ = _gate_case("softmax")
    # weights sum to one inside the segment: the irrelevant segment still emits its mean value
    assert forced.abs().max() > 0.1


def test_sigmoid_gate_counts_where_softmax_averages() -> None:
    """Two relevant events give twice the segment vector of one under sigmoid, not softmax."""
    dk = 2
    q = torch.tensor([[[[1.0, 0.0]]]])
    k = torch.zeros(1, 4, 1, dk)
    k[:, :, :, 0] = torch.tensor([40.0, 40.0, 40.0, -40.0]).view(1, 4, 1)
    v = torch.ones(1, 4, 1, 1)
    mask = torch.ones(1, 4, dtype=torch.bool)
    seg_sig, _ = segmented_target_attention(q, k, v, mask, 2, "sigmoid")
    seg_soft, _ = segmented_target_attention(q, k, v, mask, 2, "softmax")
    assert seg_sig[0, 0, :, 0].tolist() == pytest.approx([2.0, 1.0], abs=1e-6)
    assert seg_soft[0, 0, :, 0].tolist() == pytest.approx([1.0, 1.0], abs=1e-6)


def test_empty_segments_are_masked(tiny_cfg: ModelConfig) -> None:
    m = Laser(tiny_cfg).eval()
    b = make_batch(tiny_cfg, [5], t=24)
    with torch.no_grad():
        state = m.encode_user(b)
        seg, seg_mask = m.segments(state, m.embed.target(b))
    assert seg_mask[0].tolist() == [False] * 4 + [True] * 2  # 5 events, w=4: two segments
    assert seg[0, :, :4].abs().max() == 0


def test_segmented_attention_rejects_bad_input() -> None:
    q, k = torch.zeros(1, 1, 1, 2), torch.zeros(1, 5, 1, 2)
    with pytest.raises(ValueError, match="multiple of w"):
        segmented_target_attention(q, k, k, torch.ones(1, 5, dtype=torch.bool), 2)
    with pytest.raises(ValueError, match="gate"):
        segmented_target_attention(q, k[:, :4], k[:, :4], torch.ones(1, 4, dtype=torch.bool), 2,
                                   gate="relu")


def test_config_and_registry_errors(tiny_cfg: ModelConfig) -> None:
    with pytest.raises(ValueError, match="d_model"):
        ModelConfig(d_model=30, heads=4)
    with pytest.raises(ValueError, match="gate"):
        ModelConfig(gate="tanh")
    with pytest.raises(ValueError, match="unknown model|expected one of"):
        build_model("nope", tiny_cfg)


def test_laser_flops_at_most_a_fifth_of_transformer_and_hstu() -> None:
    from seqvault.model.flops import count_flops

    cfg = ModelConfig(n_items=10, n_cats=3)
    laser = count_flops("laser", cfg, 1000).flops_full
    for other in ("transformer", "hstu"):
        assert laser * 5 <= count_flops(other, cfg, 1000).flops_full
