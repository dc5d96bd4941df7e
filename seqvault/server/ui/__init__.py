"""The store explorer page of `seqvault serve`: `/ui` (docs/design/ui.md).

Server-rendered HTML with a small vanilla script (`web/ui.js`) that draws SVG charts from a
bounded JSON API under `/ui/api`; every asset ships in this package. `create_app` mounts
`router` with `app.include_router(router)`.
"""

from __future__ import annotations

from .routes import router

__all__ = ["router"]
