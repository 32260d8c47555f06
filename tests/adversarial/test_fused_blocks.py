"""Small chunks fused 2 × 2 per task (pipeline.plan.fuse), attacked: a catalog whose footprints
understate its rasters, and an asset that cannot be read inside a block. The expectation is the
same catalog run with one task per chunk (``RunOptions(fuse=False)``): the same stores, byte for
byte, and the same report of what failed where."""

from __future__ import annotations

import json
from pathlib import Path

from pyproj import Transformer
from shapely.geometry import box, mapping, shape
from shapely.ops import transform

from pipeline.plan.fuse import Block, fuse
from tests.test_fuse import _files, _plan, _run, _spec


def _items(catalog: Path) -> list[Path]:
    return [p for p in catalog.rglob("*.json") if json.loads(p.read_text()).get("type") ==
            "Feature"]


def _widest(catalog: Path, grid_bounds) -> tuple[Path, object]:
    """The item whose footprint covers most of the grid, and the grid's lon/lat transform."""
    x0, y0, x1, y1 = grid_bounds
    to_lonlat = Transformer.from_crs(32632, 4326, always_xy=True).transform
    area = transform(to_lonlat, box(x0, y0, x1, y1))
    best = max(_items(catalog), key=lambda p: shape(json.loads(p.read_text())["geometry"])
               .intersection(area).area)
    return best, to_lonlat


def test_a_scene_adds_no_pixel_to_a_chunk_its_footprint_misses(catalog_copy, tiny_catalog,
                                                                tmp_path, monkeypatch):
    """A footprint that understates the data (simplified STAC geometries can): the scene that
    covers most of the grid gets a footprint of the grid's top-left 100 × 100 px only, its
    raster unchanged. The fused block reads it over all four chunks, yet it adds nothing to
    the three whose own task would not read it; without that clipping the stores differ (the
    check can fail)."""
    x0, _, _, y1 = tiny_catalog.area_bounds
    path, to_lonlat = _widest(catalog_copy, tiny_catalog.area_bounds)
    doc = json.loads(path.read_text())
    small = transform(to_lonlat, box(x0 + 100, y1 - 1000, x0 + 1000, y1 - 100))
    doc["geometry"], doc["bbox"] = mapping(small), list(small.bounds)
    path.write_text(json.dumps(doc))

    plan = _plan(_spec(catalog_copy, tmp_path / "p", tiny_catalog.area_bounds))
    (block,) = [b for b in fuse(plan.tasks, plan.grid, plan.outputs, min_tasks=1)
                if isinstance(b, Block) and b.task.chunk.name == "r000-c000"]
    assert {sid for sid, *_ in block.task.clip} >= {doc["id"]}
    runs = {}
    for name, fuse_chunks in (("alone", False), ("fused", True)):
        _run(_spec(catalog_copy, tmp_path / name, tiny_catalog.area_bounds),
             fuse_chunks=fuse_chunks)
        runs[name] = _files(tmp_path / name / "median.zarr")
    assert runs["fused"] == runs["alone"]

    import pipeline.engine.chunk as chunk_module

    monkeypatch.setattr(chunk_module, "_clip", lambda *a, **k: None)
    _run(_spec(catalog_copy, tmp_path / "unclipped", tiny_catalog.area_bounds), fuse_chunks=True)
    assert _files(tmp_path / "unclipped" / "median.zarr") != runs["alone"]


def test_an_unreadable_asset_in_a_block_is_reported_for_the_chunks_that_read_it(
        catalog_copy, tiny_catalog, tmp_path):
    """A truncated GeoTIFF of the widest scene: the fused run goes on, is ``partial``, names the
    scene with the same chunks and the same error as one task per chunk does (but the window,
    the block's), and writes the same stores (never nodata in place of a failure it did not
    report)."""
    path, _ = _widest(catalog_copy, tiny_catalog.area_bounds)
    doc = json.loads(path.read_text())
    tif = next(path.parent / Path(a["href"]).name for a in doc["assets"].values()
               if a["href"].endswith(".tif") and (path.parent / Path(a["href"]).name).exists())
    tif.write_bytes(tif.read_bytes()[: tif.stat().st_size * 2 // 3])

    reports = {}
    for name, fuse_chunks in (("alone", False), ("fused", True)):
        report = _run(_spec(catalog_copy, tmp_path / name, tiny_catalog.area_bounds),
                      fuse_chunks=fuse_chunks, partial=True)
        reports[name] = report
    fused, alone = reports["fused"], reports["alone"]
    assert (fused.compute_tasks, alone.compute_tasks) == (4, 16)
    assert [f["item"] for f in fused.read_failures] == [doc["id"]]

    def where(failures):  # the error names the window read: the block's, or the chunk's
        return [(f["item"], f["chunks"], f["error"].split(": window (")[0]) for f in failures]

    assert where(fused.read_failures) == where(alone.read_failures)
    assert len(fused.read_failures[0]["chunks"]) > 1
    assert fused.chunk_failures == alone.chunk_failures == []
    assert _files(tmp_path / "fused" / "median.zarr") == _files(tmp_path / "alone" /
                                                                 "median.zarr")
