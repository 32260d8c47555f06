"""Small chunks fused 2 × 2 per task (pipeline.plan.fuse), attacked: a catalog whose footprints
understate its rasters, and an asset that cannot be read inside a block. The expectation is the
same catalog run with one task per chunk (``RunOptions(fuse=False)``): the same stores, byte for
byte, and the same report of what failed where."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import shapely
from pyproj import Transformer
from shapely.geometry import box, mapping, shape

from pipeline.plan.fuse import Block, fuse
from tests.test_fuse import _files, _plan, _run, _spec


def _items(catalog: Path) -> list[Path]:
    return [p for p in catalog.rglob("*.json") if json.loads(p.read_text()).get("type") ==
            "Feature"]


def transform(fn, geom):
    """``geom`` with every vertex through ``fn(xs, ys) -> (xs, ys)`` (shapely.ops.transform's
    call, on shapely.transform: the former is deprecated in shapely 2.1)."""
    return shapely.transform(geom, lambda xy: np.column_stack(fn(xy[:, 0], xy[:, 1])))


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
    assert {sid for _, sid, *_ in block.task.clip} >= {doc["id"]}
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
    scene with the same chunks and the same errors as one task per chunk does (each block, its
    read failing, computes its chunks one by one), and writes the same stores (never nodata in
    place of a failure it did not report)."""
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

    assert fused.read_failures == alone.read_failures
    assert len(fused.read_failures[0]["chunks"]) > 1
    assert fused.chunk_failures == alone.chunk_failures == []
    assert _files(tmp_path / "fused" / "median.zarr") == _files(tmp_path / "alone" /
                                                                 "median.zarr")


def _retile(tif: Path, side: int) -> None:
    """Rewrite a GeoTIFF with ``side`` px tiles, the same pixels and georeferencing."""
    import rasterio

    with rasterio.open(tif) as src:
        profile, data = src.profile, src.read()
    profile.update(tiled=True, blockxsize=side, blockysize=side, compress="deflate")
    with rasterio.open(tif, "w", **profile) as dst:
        dst.write(data)


def test_a_corrupt_tile_fails_only_the_chunks_that_read_it(catalog_copy, tiny_catalog,
                                                            tmp_path):
    """One bad tile in a scene's raster (its bytes overwritten: a real GeoTIFF that GDAL cannot
    decode there): one task per chunk loses the scene only in the chunks whose windows reach
    that tile. A block reads it over its whole region and fails there; it must not drop the
    scene from its other chunks (their pixels would become another scene's or nodata): the
    fused run reports the same chunks and errors and writes the same stores."""
    import rasterio

    docs = {p: json.loads(p.read_text()) for p in _items(catalog_copy)}
    path, doc = next((p, d) for p, d in docs.items() if "B02" in d["assets"])  # EPSG:32632
    tif = path.parent / Path(doc["assets"]["B02"]["href"]).name
    _retile(tif, 64)
    with rasterio.open(tif) as src:  # the tile under grid pixel (200, 200), chunk r001-c001
        row, col = src.index(tiny_catalog.area_bounds[0] + 2005, tiny_catalog.area_bounds[3] - 2005)
        tx, ty = col // 64, row // 64
        offset = int(src.get_tag_item(f"BLOCK_OFFSET_{tx}_{ty}", "TIFF", bidx=1))
        size = int(src.get_tag_item(f"BLOCK_SIZE_{tx}_{ty}", "TIFF", bidx=1))
    with open(tif, "r+b") as f:
        f.seek(offset)
        f.write(b"\xff" * size)

    reports = {}
    for name, fuse_chunks in (("alone", False), ("fused", True)):
        reports[name] = _run(_spec(catalog_copy, tmp_path / name, tiny_catalog.area_bounds),
                             fuse_chunks=fuse_chunks, partial=True)
    fused, alone = reports["fused"], reports["alone"]
    assert (fused.compute_tasks, alone.compute_tasks) == (4, 16)
    (failure,) = alone.read_failures
    assert failure["item"] == doc["id"] and "r001-c001" in failure["chunks"]
    assert "r000-c000" not in failure["chunks"]  # the block of r000-c000 reads the bad tile
    assert fused.read_failures == alone.read_failures
    assert fused.chunk_failures == alone.chunk_failures == []
    for m in ("median", "latest"):
        assert _files(tmp_path / "fused" / f"{m}.zarr") == _files(tmp_path / "alone" /
                                                                   f"{m}.zarr"), m


def test_an_item_id_repeated_in_another_collection_is_another_scene(catalog_copy,
                                                                    tiny_catalog, tmp_path):
    """Item ids are unique within a collection only: a `north` item renamed to a `south`
    item's id is still its own scene, in its own collection's time slot and chunks. The plan
    is the one of the catalog before the renaming, scene for scene, and a fused run writes the
    same stores as one task per chunk (before: the two shared one slot, and a block kept only
    one of them)."""
    docs = {p: json.loads(p.read_text()) for p in _items(catalog_copy)}
    north = next(p for p, d in docs.items() if d["collection"] == "north")
    south = next(d for d in docs.values() if d["collection"] == "south")
    renamed = dict(docs[north], id=south["id"])
    north.write_text(json.dumps(renamed))

    def layout(root: Path, name: str):
        plan = _plan(_spec(root, tmp_path / name, tiny_catalog.area_bounds))
        return [(t.chunk.name, [(s.slot, sc.collection, sc.datetime, sc.bands[0].href.split(
            "/")[-2:]) for s in t.slots for sc in s.scenes]) for t in plan.tasks]

    assert layout(catalog_copy, "p1") == layout(tiny_catalog.root, "p0")
    for name, fuse_chunks in (("alone", False), ("fused", True)):
        _run(_spec(catalog_copy, tmp_path / name, tiny_catalog.area_bounds),
             fuse_chunks=fuse_chunks)
    for m in ("median", "latest"):
        assert _files(tmp_path / "fused" / f"{m}.zarr") == _files(tmp_path / "alone" /
                                                                   f"{m}.zarr"), m
