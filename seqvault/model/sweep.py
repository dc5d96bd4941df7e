"""The full benchmark on one GPU: many (data set, L, model, seed) runs in parallel processes.

`seqvault model eval` trains one configuration at a time; a small model at d = 128 leaves an
H200 mostly idle (launch- and CPU-bound), so this runner keeps several training processes on the
one GPU at once. Each data set is generated once by its own process and saved (events,
impressions and point-in-time histories at each L) under a work folder; workers memory-map the
histories, so the copies share the page cache. Quadratic models at long L take one of
`heavy_slots` slots (memory). Every finished run is appended to `runs.jsonl` at once, so a run cut
short keeps what finished; `results.json` gathers the runs, per-group summaries with 95%
intervals, and the pre-registered predictions (`PREDICTIONS`) with their outcome.

    python -m seqvault.model.sweep --plan full --device cuda --workers 6 --out OUT
    python -m seqvault.model.sweep --plan tiny --device cpu --out /tmp/sweep   # tests, seconds

Histories come from the numpy path (`ArrayHistory`), not the store: the GPU machine has no LMDB
or ZSTD bindings, and a test checks that both paths give identical arrays.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import queue
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from .data import ArrayHistory, CachedHistory, Dataset, EventLog, Impressions
from .data_synthetic import SyntheticConfig, generate
from .metrics import diff_ci, logloss, mean_ci, roc_auc

LASER_FAMILY = ["laser", "laser-softmax", "laser-no-recency", "laser-no-fusion"]
# HSTU materialises [batch, heads, L, L] attention (SDPA keeps the Transformer's small): at long
# L it takes one of the few "heavy" slots and runs in micro-batches
MATERIALISED = {"hstu"}


@dataclass(frozen=True)
class DataSpec:
    variant: str = "count"  # "count" | "burst"
    users: int = 30000
    scatter: int = 4  # burst only: the noise level
    quick: bool = False  # the --quick sizes (tests)

    @property
    def key(self) -> str:
        size = "q" if self.quick else ""
        if self.variant == "count":
            return f"count{size}-u{self.users}"
        return f"burst{size}-s{self.scatter}-u{self.users}"

    def config(self) -> SyntheticConfig:
        if self.variant == "count":
            base = SyntheticConfig.quick() if self.quick else SyntheticConfig()
            return replace(base, n_users=self.users)
        return SyntheticConfig.burst(quick=self.quick, n_users=self.users, scatter=self.scatter)


@dataclass(frozen=True)
class Job:
    group: str  # the table a run belongs to, e.g. "count-L1000"
    data: DataSpec
    max_len: int
    model: str
    seed: int
    epochs: int | None = None
    buckets: bool = True  # length buckets on the GPU (False: the plain shuffled batches)

    @property
    def heavy(self) -> bool:
        return self.model in MATERIALISED and self.max_len >= 1000


@dataclass(frozen=True)
class Prediction:
    """A claim written down before the run: in `group`, AUC(a) − AUC(b) compared with
    `threshold` (AUC points ×100). `sign` +1: holds when the difference's 95% interval lies above
    the threshold; −1: when it lies below; 0: when the whole interval lies within ±threshold."""

    pid: str
    text: str
    group: str
    a: str
    b: str
    sign: int
    threshold: float


# Pre-registered in docs/model.md before the full run (commit "model: pre-register ...").
PREDICTIONS = [
    Prediction("P1", "Count benchmark, L=1,000: sigmoid and softmax STA tie (|Δ| < 0.5 pt) — "
               "the truth is a total over segments, which neither passes through intact",
               "count-L1000", "laser", "laser-softmax", 0, 0.5),
    Prediction("P2", "Burst benchmark (noise 4): sigmoid STA beats softmax STA by more than "
               "0.5 pt", "burst-s4-L1000", "laser", "laser-softmax", +1, 0.5),
    Prediction("P3", "Burst benchmark, noise 12: sigmoid beats softmax by more than 0.5 pt",
               "burst-s12-L1000", "laser", "laser-softmax", +1, 0.5),
    Prediction("P4", "Burst benchmark, noise 0: the gap is smaller — sigmoid and softmax within "
               "1 pt", "burst-s0-L1000", "laser", "laser-softmax", 0, 1.0),
    Prediction("P5", "Burst benchmark (noise 4): removing fusion (the max-pool that reads the "
               "densest segment) costs LASER more than 0.3 pt", "burst-s4-L1000", "laser",
               "laser-no-fusion", +1, 0.3),
    Prediction("P6", "Burst benchmark (noise 4): the recency embedding does not matter "
               "(|Δ| < 0.5 pt): the truth ignores where the burst is", "burst-s4-L1000",
               "laser", "laser-no-recency", 0, 0.5),
    Prediction("P7", "Count benchmark, L=1,000: removing the recency embedding costs more than "
               "0.5 pt (the earlier run: −1.44)", "count-L1000", "laser", "laser-no-recency",
               +1, 0.5),
    Prediction("P8", "Burst benchmark (noise 4): LASER beats the Transformer by more than "
               "0.5 pt (softmax pooling normalises the count away)", "burst-s4-L1000", "laser",
               "transformer", +1, 0.5),
    Prediction("P9", "Burst benchmark (noise 4): LASER beats DIN by more than 0.5 pt (DIN "
               "sums over the whole history: the total count, a noisy proxy)",
               "burst-s4-L1000", "laser", "din", +1, 0.5),
    Prediction("P10", "Count benchmark: LASER at L=4,000 is within 0.5 pt of L=1,000 (the "
                "truth looks at the latest 1,000)", "count-L4000", "laser", "laser@count-L1000",
                0, 0.5),
    Prediction("P12", "Count benchmark, L=1,000: LASER that ignores item ids does at least as "
                "well as LASER (Δ > −0.5 pt): the item table over-fits",
                "count-L1000", "laser+noitem", "laser", +1, -0.5),
    Prediction("P13", "Burst benchmark (noise 4), item ids ignored: sigmoid beats softmax by "
                "more than 0.5 pt", "burst-s4-L1000", "laser+noitem", "laser-softmax+noitem",
                +1, 0.5),
    Prediction("P11", "Count benchmark: the oracle handed the true count beats LASER by more "
                "than 2 pt — most of the gap to the ceiling is the sequence module",
                "count-L1000", "oracle", "laser", +1, 2.0),
]


def plan_jobs(plan: str) -> list[Job]:
    """The job lists. Order matters: heavy jobs first, so they overlap with the light ones."""
    jobs: list[Job] = []

    def add(group: str, data: DataSpec, max_len: int, models: list[str], seeds: int,
            epochs: int | None = None, buckets: bool = True) -> None:
        jobs.extend(Job(group, data, max_len, m, s, epochs, buckets) for m in models
                    for s in range(seeds))

    if plan == "tiny":  # the test's plan: quick-size data, CPU, seconds
        cq, bq = DataSpec(users=200, quick=True), DataSpec("burst", 200, 2, quick=True)
        add("count-L100", cq, 100, ["laser", "oracle"], 2, epochs=1)
        add("burst-s2-L100", bq, 100, ["laser", "laser-softmax"], 2, epochs=1)
        return jobs
    count = DataSpec()
    bursts = {s: DataSpec("burst", 30000, s) for s in (0, 4, 12)}
    if plan == "smoke":  # one epoch of the costliest runs, to time the full plan
        add("count-L4000", count, 4000, ["hstu", "transformer"], 1, epochs=1)
        add("count-L1000", count, 1000, ["laser", "oracle"], 1, epochs=1)
        add("burst-s4-L1000", bursts[4], 1000, ["laser", "laser-softmax"], 1, epochs=1)
        return jobs
    if plan == "second":  # after the full run: what its deadline cut, in the regime that learns
        for s in (12, 0):
            add(f"burst-s{s}-L1000", bursts[s], 1000,
                ["laser+noitem", "laser-softmax+noitem"], 3)
        add("count-L1000-nobucket", count, 1000, ["laser"], 3, buckets=False)
        add("burst-s4-L1000", bursts[4], 1000, ["transformer+noitem"], 2)
        for users in (60000, 120000):
            add(f"count-u{users}-L1000", DataSpec(users=users), 1000, ["laser"], 2)
        return jobs
    if plan != "full":
        raise ValueError(f"sweep: unknown plan {plan!r}, expected tiny|smoke|full|second")
    # light jobs run in this order (most important first); heavy ones whenever a slot is free
    b4 = bursts[4]
    add("count-L4000", count, 4000, ["hstu"], 3)
    add("burst-s4-L1000", b4, 1000, ["laser", "laser-softmax"], 5)
    add("burst-s4-L1000", b4, 1000, ["transformer", "hstu"], 3)
    add("count-L1000", count, 1000, ["laser", "laser-softmax"], 5)
    add("count-L1000", count, 1000, ["transformer", "hstu"], 3)
    add("burst-s4-L1000", b4, 1000, ["laser-no-recency", "laser-no-fusion"], 5)
    add("burst-s4-L1000", b4, 1000, ["din", "oracle"], 3)
    add("count-L1000", count, 1000, ["laser-no-recency", "laser-no-fusion"], 5)
    add("count-L1000", count, 1000, ["oracle", "laser+noitem"], 3)
    add("burst-s4-L1000", b4, 1000, ["laser+noitem", "laser-softmax+noitem"], 3)
    add("count-L4000", count, 4000, ["transformer"] + LASER_FAMILY, 3)
    for s in (0, 12):
        add(f"burst-s{s}-L1000", bursts[s], 1000, ["laser", "laser-softmax", "din", "oracle"], 3)
    add("count-L1000", count, 1000, ["base", "din", "twin"], 3)
    add("burst-s4-L1000", b4, 1000, ["base"], 3)
    # diagnosis: data size (users ×2, ×4) and capacity (d = 64, 256)
    for users in (60000, 120000):
        add(f"count-u{users}-L1000", DataSpec(users=users), 1000, ["laser", "oracle"], 2)
    add("burst-s4-u120000-L1000", DataSpec("burst", 120000, 4), 1000,
        ["laser", "laser-softmax"], 3)
    add("count-L1000", count, 1000, ["laser-d64", "laser-d256"], 2)
    return jobs


# ---------------------------------------------------------------------------- data preparation

def _data_dir(work: Path, spec: DataSpec) -> Path:
    return work / spec.key


def prepare(spec: DataSpec, lengths: list[int], work: Path) -> None:
    """Generate `spec`'s data set and save it with its histories at every L (a process)."""
    d = _data_dir(work, spec)
    d.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    ds = generate(spec.config())
    e, i = ds.events, ds.impressions
    np.savez(d / "data.npz", e_user=e.user, e_item=e.item, e_cat=e.cat, e_aux=e.aux, e_ts=e.ts,
             i_user=i.user, i_item=i.item, i_cat=i.cat, i_ts=i.ts, i_label=i.label,
             i_split=i.split, i_prob=i.prob if i.prob is not None else np.zeros(0),
             i_hint=i.hint if i.hint is not None else np.zeros(0, dtype=np.int64))
    meta = {"n_items": ds.n_items, "n_cats": ds.n_cats, "n_aux": ds.n_aux, "info": ds.info,
            "generate_s": time.perf_counter() - t0}
    arrays = ArrayHistory(ds.events)
    for length in lengths:
        c = CachedHistory(arrays, ds.impressions, length)
        for name in ("item", "cat", "aux", "mask", "row_to_pair"):
            np.save(d / f"L{length}-{name}.npy", getattr(c, name))
    meta["prepare_s"] = time.perf_counter() - t0
    (d / "meta.json").write_text(json.dumps(meta, default=str))
    (d / "ready").write_text("ok")


def load(work: Path, spec: DataSpec, length: int) -> tuple[Dataset, CachedHistory]:
    d = _data_dir(work, spec)
    z = np.load(d / "data.npz")
    meta = json.loads((d / "meta.json").read_text())
    # training reads the cached histories only: the event log stays on disk
    empty = np.zeros(0, dtype=np.int64)
    events = EventLog(empty, empty, empty, empty, empty)
    prob, hint = z["i_prob"], z["i_hint"]
    imps = Impressions(z["i_user"], z["i_item"], z["i_cat"], z["i_ts"], z["i_label"],
                       z["i_split"], prob if len(prob) else None, hint if len(hint) else None)
    ds = Dataset("synthetic", events, imps, meta["n_items"], meta["n_cats"], meta["n_aux"],
                 meta["info"])
    cached = CachedHistory.__new__(CachedHistory)
    for name in ("item", "cat", "aux", "mask", "row_to_pair"):
        # memory-mapped: workers share one copy in the page cache
        setattr(cached, name, np.load(d / f"L{length}-{name}.npy", mmap_mode="r"))
    return ds, cached


# ---------------------------------------------------------------------------- workers

@dataclass
class Options:
    device: str = "cuda"
    workers: int = 6
    heavy_slots: int = 2
    deadline_s: float = 540.0
    threads: int = 2
    epochs: int | None = None
    micro_batch_heavy: int = 128


def _next_job(light: Any, heavy_q: Any, heavy: Any) -> tuple[Job | None, bool]:
    """A heavy job when a heavy slot is free, else a light one, else wait for a heavy slot.
    Returns (job or None when both queues are empty, whether a slot is held)."""
    if heavy.acquire(block=False):
        try:
            return heavy_q.get(timeout=0.2), True
        except queue.Empty:
            heavy.release()
    try:
        return light.get(timeout=0.2), False
    except queue.Empty:
        pass
    heavy.acquire()
    try:
        return heavy_q.get(timeout=0.2), True
    except queue.Empty:
        heavy.release()
        return None, False


def _worker(wid: int, light: Any, heavy_q: Any, results: Any, heavy: Any, work: Path,
            opts: Options, start: float) -> None:
    import torch

    from .evaluate import PAPER_CONFIG
    from .train import TrainConfig, train_and_evaluate

    torch.set_num_threads(opts.threads)
    if opts.device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    loaded: dict[tuple[str, int], tuple[Dataset, CachedHistory]] = {}
    while True:
        job, holds = _next_job(light, heavy_q, heavy)
        if job is None:
            return
        if time.time() - start > opts.deadline_s:
            if holds:
                heavy.release()
            results.put({"job": asdict(job), "unfinished": "deadline"})
            continue
        ready = _data_dir(work, job.data) / "ready"
        while not ready.exists():
            if time.time() - start > opts.deadline_s:
                break
            time.sleep(0.5)
        if not ready.exists():
            if holds:
                heavy.release()
            results.put({"job": asdict(job), "unfinished": "data not ready by the deadline"})
            continue
        key = (job.data.key, job.max_len)
        if key not in loaded:
            loaded.clear()  # one data set at a time per worker: bounded memory
            loaded[key] = load(work, job.data, job.max_len)
        ds, hist = loaded[key]
        if job.data.quick:
            mcfg = PAPER_CONFIG.with_(n_items=ds.n_items, n_cats=ds.n_cats, n_aux=ds.n_aux,
                                      embed_dim=16, d_model=32, qk_dim=8, base_len=20,
                                      twin_topk=20, head_hidden=(64, 32))
        else:
            mcfg = PAPER_CONFIG.with_(n_items=ds.n_items, n_cats=ds.n_cats, n_aux=ds.n_aux)
        mcfg = mcfg.with_(max_len=job.max_len)
        cuda = opts.device == "cuda"
        micro = 0 if not job.heavy else (opts.micro_batch_heavy if job.max_len >= 2000 else 256)
        tcfg = TrainConfig(batch_size=1024 if cuda else 128, lr=2e-3,
                           max_epochs=job.epochs or opts.epochs or (5 if cuda else 3),
                           patience=1, device=opts.device, seed=job.seed,
                           length_buckets=50 if (cuda and job.buckets) else 0,
                           micro_batch=micro, eval_batch_size=micro or 1024)
        t0 = time.time()
        try:
            r = train_and_evaluate(job.model, mcfg, ds, hist, tcfg)
            out: dict[str, Any] = {"job": asdict(job), "worker": wid, "started": t0 - start,
                                   **r.as_dict()}
        except Exception as exc:  # noqa: BLE001 - one failed run must not sink the sweep
            out = {"job": asdict(job), "unfinished": f"{type(exc).__name__}: {exc}"}
        finally:
            if holds:
                heavy.release()
            if cuda:
                torch.cuda.empty_cache()
        results.put(out)


def run_sweep(plan: str, out: Path, work: Path, opts: Options, log: Any = print) -> dict[str, Any]:
    start = time.time()
    out.mkdir(parents=True, exist_ok=True)
    jobs = plan_jobs(plan)
    specs: dict[DataSpec, set[int]] = {}
    for j in jobs:
        specs.setdefault(j.data, set()).add(j.max_len)
    ctx = mp.get_context("spawn")
    preps = []
    for spec, lengths in specs.items():
        if not (_data_dir(work, spec) / "ready").exists():
            p = ctx.Process(target=prepare, args=(spec, sorted(lengths), work))
            p.start()
            preps.append(p)
    light, heavy_q, rq = ctx.Queue(), ctx.Queue(), ctx.Queue()
    for j in jobs:
        (heavy_q if j.heavy else light).put(j)
    heavy = ctx.Semaphore(opts.heavy_slots)
    workers = [ctx.Process(target=_worker, args=(w, light, heavy_q, rq, heavy, work, opts, start))
               for w in range(opts.workers)]
    for w in workers:
        w.start()
    runs: list[dict[str, Any]] = []
    unfinished: list[dict[str, Any]] = []
    with open(out / "runs.jsonl", "w") as f:
        for _ in range(len(jobs)):
            while True:
                try:
                    r = rq.get(timeout=5)
                    break
                except queue.Empty:
                    if not any(w.is_alive() for w in workers):
                        r = None
                        break
            if r is None:
                log("sweep: every worker has exited; some results are missing")
                break
            f.write(json.dumps(r) + "\n")
            f.flush()
            j = r["job"]
            if "unfinished" in r:
                unfinished.append(r)
                log(f"{j['group']:22s} {j['model']:18s} seed {j['seed']}: not run "
                    f"({r['unfinished']})")
            else:
                runs.append(r)
                log(f"{j['group']:22s} {j['model']:18s} seed {j['seed']}: test AUC "
                    f"{r['test_auc']:.4f} ({r['seconds']:.0f}s, best step {r['best_step']}/"
                    f"{r['steps']}, t={time.time() - start:.0f}s)")
    for w in workers:
        w.join(timeout=10)
    for p in preps:
        p.join(timeout=1)
    results = summarise(runs, unfinished, work, specs)
    results["plan"] = plan
    results["options"] = asdict(opts)
    results["seconds"] = time.time() - start
    results["command"] = "python -m seqvault.model.sweep " + " ".join(sys.argv[1:])
    results["environment"] = _environment(opts.device)
    (out / "results.json").write_text(json.dumps(results, indent=1, default=str))
    log(f"sweep: {len(runs)} runs, {len(unfinished)} not run, {results['seconds']:.0f}s")
    return results


def _environment(device: str) -> dict[str, Any]:
    import torch

    return {"python": platform.python_version(), "torch": torch.__version__,
            "device": (torch.cuda.get_device_name(0) + " (TF32 matmuls)" if device == "cuda"
                       else platform.machine()),
            "cpus": os.cpu_count()}


# ---------------------------------------------------------------------------- summaries

def summarise(runs: list[dict[str, Any]], unfinished: list[dict[str, Any]], work: Path,
              specs: dict[DataSpec, set[int]]) -> dict[str, Any]:
    """Per group and model: mean, std, 95% interval; the data sets' ceilings; predictions."""
    datasets: dict[str, Any] = {}
    for spec in specs:
        meta_file = _data_dir(work, spec) / "meta.json"
        if meta_file.exists():
            meta = json.loads(meta_file.read_text())
            z = np.load(_data_dir(work, spec) / "data.npz")
            te = z["i_split"] == 2
            meta["bayes_test"] = {"auc": roc_auc(z["i_label"][te], z["i_prob"][te]),
                                  "logloss": logloss(z["i_label"][te], z["i_prob"][te])}
            meta["rows"] = {s: int((z["i_split"] == k).sum())
                            for s, k in (("train", 0), ("val", 1), ("test", 2))}
            datasets[spec.key] = meta
    groups = group_runs(runs)
    return {"groups": groups, "datasets": datasets, "runs": runs, "unfinished": unfinished,
            "predictions": judge(groups)}


def group_runs(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """{group: {data, max_len, models: {model: mean, 95% half-width, std, seeds, ...}}}."""
    groups: dict[str, dict[str, Any]] = {}
    by: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in runs:
        by.setdefault((r["job"]["group"], r["model"]), []).append(r)
    for (g, m), rs in sorted(by.items()):
        aucs = [r["test_auc"] for r in rs]
        mean, half = mean_ci(aucs)
        ll_mean, ll_half = mean_ci([r["test_logloss"] for r in rs])
        groups.setdefault(g, {"data": rs[0]["job"]["data"], "max_len": rs[0]["job"]["max_len"],
                              "models": {}})
        groups[g]["models"][m] = {
            "auc_mean": mean, "auc_ci95": half,
            "auc_std": float(np.std(aucs, ddof=1)) if len(aucs) > 1 else float("nan"),
            "logloss_mean": ll_mean, "logloss_ci95": ll_half, "seeds": len(rs),
            "aucs": aucs, "best_step": [r["best_step"] for r in rs],
            "steps": [r["steps"] for r in rs], "params": rs[0]["params"],
            "train_samples_per_s": float(np.median([r["train_samples_per_s"] for r in rs])),
            "infer_samples_per_s": float(np.median([r["infer_samples_per_s"] for r in rs])),
        }
    return groups


def _aucs(groups: dict[str, Any], group: str, model: str) -> list[float] | None:
    if "@" in model:  # "model@other-group"
        model, group = model.split("@", 1)
    m = groups.get(group, {}).get("models", {}).get(model)
    return None if m is None else list(m["aucs"])


def judge(groups: dict[str, Any], predictions: list[Prediction] | None = None
          ) -> list[dict[str, Any]]:
    """Each prediction with Δ = AUC(a) − AUC(b) in points, its 95% interval and the verdict."""
    out = []
    for p in PREDICTIONS if predictions is None else predictions:
        a, b = _aucs(groups, p.group, p.a), _aucs(groups, p.group, p.b)
        row: dict[str, Any] = asdict(p)
        if a is None or b is None or len(a) < 2 or len(b) < 2:
            row.update(verdict="not run")
            out.append(row)
            continue
        d, half = diff_ci(a, b)
        lo, hi = 100 * (d - half), 100 * (d + half)
        if p.sign > 0:
            verdict = "held" if lo > p.threshold else ("refuted" if hi < p.threshold
                                                       else "inconclusive")
        elif p.sign < 0:
            verdict = "held" if hi < -p.threshold else ("refuted" if lo > -p.threshold
                                                        else "inconclusive")
        else:
            inside = -p.threshold < lo and hi < p.threshold
            outside = lo > p.threshold or hi < -p.threshold
            verdict = "held" if inside else ("refuted" if outside else "inconclusive")
        row.update(delta_pt=100 * d, ci95_pt=[lo, hi], verdict=verdict, n=[len(a), len(b)])
        out.append(row)
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m seqvault.model.sweep", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--plan", default="full", choices=("tiny", "smoke", "full", "second"))
    ap.add_argument("--out", required=True)
    ap.add_argument("--work", default=None, help="data folder (default: OUT/work)")
    ap.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    ap.add_argument("--workers", type=int, default=6)
    ap.add_argument("--heavy-slots", type=int, default=2)
    ap.add_argument("--deadline", type=float, default=540.0,
                    help="seconds after which no further run starts")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=None)
    a = ap.parse_args(argv)
    out = Path(a.out)
    opts = Options(device=a.device, workers=a.workers, heavy_slots=a.heavy_slots,
                   deadline_s=a.deadline, threads=a.threads, epochs=a.epochs)
    run_sweep(a.plan, out, Path(a.work) if a.work else out / "work", opts,
              log=lambda m: print(m, flush=True))


if __name__ == "__main__":
    main()


__all__ = ["DataSpec", "Job", "Prediction", "PREDICTIONS", "plan_jobs", "run_sweep", "judge",
           "group_runs"]
