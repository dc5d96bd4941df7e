"""Every tunable of a store in one typed place, validated before anything is created or persisted.

Settings are data persisted with the store (like python-diskcache's): a writer open that passes
a setting changes it for good; a read-only open keeps the store's values except its own
`refresh_interval`. `validate` is called on every open with the merged values, so a bad value is
refused with the setting, the value and the allowed range named — before a directory is created
or a byte is written (a zero `segment_events` once made every later writer command crash).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .errors import SettingsError

# Extent offsets and lengths are 32-bit in the index (docs/format/index.md).
MAX_FILE_BYTES = (1 << 32) - 1
DURABILITY_MODES = ("sync", "batch", "none")


@dataclass(frozen=True)
class Setting:
    name: str
    default: Any
    kind: type  # int, float or str
    lo: float | None = None  # inclusive bounds for numbers
    hi: float | None = None
    choices: tuple[str, ...] = ()
    doc: str = ""

    def check(self, value: Any) -> Any:
        """The value in its canonical type, or SettingsError naming what is allowed."""
        if self.kind is str:
            if not isinstance(value, str) or (self.choices and value not in self.choices):
                raise SettingsError(f"setting {self.name}: {value!r} is not one of "
                                    f"{list(self.choices)}", setting=self.name, value=value)
            return value
        ok_type = (int,) if self.kind is int else (int, float)
        if isinstance(value, bool) or not isinstance(value, ok_type):
            raise SettingsError(f"setting {self.name}: {value!r} is not "
                                f"{'an integer' if self.kind is int else 'a number'} "
                                f"({self.range()})", setting=self.name, value=value)
        if (self.lo is not None and value < self.lo) or (self.hi is not None and value > self.hi):
            raise SettingsError(f"setting {self.name}: {value!r} is out of range ({self.range()})",
                                setting=self.name, value=value)
        return self.kind(value)

    def range(self) -> str:
        if self.lo is not None and self.hi is not None:
            return f"allowed: {self.lo:g} to {self.hi:g}"
        if self.lo is not None:
            return f"allowed: at least {self.lo:g}"
        return "any number"


_SPECS = (
    # The log and the memtable (docs/design/architecture.md, "Writes").
    Setting("durability", "batch", str, choices=DURABILITY_MODES,
            doc="sync: acknowledged = fsynced; batch: fsync within batch_interval; none"),
    Setting("memtable_events", 4_194_304, int, 1, 1 << 31,
            doc="flush every tail when the memtable holds this many events ..."),
    Setting("memtable_bytes", 512 << 20, int, 4096, 1 << 40,
            doc="... or holds about this many bytes (its own estimate: rows, bookkeeping, "
                "read tails; two memtables while a background flush runs)"),
    Setting("tail_events", 8_192, int, 1, 1 << 31,
            doc="a user's unsealed tail at this many events is sealed on its own"),
    Setting("wal_bytes", 128 << 20, int, 4096, 1 << 40, doc="... or the log reaches this size"),
    Setting("flush_worker", "thread", str, choices=("thread", "caller"),
            doc="a flush at memtable_events: sealed by a background thread while appends go "
                "on into a new memtable (the log rotates only at wal_bytes), or in the call "
                "that filled the memtable"),
    Setting("segment_events", 65_536, int, 1, 1 << 31,
            doc="split a user's flush into segments of at most this many events"),
    Setting("lifetime_segment_events", 32_768, int, 1, 1 << 31,
            doc="target size of lifetime segments (merge, ingest)"),
    Setting("max_file_bytes", 256 << 20, int, 1, MAX_FILE_BYTES,
            doc="extent files roll over at this size (offsets are 32-bit)"),
    Setting("checkpoint_deltas", 50_000, int, 1, 1 << 40,
            doc="write a full index checkpoint after this many index delta records (or a "
                "quarter of the index's users, when more)"),
    Setting("batch_interval", 0.005, float, 0.0, 10.0,
            doc="seconds between fsyncs in durability=batch"),
    Setting("refresh_interval", 0.05, float, 0.0, 3600.0,
            doc="read-only opens look for new commits at most this often (seconds)"),
    Setting("zstd_level", 3, int, -7, 22, doc="default zstd level of segment columns"),
    # Lifetime merge and reclamation (docs/design/merge.md).
    Setting("reclaim_ratio", 0.5, float, 0.0, 1.0,
            doc="rewrite a file's live extents when live/size falls below this"),
    Setting("merge_batch_users", 256, int, 1, 1 << 31, doc="users per merge publish"),
    Setting("merge_interval", 0.5, float, 0.0, 3600.0,
            doc="background: seconds between passes when there is work"),
    Setting("merge_duty", 0.5, float, 0.01, 1.0,
            doc="background: fraction of wall time the merge thread may work"),
    Setting("merge_trigger_flushes", 1, int, 1, 1 << 31,
            doc="background: start a pass after this many unmerged flushes"),
    Setting("merge_backpressure_flushes", 64, int, 1, 1 << 31,
            doc="appends wait when this many flushes are unmerged ..."),
    Setting("merge_backpressure_wait", 30.0, float, 0.0, 86_400.0,
            doc="... for at most this many seconds per append"),
    Setting("idle_reclaim_ratio", 0.9, float, 0.0, 1.0,
            doc="background, nothing to merge: reclaim down to 1 - this garbage"),
    Setting("merge_nice", 10, int, 0, 19,
            doc="CPU niceness of background merge work (Linux), so reads go first"),
    Setting("read_cache_bytes", 64 << 20, int, 0, 1 << 40,
            doc="decoded segments kept in DRAM for reads, per process (0: none)"),
    Setting("merge_worker", "process", str, choices=("process", "thread"),
            doc="where background merge batches are decoded, encoded and written: a child "
                "process (never holds the writer's GIL) or a thread of the writer"),
)

SETTINGS: dict[str, Setting] = {s.name: s for s in _SPECS}
DEFAULTS: dict[str, Any] = {s.name: s.default for s in _SPECS}
# Accepted by SeqVault.open but not persisted: it describes this process, not the store.
PROCESS_OPTIONS = ("auto_merge",)
# A read-only open keeps its own value of these (the others are the store's).
READER_OWN = ("refresh_interval", "read_cache_bytes")


def check_names(given: Mapping[str, Any]) -> None:
    unknown = sorted(set(given) - set(SETTINGS) - set(PROCESS_OPTIONS))
    if unknown:
        raise SettingsError(f"unknown setting(s) {unknown}; known: {sorted(SETTINGS)}",
                            setting=unknown[0], value=given[unknown[0]])


def validate(values: Mapping[str, Any]) -> dict[str, Any]:
    """Canonical values of the known settings in `values` (unknown names are refused)."""
    check_names(values)
    return {k: SETTINGS[k].check(v) for k, v in values.items() if k in SETTINGS}


def effective(stored: Mapping[str, Any], given: Mapping[str, Any]) -> dict[str, Any]:
    """Defaults, overridden by the store's persisted values, then by this open's. Stored values
    are re-checked too: a store written by an older SeqVault that accepted a bad value is
    refused with a message, not a crash deep inside a flush."""
    merged = {**DEFAULTS, **{k: v for k, v in stored.items() if k in SETTINGS}}
    merged.update(validate(given))
    return validate(merged)
