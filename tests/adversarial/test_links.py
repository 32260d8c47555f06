"""Nothing reaches outside the allowed roots: asset reads, catalog links, prefixes, IPv6 forms.

Real parts only: generated COGs read by GDAL, loopback HTTP servers (:mod:`tests.asset_server`)
where a second "elsewhere" server must see zero requests, real files, symlinks and FIFOs. Each
table row is one hostile case; add a row to add a case.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
from pathlib import Path

import pytest

from pipeline.catalog.items.links import mirror_href
from pipeline.catalog.items.normalise import normalise_item
from pipeline.catalog.query import SearchQuery
from pipeline.catalog.scene import Reject
from pipeline.catalog.source import iter_docs
from pipeline.errors import HrefNotAllowed, ReadError, SceneRejected
from pipeline.io.hrefs import HrefPolicy, refused_host, relative_to
from pipeline.io.reader import RasterReader, ReaderSettings
from pipeline.io.retry import RetryPolicy
from tests.asset_server import serve
from tests.conftest import make_spec_dict

FAST = RetryPolicy(attempts=3, base_s=0.01, cap_s=0.02)
BANDS = ("blue", "green", "red", "nir")


def _asset(root: Path, name: str = "B04.tif") -> tuple[Path, str]:
    path = sorted(root.glob(f"north/*/{name}"))[0]
    return path, "/" + path.relative_to(root).as_posix()


# --------------------------------------------------------------------------- 4. redirects on GET


@pytest.mark.parametrize("when", ["open", "retry", "window"])
def test_a_redirect_on_get_is_refused_and_never_followed(tiny_catalog, when):
    """HEAD answers 200 but GET (the open's reads, a retry after a 503, a window's range
    GET) answers 302 to a second server: the read fails with href_not_allowed, no pixels come
    back, and the second server sees nothing."""
    root = Path(tiny_catalog.root)
    _, rel = _asset(root)
    with serve(None) as elsewhere, serve(root) as allowed:
        href = allowed.url + rel
        policy = HrefPolicy.for_catalog(allowed.url + "/catalog.json")
        reader = RasterReader(ReaderSettings(policy=policy, retry=FAST, http_timeout_s=2))
        if when == "window":
            reader.dataset(href)  # the header is read while GET is honest
        if when == "retry":
            allowed.script[rel] = [503]  # the first attempt fails; the retry meets the redirect
        allowed.redirect_get[rel] = f"{elsewhere.url}/x.tif"
        with pytest.raises(ReadError) as err:
            reader.read(href, [1], (0, 0, 64, 64))
        assert err.value.reason == "href_not_allowed", err.value
        assert "redirect" in err.value.message and elsewhere.url in err.value.message
        assert ("GET", rel, 302) in allowed.answers  # the GET was made and redirected ...
        assert elsewhere.requests == []  # ... and not followed
        with pytest.raises(ReadError):  # remembered: other chunks do not ask again
            reader.read(href, [1], (64, 0, 64, 64))
        assert elsewhere.requests == []


def test_a_run_reports_a_get_redirect_as_a_refused_read(catalog_copy, tmp_path):
    """End to end: the scene whose assets redirect on GET is a read failure with reason
    href_not_allowed (never nodata), the others make the mosaic, the second server sees
    nothing."""
    from pipeline.engine.run import RunOptions, run_workflow
    from pipeline.spec.workflow import spec_from_dict

    item_file = sorted(catalog_copy.glob("north/*/*.json"))[0]
    doc = json.loads(item_file.read_text())
    with serve(None) as elsewhere, serve(catalog_copy) as allowed:
        for asset in doc["assets"].values():
            rel = "/" + (item_file.parent / asset["href"]).resolve().relative_to(
                catalog_copy.resolve()
            ).as_posix()
            asset["href"] = allowed.url + rel
            allowed.redirect_get[rel] = f"{elsewhere.url}{rel}"
        item_file.write_text(json.dumps(doc))
        spec = make_spec_dict(
            catalog_copy, tmp_path / "out", bounds=(500000, 5000000, 504000, 5004000), cube=False
        )
        spec["allowed_roots"] = [str(catalog_copy), allowed.url + "/"]
        report = run_workflow(
            spec_from_dict(spec, base_dir=catalog_copy), options=RunOptions(direct=True)
        )
    failed = {f["item"]: f["error"] for f in report.read_failures}
    assert failed[doc["id"]].startswith("[href_not_allowed]"), failed
    assert doc["id"] not in report.scenes_used
    assert report.scenes_used
    assert elsewhere.requests == []


def test_remote_reads_survive_task_contexts(tiny_catalog, monkeypatch):
    """A dask task runs in a fresh copy of the worker's context: a URL opened in one task and
    read in the next must give the file's pixels, and dropping the reader unclosed (the
    garbage collector closes its datasets wherever it runs) must raise nothing."""
    import contextvars
    import gc
    import sys

    import numpy as np
    import rasterio

    root = Path(tiny_catalog.root)
    path, rel = _asset(root, "B08.tif")
    with rasterio.open(path) as ds:
        expected = ds.read([1])
        window = (0, 0, ds.height, ds.width)
    unraisable: list = []
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)
    with serve(root) as server:
        reader = RasterReader(ReaderSettings(retry=FAST, http_timeout_s=2))
        contextvars.Context().run(reader.dataset, server.url + rel)  # task 1 opens
        got = contextvars.Context().run(reader.read, server.url + rel, [1], window)  # task 2
        np.testing.assert_array_equal(got, expected)
        del reader
        contextvars.Context().run(gc.collect)
    assert unraisable == []


def test_a_vrt_named_tif_is_never_opened_at_ingest(catalog_copy, tmp_path):
    """An item without proj:* makes ingest read its asset's header; an asset that is really a
    VRT (XML naming a file outside the roots) must not be opened as one: it is rejected, and
    the file it points to is never reached (GDAL picked the VRT driver by content before)."""
    import rasterio

    from pipeline.engine.run import discover
    from pipeline.spec.workflow import spec_from_dict

    secret = tmp_path / "secret"
    secret.mkdir()
    item_path = sorted(catalog_copy.glob("north/*/*.json"))[0]
    doc = json.loads(item_path.read_text())
    for key in [k for k in doc["properties"] if k.startswith("proj:")]:
        del doc["properties"][key]
    for asset in doc["assets"].values():
        for key in [k for k in asset if k.startswith("proj:")]:
            del asset[key]
    item_path.write_text(json.dumps(doc))
    b04 = item_path.parent / "B04.tif"
    shutil.copy(b04, secret / "canary.tif")
    with rasterio.open(b04) as ds:
        width, height, crs = ds.width, ds.height, ds.crs.to_wkt()
        geo = ", ".join(repr(v) for v in ds.transform.to_gdal())
    b04.write_text(
        f'<VRTDataset rasterXSize="{width}" rasterYSize="{height}"><SRS>{crs}</SRS>'
        f"<GeoTransform>{geo}</GeoTransform><VRTRasterBand "
        'dataType="UInt16" band="1"><SimpleSource><SourceFilename relativeToVRT="0">'
        f"{secret / 'canary.tif'}</SourceFilename><SourceBand>1</SourceBand></SimpleSource>"
        "</VRTRasterBand></VRTDataset>"
    )
    spec = spec_from_dict(
        make_spec_dict(catalog_copy, tmp_path / "out", bounds=(500000, 5000000, 504000, 5004000)),
        base_dir=tmp_path,
    )
    atime = os.stat(secret / "canary.tif").st_atime_ns
    found = discover(spec)
    assert doc["id"] not in {s.id for s in found.scenes}
    assert doc["id"] in {r.item_id for r in found.rejects}
    assert os.stat(secret / "canary.tif").st_atime_ns == atime


# --------------------------------------------------------------------------- 5. catalog links


def _hostile_links(root: Path, outside: Path, canary: str) -> dict[str, tuple[str, str]]:
    """name -> (rel, href) of hostile links added to the north collection."""
    return {
        "file-url": ("item", "file:///etc/passwd"),
        "proc": ("item", "/proc/self/environ"),
        "dev-zero": ("item", "/dev/zero"),
        "outside-item": ("item", str(outside / "item.json")),
        "outside-child": ("child", str(outside / "catalog.json")),
        "dotdot": ("item", "../../outside/item.json"),
        "symlink-out": ("item", "./escape.json"),
        "symlink-zero": ("item", "./zero.json"),
        "loopback-url": ("item", f"{canary}/item.json"),
        "metadata-url": ("child", "http://169.254.169.254/latest/meta-data/catalog.json"),
        "vsi": ("item", "/vsicurl/" + canary + "/item.json"),
    }


def _collect(source: str, timeout: float = 30.0, **policy) -> list:
    """iter_docs in a thread, so that a walk that blocks (a FIFO) fails instead of hanging."""
    out: list = []
    errors: list[BaseException] = []

    def walk() -> None:
        try:
            out.extend(iter_docs(source, SearchQuery(), **policy))
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test's thread
            errors.append(exc)

    worker = threading.Thread(target=walk, daemon=True)
    worker.start()
    worker.join(timeout)
    assert not worker.is_alive(), "the catalog walk blocked"
    if errors:
        raise errors[0]
    return out


@pytest.fixture()
def hostile_catalog(catalog_copy, tmp_path):
    """The tiny catalog with hostile links in its north collection, a valid item outside the
    catalog folder (that must never be read), and a canary server."""
    outside = tmp_path / "outside"
    outside.mkdir()
    honest = json.loads(sorted(catalog_copy.glob("north/*/*.json"))[0].read_text())
    honest["id"] = "outside-item"
    (outside / "item.json").write_text(json.dumps(honest))
    (outside / "catalog.json").write_text(
        json.dumps({"type": "Catalog", "id": "outside", "description": "x", "stac_version":
                    "1.0.0", "links": [{"rel": "item", "href": "./item.json"}]})
    )
    north = catalog_copy / "north"
    (north / "escape.json").symlink_to(outside / "item.json")
    (north / "zero.json").symlink_to("/dev/zero")
    with serve(None) as canary:
        links = _hostile_links(catalog_copy, outside, canary.url)
        collection = north / "collection.json"
        coll = json.loads(collection.read_text())
        coll["links"] += [{"rel": rel, "href": href} for rel, href in links.values()]
        collection.write_text(json.dumps(coll))
        yield catalog_copy, links, canary


def test_hostile_catalog_links_are_refused_and_the_walk_goes_on(hostile_catalog):
    root, links, canary = hostile_catalog
    found = _collect(str(root / "catalog.json"))  # default policy: the catalog's own folder
    docs = {e.id for e in found if not isinstance(e, Reject)}
    rejects = [e for e in found if isinstance(e, Reject)]
    honest = {json.loads(p.read_text())["id"] for p in root.glob("*/*/*.json")}
    assert docs == honest  # every honest item, nothing from outside
    for name, (_rel, href) in links.items():
        mine = [r for r in rejects if href in r.message or href.lstrip("./") in r.message]
        assert mine, f"{name}: no reject names {href}: {rejects}"
        assert all(r.reason == "href_not_allowed" for r in mine), (name, mine)
        assert any(w in mine[0].message for w in ("allowed_roots", "regular file", "itself"))
    assert canary.requests == []


def test_discovery_passes_the_runs_policy_to_the_walk(hostile_catalog, tmp_path):
    """The same hostile links through discover(): the spec's policy reaches the walk."""
    from pipeline.catalog.discover import discover
    from pipeline.spec.workflow import spec_from_dict

    root, links, canary = hostile_catalog
    spec = make_spec_dict(root, tmp_path / "out", bounds=(500000, 5000000, 504000, 5004000))
    found = discover(spec_from_dict(spec, base_dir=root), check_files=False)
    refused = [r for r in found.rejects if r.reason == "href_not_allowed"]
    assert len(refused) >= len(links) - 1  # /vsicurl/... and the symlinks may share a reason
    assert "outside-item" not in {s.id for s in found.scenes}
    assert canary.requests == []


def test_a_catalog_folder_walk_follows_no_symlink_out_and_opens_no_fifo(tiny_catalog, tmp_path):
    folder = tmp_path / "folder"
    shutil.copytree(Path(tiny_catalog.root) / "north", folder / "north")
    outside = tmp_path / "outside"
    outside.mkdir()
    item = json.loads(sorted(folder.glob("north/*/*.json"))[0].read_text())
    item["id"] = "outside-item"
    (outside / "item.json").write_text(json.dumps(item))
    (folder / "escape.json").symlink_to(outside / "item.json")  # a file link out
    (folder / "elsewhere").symlink_to(outside, target_is_directory=True)  # a folder link out
    (folder / "loop").symlink_to(folder, target_is_directory=True)  # a loop
    os.mkfifo(folder / "pipe.json")  # opening it would block until a writer comes
    try:
        found = _collect(str(folder), timeout=20)
    finally:
        fd = os.open(folder / "pipe.json", os.O_RDWR | os.O_NONBLOCK)  # release a blocked open
        os.close(fd)
    ids = {e.id for e in found if not isinstance(e, Reject)}
    refused = {e.item_id: e.reason for e in found if isinstance(e, Reject)}
    assert ids == {json.loads(p.read_text())["id"] for p in folder.glob("north/*/*.json")}
    assert refused == {"escape": "href_not_allowed", "pipe": "href_not_allowed"}


def test_documents_over_the_cap_are_refused_not_read(catalog_copy, monkeypatch):
    """A 1 MiB item and an NDJSON file with a 1 MiB line, against a 64 KiB cap (the cap is
    32 MiB in production; /dev/zero behind an allowed name would stop there too)."""
    from pipeline.io import documents

    monkeypatch.setattr(documents, "MAX_DOCUMENT_BYTES", 64 * 1024)
    item_file = sorted(catalog_copy.glob("north/*/*.json"))[0]
    doc = json.loads(item_file.read_text())
    doc["properties"]["padding"] = "x" * (1024 * 1024)
    item_file.write_text(json.dumps(doc))
    found = _collect(str(catalog_copy / "catalog.json"))
    refused = {e.item_id: e.reason for e in found if isinstance(e, Reject)}
    assert refused == {item_file.stem: "document_too_large"}
    ndjson = catalog_copy / "items.ndjson"
    small = json.loads(sorted(catalog_copy.glob("south/*/*.json"))[0].read_text())
    ndjson.write_text(json.dumps(small) + "\n" + json.dumps(doc) + "\n" + json.dumps(small))
    found = _collect(str(ndjson))
    assert [e.id for e in found if not isinstance(e, Reject)] == [small["id"]]
    assert [(e.item_id, e.reason) for e in found if isinstance(e, Reject)] == [
        ("items.ndjson:2", "document_too_large")
    ]


@pytest.mark.parametrize(
    ("case", "expect"),
    [
        ("link-to-elsewhere", "href_not_allowed"),
        ("redirect-to-elsewhere", "href_not_allowed"),
        ("file-url", "href_not_allowed"),
        ("redirect-same-origin", None),  # followed: the item is found
        ("too-large", "document_too_large"),
    ],
)
def test_remote_catalog_links_and_redirect_hops_are_checked(
    catalog_copy, monkeypatch, case, expect
):
    from pipeline.io import documents

    monkeypatch.setattr(documents, "MAX_DOCUMENT_BYTES", 256 * 1024)
    item_file = sorted(catalog_copy.glob("north/*/*.json"))[0]
    rel = "/" + item_file.relative_to(catalog_copy).as_posix()
    doc = json.loads(item_file.read_text())
    collection = catalog_copy / "north" / "collection.json"
    coll = json.loads(collection.read_text())
    with serve(None) as elsewhere, serve(catalog_copy) as server:
        link = {
            "link-to-elsewhere": f"{elsewhere.url}/item.json",
            "redirect-to-elsewhere": f"{server.url}/moved.json",
            "file-url": "file://" + str(item_file),
            "redirect-same-origin": f"{server.url}/moved.json",
            "too-large": f"{server.url}/big.json",
        }[case]
        server.redirects["/moved.json"] = (
            f"{elsewhere.url}/item.json" if case == "redirect-to-elsewhere" else rel
        )
        doc["id"] = "linked"
        big = dict(doc, properties=dict(doc["properties"], padding="x" * 400_000))
        (catalog_copy / "big.json").write_text(json.dumps(big))
        coll["links"].append({"rel": "item", "href": link})
        collection.write_text(json.dumps(coll))
        found = _collect(server.url + "/catalog.json")
    rejects = [e for e in found if isinstance(e, Reject)]
    if expect is None:
        assert rejects == [] and "linked" not in {e.id for e in found}  # same item, same id
        assert ("GET", "/moved.json") in elsewhere.requests + server.requests
    else:
        assert [r.reason for r in rejects] == [expect], rejects
    assert elsewhere.requests == []


def test_stac_api_pages_stay_on_the_apis_origin(tiny_catalog, tmp_path):
    """A 'next' link to another origin ends the pages with href_not_allowed; the first page's
    items are kept and the other server sees nothing."""
    features = [json.loads(p.read_text()) for p in sorted(tiny_catalog.root.glob("north/*/*.json"))]
    for f in features:
        f["links"] = []
    api = tmp_path / "api-root"
    api.mkdir()
    with serve(None) as elsewhere, serve(api) as server:
        (api / "api").write_text(json.dumps({
            "type": "Catalog", "id": "api", "description": "x", "stac_version": "1.0.0",
            "conformsTo": ["https://api.stacspec.org/v1.0.0/core",
                           "https://api.stacspec.org/v1.0.0/item-search"],
            "links": [{"rel": "search", "href": f"{server.url}/search",
                       "type": "application/geo+json", "method": "POST"},
                      {"rel": "self", "href": f"{server.url}/api"}],
        }))
        (api / "search").write_text(json.dumps({
            "type": "FeatureCollection", "features": features,
            "links": [{"rel": "next", "href": f"{elsewhere.url}/search?page=2"}],
        }))
        found = _collect(f"{server.url}/api")
    assert [e.id for e in found if not isinstance(e, Reject)] == [f["id"] for f in features]
    assert [e.reason for e in found if isinstance(e, Reject)] == ["href_not_allowed"]
    assert elsewhere.requests == []


# --------------------------------------------------------------------------- 6. prefixes


@pytest.mark.parametrize(
    ("roots", "href"),
    [
        (("http://",), "http://169.254.169.254/latest/meta-data/a.tif"),  # scheme-wide root
        (("http://",), "http://127.0.0.1:8000/a.tif"),
        (("http://",), "http://10.0.0.1/a.tif"),
        (("http://host:8000",), "http://host:80001/a.tif"),  # a port is not a prefix
        (("http://h/data",), "http://h/database/x.tif"),  # a path segment is not a prefix
        (("http://h/data/",), "http://h/data2/x.tif"),
        (("http://h:80/data",), "http://h:8080/data/x.tif"),
        (("https://h/data",), "http://h/data/x.tif"),  # scheme
        (("http://h/data",), "http://h.evil.net/data/x.tif"),
    ],
)
def test_roots_match_by_origin_and_whole_segments(tiny_catalog, roots, href):
    policy = HrefPolicy(roots)  # as given, not normalised: the comparison must not depend on it
    doc = json.loads(sorted(Path(tiny_catalog.root).glob("north/*/*.json"))[0].read_text())
    for asset in doc["assets"].values():
        asset["href"] = href
    with pytest.raises(SceneRejected) as err:  # through normalisation's fast path
        normalise_item(doc, bands=BANDS, policy=policy, check_files=False)
    assert err.value.reason == "href_not_allowed"
    with pytest.raises(HrefNotAllowed):
        policy.check(href)
    assert not policy.plainly_allows(href)


def test_folder_roots_match_whole_segments(tmp_path):
    (tmp_path / "img").mkdir()
    (tmp_path / "imgX").mkdir()
    policy = HrefPolicy.for_catalog("x", (str(tmp_path / "img"),))
    assert policy.check(str(tmp_path / "img" / "a.tif"))
    with pytest.raises(HrefNotAllowed):
        policy.check(str(tmp_path / "imgX" / "a.tif"))


@pytest.mark.parametrize(
    ("href", "prefix", "expected"),
    [
        ("https://p.example/data/x/B04.tif", "https://p.example/data", "/m/x/B04.tif"),
        ("https://p.example/data/x/B04.tif", "https://p.example/data/", "/m/x/B04.tif"),
        ("https://p.example/database/B04.tif", "https://p.example/data", None),
        ("https://p.example:8443/data/B04.tif", "https://p.example/data", None),
        ("https://P.EXAMPLE/data/B04.tif", "https://p.example/data", "/m/B04.tif"),
        ("https://p.example.evil/data/B04.tif", "https://p.example", None),
        ("/data/img/a.tif", "/data/img", "/m/a.tif"),
        ("/data/imgX/a.tif", "/data/img", None),
    ],
)
def test_mirror_prefixes_match_whole_segments(href, prefix, expected):
    out, mirrored = mirror_href(href, [(prefix, "/m")])
    assert (out if mirrored else None) == expected
    assert (relative_to(href, prefix) is not None) == (expected is not None)


# --------------------------------------------------------------------------- 7. IPv6 forms


@pytest.mark.parametrize(
    "host",
    [
        "::7f00:1",  # IPv4-compatible 127.0.0.1
        "::a9fe:a9fe",  # IPv4-compatible 169.254.169.254
        "64:ff9b::a9fe:a9fe",  # NAT64 of the metadata service
        "64:ff9b::7f00:1",
        "64:ff9b:1::a9fe:a9fe",  # local-use NAT64 (RFC 8215)
        "64:ff9b:1::808:808",
        "::ffff:0:7f00:1",  # IPv4-translated loopback
        "::ffff:0:a00:1",  # IPv4-translated 10.0.0.1
        "fec0::1",  # site-local
        "fc00::1",  # unique-local
        "::",  # unspecified
        "2002:7f00:1::1",  # 6to4 of 127.0.0.1
        "2002:a9fe:a9fe::1",  # 6to4 of the metadata service
        "2001:0:4136:e378:8000:63bf:80ff:fffe",  # Teredo, client 127.0.0.1
        "::ffff:169.254.169.254",  # IPv4-mapped
        "ff02::1",  # multicast
    ],
)
def test_internal_ipv6_forms_are_refused(host):
    assert refused_host(host, resolve=False), host
    with pytest.raises(HrefNotAllowed):
        HrefPolicy(("https://",)).check(f"https://[{host}]/a.tif")


@pytest.mark.parametrize("host", ["2606:4700::1111", "64:ff9b::808:808", "::ffff:8.8.8.8"])
def test_public_ipv6_forms_are_admitted(host):
    assert refused_host(host, resolve=False) is None
    assert HrefPolicy(("https://",)).check(f"https://[{host}]/a.tif")


@pytest.mark.parametrize(
    "href",
    ["http://127.0.0.1:8123/data/é.tif", "http://127.0.0.1:8123/data/a b.tif",
     "http://127.0.0.1:8123/data/\u202etif.exe.tif"],
)
def test_links_that_are_not_percent_encoded_are_refused(href):
    """http.client cannot send these (UnicodeEncodeError inside a chunk task failed the whole
    run): the policy refuses them up front, with the fix."""
    policy = HrefPolicy.for_catalog("x", ("http://127.0.0.1:8123/data/",))
    assert policy.check("http://127.0.0.1:8123/data/%C3%A9.tif")
    with pytest.raises(HrefNotAllowed, match="percent-encoded"):
        policy.check(href)
