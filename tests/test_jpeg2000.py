"""JPEG 2000 assets (GDAL's JP2OpenJPEG, in rasterio's wheels): written lossless here, read
locally, over HTTP through Aquila's own opener (no GeoTIFF tiles to prefetch) and from S3, and
equal to what was written. No driver but GTiff and JP2OpenJPEG ever opens an asset."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
import rasterio.shutil
from rasterio.transform import from_origin

from pipeline.errors import HrefNotAllowed, ReadError, ReadRefused
from pipeline.io.hrefs import HrefPolicy, raster_driver
from pipeline.io.reader import RasterReader, ReaderSettings
from pipeline.io.retry import RetryPolicy
from tests.asset_server import serve

FAST = RetryPolicy(attempts=2, base_s=0.01, cap_s=0.02)
WINDOW = (5, 7, 60, 50)  # row0, col0, height, width


def write_jp2(path, *, size: int = 80, seed: int = 1) -> np.ndarray:
    """A lossless (reversible 5/3 wavelet) 2-band uint16 JPEG 2000 in 32 px tiles; returns its
    pixels (b, y, x)."""
    data = np.random.default_rng(seed).integers(0, 4000, (2, size, size), dtype=np.uint16)
    profile = dict(
        driver="JP2OpenJPEG", width=size, height=size, count=2, dtype="uint16",
        crs="EPSG:32632", transform=from_origin(500_000, 4_600_000, 10, 10),
    )
    with rasterio.open(
        path, "w", QUALITY=100, REVERSIBLE="YES", BLOCKXSIZE=32, BLOCKYSIZE=32, **profile
    ) as ds:
        ds.write(data)
    return data


def _expected(data: np.ndarray) -> np.ndarray:
    row0, col0, h, w = WINDOW
    return data[:, row0 : row0 + h, col0 : col0 + w]


@pytest.fixture(scope="module")
def jp2(tmp_path_factory):
    folder = tmp_path_factory.mktemp("jp2")
    data = write_jp2(folder / "B04.jp2")
    with rasterio.open(folder / "B04.jp2") as ds:
        assert ds.driver == "JP2OpenJPEG"
        np.testing.assert_array_equal(ds.read(), data)  # lossless
    return folder, data


def test_a_local_jp2_is_read_with_jp2openjpeg(jp2):
    folder, data = jp2
    reader = RasterReader(ReaderSettings(policy=HrefPolicy((str(folder),)), retry=FAST))
    href = str(folder / "B04.jp2")
    np.testing.assert_array_equal(reader.read(href, [1, 2], WINDOW), _expected(data))
    assert reader.dataset(href).driver == "JP2OpenJPEG"


def test_a_jp2_over_http_is_read_through_the_checked_opener(jp2):
    folder, data = jp2
    with serve(folder) as server:
        reader = RasterReader(
            ReaderSettings(policy=HrefPolicy((server.url + "/",)), retry=FAST, http_timeout_s=5)
        )
        href = f"{server.url}/B04.jp2"
        np.testing.assert_array_equal(reader.read(href, [1, 2], WINDOW), _expected(data))
        np.testing.assert_array_equal(reader.read(href, [2], (0, 0, 80, 80))[0], data[1])
        assert reader.dataset(href).driver == "JP2OpenJPEG"
        reader.close()
    methods = {m for m, _ in server.requests}
    assert methods <= {"HEAD", "GET"}
    assert all(p == "/B04.jp2" for p in server.paths()), "no sidecar was asked for"


def test_a_jp2_in_a_bucket_is_read(jp2, s3):
    folder, data = jp2
    bucket = s3.make_bucket()
    href = s3.put_file(bucket, "tiles/B04.jp2", folder / "B04.jp2")
    reader = RasterReader(ReaderSettings(policy=HrefPolicy((f"s3://{bucket}/tiles/",)), retry=FAST))
    np.testing.assert_array_equal(reader.read(href, [1, 2], WINDOW), _expected(data))
    reader.close()


def test_only_gtiff_and_jp2openjpeg_are_drivers():
    assert raster_driver("/a/b.TIF") == "GTiff"
    assert raster_driver("x.jp2") == "JP2OpenJPEG"
    for other in ("x.vrt", "x.j2k", "x.png", "x.nc", "x.jp2.vrt", "x.ovr", "x.xml"):
        assert raster_driver(other) is None


def test_a_vrt_or_other_format_is_still_refused(tmp_path, jp2):
    folder, _ = jp2
    vrt = tmp_path / "B04.vrt"
    with rasterio.open(folder / "B04.jp2") as ds:
        rasterio.shutil.copy(ds, vrt, driver="VRT")
    png = tmp_path / "B04.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n")
    policy = HrefPolicy((str(tmp_path), "http://127.0.0.1:9/", "s3://bkt/"))
    for refused in (str(vrt), str(png), "http://127.0.0.1:9/B04.vrt", "s3://bkt/B04.vrt"):
        with pytest.raises(HrefNotAllowed, match="GeoTIFF .*JPEG 2000"):
            policy.check(refused)
    reader = RasterReader(ReaderSettings(policy=policy, retry=FAST))
    with pytest.raises(ReadRefused):
        reader.read(str(vrt), [1], (0, 0, 8, 8))


def test_a_vrt_named_jp2_is_not_opened_as_a_vrt(tmp_path, jp2):
    """The driver is the suffix's: a VRT in disguise fails to open as JPEG 2000."""
    folder, _ = jp2
    disguised = tmp_path / "B04.jp2"
    with rasterio.open(folder / "B04.jp2") as ds:
        rasterio.shutil.copy(ds, tmp_path / "real.vrt", driver="VRT")
    disguised.write_bytes((tmp_path / "real.vrt").read_bytes())
    reader = RasterReader(ReaderSettings(policy=HrefPolicy((str(tmp_path),)), retry=FAST))
    with pytest.raises(ReadError) as err:
        reader.read(str(disguised), [1], (0, 0, 8, 8))
    assert err.value.reason == "asset_corrupt"
