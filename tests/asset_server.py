"""A loopback HTTP asset server for tests: serves a folder with Range support, records every
request, can answer chosen paths with a redirect, and injects faults.

Faults, per URL path:

* ``script[path] = [503, 503]``: the next requests to ``path`` (any method) are answered with
  these statuses, one per request, then the file is served normally (``"timeout"`` in a script
  stalls that request for :attr:`AssetServer.stall_s` seconds, then closes the connection);
* ``always[path] = 404`` (or 403, 500...): every request gets this status;
* ``redirect_get[path] = url``: ``GET`` (plain, range, retried) is answered 302 to ``url``,
  ``HEAD`` is answered normally (a redirect that a HEAD-only check would miss);
* ``POST`` is answered like ``GET`` (the body is ignored): a folder of JSON files can play a
  static STAC API's landing page and search pages;
* ``truncate[path] = n``: the file is served as if it were its first ``n`` bytes (a truncated
  upload: the header reads, the tiles do not).

``token = "..."``: every request without the query parameter ``token=<that>`` is answered 403
(a store that wants signed URLs, as the Planetary Computer's).

``validators = True`` adds ``ETag`` (a digest of the content) and ``Last-Modified`` to every
file answer, as object stores send them. ``latency_s`` delays every answer (a remote object
store's time to first byte; requests in flight at once wait concurrently, as they do there).
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


@dataclass
class AssetServer:
    root: Path | None
    redirects: dict[str, str] = field(default_factory=dict)  # path -> Location
    redirect_get: dict[str, str] = field(default_factory=dict)  # path -> Location, GET only
    requests: list[tuple[str, str]] = field(default_factory=list)  # (method, path)
    url: str = ""
    script: dict[str, list[int | str]] = field(default_factory=dict)
    always: dict[str, int] = field(default_factory=dict)
    truncate: dict[str, int] = field(default_factory=dict)
    stall_s: float = 3.0
    latency_s: float = 0.0  # added to every answer
    validators: bool = False  # send ETag (a digest of the content, as S3) and Last-Modified
    answers: list[tuple[str, str, int | str]] = field(default_factory=list)  # (method, path, ans)
    token: str | None = None  # required as ?token=... (else 403), like a signed URL's

    def paths(self) -> list[str]:
        return [p for _, p in self.requests]

    def answered(self, path: str) -> list[int | str]:
        """Every answer given for ``path``, in order (status codes, or 'timeout')."""
        return [a for _, p, a in self.answers if p == path]


@contextlib.contextmanager
def serve(root: Path | None, *, redirects: dict[str, str] | None = None) -> Iterator[AssetServer]:
    """Serve ``root`` on 127.0.0.1 (an ephemeral port); ``root=None``: a canary answering 404."""
    state = AssetServer(root, dict(redirects or {}))
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:  # quiet
            pass

        def _status(self, code: int, path: str) -> None:
            with lock:
                state.answers.append((self.command, path, code))
            self.send_response(code)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def _answer(self, body: bool) -> None:
            path = self.path.split("?")[0]
            if state.latency_s:
                time.sleep(state.latency_s)
            with lock:
                state.requests.append((self.command, self.path))
                queued = state.script.get(path)
                fault = queued.pop(0) if queued else state.always.get(path)
            if state.token is not None and f"token={state.token}" not in self.path.split(
                "?", 1
            )[-1].split("&"):
                fault = 403
            if fault == "timeout":
                with lock:
                    state.answers.append((self.command, path, "timeout"))
                time.sleep(state.stall_s)
                self.close_connection = True
                return
            if isinstance(fault, int):
                self._status(fault, path)
                return
            location = state.redirects.get(path) or (
                state.redirect_get.get(path) if self.command == "GET" else None
            )
            if location:
                with lock:
                    state.answers.append((self.command, path, 302))
                self.send_response(302)
                self.send_header("Location", location)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            file = (state.root / path.lstrip("/")) if state.root else None
            if file is None or not file.is_file():
                self._status(404, path)
                return
            data = file.read_bytes()
            if path in state.truncate:
                data = data[: state.truncate[path]]
            start, end = 0, len(data) - 1
            rng = self.headers.get("Range")
            if rng and rng.startswith("bytes="):
                a, _, b = rng[6:].partition("-")
                start, end = int(a), min(int(b) if b else end, end)
                if start > end:
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(data)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    with lock:
                        state.answers.append((self.command, path, 416))
                    return
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
                code = 206
            else:
                self.send_response(200)
                code = 200
            with lock:
                state.answers.append((self.command, path, code))
            self.send_header("Accept-Ranges", "bytes")
            if state.validators:
                self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()[:32]}"')
                self.send_header("Last-Modified", formatdate(file.stat().st_mtime, usegmt=True))
            self.send_header("Content-Length", str(end - start + 1))
            self.end_headers()
            if body:
                self.wfile.write(data[start : end + 1])

        def do_GET(self) -> None:  # noqa: N802
            self._answer(True)

        def do_HEAD(self) -> None:  # noqa: N802
            self._answer(False)

        def do_POST(self) -> None:  # noqa: N802 - a static "STAC API" search: body ignored
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self._answer(True)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
