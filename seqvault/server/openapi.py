"""Export the service's OpenAPI document to http/openapi.json (or check that it is current).

    python -m seqvault.server.openapi            # rewrite http/openapi.json
    python -m seqvault.server.openapi --check    # exit 1 when the file differs from the app

The document is built from an app with the default limits (max_last, body size); tests fail
when the committed file and the app differ, so regenerate it after changing a route.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

DEFAULT_OUT = Path(__file__).resolve().parents[2] / "http" / "openapi.json"


def document() -> dict[str, Any]:
    from .app import create_app

    # The store is only opened in the lifespan, so any path will do for the document.
    return create_app("store").openapi()


def render() -> str:
    return json.dumps(document(), indent=2, sort_keys=False, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m seqvault.server.openapi",
                                 description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--check", action="store_true",
                    help="do not write; exit 1 when the file differs from the app")
    args = ap.parse_args(argv)
    text = render()
    if args.check:
        current = args.out.read_text() if args.out.exists() else ""
        if current != text:
            print(f"{args.out} is out of date: run python -m seqvault.server.openapi",
                  file=sys.stderr)
            return 1
        print(f"{args.out} is current")
        return 0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
