"""One shard replica's HTTP server: `seqvault serve`'s app plus the cluster's epoch check.

    python -m seqvault.cluster.shard_server --cluster DIR --shard S --replica R --port P
        [--writer --token-file F]

The app is `seqvault.server.create_app` unchanged; a middleware adds two things:
- every answer carries `X-SeqVault-Epoch` (the epoch this server last saw) and
  `X-SeqVault-Shard`;
- `GET /cluster/manifest` returns the current manifest, so HTTP clients without the cluster
  directory can bootstrap from any server's URL and refetch after a 409;
- a request that carries `X-SeqVault-Epoch` older than the current manifest's, or that reaches
  a store which the current manifest no longer lists for this shard (it moved), is answered
  409 `stale-epoch` (problem+json with the current epoch): the client refetches the manifest
  and retries. The manifest is re-read only when `cluster.json` changed (stat per request).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import click

EPOCH_HEADER = "x-seqvault-epoch"


class EpochView:
    """The current manifest as this server sees it (cached on cluster.json's mtime + size)."""

    def __init__(self, cluster_dir: Path, shard: int, store: str) -> None:
        self.cluster_dir = cluster_dir
        self.shard = shard
        self.store = str(Path(store).resolve())
        self.key: tuple[int, int] | None = None
        self.epoch = 0
        self.owned = True

    def current(self) -> tuple[int, bool]:
        from . import manifest as mf

        try:
            st = (self.cluster_dir / mf.MANIFEST_NAME).stat()
        except FileNotFoundError:
            return self.epoch, self.owned
        key = (st.st_mtime_ns, st.st_size)
        if key != self.key:
            m = mf.load(self.cluster_dir)
            self.epoch = m.epoch
            self.owned = self.shard < m.shards and any(
                str(Path(r.path).resolve()) == self.store for r in m.entry(self.shard).replicas)
            self.key = key
        return self.epoch, self.owned


def build_app(cluster_dir: Path, shard: int, store: str, *, writer: bool,
              token: str | None) -> Any:
    from fastapi.responses import JSONResponse

    from ..server import create_app

    app = create_app(store, read_only=not writer, token=token)
    view = EpochView(cluster_dir, shard, store)

    @app.get("/cluster/manifest", tags=["cluster"],
             summary="The current cluster manifest (docs/format/cluster.md)")
    def cluster_manifest() -> Any:
        from . import manifest as mf

        return JSONResponse(mf.load(cluster_dir).to_dict())

    @app.middleware("http")
    async def epoch_check(request: Any, call_next: Any) -> Any:
        epoch, owned = view.current()
        asked = request.headers.get(EPOCH_HEADER)
        probe = request.url.path in ("/livez", "/readyz", "/metrics", "/cluster/manifest")
        stale = asked is not None and asked.isdigit() and int(asked) < epoch
        if not probe and (stale or not owned):
            why = ("this store no longer serves shard " f"{shard}" if not owned else
                   f"the request was routed with epoch {asked}; the cluster is at {epoch}")
            return JSONResponse(
                {"type": "https://seqvault.dev/problems/stale-epoch", "title": "Stale epoch",
                 "status": 409, "detail": f"{why}; refetch the cluster manifest and retry",
                 "epoch": epoch, "shard": shard},
                status_code=409, media_type="application/problem+json",
                headers={"X-SeqVault-Epoch": str(epoch), "X-SeqVault-Shard": str(shard)})
        response = await call_next(request)
        response.headers["X-SeqVault-Epoch"] = str(epoch)
        response.headers["X-SeqVault-Shard"] = str(shard)
        return response

    return app


@click.command()
@click.option("--cluster", "cluster_dir", required=True, type=click.Path(file_okay=False))
@click.option("--shard", type=int, required=True)
@click.option("--store", required=True, type=click.Path(file_okay=False))
@click.option("--port", type=int, required=True)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--writer", is_flag=True, help="Open the store as its writer (appends allowed).")
@click.option("--token-file", type=click.Path(dir_okay=False), default=None)
def main(cluster_dir: str, shard: int, store: str, port: int, host: str, writer: bool,
         token_file: str | None) -> None:
    import uvicorn

    token = Path(token_file).read_text().strip() if token_file else None
    app = build_app(Path(cluster_dir), shard, store, writer=writer, token=token)
    # One worker: the writer must be one process; readers scale by replicas and shards.
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
