"""Faults the operator meets at the command line: a full or read-only disk, Ctrl-C, ``quicklook``
or ``nightly`` pointed at paths that are not products. Each ends in one clear last line on
stderr (no traceback) with the documented exit code, a run report where a run started, the
previous product byte for byte, and nothing half-written (no build directory, no temp file).

Real faults only: a file size limit (RLIMIT_FSIZE, any user), a read-only bind mount and a full
tmpfs (in a private mount namespace: root with ``unshare``, else skipped), SIGINT sent to a
real ``aquila run``."""

from __future__ import annotations

import json
import os
import re
import resource
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from tests.adversarial.runs import (
    AQUILA,
    BOUNDS,
    aquila,
    digest,
    last_line,
    leftovers,
    served_slowly,
)
from tests.asset_server import serve
from tests.conftest import make_spec_dict
from tests.pausing import child_env


def ctrl_c_reaches_it() -> None:
    """In the child, before exec: SIGINT back to its default, as in a terminal. A test session
    started in the background by a non-interactive shell inherits SIGINT ignored, and Python
    then installs no KeyboardInterrupt handler, so the Ctrl-C tests would see no Ctrl-C."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def product_digest(out: Path) -> dict[str, str]:
    """The product and its sidecar (the report and the lock file may change)."""
    return {k: v for k, v in digest(out).items() if k.startswith("mosaic.zarr")
            and not k.endswith(".lock")}


_WORKER_RECORD = re.compile(
    r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ - distributed\.[\w.]+ - [A-Z]+ - ")
_CHAINED = ("During handling of the above exception, another exception occurred:",
            "The above exception was the direct cause of the following exception:")


def without_worker_records(stderr: str) -> str:
    """``stderr`` less the log records of distributed (a local cluster's workers log there: the
    failures of their tasks, and during a Ctrl-C the shutdown races of their own comms with the
    driver's closing scheduler and nanny). A record is its line and the traceback it carries:
    a traceback right after the record's line or after a chained-exception line (blank lines
    between), its indented frames and exception lines. A driver traceback printed after a
    record has no such line before it, so it stays."""
    kept: list[str] = []
    in_record = False
    may_start = False  # a "Traceback ..." line may continue the record here
    for line in stderr.splitlines():
        if _WORKER_RECORD.match(line):
            in_record, may_start = True, True
            continue
        if in_record:
            stripped = line.strip()
            if line.startswith("Traceback (most recent call last):") and may_start:
                may_start = False
                continue
            if stripped in _CHAINED:
                may_start = True
                continue
            if not stripped:
                continue
            if line[:1].isspace() or re.fullmatch(r"[\w.]+(: .*)?", line):
                may_start = False  # a traceback's frames and exception lines
                continue
            in_record = False
        kept.append(line)
    return "\n".join(kept)


def one_clear_line(done: subprocess.CompletedProcess, code: int, *words: str) -> str:
    assert done.returncode == code, done.stdout + done.stderr
    # no uncaught exception in the driver (distributed's records from the local cluster's
    # workers aside: see without_worker_records)
    assert "Traceback (most recent call last)" not in without_worker_records(done.stderr), \
        done.stderr
    line = last_line(done.stderr)
    for word in words:
        assert word in line, (word, done.stderr)
    return line


# --------------------------------------------------------------------------- full disk


def _file_size_limit(limit: int):
    def preexec() -> None:  # in the child: writes past ``limit`` bytes fail with EFBIG
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return preexec


@pytest.mark.parametrize(
    ("where", "reason", "hint"),
    [
        ("--direct", "store_unwritable", "ulimit"),  # the driver's own write fails
        ("local-cluster", "chunks_failed", "nothing was published"),  # every task fails
    ],
)
def test_a_product_that_does_not_fit_fails_cleanly_and_keeps_the_old_one(where, reason, hint,
                                                                        rerun):
    """RLIMIT_FSIZE 24 KiB: the layout and the report fit, a chunk (~45 KiB) does not."""
    spec, _, out = rerun
    before = product_digest(out)
    where_args = ["--direct"] if where == "--direct" else ["--workers", "1", "--dashboard", ":0"]
    done = aquila("run", str(spec), *where_args, "--no-progress",
                  preexec=_file_size_limit(24 * 1024))
    line = one_clear_line(done, 1, reason, "File too large", hint)
    assert "mosaic.zarr" in line  # names what could not be written
    assert product_digest(out) == before
    assert leftovers(out) == []
    report = json.loads((out / "test.run-report.json").read_text())
    assert report["status"] == "failed" and reason in report["error"]


def test_nothing_writable_at_all_says_where_the_report_could_not_go(rerun):
    """RLIMIT_FSIZE 0: not even the lock record or the report can be written: one line says
    so, nothing is half-written (no empty temporary file anywhere)."""
    spec, _, out = rerun
    before = digest(out)
    done = aquila("run", str(spec), "--direct", "--no-progress", preexec=_file_size_limit(0))
    one_clear_line(done, 1, "store_unwritable", "mosaic.zarr.lock")
    assert re.search(r"run report not written to \S+test\.run-report\.json", done.stderr)
    assert digest(out) == before
    assert leftovers(out) == []


def _can_unshare() -> bool:
    if shutil.which("unshare") is None or os.geteuid() != 0:
        return False
    probe = subprocess.run(["unshare", "-m", "sh", "-c", "mount -t tmpfs tmpfs /mnt"],
                           capture_output=True)
    return probe.returncode == 0


needs_mounts = pytest.mark.skipif(not _can_unshare(),
                                  reason="needs root and unshare -m (private mounts)")


def _in_private_mounts(script: str, timeout: float = 180) -> subprocess.CompletedProcess:
    """Run ``script`` (sh) in a private mount namespace: its mounts vanish when it ends."""
    return subprocess.run(["unshare", "-m", "sh", "-ec", script], capture_output=True,
                          text=True, timeout=timeout)


@needs_mounts
def test_a_read_only_products_folder_fails_cleanly_and_the_report_goes_elsewhere(rerun):
    spec, _, out = rerun
    before = digest(out)
    done = _in_private_mounts(
        f"mount --bind {out} {out}; mount -o remount,bind,ro {out}; "
        f"exec {AQUILA} run {spec} --direct --no-progress"
    )
    one_clear_line(done, 1, "store_unwritable", "Read-only file system", str(out))
    assert digest(out) == before
    found = re.search(r"written to (\S+\.run-report\.json) instead", done.stderr)
    assert found, done.stderr
    fallback = Path(found.group(1))
    report = json.loads(fallback.read_text())
    fallback.unlink()
    assert report["status"] == "failed" and "Read-only file system" in report["error"]


@needs_mounts
def test_a_full_disk_fails_cleanly_and_keeps_the_old_product(rerun, good, tmp_path):
    """A tmpfs with room for the old product and a little more: the new build cannot fit."""
    spec, _, out = rerun
    size_kib = sum(p.stat().st_size for p in good.rglob("*") if p.is_file()) // 1024 + 512
    after = tmp_path / "after"
    done = _in_private_mounts(
        f"mount -t tmpfs -o size={size_kib}k tmpfs {out}; cp -a {good}/. {out}/; "
        f"rc=0; {AQUILA} run {spec} --direct --no-progress || rc=$?; "
        f"mkdir -p {after}; cp -a {out}/. {after}/; "
        "exit $rc"
    )
    one_clear_line(done, 1, "store_unwritable", "No space left on device")
    assert product_digest(after) == product_digest(good)
    assert leftovers(after) == []
    report = json.loads((after / "test.run-report.json").read_text())
    assert report["status"] == "failed"


# --------------------------------------------------------------------------- Ctrl-C


@pytest.mark.parametrize("where", ["--direct", "local-cluster"])
def test_ctrl_c_mid_run_exits_130_and_keeps_the_old_product(where, rerun):
    """SIGINT to the run's whole process group, as a terminal's Ctrl-C sends it."""
    spec, catalog, out = rerun
    before = product_digest(out)
    args = [AQUILA, "run", str(spec), "--no-progress"]
    args += ["--direct"] if where == "--direct" else ["--workers", "1", "--dashboard", ":0"]
    with serve(catalog) as server:
        served_slowly(catalog, server, spec, latency_s=0.3)
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                start_new_session=True, preexec_fn=ctrl_c_reaches_it)
        try:
            end = time.monotonic() + 90
            while not any((p / "zarr.json").exists()
                          for p in out.glob(".mosaic.zarr.aquila-build-*")):
                assert time.monotonic() < end and proc.poll() is None, proc.communicate()
                time.sleep(0.05)
            time.sleep(1.0 if where == "--direct" else 3.0)  # into the reads
            os.killpg(proc.pid, signal.SIGINT)
            stdout, stderr = proc.communicate(timeout=90)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
    done = subprocess.CompletedProcess(args, proc.returncode, stdout, stderr)
    one_clear_line(done, 130, "interrupted", "unchanged")
    # the workers leave Ctrl-C to the driver (clusters/ctrl_c.py): none prints the traceback
    # of its interrupted event loop, nor a warning for each task cancelled as it closes
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr, stderr
    assert "ended with CancelledError" not in stderr, stderr
    assert product_digest(out) == before
    assert leftovers(out) == []
    report = json.loads((out / "test.run-report.json").read_text())
    assert report["status"] == "interrupted"


def test_ctrl_c_mid_night_exits_130_writes_the_report_and_publishes_nothing(tiny_catalog,
                                                                          tmp_path):
    """SIGINT while a night's forks are merged but nothing is committed (the ``merged`` pause
    point): exit 130 in one line, a night report saying ``interrupted``, and no night in the
    store's history; the next run publishes the night."""
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(make_spec_dict(tiny_catalog.root, tmp_path / "out",
                                                  bounds=BOUNDS)))
    store, pauses = tmp_path / "night.icechunk", tmp_path / "pauses"
    pauses.mkdir()
    args = [AQUILA, "nightly", str(spec), "--store", str(store), "--direct", "--no-progress"]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, env=child_env("merged", pauses),
                            preexec_fn=ctrl_c_reaches_it)
    try:
        end = time.monotonic() + 120
        while not (pauses / "paused-merged").exists():
            assert time.monotonic() < end and proc.poll() is None, proc.communicate()
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    done = subprocess.CompletedProcess(args, proc.returncode, stdout, stderr)
    one_clear_line(done, 130, "interrupted")
    report = json.loads(store.with_name(store.name + ".night-report.json").read_text())
    assert report["status"] == "interrupted" and report["exit_code"] == 130
    assert json.loads(aquila("history", str(store), "--json").stdout) == []  # no night
    again = aquila("nightly", str(spec), "--store", str(store), "--direct", "--no-progress")
    assert again.returncode == 0, again.stderr
    nights = json.loads(aquila("history", str(store), "--json").stdout)
    assert [n["status"] for n in nights] == ["success"]


# --------------------------------------------------------------------------- not products


def _missing(path: Path) -> None:
    pass


def _plain_folder(path: Path) -> None:
    path.mkdir()
    (path / "holiday.jpg").write_bytes(b"\xff\xd8")


def _regular_file(path: Path) -> None:
    path.write_text("not a store")


def _foreign_zarr(path: Path) -> None:
    import zarr

    zarr.open_group(str(path), mode="w", zarr_format=3).attrs["title"] = "someone else's"


@pytest.mark.parametrize("make", [_missing, _plain_folder, _regular_file, _foreign_zarr])
def test_quicklook_of_something_that_is_not_a_product_is_one_line(make, tmp_path):
    target = tmp_path / "thing.zarr"
    make(target)
    before = digest(tmp_path)
    done = aquila("quicklook", str(target), str(tmp_path / "q.png"))
    one_clear_line(done, 2, str(target), "aquila run")
    assert digest(tmp_path) == before  # no PNG, nothing else


def test_quicklook_of_a_bucket_product_says_how_to_draw_it(tmp_path):
    """Quicklook draws products on disk. A bucket's product (``s3://…``) is not "no product at
    s3:/bkt/…" (the URL folded by the path it became, and wrong: it may well exist): one line
    naming the URL and the export that gives a picture, exit 2, and no request is made."""
    done = aquila("quicklook", "s3://bkt/p/median.zarr", str(tmp_path / "q.png"),
                  env={"AWS_ENDPOINT_URL": "http://127.0.0.1:9"})
    one_clear_line(done, 2, "s3://bkt/p/median.zarr is in a bucket",
                   "aquila export s3://bkt/p/median.zarr --format cog median.tif")
    assert list(tmp_path.iterdir()) == []


def test_quicklook_to_an_unwritable_place_is_one_line_and_keeps_a_users_aux_file(good, tmp_path):
    """A PNG path below a regular file is one clear line (exit 1), and the picture is written
    without touching a user's own ``<png>.aux.xml`` (GDAL's PAM sidecar is never made, so
    nothing of the user's is removed in its name)."""
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("mine")
    done = aquila("quicklook", str(good / "mosaic.zarr"), str(blocker / "q.png"))
    one_clear_line(done, 1, "store_unwritable", str(blocker / "q.png"))
    assert blocker.read_text() == "mine"
    aux = tmp_path / "q.png.aux.xml"
    aux.write_text("<PAMDataset>a user's notes</PAMDataset>")
    done = aquila("quicklook", str(good / "mosaic.zarr"), str(tmp_path / "q.png"))
    assert done.returncode == 0, done.stderr
    assert aux.read_text() == "<PAMDataset>a user's notes</PAMDataset>"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["not-a-folder", "q.png", aux.name]


def _foreign_icechunk(path: Path) -> None:
    import icechunk
    import zarr

    repo = icechunk.Repository.create(icechunk.local_filesystem_storage(str(path)))
    session = repo.writable_session("main")
    zarr.group(session.store).attrs["owner"] = "another program"
    session.commit("theirs")


@pytest.mark.parametrize("make", [_regular_file, _plain_folder, _foreign_icechunk])
def test_nightly_store_that_is_not_aquilas_is_refused_untouched(make, tiny_catalog, tmp_path):
    target = tmp_path / "store.icechunk"
    make(target)
    spec = make_spec_dict(tiny_catalog.root, tmp_path / "out", bounds=BOUNDS)
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    before = digest(target) if target.is_dir() else target.read_bytes()
    done = aquila("nightly", str(path), "--store", str(target), "--direct", "--no-progress")
    one_clear_line(done, 2, "store_not_aquila", str(target))
    assert (digest(target) if target.is_dir() else target.read_bytes()) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["spec.yaml", "store.icechunk"]
    history = aquila("history", str(target))
    one_clear_line(history, 2, "store_not_aquila", str(target))
