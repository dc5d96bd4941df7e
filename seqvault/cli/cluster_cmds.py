"""`seqvault cluster …`: init, ingest, serve, status, reshard (the `seqvault[cluster]` extra).

Ray and the cluster modules are imported inside each command, so `seqvault --help` stays fast
and a missing extra says which `pip install` fixes it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import click

from .common import ci_or_pipe, echo_json, human_bytes, json_option, progress_bar

DEFAULT_CLUSTER = "./seqvault-cluster"

cluster_option = click.option(
    "--cluster", "-c", "cluster_dir", envvar="SEQVAULT_CLUSTER", default=DEFAULT_CLUSTER,
    show_default=True, type=click.Path(file_okay=False),
    help="Cluster directory (manifest, vocabularies; else $SEQVAULT_CLUSTER).")
ray_options = [
    click.option("--ray-address", default=None,
                 help="Join this Ray cluster (e.g. 'auto'); default: start a local Ray with "
                      "one custom resource per node of the manifest."),
    click.option("--num-cpus", type=click.IntRange(1, None), default=None,
                 help="CPUs of the local Ray (default: all)."),
    click.option("--timeout", "timeout_s", type=click.FloatRange(1, None), default=1800.0,
                 show_default=True, help="Give up (and publish nothing) after this many s."),
]
progress_option = click.option(
    "--progress/--no-progress", "show_progress", default=None,
    help="Progress bar on stderr (default: on a terminal, off in pipes and CI).")


def with_ray_options(f: Any) -> Any:
    for opt in reversed(ray_options):
        f = opt(f)
    return f


@contextmanager
def ray_for(cluster_dir: str, address: str | None, num_cpus: int | None) -> Iterator[None]:
    """Ray for one command: joined (address) or local, shut down afterwards if we started it."""
    from ..cluster import manifest as mf
    from ..cluster.runtime import import_ray, init_local

    ray = import_ray()
    m = mf.load(cluster_dir)
    if address:
        ray.init(address=address, log_to_driver=False)
        started = True
    else:
        started = init_local(list(m.nodes), num_cpus=num_cpus)
    try:
        yield
    finally:
        if started:
            ray.shutdown()


@click.group("cluster")
def cluster_group() -> None:
    """A sharded SeqVault over Ray: S shards, each an ordinary store (pip install
    'seqvault[cluster]'; see docs/design/cluster.md)."""


@cluster_group.command("init")
@cluster_option
@click.option("--schema", "schema_path", required=True,
              type=click.Path(dir_okay=False, exists=True), help="Schema TOML of every shard.")
@click.option("--shards", type=click.IntRange(1, 1 << 20), default=1024, show_default=True,
              help="Number of virtual shards S, fixed up front (grow with `reshard grow`).")
@click.option("--nodes", required=True,
              help="Comma-separated node names (each Ray node has the resource "
                   "seqvault_node_<name>).")
@click.option("--replication", type=click.IntRange(1, None), default=1, show_default=True,
              help="Copies of each shard (on consecutive nodes); the first is the writer.")
@json_option
def init_cmd(cluster_dir: str, schema_path: str, shards: int, nodes: str, replication: int,
             as_json: bool) -> None:
    """Create a cluster: publish epoch 1 of its manifest (shard → node → store path)."""
    from ..cluster import init_cluster

    names = [n.strip() for n in nodes.split(",") if n.strip()]
    m = init_cluster(cluster_dir, schema_path, shards, names, replication=replication)
    if as_json:
        echo_json(m.to_dict())
        return
    click.echo(f"Created cluster {cluster_dir}: {m.shards} shards over {len(m.nodes)} nodes, "
               f"replication {m.replication}, epoch {m.epoch}", err=True)


@cluster_group.command("ingest")
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True))
@cluster_option
@click.option("--force", is_flag=True,
              help="Ingest files this cluster ingested before (their events are stored twice).")
@with_ray_options
@progress_option
@json_option
def ingest_cmd(paths: tuple[str, ...], cluster_dir: str, force: bool, ray_address: str | None,
               num_cpus: int | None, timeout_s: float, show_progress: bool | None,
               as_json: bool) -> None:
    """Load Parquet / CSV / JSON-lines files into every shard (Ray Data), all or nothing.

    The next epoch is published only when every shard replica committed; rerunning a failed
    job is safe (shards that committed are skipped); a file loaded before is refused (exit 9).
    """
    from ..cluster.ingest import ingest

    enabled = (not ci_or_pipe()) if show_progress is None else show_progress
    with ray_for(cluster_dir, ray_address, num_cpus), progress_bar(enabled) as update:
        s = ingest(cluster_dir, list(paths), force=force, progress=update, timeout_s=timeout_s)
    if as_json:
        echo_json(s.to_dict())
        return
    click.echo(f"Ingested {s.events:,} events from {len(s.files)} file(s) into "
               f"{len(s.per_shard_events)} shards in {s.elapsed_s:.1f} s "
               f"({s.events_per_s:,.0f} events/s); epoch {s.epoch}, job {s.job_id}"
               + (f" ({s.already} shard replicas had it already)" if s.already else ""),
               err=True)


@cluster_group.command("serve")
@cluster_option
@click.option("--token-file", type=click.Path(dir_okay=False, exists=True), default=None,
              help="Bearer token of the shard writers (appends need it); without it every "
                   "server is read-only.")
@click.option("--duration", type=click.FloatRange(0, None), default=None,
              help="Stop after this many seconds (default: run until Ctrl-C).")
@with_ray_options
def serve_cmd(cluster_dir: str, token_file: str | None, duration: float | None,
              ray_address: str | None, num_cpus: int | None, timeout_s: float) -> None:
    """Start and supervise one shard server per shard replica (killed servers restart)."""
    from ..cluster.serve import serve

    with ray_for(cluster_dir, ray_address, num_cpus):
        servers = serve(cluster_dir, token_file=token_file, timeout_s=min(timeout_s, 300))
        try:
            for name, h in sorted(servers.health().items()):
                click.echo(f"{name}\t{h['node']}\t{h['url']}")
            click.echo("serving; Ctrl-C stops", err=True)
            t0 = time.monotonic()
            while duration is None or time.monotonic() - t0 < duration:
                time.sleep(min(1.0, duration or 1.0))
        except KeyboardInterrupt:
            pass
        finally:
            servers.stop()


@cluster_group.command("status")
@cluster_option
@json_option
def status_cmd(cluster_dir: str, as_json: bool) -> None:
    """Per shard replica: node, users, events, bytes on disk, server and its health."""
    from ..cluster import status

    st = status(cluster_dir)
    if as_json:
        echo_json(st)
        return
    click.echo(f"epoch {st['epoch']} · {st['shards']} shards · {len(st['nodes'])} nodes · "
               f"{st['users']:,} users · {st['events']:,} events · {human_bytes(st['bytes'])}"
               f" · last change: {st['note']}")
    click.echo("shard\treplica\tnode\tusers\tevents\tbytes\tserver\thealth")
    for r in st["replicas"]:
        health = {None: "-", True: "ok", False: "DOWN"}[r["healthy"]]
        click.echo(f"{r['shard']}\t{r['replica']}\t{r['node']}\t{r['users']}\t{r['events']}\t"
                   f"{human_bytes(r['bytes'])}\t{r['server'] or '-'}\t{health}")


@cluster_group.group("reshard")
def reshard_group() -> None:
    """Move a shard to another node, or grow the number of shards by one."""


@reshard_group.command("move")
@cluster_option
@click.option("--shard", type=int, required=True, help="The shard to move.")
@click.option("--to-node", required=True, help="The node to move its primary replica to.")
@progress_option
@json_option
def move_cmd(cluster_dir: str, shard: int, to_node: str, show_progress: bool | None,
             as_json: bool) -> None:
    """Copy the shard to the node, catch up appends, flip the epoch, retire the old copy."""
    from ..cluster.reshard import move_shard

    enabled = (not ci_or_pipe()) if show_progress is None else show_progress
    with progress_bar(enabled) as update:
        m = move_shard(cluster_dir, shard, to_node, progress=update)
    if as_json:
        echo_json(m.to_dict())
        return
    click.echo(f"epoch {m.epoch}: {m.note}", err=True)


@reshard_group.command("grow")
@cluster_option
@click.option("--shards", type=int, required=True, help="The new shard count (current + 1).")
@click.option("--node", default=None, help="Node of the new shard (default: round robin).")
@click.option("--keep-old-copies", is_flag=True,
              help="Publish without deleting moved users from their old shards (their copies "
                   "there become unreachable garbage).")
@progress_option
@json_option
def grow_cmd(cluster_dir: str, shards: int, node: str | None, keep_old_copies: bool,
             show_progress: bool | None, as_json: bool) -> None:
    """Grow S by one: only users that jump hash sends to the new shard move."""
    from ..cluster.reshard import grow_shards

    enabled = (not ci_or_pipe()) if show_progress is None else show_progress
    with progress_bar(enabled) as update:
        m = grow_shards(cluster_dir, shards, node=node, keep_old_copies=keep_old_copies,
                        progress=update)
    if as_json:
        echo_json(m.to_dict())
        return
    click.echo(f"epoch {m.epoch}: {m.note}", err=True)
