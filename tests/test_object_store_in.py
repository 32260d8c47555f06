"""Assets on object storage: COGs in a real (moto) S3 bucket read by RasterReader through
``s3://`` → GDAL's /vsis3/, credentials and endpoint from the environment only, and the href
policy's bucket roots enforced before any request reaches the server."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from pipeline.errors import HrefNotAllowed, ReadError, ReadRefused
from pipeline.io.hrefs import HrefPolicy
from pipeline.io.objectstore import endpoint_options, gdal_options, vsi_path
from pipeline.io.reader import RasterReader, ReaderSettings
from pipeline.io.retry import RetryPolicy

FAST = RetryPolicy(attempts=2, base_s=0.01, cap_s=0.02)


def write_cog(path, *, seed: int = 0, size: int = 96) -> np.ndarray:
    """A small tiled GeoTIFF (2 bands, uint16, 32 px tiles); returns its pixels (b, y, x)."""
    data = np.random.default_rng(seed).integers(0, 10_000, (2, size, size), dtype=np.uint16)
    profile = dict(
        driver="GTiff", width=size, height=size, count=2, dtype="uint16", tiled=True,
        blockxsize=32, blockysize=32, crs="EPSG:32632", compress="deflate",
        transform=from_origin(500_000, 4_600_000, 10, 10),
    )
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(data)
    return data


def _reader(*roots: str) -> RasterReader:
    policy = HrefPolicy(tuple(roots)) if roots else None
    return RasterReader(ReaderSettings(policy=policy, retry=FAST))


@pytest.fixture()
def uploaded(s3, tmp_path):
    """A bucket holding data/scene/B04.tif; (server, bucket, href, pixels)."""
    data = write_cog(tmp_path / "B04.tif")
    bucket = s3.make_bucket()
    href = s3.put_file(bucket, "data/scene/B04.tif", tmp_path / "B04.tif")
    return s3, bucket, href, data


def test_a_cog_in_a_bucket_reads_as_the_local_file(uploaded):
    s3, bucket, href, data = uploaded
    reader = _reader(f"s3://{bucket}/data/")
    got = reader.read(href, [1, 2], (10, 20, 50, 60))
    np.testing.assert_array_equal(got, data[:, 10:60, 20:80])
    whole = reader.read(href, [2], (0, 0, 96, 96))  # the open dataset is reused
    np.testing.assert_array_equal(whole[0], data[1])
    assert reader.dataset(href).driver == "GTiff"
    assert s3.requests_for(f"/{bucket}/data/scene/B04.tif"), "read from the server"
    reader.close()


def test_an_href_outside_the_allowed_buckets_is_refused_before_any_request(uploaded):
    s3, bucket, href, _ = uploaded
    other = s3.make_bucket()
    s3.put_file(other, "data/scene/B04.tif", s3.log_path)  # exists: only the policy stops it
    before = len(s3.requests())
    reader = _reader(f"s3://{bucket}/data/")
    for refused in (
        f"s3://{other}/data/scene/B04.tif",  # another bucket
        f"s3://{bucket}/elsewhere/B04.tif",  # the bucket, outside the prefix
        f"s3://{bucket}/data/../elsewhere/B04.tif",
        f"s3://{bucket}/data/scene/B04.vrt",
    ):
        with pytest.raises(ReadRefused) as err:
            reader.read(refused, [1], (0, 0, 8, 8))
        assert err.value.reason == "href_not_allowed"
        assert refused in err.value.message
    assert s3.requests()[before:] == [], "not one request reached the server"


@pytest.mark.parametrize(
    ("href", "allowed"),
    [
        ("s3://bkt/data/x.tif", True),
        ("s3://bkt/data/sub/x.jp2", True),
        ("s3://bkt/database/x.tif", False),  # whole segments, not a string prefix
        ("s3://bkt/dat/x.tif", False),
        ("s3://bkt2/data/x.tif", False),  # another bucket whose name starts alike
        ("s3://bk/data/x.tif", False),
        ("gs://bkt/data/x.tif", False),  # same bucket name, another store
        ("s3://bkt/data/../x.tif", False),
        ("s3://bkt/data/./x.tif", False),
        ("s3://bkt/data//x.tif", False),
        ("s3://bkt/data/%2e%2e/x.tif", False),  # percent-encoding tricks
        ("s3://bkt/data/x%2Etif", False),
        ("s3://bkt/data/x.tif?x-amz-security-token=abc", False),  # credentials in a query
        ("s3://AKIAXXXX:secret@bkt/data/x.tif", False),  # userinfo
        ("s3://bkt@evil/data/x.tif", False),
        ("s3://bkt/data/x.tif#frag", False),
        ("s3://bkt/data\\x.tif", False),
        ("s3://bkt/data/a b.tif", False),
        ("s3://bkt/data/x.vrt", False),
        ("s3://bkt/data/x.tif.vrt", False),
        ("s3:///vsis3/bkt/data/x.tif", False),
        ("/vsis3/bkt/data/x.tif", False),  # the user's /vsi paths stay refused
        ("s3://Bkt/data/x.tif", False),  # not a bucket name
    ],
)
def test_bucket_roots_match_by_whole_segments_and_plain_keys_only(href, allowed):
    policy = HrefPolicy.for_catalog("x", ("s3://bkt/data",))
    if allowed:
        assert policy.check(href) == href
    else:
        with pytest.raises(HrefNotAllowed):
            policy.check(href)


def test_a_scheme_wide_or_bucket_root_admits_what_it_names_only():
    with pytest.raises(HrefNotAllowed):
        HrefPolicy(("s3://",)).check("s3://bkt/x.tif")  # no bucket named: none admitted
    whole = HrefPolicy(("s3://bkt/",))
    assert whole.check("s3://bkt/any/depth/x.tif") == "s3://bkt/any/depth/x.tif"
    with pytest.raises(HrefNotAllowed):
        whole.check("s3://bkt-other/x.tif")
    with pytest.raises(HrefNotAllowed):  # an http root does not admit the bucket
        HrefPolicy(("http://bkt/",)).check("s3://bkt/x.tif")
    with pytest.raises(HrefNotAllowed):  # catalogs are not read from buckets
        whole.check_link("s3://bkt/catalog.json")


def test_credentials_never_come_from_the_catalog(uploaded):
    s3, bucket, href, _ = uploaded
    before = len(s3.requests())
    reader = _reader(f"s3://{bucket}/")
    for with_credentials in (
        f"s3://aquila-test-key:aquila-test-secret@{bucket}/data/scene/B04.tif",
        f"{href}?AWSAccessKeyId=aquila-test-key&Signature=x",
        f"{href}?x-amz-security-token=abc",
    ):
        with pytest.raises(ReadRefused) as err:
            reader.read(with_credentials, [1], (0, 0, 8, 8))
        assert "environment" in err.value.message
    assert s3.requests()[before:] == []


def test_a_missing_key_is_a_clear_read_error_naming_the_asset(uploaded):
    s3, bucket, _, _ = uploaded
    missing = f"s3://{bucket}/data/scene/B08.tif"
    reader = _reader(f"s3://{bucket}/data/")
    with pytest.raises(ReadError) as err:
        reader.read(missing, [1], (0, 0, 8, 8))
    assert not isinstance(err.value, ReadRefused)
    assert err.value.reason == "asset_not_found", err.value.message
    assert err.value.attempts == 1, "permanent: not retried"
    assert missing in err.value.message
    assert "no such object" in err.value.message


def test_the_key_uploaded_after_a_miss_is_read(s3, tmp_path):
    """GDAL keeps no 'missing' between opens (CPL_VSIL_CURL_NON_CACHED)."""
    data = write_cog(tmp_path / "late.tif", seed=3)
    bucket = s3.make_bucket()
    href = f"s3://{bucket}/late.tif"
    with pytest.raises(ReadError):
        _reader(f"s3://{bucket}/").read(href, [1], (0, 0, 8, 8))
    s3.put_file(bucket, "late.tif", tmp_path / "late.tif")
    got = _reader(f"s3://{bucket}/").read(href, [1], (0, 0, 8, 8))
    np.testing.assert_array_equal(got[0], data[0, :8, :8])


def test_aws_endpoint_url_alone_is_translated_for_gdal(uploaded, monkeypatch):
    """GDAL 3.10 does not read AWS_ENDPOINT_URL itself (checked): Aquila translates it."""
    s3, bucket, href, data = uploaded
    for name in ("AWS_S3_ENDPOINT", "AWS_HTTPS", "AWS_VIRTUAL_HOSTING"):
        monkeypatch.delenv(name)
    assert endpoint_options({"AWS_ENDPOINT_URL": s3.endpoint_url}) == {
        "AWS_S3_ENDPOINT": f"{s3.host}:{s3.port}",
        "AWS_HTTPS": "NO",
        "AWS_VIRTUAL_HOSTING": "FALSE",
    }
    got = _reader(f"s3://{bucket}/").read(href, [1], (0, 0, 16, 16))
    np.testing.assert_array_equal(got[0], data[0, :16, :16])


def test_gdal_own_endpoint_variables_win_over_aws_endpoint_url():
    env = {"AWS_ENDPOINT_URL": "https://a.example", "AWS_S3_ENDPOINT": "b.example"}
    assert endpoint_options(env) == {}
    env = {"AWS_ENDPOINT_URL": "https://a.example:9000", "AWS_VIRTUAL_HOSTING": "TRUE"}
    assert endpoint_options(env) == {"AWS_S3_ENDPOINT": "a.example:9000", "AWS_HTTPS": "YES"}
    assert gdal_options("s3://bkt/k/x.tif", {}) == {
        "CPL_VSIL_CURL_ALLOWED_FILENAME": "/vsis3/bkt/k/x.tif"
    }
    assert vsi_path("gs://bkt/k.tif") == "/vsigs/bkt/k.tif"
    assert vsi_path("az://container/k.tif") == "/vsiaz/container/k.tif"


def test_gdal_reaches_no_other_file_than_the_allowed_object(uploaded):
    """Outside Aquila's thread-local allowance, /vsis3/ opens nothing in this process."""
    s3, bucket, href, _ = uploaded
    RasterReader(ReaderSettings())  # configures GDAL as a worker does
    with pytest.raises(rasterio.errors.RasterioIOError):
        rasterio.open(vsi_path(href))
