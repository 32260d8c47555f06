"""An asset rewritten in place under an unchanged item (issue #13 item 9).

A provider re-uploads a COG: same href, same item JSON, new pixels. The next ``aquila nightly``
must re-read the scene and equal a full ``aquila run`` over the changed catalog, and its report
must count the change. What is promised (see :mod:`pipeline.io.identity`):

* local files: a replaced file (new inode), and a file written in place with its size kept and
  its mtime put back (only the ctime tells);
* a ``file:checksum`` in the item, updated with the content: preferred to any probe;
* HTTP: whatever the server's ETag / Last-Modified tell (here an ETag that digests the content,
  as S3's does), from the driver's own HEAD.

Real parts: generated COGs rewritten with rasterio, a loopback HTTP server, a real Icechunk
store; the reference is a plain ``aquila run`` in a subprocess (its own GDAL, nothing cached).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson
import pytest
import rasterio

from pipeline.engine.nightly import NightOptions, run_nightly
from pipeline.io.hrefs import HrefPolicy
from pipeline.io.identity import IdentityProbe, compare, identities
from pipeline.products.transaction import STATE_ARRAY, NightlyStore
from pipeline.spec.workflow import spec_from_dict
from tests.arrivals import item_files
from tests.asset_server import serve
from tests.nightly_helpers import assert_same, current, load, night_spec
from tests.pausing import paused


@dataclass(frozen=True)
class Case:
    transport: str  # "local" | "http"
    rewrite: str  # "replace": a new file moved over the old; "in_place": same inode and size
    checksum: bool = False  # the items carry file:checksum, updated with the content


CASES = {
    "local-replaced": Case("local", "replace"),
    "local-in-place-mtime-restored": Case("local", "in_place"),
    "local-file-checksum": Case("local", "in_place", checksum=True),
    "http-replaced": Case("http", "replace"),
    "http-in-place-mtime-restored": Case("http", "in_place"),
}


# --------------------------------------------------------------------------- the catalog


def _data_assets(item: Path) -> list[str]:
    """Keys of the item's pixel assets (not its quality mask)."""
    doc = json.loads(item.read_text())
    return [k for k, a in doc["assets"].items() if "data" in a.get("roles", [])]


def _file(item: Path, key: str) -> Path:
    href = json.loads(item.read_text())["assets"][key]["href"]
    return item.parent / href.rsplit("/", 1)[-1]


def _multihash(path: Path) -> str:
    return "1220" + hashlib.sha256(path.read_bytes()).hexdigest()  # sha2-256, 32 bytes


def _declare_checksums(root: Path) -> None:
    for item in item_files(root).values():
        doc = json.loads(item.read_text())
        for key, asset in doc["assets"].items():
            asset["file:checksum"] = _multihash(_file(item, key))
        item.write_text(json.dumps(doc))


def _serve_assets(root: Path, url: str) -> None:
    """Point every asset of the catalog at the loopback server."""
    for item in item_files(root).values():
        doc = json.loads(item.read_text())
        rel = item.parent.relative_to(root).as_posix()
        for asset in doc["assets"].values():
            asset["href"] = f"{url}/{rel}/{asset['href'].rsplit('/', 1)[-1]}"
        item.write_text(json.dumps(doc))


def _halved(path: Path) -> bytes:
    """The COG's bytes with every valid value halved: new pixels, same grid and layout."""
    with rasterio.open(path) as src:
        data, nodata, profile = src.read(), src.nodata, src.profile
    new = np.where(data == nodata, data, data // 2).astype(data.dtype)
    tmp = path.with_name(path.stem + ".new.tif")
    opts = {k: profile[k] for k in ("width", "height", "count", "dtype", "crs", "transform")}
    with rasterio.open(
        tmp, "w", driver="COG", nodata=nodata, compress="DEFLATE", predictor=2, blocksize=512,
        **opts,
    ) as dst:
        dst.write(new)
    raw = tmp.read_bytes()
    tmp.unlink()
    return raw


def _rewrite(path: Path, how: str) -> None:
    """Rewrite ``path`` with new pixels: moved over it, or written into it keeping its inode,
    its size (trailing zeros: TIFF readers ignore them) and its mtime."""
    new = _halved(path)
    before = path.stat()
    if how == "replace":
        tmp = path.with_name(path.name + ".upload")
        tmp.write_bytes(new)
        os.replace(tmp, path)
        assert path.stat().st_ino != before.st_ino
        return
    assert len(new) <= before.st_size, "the halved COG should compress better"
    with open(path, "r+b") as f:
        f.write(new + b"\0" * (before.st_size - len(new)))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = path.stat()
    assert (after.st_ino, after.st_size, after.st_mtime_ns) == (
        before.st_ino,
        before.st_size,
        before.st_mtime_ns,
    )


def _rewrite_scene(root: Path, item_id: str, *, how: str, checksum: bool) -> None:
    item = item_files(root)[item_id]
    doc = json.loads(item.read_text())
    for key in _data_assets(item):
        _rewrite(_file(item, key), how)
        if checksum:
            doc["assets"][key]["file:checksum"] = _multihash(_file(item, key))
    if checksum:
        item.write_text(json.dumps(doc))


# --------------------------------------------------------------------------- runs


def _night(spec: dict, tmp_path: Path, **options):
    store = Path(spec["_store"])
    clean = {k: v for k, v in spec.items() if k != "_store"}
    report = run_nightly(
        spec_from_dict(clean, base_dir=tmp_path),
        options=NightOptions(store=store, direct=True, **options),
    )
    assert report.status in ("success", "nothing_new"), report.error
    return report


def _full_run(spec: dict, out: Path) -> Path:
    """``aquila run`` over the same catalog, in its own process (a GDAL that cached nothing)."""
    d = {k: v for k, v in json.loads(json.dumps(spec)).items() if k != "_store"}
    d["products"]["cube"]["store"] = str(out / "cube.zarr")
    d["products"]["mosaic"]["store"] = str(out / Path(d["products"]["mosaic"]["store"]).name)
    for m in d["products"].get("mosaics", []):
        m["store"] = str(out / Path(m["store"]).name)
    out.mkdir(parents=True)
    (out / "spec.json").write_text(json.dumps(d))
    done = subprocess.run(
        [sys.executable, "-m", "pipeline.cli.main", "run", str(out / "spec.json"), "--direct",
         "--no-progress"],
        capture_output=True, text=True, timeout=300, cwd=Path(__file__).parents[2],
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return out


@pytest.fixture()
def setup(catalog_copy, tmp_path, request):
    """(catalog root, spec with its store) for a case; HTTP cases serve the assets."""
    case: Case = request.param
    root = catalog_copy
    if case.checksum:
        _declare_checksums(root)
    extra = {}
    if case.transport == "http":
        server = serve(root)
        state = server.__enter__()
        request.addfinalizer(lambda: server.__exit__(None, None, None))
        state.validators = True
        _serve_assets(root, state.url)
        extra["allowed_roots"] = [str(root), state.url + "/"]
    store = tmp_path / "n.icechunk"
    spec = night_spec(root, tmp_path / "out", store=store, **extra)
    return case, root, spec | {"_store": str(store)}


def _slot_of(session, item_id: str) -> int:
    sources = load(session, "latest").attrs["sources"]
    (slot,) = [s["index"] for s in sources if item_id in s["scenes"]]
    return slot


# --------------------------------------------------------------------------- tests


@pytest.mark.parametrize("setup", list(CASES.values()), ids=list(CASES), indirect=True)
def test_an_asset_rewritten_in_place_is_read_again(setup, tmp_path):
    case, root, spec = setup
    victim = sorted(item_files(root))[0]
    _night(spec, tmp_path)
    store = Path(spec["_store"])
    before = load(current(store), "cube")
    _rewrite_scene(root, victim, how=case.rewrite, checksum=case.checksum)
    r2 = _night(spec, tmp_path)
    night = current(store)
    assert_same(night, _full_run(spec, tmp_path / "full"))
    assert r2.status == "success", r2.notes
    assert r2.changed_in_place == [victim] and r2.new == [] and r2.changed == []
    assert r2.chunks["slot_reads"] == len(
        {e.id: e for e in NightlyStore.open(store).state().entries}[victim].chunks
    )  # its slot re-read in every chunk it touches, nothing else
    # the change is really there (the comparison above is not vacuous): its slot moved, no other
    after = load(night, "cube")
    slot = _slot_of(night, victim)
    for j in range(after.sizes["time"]):
        same = np.array_equal(before["red"].values[j], after["red"].values[j], equal_nan=True)
        assert same == (j != slot), j
    ledger = {e.id: e for e in NightlyStore.open(store).state().entries}
    kinds = {i.split(":")[0] for _, i in ledger[victim].assets}
    expected = "checksum" if case.checksum else "http" if case.transport == "http" else "stat"
    assert kinds == {expected}
    # and the next night sees nothing new: the new content is the recorded one now
    r3 = _night(spec, tmp_path)
    assert r3.status == "nothing_new" and r3.changed_in_place == [], r3.notes
    written = json.loads(Path(str(store) + ".night-report.json").read_text())
    assert written["changed_in_place"] == []


def test_a_file_rewritten_after_the_read_is_read_again_the_next_night(catalog_copy, tmp_path):
    """The identity is taken before any task reads: a file rewritten while the night runs
    (here between the reads and the commit) differs from what the ledger records, so the
    next night re-reads it, whatever that night published."""
    root = catalog_copy
    victim = sorted(item_files(root))[0]
    store = tmp_path / "n.icechunk"
    spec = night_spec(root, tmp_path / "out", store=store) | {"_store": str(store)}
    _night(spec, tmp_path)
    _rewrite_scene(root, victim, how="replace", checksum=False)  # night 2 reads this one...
    done: list = []
    with paused("merged", tmp_path):
        night2 = threading.Thread(target=lambda: done.append(_night(spec, tmp_path)))
        night2.start()
        while not (tmp_path / "paused-merged").exists():
            assert night2.is_alive(), "night 2 ended before its reads were merged"
            night2.join(0.05)
        _rewrite_scene(root, victim, how="replace", checksum=False)  # ...and this lands after
        (tmp_path / "resume-merged").touch()
        night2.join(120)
    assert done, "night 2 did not finish"
    r3 = _night(spec, tmp_path)
    assert_same(current(store), _full_run(spec, tmp_path / "full"))
    assert done[0].changed_in_place == [victim] and r3.changed_in_place == [victim], r3.notes


def _as_written_before_identities(store: Path) -> None:
    """Commit the store's ledger as the previous version wrote it: no ``assets`` per entry."""
    import zarr

    nightly = NightlyStore.open(store, create=False)
    doc = orjson.loads(zlib.decompress(nightly.state().to_bytes()))
    for entry in doc["entries"]:
        del entry["assets"]
    blob = np.frombuffer(zlib.compress(orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)), np.uint8)
    txn = nightly.begin("legacy")
    session = txn.writer()
    array = zarr.create_array(
        session.store, name=STATE_ARRAY, shape=blob.shape, dtype="uint8", chunks=blob.shape,
        compressors=None, fill_value=0, overwrite=True,
    )
    array[:] = blob
    txn.publish(txn.commit(session, run_id="legacy", message="legacy ledger", metadata={}))
    txn.close()
    assert all(e.assets is None for e in nightly.state().entries)


def test_a_store_from_before_identities_takes_a_baseline_without_rebuilding(catalog_copy, tmp_path):
    """Older ledgers decode (no identities); the first night records tonight's identities as
    their baseline in a ledger-only commit (no chunk read or written), and a rewrite after it
    is noticed as for any store."""
    root = catalog_copy
    store = tmp_path / "n.icechunk"
    spec = night_spec(root, tmp_path / "out", store=store) | {"_store": str(store)}
    _night(spec, tmp_path)
    _as_written_before_identities(store)
    r2 = _night(spec, tmp_path)
    assert r2.status == "success" and r2.snapshot is not None
    assert r2.chunks["tasks"] == 0 and r2.chunks["slot_reads"] == 0 and r2.changed_in_place == []
    assert any("baseline" in n for n in r2.notes), r2.notes
    state = NightlyStore.open(store).state()
    assert all(e.assets for e in state.entries)
    r3 = _night(spec, tmp_path)
    assert r3.status == "nothing_new"
    victim = sorted(item_files(root))[0]
    _rewrite_scene(root, victim, how="in_place", checksum=False)
    r4 = _night(spec, tmp_path)
    assert_same(current(store), _full_run(spec, tmp_path / "full"))
    assert r4.changed_in_place == [victim]


# --------------------------------------------------------------------------- the rules


@pytest.mark.parametrize(
    "recorded, tonight, hrefs, assets, changed, baseline",
    [
        (None, {"a": "x"}, ["a"], (("a", "x"),), (), True),  # first seen: the baseline
        ((("a", "x"),), {"a": "y"}, ["a"], (("a", "y"),), ("a",), False),  # rewritten
        ((("a", "x"),), {"a": None}, ["a"], (("a", "x"),), (), False),  # unknown: kept
        ((("a", "x"), ("b", "z")), {"a": "x"}, ["a"], (("a", "x"),), (), False),  # b gone
        ((("a", "x"),), {"a": "x", "b": "w"}, ["a", "b"], (("a", "x"), ("b", "w")), (), False),
        (None, {"a": None}, ["a"], None, (), False),  # nothing known: nothing recorded
    ],
)
def test_identities_compare(recorded, tonight, hrefs, assets, changed, baseline):
    c = compare(recorded, tonight, hrefs)
    assert (c.assets, c.changed, c.baseline) == (assets, changed, baseline)


@pytest.mark.parametrize(
    "path, fault, expected",
    [
        ("/ok.tif", None, "http:etag="),
        ("/moved.tif", ("redirect", "/ok.tif"), None),  # never followed
        ("/missing.tif", ("always", 404), None),
        ("/busy.tif", ("always", 503), None),
        ("/../outside.tif", None, None),  # refused by the policy: no request at all
    ],
)
def test_a_url_identity_comes_from_one_checked_head(tmp_path, path, fault, expected):
    for name in ("ok", "moved", "missing", "busy"):
        (tmp_path / f"{name}.tif").write_bytes(b"II*\0" + bytes(64))
    with serve(tmp_path) as server:
        server.validators = True
        if fault and fault[0] == "redirect":
            server.redirects[path] = server.url + fault[1]
        elif fault:
            server.always[path] = fault[1]
        policy = HrefPolicy((server.url + "/",))
        got = identities([server.url + path], IdentityProbe(policy))[server.url + path]
        requests = list(server.requests)
    assert (got is None) if expected is None else got.startswith(expected), got
    if "outside" in path:
        assert requests == []
    else:
        assert requests == [("HEAD", path)]


def test_a_provider_that_does_not_answer_costs_a_few_timeouts_not_one_per_asset(tmp_path):
    """A stalled origin: after a few network failures its other assets are not asked tonight
    (unknown: the recorded identities are kept), instead of one timeout per asset."""
    for i in range(40):
        (tmp_path / f"a{i}.tif").write_bytes(b"II*\0")
    with serve(tmp_path) as server:
        server.latency_s = 1.0  # every answer comes after the client's timeout
        urls = [f"{server.url}/a{i}.tif" for i in range(40)]
        probe = IdentityProbe(HrefPolicy((server.url + "/",)), timeout_s=0.2, workers=4)
        t = time.perf_counter()
        got = identities(urls, probe)
        seconds = time.perf_counter() - t
        time.sleep(1.2)  # the server records a request once its delay is over
        asked = len(server.requests)
    assert set(got.values()) == {None}
    assert asked <= 3 + 2 * 4, asked  # the failures that open it, and what was in flight
    assert seconds < 40 * 0.2 / 4 / 2, seconds  # well under one timeout per asset
