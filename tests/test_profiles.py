"""Sensor profiles: every bundled file validates, bad files are refused with the file and field
named, profiles are picked by constellation/platform (or forced), and their rules give the
published constants."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.catalog.footprint import footprint_from_geojson
from pipeline.catalog.items.normalise import normalise_item
from pipeline.catalog.sensors.profiles import (
    DEFAULT_PROFILE_DIR,
    ProfileError,
    load_profile,
    load_profiles,
    version_tuple,
)
from pipeline.catalog.sensors.vendor import VendorMetadataError, planet_reflectance_coefficients
from pipeline.catalog.stacdoc import ItemDoc
from pipeline.errors import SceneRejected
from pipeline.io.hrefs import HrefPolicy
from tests.conftest import SHARED_REAL

REQUIRED = {
    "generic",
    "sentinel-2-msi",
    "landsat-8-9-oli",
    "landsat-7-etm",
    "planetscope",
    "skysat",
    "cbers-4",
}


def _doc(**props) -> ItemDoc:
    return ItemDoc.from_dict(
        {
            "type": "Feature",
            "id": props.pop("id", "x"),
            "collection": props.pop("collection", None),
            "properties": props,
            "assets": {},
            "geometry": None,
        }
    )


def test_every_bundled_profile_loads_and_the_required_ones_exist():
    names = set(load_profiles().names())
    assert names >= REQUIRED
    assert len(list(DEFAULT_PROFILE_DIR.glob("*.yaml"))) == len(names)


@pytest.mark.parametrize(
    ("text", "words"),
    [
        (
            "name: bad\ndescription: x\nmatch: {any: true}\ncolour: red\n",
            ["colour", "Extra inputs"],
        ),
        ("name: bad\ndescription: x\nmatch: {platform_pattern: '('}\n", ["platform_pattern"]),
        ("name: other\ndescription: x\nmatch: {any: true}\n", ["must equal the file name"]),
        (
            "name: bad\ndescription: x\nmatch: {any: true}\n"
            "calibration: {rules: [{when: {fact: nope, missing: true}, offset: 1}]}\n",
            ["fact 'nope'"],
        ),
        (
            "name: bad\ndescription: x\nmatch: {any: true}\n"
            "bands: {blue: {assets: [], index: 1}}\n",
            ["bands.blue.assets"],
        ),
        (
            "name: bad\ndescription: x\nmatch: {any: true}\nquality: [{assets: [qa]}]\n",
            ["classes", "bitfields"],
        ),
        (
            "name: bad\ndescription: x\nmatch: {any: true}\n"
            "quality: [{assets: [qa], classes: {haze: [3]}}]\n",
            ["quality.0.classes", "haze"],
        ),
        (
            "name: bad\ndescription: x\nmatch: {any: true}\n"
            "quality: [{assets: [qa], bitfields: [{offset: 3}]}]\n",
            ["class"],
        ),
        (
            "name: bad\ndescription: x\nmatch: {any: true}\n"
            "calibration: {esun: {default: {red: 1500}}}\n",
            ["esun_source"],
        ),
        (
            "name: bad\ndescription: x\nmatch: {any: true}\n"
            "harmonisation: [{name: x, version: '1', to: y, source: z, platforms: {}}]\n",
            ["harmonisation.0.platforms"],
        ),
        ("- just\n- a list\n", ["expected a mapping"]),
        (
            "name: bad\ndescription: x\nmatch: !!python/object:os.system {}\n",
            ["cannot read it as YAML"],
        ),
    ],
)
def test_invalid_profiles_are_refused_naming_file_and_field(tmp_path, text, words):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ProfileError) as err:
        load_profile(path)
    assert str(path) in err.value.message
    for word in words:
        assert word in err.value.message


def test_a_folder_without_a_generic_profile_is_refused(tmp_path):
    (tmp_path / "only.yaml").write_text("name: only\ndescription: x\nmatch: {any: true}\n")
    with pytest.raises(ProfileError, match="no 'generic' profile"):
        load_profiles(tmp_path)


@pytest.mark.parametrize(
    ("props", "name"),
    [
        ({"constellation": "sentinel-2", "platform": "sentinel-2b"}, "sentinel-2-msi"),
        ({"constellation": "Sentinel 2", "platform": "Sentinel-2A"}, "sentinel-2-msi"),  # PC
        ({"platform": "LANDSAT_8"}, "landsat-8-9-oli"),  # USGS spelling
        ({"platform": "landsat-9"}, "landsat-8-9-oli"),
        ({"platform": "LANDSAT_7"}, "landsat-7-etm"),
        ({"platform": "landsat-5"}, "landsat-4-5-tm"),
        ({"platform": "101c", "constellation": "planetscope"}, "planetscope"),
        ({"platform": "SS02"}, "skysat"),  # no constellation: by platform pattern
        ({"platform": "SSC1", "constellation": "skysat"}, "skysat"),
        ({"platform": "CBERS-4"}, "cbers-4"),
        ({"collection": "CBERS_4_MUX"}, "cbers-4"),
        ({"constellation": "sentinel-1", "platform": "sentinel-1a"}, "sentinel-1-sar"),
        ({"platform": "WV02"}, "generic"),
        ({}, "generic"),
    ],
)
def test_profile_is_picked_by_constellation_platform_or_collection(props, name):
    assert load_profiles().select(_doc(**props)).name == name


def test_a_forced_profile_wins_and_an_unknown_one_lists_the_choices():
    profiles = load_profiles()
    assert profiles.select(_doc(platform="landsat-8"), forced="generic").name == "generic"
    with pytest.raises(ProfileError) as err:
        profiles.select(_doc(), forced="sentinel-3")
    assert "sentinel-2-msi" in err.value.message and "generic" in err.value.message


@pytest.mark.parametrize(
    ("props", "offset"),
    [
        ({"s2:processing_baseline": "02.14"}, 0.0),
        ({"s2:processing_baseline": "04.00"}, -0.1),  # BOA_ADD_OFFSET -1000 from 04.00
        ({"s2:processing_baseline": "05.11"}, -0.1),
        (
            {"s2:product_uri": "S2B_MSIL2A_20220413T150759_N0400_R025_T33XWJ_20220414T082126.SAFE"},
            -0.1,
        ),
        (
            {"sentinel:product_id": "S2A_MSIL2A_20190524T101031_N0212_R022_T31NBJ_20190524T130304"},
            0.0,
        ),
        ({"id": "S2A_MSIL2A_20230821T221941_N0509_R029_T01KAB_20230822T021825"}, -0.1),
    ],
)
def test_sentinel2_offset_follows_the_processing_baseline(props, offset):
    cal = load_profiles().get("sentinel-2-msi").calibration_for(_doc(**props))
    assert (cal.scale, cal.offset, cal.nodata, cal.reject) == (1e-4, offset, 0.0, None)


def test_sentinel2_without_any_baseline_is_refused_not_guessed():
    cal = load_profiles().get("sentinel-2-msi").calibration_for(_doc(platform="sentinel-2a"))
    assert cal.reject and "processing baseline" in cal.reject


@pytest.mark.parametrize(
    ("props", "scale", "offset", "sun"),
    [
        ({"landsat:correction": "L2SP"}, 2.75e-05, -0.2, False),
        ({"id": "LC08_L2SP_001062_20201031_20201106_02_T2"}, 2.75e-05, -0.2, False),
        ({"id": "LC08_L1TP_016037_20170813_20170814_01_RT"}, 2.0e-05, -0.1, True),
        ({"id": "LC80150322018141LGN00", "collection": "landsat-8-l1"}, 2.0e-05, -0.1, True),
        ({"id": "x", "collection": "landsat-c2l2-sr"}, 2.75e-05, -0.2, False),
    ],
)
def test_landsat_level_decides_reflectance_constants(props, scale, offset, sun):
    cal = load_profiles().get("landsat-8-9-oli").calibration_for(_doc(**props))
    assert (cal.scale, cal.offset, cal.sun_elevation_correction) == (scale, offset, sun)


def test_landsat_level1_toa_divides_by_the_sine_of_the_sun_elevation(tmp_path):
    """(DN × 2.0e-05 − 0.1) / sin(62.17310472°) for the C1 L1TP scene 016037 of the corpus."""
    tif = tmp_path / "LC08_L1TP_016037_20170813_20170814_01_RT_B4.TIF"
    tif.write_bytes(b"")
    item = {
        "type": "Feature",
        "stac_version": "1.0.0",
        "id": "LC08_L1TP_016037_20170813_20170814_01_RT",
        "properties": {
            "datetime": "2017-08-13T15:50:00Z",
            "platform": "landsat-8",
            "view:sun_elevation": 62.17310472,
            "proj:epsg": 32617,
        },
        "geometry": {
            "type": "Polygon",
            "coordinates": [[[-80, 32], [-79, 32], [-79, 33], [-80, 33], [-80, 32]]],
        },
        "assets": {
            "B4": {
                "href": str(tif),
                "type": "image/tiff",
                "eo:bands": [{"common_name": "red"}],
                "proj:shape": [1000, 1000],
                "proj:transform": [150.0, 0, 560000.0, 0, -150.0, 3650000.0],
            }
        },
    }
    scene = normalise_item(item, bands=["red"], policy=HrefPolicy.for_catalog(str(tmp_path)))
    sine = math.sin(math.radians(62.17310472))
    assert scene.bands[0].scale == pytest.approx(2.0e-05 / sine, rel=1e-12)
    assert scene.bands[0].offset == pytest.approx(-0.1 / sine, rel=1e-12)
    assert "/ sin(sun elevation 62.1731°" in dict(scene.extra)["calibration"]


def test_item_raster_bands_win_over_the_profile_and_gaps_are_filled(tmp_path):
    """raster:bands scale without offset on a baseline-05 item: the -0.1 offset still applies."""
    tif = tmp_path / "B04.tif"
    tif.write_bytes(b"")
    item = {
        "type": "Feature",
        "stac_version": "1.0.0",
        "id": "S2B_T",
        "properties": {
            "datetime": "2025-01-01T10:00:00Z",
            "constellation": "sentinel-2",
            "s2:processing_baseline": "05.10",
            "proj:epsg": 32632,
        },
        "geometry": {
            "type": "Polygon",
            "coordinates": [[[9, 45], [9.1, 45], [9.1, 45.1], [9, 45.1], [9, 45]]],
        },
        "assets": {
            "red": {
                "href": str(tif),
                "type": "image/tiff",
                "eo:bands": [{"common_name": "red"}],
                "raster:bands": [{"scale": 0.0001, "data_type": "uint16"}],
                "proj:shape": [2000, 2000],
                "proj:transform": [10, 0, 495000, 0, -10, 5000000],
            }
        },
    }
    scene = normalise_item(item, bands=["red"], policy=HrefPolicy.for_catalog(str(tmp_path)))
    assert (scene.bands[0].scale, scene.bands[0].offset, scene.bands[0].nodata) == (1e-4, -0.1, 0.0)
    item["assets"]["red"]["raster:bands"][0]["offset"] = 0.0  # stated by the item: kept
    scene = normalise_item(item, bands=["red"], policy=HrefPolicy.for_catalog(str(tmp_path)))
    assert scene.bands[0].offset == 0.0


def test_generic_profile_refuses_integer_counts_without_scale(tmp_path):
    tif = tmp_path / "b.tif"
    tif.write_bytes(b"")
    item = {
        "type": "Feature",
        "stac_version": "1.0.0",
        "id": "anon",
        "properties": {"datetime": "2025-01-01T10:00:00Z", "proj:epsg": 32632},
        "geometry": {
            "type": "Polygon",
            "coordinates": [[[9, 45], [9.1, 45], [9.1, 45.1], [9, 45.1], [9, 45]]],
        },
        "assets": {
            "b": {
                "href": str(tif),
                "type": "image/tiff",
                "eo:bands": [{"common_name": "red"}],
                "raster:bands": [{"data_type": "uint16"}],
                "proj:shape": [2000, 2000],
                "proj:transform": [10, 0, 495000, 0, -10, 5000000],
            }
        },
    }
    with pytest.raises(SceneRejected) as err:
        normalise_item(item, bands=["red"], policy=HrefPolicy.for_catalog(str(tmp_path)))
    assert err.value.reason == "no_calibration" and "'generic'" in err.value.message
    item["assets"]["b"]["raster:bands"][0]["data_type"] = "float32"  # physical values: accepted
    scene = normalise_item(item, bands=["red"], policy=HrefPolicy.for_catalog(str(tmp_path)))
    assert (scene.bands[0].scale, scene.bands[0].offset) == (1.0, 0.0)


def test_quality_assets_from_profiles_are_resampled_nearest():
    for name in ("sentinel-2-msi", "landsat-8-9-oli", "planetscope"):
        profile = load_profiles().get(name)
        assert profile.quality and profile.data_resampling is None
    s2 = load_profiles().get("sentinel-2-msi").quality[0]
    assert s2.masked_values == (0, 1, 3, 8, 9, 10)
    landsat = load_profiles().get("landsat-8-9-oli").quality[0]
    assert {(o, n) for o, n, _ in landsat.bitfields} == {(0, 1), (1, 1), (2, 1), (3, 1), (4, 1)}


@pytest.mark.skipif(not SHARED_REAL.is_dir(), reason=f"no shared corpus at {SHARED_REAL}")
def test_planet_vendor_xml_gives_the_published_reflectance_coefficients():
    xml = (
        SHARED_REAL / "planet/hurricane-harvey-static-catalog/hurricane-harvey/"
        "hurricane-harvey-0831/20170831_172754_101c/20170831_172754_101c_3B_AnalyticMS_metadata.xml"
    )
    assert planet_reflectance_coefficients(str(xml)) == {
        1: 1.81512636125e-05,
        2: 1.92266681265e-05,
        3: 2.14155262585e-05,
        4: 3.22221688359e-05,
    }


def test_vendor_xml_with_entities_or_remote_is_refused(tmp_path):
    bomb = tmp_path / "m.xml"
    bomb.write_text('<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa">]><x>&a;</x>')
    with pytest.raises(VendorMetadataError, match="DTD"):
        planet_reflectance_coefficients(str(bomb))
    with pytest.raises(VendorMetadataError, match="remote"):
        planet_reflectance_coefficients("https://example.com/m.xml")


@given(
    st.tuples(st.integers(0, 99), st.integers(0, 99)),
    st.tuples(st.integers(0, 99), st.integers(0, 99)),
)
def test_baseline_versions_compare_as_numbers(a, b):
    ta, tb = f"{a[0]:02d}.{a[1]:02d}", f"N{b[0]:02d}{b[1]:02d}"
    assert (version_tuple(ta) < version_tuple(f"{b[0]:02d}.{b[1]:02d}")) == (a < b)
    assert version_tuple(tb) == (b[0] * 100 + b[1],)  # a raw 'N0400' is one number: use patterns


@given(st.floats(-179.0, 179.0), st.floats(-70.0, 70.0), st.floats(0.1, 3.0), st.floats(0.1, 3.0))
def test_footprints_crossing_the_antimeridian_keep_their_area(lon, lat, width, height):
    """A box written with longitudes wrapped to -180..180 has the same area after normalising,
    wherever it sits (crossing the antimeridian or not)."""

    def wrap(x: float) -> float:
        return (x + 180.0) % 360.0 - 180.0

    ring = [
        [wrap(lon), lat],
        [wrap(lon + width), lat],
        [wrap(lon + width), lat + height],
        [wrap(lon), lat + height],
        [wrap(lon), lat],
    ]
    fp = footprint_from_geojson({"type": "Polygon", "coordinates": [ring]})
    assert fp.area == pytest.approx(width * height, rel=1e-6)
    assert fp.bounds[0] >= -180.0 and fp.bounds[2] <= 180.0


def test_profile_readme_documents_the_schema():
    readme = (Path(DEFAULT_PROFILE_DIR) / "README.md").read_text()
    for key in (
        "match",
        "bands",
        "display_assets",
        "facts",
        "calibration",
        "quality",
        "resampling",
    ):
        assert f"`{key}`" in readme
