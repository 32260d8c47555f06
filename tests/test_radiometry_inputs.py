"""Radiometry inputs: the spec section, the vendor-file parsers (hypothesis over the three MTL
encodings, refusals), and the sun geometry against the USGS MTLs of the shared corpus."""

from __future__ import annotations

import datetime as dt
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.catalog.sensors.vendor import (
    VendorMetadataError,
    landsat_mtl,
    parse_mtl,
    planet_analytic,
    sentinel2_mtd,
)
from pipeline.errors import SpecError
from pipeline.kernels.toa import earth_sun_distance, solar_zenith
from pipeline.plan.calibration import cos_solar_zenith
from pipeline.plan.grid import ChunkGrid
from pipeline.spec.workflow import spec_from_dict
from tests.conftest import SHARED_REAL, make_spec_dict

# --------------------------------------------------------------------------- the spec


def _spec(tmp_path: Path, radiometry):
    d = make_spec_dict(tmp_path, tmp_path, bounds=(0, 0, 1000, 1000))
    if radiometry is not None:
        d["radiometry"] = radiometry
    return spec_from_dict(d, base_dir=tmp_path)


def test_radiometry_defaults_keep_the_masks_of_before(tmp_path):
    r = _spec(tmp_path, None).radiometry
    assert (r.target, r.harmonize_to, r.dilate) == ("reflectance", None, 0)
    assert r.mask == ("nodata", "saturated", "cloud", "shadow", "cirrus")


@pytest.mark.parametrize(
    ("radiometry", "words"),
    [
        ({"target": "brightness"}, ["radiometry.target", "reflectance", "radiance"]),
        ({"harmonize_to": "landsat-99"}, ["harmonize_to", "landsat-8-9-oli"]),
        ({"harmonize_to": "landsat-8-9-oli", "target": "radiance"}, ["does not go with"]),
        ({"mask": ["haze"]}, ["radiometry.mask", "haze"]),
        ({"mask": ["cloud", "cloud"]}, ["repeat"]),
        ({"dilate": -1}, ["radiometry.dilate"]),
        ({"dilatation": 2}, ["unknown key", "dilate"]),
    ],
)
def test_radiometry_spec_errors_name_the_key(tmp_path, radiometry, words):
    with pytest.raises(SpecError) as err:
        _spec(tmp_path, radiometry)
    for word in words:
        assert word in err.value.message


def test_cli_help_names_the_radiometry_options():
    out = subprocess.run(
        [sys.executable, "-m", "pipeline.cli.main", "--help"],
        capture_output=True, text=True, check=True,
    ).stdout
    for word in ("radiometry", "harmonize_to", "dilate", "demo-toa.yaml", "radiance"):
        assert word in out


# --------------------------------------------------------------------------- vendor parsers

_KEY = st.from_regex(r"[A-Z][A-Z0-9_]{0,12}", fullmatch=True)
_VALUE = st.one_of(
    st.from_regex(r"[A-Za-z0-9_.:-]{1,16}", fullmatch=True),
    st.floats(-1e5, 1e5, allow_nan=False).map(lambda v: f"{v:.6E}"),
)


def _groups(depth: int = 2):
    leaf = st.dictionaries(_KEY, _VALUE, min_size=1, max_size=4)
    if depth == 0:
        return leaf
    return st.dictionaries(_KEY, st.one_of(leaf, _groups(depth - 1)), min_size=1, max_size=3)


def _odl(groups: dict, indent: int = 0) -> str:
    lines = []
    for key, value in groups.items():
        pad = "  " * indent
        if isinstance(value, dict):
            lines += [f"{pad}GROUP = {key}", _odl(value, indent + 1), f"{pad}END_GROUP = {key}"]
        else:
            lines.append(f'{pad}{key} = "{value}"')
    return "\n".join(lines)


def _xml(groups: dict) -> str:
    return "".join(f"<{k}>{_xml(v) if isinstance(v, dict) else v}</{k}>" for k, v in groups.items())


@settings(max_examples=60, deadline=None)
@given(groups=st.dictionaries(_KEY, _groups(), min_size=1, max_size=1))
def test_the_three_mtl_encodings_parse_to_the_same_groups(tmp_path_factory, groups):
    folder = tmp_path_factory.mktemp("mtl")
    (folder / "a.txt").write_text(_odl(groups) + "\nEND\n")
    (folder / "a.json").write_text(json.dumps(groups))
    (folder / "a.xml").write_text('<?xml version="1.0"?>' + _xml(groups))
    parsed = [parse_mtl(str(folder / f"a.{ext}")) for ext in ("txt", "json", "xml")]
    assert parsed[0] == parsed[1] == parsed[2] == groups


def test_the_real_mtl_encodings_agree():
    folder = SHARED_REAL / "landsat/usgs-c2l2/LC08_L2SP_001062_20201031_20201106_02_T2"
    if not folder.is_dir():
        pytest.skip(f"no shared corpus at {SHARED_REAL}")
    mtls = [landsat_mtl(str(p)) for p in sorted(folder.glob("*_MTL.*"))]
    assert len(mtls) == 3
    for m in mtls[1:]:
        assert (m.level, dict(m.reflectance), m.sun_elevation, m.earth_sun_distance) == (
            mtls[0].level,
            dict(mtls[0].reflectance),
            mtls[0].sun_elevation,
            mtls[0].earth_sun_distance,
        )
    assert mtls[0].level == "L2" and mtls[0].reflectance["4"] == (2.75e-05, -0.2)
    assert not mtls[0].radiance  # Level-1 radiance gains do not apply to SR DN


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("GROUP = A\n  X = 1\n", ["never closed"]),
        ("END_GROUP = A\n", ["END_GROUP without GROUP"]),
        ("GROUP = A\n  not an odl line\nEND_GROUP = A\n", ["line 2", "ODL"]),
        ('{"A": [1, 2', ["not valid JSON"]),
        ('<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e "e">]><A>&e;</A>', ["DTD"]),
        (
            'GROUP = L1_METADATA_FILE\n  GROUP = PRODUCT_METADATA\n    DATA_TYPE = "L1TP"\n'
            "  END_GROUP = PRODUCT_METADATA\nEND_GROUP = L1_METADATA_FILE\n",
            ["RADIOMETRIC_RESCALING"],
        ),
    ],
)
def test_broken_mtls_are_refused_with_the_reason(tmp_path, text, words):
    path = tmp_path / "x_MTL.txt"
    path.write_text(text)
    with pytest.raises(VendorMetadataError) as err:
        landsat_mtl(str(path))
    for word in words:
        assert word in str(err.value)


def test_vendor_files_are_read_locally_only_and_small(tmp_path):
    for parse in (landsat_mtl, sentinel2_mtd, planet_analytic):
        with pytest.raises(VendorMetadataError, match="remote"):
            parse("https://example.org/x_MTL.txt")
        with pytest.raises(VendorMetadataError, match="does not exist"):
            parse(str(tmp_path / "missing.xml"))
    big = tmp_path / "big.xml"
    big.write_bytes(b" " * (2 * 1024 * 1024 + 1))
    with pytest.raises(VendorMetadataError, match="larger"):
        sentinel2_mtd(str(big))
    empty = tmp_path / "mtd.xml"
    empty.write_text("<Product><PRODUCT_TYPE>S2MSI1C</PRODUCT_TYPE></Product>")
    with pytest.raises(VendorMetadataError, match="QUANTIFICATION"):
        sentinel2_mtd(str(empty))


# --------------------------------------------------------------------------- sun geometry


def _real_mtls() -> list[Path]:
    if not SHARED_REAL.is_dir():
        return []
    return sorted(
        [*SHARED_REAL.glob("landsat/**/*_MTL.txt"), *SHARED_REAL.glob("landsat/**/*_MTL.json")]
    )


@pytest.mark.skipif(not SHARED_REAL.is_dir(), reason=f"no shared corpus at {SHARED_REAL}")
@pytest.mark.parametrize("path", _real_mtls(), ids=lambda p: p.name)
def test_sun_geometry_matches_the_usgs_mtl(path):
    """At the scene centre (mean of the MTL's corner coordinates) and SCENE_CENTER_TIME, the
    solar zenith is within 0.02° of 90° - SUN_ELEVATION for the Collection 1/2 MTLs (measured:
    0.001-0.009°) and the Earth-Sun distance within 6e-5 AU of EARTH_SUN_DISTANCE (USGS uses a
    day-of-year table). The pre-collection (2014, LPGS 2.4) rio-toa MTL is 0.10° off at its
    product box's centre, so it is held to 0.15°."""
    from pipeline.catalog.sensors.vendor import _flatten

    mtl = landsat_mtl(str(path))
    groups = _flatten(parse_mtl(str(path)))
    corners = groups.get("PROJECTION_ATTRIBUTES") or groups.get("PRODUCT_METADATA")
    lat = np.mean([float(corners[f"CORNER_{c}_LAT_PRODUCT"]) for c in ("UL", "UR", "LL", "LR")])
    lon = np.mean([float(corners[f"CORNER_{c}_LON_PRODUCT"]) for c in ("UL", "UR", "LL", "LR")])
    assert mtl.acquired is not None and mtl.sun_elevation is not None
    tolerance = 0.15 if path.name.startswith("LC8") else 0.02
    zenith = solar_zenith(mtl.acquired, lon, lat)
    assert zenith == pytest.approx(90 - mtl.sun_elevation, abs=tolerance)
    assert earth_sun_distance(mtl.acquired) == pytest.approx(mtl.earth_sun_distance, abs=6e-5)


def test_per_pixel_cos_zenith_is_exact_enough_and_chunk_independent():
    """cos θs on a 10 m chunk: within 1e-8 of the exact value at each pixel centre, and a
    sub-chunk gives the same numbers as the big chunk it lies in (nodes on the global grid)."""
    from pyproj import Transformer

    when = dt.datetime(2025, 6, 10, 10, 20, tzinfo=dt.UTC)
    big = ChunkGrid(0, 0, 0, 0, 300, 400, "EPSG:32632", (10.0, 0.0, 500000.0, 0.0, -10.0, 5.03e6))
    sub = ChunkGrid(
        1,
        1,
        130,
        170,
        90,
        110,
        "EPSG:32632",
        (10.0, 0.0, 500000.0 + 1700.0, 0.0, -10.0, 5.03e6 - 1300.0),
    )
    whole = cos_solar_zenith(big, when)
    np.testing.assert_array_equal(cos_solar_zenith(sub, when), whole[130:220, 170:280])
    to_ll = Transformer.from_crs("EPSG:32632", "EPSG:4326", always_xy=True)
    ys, xs = np.mgrid[0:300:37, 0:400:41]
    lon, lat = to_ll.transform(500000.0 + 10 * (xs + 0.5), 5.03e6 - 10 * (ys + 0.5))
    exact = np.cos(np.deg2rad(solar_zenith(when, lon, lat)))
    np.testing.assert_allclose(whole[ys, xs], exact, rtol=0, atol=1e-8)
    assert math.isclose(float(whole.mean()), float(exact.mean()), abs_tol=1e-3)


# --------------------------------------------------------------------------- nodata from a profile


def _profile_folder(tmp_path: Path, band_yaml: str) -> Path:
    folder = tmp_path / "profiles"
    folder.mkdir()
    (folder / "generic.yaml").write_text(
        "name: generic\ndescription: x\npriority: -100\nmatch: {any: true}\n"
    )
    (folder / "testsat.yaml").write_text(
        "name: testsat\ndescription: a sensor whose nodata is a range and a mask band\n"
        f"priority: 10\nmatch: {{platform: [testsat-1]}}\ndtype: uint16\nbands:\n{band_yaml}"
    )
    return folder


def _two_band_tif(path: Path, data: np.ndarray, mask: np.ndarray, res: float = 10.0) -> None:
    import rasterio

    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=data.shape[1],
        height=data.shape[0],
        count=2,
        dtype="uint16",
        crs="EPSG:32632",
        transform=rasterio.transform.from_origin(500000, 5000000, res, res),
    ) as ds:
        ds.write(np.stack([data, mask]).astype(np.uint16))


def _testsat_item(tmp_path: Path, assets: dict) -> dict:
    from shapely.geometry import mapping

    from pipeline.catalog.footprint import raster_footprint

    geometry = mapping(raster_footprint("EPSG:32632", (10, 0, 500000, 0, -10, 5000000), (4, 6)))
    return {
        "type": "Feature",
        "stac_version": "1.0.0",
        "id": "testsat-1-item",
        "properties": {"datetime": "2025-06-01T10:00:00Z", "platform": "testsat-1"},
        "geometry": geometry,
        "assets": {k: {"href": str(v), "type": "image/tiff"} for k, v in assets.items()},
    }


def test_profile_nodata_range_and_mask_band_end_to_end(tmp_path):
    """A profile band with valid_range [10, 60000] and a mask band (band 2, 0 = nodata): DN 5 and
    DN 65000 and every pixel under mask 0 become NaN, the rest DN * 1e-4."""
    from pipeline.catalog.items.normalise import normalise_doc
    from pipeline.catalog.items.options import NormaliseOptions
    from pipeline.catalog.sensors.profiles import load_profiles
    from pipeline.catalog.stacdoc import ItemDoc
    from pipeline.engine.chunk import read_scene
    from pipeline.io.hrefs import HrefPolicy
    from pipeline.io.reader import RasterReader

    data = np.arange(1000, 1024, dtype=np.uint16).reshape(4, 6)
    data[0, 0], data[0, 1] = 5, 65000
    mask = np.ones((4, 6), np.uint16)
    mask[2, :3] = 0
    _two_band_tif(tmp_path / "data.tif", data, mask)
    folder = _profile_folder(
        tmp_path,
        "  red: {assets: [data], scale: 1.0e-4, offset: 0.0, "
        "valid_range: [10, 60000], mask: {asset: data, index: 2}}\n",
    )
    options = NormaliseOptions(
        policy=HrefPolicy.for_catalog(str(tmp_path)), profiles=load_profiles(folder)
    )
    doc = ItemDoc.from_dict(_testsat_item(tmp_path, {"data": tmp_path / "data.tif"}))
    scene = normalise_doc(doc, bands=["red"], options=options)
    assert scene.bands[0].valid_range == (10.0, 60000.0)
    assert scene.bands[0].mask == (str(tmp_path / "data.tif"), 2, (0,))
    chunk = ChunkGrid(0, 0, 0, 0, 4, 6, "EPSG:32632", (10.0, 0.0, 500000.0, 0.0, -10.0, 5e6))
    reader = RasterReader()
    values, _ = read_scene(scene, chunk, resampling="nearest", reader=reader)
    reader.close()
    want = (data * 1e-4).astype(np.float32)
    want[0, :2] = np.nan
    want[2, :3] = np.nan
    np.testing.assert_array_equal(values[0], want)


def test_a_mask_band_on_another_grid_is_refused(tmp_path):
    from pipeline.catalog.items.normalise import normalise_doc
    from pipeline.catalog.items.options import NormaliseOptions
    from pipeline.catalog.sensors.profiles import load_profiles
    from pipeline.catalog.stacdoc import ItemDoc
    from pipeline.errors import SceneRejected
    from pipeline.io.hrefs import HrefPolicy

    data = np.ones((4, 6), np.uint16)
    _two_band_tif(tmp_path / "data.tif", data, data)
    _two_band_tif(tmp_path / "mask.tif", data[:2, :3], data[:2, :3], res=20.0)
    folder = _profile_folder(
        tmp_path, "  red: {assets: [data], scale: 1.0e-4, mask: {asset: mask, index: 1}}\n"
    )
    options = NormaliseOptions(
        policy=HrefPolicy.for_catalog(str(tmp_path)), profiles=load_profiles(folder)
    )
    doc = ItemDoc.from_dict(
        _testsat_item(tmp_path, {"data": tmp_path / "data.tif", "mask": tmp_path / "mask.tif"})
    )
    with pytest.raises(SceneRejected) as err:
        normalise_doc(doc, bands=["red"], options=options)
    assert err.value.reason == "nodata_mask_grid" and "'mask'" in err.value.message


# The HLS v2.0 table as published (https://hls.gsfc.nasa.gov/algorithms/bandpass-adjustment/):
# band: (OLI band, MSI band, S2A slope, S2A offset, S2B slope, S2B offset)
HLS_V2_PUBLISHED = {
    "coastal": (1, "1", 0.9959, -0.0002, 0.9959, -0.0002),
    "blue": (2, "2", 0.9778, -0.004, 0.9778, -0.004),
    "green": (3, "3", 1.0053, -0.0009, 1.0075, -0.0008),
    "red": (4, "4", 0.9765, 0.0009, 0.9761, 0.001),
    "nir08": (5, "8A", 0.9983, -0.0001, 0.9966, 0.000),
    "swir16": (6, "11", 0.9987, -0.0011, 1.000, -0.0003),
    "swir22": (7, "12", 1.003, -0.0012, 0.9867, 0.0004),
}


def test_the_sentinel2_profile_carries_the_published_hls_v2_table():
    from pipeline.catalog.sensors.profiles import load_profiles

    s2 = load_profiles().get("sentinel-2-msi")
    h = s2.harmonisation_to("landsat-8-9-oli")
    assert (h.name, h.version) == ("hls-msi-to-oli", "2.0")
    for band, (_, msi, a_slope, a_off, b_slope, b_off) in HLS_V2_PUBLISHED.items():
        assert tuple(h.platforms["sentinel-2a"][band]) == (a_slope, a_off), band
        assert tuple(h.platforms["sentinel-2b"][band]) == (b_slope, b_off), band
        assert s2.bands[band].vendor_band == f"B{msi.zfill(2)}"  # the MSI band it pairs with
    assert set(h.platforms["sentinel-2a"]) == set(HLS_V2_PUBLISHED)  # B08, red edges: none
    from pipeline.demo import HLS_V2_MSI_TO_OLI  # the generator's own copy

    for platform, table in HLS_V2_MSI_TO_OLI.items():
        for band, coefficient in table.items():
            assert coefficient == tuple(h.platforms[platform]["nir08" if band == "nir" else band])
