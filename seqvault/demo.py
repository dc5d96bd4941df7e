"""`make demo` (`python -m seqvault.demo`): a behaviour log from zero to last-N reads.

1. generate a realistic sample log (seqvault.sample) as Parquet in ./demo-data;
2. `seqvault ingest` it into ./demo-store (a fresh store; progress bar on a terminal);
3. `seqvault get` a heavy user's and a typical user's newest events;
4. `seqvault stats` and `seqvault verify`;
5. (issue 5) serve the store over HTTP and fetch a user — see `serve_and_fetch` below.

Every step runs the real command line, and prints the command first, so you can repeat it.
Set DEMO_EVENTS to change the log size (default 3,000,000 events).
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

from .shell import seqvault_command

DATA = Path("demo-data")
STORE = Path("demo-store")
DEFAULT_EVENTS = 3_000_000


def step(title: str) -> None:
    print(f"\n=== {title} ===", flush=True)


def sv(*args: str) -> subprocess.CompletedProcess[str]:
    """Run `seqvault ARGS` as a user would (stdout/stderr go straight to the terminal)."""
    print(f"$ {seqvault_command()} " + " ".join(shlex.quote(a) for a in args), flush=True)
    result = subprocess.run([sys.executable, "-m", "seqvault", *args], text=True)
    if result.returncode != 0:
        raise SystemExit(f"seqvault {args[0]} failed with exit code {result.returncode}")
    return result


def remove_store(store: Path) -> None:
    """Delete the demo's store so the ingest starts fresh, unless a process has it open (a
    server started from it keeps serving deleted files): then stop with what to do."""
    from .cli.common import store_in_use

    users = store_in_use(store)
    if users is not None:
        who = f"process {', '.join(map(str, users))}" if users else "another process"
        kill = f" (kill {' '.join(map(str, users))})" if users else ""
        raise SystemExit(f"{store} is open by {who}, e.g. a `seqvault serve` started from it; "
                         f"stop it first{kill}, then run `make demo` again. The store was left "
                         "as it is.")
    shutil.rmtree(store)


def sample_users(log: Path) -> tuple[int, int]:
    """The heaviest user and a median user of the log (by event count)."""
    import numpy as np
    import pyarrow.parquet as pq

    users = pq.read_table(log, columns=["user_id"]).column("user_id").to_numpy()
    uniq, counts = np.unique(users, return_counts=True)
    order = np.argsort(counts)
    return int(uniq[order[-1]]), int(uniq[order[len(order) // 2]])


def serve_and_fetch(store: Path, user: int) -> None:
    # ==================================================================================
    # HTTP step (issue 5): start `seqvault serve --store demo-store` on 127.0.0.1, fetch
    # this user's last N events over HTTP, print them, stop the server
    # (seqvault/server/demo.py).
    # ==================================================================================
    step(f"5. serve the store over HTTP and fetch user {user}'s newest events")
    try:
        from .server.demo import serve_and_fetch as http_serve_and_fetch
    except ImportError as exc:  # the server extra is not installed
        print(f"(skipped: {exc.name} is missing; pip install 'seqvault[server]')")
        return None
    http_serve_and_fetch(store, user, last=5)
    return None


def main() -> None:
    events = int(os.environ.get("DEMO_EVENTS", DEFAULT_EVENTS))
    log = DATA / f"events-{events}.parquet"
    step(f"1. sample behaviour log: {events:,} events -> {log}")
    if log.exists():
        print(f"(reusing {log})")
    else:
        from .sample import generate

        t0 = time.perf_counter()
        info = generate(log, events)
        print(f"wrote {info['events']:,} events of {info['users']:,} users, "
              f"{info['bytes'] / 2**20:.1f} MiB, in {time.perf_counter() - t0:.1f} s "
              "(heavy-tailed histories, Zipf items, bursts of equal timestamps, "
              "rows in time order)")
    if STORE.exists():
        remove_store(STORE)  # the demo's own store: start fresh so the ingest is not a duplicate
    schema = Path(__file__).resolve().parent.parent / "schema" / "behavior.toml"
    if schema.is_relative_to(Path.cwd()):  # print `schema/behavior.toml`, as a user types it
        schema = schema.relative_to(Path.cwd())
    step("2. ingest into a new store")
    sv("ingest", str(log), "--store", str(STORE), *(["--schema", str(schema)]
                                                    if schema.exists() else []))
    heavy, typical = sample_users(log)
    step(f"3. last events of a heavy user ({heavy}) and a typical user ({typical})")
    sv("get", str(heavy), "--last", "8", "--store", str(STORE))
    sv("get", str(typical), "--last", "5", "--columns", "ts,action,item_id,scenario",
       "--store", str(STORE))
    step("4. store statistics and a full checksum verification")
    sv("stats", "--store", str(STORE))
    sv("verify", "--store", str(STORE))
    serve_and_fetch(STORE, heavy)
    cmd = seqvault_command()
    print(f"\nDone. Try: {cmd} get {heavy} --last 20 --store {STORE}")
    if cmd.endswith("/seqvault"):
        print(f"(or run `. {Path(cmd).parent}/activate` once, then type just `seqvault ...`)")


if __name__ == "__main__":
    main()
