"""Harmonised TOA reflectance from providers that publish DN only, end to end on generated COGs.

The generator's DN-only providers (``west``: Sentinel-2-L1C-like, MTD_MSIL1C.xml; ``centre``:
Landsat-Level-1-like, MTL.txt and no sun elevation in the item) render one truth: TOA reflectance
as Landsat 8 OLI sees it (``west`` encodes the MSI reflectance whose published HLS v2.0 adjustment
is that truth; the generator holds its own copy of the table). A run with ``harmonize_to:
landsat-8-9-oli`` must give the truth back at every clear pixel to within DN quantisation.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from tests.conftest import make_spec_dict
from tests.references.toa import dilate_reference
from tests.synthetic_oracle import oracle
from tests.test_run import BANDS, open_store, run

# Half a DN step in reflectance: west 0.5e-4 / (MSI→OLI slope <= 1.0075 keeps it below 5.04e-5);
# centre 0.5 * 2e-5 / sin(sun elevation >= 55°) = 1.3e-5; plus float32 rounding (< 3e-8).
QUANTISATION = {"west": 5.04e-5 + 1e-7, "centre": 1.3e-5 + 1e-7}


@pytest.fixture(scope="module")
def toa_catalog(tmp_path_factory):
    from pipeline.demo import generate_catalog

    root = tmp_path_factory.mktemp("toa-catalog")
    return oracle(
        generate_catalog(root / "catalog", preset="tiny", seed=1, providers=["west", "centre"])
    )


def _run_toa(cat, out, **radiometry):
    spec = make_spec_dict(cat.root, out, bounds=cat.area_bounds, chunk=256)
    spec["radiometry"] = radiometry
    report = run(spec, direct=True)
    assert report.status == "success", report.error
    return open_store(out / "cube.zarr").load(), report


def _clear_pixels(cat, cube, t, scene_id):
    """x, y (2-D) and the mask of cube pixels that are data, QA-clear and free of haze."""
    X, Y = np.meshgrid(cube.x.values, cube.y.values)
    ok = np.isfinite(cube["blue"].values[t])
    ok &= cat.valid(X, Y, scene_id) & ~cat.hazy(X, Y, scene_id) & ~cat.shadowed(X, Y, scene_id)
    return X, Y, ok


def _scene_slots(cat, cube):
    """Slot index → scene id, by acquisition time (one scene per slot here)."""
    times = cube.time.values.astype("datetime64[s]").astype(int)
    out = {}
    for s in cat.scenes:
        t = int(np.argmin(np.abs(times - int(s.datetime.timestamp()))))
        out[t] = s.item_id
    assert len(out) == len(cat.scenes)
    return out


def test_harmonised_toa_reflectance_from_dn_only_providers_equals_the_truth(toa_catalog, tmp_path):
    cat = toa_catalog
    cube, report = _run_toa(cat, tmp_path, target="reflectance", harmonize_to="landsat-8-9-oli")
    assert report.scenes_used and not report.rejected
    rad = cube.attrs["aquila:radiometry"]
    assert rad["quantity"] == "reflectance" and rad["harmonize_to"] == "landsat-8-9-oli"
    sets = {(s["name"], s["version"], s["platform"]) for s in rad["coefficient_sets"]}
    west = {s.platform for s in cat.scenes if s.collection == "west"}
    assert {p for n, _, p in sets if n == "hls-msi-to-oli"} == west
    assert all(v == "2.0" for n, v, _ in sets if n == "hls-msi-to-oli")
    assert any(
        s["name"] == "reference" and s["collections"] == ["centre"] for s in rad["coefficient_sets"]
    )
    checked = 0
    for t, scene_id in _scene_slots(cat, cube).items():
        collection = cat.scene(scene_id).collection
        X, Y, ok = _clear_pixels(cat, cube, t, scene_id)
        assert ok.sum() > 1000
        for band in BANDS:
            got = cube[band].values[t][ok].astype(np.float64)
            # 1. exactly what the published constants give (DN decode + HLS): float32 rounding
            want = cat.toa_reflectance(band, X[ok], Y[ok], scene_id, harmonised=True)
            np.testing.assert_allclose(got, want, rtol=0, atol=1e-7)
            # 2. the truth at the source pixel's centre, to half a DN step
            s = cat.scene(scene_id)
            _, xc, yc = cat._centres(X[ok], Y[ok], s, s.resolution)
            assert np.abs(got - cat.truth(band, xc, yc)).max() <= QUANTISATION[collection]
            checked += ok.sum()
    assert checked > 10000


def test_without_harmonisation_the_sentinel2_bands_keep_their_msi_bandpass(toa_catalog, tmp_path):
    """The same run without harmonize_to: west's blue is MSI blue, (truth + 0.004) / 0.9778, at
    least 0.004 above the OLI truth — so the harmonised test above can fail."""
    cat = toa_catalog
    cube, _ = _run_toa(cat, tmp_path, target="reflectance")
    assert cube.attrs["aquila:radiometry"]["coefficient_sets"] == []
    for t, scene_id in _scene_slots(cat, cube).items():
        if cat.scene(scene_id).collection != "west":
            continue
        X, Y, ok = _clear_pixels(cat, cube, t, scene_id)
        s = cat.scene(scene_id)
        _, xc, yc = cat._centres(X[ok], Y[ok], s, s.resolution)
        got = cube["blue"].values[t][ok].astype(np.float64)
        assert (got - cat.truth("blue", xc, yc)).min() > 0.004 - QUANTISATION["west"]
        want = cat.toa_reflectance("blue", X[ok], Y[ok], scene_id, harmonised=False)
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-7)


def test_radiance_target_from_the_vendor_files(toa_catalog, tmp_path):
    """Radiance, W/(m² sr µm): centre = DN × RADIANCE_MULT + RADIANCE_ADD of its MTL; west =
    ρ_MSI · E0 · sin(sun elevation) · U / π from its MTD (E0 = SOLAR_IRRADIANCE, U = 1/d²)."""
    from pipeline.catalog.sensors.vendor import landsat_mtl, sentinel2_mtd

    cat = toa_catalog
    cube, report = _run_toa(cat, tmp_path, target="radiance")
    assert cube.attrs["aquila:radiometry"]["units"] == "W m-2 sr-1 um-1"
    mtd_band = {"blue": "B02", "green": "B03", "red": "B04", "nir": "B8A"}
    for t, scene_id in _scene_slots(cat, cube).items():
        s = cat.scene(scene_id)
        folder = cat.root / s.collection / scene_id
        X, Y, ok = _clear_pixels(cat, cube, t, scene_id)
        for band in BANDS:
            got = cube[band].values[t][ok].astype(np.float64)
            if s.collection == "centre":
                mtl = landsat_mtl(str(folder / "MTL.txt"))
                mult, add = mtl.radiance[{"blue": "2", "green": "3", "red": "4", "nir": "5"}[band]]
                dn = (cat.pixel_reflectance(band, X[ok], Y[ok], scene_id) + 0.1) / 2e-5
                want = np.rint(dn) * mult + add
            else:
                mtd = sentinel2_mtd(str(folder / "MTD_MSIL1C.xml"))
                rho = cat.pixel_reflectance(band, X[ok], Y[ok], scene_id)
                e0 = mtd.solar_irradiance[mtd_band[band]]
                want = rho * e0 * math.sin(math.radians(s.sun_elevation)) * mtd.u / math.pi
            np.testing.assert_allclose(got, want, rtol=2e-7, atol=1e-5)


def test_dilation_grows_cloud_and_shadow_only_and_is_seamless_across_chunks(toa_catalog, tmp_path):
    """dilate: 3 on the west scenes (cloud_mask: 0 clear, 1 cloud, 2 shadow, 255 nodata), read on
    the QA raster's own 20 m grid: masked = nodata | square-dilate(cloud | shadow, 3); mask:
    [cloud] leaves shadows alone. A 64-px-chunk run equals a 256-px one (halo = dilate)."""
    import rasterio

    from pipeline.catalog.discover import discover
    from pipeline.engine.chunk import read_scene
    from pipeline.io.reader import RasterReader
    from pipeline.plan.calibration import Masking
    from pipeline.plan.grid import ChunkGrid
    from pipeline.spec.workflow import spec_from_dict

    cat = toa_catalog
    spec = spec_from_dict(
        make_spec_dict(cat.root, tmp_path, bounds=cat.area_bounds), base_dir=tmp_path
    )
    scenes = [s for s in discover(spec).scenes if s.collection == "west"]
    reader = RasterReader()
    seen = set()
    for scene in scenes:
        (q,) = scene.quality
        with rasterio.open(q.href) as ds:
            qa = ds.read(1)
        t = q.grid.transform
        chunk = ChunkGrid(0, 0, 0, 0, *q.grid.shape, q.grid.crs, t)
        for masking, want in [
            (
                Masking(("nodata", "cloud", "shadow"), 3),
                (qa == 255) | dilate_reference((qa == 1) | (qa == 2), 3),
            ),
            (Masking(("nodata", "cloud", "shadow"), 0), (qa == 255) | (qa == 1) | (qa == 2)),
            (Masking(("cloud",), 2), dilate_reference(qa == 1, 2)),
        ]:
            _, masked = read_scene(
                scene, chunk, resampling="nearest", reader=reader, masking=masking
            )
            np.testing.assert_array_equal(masked, want)
        seen |= set(np.unique(qa).tolist())
    reader.close()
    assert {0, 1, 2, 255} <= seen  # clear, cloud, shadow and nodata were all exercised
    small, _ = _run_toa_chunk(cat, tmp_path / "small", 64)
    large, _ = _run_toa_chunk(cat, tmp_path / "large", 256)
    for band in BANDS:
        np.testing.assert_array_equal(small[band].values, large[band].values)


def _run_toa_chunk(cat, out, chunk):
    spec = make_spec_dict(cat.root, out, bounds=cat.area_bounds, chunk=chunk)
    spec["radiometry"] = {"harmonize_to": "landsat-8-9-oli", "dilate": 3}
    report = run(spec, direct=True)
    assert report.status == "success", report.error
    return open_store(out / "cube.zarr").load(), report


def test_a_provider_without_coefficients_is_rejected_and_the_run_goes_on(tiny_catalog, tmp_path):
    """Harmonising the three-provider catalog: PlanetScope (east) has no set to OLI, so its
    scenes are rejected (no_harmonisation, naming the profile); north (S2) and south (the
    reference) are used."""
    spec = make_spec_dict(tiny_catalog.root, tmp_path, bounds=tiny_catalog.area_bounds, cube=False)
    spec["radiometry"] = {"harmonize_to": "landsat-8-9-oli"}
    report = run(spec, direct=True)
    assert report.status == "success", report.error
    reasons = {r["collection"]: r["reason"] for r in report.rejected}
    assert reasons == {"east": "no_harmonisation"}
    assert all("planetscope" in r["message"] for r in report.rejected)
    used = {s.split("_")[0][:2] for s in report.scenes_used}
    assert used == {"S2", "LC"}
