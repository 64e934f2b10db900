"""What keeps a public demo server bounded: a cap on request bodies, and freed memory returned.

Gradio serves the page through FastAPI/uvicorn; :class:`BodyLimit` is a pure ASGI middleware
passed to it at launch (``app_kwargs={"middleware": ...}``), so it sees every request first.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json

MAX_BODY = 64 * 1024  # bytes: far more than any model's longest text as JSON
# Gradio keeps a copy of every component's config per session (about 40 KB here) for 10,000
# sessions by default, and API clients open a new session per request without ever closing it:
# that, not the models, is what grew the server's memory request after request. A visitor whose
# session falls out only loses the text selection kept for "Mask selection".
SESSIONS = 128


class BodyTooLarge(Exception):
    pass


class BodyLimit:
    """Reject HTTP request bodies over ``max_bytes`` with 413, declared or streamed, before the
    application reads them (nothing the size of a hostile body is ever held)."""

    def __init__(self, app, max_bytes: int = MAX_BODY):
        self.app, self.max_bytes = app, int(max_bytes)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            return await self._reject(send)
        seen = 0
        started = False

        async def limited_receive():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise BodyTooLarge
            return message

        async def tracking_send(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLarge:
            if not started:
                await self._reject(send)

    async def _reject(self, send):
        body = json.dumps(
            {"detail": f"request body too large: at most {self.max_bytes} bytes"}
        ).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def _libc():
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name) if name else None
    except OSError:
        return None


_LIBC = _libc()


def trim_memory() -> None:
    """Give freed heap memory back to the system (glibc's malloc_trim; a no-op elsewhere).

    Each run allocates and frees tokenizer output, token views and tensors in whichever worker
    thread served it; glibc keeps freed pages in per-thread arenas. Measured with
    ``evals/load_test.py`` (8 clients x 40 requests, 2-core CPU): the server ended at 834 MB
    (peak 845) with a trim after every run, at 892 MB (peak 921) without.
    """
    trim = getattr(_LIBC, "malloc_trim", None)
    if trim is not None:
        trim(0)
