"""The report: Markdown tables with SeqVault/baseline ratios, the BRIEF's targets, PNG plots.

Ratios are SeqVault ÷ baseline from the *same run* (below 1 = SeqVault smaller/faster for
latency, CPU and bytes; above 1 = more for throughput). Targets are phrased as the BRIEF phrases
them ("20x faster" = baseline ÷ SeqVault >= 20) and each says met/missed and by how much.

When publishing to docs/benchmarks.md, everything below ``HAND_WRITTEN_MARKER`` in the existing
file is kept, so analysis written by hand survives a rerun.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

SV, BLOB, EVENT = "seqvault", "rocks_blob", "rocks_event"
BASELINES = (BLOB, EVENT)
LABEL = {SV: "SeqVault", BLOB: "RocksDB blob/user", EVENT: "RocksDB key/event"}
HAND_WRITTEN_MARKER = "<!-- hand-written below: kept when the report is regenerated -->"


def _f(x: Any, nd: int = 2) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    if isinstance(x, int):
        return f"{x:,}"
    ax = abs(x)
    if ax >= 1000:
        return f"{x:,.0f}"
    if ax >= 100:
        return f"{x:.0f}"
    if ax >= 10:
        return f"{x:.1f}"
    if ax >= 0.01 or ax == 0:
        return f"{x:.{nd}f}"
    return f"{x:.2g}"


def _ratio(a: Any, b: Any) -> float | None:
    if a is None or b is None or not b or (isinstance(a, float) and math.isnan(a)):
        return None
    return a / b


def _x(r: float | None) -> str:
    return "–" if r is None else f"{r:.2f}×" if r < 10 else f"{r:.1f}×"


def _live_per_event(load: dict) -> float | None:
    st = load.get("stats") or {}
    if "live_bytes" not in st or not load.get("stored_events"):
        return None
    return (st["live_bytes"] + st.get("meta_bytes", 0)) / load["stored_events"]


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _find(rows: list[dict], **match: Any) -> dict | None:
    for r in rows:
        if all(r.get(k) == v for k, v in match.items()):
            return r
    return None


def _target_read_history(systems: dict) -> int | None:
    """The sweep cohort used for the "read last 10,000" targets: 10,000 events a user (the
    BRIEF's anchor), or the nearest longer cohort."""
    any_sys = next(iter(systems.values()), None)
    if not any_sys:
        return None
    lengths = sorted({r["history"] for r in any_sys.get("sweep", []) if r["last"] == 10_000})
    longer = [h for h in lengths if h >= 10_000]
    return longer[0] if longer else (lengths[-1] if lengths else None)


# --------------------------------------------------------------------------- targets
# The rows of issue 12's targets table (and the BRIEF's), in its order. Every row appears in
# the report, measured or not; ``goal`` is a ratio, ``higher`` says which way is better.
ISSUE_ROWS = (
    "90/10 read-1,000/append-20 mix, Zipf users over the whole population, between merges",
    "the same mix, one user receiving 40% of the appends and of the reads",
    "append_batch of many distinct users, then flush and merge, events per CPU-second",
    "append throughput, calls of 1 / 20 / 100, at batch and at sync",
    "CPU per read of the last 100 (Zipf and uniform users; users with ≥ 1,000 events)",
    "CPU per read of the last 1,000 (and 10,000)",
    "read last 10,000 of 10k-event users, p50 and p99",
    "read p99 during a merge",
    "disk after the append workloads and a merge",
)


def targets(results: dict) -> list[dict]:
    s = results["systems"]
    out: list[dict] = []
    if SV not in s:
        return out
    sv = s[SV]
    ev = s.get(EVENT)
    hist = _target_read_history(s)
    group = [""]

    def add(name: str, measured: float | None, goal: float, higher_is_better: bool, unit: str,
            detail: str) -> None:
        row = {"group": group[0], "target": name, "goal": goal, "unit": unit, "detail": detail,
               "higher": higher_is_better}
        if measured is None or (isinstance(measured, float) and math.isnan(measured)):
            out.append({**row, "measured": None, "met": None, "margin": "not measured"})
            return
        met = measured >= goal if higher_is_better else measured <= goal
        # Margin: how far from the goal, as a factor (>1 = headroom when met, shortfall when not)
        factor = measured / goal if higher_is_better else goal / measured if measured else math.inf
        out.append({**row, "measured": measured, "met": met,
                    "margin": (f"{factor:.2f}× the goal" if met
                               else f"missed: reaches {factor:.0%} of the goal")})

    def get(d: dict | None, *path: str) -> Any:
        for p in path:
            if not isinstance(d, dict):
                return None
            d = d.get(p)
        return d

    # 1. the 90/10 mix, Zipf users over the whole population.
    group[0] = ISSUE_ROWS[0]
    a, b = get(sv, "mix", "ops_per_s"), get(ev, "mix", "ops_per_s")
    add(f"90/10 mix ops/s × {LABEL[EVENT]}", _ratio(a, b), 2.0, True, "×",
        f"{_f(a)} vs {_f(b)} ops/s; read p50 {_f(get(sv, 'mix', 'read_p50_ms'), 3)} vs "
        f"{_f(get(ev, 'mix', 'read_p50_ms'), 3)} ms, p99 {_f(get(sv, 'mix', 'read_p99_ms'), 3)} "
        f"vs {_f(get(ev, 'mix', 'read_p99_ms'), 3)} ms")
    # 2. the hot-user mix.
    group[0] = ISSUE_ROWS[1]
    a, b = get(sv, "hot_mix", "ops_per_s"), get(ev, "hot_mix", "ops_per_s")
    add(f"hot-user mix ops/s × {LABEL[EVENT]}", _ratio(a, b), 1.0, True, "×",
        f"{_f(a)} vs {_f(b)} ops/s")
    for key, what in (("read_p99_ms", "p99"), ("read_tcpu_p99_ms", "thread-CPU p99")):
        h, c = get(sv, "hot_mix", "hot_" + key), get(sv, "hot_mix", "cold_" + key)
        add(f"hot user's read {what} ÷ cold users' read {what} (SeqVault)", _ratio(h, c), 3.0,
            False, "×", f"{_f(h, 3)} vs {_f(c, 3)} ms")
    # 3. many-user batch load.
    group[0] = ISSUE_ROWS[2]
    a, b = get(sv, "batch_load", "events_per_cpu_second"), get(ev, "batch_load",
                                                               "events_per_cpu_second")
    add(f"many-user append_batch + flush + merge, events per CPU-second × {LABEL[EVENT]} "
        "write batches + flush + compaction", _ratio(a, b), 1.0, True, "×",
        f"{_f(a)} vs {_f(b)} events/CPU-s; wall {_f(get(sv, 'batch_load', 'events_per_s'))} vs "
        f"{_f(get(ev, 'batch_load', 'events_per_s'))} events/s")
    # 4. appends: every point of the grid, measured or not.
    group[0] = ISSUE_ROWS[3]
    floor = sv.get("sync_floor_ops_per_s")
    for d in ("batch", "sync"):
        for k in (1, 20, 100):
            a = _find(sv.get("appends", []), durability=d, batch=k)
            b = _find(ev.get("appends", []), durability=d, batch=k) if ev else None
            detail = f"{_f(a and a['units_per_s'])} vs {_f(b and b['units_per_s'])} events/s"
            if d == "sync" and floor and b:
                # One caller at `sync` waits for one fdatasync a call at least: the disk's
                # floor bounds both systems; where 2x RocksDB lies above it, no store reaches it.
                cap = floor * k / b["units_per_s"]
                detail += (f"; the disk allows one caller {_f(floor * k)} events/s "
                           f"({cap:.2f}× {LABEL[EVENT]}{': 2× is above it' if cap < 2 else ''})")
            add(f"append throughput, durability={d}, calls of {k}: × {LABEL[EVENT]}",
                _ratio(a and a["units_per_s"], b and b["units_per_s"]), 2.0, True, "×", detail)
    # 5. CPU per read of the last 100.
    group[0] = ISSUE_ROWS[4]
    for users in ("zipf", "uniform"):
        a = _find(sv.get("reads", []), last=100, users=users)
        b = _find(ev.get("reads", []), last=100, users=users) if ev else None
        add(f"CPU per read (last 100, {users} users) ÷ {LABEL[EVENT]}",
            _ratio(a and a["cpu_ms_per_op"], b and b["cpu_ms_per_op"]), 1.0, False, "×",
            f"{_f(a and a['cpu_ms_per_op'], 3)} vs {_f(b and b['cpu_ms_per_op'], 3)} CPU ms/read")
    cohorts = sorted({r["history"] for r in sv.get("sweep", [])
                      if r["last"] == 100 and r["history"] >= 1_000})
    for h in cohorts or [None]:
        a = _find(sv.get("sweep", []), history=h, last=100)
        b = _find(ev.get("sweep", []), history=h, last=100) if ev else None
        add(f"CPU per read (last 100 of {_f(h) if h else '≥ 1,000'}-event users) ÷ "
            f"{LABEL[EVENT]}", _ratio(a and a["cpu_ms_per_op"], b and b["cpu_ms_per_op"]), 0.5,
            False, "×",
            f"{_f(a and a['cpu_ms_per_op'], 3)} vs {_f(b and b['cpu_ms_per_op'], 3)} CPU ms/read")
    # 6. CPU per read of the last 1,000 and 10,000, against the *cheaper* RocksDB layout.
    group[0] = ISSUE_ROWS[5]
    cpu_cases = [("reads", {"last": n, "users": u}, f"last {n:,}, {u} users", goal)
                 for n, goal in ((1_000, 0.3), (10_000, 0.25)) for u in ("zipf", "uniform")]
    if hist is not None:
        cpu_cases.append(("sweep", {"history": hist, "last": 10_000},
                          f"last 10,000 of {hist:,}-event users", 0.25))
    for section, match, label, goal in cpu_cases:
        mine_row = _find(sv.get(section, []), **match)
        cands = [(_find(s[b].get(section, []), **match), b) for b in BASELINES if b in s]
        cands = [(r["cpu_ms_per_op"], b) for r, b in cands if r]
        best, who = min(cands) if cands else (None, None)
        # The cheaper layout's name goes in the numbers, not the name: it may differ between
        # runs, and ``--compare`` matches rows by name.
        add(f"CPU per read ({label}) ÷ cheaper RocksDB layout",
            _ratio(mine_row and mine_row["cpu_ms_per_op"], best), goal, False, "×",
            f"{_f(mine_row and mine_row['cpu_ms_per_op'], 3)} vs {_f(best, 3)} CPU ms/read"
            + (f" ({LABEL[who]})" if who else ""))
    # 7. long reads.
    group[0] = ISSUE_ROWS[6]
    sv_row = _find(sv.get("sweep", []), history=hist, last=10_000) if hist else None
    for base, goal in ((EVENT, 20.0), (BLOB, 8.0)):
        b_row = _find(s[base]["sweep"], history=hist, last=10_000) if base in s and hist else None
        for p in ("p50_ms", "p99_ms", "tcpu_p50_ms", "tcpu_p99_ms"):
            what = (p[:3] if not p.startswith("tcpu") else
                    f"{p[5:8]} of per-read thread CPU time (less sensitive to other processes)")
            add(f"read last 10,000 ({_f(hist) if hist else '10,000'}-event users) {what}: "
                f"faster than {LABEL[base]}",
                _ratio(b_row and b_row.get(p), sv_row and sv_row.get(p)), goal, True, "×",
                f"{LABEL[base]} {_f(b_row and b_row.get(p))} ms vs SeqVault "
                f"{_f(sv_row and sv_row.get(p))} ms")
    # 8. reads during a merge.
    group[0] = ISSUE_ROWS[7]
    mg = sv.get("merge", {})
    for key, what in (("p99_ms", "p99"), ("tcpu_p99_ms", "thread-CPU p99")):
        d, q = mg.get("during_" + key), mg.get("quiet_" + key)
        add(f"read {what} during merge() ÷ quiet read {what} (SeqVault, same process)",
            _ratio(d, q), 2.0, False, "×", f"{_f(d, 3)} vs {_f(q, 3)} ms")
    ro = mg.get("read_only_process") or {}
    d, q = ro.get("during_p99_ms"), ro.get("quiet_p99_ms")
    add("read p99 during merge() ÷ quiet read p99 (SeqVault, a second read-only process)",
        _ratio(d, q), 2.0, False, "×",
        f"{_f(d, 3)} vs {_f(q, 3)} ms ({_f(ro.get('reads_during'))} reads during, "
        f"{_f(ro.get('reads_quiet'))} quiet)" + (f"; {len(ro['errors'])} read errors"
                                                   if ro.get("errors") else ""))
    # 9. disk.
    group[0] = ISSUE_ROWS[8]
    after, clean = get(sv, "after_appends", "disk_bytes"), get(sv, "clean_load", "disk_bytes")
    add("bytes on disk after the append workloads and a merge ÷ a clean bulk load of the same "
        "events (SeqVault)", _ratio(after, clean), 1.1, False, "×",
        f"{_f(after and after / 2**20)} vs {_f(clean and clean / 2**20)} MiB, "
        f"{_f(get(sv, 'after_appends', 'events'))} events")
    a_pe = _ratio(after, get(sv, "after_appends", "events"))
    b_pe = _ratio(get(ev, "after_appends", "disk_bytes"), get(ev, "after_appends", "events"))
    add(f"bytes per event after the append workloads and a merge ÷ {LABEL[EVENT]} after its "
        "compaction (BRIEF: ≤ 0.6× the best layout; the blob layout drops events past its cap, "
        "so it is left out here)", _ratio(a_pe, b_pe), 0.6, False, "×",
        f"{_f(a_pe)} vs {_f(b_pe)} B/event")
    base_disk = [(s[b]["load"]["disk_bytes_per_event"], b) for b in BASELINES if b in s]
    if base_disk:
        best, who = min(base_disk)
        mine = sv["load"]["disk_bytes_per_event"]
        add(f"bytes on disk per event after the bulk load ÷ best RocksDB layout ({LABEL[who]})",
            _ratio(mine, best), 0.6, False, "×", f"{_f(mine)} vs {_f(best)} B/event")
    return out


def headline(results: dict) -> dict[str, float | None]:
    """Target name -> measured ratio: what ``--compare`` sets side by side across runs."""
    return {t["target"]: t["measured"] for t in targets(results)}


# --------------------------------------------------------------------------- plots
def _plots(results: dict, out: Path) -> list[str]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    s = results["systems"]
    made = []
    lasts = sorted({r["last"] for sys in s.values() for r in sys.get("sweep", [])})
    if lasts:
        fig, axes = plt.subplots(1, len(lasts), figsize=(5.5 * len(lasts), 4.2), squeeze=False)
        for ax, last in zip(axes[0], lasts, strict=True):
            for name, sys in s.items():
                rows = sorted((r for r in sys["sweep"] if r["last"] == last),
                              key=lambda r: r["history"])
                xs = [r["history"] for r in rows]
                line, = ax.plot(xs, [r["p50_ms"] for r in rows], "o-", label=f"{LABEL[name]} p50")
                ax.plot(xs, [r["p99_ms"] for r in rows], "x--", color=line.get_color(),
                        label=f"{LABEL[name]} p99")
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlabel("events in the user's history")
            ax.set_ylabel("latency (ms)")
            ax.set_title(f"read last {last:,}")
            ax.grid(True, which="both", alpha=0.3)
        axes[0][0].legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out / "latency_vs_history.png", dpi=110)
        plt.close(fig)
        made.append("latency_vs_history.png")
    if s:
        fig, ax = plt.subplots(figsize=(5.5, 3.6))
        names = list(s)
        vals = [s[n]["load"]["disk_bytes_per_event"] for n in names]
        bars = ax.bar([LABEL[n] for n in names], vals, color=["C0", "C1", "C2"][: len(names)])
        ax.bar_label(bars, fmt="%.1f")
        base = [s[n]["load"]["disk_bytes_per_event"] for n in names if n in BASELINES]
        if SV in s and base:
            # The BRIEF's target: at most 0.6x the best RocksDB layout's bytes per event.
            ax.axhline(0.6 * min(base), color="grey", ls="--", lw=1)
            ax.annotate("target: 0.6 × best RocksDB", (0.02, 0.6 * min(base)),
                        xycoords=("axes fraction", "data"), va="bottom", fontsize=8)
        ax.set_ylabel("bytes on disk per stored event")
        ax.set_title("disk footprint after load + compaction/merge")
        fig.tight_layout()
        fig.savefig(out / "bytes_per_event.png", dpi=110)
        plt.close(fig)
        made.append("bytes_per_event.png")
    appends = [(n, r) for n, sys in s.items() for r in sys.get("appends", [])]
    if appends:
        combos = sorted({(r["durability"], r["batch"]) for _, r in appends})
        fig, ax = plt.subplots(figsize=(max(6, 1.3 * len(combos)), 3.8))
        width = 0.8 / max(len(s), 1)
        for k, name in enumerate(s):
            ys = [(_find(s[name].get("appends", []), durability=d, batch=b) or {}).get(
                "units_per_s", 0) for d, b in combos]
            ax.bar([i + k * width for i in range(len(combos))], ys, width, label=LABEL[name])
        ax.set_xticks([i + width * (len(s) - 1) / 2 for i in range(len(combos))])
        ax.set_xticklabels([f"{d}\nbatch {b}" for d, b in combos], fontsize=8)
        ax.set_yscale("log")
        ax.set_ylabel("events/s")
        ax.set_title("append throughput (interleaved users)")
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out / "append_throughput.png", dpi=110)
        plt.close(fig)
        made.append("append_throughput.png")
    panels = [("mix", "ops_per_s", "90/10 mix, Zipf users (ops/s)"),
              ("hot_mix", "ops_per_s", "90/10 mix, one hot user (ops/s)"),
              ("batch_load", "events_per_cpu_second", "many-user batch load\n(events per CPU-s)")]
    panels = [p for p in panels if any(p[0] in sys for sys in s.values())]
    if panels:
        fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6), squeeze=False)
        for ax, (section, key, title) in zip(axes[0], panels, strict=True):
            names = [n for n in s if section in s[n]]
            bars = ax.bar([LABEL[n].replace("RocksDB ", "RocksDB\n") for n in names],
                          [s[n][section][key] for n in names],
                          color=[{SV: "C0", BLOB: "C1", EVENT: "C2"}[n] for n in names])
            ax.bar_label(bars, fmt="%.0f", fontsize=8)
            ax.set_title(title, fontsize=9)
            ax.tick_params(axis="x", labelsize=8)
        fig.tight_layout()
        fig.savefig(out / "mixes.png", dpi=110)
        plt.close(fig)
        made.append("mixes.png")
    return made


# --------------------------------------------------------------------------- markdown
def render(results: dict, image_prefix: str = "") -> str:
    s = results["systems"]
    names = [n for n in (SV, BLOB, EVENT) if n in s]
    m = results["machine"]
    cfg = results["config"]
    w = cfg["workload"]
    md: list[str] = []
    add = md.append
    add("# Benchmarks: SeqVault against RocksDB LastN\n")
    add(f"Generated by `{results['command']}` ({results['preset']} preset) at commit "
        f"`{results['commit']}`, {results['started']} → {results['finished']}. "
        "Every ratio compares systems measured in this same run.\n")
    add("## Machine\n")
    v = m["versions"]
    add(f"- CPU: {m['cpu_model']}, {m['usable_cpus']} usable of {m['logical_cpus']} logical CPUs; "
        f"{m['memory_gib']} GiB RAM; disk: {m['filesystem']}")
    add(f"- {m['platform']}, Python {m['python']}; numpy {v['numpy']}, pyarrow {v['pyarrow']}, "
        f"rocksdict {v['rocksdict']}, zstandard {v['zstandard']}, msgpack {v['msgpack']}, "
        f"lmdb {v['lmdb']}; benchmark processes at nice {m.get('nice', 0)}\n")
    cond = [(n, s[n]["conditions"]) for n in names if "conditions" in s[n]]
    if cond:
        add("Systems run alternately, step by step (each read, sweep and append workload in "
            "turn, rotating which system goes first), so other work on the machine falls on all "
            "of them alike. Machine load during each system's steps (other processes' CPU and "
            "hypervisor steal inflate tails):\n")

        def cores(c: dict, key: str) -> str:
            return _f(c.get(key, 0.0) / max(c.get("wall_seconds", 0.0), 1e-9))

        add(_table(["system", "timed wall s", "own CPU (cores)", "other processes (cores)",
                    "steal (cores)", "max load avg"],
                   [[LABEL[n], _f(c["wall_seconds"]), cores(c, "own_cpu_seconds"),
                     cores(c, "other_cpu_seconds"), cores(c, "steal_seconds"),
                     _f(c.get("loadavg_max"))] for n, c in cond]) + "\n")
    for n in names:
        for note in s[n].get("notes", []):
            add(f"- {LABEL[n]}: {note}")
    if any(s[n].get("notes") for n in names):
        add("")
    for sysname, why in results.get("skipped", {}).items():
        add(f"> **{LABEL.get(sysname, sysname)} not measured:** {why}\n")

    tg = targets(results)
    if tg:
        add("## Targets (issue 12 and BRIEF.md)\n")
        add("One row per measured point; the first column is the row of the issue's targets "
            "table it belongs to. Ratios are from this run only.\n")
        rows = []
        last_group = None
        for t in tg:
            rows.append([t["group"] if t["group"] != last_group else "〃", t["target"],
                         _x(t["measured"]) if t["unit"] == "×" else _f(t["measured"]),
                         ("≥ " if t["higher"] else "≤ ") + f"{t['goal']:g}×",
                         "—" if t["met"] is None else "**met**" if t["met"] else "**missed**",
                         t["margin"], t["detail"]])
            last_group = t["group"]
        add(_table(["issue row", "measured point", "measured", "goal", "verdict", "margin",
                    "numbers"], rows) + "\n")
        n_met = sum(1 for t in tg if t["met"])
        n_missed = sum(1 for t in tg if t["met"] is False)
        n_none = sum(1 for t in tg if t["met"] is None)
        add(f"{n_met} met, {n_missed} missed, {n_none} not measured.\n")
        add(_spread_section(results, tg))

    add("## Data set\n")
    add(f"Seed {w['seed']}. {w['n_users']:,} population users with log-normal history lengths "
        f"(median {w['median_len']}, σ {w['len_sigma']}, clipped to {w['max_len']:,}), plus sweep "
        f"cohorts of exactly {', '.join(f'{n:,}' for n in w['sweep_lengths'])} events "
        f"({', '.join(map(str, w['sweep_users']))} users). Six columns: ts (int64 ms), item_id "
        f"(int64, Zipf a={w['item_zipf_a']} over {w['n_items']:,} items), action (int8), category "
        f"(int32), dwell_ms (int32), scenario (int8). {w['burst_prob']:.0%} of gaps are zero "
        f"(equal-timestamp bursts); {w['late_frac']:.0%} of events arrive late. The blob layout "
        f"keeps the newest {w['blob_cap']:,} events a user.\n")

    if names:
        add("## Correctness cross-check\n")
        add("Before timing, each system's answers for a sample of users (last 1, 100 and 10,000) "
            "are compared with the generator's reference (time order, ties in arrival order).\n")
        add(_table(["system", "reads checked", "mismatches"],
                   [[LABEL[n], _f(s[n]["verify"]["reads_checked"]),
                     _f(s[n]["verify"]["n_mismatches"])
                     + ("" if not s[n]["verify"]["mismatches"]
                        else " — " + "; ".join(s[n]["verify"]["mismatches"][:3]))]
                    for n in names]) + "\n")

        add("## Bulk load, disk and memory\n")
        rows = []
        for n in names:
            ld = s[n]["load"]
            rows.append([LABEL[n], ld.get("method", ""), _f(ld["events"]), _f(ld["events_per_s"]),
                         _f(ld["cpu_us_per_event"]), _f(ld["quiesce_seconds"]),
                         _f(ld["stored_events"]), _f(ld["disk_bytes_per_event"]),
                         _f(_live_per_event(ld)),
                         _f(ld.get("index_bytes_per_user")), _f(s[n].get("open_seconds"), 3),
                         _f(s[n]["peak_rss_bytes"] and s[n]["peak_rss_bytes"] / 2**20),
                         _f((ld["rss_after_load_bytes"] - s[n]["rss_start_bytes"]) / 2**20)])
        add(_table(["system", "load path", "events", "events/s", "CPU µs/event",
                    "flush+compact/merge s", "stored events", "disk B/event", "live B/event",
                    "DRAM index B/user", "reopen s", "peak RSS MiB", "RSS growth MiB"], rows))
        add("\nDisk is bytes allocated under the store directory after the load and a "
            "flush + full compaction (RocksDB) or flush + merge (SeqVault), divided by the events "
            "the store holds; *live* counts only bytes still referenced (SeqVault's "
            "`live_bytes` + metadata; garbage awaits reclamation), where the store reports it. "
            "Peak RSS includes Python and the harness (~same for all).\n")
        if SV in s:
            rr = [[f"SeqVault ÷ {LABEL[b]}",
                   _x(_ratio(s[SV]["load"]["events_per_s"], s[b]["load"]["events_per_s"])),
                   _x(_ratio(s[SV]["load"]["disk_bytes_per_event"],
                             s[b]["load"]["disk_bytes_per_event"])),
                   _x(_ratio(s[SV]["peak_rss_bytes"], s[b]["peak_rss_bytes"]))]
                  for b in BASELINES if b in s]
            if rr:
                add(_table(["ratio", "load events/s", "disk B/event", "peak RSS"], rr) + "\n")
        for img in ("bytes_per_event.png",):
            add(f"![bytes per event]({image_prefix}{img})\n")

        add("## Reads: last N events of one user\n")
        add("Users drawn from the population uniformly or Zipf-skewed (a few hot users get most "
            "reads); most population users have fewer than N events, so *events/read* shows what "
            "a read returned. Latency per `read_last` call, returning numpy columns.\n")
        rows = []
        for r0 in s[names[0]]["reads"]:
            for n in names:
                r = _find(s[n]["reads"], last=r0["last"], users=r0["users"])
                if r is None:
                    continue
                rows.append([f"{r['last']:,}", r["users"], LABEL[n], _f(r["units_per_op"], 0),
                             _f(r["p50_ms"], 3), _f(r["p95_ms"], 3), _f(r["p99_ms"], 3),
                             _f(r["max_ms"], 3), _f(r.get("tcpu_p50_ms"), 3),
                             _f(r.get("tcpu_p99_ms"), 3), _f(r["cpu_ms_per_op"], 3),
                             _f(r["ops_per_s"]), _f(r["ops"])])
        add(_table(["last", "users", "system", "events/read", "p50 ms", "p95 ms", "p99 ms",
                    "max ms", "thread-CPU p50 ms", "thread-CPU p99 ms", "process CPU ms/read",
                    "reads/s", "reads"], rows) + "\n")
        if SV in s:
            add(_ratio_table(s, "reads", ("last", "users"),
                             lambda r: f"last {r['last']:,}, {r['users']}") + "\n")

        add("## History length sweep\n")
        add("Reads of users holding exactly the given number of events: how cost grows with "
            "history. The blob layout stores only the newest "
            f"{w['blob_cap']:,}, so its reads stop growing there.\n")
        add(f"![latency vs history length]({image_prefix}latency_vs_history.png)\n")
        rows = []
        for r0 in s[names[0]]["sweep"]:
            for n in names:
                r = _find(s[n]["sweep"], history=r0["history"], last=r0["last"])
                if r is None:
                    continue
                rows.append([f"{r['history']:,}", f"{r['last']:,}", LABEL[n],
                             _f(r["units_per_op"], 0), _f(r["p50_ms"], 3), _f(r["p99_ms"], 3),
                             _f(r["max_ms"], 3), _f(r.get("tcpu_p50_ms"), 3),
                             _f(r.get("tcpu_p99_ms"), 3), _f(r["cpu_ms_per_op"], 3),
                             _f(r["ops"])])
        add(_table(["history", "last", "system", "events/read", "p50 ms", "p99 ms", "max ms",
                    "thread-CPU p50 ms", "thread-CPU p99 ms", "process CPU ms/read", "reads"],
                   rows) + "\n")
        if SV in s:
            add(_ratio_table(s, "sweep", ("history", "last"),
                             lambda r: f"{r['history']:,} events, last {r['last']:,}") + "\n")

        add("## Real-time appends\n")
        add("Events interleaved across Zipf-active users, appended in calls of 1, 20 or 100 "
            "events (one acknowledged write each: `append` for one event, `append_batch` "
            "otherwise; a RocksDB WriteBatch). Latency is per call.\n")
        add(f"![append throughput]({image_prefix}append_throughput.png)\n")
        rows = []
        for r0 in s[names[0]].get("appends", []):
            for n in names:
                r = _find(s[n].get("appends", []), durability=r0["durability"],
                          batch=r0["batch"])
                if r is None:
                    continue
                rows.append([r["durability"], str(r["batch"]), LABEL[n], _f(r["units_per_s"]),
                             _f(r["p50_ms"], 3), _f(r["p99_ms"], 3), _f(r["max_ms"], 3),
                             _f(r["cpu_us_per_unit"]), _f(r["units"])])
        add(_table(["durability", "batch", "system", "events/s", "p50 ms/call", "p99 ms/call",
                    "max ms/call", "CPU µs/event", "events"], rows) + "\n")
        if SV in s:
            rr = []
            for a in s[SV].get("appends", []):
                cells = [a["durability"], str(a["batch"])]
                for b in BASELINES:
                    br = _find(s[b].get("appends", []) if b in s else [],
                               durability=a["durability"], batch=a["batch"])
                    cells += [_x(_ratio(a["units_per_s"], br and br["units_per_s"])),
                              _x(_ratio(a["cpu_us_per_unit"], br and br["cpu_us_per_unit"]))]
                rr.append(cells)
            hdr = ["durability", "batch"]
            for b in BASELINES:
                hdr += [f"events/s ÷ {LABEL[b]}", f"CPU/event ÷ {LABEL[b]}"]
            add(_table(hdr, rr) + "\n")

        add("## 90/10 read/append mix\n")
        mx = s[names[0]]["mix"]
        add(f"90% reads of the last {mx['read_last']:,} events of Zipf users, 10% appends of "
            f"{mx['append_batch']} interleaved events, one thread, load durability, after the "
            "append workloads and before the merge (fresh data in every store). Readers and "
            f"appended events follow a Zipf law (a={w['user_zipf_a']}) truncated to the "
            f"{w['n_users']:,}-user population: the hottest user gets "
            f"{_zipf_top(w):.0%} of the traffic, as the law says (an earlier version clamped "
            "ranks onto one user, who then got ~44%).\n")
        rows = [[LABEL[n], _f(s[n]["mix"]["ops_per_s"]), _f(s[n]["mix"]["read_p50_ms"], 3),
                 _f(s[n]["mix"]["read_p99_ms"], 3), _f(s[n]["mix"]["append_p50_ms"], 3),
                 _f(s[n]["mix"]["append_p99_ms"], 3), _f(s[n]["mix"]["cpu_ms_per_op"], 3),
                 _f(s[n]["mix"]["ops"])] for n in names]
        add(_table(["system", "ops/s", "read p50 ms", "read p99 ms", "append p50 ms",
                    "append p99 ms", "CPU ms/op", "ops"], rows) + "\n")

        add(f"![mixes and batch load]({image_prefix}mixes.png)\n")
        add(_hot_mix_section(s, names))

        add("## Reads during merge / compaction\n")
        mg0 = next((s[n]["merge"] for n in names if "read_rate" in s[n]["merge"]), {})
        rate = f"{mg0['read_rate']:,.0f} reads/s" if mg0 else "a steady rate"
        add(f"Zipf reads of the last {mg0.get('read_last', 1_000):,} at {rate} while background "
            "maintenance runs in another thread of the same process: SeqVault's flush + "
            "`merge()` of what the append workloads left, RocksDB's full manual compaction. "
            "*Quiet* is the same reads (same users, same order, same paced loop) just before "
            "the merge starts, on the same data with nothing running: the issue's \"quiet "
            "p99\". Before 2026-12 the quiet reads were taken after the merge, in a tight "
            "loop, on the freshly merged layout, so the ratio also counted the layout change "
            "(unmerged real-time segments during, single merged segments after); those "
            "after-merge reads are still shown (*after merge*).\n")
        rows = []
        for n in names:
            mg = s[n]["merge"]
            if "skipped" in mg:
                rows.append([LABEL[n], "skipped: " + mg["skipped"]] + ["–"] * 9)
                continue
            work = (mg.get("summary") or {}).get("events_in")
            rows.append([LABEL[n], _f(mg["merge_seconds"], 3)
                         + (f" ({_f(work)} events merged)" if work else ""), _f(mg["during_ops"]),
                         _f(mg["during_p50_ms"], 3), _f(mg["during_p99_ms"], 3),
                         _f(mg["during_max_ms"], 3), _f(mg.get("during_tcpu_p99_ms"), 3),
                         _f(mg["quiet_p50_ms"], 3), _f(mg["quiet_p99_ms"], 3),
                         _f(mg.get("quiet_tcpu_p99_ms"), 3), _f(mg.get("after_p99_ms"), 3)])
        add(_table(["system", "merge/compaction s", "reads during", "p50 ms during",
                    "p99 ms during", "max ms during", "thread-CPU p99 ms during", "quiet p50 ms",
                    "quiet p99 ms", "quiet thread-CPU p99 ms", "after merge p99 ms"],
                   rows) + "\n")
        ro = s.get(SV, {}).get("merge", {}).get("read_only_process")
        if ro and "during_p99_ms" in ro:
            add("SeqVault also from a second process that opened the store `read_only=True` "
                "(`bench/ro_reader.py`), reading at the same rate while the quiet reads above "
                "run, during the merge, and a second after; reads are split by when they "
                "started (quiet: before the merge; the after-merge reads are not counted "
                "as quiet):\n")
            add(_table(["reads during", "p50 ms during", "p99 ms during", "max ms during",
                        "quiet reads", "quiet p50 ms", "quiet p99 ms", "read errors"],
                       [[_f(ro["reads_during"]), _f(ro["during_p50_ms"], 3),
                         _f(ro["during_p99_ms"], 3), _f(ro["during_max_ms"], 3),
                         _f(ro["reads_quiet"]), _f(ro["quiet_p50_ms"], 3),
                         _f(ro["quiet_p99_ms"], 3), _f(len(ro.get("errors", [])))]]) + "\n")

        add(_disk_after_appends_section(s, names))
        add(_batch_load_section(s, names))
        add(_memory_section(s, names))

        missed = [t for t in tg if t["met"] is False]
        if missed and SV in s and s[SV].get("profiles"):
            add("## Where SeqVault's time goes (profiles for missed targets)\n")
            add("cProfile of SeqVault in the same run, sorted by own time (tottime); "
                "profiling overhead inflates the totals, the proportions are what matter.\n")
            for name, text in s[SV]["profiles"].items():
                add(f"### {name}\n\n```\n{text}\n```\n")

    add(METHOD.format(rerun=results["command"]))
    return "\n".join(md)


def _zipf_top(w: dict) -> float:
    from bench.workload import zipf_top_share

    return zipf_top_share(w["user_zipf_a"], w["n_users"])


def _hot_mix_section(s: dict, names: list[str]) -> str:
    if not any("hot_mix" in s[n] for n in names):
        return ""
    h0 = next(s[n]["hot_mix"] for n in names if "hot_mix" in s[n])
    md = ["## The same mix with one hot user\n",
          f"The 90/10 mix again, but user {h0['hot_user']} receives {h0['hot_share']:.0%} of "
          "the appended events and of the reads; the other reads and events stay Zipf over the "
          "rest of the population (\"cold\" users). A bot, a power user, a viral creator's "
          "followers' feeds. The hot user is the population's Zipf rank-1 user: it was loaded "
          f"with {h0['hot_user_history']:,} events and, being the most active user, received "
          "the largest share of every earlier append workload, none of it merged yet (SeqVault: "
          f"{_f(s.get(SV, {}).get('hot_mix', {}).get('hot_events_before'))} events). The hot "
          "user's read latency is compared with the cold users' reads of the same run.\n"]
    rows = []
    for n in names:
        h = s[n].get("hot_mix")
        if not h:
            continue
        rows.append([LABEL[n], _f(h["ops_per_s"]), _f(h["hot_read_p50_ms"], 3),
                     _f(h["hot_read_p99_ms"], 3), _f(h["cold_read_p50_ms"], 3),
                     _f(h["cold_read_p99_ms"], 3),
                     _x(_ratio(h["hot_read_p99_ms"], h["cold_read_p99_ms"])),
                     _f(h.get("hot_read_tcpu_p99_ms"), 3), _f(h.get("cold_read_tcpu_p99_ms"), 3),
                     _f(h["append_p99_ms"], 3), _f(h.get("hot_events_before")),
                     _f(h["hot_events_appended"]), _f(h["ops"])])
    md.append(_table(["system", "ops/s", "hot read p50 ms", "hot read p99 ms",
                      "cold read p50 ms", "cold read p99 ms", "hot p99 ÷ cold p99",
                      "hot thread-CPU p99 ms", "cold thread-CPU p99 ms", "append p99 ms",
                      "hot user's events appended before", "hot user's events appended in the mix",
                      "ops"], rows) + "\n")
    return "\n".join(md)


def _disk_after_appends_section(s: dict, names: list[str]) -> str:
    rows = []
    for n in names:
        a, c = s[n].get("after_appends"), s[n].get("clean_load")
        if not a:
            continue
        rows.append([LABEL[n], _f(a["events"]), _f(a["events_appended"]),
                     _f(a["disk_bytes"] / 2**20), _f(a["disk_bytes"] / max(a["events"], 1)),
                     _f(c and c["disk_bytes"] / 2**20),
                     _f(c and c["disk_bytes"] / max(c["events"], 1)),
                     _x(_ratio(a["disk_bytes"], c and c["disk_bytes"])),
                     (c or {}).get("method", "–")])
    if not rows:
        return ""
    return "\n".join([
        "## Disk after the append workloads\n",
        "Each store after everything it received (the load, the append workloads, both mixes) "
        "and a merge (SeqVault: flush + `merge(reclaim_ratio=0.9)`, its full compaction: files with more than 10% garbage are rewritten; RocksDB: full compaction), against a fresh "
        "store given exactly the same events in one clean bulk load (its usual load path) and "
        "then the same flush + merge / compaction. The append workloads are time-bounded, so "
        "each system holds its own number of events; per-event figures compare across "
        "systems (the blob layout keeps only its newest events a user).\n",
        _table(["system", "events received", "of which appended", "disk MiB after merge",
                "B/event", "clean bulk load MiB", "clean B/event", "after ÷ clean",
                "clean load path"], rows) + "\n"])


def _batch_load_section(s: dict, names: list[str]) -> str:
    rows = []
    for n in names:
        b = s[n].get("batch_load")
        if not b:
            continue
        rows.append([LABEL[n], _f(b["users"]), _f(b["events"]), _f(b["calls"]),
                     f"{_f(b['write_seconds'])} / {_f(b['write_cpu_seconds'])}",
                     f"{_f(b['flush_seconds'])} / {_f(b['flush_cpu_seconds'])}",
                     f"{_f(b['merge_seconds'])} / {_f(b['merge_cpu_seconds'])}",
                     _f(b["events_per_cpu_second"]), _f(b["events_per_s"]),
                     _f(b["disk_bytes_per_event"]),
                     f"{b['mismatches']} of {b['users_checked']}"])
    if not rows:
        return ""
    b0 = next(s[n]["batch_load"] for n in names if "batch_load" in s[n])
    return "\n".join([
        "## Many-user batch load\n",
        f"{b0['users']:,} new users with {b0['events_per_user']} events each, rows shuffled so "
        f"every call holds many users, written in {b0['calls']} calls of up to "
        f"{b0['call_rows']:,} rows into a fresh store: SeqVault `append_batch` then `flush()` "
        "then `merge()`; RocksDB one WriteBatch per call, then a memtable flush and a full "
        "compaction. *Events per CPU-second* is events ÷ the worker's process CPU time over "
        "the three phases (all threads: RocksDB's background threads and SeqVault's merge "
        "thread are charged).\n",
        _table(["system", "users", "events", "calls", "write wall / CPU s",
                "flush wall / CPU s", "merge/compact wall / CPU s", "events per CPU-s",
                "wall events/s", "disk B/event", "read-back mismatches"], rows) + "\n"])


def _memory_section(s: dict, names: list[str]) -> str:
    steps = next((list(s[n]["step_peak_rss_bytes"]) for n in names
                  if s[n].get("step_peak_rss_bytes")), [])
    if not steps:
        return ""
    appends = [st for st in steps if st.split(":")[0] in ("appends", "mix", "hotmix")]
    rows = []
    for n in names:
        per = s[n].get("step_peak_rss_bytes", {})
        mib = [per[st] / 2**20 for st in appends if st in per]
        rows.append([LABEL[n], _f(per.get("load", 0) / 2**20),
                     _f(mib[0] if mib else None), _f(max(mib) if mib else None),
                     _f(per.get("merge", 0) / 2**20), _f(per.get("cleanload", 0) / 2**20),
                     _f(per.get("batchload", 0) / 2**20), _f(s[n]["peak_rss_bytes"] / 2**20)])
    return "\n".join([
        "## Memory\n",
        "Peak RSS (Linux `VmHWM`, reset before each step through `/proc/self/clear_refs`) of "
        "each system's worker process during each step: a bounded memtable shows as a flat "
        f"peak across the append workloads ({', '.join(appends)}), whatever the mix of hot "
        "and cold users. Includes Python, numpy and the harness (about the same for all).\n",
        _table(["system", "load MiB", "first append workload MiB",
                "append workloads and mixes MiB (max)", "merge MiB",
                "clean bulk load MiB (input table in memory)", "many-user batch load MiB",
                "whole run MiB"], rows) + "\n"])


def _spread_section(results: dict, tg: list[dict]) -> str:
    prev = results.get("previous")
    md = ["### Run-to-run spread\n"]
    if not prev:
        md.append("This run was not compared with another. To measure the spread, run the "
                  "same preset twice and pass the first run's results to the second: "
                  "`python -m bench.run --out /tmp/run1` then `python -m bench.run --compare "
                  "/tmp/run1/results.json` (or compare two saved runs with `python -m "
                  "bench.report B/results.json --compare A/results.json`). The report then "
                  "shows both runs' ratios and the spread (larger ÷ smaller) of each.\n")
        return "\n".join(md)
    md.append(f"Compared with the run at commit `{prev['commit']}` started {prev['started']} "
              "(same preset): each ratio in both runs and the spread, larger ÷ smaller.\n")
    rows = []
    spreads = []
    for t in tg:
        a, b = t["measured"], prev["targets"].get(t["target"])
        sp = max(a, b) / min(a, b) if a and b and min(a, b) > 0 else None
        if sp is not None:
            spreads.append(sp)
        rows.append([t["target"], _x(b), _x(a), "–" if sp is None else f"{sp:.2f}×"])
    md.append(_table(["measured point", "previous run", "this run", "spread"], rows) + "\n")
    if spreads:
        spreads.sort()
        md.append(f"Median spread {spreads[len(spreads) // 2]:.2f}×, largest "
                  f"{spreads[-1]:.2f}×: a target met or missed by less than that is within "
                  "run-to-run noise.\n")
    return "\n".join(md)


def previous_summary(prev: dict) -> dict:
    """What a later run's report needs of an earlier run to show the spread."""
    return {"commit": prev.get("commit"), "started": prev.get("started"),
            "preset": prev.get("preset"), "targets": headline(prev)}


def _ratio_table(s: dict, section: str, keys: tuple[str, ...], label) -> str:
    rows = []
    for r in s[SV][section]:
        cells = [label(r)]
        for b in BASELINES:
            br = _find(s[b][section], **{k: r[k] for k in keys}) if b in s else None
            cells += [_x(_ratio(r["p50_ms"], br and br["p50_ms"])),
                      _x(_ratio(r["p99_ms"], br and br["p99_ms"])),
                      _x(_ratio(r["cpu_ms_per_op"], br and br["cpu_ms_per_op"]))]
        rows.append(cells)
    hdr = ["SeqVault ÷ baseline"]
    for b in BASELINES:
        short = "blob" if b == BLOB else "key/event"
        hdr += [f"p50 ÷ {short}", f"p99 ÷ {short}", f"CPU ÷ {short}"]
    return _table(hdr, rows)


METHOD = """## Method

- One worker process per system, all fed the same generated data (same seed, same events).
  Each loads alone; then the parent runs every workload step on each system in turn,
  rotating which goes first, so noise from other work on the machine is shared alike. Peak
  RSS and CPU belong to one system. The page cache is warm for all (the data set fits in
  RAM): this measures CPU and software overhead, not SSD latency.
- Latency: `time.perf_counter_ns` around each call, after a short untimed warm-up; percentiles
  over all timed calls. *Thread-CPU* percentiles time the same calls with
  `time.thread_time_ns` (CPU of the calling thread, where both stores do their read work):
  the service time without the time the thread sat descheduled, so they are far less
  disturbed when the machine is shared (not immune: a busy sibling CPU still slows each
  instruction). *Process CPU*: `time.process_time()` over the whole workload (all
  threads, so RocksDB's background compaction threads and SeqVault's own background work are
  charged to them) divided by operations: the paper's CPU axis.
- Durability: the load, reads and mix run at `batch`: SeqVault fsyncs its log 5 ms after a
  write; RocksDB writes its WAL without sync and a background thread does the same 5 ms
  `FlushWAL(sync=true)` (rocksdict releases the GIL there). Appends run at each listed
  durability: `sync` means SeqVault acknowledges after fsync and RocksDB uses
  `WriteOptions.sync = True`; `none` means no fsync at all for either.
- RocksDB tuning: raw byte keys and values, zstd on all levels, 256 MiB LRU block cache,
  10-bit bloom filters, index and filter blocks cached and L0's pinned, 16 KiB blocks, 64 MiB
  memtable, 2 background jobs; the key-per-event layout adds an 8-byte prefix extractor
  (prefix bloom) and reverse-scans with SeekForPrev. Reads return the same numpy columns as
  SeqVault (the conversion cost is part of every system's read).
- Steady state: after the load, RocksDB is flushed and fully compacted, SeqVault is flushed
  (and merged when `merge()` exists) before reads are timed.

## Caveats

- Two cores: a background compaction or merge competes with the foreground thread, and on a
  shared machine other processes compete too (see the load table at the top): wall-clock
  p99/max then mostly measure scheduling; compare the thread-CPU percentiles.
- Python on both sides: rocksdict's per-key call overhead (one Python call per event in
  scans and WriteBatch puts) is part of the RocksDB numbers, as it is for any Python user.
- Zipf-skewed reads hit a few users repeatedly, so they measure the cached path.
- Bulk load: SeqVault ingests a Parquet file (reading and parsing it is inside the timing);
  the RocksDB loaders are handed numpy arrays. The generator's CPU is excluded for all.
- Reads of "last 10,000" on population users mostly return whole (short) histories; the
  targets use the sweep cohort holding 10,000 events a user, as in the BRIEF's anchors.

## Rerun

```
make bench                      # = {rerun}
.venv/bin/python -m bench.run --full            # the big sweep (tens of minutes)
.venv/bin/python -m bench.run --publish docs/benchmarks.md   # regenerate this page
.venv/bin/python -m bench.run --out /tmp/run1 && .venv/bin/python -m bench.run --compare /tmp/run1/results.json   # run-to-run spread
.venv/bin/python -m bench.report bench/results/default/results.json   # re-render a saved run
.venv/bin/python -m pytest bench/micro --benchmark-only      # micro-benchmarks
```
"""


def write_report(results: dict, out: Path, publish: Path | None = None) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    _plots(results, out)
    path = out / "report.md"
    path.write_text(render(results))
    if publish is not None:
        prefix = os.path.relpath(out, publish.parent).replace(os.sep, "/") + "/"
        text = render(results, image_prefix=prefix)
        kept = ""
        if publish.exists():
            old = publish.read_text()
            if HAND_WRITTEN_MARKER in old:
                kept = old.split(HAND_WRITTEN_MARKER, 1)[1]
        publish.parent.mkdir(parents=True, exist_ok=True)
        publish.write_text(text.rstrip() + "\n\n" + HAND_WRITTEN_MARKER + (kept or "\n"))
    return path


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.report RESULTS_JSON [--compare EARLIER_JSON] [--publish MD]``:
    re-render a saved run's report (beside its results.json), optionally with the spread
    against an earlier run of the same preset."""
    import argparse
    import json

    p = argparse.ArgumentParser(prog="python -m bench.report", description=main.__doc__)
    p.add_argument("results", type=Path)
    p.add_argument("--compare", type=Path, metavar="EARLIER_JSON")
    p.add_argument("--publish", type=Path, metavar="MD")
    args = p.parse_args(argv)
    results = json.loads(args.results.read_text())
    if args.compare is not None:
        results["previous"] = previous_summary(json.loads(args.compare.read_text()))
    path = write_report(results, args.results.parent, publish=args.publish)
    print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
