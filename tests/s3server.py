"""A real S3 endpoint for tests: moto's standalone server in a subprocess on a free loopback port.

Reusable for reading and writing (inputs, products): nothing here is specific to a test.

* :func:`start_s3_server` starts it and waits until it answers; :class:`S3Server` gives the
  endpoint URL, :meth:`S3Server.env` (fake credentials, region, and the endpoint as GDAL reads it:
  ``AWS_S3_ENDPOINT`` host:port, ``AWS_HTTPS=NO``, ``AWS_VIRTUAL_HOSTING=FALSE``, plus
  ``AWS_ENDPOINT_URL`` for boto3/obstore), :meth:`~S3Server.make_bucket`,
  :meth:`~S3Server.put_file`, :meth:`~S3Server.get_bytes`, :meth:`~S3Server.keys`, and the
  server's request log (:meth:`~S3Server.requests`, from its access log: every request that
  reached it, so a test can prove that none did).
* Fixtures: ``s3_server`` (session: one process for the whole run) and ``s3`` (function: the
  server, with its env set by ``monkeypatch`` for this test only, so GDAL, boto3 and
  ``obstore`` in this process see it and other tests do not). Import them into a test module
  (``from tests.s3server import s3, s3_server  # noqa: F401``) or a conftest.

GDAL reads the AWS variables when it opens a /vsis3/ file, so setting them per test is enough;
Aquila's reader keeps no file's size or existence between opens (``CPL_VSIL_CURL_NON_CACHED``),
and :meth:`S3Server.make_bucket` gives a fresh bucket name per call by default, so nothing that
GDAL remembers per bucket (region, endpoint) leaks from one test into another.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REGION = "us-east-1"
_LOG_LINE = re.compile(r'"(?P<method>[A-Z]+) (?P<path>\S+) HTTP/[\d.]+" (?P<status>\d{3})')
_NAMES = itertools.count()


@dataclass
class S3Server:
    """A running moto S3 server (see the module docstring)."""

    host: str
    port: int
    process: subprocess.Popen
    log_path: Path
    _buckets: set[str] = field(default_factory=set)

    @property
    def endpoint_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def env(self) -> dict[str, str]:
        """The variables a process needs to use this server as its S3 (fake credentials)."""
        return {
            "AWS_ACCESS_KEY_ID": "aquila-test-key",
            "AWS_SECRET_ACCESS_KEY": "aquila-test-secret",
            "AWS_REGION": REGION,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_S3_ENDPOINT": f"{self.host}:{self.port}",
            "AWS_HTTPS": "NO",
            "AWS_VIRTUAL_HOSTING": "FALSE",
            "AWS_ENDPOINT_URL": self.endpoint_url,
        }

    def client(self):
        """A boto3 S3 client for this server (its own credentials, whatever the env says)."""
        import boto3

        env = self.env()
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name=REGION,
            aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        )

    def make_bucket(self, name: str | None = None) -> str:
        """Create a bucket (default: a fresh name, ``aquila-test-N-PID``); returns its name."""
        name = name or f"aquila-test-{next(_NAMES)}-{os.getpid()}"
        if name not in self._buckets:
            self.client().create_bucket(Bucket=name)
            self._buckets.add(name)
        return name

    def put_file(self, bucket: str, key: str, path: str | Path) -> str:
        """Upload a local file; returns its ``s3://bucket/key``."""
        self.client().upload_file(str(path), bucket, key)
        return f"s3://{bucket}/{key}"

    def get_bytes(self, bucket: str, key: str) -> bytes:
        return self.client().get_object(Bucket=bucket, Key=key)["Body"].read()

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        """Every key of ``bucket`` under ``prefix``, sorted."""
        pages = self.client().get_paginator("list_objects_v2").paginate(
            Bucket=bucket, Prefix=prefix
        )
        return sorted(o["Key"] for page in pages for o in page.get("Contents", ()))

    def requests(self) -> list[tuple[str, str, int]]:
        """(method, path, status) of every request the server has answered, in order (its
        access log; the readiness probes are left out)."""
        text = self.log_path.read_text(errors="replace")
        found = [
            (m["method"], m["path"], int(m["status"])) for m in _LOG_LINE.finditer(text)
        ]
        return [r for r in found if not r[1].startswith("/moto-api")]

    def requests_for(self, fragment: str) -> list[tuple[str, str, int]]:
        """The logged requests whose path contains ``fragment`` (e.g. a bucket name)."""
        return [r for r in self.requests() if fragment in r[1]]

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def start_s3_server(*, host: str = "127.0.0.1", timeout_s: float = 30.0) -> S3Server:
    """Start ``python -m moto.server`` from this interpreter's environment on a free port and
    wait until it answers (a port taken meanwhile: tried again on another)."""
    for _ in range(3):
        port = _free_port(host)
        log = Path(tempfile.mkstemp(prefix="moto-s3-", suffix=".log")[1])
        with log.open("wb") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", host, "-p", str(port)],
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        server = S3Server(host, port, process, log)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and process.poll() is None:
            try:
                with urllib.request.urlopen(f"{server.endpoint_url}/moto-api/", timeout=2):
                    return server
            except OSError:
                time.sleep(0.1)
        server.stop()
    raise RuntimeError(f"moto's S3 server did not start: {log.read_text(errors='replace')}")


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """One moto S3 server for the test session."""
    server = start_s3_server()
    try:
        yield server
    finally:
        server.stop()
        server.log_path.unlink(missing_ok=True)


@pytest.fixture()
def s3(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> S3Server:
    """The session's S3 server, its env set for this test only (GDAL, boto3, obstore)."""
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3", "AWS_CONFIG_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)  # never a developer's keys
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    for name, value in s3_server.env().items():
        monkeypatch.setenv(name, value)
    return s3_server


@contextlib.contextmanager
def refusing_endpoint() -> Iterator[str]:
    """An S3 endpoint on loopback that answers every request with S3's 403 ``AccessDenied``
    (credentials refused), at once: a storage failure without waiting out the client's retries
    of an endpoint nobody answers at (Icechunk's: ~30-40 s). Yields its URL."""
    import http.server
    import threading

    class Refuse(http.server.BaseHTTPRequestHandler):
        def _refuse(self) -> None:
            body = (b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>AccessDenied</Code>'
                    b"<Message>Access Denied</Message></Error>")
            self.send_response(403)
            self.send_header("Content-Type", "application/xml")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = _refuse

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Refuse)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
