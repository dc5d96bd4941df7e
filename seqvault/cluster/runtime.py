"""Ray start-up and waiting, in one place: every wait has a timeout, every error is unwrapped.

Nodes: a shard's store lives on one node, and the tasks that write it must run there. Each
SeqVault node is a Ray node started with a custom resource `seqvault_node_<name>` (for example
`ray start --resources '{"seqvault_node_n3": 1000}'`); tasks ask for a sliver of it
(`NODE_SLICE`), which pins them to that node without limiting how many run there (CPUs do
that). On one machine, `init_local` declares every node's resource on the single Ray node:
the same code path, with all "nodes" sharing one disk.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from ..errors import SeqVaultError

NODE_RESOURCE_PREFIX = "seqvault_node_"
NODE_SLICE = 0.001
DEFAULT_TIMEOUT_S = 600.0


class ClusterError(SeqVaultError):
    """A cluster job failed (a task died, timed out, or a shard could not be reached)."""


def import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ClusterError("the cluster needs Ray: pip install 'seqvault[cluster]'") from None
    return ray


def node_resource(node: str) -> dict[str, float]:
    return {NODE_RESOURCE_PREFIX + node: NODE_SLICE}


def init_local(nodes: Sequence[str], num_cpus: int | None = None,
               object_store_mb: int = 256) -> bool:
    """Start a local Ray instance standing in for `nodes` (unless Ray is already up).
    Returns True when this call started it (so the caller should shut it down)."""
    ray = import_ray()
    if ray.is_initialized():
        return False
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    ray.init(num_cpus=num_cpus or os.cpu_count() or 1, include_dashboard=False,
             object_store_memory=object_store_mb << 20, log_to_driver=False,
             resources={NODE_RESOURCE_PREFIX + n: 1000.0 for n in nodes},
             configure_logging=False)
    return True


def cause_of(exc: BaseException) -> BaseException:
    """The SeqVaultError inside Ray's wrappers (RayTaskError, UserCodeException), if any."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        inner = getattr(cur, "cause", None)  # RayTaskError: the task's own exception
        if isinstance(inner, BaseException) and inner is not cur:
            cur = inner
            continue
        if isinstance(cur, SeqVaultError):
            return cur
        cur = cur.__cause__ or cur.__context__
    return exc


def get(refs: Any, timeout_s: float, what: str) -> Any:
    """ray.get with a timeout; a SeqVaultError raised in a task comes out as itself."""
    ray = import_ray()
    try:
        return ray.get(refs, timeout=timeout_s)
    except ray.exceptions.GetTimeoutError:
        raise ClusterError(f"{what}: no answer within {timeout_s:.0f} s (timeout_s)") from None
    except Exception as exc:
        inner = cause_of(exc)
        if inner is not exc:
            raise inner from exc
        raise ClusterError(f"{what}: {exc}") from exc
