"""Every STAC item of the shared real-data corpus either normalises correctly or is rejected with
the right reason; the corpus items that come with rasters run through ``aquila run`` into a cube
whose values equal raw counts × the published scale + offset at hand-picked pixels.

Expected values come from the publishers (SOURCES.md, the MTL/XML files, the items' own
``raster:bands``) and from arithmetic written here, never from Aquila's own output.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
import yaml

from pipeline.catalog.footprint import footprint_from_geojson, inside_fraction, raster_footprint
from pipeline.catalog.items.normalise import normalise_doc
from pipeline.catalog.items.options import NormaliseOptions
from pipeline.catalog.sensors.profiles import load_profiles
from pipeline.catalog.stacdoc import ItemDoc
from pipeline.errors import SceneRejected
from pipeline.io.hrefs import HrefPolicy
from tests.conftest import SHARED_REAL

pytestmark = pytest.mark.skipif(
    not SHARED_REAL.is_dir(), reason=f"the shared real-data corpus is not at {SHARED_REAL}"
)

BANDS = ("blue", "green", "red", "nir")
BIN = Path(sys.executable).parent
LANDSAT_DIR = "landsat/usgs-c2l2/LC08_L2SP_001062_20201031_20201106_02_T2"
S2_DIR = "sentinel2/earth-search-v1/S2A_29RKH_20200219_0_L2A"
HARVEY = "planet/hurricane-harvey-static-catalog"
H0831 = f"{HARVEY}/hurricane-harvey/hurricane-harvey-0831"
MAXAR = "maxar/eoapi-demo-WildFires-LosAngeles-Jan-2025"
S1 = "sentinel1/earth-search-v1"
L8L1 = "landsat/pystac-example-catalog/landsat-8-l1"
PC_S2 = "sentinel2/planetary-computer"
# The two items whose rasters are in the corpus under their published basenames, but whose
# asset links are the publishers' https URLs: read them from the local copies.
MIRRORS = (
    (
        "https://landsatlook.usgs.gov/data/collection02/level-2/standard/oli-tirs/2020/001/062/"
        "LC08_L2SP_001062_20201031_20201106_02_T2/",
        str(SHARED_REAL / LANDSAT_DIR),
    ),
    (
        "https://sentinel-cogs.s3.us-west-2.amazonaws.com/sentinel-s2-l2a-cogs/29/R/KH/2020/2/"
        "S2A_29RKH_20200219_0_L2A/",
        str(SHARED_REAL / S2_DIR),
    ),
)


def _sin(deg: float) -> float:
    return math.sin(math.radians(deg))


# Landsat Collection 2 Level-2 surface reflectance: DN × 2.75e-05 − 0.2 (MTL REFLECTANCE_MULT/ADD)
C2L2 = (2.75e-05, -0.2, 0.0)
# Sentinel-2: DN / 10000, minus 0.1 from processing baseline 04.00 (BOA_ADD_OFFSET = -1000)
S2_OLD = (1e-4, 0.0, 0.0)
S2_NEW = (1e-4, -0.1, 0.0)


def _l1(elev: float) -> tuple[float, float, float]:
    """Landsat Level-1 TOA reflectance: (DN × 2.0e-05 − 0.1) / sin(sun elevation)."""
    return (2.0e-05 / _sin(elev), -0.1 / _sin(elev), 0.0)


def ok(profile: str, crs: str, assets: tuple[str, ...], cal, per_band=None):
    """Normalises with this profile; blue/green/red/nir from these assets (band 1 unless per_band
    gives (asset, index, scale, offset, nodata) per band)."""
    return ("ok", profile, crs, assets, cal, per_band)


def rejected(reason: str, *words: str):
    """Rejected with this reason code; the message must name each of ``words``."""
    return ("rejected", reason, words)


# Planet 20170831_172754_101c_3B_AnalyticMS_metadata.xml, ps:reflectanceCoefficient per band
PLANET_101C = {
    1: 1.81512636125e-05,
    2: 1.92266681265e-05,
    3: 2.14155262585e-05,
    4: 3.22221688359e-05,
}

EXPECTED = {
    # ---- CBERS-4 MUX: assets only at s3:// (no https alternate)
    "cbers/pystac-test-case-5-static-catalog/CBERS4/CBERS4MUX/CBERS4-MUX-027/CBERS4-MUX-027/069/"
    "CBERS_4_MUX_20190510_027_069_L2/CBERS_4_MUX_20190510_027_069_L2.json": rejected(
        "href_not_allowed", "s3://cbers-pds", "href_mirrors"
    ),
    "cbers/stac-spec-example/CBERS_4_MUX_20181029_177_106_L4.json": rejected(
        "href_not_allowed", "s3://cbers-pds"
    ),
    # ---- Digital Earth Australia: bands named by key only (nbart_blue...), no common names
    "dea/ga_ls8c_ard_3-1-0_088080_2020-05-25_final.stac-item.json": rejected(
        "no_usable_band", "nbart_blue", "landsat-8-9-oli"
    ),
    # fractional-cover percentiles: not reflectance bands at all
    "dea/only_crs_proj.json": rejected("no_usable_band", "BS_PC_50"),
    # ---- Earth Search v1 Landsat: requester-pays s3:// only
    "landsat/earth-search-v1/LC08_L2SP_033032_20231008_02_T1.json": rejected(
        "href_not_allowed", "s3://usgs-landsat", "href_mirrors"
    ),
    # ---- Planetary Computer Landsat 9 C2 L2: raster:bands scale/offset; nir from nir08
    "landsat/planetary-computer/LC09_L2SP_084068_20250722_02_T2.json": ok(
        "landsat-8-9-oli", "EPSG:32658", ("blue", "green", "red", "nir08"), C2L2
    ),
    "landsat/planetary-computer/LC09_L2SP_084069_20250722_02_T2.json": ok(
        "landsat-8-9-oli", "EPSG:32658", ("blue", "green", "red", "nir08"), C2L2
    ),
    # ---- sat-api Landsat 8 C1 L1 (GDAL-ordered proj:transform, repaired): TOA, sun elevation
    # from each item's view:sun_elevation
    f"{L8L1}/2018-05/LC80150322018141LGN00.json": ok(
        "landsat-8-9-oli", "EPSG:32618", ("B2", "B3", "B4", "B5"), _l1(64.00406717)
    ),
    f"{L8L1}/2018-06/LC80140332018166LGN00.json": ok(
        "landsat-8-9-oli", "EPSG:32618", ("B2", "B3", "B4", "B5"), _l1(66.54485226)
    ),
    f"{L8L1}/2018-06/LC80300332018166LGN00.json": ok(
        "landsat-8-9-oli", "EPSG:32614", ("B2", "B3", "B4", "B5"), _l1(66.54407242)
    ),
    f"{L8L1}/2018-07/LC80150332018189LGN00.json": ok(
        "landsat-8-9-oli", "EPSG:32618", ("B2", "B3", "B4", "B5"), _l1(65.2014335)
    ),
    # ---- USGS STAC 0.7.0 C2 L2 (local rasters via mirror; no proj:*: grid from the file)
    f"{LANDSAT_DIR}/LC08_L2SP_001062_20201031_20201106_02_T2_SR_stac.json": ok(
        "landsat-8-9-oli", "EPSG:32620", ("SR_B2.TIF", "SR_B3.TIF", "SR_B4.TIF", "SR_B5.TIF"), C2L2
    ),
    # the surface-temperature product of the same scene: only the thermal band
    f"{LANDSAT_DIR}/LC08_L2SP_001062_20201031_20201106_02_T2_ST_stac.json": rejected(
        "missing_band", "tir11"
    ),
    "landsat/usgs-stac/LC08_L2SP_028030_20200114_20200824_02_T1_SR.json": ok(
        "landsat-8-9-oli", "EPSG:32615", ("blue", "green", "red", "nir08"), C2L2
    ),
    # Antarctic scene: relative links to reduced files that are not in the corpus
    "landsat/usgs-stac/LC08_L2SR_081119_20200101_20200823_02_T2.json": rejected(
        "asset_missing", "SR_B2_small.TIF"
    ),
    "landsat/usgs-stac/LE07_L2SP_044033_20210329_20210424_02_T1_SR.json": ok(
        "landsat-7-etm", "EPSG:32610", ("blue", "green", "red", "nir08"), C2L2
    ),
    # Landsat 1 MSS has no blue band
    "landsat/usgs-stac/LM01_L1GS_001010_19720908_20200909_02_T2_stac.json": rejected(
        "missing_band", "['blue']", "nir09"
    ),
    "landsat/usgs-stac/LT05_L2SP_010067_19860424_20200918_02_T2_SR_stac.json": ok(
        "landsat-4-5-tm", "EPSG:32617", ("blue", "green", "red", "nir08"), C2L2
    ),
    # ---- Maxar: ms_analytic readable through its public https alternate, but no data_type
    f"{MAXAR}/11_031311102221_103001010C12B000.json": rejected("unknown_dtype", "ms_analytic"),
    f"{MAXAR}/11_031311102230_103001010C12B000.json": rejected("unknown_dtype", "ms_analytic"),
    "maxar/stac-spec-example/digitalglobe-sample.json": rejected(
        "no_usable_band", "multispectral_image"
    ),
    # ---- Planet Hurricane Harvey: SkySat and mosaic items hold only 8-bit display renderings
    f"{H0831}/20170831_162740_ssc1d1/20170831_162740_ssc1d1.json": rejected(
        "no_calibration", "'visual'", "display"
    ),
    f"{H0831}/20170831_195425_SS02/20170831_195425_SS02.json": rejected(
        "no_calibration", "'visual'", "display"
    ),
    f"{H0831}/2017831_195552_SS02/2017831_195552_SS02.json": rejected(
        "no_calibration", "'visual'", "display"
    ),
    f"{H0831}/Houston-East-20170831-103f-100d-0f4f-RGB/"
    "Houston-East-20170831-103f-100d-0f4f-RGB.json": rejected(
        "no_calibration", "'mosaic'", "display"
    ),
    # PlanetScope 4-band analytic: TOA reflectance coefficients from the vendor XML
    f"{H0831}/20170831_172754_101c/20170831_172754_101c.json": ok(
        "planetscope",
        "EPSG:32615",
        ("analytic",) * 4,
        None,
        per_band=[("analytic", i, PLANET_101C[i], 0.0, 0.0) for i in (1, 2, 3, 4)],
    ),
    # PSScene visual clip: RGB + alpha display product only
    "planet/pystac-extension-examples/optional-epsg.json": rejected("no_calibration", "'visual'"),
    # raster:bands unit says radiance (W sr-1 m-2 nm-1), not reflectance
    "planet/pystac-extension-examples/raster-planet-example.json": rejected(
        "no_calibration", "radiance"
    ),
    # ---- Sentinel-1 SAR
    f"{S1}/S1A_IW_GRDH_1SSH_20250731T135608_20250731T135637_060328_077F7E.json": rejected(
        "sar_not_optical", "sentinel-1-sar"
    ),
    # ---- Earth Search v0: no raster:bands; baseline N0214 / N0212 from sentinel:product_id
    "sentinel2/earth-search-v0/S2A_28QCH_20200714_0_L2A.json": ok(
        "sentinel-2-msi", "EPSG:32628", ("B02", "B03", "B04", "B08"), S2_OLD
    ),
    "sentinel2/earth-search-v0/S2A_31NBJ_20190524_0_L2A.json": ok(
        "sentinel-2-msi", "EPSG:32631", ("B02", "B03", "B04", "B08"), S2_OLD
    ),
    # ---- Earth Search v1 sentinel-2-l2a: baseline 05.x with earthsearch:boa_offset_applied
    # true: E84 shifted these DN back, so their raster:bands offset -0.1 would apply it twice
    # (E84 maintainers: "boa_offset_applied is the truth", earth-search issues 9, 66, 71): 0.
    # Baseline 02.14: 0. The sentinel-2-c1-l2a items (T24MUA/T24MUV) carry ESA's DN: -0.1.
    "sentinel2/earth-search-v1/S2A_13TDE_20231008_0_L2A.json": ok(
        "sentinel-2-msi", "EPSG:32613", ("blue", "green", "red", "nir"), S2_OLD
    ),
    f"{S2_DIR}/S2A_29RKH_20200219_0_L2A.json": ok(
        "sentinel-2-msi", "EPSG:32629", ("blue", "green", "red", "nir"), S2_OLD
    ),
    "sentinel2/earth-search-v1/S2B_24MUA_20250731_0_L2A.json": ok(
        "sentinel-2-msi", "EPSG:32724", ("blue", "green", "red", "nir"), S2_OLD
    ),
    "sentinel2/earth-search-v1/S2B_24MUV_20250731_0_L1C.json": rejected(
        "href_not_allowed", "s3://sentinel-s2-l1c"
    ),
    "sentinel2/earth-search-v1/S2B_T24MUA_20250731T130245_L2A.json": ok(
        "sentinel-2-msi", "EPSG:32724", ("blue", "green", "red", "nir"), S2_NEW
    ),
    "sentinel2/earth-search-v1/S2B_T24MUV_20250731T130245_L2A.json": ok(
        "sentinel-2-msi", "EPSG:32724", ("blue", "green", "red", "nir"), S2_NEW
    ),
    # ---- stactools reference items: JPEG 2000 inside a SAFE or .tif, not in the corpus
    "sentinel2/esa-safe-metadata/S2A_MSIL1C_20210908T042701_N0301_R133_T46RER_20210908T070248.SAFE/"
    "expected_output.json": rejected("asset_missing", "T46RER_20210908T042701_B02.jp2"),
    "sentinel2/esa-safe-metadata/S2A_MSIL2A_20230821T221941_N0509_R029_T01KAB_20230822T021825.SAFE/"
    "expected_output.json": rejected("asset_missing", "T01KAB_20230821T221941_B02_10m.jp2"),
    "sentinel2/esa-safe-metadata/S2B_MSIL2A_20220413T150759_N0400_R025_T33XWJ_20220414T082126.SAFE/"
    "expected_output.json": rejected("asset_missing", "T33XWJ_20220413T150759_B02_10m.tif"),
    # ---- Planetary Computer S2: no raster:bands scale; baseline 02.12 → offset 0
    f"{PC_S2}/S2A_MSIL2A_20190101T000001_R116_T58UFE_20201007T214651.json": ok(
        "sentinel-2-msi", "EPSG:32658", ("B02", "B03", "B04", "B08"), S2_OLD
    ),
    f"{PC_S2}/S2A_MSIL2A_20190101T000001_R116_T58UFF_20201007T214659.json": ok(
        "sentinel-2-msi", "EPSG:32658", ("B02", "B03", "B04", "B08"), S2_OLD
    ),
    f"{PC_S2}/S2B_MSIL2A_20190629T212529_R043_T06VVN_20201006T080531_raster_ext.json": ok(
        "sentinel-2-msi", "EPSG:32606", ("B02", "B03", "B04", "B08"), S2_OLD
    ),
}


def _options(**kw) -> NormaliseOptions:
    """As a workflow with allowed_roots = [the corpus, https://] and the two mirrors."""
    base = dict(
        policy=HrefPolicy.for_catalog("x", (str(SHARED_REAL), "https://")),
        profiles=load_profiles(),
        mirrors=MIRRORS,
    )
    return NormaliseOptions(**{**base, **kw})


def _doc(rel: str) -> ItemDoc:
    path = SHARED_REAL / rel
    return ItemDoc.from_dict(json.loads(path.read_text()), self_href=str(path))


def test_the_table_covers_every_item_of_the_corpus():
    items = {
        str(p.relative_to(SHARED_REAL))
        for p in SHARED_REAL.rglob("*.json")
        if json.loads(p.read_text()).get("type") == "Feature"
    }
    assert items == set(EXPECTED), (
        f"not in the table: {sorted(items - set(EXPECTED))}; "
        f"not in the corpus: {sorted(set(EXPECTED) - items)}"
    )


@pytest.mark.parametrize("rel", sorted(EXPECTED), ids=lambda r: Path(r).stem[:48])
def test_each_item_normalises_or_is_rejected_for_the_right_reason(rel):
    expected = EXPECTED[rel]
    doc = _doc(rel)
    if expected[0] == "rejected":
        _, reason, words = expected
        with pytest.raises(SceneRejected) as err:
            normalise_doc(doc, bands=BANDS, options=_options())
        assert err.value.reason == reason, err.value.message
        assert doc.id in err.value.message  # the message names the item
        for word in words:
            assert word in err.value.message
        return
    _, profile, crs, assets, cal, per_band = expected
    scene = normalise_doc(doc, bands=BANDS, options=_options())
    assert dict(scene.extra)["profile"] == profile
    want = per_band or [(a, 1, *cal) for a in assets]
    got = [(b.asset, b.index, b.scale, b.offset, b.nodata) for b in scene.bands]
    for (ga, gi, gs, go, gn), (wa, wi, ws, wo, wn) in zip(got, want, strict=True):
        assert (ga, gi, gn) == (wa, wi, wn)
        assert gs == pytest.approx(ws, rel=1e-12) and go == pytest.approx(wo, rel=1e-12, abs=1e-15)
    assert {b.grid.crs for b in scene.bands} == {crs}
    assert scene.datetime.tzinfo is not None
    assert [b.band for b in scene.bands] == list(BANDS)


def test_default_policy_refuses_remote_assets_before_any_io():
    """Without allowed_roots a local catalog may only point into its own folder."""
    rel = "sentinel2/earth-search-v1/S2A_13TDE_20231008_0_L2A.json"
    options = NormaliseOptions(policy=HrefPolicy.for_catalog(str(SHARED_REAL / rel)))
    with pytest.raises(SceneRejected) as err:
        normalise_doc(_doc(rel), bands=BANDS, options=options)
    assert err.value.reason == "href_not_allowed" and "allowed_roots" in err.value.message


def test_gdal_ordered_transform_is_repaired_to_the_published_grid():
    """sat-api wrote proj:transform as (c, a, b, f, d, e); the origin is 258885 E, 4584315 N."""
    scene = normalise_doc(
        _doc(f"{L8L1}/2018-05/LC80150322018141LGN00.json"),
        bands=BANDS,
        options=_options(),
    )
    assert scene.bands[0].grid.transform == (30.0, 0.0, 258885.0, 0.0, -30.0, 4584315.0)
    assert "GDAL order" in dict(scene.extra)["transform"]


def test_stactools_reference_offsets_match_the_sentinel2_profile():
    """stactools-sentinel2 asserts raster:bands offset -0.1 for N0400/N0509 and 0 for N0301; the
    profile's baseline rule (used where items lack raster:bands) must say the same."""
    profile = load_profiles().get("sentinel-2-msi")
    root = "sentinel2/esa-safe-metadata"
    cases = {
        "S2A_MSIL1C_20210908T042701_N0301_R133_T46RER_20210908T070248.SAFE": 0.0,
        "S2A_MSIL2A_20230821T221941_N0509_R029_T01KAB_20230822T021825.SAFE": -0.1,
        "S2B_MSIL2A_20220413T150759_N0400_R025_T33XWJ_20220414T082126.SAFE": -0.1,
    }
    for safe, offset in cases.items():
        doc = _doc(f"{root}/{safe}/expected_output.json")
        published = doc.assets["blue"].get("raster:bands") or doc.assets["blue"]["bands"]
        assert published[0].get("offset", published[0].get("raster:offset", 0.0)) == offset
        assert profile.calibration_for(doc).offset == offset, safe
    # and the one with GeoTIFF links normalises to the published values
    scene = normalise_doc(
        _doc(
            f"{root}/S2B_MSIL2A_20220413T150759_N0400_R025_T33XWJ_20220414T082126.SAFE/"
            "expected_output.json"
        ),
        bands=BANDS,
        options=_options(check_files=False),
    )
    assert [(b.scale, b.offset, b.nodata) for b in scene.bands] == [(1e-4, -0.1, 0.0)] * 4


def test_antimeridian_footprint_is_split_not_wrapped_around_the_globe():
    doc = _doc(
        "sentinel2/esa-safe-metadata/S2A_MSIL2A_20230821T221941_N0509_R029_T01KAB_"
        "20230822T021825.SAFE/expected_output.json"
    )
    fp = footprint_from_geojson(doc.geometry)
    assert fp.geom_type == "MultiPolygon"
    west, east = sorted(fp.geoms, key=lambda g: g.bounds[0])
    assert west.bounds[0] == -180.0 and east.bounds[2] == 180.0
    assert fp.area < 1.1  # ~1 square degree, not ~360 × 1
    # the raster (UTM zone 1 south, 10 m, 10980 px) covers it, across the antimeridian
    grid = raster_footprint(
        "EPSG:32701", (10.0, 0.0, 99960.0, 0.0, -10.0, 8200000.0), (10980, 10980)
    )
    assert inside_fraction(fp, grid) > 0.99


def test_polar_scene_normalises_in_its_polar_stereographic_grid():
    doc = _doc("landsat/usgs-stac/LC08_L2SR_081119_20200101_20200823_02_T2.json")
    scene = normalise_doc(doc, bands=BANDS, options=_options(check_files=False))
    assert scene.bands[0].grid.crs == "EPSG:3031"
    assert scene.footprint.bounds[1] < -81.9  # lat -81.93 as published
    # band names come from item-level eo:bands referenced by index (STAC 1.0.0-beta.2)
    assert [b.asset for b in scene.bands] == ["SR_B2.TIF", "SR_B3.TIF", "SR_B4.TIF", "SR_B5.TIF"]


# --------------------------------------------------------------------------- catalog inspect


def aquila(*args: str, timeout: int = 240) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "aquila"), *args], capture_output=True, text=True, timeout=timeout
    )


def test_inspect_planet_catalog_prints_counts_bands_calibration_and_rejects():
    out = aquila("catalog", "inspect", str(SHARED_REAL / HARVEY / "collection.json"))
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert "items found: 5, normalised: 1, rejected: 4" in text
    assert "collection planet-disaster-data: 5 found, 1 normalise, 4 rejected" in text
    assert "blue     <- analytic[1] uint16  reflectance = DN * 1.81513e-05 + 0  nodata 0" in text
    assert "nir      <- analytic[4] uint16  reflectance = DN * 3.22222e-05 + 0" in text
    assert "vendor metadata" in text
    for item in (
        "20170831_162740_ssc1d1",
        "20170831_195425_SS02",
        "2017831_195552_SS02",
        "Houston-East-20170831-103f-100d-0f4f-RGB",
    ):
        assert f"rejected {item} [no_calibration]" in text


def test_inspect_earth_search_items_as_json():
    folders = [
        "sentinel2/earth-search-v1",
        "sentinel2/earth-search-v0",
        "landsat/earth-search-v1",
        "sentinel1/earth-search-v1",
    ]
    out = aquila(
        "catalog",
        "inspect",
        *[str(SHARED_REAL / f) for f in folders],
        "--allowed-root",
        "https://",
        "--json",
    )
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    by = {c["collection"]: c for c in report["collections"]}
    assert report["items_found"] == 10
    assert (by["sentinel-2-l2a"]["found"], by["sentinel-2-l2a"]["normalised"]) == (3, 3)
    offsets = {(b["band"], b["offset"], b["items"]) for b in by["sentinel-2-l2a"]["bands"]}
    # 05.x items whose DN E84 already shifted (earthsearch:boa_offset_applied) and one 02.14
    assert ("blue", 0.0, 3) in offsets
    c1 = {(b["band"], b["offset"]) for b in by["sentinel-2-c1-l2a"]["bands"]}
    assert ("blue", -0.1) in c1  # ESA's DN: the -0.1 applied once, by us
    assert [r["reason"] for r in by["sentinel-1-grd"]["rejects"]] == ["sar_not_optical"]
    assert [r["reason"] for r in by["sentinel-2-l1c"]["rejects"]] == ["href_not_allowed"]
    assert [r["reason"] for r in by["landsat-c2-l2"]["rejects"]] == ["href_not_allowed"]
    # T24MUA published in sentinel-2-l2a and sentinel-2-c1-l2a: one is kept, the rule is named
    (dup,) = by["sentinel-2-c1-l2a"]["duplicates"]
    assert dup["dropped"] == "S2B_T24MUA_20250731T130245_L2A"
    assert dup["kept"] == "S2B_24MUA_20250731_0_L2A" and "metadata updated" in dup["rule"]
    text = aquila(
        "catalog", "inspect", str(SHARED_REAL / folders[0]), "--allowed-root", "https://"
    ).stdout
    assert "collection sentinel-2-c1-l2a: 2 found, 2 normalise, 0 rejected" in text
    assert "reflectance = DN * 0.0001 - 0.1" in text


# --------------------------------------------------------------------------- aquila run


def _run_spec(tmp_path: Path, spec: dict) -> subprocess.CompletedProcess:
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return aquila("run", str(path), "--direct", "--no-progress")


def _cube(path: Path):
    import xarray as xr

    return xr.open_zarr(path).load()


def _centre_index(ds, x: float, y: float) -> tuple[int, int] | None:
    """(row, col) of the source pixel holding (x, y), or None within 5 % of a pixel edge."""
    col_f, row_f = ~ds.transform @ (x, y)
    if min(col_f % 1, 1 - col_f % 1, row_f % 1, 1 - row_f % 1) < 0.05:
        return None
    row, col = int(math.floor(row_f)), int(math.floor(col_f))
    if 0 <= row < ds.height and 0 <= col < ds.width:
        return row, col
    return None


def test_planet_harvey_catalog_runs_into_a_cube_with_vendor_reflectance(tmp_path):
    spec = {
        "version": 1,
        "name": "harvey",
        "catalog": str(SHARED_REAL / HARVEY / "collection.json"),
        "bands": list(BANDS),
        "grid": {"crs": "EPSG:32615", "resolution": 100.0, "chunk": 256},
        "products": {"cube": {"store": str(tmp_path / "cube.zarr")}},
    }
    out = _run_spec(tmp_path, spec)
    assert out.returncode == 0, out.stdout + out.stderr
    cube = _cube(tmp_path / "cube.zarr")
    assert cube.attrs["aquila:scenes"] == ["20170831_172754_101c"]
    folder = SHARED_REAL / HARVEY / "hurricane-harvey/hurricane-harvey-0831/20170831_172754_101c"
    with (
        rasterio.open(folder / "20170831_172754_101c_3B_AnalyticMS.tif") as ds,
        rasterio.open(folder / "20170831_172754_101c_3B_AnalyticMS_DN_udm.tif") as udm,
    ):
        dn, mask = ds.read(), udm.read(1)
        checked = 0
        rng = np.random.default_rng(7)
        for iy, ix in zip(
            rng.integers(0, cube.sizes["y"], 400),
            rng.integers(0, cube.sizes["x"], 400),
            strict=True,
        ):
            rc = _centre_index(ds, float(cube.x[ix]), float(cube.y[iy]))
            if rc is None or mask[rc] != 0 or dn[0][rc] == 0:
                continue
            for b, band in enumerate(BANDS, start=1):
                expected = dn[b - 1][rc] * PLANET_101C[b]  # DN × reflectanceCoefficient
                assert float(cube[band].values[0, iy, ix]) == pytest.approx(expected, rel=1e-6)
            checked += 1
            if checked == 8:
                break
    assert checked == 8


def _landsat_spec(tmp_path: Path, *, quality_mask: bool) -> dict:
    prefix, local = MIRRORS[0]
    return {
        "version": 1,
        "name": "landsat",
        "catalog": str(
            SHARED_REAL / LANDSAT_DIR / "LC08_L2SP_001062_20201031_20201106_02_T2_SR_stac.json"
        ),
        "bands": [*BANDS, "swir22"],
        # 300 m output pixels over the file's 600.08 × 600.85 m ones: output centres fall about a
        # quarter of a source pixel from its edges, so nearest-neighbour picks are unambiguous
        "grid": {
            "crs": "EPSG:32620",
            "resolution": 300.0,
            "chunk": 512,
            "bounds": [143400.0, -436500.0, 371400.0, -204000.0],
        },
        "products": {"cube": {"store": str(tmp_path / "cube.zarr")}},
        "href_mirrors": {prefix: local},
        "quality_mask": quality_mask,
    }


def test_landsat_c2l2_item_runs_into_a_cube_with_published_scale_and_offset(tmp_path):
    out = _run_spec(tmp_path, _landsat_spec(tmp_path, quality_mask=False))
    assert out.returncode == 0, out.stdout + out.stderr
    cube = _cube(tmp_path / "cube.zarr")
    raw = SHARED_REAL / LANDSAT_DIR / "LC08_L2SP_001062_20201031_20201106_02_T2_"
    files = {"blue": "SR_B2", "green": "SR_B3", "red": "SR_B4", "nir": "SR_B5", "swir22": "SR_B7"}
    with rasterio.open(f"{raw}SR_B7.TIF") as ds:
        # rio-tiler-pds' published point: pixel (192, 188) holds SR_B7 = 17293;
        # reflectance 17293 × 2.75e-05 − 0.2 = 0.2755575
        x, y = ds.xy(192, 188)
        value = cube["swir22"].sel(x=x, y=y, method="nearest").values[0]
        assert float(value) == pytest.approx(17293 * 2.75e-05 - 0.2, abs=1e-6)
        assert pytest.approx(0.2755575) == 17293 * 2.75e-05 - 0.2
        rng = np.random.default_rng(3)
        checked = 0
        for iy, ix in zip(
            rng.integers(0, cube.sizes["y"], 300),
            rng.integers(0, cube.sizes["x"], 300),
            strict=True,
        ):
            rc = _centre_index(ds, float(cube.x[ix]), float(cube.y[iy]))
            if rc is None:
                continue
            for band, name in files.items():
                with rasterio.open(f"{raw}{name}.TIF") as src:
                    dn = int(src.read(1, window=((rc[0], rc[0] + 1), (rc[1], rc[1] + 1)))[0, 0])
                got = float(cube[band].values[0, iy, ix])
                if dn == 0:  # the file's nodata: never a zero reflectance
                    assert math.isnan(got)
                else:
                    assert got == pytest.approx(dn * 2.75e-05 - 0.2, abs=1e-6)
            checked += 1
            if checked == 6:
                break
    assert checked == 6


def test_landsat_qa_masks_every_pixel_of_this_fully_cloudy_scene(tmp_path):
    """QA_PIXEL flags fill or cloud (bits 0-4) on every pixel of this 99.94 %-cloud scene."""
    with rasterio.open(
        SHARED_REAL / LANDSAT_DIR / "LC08_L2SP_001062_20201031_20201106_02_T2_QA_PIXEL.TIF"
    ) as qa:
        assert ((qa.read(1) & 0b11111) != 0).all()
    out = _run_spec(tmp_path, _landsat_spec(tmp_path, quality_mask=True))
    assert out.returncode == 0, out.stdout + out.stderr
    cube = _cube(tmp_path / "cube.zarr")
    assert all(np.isnan(cube[b].values).all() for b in BANDS)


def test_sentinel2_l2a_item_runs_with_baseline_02_14_scale(tmp_path):
    prefix, local = MIRRORS[1]
    spec = {
        "version": 1,
        "name": "s2",
        "catalog": str(SHARED_REAL / S2_DIR / "S2A_29RKH_20200219_0_L2A.json"),
        "bands": list(BANDS),
        "grid": {"crs": "EPSG:32629", "resolution": 1000.0, "chunk": 256},
        "products": {"cube": {"store": str(tmp_path / "cube.zarr")}},
        "href_mirrors": {prefix: local},
    }
    out = _run_spec(tmp_path, spec)
    assert out.returncode == 0, out.stdout + out.stderr
    cube = _cube(tmp_path / "cube.zarr")
    folder = SHARED_REAL / S2_DIR
    with rasterio.open(folder / "B04.tif") as ds, rasterio.open(folder / "SCL.tif") as scl:
        red, classes = ds.read(1), scl.read(1)
        rng = np.random.default_rng(5)
        checked = 0
        for iy, ix in zip(
            rng.integers(0, cube.sizes["y"], 300),
            rng.integers(0, cube.sizes["x"], 300),
            strict=True,
        ):
            x, y = float(cube.x[ix]), float(cube.y[iy])
            rc, qc = _centre_index(ds, x, y), _centre_index(scl, x, y)
            if rc is None or qc is None or classes[qc] in (0, 1, 3, 8, 9, 10) or red[rc] == 0:
                continue
            # baseline 02.14: reflectance = DN / 10000, no offset (raster:bands offset 0)
            assert float(cube["red"].values[0, iy, ix]) == pytest.approx(red[rc] * 1e-4, rel=1e-6)
            checked += 1
            if checked == 6:
                break
    assert checked == 6
