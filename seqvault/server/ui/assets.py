"""The page's static files (web/: ui.js, ui.css, the page template), shipped in the package.

Loaded once at import: they are a few tens of KiB, each kept plain and gzipped with a content
hash that serves as its ETag and as the `?v=` the page links it with (so a browser may cache
it for a day and still never run a stale script after an upgrade). No CDN, no build step.
"""

from __future__ import annotations

import gzip
import hashlib
import json
from dataclasses import dataclass
from importlib import resources
from typing import Any

import numpy as np

_MEDIA = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
          ".svg": "image/svg+xml"}


@dataclass(frozen=True)
class Asset:
    name: str
    body: bytes
    gzipped: bytes
    media_type: str
    etag: str
    version: str


def _read(name: str) -> bytes:
    return resources.files(__package__ or "seqvault.server.ui").joinpath("web", name) \
        .read_bytes()


def _load(name: str) -> Asset:
    body = _read(name)
    digest = hashlib.sha256(body).hexdigest()[:16]
    media = next(m for ext, m in _MEDIA.items() if name.endswith(ext))
    return Asset(name, body, gzip.compress(body, compresslevel=9, mtime=0), media,
                 f'"{digest}"', digest)


STATIC: dict[str, Asset] = {n: _load(n) for n in ("ui.js", "ui.css", "favicon.svg")}
PAGE_TEMPLATE = _read("page.html").decode("utf-8")


def _default(obj: Any) -> Any:
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"{type(obj).__name__} is not JSON serializable")


def dump_json(doc: Any) -> bytes:
    # allow_nan=False: a NaN would be invalid JSON for the browser; views never produce one.
    return json.dumps(doc, default=_default, separators=(",", ":"), allow_nan=False).encode()
