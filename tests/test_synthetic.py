"""The synthetic catalog generator: STAC structure, real COGs, exact pixels, QA, determinism."""

from __future__ import annotations

import json
import time
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pystac
import pytest
import rasterio
import shapely
from pyproj import Transformer
from shapely.geometry import shape

from pipeline.testing import synthetic as syn
from pipeline.testing.synthetic import (
    BANDS,
    PRESETS,
    PROVIDERS,
    SyntheticCatalog,
    generate_catalog,
    truth_reflectance,
)


@pytest.fixture(scope="module")
def cat(tmp_path_factory) -> SyntheticCatalog:
    root = tmp_path_factory.mktemp("synthetic") / "tiny"
    t0 = time.perf_counter()
    c = generate_catalog(root, preset="tiny", seed=0)
    print(f"tiny catalog generated in {time.perf_counter() - t0:.2f} s")
    return c


def _item_jsons(root: Path) -> dict[str, dict]:
    out = {}
    for p in sorted(root.glob("*/*/*.json")):
        d = json.loads(p.read_text())
        d["_path"] = p
        out[d["id"]] = d
    return out


def _epsg(d: dict) -> int:
    props = d["properties"]
    if "proj:epsg" in props:
        return int(props["proj:epsg"])
    return int(props["proj:code"].split(":")[1])


def _centres(ds) -> tuple[np.ndarray, np.ndarray]:
    rows, cols = np.mgrid[0 : ds.height, 0 : ds.width]
    return ds.transform * (cols + 0.5, rows + 0.5)


def _read_band(d: dict, band: str) -> tuple[np.ndarray, rasterio.Affine, dict]:
    """DN array, transform and raster:bands entry of ``band`` (common name) in item dict ``d``."""
    for a in d["assets"].values():
        for i, eo in enumerate(a.get("eo:bands", [])):
            if eo["common_name"] == band:
                with rasterio.open(d["_path"].parent / a["href"]) as ds:
                    return ds.read(i + 1), ds.transform, a["raster:bands"][i]
    raise KeyError(band)


def _read_qa(d: dict) -> tuple[np.ndarray, rasterio.Affine]:
    (key,) = [k for k, a in d["assets"].items() if a["roles"] == ["data-mask"]]
    with rasterio.open(d["_path"].parent / d["assets"][key]["href"]) as ds:
        return ds.read(1), ds.transform


def _qa_flagged(collection: str, qa: np.ndarray) -> np.ndarray:
    """Cloud or shadow flag per the item's classification metadata."""
    if collection == "north":
        return np.isin(qa, [3, 8, 9])
    if collection == "south":
        return (qa & (1 << 3)).astype(bool) | (qa & (1 << 4)).astype(bool)
    return np.isin(qa, [1, 2])


def _qa_clear(collection: str, qa: np.ndarray) -> np.ndarray:
    return qa == {"north": 4, "south": 21824, "east": 0}[collection]


# ------------------------------------------------------------------------------ structure


def test_presets_and_api(cat):
    assert set(PRESETS) >= {"tiny", "demo", "medium"}
    assert PRESETS["tiny"].scenes_per_provider == 2
    assert PRESETS["demo"].area_bounds == (500000.0, 5000000.0, 520000.0, 5020000.0)
    assert PRESETS["medium"].scenes_per_provider == 12
    assert cat.catalog_href == cat.root / "catalog.json" and cat.catalog_href.exists()
    assert cat.area_crs == "EPSG:32632" and cat.area_bounds == PRESETS["tiny"].area_bounds
    assert len(cat.scenes) == 6
    assert {s.collection for s in cat.scenes} == {"north", "south", "east"}
    for s in cat.scenes:
        assert s.datetime.tzinfo is not None
        assert (s.datetime.year, s.datetime.month) == (2025, 6)
        assert 0.0 <= s.cloud_fraction < 0.5
    assert any(s.clouds for s in cat.scenes) and any(not s.clouds for s in cat.scenes)


def test_catalog_walks_with_relative_links_and_existing_assets(cat):
    root = pystac.Catalog.from_file(str(cat.catalog_href))
    colls = {c.id: c for c in root.get_children()}
    assert set(colls) == {"north", "south", "east"}
    assert all(isinstance(c, pystac.Collection) for c in colls.values())
    items = list(root.get_items(recursive=True))
    assert sorted(i.id for i in items) == sorted(s.item_id for s in cat.scenes)
    for item in items:
        assert item.collection_id in colls
        for asset in item.assets.values():
            assert asset.href.startswith("./") and asset.href.endswith(".tif")
            assert Path(asset.get_absolute_href()).is_file()
            assert asset.media_type == syn.COG_MEDIA_TYPE
    # raw JSON on disk: STAC 1.0.0, only relative links, no self links
    for p in cat.root.rglob("*.json"):
        d = json.loads(p.read_text())
        assert d["stac_version"] == "1.0.0"
        for link in d["links"]:
            assert link["rel"] != "self"
            href = link["href"]
            assert not urlparse(href).scheme and not href.startswith("/"), href
            assert (p.parent / href).resolve().is_file()
    layout = {p.relative_to(cat.root).as_posix() for p in cat.root.rglob("*.json")}
    for s in cat.scenes:
        assert f"{s.collection}/{s.item_id}/{s.item_id}.json" in layout
    assert {"catalog.json", "north/collection.json"} <= layout


def test_item_metadata_conventions(cat):
    items = _item_jsons(cat.root)
    ext = {d["collection"]: d["stac_extensions"] for d in items.values()}
    for coll, exts in ext.items():
        for name in ("eo/v1.1.0", "raster/v1.1.0", "view/v1.0.0", "classification/v2.0.0"):
            assert any(name in e for e in exts), (coll, name)
    assert any("projection/v2.0.0" in e for e in ext["south"])
    assert any("projection/v1.1.0" in e for e in ext["north"] + ext["east"])
    hours = {"north": (10, 20), "south": (10, 5), "east": (9, 50)}
    for d in items.values():
        props, coll = d["properties"], d["collection"]
        spec = PROVIDERS[coll]
        for k in (
            "platform",
            "constellation",
            "eo:cloud_cover",
            "view:sun_elevation",
            "view:sun_azimuth",
            "view:off_nadir",
            "proj:shape",
            "proj:transform",
            "proj:bbox",
        ):
            assert k in props, (coll, k)
        assert ("proj:code" in props) == (coll == "south")
        assert ("proj:epsg" in props) == (coll != "south")
        when = pystac.utils.str_to_datetime(props["datetime"])
        h, m = hours[coll]
        assert abs((when.hour * 60 + when.minute) - (h * 60 + m)) <= 7
        assert 50 < props["view:sun_elevation"] < 75 and 90 < props["view:sun_azimuth"] < 180
        scene = cat.scene(d["id"])
        assert props["eo:cloud_cover"] == pytest.approx(100 * scene.cloud_fraction, abs=0.01)
        data = [a for a in d["assets"].values() if a["roles"] == ["data"]]
        assert sorted(b["common_name"] for a in data for b in a["eo:bands"]) == sorted(BANDS)
        for a in data:
            for rb in a["raster:bands"]:
                assert rb == {
                    "data_type": "uint16",
                    "nodata": spec.nodata,
                    "scale": spec.scale,
                    "offset": spec.offset,
                }
        qa = d["assets"][spec.qa_key]
        assert qa["roles"] == ["data-mask"]
        if coll == "south":
            fields = {b["name"]: (b["offset"], b["length"]) for b in qa["classification:bitfields"]}
            assert fields == {
                "fill": (0, 1),
                "cloud": (3, 1),
                "cloud_shadow": (4, 1),
                "clear": (6, 1),
            }
        else:
            classes = {c["value"]: c for c in qa["classification:classes"]}
            nodata = {v for v, c in classes.items() if c.get("nodata")}
            assert nodata == ({0} if coll == "north" else {255})
        # geometry: lon/lat polygon near Milan, bbox = its bounds
        geom = shape(d["geometry"])
        assert geom.is_valid and geom.geom_type == "Polygon"
        assert d["bbox"] == pytest.approx(list(geom.bounds))
        assert 8.9 < d["bbox"][0] < d["bbox"][2] < 9.4 and 45.0 < d["bbox"][1] < 45.4


# ------------------------------------------------------------------------------ rasters


def test_cogs_match_item_projection_and_raster_fields(cat):
    for d in _item_jsons(cat.root).values():
        props = d["properties"]
        for a in d["assets"].values():
            with rasterio.open(d["_path"].parent / a["href"]) as ds:
                assert ds.crs.to_epsg() == _epsg(d)
                shape_ = a.get("proj:shape", props["proj:shape"])
                transform = a.get("proj:transform", props["proj:transform"])
                assert [ds.height, ds.width] == shape_
                assert list(ds.transform)[:6] == pytest.approx(transform[:6])
                bounds = list(ds.bounds)
                assert bounds == pytest.approx(props["proj:bbox"])
                assert ds.count == len(a["raster:bands"])
                for i, rb in enumerate(a["raster:bands"]):
                    assert ds.dtypes[i] == rb["data_type"]
                    assert ds.nodatavals[i] == rb["nodata"]
                # cloud-optimized GeoTIFF layout
                assert ds.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
                assert ds.profile["compress"].lower() == "deflate"
                assert ds.tags(ns="IMAGE_STRUCTURE").get("PREDICTOR") == "2"
                assert ds.profile["tiled"] and ds.block_shapes[0] == (512, 512)
        if d["collection"] == "north":
            scl = d["assets"]["SCL"]
            assert scl["proj:transform"][0] == 20.0
            assert [2 * v for v in scl["proj:shape"]] == props["proj:shape"]


def test_large_cogs_get_overviews_and_qa_overviews_stay_categorical(tmp_path):
    res = 10.0
    transform = rasterio.Affine(res, 0, 500000, 0, -res, 5015000)
    data = np.full((1500, 1500), 1234, np.uint16)
    syn._write_cog(tmp_path / "b.tif", data, transform, "EPSG:32632", 0)
    qa = np.where(np.add.outer(np.arange(1500), np.arange(1500)) % 7 < 3, 4, 9).astype(np.uint8)
    syn._write_cog(tmp_path / "q.tif", qa, transform, "EPSG:32632", 0, categorical=True)
    for name in ("b.tif", "q.tif"):
        with rasterio.open(tmp_path / name) as ds:
            ovr = ds.overviews(1)
            assert ovr[0] == 2 and 1500 // ovr[-1] <= 512  # COG default: down to one block
            assert ds.block_shapes == [(512, 512)]
            assert ds.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
    with rasterio.open(tmp_path / "q.tif", overview_level=0) as ds:
        assert set(np.unique(ds.read(1))) <= {4, 9}


@pytest.mark.parametrize("collection", ["north", "south", "east"])
def test_clear_pixels_equal_truth_at_pixel_centre(cat, collection):
    spec = PROVIDERS[collection]
    to32632 = Transformer.from_crs(spec.crs, "EPSG:32632", always_xy=True)
    checked = 0
    for d in _item_jsons(cat.root).values():
        if d["collection"] != collection:
            continue
        qa, qa_transform = _read_qa(d)
        for band in BANDS:
            dn, transform, rb = _read_band(d, band)
            rows, cols = np.mgrid[0 : dn.shape[0], 0 : dn.shape[1]]
            u, v = transform * (cols + 0.5, rows + 0.5)
            # QA pixel containing each band pixel centre
            qc, qr = ~qa_transform * (u, v)
            qpix = qa[qr.astype(int), qc.astype(int)]
            clear = _qa_clear(collection, qpix) & (dn != rb["nodata"])
            assert clear.mean() > 0.3
            x, y = to32632.transform(u[clear], v[clear])
            got = dn[clear] * rb["scale"] + rb["offset"]
            err = np.abs(got - truth_reflectance(band, np.asarray(x), np.asarray(y)))
            assert err.max() <= rb["scale"] / 2 + 1e-9, (d["id"], band, err.max())
            checked += int(clear.sum())
    assert checked > 1000


def test_one_known_pixel_south_and_east(cat):
    """The brief's spot check: one clear pixel, centre through pyproj, DN*scale+offset = truth."""
    items = _item_jsons(cat.root)
    for coll, clear_value in (("south", 21824), ("east", 0)):
        d = next(d for d in items.values() if d["collection"] == coll)
        qa, _ = _read_qa(d)
        dn, transform, rb = _read_band(d, "nir")
        r, c = (int(v[len(v) // 2]) for v in np.nonzero((qa == clear_value) & (dn != rb["nodata"])))
        x, y = transform * (c + 0.5, r + 0.5)
        if coll == "east":
            x, y = Transformer.from_crs(32633, 32632, always_xy=True).transform(x, y)
        want = truth_reflectance("nir", np.array(x), np.array(y))
        assert abs(dn[r, c] * rb["scale"] + rb["offset"] - want) <= rb["scale"] / 2 + 1e-9


def test_every_cloudy_or_shadowed_band_pixel_is_flagged_in_qa(cat):
    n_cloud = n_shadow = 0
    for d in _item_jsons(cat.root).values():
        coll = d["collection"]
        spec = PROVIDERS[coll]
        to32632 = Transformer.from_crs(spec.crs, "EPSG:32632", always_xy=True)
        qa, qa_transform = _read_qa(d)
        dn, transform, rb = _read_band(d, "blue")
        refl = dn * rb["scale"] + rb["offset"]
        valid = dn != rb["nodata"]
        rows, cols = np.mgrid[0 : dn.shape[0], 0 : dn.shape[1]]
        u, v = transform * (cols + 0.5, rows + 0.5)
        x, y = (np.asarray(a) for a in to32632.transform(u, v))
        truth = truth_reflectance("blue", x, y)
        cloud = valid & (refl >= syn.CLOUD_REFLECTANCE_RANGE[0] - rb["scale"])
        shadow = valid & ~cloud & (np.abs(refl - syn.SHADOW_FACTOR * truth) <= rb["scale"])
        qc, qr = ~qa_transform * (u, v)
        flagged = _qa_flagged(coll, qa[qr.astype(int), qc.astype(int)])
        assert flagged[cloud].all(), d["id"]
        assert flagged[shadow].all(), d["id"]
        # the band model agrees with the catalog's oracle
        assert np.array_equal(cloud, valid & cat.cloudy(x, y, d["id"]))
        assert np.array_equal(shadow, valid & cat.shadowed(x, y, d["id"]))
        if cloud.any():
            assert cloud[valid].mean() * 100 == pytest.approx(
                d["properties"]["eo:cloud_cover"], abs=0.01
            )
        n_cloud += int(cloud.sum())
        n_shadow += int(shadow.sum())
    assert n_cloud > 1000 and n_shadow > 100


def test_oracles_reproduce_the_rasters(cat):
    for d in _item_jsons(cat.root).values():
        spec = PROVIDERS[d["collection"]]
        to32632 = Transformer.from_crs(spec.crs, "EPSG:32632", always_xy=True)
        qa, qa_transform = _read_qa(d)
        for band in ("red", "nir"):
            dn, transform, rb = _read_band(d, band)
            rows, cols = np.mgrid[0 : dn.shape[0], 0 : dn.shape[1]]
            x, y = (
                np.asarray(a) for a in to32632.transform(*(transform * (cols + 0.5, rows + 0.5)))
            )
            want = np.where(dn == rb["nodata"], np.nan, dn * rb["scale"] + rb["offset"])
            got = cat.pixel_reflectance(band, x, y, d["id"])
            np.testing.assert_array_equal(got, want)
            np.testing.assert_array_equal(cat.valid(x, y, d["id"]), dn != rb["nodata"])
        rows, cols = np.mgrid[0 : qa.shape[0], 0 : qa.shape[1]]
        x, y = (
            np.asarray(a) for a in to32632.transform(*(qa_transform * (cols + 0.5, rows + 0.5)))
        )
        np.testing.assert_array_equal(cat.qa_clear(x, y, d["id"]), _qa_clear(d["collection"], qa))


def test_footprints_are_accurate_and_cover_the_area(cat):
    x0, y0, x1, y1 = cat.area_bounds
    xs = np.arange(x0 - 500, x1 + 500, 17.0)
    ys = np.arange(y0 - 500, y1 + 500, 17.0)
    X, Y = np.meshgrid(xs, ys)
    to_utm = Transformer.from_crs(4326, 32632, always_xy=True)
    for d in _item_jsons(cat.root).values():
        s = cat.scene(d["id"])
        poly = shapely.transform(
            shape(d["geometry"]), lambda c: np.column_stack(to_utm.transform(c[:, 0], c[:, 1]))
        )
        valid = cat.valid(X, Y, s.item_id)
        inside = shapely.contains_xy(poly, X, Y)
        far = shapely.distance(poly.exterior, shapely.points(X, Y)) > s.resolution
        assert np.array_equal(valid[far], inside[far]), d["id"]
    # every target 10 m pixel: covered by each provider, and >= 2 clear observations overall
    X, Y = np.meshgrid(np.arange(x0 + 5, x1, 10.0), np.arange(y1 - 5, y0, -10.0))
    for coll in PROVIDERS:
        cov = np.zeros(X.shape, bool)
        for s in cat.scenes:
            if s.collection == coll:
                cov |= cat.valid(X, Y, s.item_id)
        assert cov.all(), coll
    assert (cat.clear_observations(X, Y) >= 2).mean() > 0.99


# ----------------------------------------------------------------------- determinism, truth


def _snapshot(root: Path) -> tuple[dict[str, str], dict[str, np.ndarray]]:
    jsons = {p.relative_to(root).as_posix(): p.read_text() for p in root.rglob("*.json")}
    arrays = {}
    for p in root.rglob("*.tif"):
        with rasterio.open(p) as ds:
            arrays[p.relative_to(root).as_posix()] = ds.read()
    return jsons, arrays


def test_same_seed_same_catalog_different_seed_differs(cat, tmp_path):
    again = generate_catalog(tmp_path / "again", preset="tiny", seed=0)
    assert again.scenes == cat.scenes
    j0, a0 = _snapshot(cat.root)
    j1, a1 = _snapshot(again.root)
    assert j0 == j1
    assert a0.keys() == a1.keys() and all(np.array_equal(a0[k], a1[k]) for k in a0)
    other = generate_catalog(tmp_path / "other", preset="tiny", seed=1)
    assert other.scenes != cat.scenes
    j2, a2 = _snapshot(other.root)
    assert j2 != j0
    common = a0.keys() & a2.keys()
    assert a0.keys() != a2.keys() or any(not np.array_equal(a0[k], a2[k]) for k in common)


def test_regeneration_replaces_output_and_keeps_other_files(tmp_path):
    root = tmp_path / "demo"
    root.mkdir()
    (root / "README.md").write_text("keep me")
    generate_catalog(root, preset="tiny", seed=1)
    c = generate_catalog(root, preset="tiny", seed=2, scenes_per_provider=3)
    assert (root / "README.md").read_text() == "keep me"
    on_disk = {p.parent.name for p in root.glob("*/*/*.json")}
    assert on_disk == {s.item_id for s in c.scenes} and len(on_disk) == 9


def test_overrides_and_bad_arguments(tmp_path):
    area = (510000.0, 5010000.0, 512000.0, 5011000.0)
    c = generate_catalog(tmp_path / "c", preset="tiny", area_bounds=area, scenes_per_provider=2)
    assert c.area_bounds == area
    for s in c.scenes:
        if s.crs == "EPSG:32632":
            assert s.bounds[0] < area[0] and s.bounds[2] > area[2]
    with pytest.raises(KeyError):
        generate_catalog(tmp_path / "x", preset="nope")
    with pytest.raises(ValueError):
        generate_catalog(tmp_path / "x", preset="tiny", area_bounds=(1.0, 1.0, 0.0, 2.0))


def test_truth_range_and_gradient_bound():
    x0, y0, x1, y1 = PRESETS["demo"].area_bounds
    h = 20.0
    xs = np.arange(x0 - 2000, x1 + 2000, h)
    ys = np.arange(y0 - 2000, y1 + 2000, h)
    X, Y = np.meshgrid(xs, ys)
    for band in BANDS:
        assert syn.truth_gradient_bound(band) <= syn.TRUTH_MAX_GRADIENT
        v = truth_reflectance(band, X, Y)
        assert v.dtype == np.float64 and v.shape == X.shape
        assert v.min() >= 0.01 and v.max() <= 0.6
        gx = np.diff(v, axis=1)[:-1, :] / h
        gy = np.diff(v, axis=0)[:, :-1] / h
        assert np.hypot(gx, gy).max() <= 3e-4, band
        # the separable evaluation used for 32632-aligned rasters is the same function
        np.testing.assert_allclose(syn._truth_grid(band, xs, ys[::-1]), v[::-1], rtol=0, atol=1e-13)
    # the bands are different fields, constant in time (no time argument at all)
    assert not np.allclose(truth_reflectance("red", X, Y), truth_reflectance("nir", X, Y))
