"""A loopback HTTP asset server for tests: serves a folder with Range support, records every
request, and can answer chosen paths with a redirect."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


@dataclass
class AssetServer:
    root: Path | None
    redirects: dict[str, str] = field(default_factory=dict)  # path -> Location
    requests: list[tuple[str, str]] = field(default_factory=list)  # (method, path)
    url: str = ""

    def paths(self) -> list[str]:
        return [p for _, p in self.requests]


@contextlib.contextmanager
def serve(root: Path | None, *, redirects: dict[str, str] | None = None) -> Iterator[AssetServer]:
    """Serve ``root`` on 127.0.0.1 (an ephemeral port); ``root=None``: a canary answering 404."""
    state = AssetServer(root, dict(redirects or {}))
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:  # quiet
            pass

        def _answer(self, body: bool) -> None:
            with lock:
                state.requests.append((self.command, self.path))
            path = self.path.split("?")[0]
            if path in state.redirects:
                self.send_response(302)
                self.send_header("Location", state.redirects[path])
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            file = (state.root / path.lstrip("/")) if state.root else None
            if file is None or not file.is_file():
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            data = file.read_bytes()
            start, end = 0, len(data) - 1
            rng = self.headers.get("Range")
            if rng and rng.startswith("bytes="):
                a, _, b = rng[6:].partition("-")
                start, end = int(a), min(int(b) if b else end, end)
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
            else:
                self.send_response(200)
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("Content-Length", str(end - start + 1))
            self.end_headers()
            if body:
                self.wfile.write(data[start : end + 1])

        def do_GET(self) -> None:  # noqa: N802
            self._answer(True)

        def do_HEAD(self) -> None:  # noqa: N802
            self._answer(False)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
