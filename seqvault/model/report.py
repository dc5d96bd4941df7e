"""Markdown tables and PNG plots from an evaluation's `results.json` dictionary."""

from __future__ import annotations

from pathlib import Path
from typing import Any

PAPER_NAMES = {"base": "Base", "din": "DIN", "twin": "TWIN", "hstu": "HSTU",
               "transformer": "Transformer", "laser": "LASER"}
ABLATION_NAMES = {
    "laser": "LASER (full)",
    "laser-softmax": "softmax instead of sigmoid in STA",
    "laser-no-recency": "without recency embedding",
    "laser-no-fusion": "without multi-resolution fusion",
    "laser-no-ffn-ln": "without GSTA FFN + LayerNorm",
    "laser-no-ln": "without GSTA LayerNorm",
}


def _name(r: dict[str, Any], name: str) -> str:
    if name == "base":
        return f"Base (last {r['model_config']['base_len']})"
    return PAPER_NAMES.get(name, name)


def _pm(mean: float, std: float, digits: int = 4) -> str:
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def _flops(results: dict[str, Any], name: str, length: int, key: str = "flops_full") -> float:
    for f in results["flops"]:
        if f["model"] == name and f["length"] == length:
            return float(f[key])
    return float("nan")


def write_report(r: dict[str, Any]) -> str:
    s = r["summary"]
    plan = r["plan"]
    lines: list[str] = []
    add = lines.append
    add(f"# Offline comparison: {r['plan']['data']}{' (quick)' if plan['quick'] else ''}")
    add("")
    add(f"- command: `{r.get('command', '')}`")
    add(f"- histories: {r['source']}; rows train/val/test: {r['rows']['train']}/"
        f"{r['rows']['val']}/{r['rows']['test']}")
    mc = r["model_config"]
    add(f"- model config: L={mc['max_len']}, w={mc['segment']}, heads={mc['heads']}, "
        f"d={mc['d_model']}, q/k dims per head={mc['qk_dim']}, M={mc['gsta_layers']}, "
        f"embedding {mc['embed_dim']}×2; Base sees the last {mc['base_len']}, "
        f"TWIN keeps top {mc['twin_topk']}")
    tc = r["train_config"]
    add(f"- protocol: Adam lr={tc['lr']}, batch {tc['batch_size']}, at most {tc['max_epochs']} "
        f"epochs, validation AUC {tc['evals_per_epoch']}× per epoch, patience {tc['patience']} "
        f"epoch; best checkpoint scored on test; seeds 0..{plan['seeds'] - 1}")
    env = r["environment"]
    add(f"- environment: {env['device']}, torch {env['torch']}, {env['threads']} threads; "
        f"total {r.get('seconds', 0):.0f}s")
    if r.get("unfinished"):
        add(f"- **not run (deadline)**: {', '.join(r['unfinished'])}")
    add("")
    add("## Main table")
    add("")
    add("FLOPs: forward, one sample (one user, one candidate, L real events), nothing cached, "
        "counted by `torch.utils.flop_counter.FlopCounterMode` at the paper's configuration "
        "(d=128), whatever the trained size; ratio = model FLOPs / LASER FLOPs at L=1,000. "
        "Throughput: samples/s during training (forward+backward+Adam) and inference on the "
        "test split, at the trained configuration.")
    add("")
    add("| model | test AUC | test logloss | seeds | params | FLOPs L=1k | FLOPs L=4k | ×LASER (1k) "
        "| train/s | infer/s |")
    add("|---|---|---|---|---|---|---|---|---|---|")
    laser_f = _flops(r, "laser", 1000)
    for name in plan["models"]:
        if name not in s:
            continue
        x = s[name]
        f1, f4 = _flops(r, name, 1000), _flops(r, name, 4000)
        add(f"| {_name(r, name)} | {_pm(x['auc_mean'], x['auc_std'])} | "
            f"{_pm(x['logloss_mean'], x['logloss_std'])} | {x['seeds']:.0f} | "
            f"{x['params']:,} | {f1:.2e} | "
            f"{f4:.2e} | {f1 / laser_f:.1f} | {x['train_samples_per_s']:,.0f} | "
            f"{x['infer_samples_per_s']:,.0f} |")
    if "bayes" in r:
        add(f"| Bayes ceiling (true p) | {r['bayes']['auc']:.4f} | {r['bayes']['logloss']:.4f} "
            "| – | – | – | – | – | – | – |")
    add("")
    add("What is cached in the per-candidate figure (`score` only, user state reused; paper "
        "configuration, Base over the last 100):")
    add("")
    add("| model | FLOPs, user part (once per request) | FLOPs per extra candidate L=1k | "
        "per extra candidate L=4k | user state cached |")
    add("|---|---|---|---|---|")
    for name in plan["models"]:
        if not any(f["model"] == name for f in r["flops"]):
            continue
        f = next(f for f in r["flops"] if f["model"] == name and f["length"] == 1000)
        add(f"| {PAPER_NAMES.get(name, name)} | {f['flops_user']:.2e} | "
            f"{f['flops_candidate']:.2e} | {_flops(r, name, 4000, 'flops_candidate'):.2e} | "
            f"{f['cached']} |")
    abl = [a for a in ABLATION_NAMES if a in s]
    if len(abl) > 1:
        add("")
        add("## Ablations (LASER)")
        add("")
        add("| variant | test AUC | Δ AUC vs LASER (points) | test logloss |")
        add("|---|---|---|---|")
        base = s["laser"]["auc_mean"] if "laser" in s else float("nan")
        for a in abl:
            x = s[a]
            add(f"| {ABLATION_NAMES[a]} | {_pm(x['auc_mean'], x['auc_std'])} | "
                f"{100 * (x['auc_mean'] - base):+.2f} | "
                f"{_pm(x['logloss_mean'], x['logloss_std'])} |")
    seg = sorted([(int(k[len("laser-w"):]), k) for k in s if k.startswith("laser-w")]
                 + ([(mc["segment"], "laser")] if "laser" in s else []))
    if len(seg) > 1:
        add("")
        add("## Segment size w")
        add("")
        add("| w | test AUC | test logloss | FLOPs L=1k | × FLOPs of w=" + str(mc["segment"]) + " |")
        add("|---|---|---|---|---|")
        for w, k in seg:
            x = s[k]
            f1 = _flops(r, k, 1000)
            add(f"| {w} | {_pm(x['auc_mean'], x['auc_std'])} | "
                f"{_pm(x['logloss_mean'], x['logloss_std'])} | {f1:.2e} | {f1 / laser_f:.2f} |")
    dep = sorted([(int(k[len("laser-m"):]), k) for k in s if k.startswith("laser-m")]
                 + ([(mc["gsta_layers"], "laser")] if "laser" in s else []))
    if len(dep) > 1:
        add("")
        add("## GSTA depth M")
        add("")
        add("| M | test AUC | test logloss | FLOPs L=1k |")
        add("|---|---|---|---|")
        for m, k in dep:
            x = s[k]
            add(f"| {m} | {_pm(x['auc_mean'], x['auc_std'])} | "
                f"{_pm(x['logloss_mean'], x['logloss_std'])} | {_flops(r, k, 1000):.2e} |")
    if r.get("throughput"):
        add("")
        add("## Throughput at long L (paper configuration, full histories)")
        add("")
        lengths = sorted({t["length"] for t in r["throughput"]})
        add("| model | " + " | ".join(f"train/s L={n}" for n in lengths) + " | "
            + " | ".join(f"infer/s L={n}" for n in lengths) + " |")
        add("|---|" + "---|" * (2 * len(lengths)))
        for name in plan["models"]:
            row = {t["length"]: t for t in r["throughput"] if t["model"] == name}
            cells = [f"{row[n]['train_samples_per_s']:,.0f}" if n in row else "–" for n in lengths]
            cells += [f"{row[n]['infer_samples_per_s']:,.0f}" if n in row else "–"
                      for n in lengths]
            add(f"| {_name(r, name)} | " + " | ".join(cells) + " |")
        batches = sorted({(t["length"], t["batch"]) for t in r["throughput"]})
        add("")
        add("Batch (users × 1 candidate) per L: "
            + ", ".join(f"{b} at L={n}" for n, b in batches)
            + f" (the same events per batch); device {r['throughput'][0]['device']}; "
            "train = forward + backward + Adam step; NaN = out of memory.")
    add("")
    return "\n".join(lines)


def write_plots(r: dict[str, Any], out: Path) -> list[Path]:
    """AUC bars (with the Bayes ceiling) and FLOPs bars; skipped without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    s = r["summary"]
    names = [n for n in r["plan"]["models"] if n in s]
    paths: list[Path] = []
    if not names:  # nothing finished (deadline): no plot to draw
        return paths
    fig, ax = plt.subplots(figsize=(7, 3.5))
    means = [s[n]["auc_mean"] for n in names]
    stds = [s[n]["auc_std"] for n in names]
    ax.bar([_name(r, n) for n in names], means, yerr=stds, capsize=4, color="#4C72B0")
    if "bayes" in r:
        ax.axhline(r["bayes"]["auc"], color="k", ls="--", lw=1, label="Bayes ceiling")
        ax.legend(loc="lower right")
    lo = min(means) - 0.03
    ax.set_ylim(max(0.0, lo), max(means + [r.get("bayes", {}).get("auc", 0.0)]) + 0.01)
    ax.set_ylabel("test AUC (mean ± std over seeds)")
    ax.set_title(f"{r['plan']['data']}: test AUC")
    fig.tight_layout()
    p = out / "auc.png"
    fig.savefig(p, dpi=110)
    plt.close(fig)
    paths.append(p)

    fig, ax = plt.subplots(figsize=(7, 3.5))
    width = 0.4
    xs = range(len(names))
    for i, length in enumerate((1000, 4000)):
        ax.bar([x + (i - 0.5) * width for x in xs], [_flops(r, n, length) for n in names],
               width=width, label=f"L={length}")
    ax.set_xticks(list(xs), [_name(r, n) for n in names])
    ax.set_yscale("log")
    ax.set_ylabel("forward FLOPs per sample")
    ax.legend()
    ax.set_title("FLOPs per sample (nothing cached, d=128)")
    fig.tight_layout()
    p = out / "flops.png"
    fig.savefig(p, dpi=110)
    plt.close(fig)
    paths.append(p)

    if r.get("throughput"):
        fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
        for ax, key, title in ((axes[0], "train_samples_per_s", "training"),
                               (axes[1], "infer_samples_per_s", "inference")):
            for n in names:
                pts = sorted((t["length"], t[key]) for t in r["throughput"] if t["model"] == n)
                if pts:
                    ax.plot([x for x, _ in pts], [y for _, y in pts], marker="o",
                            label=_name(r, n))
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlabel("history length L")
            ax.set_ylabel("samples/s")
            ax.set_title(f"{title} throughput ({r['throughput'][0]['device']})")
        axes[1].legend(fontsize=7)
        fig.tight_layout()
        p = out / "throughput.png"
        fig.savefig(p, dpi=110)
        plt.close(fig)
        paths.append(p)
    return paths


if __name__ == "__main__":
    import json
    import sys

    # python -m seqvault.model.report DIR: rewrite DIR/report.md and the plots from results.json
    folder = Path(sys.argv[1])
    res = json.loads((folder / "results.json").read_text())
    (folder / "report.md").write_text(write_report(res))
    print(", ".join(str(x) for x in write_plots(res, folder)))
