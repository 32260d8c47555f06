"""Signed URLs: a collection's signer (``package.module:callable``) makes the URL the worker
requests; the policy judges the unsigned href, a signature may change the query only, an
expired one is renewed on 403, and the secret never reaches an error, a scene or its identity."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from pipeline.catalog.items.normalise import as_doc, normalise_doc
from pipeline.catalog.items.options import NormaliseOptions
from pipeline.catalog.query import SearchQuery
from pipeline.catalog.source import iter_items
from pipeline.errors import ReadError, ReadRefused, SpecError
from pipeline.io.hrefs import HrefPolicy
from pipeline.io.reader import RasterReader, ReaderSettings
from pipeline.io.retry import RetryPolicy
from pipeline.io.signing import check_signer_name, redact
from pipeline.spec.workflow import spec_from_dict
from tests import signers
from tests.asset_server import serve
from tests.conftest import make_spec_dict

FAST = RetryPolicy(attempts=3, base_s=0.01, cap_s=0.02)
APPEND = "tests.signers:append_token"
BANDS = ("blue", "green", "red", "nir")


@pytest.fixture(scope="module")
def cog(tmp_path_factory):
    folder = tmp_path_factory.mktemp("signed")
    data = np.random.default_rng(5).integers(0, 9000, (1, 64, 64), dtype=np.uint16)
    with rasterio.open(
        folder / "B04.tif", "w", driver="GTiff", width=64, height=64, count=1, dtype="uint16",
        tiled=True, blockxsize=32, blockysize=32, crs="EPSG:32632",
        transform=from_origin(500_000, 4_600_000, 10, 10),
    ) as ds:
        ds.write(data)
    return folder, data


@pytest.fixture()
def guarded(cog):
    """A server that answers 403 unless ?token=TOKEN; (server, href, pixels)."""
    folder, data = cog
    signers.reset()
    with serve(folder) as server:
        server.token = signers.TOKEN
        yield server, f"{server.url}/B04.tif", data


def _reader(server) -> RasterReader:
    policy = HrefPolicy((server.url + "/",))
    return RasterReader(ReaderSettings(policy=policy, retry=FAST, http_timeout_s=5))


def test_the_read_succeeds_with_the_signer_and_fails_clearly_without(guarded):
    server, href, data = guarded
    got = _reader(server).read(href, [1], (0, 0, 64, 64), signer=APPEND)
    np.testing.assert_array_equal(got, data)
    assert server.requests and all(f"token={signers.TOKEN}" in p for _, p in server.requests)
    with pytest.raises(ReadError) as err:
        _reader(server).read(href, [1], (0, 0, 8, 8))
    assert err.value.reason == "asset_forbidden"
    assert href in err.value.message


def test_dataset_takes_the_signer_too(guarded):
    server, href, _ = guarded
    assert _reader(server).dataset(href, signer=APPEND).shape == (64, 64)


def test_an_expired_signature_is_renewed_once_on_403(guarded):
    server, href, data = guarded
    reader = _reader(server)
    got = reader.read(href, [1], (0, 0, 64, 64), signer="tests.signers:stale_then_fresh")
    np.testing.assert_array_equal(got, data)
    assert 403 in server.answered("/B04.tif")
    assert reader.take_retries() == {}, "a fresh signature, not a counted retry"


@pytest.mark.parametrize("signer", ["tests.signers:other_host", "tests.signers:other_path"])
def test_a_signer_that_moves_the_read_is_refused_before_any_request(guarded, signer):
    server, href, _ = guarded
    with pytest.raises(ReadRefused) as err:
        _reader(server).read(href, [1], (0, 0, 8, 8), signer=signer)
    assert "a signer may only add a query" in err.value.message
    assert signers.TOKEN not in str(err.value)
    assert server.requests == []


def test_the_policy_judges_the_unsigned_href(guarded):
    server, _, _ = guarded
    outside = "http://127.0.0.1:9/B04.tif"  # not under the server's root
    with pytest.raises(ReadRefused) as err:
        _reader(server).read(outside, [1], (0, 0, 8, 8), signer=APPEND)
    assert signers.TOKEN not in str(err.value)


def test_a_failing_or_missing_signer_is_a_read_error_without_the_secret(guarded):
    server, href, _ = guarded
    with pytest.raises(ReadError) as err:
        _reader(server).read(href, [1], (0, 0, 8, 8), signer="tests.signers:broken")
    assert err.value.reason == "signer_failed"
    assert signers.TOKEN not in str(err.value) and href in str(err.value)
    unavailable = ("tests.nowhere:sign", "tests.signers:nothing", "tests.signers:not_callable")
    for missing in unavailable:
        with pytest.raises(ReadError) as err:
            _reader(server).read(href, [1], (0, 0, 8, 8), signer=missing)
        assert err.value.reason == "signer_unavailable"
        assert missing in str(err.value)


def test_errors_after_signing_do_not_carry_the_signature(guarded):
    server, href, _ = guarded
    server.always["/B04.tif"] = 404
    with pytest.raises(ReadError) as err:
        _reader(server).read(href, [1], (0, 0, 8, 8), signer=APPEND)
    assert err.value.reason == "asset_not_found"
    assert signers.TOKEN not in str(err.value)
    assert redact(f"GET {href}?token=x: 404", f"{href}?token=x", href) == f"GET {href}: 404"


def test_signer_names_are_checked_when_the_spec_is_loaded(tmp_path):
    bounds = (500_000, 4_600_000, 501_280, 4_601_280)
    good = make_spec_dict(tmp_path, tmp_path, bounds=bounds, signers={"north": APPEND})
    spec = spec_from_dict(good, base_dir=tmp_path)
    assert spec.signers == {"north": APPEND}
    for bad in ("tests.signers", "tests/signers:x", "tests.signers:x;import os", "", ":x"):
        with pytest.raises(SpecError, match="signers"):
            spec_from_dict(
                make_spec_dict(tmp_path, tmp_path, bounds=bounds, signers={"north": bad}),
                base_dir=tmp_path,
            )
    assert check_signer_name("planetary_computer:sign") == "planetary_computer:sign"


def test_normalisation_carries_the_collections_signer_outside_identity(tiny_catalog):
    items = {i.collection_id: i for i in iter_items(str(tiny_catalog.catalog_href), SearchQuery())}
    policy = HrefPolicy.for_catalog(str(tiny_catalog.catalog_href))
    plain = NormaliseOptions(policy=policy)
    signed = dataclasses.replace(plain, signers={"north": APPEND})
    north = normalise_doc(as_doc(items["north"]), bands=BANDS, options=signed)
    assert {b.signer for b in north.bands} == {APPEND}
    assert {q.signer for q in north.quality} == {APPEND}
    unsigned = normalise_doc(as_doc(items["north"]), bands=BANDS, options=plain)
    assert north == unsigned and hash(north) == hash(unsigned)  # not part of the identity
    assert all(b.href == u.href for b, u in zip(north.bands, unsigned.bands, strict=True))
    south = normalise_doc(as_doc(items["south"]), bands=BANDS, options=signed)
    assert {b.signer for b in south.bands} == {None}
