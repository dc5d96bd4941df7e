"""`seqvault cluster …` end to end (in-process; Ray is the session's)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from seqvault.cli.main import cli

SCHEMA_TOML = """
[user]
column = "user_id"
type = "int64"
[time]
column = "ts"
unit = "ms"
[[columns]]
name = "item_id"
type = "int64"
default = 0
[[columns]]
name = "action"
type = "string"
default = "view"
[[columns]]
name = "dwell"
type = "uint32"
default = 0
"""


def run(*args: str) -> Any:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False, standalone_mode=False)


def test_init_ingest_status_reshard(tmp_path: Path, ray_session: Any, logs: list[Path]) -> None:
    schema = tmp_path / "schema.toml"
    schema.write_text(SCHEMA_TOML)
    c = str(tmp_path / "c")
    r = run("cluster", "init", "--cluster", c, "--schema", str(schema), "--shards", "4",
            "--nodes", "n0,n1,n2,n3", "--json")
    assert json.loads(r.stdout)["epoch"] == 1
    r = run("cluster", "ingest", *map(str, logs), "--cluster", c, "--json", "--timeout", "240")
    s = json.loads(r.stdout)
    assert s["events"] == 10_000 and s["epoch"] == 2
    from seqvault.errors import DuplicateIngest

    with pytest.raises(DuplicateIngest):
        run("cluster", "ingest", str(logs[0]), "--cluster", c)
    st = json.loads(run("cluster", "status", "--cluster", c, "--json").stdout)
    assert st["events"] == 10_000 and len(st["replicas"]) == 4
    table = run("cluster", "status", "--cluster", c).stdout
    assert "epoch 2 · 4 shards" in table and "shard\treplica\tnode" in table
    r = run("cluster", "reshard", "grow", "--cluster", c, "--shards", "5", "--json")
    assert json.loads(r.stdout)["shards"] == 5  # moved users deleted from the old shards
    r = run("cluster", "reshard", "move", "--cluster", c, "--shard", "4", "--to-node", "n1",
            "--json")
    assert json.loads(r.stdout)["shard_map"][4]["replicas"][0]["node"] == "n1"


@pytest.mark.slow
def test_serve_command_starts_and_stops(tmp_path: Path, ray_session: Any, logs: list[Path]
                                        ) -> None:
    schema = tmp_path / "schema.toml"
    schema.write_text(SCHEMA_TOML)
    c = str(tmp_path / "c")
    run("cluster", "init", "--cluster", c, "--schema", str(schema), "--shards", "2",
        "--nodes", "n0,n1")
    r = run("cluster", "serve", "--cluster", c, "--duration", "1")
    assert r.stdout.count("http://127.0.0.1:") == 2
    st = json.loads(run("cluster", "status", "--cluster", c, "--json").stdout)
    assert all(x["server"] is None for x in st["replicas"])  # stop published "no servers"
