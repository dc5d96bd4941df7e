"""ASGI middleware that guards every request before the app sees it.

- `RequestGuard`: gives each request an id (`X-Request-Id` on every response, `request_id`
  in every problem, the key to the server log) and caps the requests one worker works on at
  once (`max_inflight`): the next one gets 503 problem+json at once instead of queueing
  without bound in the thread pool.
- `BodyLimitMiddleware`: 413 for request bodies over the limit, by Content-Length before
  reading, else while reading.
"""

from __future__ import annotations

import itertools
import os
import re
from typing import Any

from .problems import Problem

_CLIENT_ID_RE = re.compile(rb"[A-Za-z0-9._:-]{1,64}")


class RequestGuard:
    """Request ids and the in-flight cap (per worker process)."""

    def __init__(self, app: Any, max_inflight: int) -> None:
        self.app = app
        self.max_inflight = max_inflight
        self.inflight = 0
        # pid + counter: unique within a host's live workers, and cheaper than a uuid
        self._prefix = f"{os.getpid():x}-"
        self._counter = itertools.count(1)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = None
        for name, value in scope.get("headers", ()):
            if name == b"x-request-id" and _CLIENT_ID_RE.fullmatch(value):
                rid = value.decode()  # a caller's own id, when it is a sane token
                break
        if rid is None:
            rid = f"{self._prefix}{next(self._counter):x}"
        scope.setdefault("state", {})["request_id"] = rid
        header = (b"x-request-id", rid.encode())

        async def send_with_id(message: Any) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", ()))
                if not any(k.lower() == b"x-request-id" for k, _ in headers):  # problems have it
                    headers.append(header)
                message["headers"] = headers
            await send(message)

        if self.inflight >= self.max_inflight:
            resp = Problem(503, "overloaded",
                           f"this worker is already working on {self.max_inflight} requests "
                           "(--max-inflight); retry shortly",
                           headers={"Retry-After": "1"}).response(scope.get("path"), rid)
            await resp(scope, receive, send)
            return
        self.inflight += 1
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            self.inflight -= 1


class BodyLimitMiddleware:
    """413 for bodies over `limit` bytes: by Content-Length before reading, else while reading."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = scope.get("state", {}).get("request_id")
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = 0
                if declared > self.limit:
                    resp = self._problem(declared).response(scope.get("path"), rid)
                    await resp(scope, receive, send)
                    return
        seen = 0

        async def limited_receive() -> Any:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise self._problem(seen)
            return message

        await self.app(scope, limited_receive, send)

    def _problem(self, size: int) -> Problem:
        return Problem(413, "content-too-large",
                       f"request body: {size} bytes is over this server's limit of "
                       f"{self.limit} bytes (--max-body-bytes)", limit=self.limit,
                       setting="max_body_bytes", headers={"Connection": "close"})
