"""How small can the benchmark's events get? Bytes per event of each column under SeqVault's
segment encoding (at several zstd levels, and with zstd dictionaries trained on the store's own
columns), against the column's empirical entropy under a global model.

    python -m bench.compression_floor                 # 600 users, ~1 minute on 2 cores
    python -m bench.compression_floor --users 2000 --json /tmp/floor.json

Why it exists: BRIEF.md asks for bytes on disk <= 0.6x the best RocksDB layout. On the benchmark
data the best layout is one msgpack blob a user (~11.5 B/event), so the goal is ~6.9 B/event.
This script shows what per-segment column coding can reach on that data, so the closing figures
say whether the gap is the encoder's or the data's.

The entropy column is the plug-in estimate over all sampled events (a model that knows every
column's global distribution, e.g. item popularity). It underestimates columns with many rare
values (item_id: most ids are seen once or twice), so the true floor is higher than it says.
A per-segment coder cannot use that global model; a trained dictionary is the usual way to give
it one, and the script measures whether it helps.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import zstandard as zstd

from bench import workload as w
from seqvault import encoding as enc
from seqvault.segment import encode_segment

COLUMNS = ["ts", "item_id", "action", "category", "dwell_ms", "scenario"]
SEGMENT_EVENTS = 2048


def _segments(users: int) -> list[dict[str, np.ndarray]]:
    cfg = w.WorkloadConfig()
    ids, lengths = w.population_users(cfg)
    out = []
    for _, cols in w.iter_histories(cfg, ids[:users], lengths[:users]):
        order = np.argsort(cols["ts"], kind="stable")
        c = {k: v[order] for k, v in cols.items()}
        for s in range(0, len(c["ts"]), SEGMENT_EVENTS):
            out.append({k: v[s : s + SEGMENT_EVENTS] for k, v in c.items()})
    return out


def _pre_zstd(name: str, values: np.ndarray) -> bytes:
    """The bytes SeqVault hands to zstd for this column (after narrowing/delta/shuffle)."""
    e = enc.encode_column(values, delta=(name == "ts"), level=3)
    if e.flags & enc.FLAG_ZSTD:
        return zstd.ZstdDecompressor().decompress(e.data, max_output_size=e.raw_len)
    return bytes(e.data)


def _entropy_bytes(values: np.ndarray) -> float:
    _, counts = np.unique(values, return_counts=True)
    p = counts / counts.sum()
    return float(-(p * np.log2(p)).sum()) / 8


def measure(users: int, levels: list[int]) -> dict:
    segs = _segments(users)
    events = sum(len(s["ts"]) for s in segs)
    result: dict = {"users": users, "segments": len(segs), "events": events, "columns": {}}
    for lvl in levels:
        total = sum(len(encode_segment(1, 1, s["ts"], [
            (i + 1, str(s[c].dtype), s[c], lvl) for i, c in enumerate(COLUMNS[1:])
        ])) for s in segs)
        result[f"segment_level_{lvl}"] = total / events
    # Dictionaries: trained on half of the segments, measured on the other half.
    train, test = segs[::2], segs[1::2]
    test_events = sum(len(s["ts"]) for s in test)
    for name in COLUMNS:
        row: dict = {}
        for lvl in levels:
            row[f"level_{lvl}"] = sum(
                len(enc.encode_column(s[name], delta=(name == "ts"), level=lvl).data) for s in segs
            ) / events
        samples = [b for b in (_pre_zstd(name, s[name]) for s in train) if b]
        plain = zstd.ZstdCompressor(level=3)
        with_dict = zstd.ZstdCompressor(level=3, dict_data=zstd.train_dictionary(16384, samples, level=3))
        a = b = 0
        for s in test:
            raw = _pre_zstd(name, s[name])
            if raw:
                a += len(plain.compress(raw))
                b += len(with_dict.compress(raw))
        row["plain_frames"] = a / test_events
        row["trained_dictionary"] = b / test_events
        values = np.concatenate([s[name] for s in segs])
        if name == "ts":
            # Entropy of the gaps a delta coder sees (segments are sorted by time).
            values = np.concatenate([np.diff(s["ts"]) for s in segs])
        row["entropy_global"] = _entropy_bytes(values)
        result["columns"][name] = row
    result["entropy_global_sum"] = sum(r["entropy_global"] for r in result["columns"].values())
    return result


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.compression_floor", description=__doc__.split("\n")[0])
    p.add_argument("--users", type=int, default=600)
    p.add_argument("--levels", default="3,9,19", help="zstd levels, comma-separated")
    p.add_argument("--json", help="write the figures here too")
    a = p.parse_args()
    r = measure(a.users, [int(x) for x in a.levels.split(",")])
    levels = [int(x) for x in a.levels.split(",")]
    print(f"{r['users']} users, {r['segments']} segments, {r['events']:,} events (B/event)")
    print("| column | " + " | ".join(f"zstd {lv}" for lv in levels)
          + " | trained dict (zstd 3) | no dict, same half | global entropy |")
    print("|---" * (len(levels) + 4) + "|")
    for name, row in r["columns"].items():
        print(f"| {name} | " + " | ".join(f"{row[f'level_{lv}']:.2f}" for lv in levels)
              + f" | {row['trained_dictionary']:.2f} | {row['plain_frames']:.2f} | {row['entropy_global']:.2f} |")
    print("whole segments (headers included): "
          + ", ".join(f"zstd {lv} {r[f'segment_level_{lv}']:.2f}" for lv in levels)
          + f"; sum of global entropies {r['entropy_global_sum']:.2f}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(r, f, indent=1)


if __name__ == "__main__":
    main()
