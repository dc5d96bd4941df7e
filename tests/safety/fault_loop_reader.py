"""The fault loop's read-only process (tests/safety/fault_loop.py): for each line
{"store": PATH} on stdin, open the store read-only, read every user, close, and answer one
JSON line {"users": {user: [[ts, item_id], ...]}} (or {"error": "..."})."""

from __future__ import annotations

import json
import sys

from seqvault import SeqVault


def main() -> None:
    for line in sys.stdin:
        try:
            with SeqVault.open(json.loads(line)["store"], read_only=True) as v:
                users = {}
                for u in v.users():
                    seq = v.read(u, columns=["ts", "item_id"])
                    users[str(u)] = list(zip(seq.columns["ts"].tolist(),
                                             seq.columns["item_id"].tolist()))
            reply: dict = {"users": users}
        except Exception as exc:  # noqa: BLE001 - reported to the loop, which fails the case
            reply = {"error": repr(exc)}
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
