"""What the adversarial tests share: running the real ``aquila`` console script, the spec they
run, and the file-level expectations taken before an attack (digests, leftovers)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

from tests.arrivals import item_files
from tests.conftest import make_spec_dict

AQUILA = str(Path(sys.executable).parent / "aquila")
BOUNDS = (500000, 5000000, 504000, 5004000)


#: Dask's connect timeout for a scheduler address nothing listens on: 30 s by default.
QUICK_CONNECT = {"DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT": "4s"}


def aquila(*args: str, preexec=None, timeout: float = 180,
           env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """The console script in a subprocess (``preexec`` runs in the child, e.g. a rlimit;
    ``env``: variables added to this process's environment)."""
    return subprocess.run([AQUILA, *args], capture_output=True, text=True, timeout=timeout,
                          preexec_fn=preexec, env={**os.environ, **env} if env else None)


def write_spec(path: Path, catalog: Path, out: Path, *, name="test", **extra) -> Path:
    """A mosaic-only workflow over the tiny catalog's area, written to ``path``."""
    spec = make_spec_dict(catalog, out, bounds=BOUNDS, cube=False, **extra)
    spec["name"] = name
    path.write_text(yaml.safe_dump(spec))
    return path


def digest(root: Path) -> dict[str, str]:
    """Every file under ``root`` (symbolic links as their target text) → sha256."""
    out = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        if path.is_symlink():
            out[rel] = "link:" + os.readlink(path)
        elif path.is_file():
            out[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
        elif path.is_dir():
            out[rel] = "dir"
    return out


def leftovers(folder: Path) -> list[str]:
    """Build directories, set-aside products and temporary files a run might leave."""
    return sorted(
        p.name for p in folder.rglob("*")
        if ".aquila-" in p.name or p.name.endswith(".tmp")
    )


def last_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def served_slowly(catalog: Path, server, *specs: Path, latency_s: float) -> None:
    """Point every asset at the loopback server (and allow it in ``specs``), which answers
    each request after ``latency_s``: a run then spends seconds in its reads."""
    for path in item_files(catalog).values():
        doc = json.loads(path.read_text())
        rel = path.parent.relative_to(catalog).as_posix()
        for asset in doc["assets"].values():
            asset["href"] = f"{server.url}/{rel}/{asset['href'].removeprefix('./')}"
        path.write_text(json.dumps(doc))
    for spec in specs:
        doc = yaml.safe_load(spec.read_text())
        doc["allowed_roots"] = [str(catalog), server.url + "/"]
        spec.write_text(yaml.safe_dump(doc))
    server.latency_s = latency_s
