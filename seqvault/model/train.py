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
from dataclasses import asdict, dataclass, field

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
    # >0: sort runs of this many batches by history length (see `iterate_batches`)
    length_buckets: int = 0
    # >0: split each batch into micro-batches of this size and add up their gradients (the
    # same update as one batch; bounds memory of the quadratic models at long L)
    micro_batch: int = 0
    curve_rows: int = 4096  # at most this many training rows scored per evaluation (curve)


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
    # learning curve: one entry per evaluation (step, epoch, mean training loss since the last
    # evaluation, AUC on a fixed sample of training rows, validation AUC)
    curve: list[dict[str, float]] = field(default_factory=list)

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
        hint=None if imps.hint is None else col(imps.hint[rows])[:, None],
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
    order = np.arange(len(rows))
    if isinstance(source, CachedHistory):
        # score in order of history length (less padding per batch), then restore the order
        order = np.argsort(source.lengths(rows), kind="stable")
    for r, h in iterate_batches(ds.impressions, rows[order], source, max_len, batch_size):
        b = make_batch(ds, r, h).to(device)
        _sync(device)
        t0 = time.perf_counter()
        logits = model(b)
        _sync(device)
        spent += time.perf_counter() - t0
        out.append(torch.sigmoid(logits.float()).squeeze(1).cpu().numpy())
    model.train()
    p = np.concatenate(out) if out else np.zeros(0)
    unsorted = np.empty_like(p)
    unsorted[order] = p
    return unsorted, spent


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
    # a fixed sample of training rows, scored at every evaluation: train vs validation AUC
    # tells over-fitting (train rises, validation falls) from under-fitting (both flat)
    # (as many as the validation split, at most `curve_rows`: the curve costs one more
    # validation-sized pass per evaluation)
    n_curve = min(tcfg.curve_rows, len(val_rows))
    curve_rows = np.random.default_rng(12345).permutation(train_rows)[:n_curve]
    curve: list[dict[str, float]] = []
    loss_sum, loss_n = 0.0, 0
    start = time.perf_counter()
    stop = False
    for epoch in range(tcfg.max_epochs):
        batches = iterate_batches(imps, train_rows, source, mcfg.max_len, tcfg.batch_size,
                                  shuffle=True, seed=tcfg.seed * 1000 + epoch,
                                  buckets=tcfg.length_buckets)
        for i, (r, h) in enumerate(batches, start=1):
            b = make_batch(ds, r, h).to(device)
            _sync(device)
            t0 = time.perf_counter()
            opt.zero_grad(set_to_none=True)
            loss_val = 0.0
            for part, frac in _micro(b, tcfg.micro_batch):
                assert part.label is not None
                loss = loss_fn(model(part).float(), part.label)
                (loss * frac).backward()
                loss_val += float(loss.detach()) * frac
            opt.step()
            _sync(device)
            train_time += time.perf_counter() - t0
            train_samples += len(r)
            loss_sum += loss_val
            loss_n += 1
            step += 1
            if i in eval_at:
                p, _ = predict(model, ds, val_rows, source, mcfg.max_len, tcfg.eval_batch_size,
                               device)
                auc = roc_auc(imps.label[val_rows], p)
                pt, _ = predict(model, ds, curve_rows, source, mcfg.max_len,
                                tcfg.eval_batch_size, device)
                curve.append({"step": step, "epoch": epoch + i / n_batches,
                              "train_loss": loss_sum / max(loss_n, 1),
                              "train_auc": roc_auc(imps.label[curve_rows], pt), "val_auc": auc})
                loss_sum, loss_n = 0.0, 0
                if log is not None:
                    log(f"  {name} seed {tcfg.seed} epoch {epoch} step {step}: "
                        f"loss {loss_val:.4f} val AUC {auc:.4f}")
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
        seconds=time.perf_counter() - start, curve=curve,
    )


def _micro(b: SeqBatch, size: int) -> list[tuple[SeqBatch, float]]:
    """`b` split into micro-batches of at most `size` rows, each with its share of the batch
    (so that the summed gradients of `share * mean loss` equal the full batch's)."""
    n = b.batch_size
    if size <= 0 or n <= size:
        return [(b, 1.0)]
    out = []
    for s in range(0, n, size):
        sl = slice(s, s + size)

        def cut(t: torch.Tensor | None, sl: slice = sl) -> torch.Tensor | None:
            return None if t is None else t[sl]

        part = SeqBatch(b.hist_item[sl], b.hist_cat[sl], b.hist_aux[sl], b.mask[sl],
                        b.target_item[sl], b.target_cat[sl], cut(b.label), cut(b.prob),
                        cut(b.hint))
        out.append((part, part.batch_size / n))
    return out
