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

import pipeline.demo as syn
from pipeline.demo import (
    BANDS,
    PRESETS,
    PROVIDERS,
    generate_catalog,
    truth_reflectance,
)
from pipeline.demo.assets import write_cog
from pipeline.demo.truth import truth_grid
from tests.synthetic_oracle import (
    TRUTH_MAX_GRADIENT,
    CatalogOracle,
    oracle,
    truth_gradient_bound,
)


@pytest.fixture(scope="module")
def cat(tmp_path_factory) -> CatalogOracle:
    root = tmp_path_factory.mktemp("synthetic") / "tiny"
    t0 = time.perf_counter()
    c = oracle(generate_catalog(root, preset="tiny", seed=0))
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
    return ds.transform @ (cols + 0.5, rows + 0.5)


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
    write_cog(tmp_path / "b.tif", data, transform, "EPSG:32632", 0)
    qa = np.where(np.add.outer(np.arange(1500), np.arange(1500)) % 7 < 3, 4, 9).astype(np.uint8)
    write_cog(tmp_path / "q.tif", qa, transform, "EPSG:32632", 0, categorical=True)
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
    """QA-clear pixels hold the truth plus the (unflagged) haze, within half a DN."""
    spec = PROVIDERS[collection]
    to32632 = Transformer.from_crs(spec.crs, "EPSG:32632", always_xy=True)
    checked = hazy = 0
    for d in _item_jsons(cat.root).values():
        if d["collection"] != collection:
            continue
        qa, qa_transform = _read_qa(d)
        for band in BANDS:
            dn, transform, rb = _read_band(d, band)
            rows, cols = np.mgrid[0 : dn.shape[0], 0 : dn.shape[1]]
            u, v = transform @ (cols + 0.5, rows + 0.5)
            # QA pixel containing each band pixel centre
            qc, qr = ~qa_transform @ (u, v)
            qpix = qa[qr.astype(int), qc.astype(int)]
            clear = _qa_clear(collection, qpix) & (dn != rb["nodata"])
            assert clear.mean() > 0.3
            x, y = (np.asarray(a) for a in to32632.transform(u[clear], v[clear]))
            got = dn[clear] * rb["scale"] + rb["offset"]
            haze = cat.contamination(x, y, d["id"])
            assert not np.isnan(haze).any()  # QA-clear pixels are never cloudy
            err = np.abs(got - truth_reflectance(band, x, y) - haze)
            assert err.max() <= rb["scale"] / 2 + 1e-9, (d["id"], band, err.max())
            checked += int(clear.sum())
            hazy += int((haze > rb["scale"]).sum())
    assert checked > 1000
    assert hazy > 10  # some QA-clear pixels do carry haze


def test_one_known_pixel_south_and_east(cat):
    """The brief's spot check: one clear pixel, centre through pyproj, DN*scale+offset = truth."""
    items = _item_jsons(cat.root)
    for coll, clear_value in (("south", 21824), ("east", 0)):
        d = next(d for d in items.values() if d["collection"] == coll)
        qa, _ = _read_qa(d)
        dn, transform, rb = _read_band(d, "nir")
        rows, cols = np.mgrid[0 : dn.shape[0], 0 : dn.shape[1]]
        xs, ys = transform @ (cols + 0.5, rows + 0.5)
        if coll == "east":
            xs, ys = Transformer.from_crs(32633, 32632, always_xy=True).transform(xs, ys)
        # clear in QA and also haze-free (haze beyond the QA ring is unflagged)
        haze_free = ~cat.hazy(np.asarray(xs), np.asarray(ys), d["id"])
        ok = (qa == clear_value) & (dn != rb["nodata"]) & haze_free
        r, c = (int(v[len(v) // 2]) for v in np.nonzero(ok))
        x, y = transform @ (c + 0.5, r + 0.5)
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
        u, v = transform @ (cols + 0.5, rows + 0.5)
        x, y = (np.asarray(a) for a in to32632.transform(u, v))
        truth = truth_reflectance("blue", x, y)
        haze = np.nan_to_num(cat.contamination(x, y, d["id"]))  # haze is added to shadows too
        cloud = valid & (refl >= syn.CLOUD_REFLECTANCE_RANGE[0] - rb["scale"])
        shadow = valid & ~cloud & (np.abs(refl - syn.SHADOW_FACTOR * truth - haze) <= rb["scale"])
        qc, qr = ~qa_transform @ (u, v)
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
                np.asarray(a) for a in to32632.transform(*(transform @ (cols + 0.5, rows + 0.5)))
            )
            want = np.where(dn == rb["nodata"], np.nan, dn * rb["scale"] + rb["offset"])
            got = cat.pixel_reflectance(band, x, y, d["id"])
            np.testing.assert_array_equal(got, want)
            np.testing.assert_array_equal(cat.valid(x, y, d["id"]), dn != rb["nodata"])
        rows, cols = np.mgrid[0 : qa.shape[0], 0 : qa.shape[1]]
        x, y = (
            np.asarray(a) for a in to32632.transform(*(qa_transform @ (cols + 0.5, rows + 0.5)))
        )
        np.testing.assert_array_equal(cat.qa_clear(x, y, d["id"]), _qa_clear(d["collection"], qa))


# ---------------------------------------------------------------------------------- haze


def _band_pixels(d: dict, band: str):
    """(decoded reflectance with NaN nodata, x, y EPSG:32632 centres, QA flag of the QA
    pixel containing each centre, scale) of one band of item dict ``d``."""
    spec = PROVIDERS[d["collection"]]
    dn, transform, rb = _read_band(d, band)
    rows, cols = np.mgrid[0 : dn.shape[0], 0 : dn.shape[1]]
    u, v = transform @ (cols + 0.5, rows + 0.5)
    x, y = (
        np.asarray(a)
        for a in Transformer.from_crs(spec.crs, "EPSG:32632", always_xy=True).transform(u, v)
    )
    qa, qa_transform = _read_qa(d)
    qc, qr = ~qa_transform @ (u, v)
    flagged = _qa_flagged(d["collection"], qa[qr.astype(int), qc.astype(int)])
    refl = np.where(dn == rb["nodata"], np.nan, dn * rb["scale"] + rb["offset"])
    return refl, x, y, flagged, rb["scale"]


def _edge_dist(x: np.ndarray, y: np.ndarray, discs, shift=(0.0, 0.0)) -> np.ndarray:
    """Distance (m) to the nearest (shifted) disc edge, computed independently of the module."""
    out = np.full(x.shape, np.inf)
    for c in discs:
        out = np.minimum(out, np.hypot(x - c.x - shift[0], y - c.y - shift[1]) - c.radius)
    return out


def test_haze_constants_keep_the_median_guarantee():
    assert syn.HAZE_M == 200.0 and syn.HAZE_MAX == 0.012
    assert syn.HAZE_M > syn.QA_DILATION_M
    # median of >= 2 observations, at most one hazy: error <= HAZE_MAX / 2 < 0.01
    assert syn.HAZE_MAX / 2 <= 0.006 < 0.01
    # a picked hazy observation just outside the flagged ring is measurably contaminated
    assert syn.HAZE_MAX * (1 - (syn.QA_DILATION_M + 30) / syn.HAZE_M) > 0.003


@pytest.mark.parametrize("collection", ["north", "south", "east"])
def test_unflagged_haze_100m_from_a_cloud_edge(cat, collection):
    """Clear (unflagged) pixels ~100 m from a cloud edge are brighter than the truth by
    HAZE_MAX * (1 - 100 / HAZE_M); pixels > HAZE_M from every cloud hold the truth."""
    n_100 = n_far = 0
    for d in _item_jsons(cat.root).values():
        s = cat.scene(d["id"])
        if d["collection"] != collection or not s.clouds:
            continue
        for band in BANDS:
            refl, x, y, flagged, scale = _band_pixels(d, band)
            valid = ~np.isnan(refl)
            dc = _edge_dist(x, y, s.clouds)
            ds = _edge_dist(x, y, s.clouds, s.shadow_offset)
            # far from every shadow (also for the QA pixel containing the band centre)
            unshadowed = ds > syn.QA_DILATION_M + s.qa_resolution
            err = refl - truth_reflectance(band, x, y)
            # ~100 m from the nearest cloud edge (within 1 m: haze slope 6e-5 / m)
            at100 = valid & unshadowed & (np.abs(dc - 100.0) <= 1.0)
            assert not flagged[at100].any(), d["id"]
            want = syn.HAZE_MAX * (1 - 100.0 / syn.HAZE_M)
            assert want == pytest.approx(0.006)
            slope = syn.HAZE_MAX / syn.HAZE_M
            assert np.all(np.abs(err[at100] - want) <= scale / 2 + slope * 1.0 + 1e-9), d["id"]
            exact = syn.HAZE_MAX * (1 - dc[at100] / syn.HAZE_M)
            assert np.all(np.abs(err[at100] - exact) <= scale / 2 + 1e-9), d["id"]
            n_100 += int(at100.sum())
            # beyond HAZE_M from every cloud (and outside shadows): exactly the truth
            far = valid & (dc > syn.HAZE_M) & (ds > 0.0)
            assert np.all(np.abs(err[far]) <= scale / 2 + 1e-9), d["id"]
            # ... including the first pixels just beyond the haze
            n_far += int((far & (dc < syn.HAZE_M + 30.0)).sum())
    assert n_100 >= 8 and n_far >= 8


def test_hazy_and_contamination_oracles(cat):
    x0, y0, x1, y1 = cat.area_bounds
    X, Y = np.meshgrid(np.arange(x0 - 300, x1 + 300, 13.0), np.arange(y1 + 300, y0 - 300, -13.0))
    n_hazy = n_unflagged = 0
    for s in cat.scenes:
        hazy = cat.hazy(X, Y, s.item_id)
        c = cat.contamination(X, Y, s.item_id)
        u, v = Transformer.from_crs("EPSG:32632", s.crs, always_xy=True).transform(X, Y)
        b = s.bounds
        inside = (u >= b[0]) & (u < b[2]) & (v > b[1]) & (v <= b[3])
        assert inside.any() and not inside.all()
        # NaN exactly outside the raster and in clouds; else 0 <= haze <= HAZE_MAX
        cloud = inside & np.isnan(c)
        assert np.isnan(c[~inside]).all()
        assert np.all((c[inside & ~cloud] >= 0) & (c[inside & ~cloud] <= syn.HAZE_MAX))
        # on a grid: hazy <=> inside the raster and (haze > 0 or inside a cloud)
        assert np.array_equal(hazy, inside & (cloud | (c > 0))), s.item_id
        if not s.clouds:
            assert not hazy.any() and not cloud.any()
            continue
        assert cloud.any() and (c > 0).any()
        n_hazy += int((hazy & ~np.isnan(c)).sum())
        n_unflagged += int((hazy & cat.qa_clear(X, Y, s.item_id)).sum())
    assert n_hazy > 100 and n_unflagged > 100
    # at band pixel centres, against geometry computed here
    for d in _item_jsons(cat.root).values():
        s = cat.scene(d["id"])
        refl, x, y, flagged, scale = _band_pixels(d, "green")
        dc = _edge_dist(x, y, s.clouds)
        want = np.where(dc <= 0, np.nan, syn.HAZE_MAX * np.clip(1 - dc / syn.HAZE_M, 0, None))
        got = cat.contamination(x, y, d["id"])
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
        np.testing.assert_array_equal(cat.hazy(x, y, d["id"]), dc < syn.HAZE_M)
        # the budget: |observed - truth| <= contamination + scale / 2 outside clouds and shadows
        ok = ~np.isnan(refl) & ~np.isnan(got) & ~cat.shadowed(x, y, d["id"])
        err = np.abs(refl - truth_reflectance("green", x, y))[ok]
        assert np.all(err <= got[ok] + scale / 2 + 1e-9), d["id"]


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
        assert truth_gradient_bound(band) <= TRUTH_MAX_GRADIENT
        v = truth_reflectance(band, X, Y)
        assert v.dtype == np.float64 and v.shape == X.shape
        assert v.min() >= 0.01 and v.max() <= 0.6
        gx = np.diff(v, axis=1)[:-1, :] / h
        gy = np.diff(v, axis=0)[:, :-1] / h
        assert np.hypot(gx, gy).max() <= 3e-4, band
        # the separable evaluation used for 32632-aligned rasters is the same function
        np.testing.assert_allclose(truth_grid(band, xs, ys[::-1]), v[::-1], rtol=0, atol=1e-13)
    # the bands are different fields, constant in time (no time argument at all)
    assert not np.allclose(truth_reflectance("red", X, Y), truth_reflectance("nir", X, Y))
