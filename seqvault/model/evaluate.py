"""The offline comparison: train every model with one protocol, write tables and plots.

`seqvault model eval` (and `python -m seqvault.model eval`) runs `run_from_options`:
build the data set, load it into a SeqVault store and read point-in-time histories back through
`laser_reader` (or use in-memory arrays), train each model for each seed, count FLOPs, measure
throughput, and write `results.json`, `report.md` and PNG plots into the output folder.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .data import ArrayHistory, CachedHistory, Dataset, HistorySource
from .flops import count_flops, measure_throughput
from .layers import ModelConfig
from .metrics import logloss, roc_auc
from .registry import ABLATIONS, MODELS
from .train import TrainConfig, train_and_evaluate

Log = Callable[[str], None]
ALL_MODELS = ["base", "din", "twin", "hstu", "transformer", "laser"]
PAPER_CONFIG = ModelConfig()  # FLOPs are always counted at the paper's configuration


@dataclass
class EvalPlan:
    data: str = "synthetic"
    models: list[str] = field(default_factory=lambda: list(ALL_MODELS))
    seeds: int = 3
    out: str = "model-eval"
    quick: bool = False
    device: str = "cpu"
    source: str = "auto"
    ablations: bool = True
    segments: list[int] = field(default_factory=lambda: [5, 20])
    depths: list[int] = field(default_factory=list)
    users: int | None = None
    epochs: int | None = None
    throughput_lengths: list[int] = field(default_factory=list)
    store_dir: str | None = None
    deadline_s: float | None = None  # start no training run after this many seconds
    max_len: int | None = None
    batch_size: int | None = None


def _int_list(text: object) -> list[int]:
    if text is None or str(text).strip() == "":
        return []
    try:
        return [int(x) for x in str(text).split(",") if x.strip()]
    except ValueError as exc:
        raise ValueError(f"expected a comma-separated list of integers, got {text!r}") from exc


def plan_from_options(o: dict[str, Any]) -> EvalPlan:
    models = ALL_MODELS if o["models"] == "all" else [m.strip() for m in o["models"].split(",")]
    for m in models:
        if m not in MODELS:
            raise ValueError(f"--models: unknown model {m!r}, expected some of {ALL_MODELS}")
    device = o["device"]
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: torch sees no CUDA device")
    tl = o.get("throughput_lengths")
    lengths = _int_list(tl) if tl is not None else ([1000, 4000] if device == "cuda" else [])
    return EvalPlan(
        data=o["data"], models=models, seeds=o["seeds"], out=o["out"], quick=o["quick"],
        device=device, source=o["source"], ablations=o["ablations"],
        segments=_int_list(o["segments"]), depths=_int_list(o.get("depths")),
        users=o.get("users"), epochs=o.get("epochs"), throughput_lengths=lengths,
        store_dir=o.get("store_dir"), deadline_s=o.get("deadline"), max_len=o.get("max_len"),
        batch_size=o.get("batch_size"),
    )


def run_from_options(options: dict[str, Any], log: Log = print) -> dict[str, Any]:
    if options.get("threads"):
        torch.set_num_threads(int(options["threads"]))
    return run(plan_from_options(options), log)


# ---------------------------------------------------------------------------- set-up

def load_dataset(plan: EvalPlan) -> Dataset:
    if plan.data == "synthetic":
        from .data_synthetic import SyntheticConfig, generate

        cfg = SyntheticConfig.quick() if plan.quick else SyntheticConfig()
        if plan.users is not None:
            cfg = replace(cfg, n_users=plan.users)
        return generate(cfg)
    from .data_movielens import load_movielens

    return load_movielens(max_users=plan.users or (1000 if plan.quick else None))


def model_config(plan: EvalPlan, ds: Dataset) -> ModelConfig:
    cfg = _model_config(plan, ds)
    return cfg.with_(max_len=plan.max_len) if plan.max_len else cfg


def _model_config(plan: EvalPlan, ds: Dataset) -> ModelConfig:
    if plan.quick:
        # L=100 (the quick synthetic data's truth window), w=10, a narrow model.
        return ModelConfig(n_items=ds.n_items, n_cats=ds.n_cats, n_aux=ds.n_aux, embed_dim=16,
                           d_model=32, qk_dim=8, max_len=100, segment=10, base_len=20,
                           twin_topk=20, head_hidden=(64, 32))
    return PAPER_CONFIG.with_(n_items=ds.n_items, n_cats=ds.n_cats, n_aux=ds.n_aux)


def train_config(plan: EvalPlan, seed: int) -> TrainConfig:
    cfg = _train_config(plan, seed)
    return replace(cfg, batch_size=plan.batch_size) if plan.batch_size else cfg


def _train_config(plan: EvalPlan, seed: int) -> TrainConfig:
    if plan.quick:
        return TrainConfig(batch_size=128, lr=2e-3, max_epochs=plan.epochs or 3, patience=1,
                           device=plan.device, seed=seed)
    if plan.device == "cuda":  # larger batches keep the GPU busy; lr scaled with them
        return TrainConfig(batch_size=1024, lr=2e-3, max_epochs=plan.epochs or 5, patience=1,
                           device=plan.device, seed=seed)
    return TrainConfig(batch_size=256, lr=1e-3, max_epochs=plan.epochs or 4, patience=1,
                       device=plan.device, seed=seed)


def history_source(plan: EvalPlan, ds: Dataset, max_len: int, log: Log
                   ) -> tuple[HistorySource | CachedHistory, str]:
    if plan.source in ("auto", "store"):
        try:
            from .store_adapter import StoreHistory, store_available
        except ImportError as exc:  # pragma: no cover - only without the adapter's deps
            if plan.source == "store":
                raise ValueError(f"--source store: {exc}") from exc
        else:
            reason = store_available()
            if reason is None:
                store_dir = Path(plan.store_dir or os.path.join(plan.out, "store"))
                t0 = time.perf_counter()
                src = StoreHistory.build(ds, store_dir, log=log)
                cached = CachedHistory(src, ds.impressions, max_len)
                log(f"store: loaded and read back {len(ds.impressions)} histories through "
                    f"laser_reader in {time.perf_counter() - t0:.1f}s ({store_dir})")
                return cached, "store (SeqVault + laser_reader, point-in-time)"
            if plan.source == "store":
                raise ValueError(f"--source store: {reason}")
            log(f"store path unavailable ({reason}); using in-memory arrays")
    arrays = ArrayHistory(ds.events)
    if plan.device == "cuda":
        # gather once (one read per request): per-batch numpy gathers would starve the GPU
        return CachedHistory(arrays, ds.impressions, max_len), "arrays (numpy, point-in-time)"
    return arrays, "arrays (numpy, point-in-time)"


# ---------------------------------------------------------------------------- run

def _stats(values: list[float]) -> tuple[float, float]:
    arr = np.asarray(values, dtype=np.float64)
    std = float(arr.std(ddof=1)) if len(arr) > 1 else 0.0
    return float(arr.mean()), std


def _summarise(runs: list[dict[str, Any]], variants: list[str]) -> dict[str, dict[str, float]]:
    summary: dict[str, dict[str, float]] = {}
    for name in variants:
        rs = [r for r in runs if r["model"] == name]
        if not rs:
            continue
        auc_m, auc_s = _stats([r["test_auc"] for r in rs])
        ll_m, ll_s = _stats([r["test_logloss"] for r in rs])
        summary[name] = {
            "auc_mean": auc_m, "auc_std": auc_s, "logloss_mean": ll_m, "logloss_std": ll_s,
            "seeds": len(rs), "params": rs[0]["params"],
            "train_samples_per_s": float(np.median([r["train_samples_per_s"] for r in rs])),
            "infer_samples_per_s": float(np.median([r["infer_samples_per_s"] for r in rs])),
        }
    return summary


def _write(results: dict[str, Any], out: Path, plots: bool) -> list[Path]:
    from .report import write_plots, write_report

    (out / "results.json").write_text(json.dumps(results, indent=2, default=str))
    (out / "report.md").write_text(write_report(results))
    return write_plots(results, out) if plots else []


def run(plan: EvalPlan, log: Log = print) -> dict[str, Any]:
    """The whole comparison. Results are rewritten after every training run, so a run cut
    short (`deadline_s`, or killed) still leaves the tables of what finished."""
    start = time.perf_counter()
    out = Path(plan.out)
    out.mkdir(parents=True, exist_ok=True)
    if plan.device == "cuda":
        # TF32 matrix products for every model alike (stated in the report's environment line)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    log(f"data: {plan.data}{' (quick)' if plan.quick else ''}")
    ds = load_dataset(plan)
    mcfg = model_config(plan, ds)
    source, source_note = history_source(plan, ds, mcfg.max_len, log)
    imps = ds.impressions
    results: dict[str, Any] = {
        "plan": asdict(plan), "dataset": ds.info, "model_config": asdict(mcfg),
        "train_config": asdict(train_config(plan, 0)), "source": source_note,
        "rows": {s: int(len(imps.rows(s))) for s in ("train", "val", "test")},
        "environment": {"python": platform.python_version(), "torch": torch.__version__,
                        "device": (torch.cuda.get_device_name(0) + " (TF32 matmuls)"
                                   if plan.device == "cuda"
                                   else platform.processor() or platform.machine()),
                        "threads": torch.get_num_threads()},
        "command": "seqvault model eval " + " ".join(sys.argv[1:]),
        "runs": [], "summary": {}, "flops": [], "throughput": [], "unfinished": [],
    }
    if imps.prob is not None:
        te = imps.rows("test")
        results["bayes"] = {"auc": roc_auc(imps.label[te], imps.prob[te]),
                            "logloss": logloss(imps.label[te], imps.prob[te])}
        log(f"Bayes ceiling on test: AUC {results['bayes']['auc']:.4f}")

    variants: list[str] = list(plan.models)
    if plan.ablations:
        variants += [a for a in ABLATIONS if a != "laser"]
    variants += [f"laser-w{w}" for w in plan.segments if w != mcfg.segment]
    variants += [f"laser-m{m}" for m in plan.depths if m != mcfg.gsta_layers]

    log("FLOPs at the paper's configuration (d=128, 2 heads, 16 q/k dims per head)")
    for name in variants:
        for length in (1000, 4000):
            results["flops"].append(asdict(count_flops(name, PAPER_CONFIG, length)))

    for length in plan.throughput_lengths:
        # the same number of events per batch at every L (256 users at L=1,000)
        batch = max(4, (256 if plan.device == "cuda" else 16) * 1000 // max(length, 1000))
        for name in plan.models:
            t = measure_throughput(name, PAPER_CONFIG, length, batch, plan.device)
            if plan.device == "cuda":
                torch.cuda.empty_cache()  # the previous model's buffers are garbage by now
            log(f"throughput {name:12s} L={length} batch {batch}: train "
                f"{t.train_samples_per_s:,.0f}/s infer {t.infer_samples_per_s:,.0f}/s")
            results["throughput"].append(asdict(t))
    _write(results, out, plots=False)

    for name in variants:
        for seed in range(plan.seeds):
            if plan.deadline_s is not None and time.perf_counter() - start >= plan.deadline_s:
                results["unfinished"].append(f"{name} seed {seed}")
                continue
            r = train_and_evaluate(name, mcfg, ds, source, train_config(plan, seed), log=None)
            log(f"{name:18s} seed {seed}: test AUC {r.test_auc:.4f} logloss {r.test_logloss:.4f}"
                f" ({r.seconds:.1f}s, best step {r.best_step}/{r.steps})")
            results["runs"].append(r.as_dict())
            results["summary"] = _summarise(results["runs"], variants)
            results["seconds"] = time.perf_counter() - start
            _write(results, out, plots=False)
    if results["unfinished"]:
        log(f"deadline: not run: {', '.join(results['unfinished'])}")
    results["seconds"] = time.perf_counter() - start
    plots = _write(results, out, plots=True)
    log(f"wrote {out / 'results.json'}, {out / 'report.md'}"
        + (f", {', '.join(p.name for p in plots)}" if plots else "")
        + f" in {results['seconds']:.0f}s")
    return results


__all__ = ["EvalPlan", "run", "run_from_options"]
