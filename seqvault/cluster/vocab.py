"""Cluster-global string vocabularies: `vocab/<column>.json`, a JSON list of strings.

Each shard store codes its string columns with its own dictionary, so code 7 on shard 3 and
code 7 on shard 9 are different strings: a model trained across shards needs one map for the
whole cluster. The list is append-only (a string's id never changes once given, so a trained
embedding table stays valid after more data is ingested): id = position + 1, 0 stays free for
padding. New strings of one ingest job are appended in sorted order, so the ids do not depend
on which shard finished first. Written with write-to-temp + rename before the epoch that
needs them is published.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

VOCAB_DIR = "vocab"


def load_vocab(cluster_dir: str | os.PathLike[str], column: str) -> dict[str, int]:
    """string → id (1-based) for `column`; empty when nothing was ingested yet."""
    p = Path(cluster_dir) / VOCAB_DIR / f"{column}.json"
    if not p.exists():
        return {}
    return {s: i + 1 for i, s in enumerate(json.loads(p.read_text()))}


def extend_vocabs(cluster_dir: Path, new: Mapping[str, set[str]]) -> None:
    d = Path(cluster_dir) / VOCAB_DIR
    d.mkdir(parents=True, exist_ok=True)
    for column, values in new.items():
        p = d / f"{column}.json"
        have: list[str] = json.loads(p.read_text()) if p.exists() else []
        known = set(have)
        added = sorted(v for v in values if v not in known)
        if not added and p.exists():
            continue
        tmp = p.with_name(f".{p.name}.tmp")
        tmp.write_text(json.dumps(have + added))
        os.replace(tmp, p)
