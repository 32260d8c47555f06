"""``aquila catalog inspect`` tells the truth about catalogs of providers Aquila has not met:
each band's own calibration note, pixel sizes in the CRS's unit, why an item holds nothing
readable, NDJSON whatever the file is called, and quality assets described by the STAC
classification extension used as masks (and named by inspect).

Expectations are written by hand: the notes a vendor file gives per band, the formats an item
holds, the pixels a generated QA GeoTIFF with known bits must mask.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from pyproj import Transformer
from rasterio.transform import Affine

from pipeline.catalog.inspect import format_inspection, format_json, inspect_sources
from pipeline.catalog.items.normalise import normalise_doc
from pipeline.catalog.items.options import NormaliseOptions
from pipeline.catalog.query import SearchQuery
from pipeline.catalog.scene import Reject
from pipeline.catalog.source import iter_docs
from pipeline.catalog.stacdoc import ItemDoc
from pipeline.errors import SceneRejected
from pipeline.io.hrefs import HrefPolicy
from pipeline.plan.calibration import Masking, quality_luts

REAL = Path(__file__).parents[1].parent / "shared" / "data" / "real"
HARVEY_101C = (
    "planet/hurricane-harvey-static-catalog/hurricane-harvey/hurricane-harvey-0831/"
    "20170831_172754_101c/20170831_172754_101c.json"
)
PC_LANDSAT = "landsat/planetary-computer/LC09_L2SP_084068_20250722_02_T2.json"
T46RER = (
    "sentinel2/esa-safe-metadata/S2A_MSIL1C_20210908T042701_N0301_R133_T46RER_20210908T070248."
    "SAFE/expected_output.json"
)
BANDS = ("blue", "green", "red", "nir")
REMOTE = "https://example.test/data/"
READS = ("Aquila reads Cloud-Optimised GeoTIFF, GeoTIFF or JPEG 2000 (.jp2; read with GDAL's "
         "GTiff and JP2OpenJPEG drivers)")


def _real(rel: str) -> Path:
    path = REAL / rel
    if not path.is_file():
        pytest.skip(f"the shared real-data corpus is not at {REAL} (needs {rel})")
    return path


def _footprint(crs: str, x0: float, y0: float, x1: float, y1: float) -> dict:
    to_lonlat = Transformer.from_crs(crs, "EPSG:4326", always_xy=True)
    ring = [to_lonlat.transform(x, y) for x, y in ((x0, y0), (x1, y0), (x1, y1), (x0, y1))]
    return {"type": "Polygon", "coordinates": [[list(p) for p in [*ring, ring[0]]]]}


def _item(item_id: str, assets: dict, *, crs: str = "EPSG:32632", size: float = 10.0) -> dict:
    """A STAC 1.1 item on a 4 × 4 grid of ``size`` units per pixel."""
    x0, y1 = (500000.0, 5000000.0) if crs != "EPSG:4326" else (10.0, 50.0)
    return {
        "type": "Feature",
        "stac_version": "1.1.0",
        "id": item_id,
        "collection": "newcomer",
        "geometry": _footprint(crs, x0, y1 - 4 * size, x0 + 4 * size, y1),
        "properties": {
            "datetime": "2024-06-01T10:00:00Z",
            "platform": "newsat-1",
            "proj:code": crs,
            "proj:shape": [4, 4],
            "proj:transform": [size, 0.0, x0, 0.0, -size, y1],
        },
        "assets": assets,
        "links": [],
    }


def _band_assets(media: str = "image/tiff; application=geotiff", suffix: str = ".tif") -> dict:
    return {
        name: {
            "href": f"{REMOTE}{name}{suffix}",
            "type": media,
            "roles": ["data"],
            "bands": [
                {
                    "name": name,
                    "eo:common_name": name,
                    "data_type": "uint16",
                    "raster:scale": 0.0001,
                }
            ],
        }
        for name in BANDS
    }


def _options(*roots: str) -> NormaliseOptions:
    return NormaliseOptions(policy=HrefPolicy.for_catalog("x", (REMOTE, *roots)))


def _write(path: Path, doc: dict) -> str:
    path.write_text(json.dumps(doc))
    return str(path)


# --------------------------------------------------------------------------- 1: calibration


def test_each_band_carries_its_own_vendor_calibration_note():
    """Planet's analytic XML gives one reflectanceCoefficient per band: four notes, not band 1's
    note four times."""
    report = inspect_sources([str(_real(HARVEY_101C))])
    (c,) = report.collections
    notes = {b.band: b.calibration for b in c.bands}
    assert notes == {
        "blue": "vendor metadata (planet-analytic-xml) band 1 reflectanceCoefficient",
        "green": "vendor metadata (planet-analytic-xml) band 2 reflectanceCoefficient",
        "red": "vendor metadata (planet-analytic-xml) band 3 reflectanceCoefficient",
        "nir": "vendor metadata (planet-analytic-xml) band 4 reflectanceCoefficient",
    }
    text = format_inspection(report)
    assert "(vendor metadata (planet-analytic-xml) band 4 reflectanceCoefficient; 1 item)" in text


# --------------------------------------------------------------------------- 2: grid units


def test_pixel_sizes_are_printed_in_the_unit_of_their_crs(tmp_path):
    folder = tmp_path / "items"
    folder.mkdir()
    _write(folder / "geo.json", _item("geo", _band_assets(), crs="EPSG:4326", size=0.0001))
    _write(folder / "utm.json", _item("utm", _band_assets(), crs="EPSG:32632", size=10.0))
    report = inspect_sources([str(folder)], allowed_roots=[REMOTE])
    text = format_inspection(report)
    assert "  grid     EPSG:4326, 0.0001° pixels (1 item)" in text
    assert "  grid     EPSG:32632, 10 m pixels (1 item)" in text
    assert "0.0001 m" not in text
    (collection,) = json.loads(format_json(report))["collections"]
    grids = {(g["crs"], g["pixel"]) for g in collection["grids"]}
    assert grids == {("EPSG:4326", "0.0001°"), ("EPSG:32632", "10 m")}


# --------------------------------------------------------------------------- 3: formats


def test_an_item_of_jpeg2000_only_is_read_with_the_jp2_driver():
    """JPEG 2000 assets (Sentinel-2 in the Copernicus archive) are read (docs/object-storage.md):
    the bands come from the .jp2 files; previews and metadata are not bands."""
    assets = _band_assets(media="image/jp2", suffix=".jp2")
    assets["thumbnail"] = {"href": f"{REMOTE}t.png", "type": "image/png", "roles": ["thumbnail"]}
    item = _item("jp2-only", assets)
    scene = normalise_doc(ItemDoc.from_dict(item), bands=BANDS, options=_options())
    assert sorted(b.band for b in scene.bands) == sorted(BANDS)
    assert all(b.href.endswith(".jp2") for b in scene.bands)


def test_bands_only_in_netcdf_are_rejected_as_unreadable_not_missing():
    item = _item(
        "nc",
        {
            "data": {
                "href": f"{REMOTE}granule.nc",
                "type": "application/x-netcdf",
                "roles": ["data"],
                "eo:bands": [{"name": n, "common_name": n} for n in BANDS],
            },
            "preview": {
                "href": f"{REMOTE}granule.tif",
                "type": "image/tiff",
                "roles": ["overview"],
            },
        },
    )
    with pytest.raises(SceneRejected) as err:
        normalise_doc(ItemDoc.from_dict(item), bands=BANDS, options=_options())
    assert err.value.reason == "no_readable_raster"
    assert (
        "band(s) ['blue', 'green', 'nir', 'red'] are only in asset(s) of a format Aquila does "
        "not read (NetCDF (application/x-netcdf): data)"
    ) in err.value.message
    assert READS in err.value.message


def test_an_item_of_hdf_and_zarr_names_both_formats():
    item = _item(
        "hdf",
        {
            "granule": {"href": f"{REMOTE}MOD09GA.hdf", "roles": ["data"]},
            "cube": {
                "href": f"{REMOTE}cube.zarr",
                "type": "application/vnd+zarr",
                "roles": ["data"],
            },
            "browse": {"href": f"{REMOTE}browse.jpg", "roles": ["thumbnail"]},
        },
    )
    with pytest.raises(SceneRejected) as err:
        normalise_doc(ItemDoc.from_dict(item), bands=BANDS, options=_options())
    assert err.value.reason == "no_readable_raster"
    assert (
        "has no raster asset Aquila can read; its assets are HDF (.hdf): granule; "
        "Zarr (application/vnd+zarr): cube; JPEG preview (.jpg): browse"
    ) in err.value.message


def test_real_jpeg2000_safe_item_is_read_as_jp2_and_its_missing_files_named():
    """JPEG 2000 is read now; the corpus keeps the SAFE's metadata, not its .jp2 files, so the
    reject names the missing file."""
    path = _real(T46RER)
    doc = ItemDoc.from_dict(json.loads(path.read_text()), self_href=str(path))
    options = NormaliseOptions(policy=HrefPolicy.for_catalog("x", (str(REAL),)))
    with pytest.raises(SceneRejected) as err:
        normalise_doc(doc, bands=BANDS, options=options)
    assert err.value.reason == "asset_missing"
    assert ".jp2" in err.value.message


# --------------------------------------------------------------------------- 4: NDJSON


@pytest.mark.parametrize("name", ["items.json", "items"])
def test_ndjson_is_recognised_by_content_whatever_the_name(tmp_path, name):
    lines = [json.dumps(_item(f"n{i}", _band_assets())) for i in range(3)]
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n")
    entries = list(iter_docs(str(path), SearchQuery()))
    assert [e.id for e in entries if isinstance(e, ItemDoc)] == ["n0", "n1", "n2"]
    assert not [e for e in entries if isinstance(e, Reject)]
    # in a folder too, and a pretty-printed JSON item beside it still reads as one document
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "many.json").write_text(path.read_text())
    (folder / "one.json").write_text(json.dumps(_item("single", _band_assets()), indent=2))
    ids = [e.id for e in iter_docs(str(folder), SearchQuery()) if isinstance(e, ItemDoc)]
    assert ids == ["n0", "n1", "n2", "single"]


def test_a_bad_line_of_ndjson_named_json_is_a_reject_the_rest_are_read(tmp_path):
    path = tmp_path / "items.json"
    path.write_text(
        json.dumps(_item("a", _band_assets()))
        + "\n{not json\n"
        + json.dumps(_item("b", _band_assets()))
        + "\n"
    )
    entries = list(iter_docs(str(path), SearchQuery()))
    assert [e.id for e in entries if isinstance(e, ItemDoc)] == ["a", "b"]
    (bad,) = [e for e in entries if isinstance(e, Reject)]
    assert bad.reason == "item_unreadable" and "line 2" in bad.message


# --------------------------------------------------------------------------- 5: QA bitfields

# a new provider's 16-bit QA raster, its bits described only by the classification extension,
# spelled its own way: bit 0 Fill, 1 Clear, 2 Cloud, 3 Cloud Shadow, 4 Snow/Ice, 5 Water,
# 6 Cirrus, 7-8 cloud confidence (a level, never a mask)
BITFIELDS = [
    {"name": "Fill", "offset": 0, "length": 1},
    {"name": "Clear", "offset": 1, "length": 1},
    {"name": "b2", "description": "Cloud", "offset": 2, "length": 1},
    {
        "name": "Cloud Shadow",
        "offset": 3,
        "length": 1,
        "classes": [{"value": 0, "name": "no"}, {"value": 1, "name": "yes"}],
    },
    {"name": "Snow/Ice", "offset": 4, "length": 1},
    {"name": "water-mask", "offset": 5, "length": 1},
    {"name": "CIRRUS", "offset": 6, "length": 1},
    {"name": "Cloud confidence", "offset": 7, "length": 2},
]
QA = np.array(
    [
        [0b1, 0b10, 0b100, 0b1000],  # fill, clear, cloud, shadow
        [0b10000, 0b100000, 0b1000000, 0b110000000],  # snow, water, cirrus, confidence 3
        [0b10000010, 0b100010, 0b1010, 0],  # clear + conf 1, clear + water, clear + shadow
        [0b110, 0b10010, 0b1100000, 0b111111111],  # cloud, snow, water + cirrus, everything
    ],
    dtype=np.uint16,
)
# written by hand from the bits above
DEFAULT_MASKED = np.array(  # nodata, saturated, cloud, shadow, cirrus
    [[1, 0, 1, 1], [0, 0, 1, 0], [0, 0, 1, 0], [1, 0, 1, 1]], dtype=bool
)
SNOW_OR_WATER = np.array([[0, 0, 0, 0], [1, 1, 0, 0], [0, 1, 0, 0], [0, 1, 1, 1]], dtype=bool)


def _qa_item(tmp_path: Path, where: str, roles: list[str]) -> dict:
    qa_path = tmp_path / "qa.tif"
    transform = Affine(10.0, 0.0, 500000.0, 0.0, -10.0, 5000000.0)
    with rasterio.open(
        qa_path,
        "w",
        driver="GTiff",
        width=4,
        height=4,
        count=1,
        dtype="uint16",
        crs="EPSG:32632",
        transform=transform,
    ) as ds:
        ds.write(QA, 1)
    qa: dict = {"href": str(qa_path), "type": "image/tiff; application=geotiff", "roles": roles}
    if where == "asset":
        qa["classification:bitfields"] = BITFIELDS
        qa["raster:bands"] = [{"data_type": "uint16"}]
    elif where == "raster:bands":
        qa["raster:bands"] = [{"data_type": "uint16", "classification:bitfields": BITFIELDS}]
    else:
        qa["bands"] = [{"name": "qa", "data_type": "uint16", "classification:bitfields": BITFIELDS}]
    return _item("qa-item", {**_band_assets(), "qa": qa})


@pytest.mark.parametrize(
    ("where", "roles"),
    [("asset", ["quality"]), ("raster:bands", ["data"]), ("bands", ["data"])],
)
def test_classification_bitfields_mask_exactly_the_pixels_their_bits_say(tmp_path, where, roles):
    item = _qa_item(tmp_path, where, roles)
    scene = normalise_doc(ItemDoc.from_dict(item), bands=BANDS, options=_options(str(tmp_path)))
    (q,) = scene.quality
    assert (q.asset, q.dtype) == ("qa", "uint16")
    with rasterio.open(q.href) as ds:
        values = ds.read(q.index)
    plain, _ = quality_luts(q, Masking())
    assert np.array_equal(plain[values], DEFAULT_MASKED)
    plain, _ = quality_luts(q, Masking(classes=("snow", "water")))
    assert np.array_equal(plain[values], SNOW_OR_WATER)


def test_inspect_names_the_quality_asset_and_the_classes_it_masks(tmp_path):
    item = _qa_item(tmp_path, "bands", ["data"])
    report = inspect_sources(
        [_write(tmp_path / "item.json", item)], allowed_roots=[REMOTE, str(tmp_path)]
    )
    text = format_inspection(report)
    assert (
        "  quality  <- qa uint16: masks nodata, cloud, shadow, cirrus; also knows snow, water "
        "(masked if the workflow's radiometry.mask names them) (1 item)"
    ) in text
    (use,) = json.loads(format_json(report))["collections"][0]["quality"]
    assert use["masks"] == ["nodata", "cloud", "shadow", "cirrus"]


def test_an_item_without_quality_asset_is_said_to_mask_only_nodata(tmp_path):
    text = format_inspection(
        inspect_sources(
            [_write(tmp_path / "item.json", _item("bare", _band_assets()))], allowed_roots=[REMOTE]
        )
    )
    assert "  quality  none: only nodata is masked (1 item)" in text


def test_inspect_says_which_landsat_quality_assets_apply(tmp_path):
    path = _real(PC_LANDSAT)
    report = inspect_sources([str(path)], allowed_roots=["https://"])
    uses = {q.asset: (q.masks, q.also, q.items) for q in report.collections[0].quality}
    assert uses == {
        "qa_pixel": (("nodata", "cloud", "shadow", "cirrus"), ("snow", "water"), 1),
        "qa_aerosol": (("nodata",), ("water",), 1),
    }


def test_a_bitfield_without_offset_rejects_the_item_naming_the_asset(tmp_path):
    item = _qa_item(tmp_path, "asset", ["quality"])
    item["assets"]["qa"]["classification:bitfields"] = [{"name": "cloud", "length": 1}]
    with pytest.raises(SceneRejected) as err:
        normalise_doc(ItemDoc.from_dict(item), bands=BANDS, options=_options(str(tmp_path)))
    assert err.value.reason == "bad_classification"
    assert "asset 'qa'" in err.value.message and "quality_mask: false" in err.value.message


def test_the_run_plan_line_gives_the_pixel_size_in_the_grid_crs_units():
    """The plan line `aquila run` prints: degrees for a geographic grid, metres for UTM."""
    from pipeline.plan.chunks import Outputs, Plan
    from pipeline.plan.grid import TargetGrid

    def line(crs: str, res: float) -> str:
        grid = TargetGrid(crs, (res, 0.0, 8.0, 0.0, -res, 46.0), (100, 100), 50)
        outputs = Outputs(bands=("red",), resampling="nearest", cube_store=None)
        return Plan(grid=grid, slots=(), tasks=(), scenes=(), outputs=outputs).summary()

    assert "(EPSG:4326, 0.0001°, bounds" in line("EPSG:4326", 0.0001)
    assert "(EPSG:32632, 10 m, bounds" in line("EPSG:32632", 10.0)
