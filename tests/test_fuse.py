"""Small chunks fused 2 × 2 per task (pipeline.plan.fuse): which blocks are fused, and that a
fused run writes the stores a run of one task per chunk writes, byte for byte (hostile cases:
tests/adversarial/test_fused_blocks.py)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from pipeline.engine.executor import Job
from pipeline.engine.run import RunOptions, chunk_jobs, run_workflow
from pipeline.plan.chunks import make_plan
from pipeline.plan.fuse import Block, fuse
from pipeline.spec.workflow import spec_from_dict
from tests.conftest import make_spec_dict

# every method whose mosaic looks at one pixel only (best-pixel has a halo: never fused)
METHODS = {
    "median": {},
    "latest": {},
    "earliest": {},
    "priority": {"priority": ["south", "east", "north"]},
    "mean": {},
    "min": {},
    "max": {},
    "percentile": {"q": 25},
    "quality": {"key": "ndvi"},
    "medoid": {},
}


def _spec(catalog_root: Path, out: Path, bounds, *, methods=("median", "latest"), **kw):
    spec = make_spec_dict(catalog_root, out, bounds=bounds, cube=False, chunk=128, **kw)
    mosaics = [{"store": str(out / f"{m}.zarr"), "method": m, **METHODS[m]} for m in methods]
    spec["products"] = {"mosaic": mosaics[0], "mosaics": mosaics[1:]}
    return spec_from_dict(spec, base_dir=Path("."))


def _plan(spec):
    from pipeline.engine.run import discover, outputs_of, target_grid

    scenes = list(discover(spec).scenes)
    grid = target_grid(spec, scenes)
    return make_plan(scenes, grid=grid, outputs=outputs_of(spec))


def _files(root: Path) -> dict[str, bytes]:
    """Every file of a store by relative path, but the root's metadata (its attributes name the
    run: id, time, paths)."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.relative_to(root) != Path("zarr.json")}


def _run(spec, *, fuse_chunks: bool, progress=None, partial: bool = False):
    report = run_workflow(spec, options=RunOptions(direct=True, fuse=fuse_chunks),
                          progress=progress)
    assert report.status == ("partial" if partial else "success"), report.error
    return report


# --------------------------------------------------------------------------- planning


def test_blocks_are_2x2_neighbours_reading_their_members_scenes(tiny_catalog, tmp_path):
    plan = _plan(_spec(tiny_catalog.root, tmp_path, tiny_catalog.area_bounds))
    ny, nx = plan.grid.chunk_counts
    assert (ny, nx) == (4, 4) and len(plan.tasks) == 16
    fused = fuse(plan.tasks, plan.grid, plan.outputs, min_tasks=1)
    assert all(isinstance(b, Block) for b in fused) and len(fused) == 4
    for b in fused:
        assert isinstance(b, Block)
        rows = {m.chunk.iy for m in b.members}
        cols = {m.chunk.ix for m in b.members}
        assert len(b.members) == 4 and len(rows) == len(cols) == 2
        assert min(rows) % 2 == 0 and min(cols) % 2 == 0
        region = b.task.chunk
        assert (region.y0, region.x0) == (min(m.chunk.y0 for m in b.members),
                                          min(m.chunk.x0 for m in b.members))
        assert region.height == sum(m.chunk.height for m in b.members if m.chunk.ix == min(cols))
        assert region.width == sum(m.chunk.width for m in b.members if m.chunk.iy == min(rows))
        # the block reads each member's scenes, each once, in the members' slots
        listed = {(s.slot, sc.id) for m in b.members for s in m.slots for sc in s.scenes}
        read = [(s.slot, sc.id) for s in b.task.slots for sc in s.scenes]
        assert sorted(read) == sorted(listed)
        # and keeps each scene out of the members that do not list it
        for m in b.members:
            own = {(s.slot, sc.id) for s in m.slots for sc in s.scenes}
            c = m.chunk
            kept_out = {(slot, sid) for slot, sid, *r in b.task.clip
                        if tuple(r) == (c.y0, c.x0, c.height, c.width)}
            assert kept_out == listed - own


def test_no_fusing_where_pixels_or_parallelism_could_change(tiny_catalog, tmp_path):
    spec = _spec(tiny_catalog.root, tmp_path, tiny_catalog.area_bounds)
    plan = _plan(spec)
    tasks, grid, outputs = plan.tasks, plan.grid, plan.outputs
    assert fuse(tasks, grid, outputs, min_tasks=5) == tasks  # 4 blocks: fewer than asked
    assert fuse(tasks, grid, replace(outputs, cube_store=tmp_path / "c.zarr"), min_tasks=1) == tasks
    assert fuse(tasks, grid, replace(outputs, read_side=255), min_tasks=1) == tasks
    assert fuse(tasks, grid, replace(outputs, resampling="bilinear"), min_tasks=1) == tasks
    blended = replace(outputs, mosaics=(replace(outputs.mosaics[0], blend_width=4),))
    assert fuse(tasks, grid, blended, min_tasks=1) == tasks
    # a block with a chunk no scene touches keeps its chunks as tasks of their own
    gap = tuple(t for t in tasks if t.chunk.name != "r000-c000")
    fused = fuse(gap, grid, outputs, min_tasks=1)
    assert sum(isinstance(b, Block) for b in fused) == 3
    assert [t.chunk.name for t in fused if not isinstance(t, Block)] == [
        "r000-c001", "r001-c000", "r001-c001"]


def test_jobs_name_every_chunk_of_a_block_for_progress_and_failures(tiny_catalog, tmp_path):
    plan = _plan(_spec(tiny_catalog.root, tmp_path, tiny_catalog.area_bounds))
    jobs = chunk_jobs(plan, "test", threads=2)
    assert len(jobs) == 4 and sum(j.size for j in jobs) == 16
    assert sorted(c for j in jobs for c in j.chunks) == sorted(t.chunk.name for t in plan.tasks)
    assert all(j.key.startswith(f"aquila-test-chunk-{j.chunk}-") for j in jobs)
    assert [f["chunk"] for f in jobs[0].failures("OSError: x")] == list(jobs[0].chunks)
    assert Job("k", "r000-c000", ()).failures("e") == [{"chunk": "r000-c000", "error": "e"}]
    assert len(chunk_jobs(plan, "test", threads=None)) == 16  # cluster size unknown: no fusing
    assert len(chunk_jobs(plan, "test", threads=3)) == 16  # 4 blocks < 2 x 3 threads


def test_a_block_stays_within_the_workflows_task_memory_limit(tiny_catalog, tmp_path):
    """limits.max_task_memory bounds a task: each chunk task is checked when planned, and a
    block, holding about four chunks' worth, is not fused where it would exceed the limit."""
    from pipeline.plan.chunks import task_memory

    plan = _plan(_spec(tiny_catalog.root, tmp_path, tiny_catalog.area_bounds))
    blocks = [b for b in fuse(plan.tasks, plan.grid, plan.outputs, min_tasks=1)
              if isinstance(b, Block)]
    chunk_need = max(task_memory(t, plan.outputs) for t in plan.tasks)
    needs = sorted(task_memory(b.task, plan.outputs) for b in blocks)
    assert len(blocks) == 4 and needs[0] > chunk_need
    assert len(chunk_jobs(plan, "test", threads=2, max_memory=needs[-1])) == 4
    assert len(chunk_jobs(plan, "test", threads=2, max_memory=needs[-1] - 1)) == 7  # 3 + 4
    assert len(chunk_jobs(plan, "test", threads=2, max_memory=needs[0] - 1)) == 16
    spec = _spec(tiny_catalog.root, tmp_path / "run", tiny_catalog.area_bounds,
                 limits={"max_task_memory": chunk_need})
    report = _run(spec, fuse_chunks=True)
    assert (report.tasks, report.compute_tasks) == (16, 16)


# --------------------------------------------------------------------------- runs


def test_a_fused_run_writes_the_same_stores_as_one_task_per_chunk(tiny_catalog, tmp_path):
    methods = tuple(METHODS)
    seen: list[tuple[int, int]] = []
    fused = _spec(tiny_catalog.root, tmp_path / "fused", tiny_catalog.area_bounds,
                  methods=methods)
    report = _run(fused, fuse_chunks=True, progress=lambda d, t: seen.append((d, t)))
    assert report.tasks == 16 and seen[-1] == (16, 16) and len(seen) == 4  # 4 jobs of 4 chunks
    alone = _spec(tiny_catalog.root, tmp_path / "alone", tiny_catalog.area_bounds,
                  methods=methods)
    other = _run(alone, fuse_chunks=False)
    assert (report.compute_tasks, other.compute_tasks, other.tasks) == (4, 16, 16)
    assert report.scenes_used == other.scenes_used and report.pixels_written == \
        other.pixels_written
    for m in methods:
        a, b = _files(tmp_path / "fused" / f"{m}.zarr"), _files(tmp_path / "alone" / f"{m}.zarr")
        assert a.keys() == b.keys() and len(a) > 16, m
        assert [k for k in a if a[k] != b[k]] == [], m


def test_a_run_on_a_scheduler_address_fuses_for_the_workers_it_finds(cluster, tiny_catalog,
                                                                        tmp_path):
    """An existing scheduler (``--scheduler``): the run counts its workers' threads once
    connected (2 x 1 here), so 16 chunks of 128 px are 4 tasks, as on a local cluster."""
    from pipeline.engine.clusters.options import ClusterOptions

    spec = _spec(tiny_catalog.root, tmp_path, tiny_catalog.area_bounds)
    options = RunOptions(cluster=ClusterOptions(scheduler=cluster.scheduler.address))
    report = run_workflow(spec, options=options)
    assert report.status == "success", report.error
    assert (report.tasks, report.compute_tasks) == (16, 4)


@pytest.mark.parametrize("chunk", [256, 512])
def test_larger_chunks_fuse_only_up_to_the_read_side(tiny_catalog, tmp_path, chunk):
    spec = _spec(tiny_catalog.root, tmp_path, tiny_catalog.area_bounds)
    spec = spec.model_copy(update={"grid": spec.grid.model_copy(update={"chunk": chunk})})
    plan = _plan(spec)
    blocks = [b for b in fuse(plan.tasks, plan.grid, plan.outputs, min_tasks=1)
              if isinstance(b, Block)]
    # 400 px: 2 x 2 chunks of 256 (one block of 512 px), a single 512 px chunk (nothing to fuse)
    assert [max(b.task.chunk.height, b.task.chunk.width) for b in blocks] == (
        [400] if chunk == 256 else [])
    assert np.all([b.task.chunk.height <= plan.outputs.read_side for b in blocks])
