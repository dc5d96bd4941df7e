# Type stub of the compiled append kernel (seqvault/native_append.c).
from array import array
from typing import Any

import numpy as np

def prepare(
    spec: tuple[int, str, int, tuple[tuple[str, int, bool], ...]],
    key: Any,
    users: Any,
    columns: dict[str, Any],
    min_ts: int,
    /,
) -> tuple[list[Any], list[int], np.ndarray, dict[str, np.ndarray], bytes] | None: ...
def add_call(
    parts: tuple[Any, ...],
    block: Any,
    keys: list[Any],
    counts: list[int],
    ts: np.ndarray,
    cols: dict[str, np.ndarray],
    end: int,
    seal_at: int,
    /,
) -> tuple[list[Any], int, int, int]: ...
def append_call(
    spec: tuple[int, str, int, tuple[tuple[str, int, bool], ...]],
    key: Any,
    users: Any,
    columns: dict[str, Any],
    min_ts: int,
    parts: tuple[Any, ...],
    block: Any,
    seal_at: int,
    dicts: dict[str, Any],
    max_strings: int,
    log: tuple[int, int, int, int, int, Any, int, int],
    /,
) -> (
    tuple[int, int, list[Any], int, int, int] | tuple[int, int, BaseException] | None
): ...
def gather(
    refs: list[tuple[Any, int, int]], names: tuple[str, ...], /
) -> tuple[np.ndarray, dict[str, np.ndarray]] | None: ...
def chain(
    blocks: list[Any],
    e_block: array[int],
    e_start: array[int],
    e_stop: array[int],
    e_prev: array[int],
    e_end: array[int],
    e: int,
    through: int,
    /,
) -> list[tuple[Any, int, int]]: ...
def gather_chain(
    blocks: list[Any],
    e_end: array[int],
    e_block: array[int],
    e_start: array[int],
    e_stop: array[int],
    e_prev: array[int],
    e: int,
    through: int,
    names: tuple[str, ...],
    /,
) -> tuple[np.ndarray, dict[str, np.ndarray]] | None: ...
def scatter(
    values: np.ndarray,
    user_of: np.ndarray,
    rank: np.ndarray,
    offsets: np.ndarray,
    m: np.ndarray,
    width: np.ndarray,
    total: int,
    plain: bool = False,
    /,
) -> Any: ...

RING_HEADER: int
RING_RECORD_MAX: int
