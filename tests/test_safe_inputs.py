"""Safe inputs: hosts, redirects, and hostile asset links end to end (canary file and server).

(Kept apart from test_hrefs.py: its end-to-end run must come after test_normalise.py's
process-wide peak-memory check in pytest's alphabetical order.)
"""

from __future__ import annotations

import pytest

from pipeline.errors import HrefNotAllowed
from pipeline.io.hrefs import HrefPolicy

# --------------------------------------------------------------------------- hosts and redirects


@pytest.mark.parametrize(
    "href",
    [
        "https://169.254.169.254/latest/meta-data/a.tif",  # cloud metadata service
        "https://127.0.0.1/a.tif",
        "https://[::1]/a.tif",
        "https://[::ffff:127.0.0.1]/a.tif",  # IPv4-mapped loopback
        "https://[fe80::1]/a.tif",
        "https://[fd00::1]/a.tif",
        "https://10.0.0.1/a.tif",
        "https://192.168.1.1/a.tif",
        "https://0.0.0.0/a.tif",
        "https://2130706433/a.tif",  # 127.0.0.1 as one decimal number
        "https://0x7f.1/a.tif",
        "https://localhost/a.tif",
        "https://metadata.google.internal/a.tif",
        "https://user@example.org/a.tif",
        "https://example.org/a/%2e%2e/b.tif",
    ],
)
def test_scheme_wide_root_admits_public_hosts_only(href):
    pol = HrefPolicy.for_catalog("x", ("https://",))
    with pytest.raises(HrefNotAllowed):
        pol.check(href)


def test_scheme_wide_root_public_host_and_named_loopback_origin():
    assert HrefPolicy.for_catalog("x", ("https://",)).check("https://example.org/a.tif")
    named = HrefPolicy.for_catalog("x", ("http://127.0.0.1:8123/",))
    assert named.check("http://127.0.0.1:8123/a/b.tif")  # the deployment named this origin
    for other in (
        "http://127.0.0.1:8124/a.tif",
        "https://127.0.0.1:8123/a.tif",
        "http://localhost:8123/a.tif",
    ):
        with pytest.raises(HrefNotAllowed):
            named.check(other)


def test_hostile_hrefs_are_refused_before_any_io(catalog_copy, tmp_path, monkeypatch):
    """Seventeen hostile asset links against a canary file and a canary server on loopback:
    every one is refused (href_not_allowed), GDAL never opens one, the canary sees nothing."""
    import json
    import shutil

    import rasterio

    from pipeline.engine.run import RunOptions, run_workflow
    from pipeline.spec.workflow import spec_from_dict
    from tests.asset_server import serve
    from tests.conftest import make_spec_dict

    secret = tmp_path / "secret"
    secret.mkdir()
    template = sorted(catalog_copy.glob("north/*/*.json"))[0]
    canary = secret / "canary.tif"
    shutil.copy(sorted(template.parent.glob("*.tif"))[0], canary)  # readable if ever reached
    opened: list[str] = []
    real_open = rasterio.open

    def spy(path, *a, **k):
        opened.append(str(path))
        return real_open(path, *a, **k)

    monkeypatch.setattr(rasterio, "open", spy)
    with (
        serve(None) as canary_server,
        serve(
            None,
            redirects={
                "/redir/canary.tif": f"{canary_server.url}/x.tif",
                "/redir/meta.tif": "http://169.254.169.254/latest/meta-data/x.tif",
            },
        ) as allowed,
    ):
        cport = canary_server.url.rsplit(":", 1)[1]
        hostile = {
            "abs-outside": str(canary),
            "file-url": "file://" + str(canary),
            "dotdot": "../../../secret/canary.tif",
            "vsicurl": f"/vsicurl/{canary_server.url}/x.tif",
            "vsizip": f"/vsizip/{secret}/c.zip/x.tif",
            "vrt": "./evil.vrt",
            "loopback": f"{canary_server.url}/x.tif",
            "metadata": "http://169.254.169.254/latest/meta-data/x.tif",
            "ipv6-loopback": f"http://[::1]:{cport}/x.tif",
            "decimal-ip": f"http://2130706433:{cport}/x.tif",
            "localhost": f"http://localhost:{cport}/x.tif",
            "userinfo": f"{allowed.url}@127.0.0.1:{cport}/x.tif",
            "symlink": "./link.tif",
            "ftp": f"ftp://127.0.0.1:{cport}/x.tif",
            "encoded-dotdot": f"{allowed.url}/a/%2e%2e/%2e%2e/x.tif",
            "redirect-canary": f"{allowed.url}/redir/canary.tif",
            "redirect-metadata": f"{allowed.url}/redir/meta.tif",
        }
        collection = template.parent.parent / "collection.json"
        coll = json.loads(collection.read_text())
        for n, (name, href) in enumerate(hostile.items()):
            doc = json.loads(template.read_text())
            doc["id"] = f"hostile-{name}"
            day = 1 + n % 28
            doc["properties"]["datetime"] = f"2025-07-{day:02d}T10:{n:02d}:00Z"
            folder = template.parent.parent / doc["id"]
            folder.mkdir()
            (folder / "evil.vrt").write_text(
                f"<VRTDataset><SourceFilename>{canary}</SourceFilename></VRTDataset>"
            )
            (folder / "link.tif").symlink_to(canary)
            for asset in doc["assets"].values():
                asset["href"] = href
            (folder / f"{doc['id']}.json").write_text(json.dumps(doc))
            coll["links"].append(
                {
                    "rel": "item",
                    "href": f"./{doc['id']}/{doc['id']}.json",
                    "type": "application/geo+json",
                }
            )
        collection.write_text(json.dumps(coll))

        spec = make_spec_dict(
            catalog_copy, tmp_path / "out", bounds=(500000, 5000000, 504000, 5004000), cube=False
        )
        spec["allowed_roots"] = [str(catalog_copy), allowed.url + "/"]
        report = run_workflow(
            spec_from_dict(spec, base_dir=catalog_copy), options=RunOptions(direct=True)
        )
        refused = {r["item"]: r["reason"] for r in report.rejected}
        failed = {f["item"]: f["error"] for f in report.read_failures}
        assert len(hostile) >= 10
        for name in hostile:
            item = f"hostile-{name}"
            if name.startswith("redirect"):  # an allowed link: refused where it would be read
                assert failed[item].startswith("[href_not_allowed]"), failed
            else:
                assert refused.get(item) == "href_not_allowed", (name, refused.get(item))
        assert canary_server.requests == []
        assert {m for m, _ in allowed.requests} <= {"HEAD"}
        assert opened, "the honest items were read"
        assert not [
            p for p in opened if str(secret) in p or "://" in p or "/hostile-" in p or "canary" in p
        ], opened
        assert report.scenes_used  # the honest items still made the mosaic
