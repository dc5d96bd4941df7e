"""One training protocol for every model: fixed split, Adam, early stopping on validation AUC.

Every model gets the same batches in the same order for a seed, the same learning rate, the same
epoch budget and the same patience; the checkpoint with the best validation AUC is scored on the
test split. Throughput is measured on the way (training samples/s excluding evaluation, and
inference samples/s on the test split).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import torch

from .data import CachedHistory, Dataset, Histories, HistorySource, iterate_batches, trim_padding
from .layers import ModelConfig, SeqBatch, SeqModel
from .metrics import logloss, roc_auc
from .registry import build_model


@dataclass(frozen=True)
class TrainConfig:
    batch_size: int = 256
    lr: float = 1e-3
    max_epochs: int = 5
    patience: int = 1  # epochs without a better validation AUC before stopping
    evals_per_epoch: int = 2
    eval_batch_size: int = 1024
    device: str = "cpu"
    seed: int = 0


@dataclass
class RunResult:
    model: str
    seed: int
    val_auc: float
    test_auc: float
    test_logloss: float
    best_step: int
    steps: int
    params: int
    train_samples_per_s: float
    infer_samples_per_s: float
    seconds: float

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def make_batch(ds: Dataset, rows: np.ndarray, h: Histories, segment: int = 1) -> SeqBatch:
    """Tensors for impression `rows` (one candidate per row) and their histories."""
    h = trim_padding(h, segment)
    imps = ds.impressions
    t = torch.from_numpy

    def col(a: np.ndarray) -> torch.Tensor:
        return t(np.ascontiguousarray(a, dtype=np.int64))

    return SeqBatch(
        hist_item=col(h.item), hist_cat=col(h.cat), hist_aux=col(h.aux),
        mask=t(np.ascontiguousarray(h.mask)),
        target_item=col(imps.item[rows])[:, None], target_cat=col(imps.cat[rows])[:, None],
        label=t(imps.label[rows].astype(np.float32))[:, None],
    )


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def predict(model: SeqModel, ds: Dataset, rows: np.ndarray, source: HistorySource | CachedHistory,
            max_len: int, batch_size: int, device: torch.device) -> tuple[np.ndarray, float]:
    """Click probabilities for `rows`, and the seconds spent in the model."""
    model.eval()
    out = []
    spent = 0.0
    for r, h in iterate_batches(ds.impressions, rows, source, max_len, batch_size):
        b = make_batch(ds, r, h).to(device)
        _sync(device)
        t0 = time.perf_counter()
        logits = model(b)
        _sync(device)
        spent += time.perf_counter() - t0
        out.append(torch.sigmoid(logits.float()).squeeze(1).cpu().numpy())
    model.train()
    return (np.concatenate(out) if out else np.zeros(0)), spent


def train_and_evaluate(
    name: str,
    mcfg: ModelConfig,
    ds: Dataset,
    source: HistorySource | CachedHistory,
    tcfg: TrainConfig,
    log: Callable[[str], None] | None = None,
) -> RunResult:
    """Train model `name` with the shared protocol; score the best checkpoint on the test split."""
    device = torch.device(tcfg.device)
    torch.manual_seed(tcfg.seed)
    np.random.seed(tcfg.seed)
    model = build_model(name, mcfg).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=tcfg.lr)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    imps = ds.impressions
    train_rows, val_rows, test_rows = imps.rows("train"), imps.rows("val"), imps.rows("test")
    n_batches = -(-len(train_rows) // tcfg.batch_size)
    eval_at = {round(n_batches * (i + 1) / tcfg.evals_per_epoch) for i in
               range(tcfg.evals_per_epoch)}
    best_auc, best_step, best_state = -1.0, 0, copy.deepcopy(model.state_dict())
    since_best, step, train_time, train_samples = 0, 0, 0.0, 0
    start = time.perf_counter()
    stop = False
    for epoch in range(tcfg.max_epochs):
        batches = iterate_batches(imps, train_rows, source, mcfg.max_len, tcfg.batch_size,
                                  shuffle=True, seed=tcfg.seed * 1000 + epoch)
        for i, (r, h) in enumerate(batches, start=1):
            b = make_batch(ds, r, h).to(device)
            _sync(device)
            t0 = time.perf_counter()
            logits = model(b)
            assert b.label is not None
            loss = loss_fn(logits.float(), b.label)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            _sync(device)
            train_time += time.perf_counter() - t0
            train_samples += len(r)
            step += 1
            if i in eval_at:
                p, _ = predict(model, ds, val_rows, source, mcfg.max_len, tcfg.eval_batch_size,
                               device)
                auc = roc_auc(imps.label[val_rows], p)
                if log is not None:
                    log(f"  {name} seed {tcfg.seed} epoch {epoch} step {step}: "
                        f"loss {loss.item():.4f} val AUC {auc:.4f}")
                if auc > best_auc:
                    best_auc, best_step, since_best = auc, step, 0
                    best_state = copy.deepcopy(model.state_dict())
                else:
                    since_best += 1
                    if since_best >= tcfg.patience * tcfg.evals_per_epoch:
                        stop = True
                        break
        if stop:
            break
    model.load_state_dict(best_state)
    p, infer_time = predict(model, ds, test_rows, source, mcfg.max_len, tcfg.eval_batch_size,
                            device)
    y = imps.label[test_rows]
    return RunResult(
        model=name, seed=tcfg.seed, val_auc=best_auc, test_auc=roc_auc(y, p),
        test_logloss=logloss(y, p), best_step=best_step, steps=step,
        params=sum(x.numel() for x in model.parameters()),
        train_samples_per_s=train_samples / max(train_time, 1e-9),
        infer_samples_per_s=len(test_rows) / max(infer_time, 1e-9),
        seconds=time.perf_counter() - start,
    )
