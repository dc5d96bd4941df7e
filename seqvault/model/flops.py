"""Forward FLOPs per sample (torch.utils.flop_counter) and throughput at a given length.

FLOPs are counted by `FlopCounterMode`, which counts matrix products (mm, bmm, addmm, einsum
lowered to bmm, scaled-dot-product attention) and convolutions; element-wise work (activations,
LayerNorm, softmax, masking, embedding lookups) is not counted. A sample is one (user, candidate)
pair with a full history of L real events. Two figures are reported:

* `flops_full`: nothing cached — `encode_user` + `score` for one candidate (the table's figure);
* `flops_candidate`: `score` alone, i.e. the cost of each further candidate of the same request
  once the per-user state is cached (what is cached is each model's `cached_state_note`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from .layers import ModelConfig, SeqBatch
from .registry import build_model


def full_batch(cfg: ModelConfig, batch: int, length: int, candidates: int = 1,
               device: torch.device | str = "cpu", seed: int = 0) -> SeqBatch:
    """A batch of random users whose histories are `length` real events each."""
    g = torch.Generator().manual_seed(seed)
    item = torch.randint(1, cfg.n_items + 1, (batch, length), generator=g)
    cat = torch.randint(1, cfg.n_cats + 1, (batch, length), generator=g)
    aux = torch.zeros(batch, length, dtype=torch.long)
    mask = torch.ones(batch, length, dtype=torch.bool)
    t_item = torch.randint(1, cfg.n_items + 1, (batch, candidates), generator=g)
    t_cat = torch.randint(1, cfg.n_cats + 1, (batch, candidates), generator=g)
    label = torch.randint(0, 2, (batch, candidates), generator=g).float()
    return SeqBatch(item, cat, aux, mask, t_item, t_cat, label).to(device)


@dataclass
class FlopResult:
    model: str
    length: int
    flops_full: int
    flops_user: int
    flops_candidate: int
    cached: str


@torch.no_grad()
def count_flops(name: str, cfg: ModelConfig, length: int) -> FlopResult:
    """Forward FLOPs of one sample at history length `length` (the model's L is set to it)."""
    # On the meta device nothing is computed: shapes flow through and the counter adds up the
    # matrix products, so counting L=4000 costs milliseconds.
    with torch.device("meta"):
        model = build_model(name, cfg.with_(max_len=length)).eval()
    b = full_batch(model.cfg, 1, length, device="meta")
    # The fused CPU attention kernels are invisible to FlopCounterMode; the math backend lowers
    # attention to counted matrix products (the same arithmetic a fused kernel does).
    with sdpa_kernel(SDPBackend.MATH):
        with FlopCounterMode(display=False) as fc:
            state = model.encode_user(b)
        user = int(fc.get_total_flops())
        with FlopCounterMode(display=False) as fc:
            model.score(state, b)
        cand = int(fc.get_total_flops())
    return FlopResult(name, length, user + cand, user, cand, model.cached_state_note())


@dataclass
class Throughput:
    model: str
    length: int
    batch: int
    train_samples_per_s: float
    infer_samples_per_s: float
    device: str


def measure_throughput(name: str, cfg: ModelConfig, length: int, batch: int, device: str,
                       steps: int = 5, warmup: int = 2) -> Throughput:
    """Samples/s of a training step (forward, backward, Adam) and of inference, full histories.

    Out of memory gives NaN rather than an exception, so a sweep over L can go on.
    """
    dev = torch.device(device)
    model = build_model(name, cfg.with_(max_len=length)).to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    b = full_batch(model.cfg, batch, length, device=dev)
    label = b.label
    assert label is not None

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    def train_step() -> None:
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(b), label)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def timed(fn: Callable[[], None], n: int) -> float:
        for _ in range(warmup):
            fn()
        sync()
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        sync()
        return n * batch / (time.perf_counter() - t0)

    def infer_step() -> None:
        with torch.no_grad():
            model(b)

    try:
        train = timed(train_step, steps)
        model.eval()
        infer = timed(infer_step, steps)
    except torch.OutOfMemoryError:
        train = infer = float("nan")
    return Throughput(name, length, batch, train, infer, device)
