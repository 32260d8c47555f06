"""Asset links are checked against allowed roots before any I/O."""

from __future__ import annotations

import pytest

from pipeline.errors import HrefNotAllowed
from pipeline.io.hrefs import HrefPolicy, resolve_href


@pytest.fixture()
def policy(tmp_path):
    (tmp_path / "cat" / "items").mkdir(parents=True)
    (tmp_path / "secret.tif").write_bytes(b"")
    return HrefPolicy.for_catalog(str(tmp_path / "cat" / "catalog.json")), tmp_path


def test_inside_the_catalog_folder_is_allowed(policy):
    pol, root = policy
    href = str(root / "cat" / "items" / "a.tif")
    assert pol.check(href) == href
    assert pol.check("file://" + href) == href


@pytest.mark.parametrize(
    "href",
    [
        "{root}/secret.tif",  # outside the catalog folder
        "{root}/cat/items/../../secret.tif",  # '..' escape
        "/vsicurl/http://169.254.169.254/latest.tif",  # GDAL virtual file system
        "{root}/cat/items/a.vrt",  # VRT can point anywhere
        "ftp://example.org/a.tif",  # scheme
        "http://127.0.0.1/a.tif",  # not under an allowed URL prefix
    ],
)
def test_refused(policy, href):
    pol, root = policy
    with pytest.raises(HrefNotAllowed) as err:
        pol.check(href.format(root=root), item_id="it", asset="B04")
    assert err.value.reason == "href_not_allowed"
    assert "item 'it' asset 'B04'" in str(err.value)


def test_symlink_escape_is_refused(policy):
    pol, root = policy
    link = root / "cat" / "items" / "link.tif"
    link.symlink_to(root / "secret.tif")
    with pytest.raises(HrefNotAllowed):
        pol.check(str(link))


def test_url_roots():
    pol = HrefPolicy.for_catalog("https://stac.example.org/catalog.json")
    assert pol.check("https://stac.example.org/a/b.tif")
    with pytest.raises(HrefNotAllowed):
        pol.check("https://stac.example.org.evil.net/a/b.tif")
    with pytest.raises(HrefNotAllowed):
        pol.check("https://stac.example.org/a/../../b.tif")


def test_relative_hrefs_resolve_against_the_item():
    assert resolve_href("./B02.tif", "/data/cat/n/item/item.json") == "/data/cat/n/item/B02.tif"
    assert resolve_href("../x/B02.tif", "https://h/c/item.json") == "https://h/x/B02.tif"
    assert resolve_href("/abs/B02.tif", "/data/item.json") == "/abs/B02.tif"

