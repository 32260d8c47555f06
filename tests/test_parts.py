"""A chunk whose time-slot stack exceeds the budget is computed in parts: the same bytes as the
whole chunk, for every method that needs the stack, and memory that follows the budget, not the
chunk size or the number of observations."""

from __future__ import annotations

import dataclasses
import tracemalloc

import numpy as np
import pytest

from tests.conftest import make_spec_dict

STACKED = {
    "median": {"method": "median"},
    "percentile": {"method": "percentile", "q": 25},
    "medoid": {"method": "medoid"},
    "latest+blend": {"method": "latest", "blend": {"width": 12}},
    "best-pixel+blend": {"method": "best-pixel", "blend": {"width": 20}},
}


def _plan(tiny_catalog, tmp_path, mosaics: list[dict], *, chunk: int = 512, cube: bool = False):
    from pipeline.engine.run import discover, outputs_of, target_grid
    from pipeline.plan.chunks import make_plan
    from pipeline.spec.workflow import spec_from_dict

    d = make_spec_dict(tiny_catalog.root, tmp_path, bounds=tiny_catalog.area_bounds,
                       chunk=chunk, cube=cube)
    d["products"]["mosaic"] = {"store": str(tmp_path / "m0.zarr"), **mosaics[0]}
    if mosaics[1:]:
        d["products"]["mosaics"] = [{"store": str(tmp_path / f"m{i}.zarr"), **m}
                                    for i, m in enumerate(mosaics[1:], 1)]
    spec = spec_from_dict(d, base_dir=tmp_path)
    scenes = list(discover(spec).scenes)
    return make_plan(scenes, grid=target_grid(spec, scenes), outputs=outputs_of(spec))


def test_parts_tile_the_chunk_and_grow_by_the_halo(tiny_catalog, tmp_path):
    from pipeline.plan.chunks import MIN_PART, parts, stack_bytes

    plan = _plan(tiny_catalog, tmp_path, [STACKED["best-pixel+blend"]])
    (task,) = plan.tasks  # the tiny grid is one chunk
    c, halo, t = task.chunk, plan.outputs.halo, len(task.slots)
    assert halo > 0
    whole = stack_bytes(t, 4, task.grid_read.height, task.grid_read.width)
    assert parts(task, dataclasses.replace(plan.outputs, stack_budget=whole)) == (task,)
    budget = whole // 3
    pieces = parts(task, dataclasses.replace(plan.outputs, stack_budget=budget))
    assert len(pieces) > 1
    covered = np.zeros((c.height, c.width), np.int32)
    for p in pieces:
        covered[p.chunk.y0 - c.y0:p.chunk.y0 - c.y0 + p.chunk.height,
                p.chunk.x0 - c.x0:p.chunk.x0 - c.x0 + p.chunk.width] += 1
        w = p.grid_read  # the part grown by the halo where the chunk's read grid allows
        assert w.y0 == max(p.chunk.y0 - halo, task.grid_read.y0)
        assert w.x0 + w.width == min(p.chunk.x0 + p.chunk.width + halo,
                                     task.grid_read.x0 + task.grid_read.width)
        assert min(p.chunk.height, p.chunk.width) >= MIN_PART // 2  # no slivers
        # a part's geotransform puts its first pixel where the chunk's pixel is
        a, _, x0, _, e, y0 = c.transform
        assert p.chunk.transform[2] == pytest.approx(x0 + a * (p.chunk.x0 - c.x0))
        assert p.chunk.transform[5] == pytest.approx(y0 + e * (p.chunk.y0 - c.y0))
    np.testing.assert_array_equal(covered, 1)  # every pixel in exactly one part


def _assert_the_whole_chunks(task, whole_outputs, outputs) -> None:
    """``task`` computed with ``outputs`` gives the whole chunk's mosaics, byte for byte, and
    the same scenes used and failures."""
    from pipeline.engine.chunk import compute_chunk
    from pipeline.io.reader import RasterReader

    reader = RasterReader()
    whole = compute_chunk(task, outputs=whole_outputs, reader=reader)
    other = compute_chunk(task, outputs=outputs, reader=reader)
    reader.close()
    assert other.used == whole.used and other.failures == whole.failures
    for w, p in zip(whole.mosaics, other.mosaics, strict=True):
        assert w.keys() == p.keys()
        for layer in w:
            assert p[layer].dtype == w[layer].dtype
            np.testing.assert_array_equal(p[layer], w[layer], err_msg=layer)
    assert np.isfinite(whole.mosaics[0]["bands"]).mean() > 0.5  # the chunk has data


@pytest.mark.parametrize("mosaic", list(STACKED.values()), ids=list(STACKED))
def test_parts_give_the_whole_chunks_bytes(tiny_catalog, tmp_path, mosaic):
    from pipeline.plan.chunks import parts

    plan = _plan(tiny_catalog, tmp_path, [mosaic, {"method": "latest"}])
    (task,) = plan.tasks
    whole_outputs = dataclasses.replace(plan.outputs, stack_budget=2**40)
    part_outputs = dataclasses.replace(plan.outputs, stack_budget=2 * 2**20)
    assert len(parts(task, part_outputs)) >= 4
    _assert_the_whole_chunks(task, whole_outputs, part_outputs)


@pytest.mark.parametrize("mosaic", list(STACKED.values()), ids=list(STACKED))
@pytest.mark.parametrize("dilate", [0, 2])
def test_a_chunk_read_in_regions_gives_the_whole_chunks_bytes(tiny_catalog, tmp_path, mosaic,
                                                               dilate):
    """A chunk larger than ``read_side`` is read region by region (pipeline.engine.parts
    read_regions): the same mosaics, scenes used and failures as the whole chunk read at once,
    with cloud dilation and blending halos crossing the regions' edges."""
    from pipeline.engine.parts import read_regions
    from pipeline.plan.calibration import Masking
    from pipeline.plan.chunks import parts

    plan = _plan(tiny_catalog, tmp_path, [mosaic, {"method": "latest"}])
    (task,) = plan.tasks
    masking = Masking(classes=plan.outputs.masking.classes, dilate=dilate)
    base = dataclasses.replace(plan.outputs, masking=masking)
    whole_outputs = dataclasses.replace(base, stack_budget=2**40)
    region_outputs = dataclasses.replace(base, stack_budget=2 * 2**20, read_side=160)
    pieces = parts(task, region_outputs)
    regions = read_regions(task, pieces, region_outputs)
    assert len(regions) >= 4, regions
    # every part in exactly one region, inside its read grid
    assert sorted(i for _, members in regions for i in members) == list(range(len(pieces)))
    halo = 2 * region_outputs.halo
    for grid, members in regions:
        # read_side tall, twice that wide (whole parts, their halo included)
        assert grid.height <= 160 + halo and grid.width <= 2 * 160 + halo
        for i in members:
            g = pieces[i].grid_read
            assert grid.y0 <= g.y0 and g.y0 + g.height <= grid.y0 + grid.height
            assert grid.x0 <= g.x0 and g.x0 + g.width <= grid.x0 + grid.width
    assert any(grid.width > grid.height for grid, _ in regions)
    _assert_the_whole_chunks(task, whole_outputs, region_outputs)


@pytest.mark.parametrize("mosaic", [STACKED["median"], STACKED["best-pixel+blend"]],
                         ids=["median", "best-pixel+blend"])
@pytest.mark.parametrize("threads", [2, 3])
def test_threads_sharing_a_regions_slots_give_the_whole_chunks_bytes(tiny_catalog, tmp_path,
                                                                     monkeypatch, mosaic,
                                                                     threads):
    """On a worker with spare threads, each region's slots are shared out among them (each
    thread every n-th slot, a plane of its own): the same mosaics, scenes used and failures as
    the whole chunk read at once by one thread."""
    from pipeline.engine import parts as parts_mod
    from pipeline.plan.chunks import parts

    plan = _plan(tiny_catalog, tmp_path, [mosaic, {"method": "latest"}])
    (task,) = plan.tasks
    assert len(task.slots) > threads
    whole_outputs = dataclasses.replace(plan.outputs, stack_budget=2**40)
    region_outputs = dataclasses.replace(plan.outputs, stack_budget=2 * 2**20, read_side=160)
    assert len(parts_mod.read_regions(task, parts(task, region_outputs), region_outputs)) >= 2
    calls: list[range] = []
    read_region = parts_mod._read_region

    def spy(task, pieces, region, slots, *args):
        calls.append(slots)
        return read_region(task, pieces, region, slots, *args)

    monkeypatch.setattr(parts_mod, "_read_region", spy)
    monkeypatch.setattr(parts_mod, "spare_threads", lambda: threads)
    _assert_the_whole_chunks(task, whole_outputs, region_outputs)
    # the region reads (the whole chunk's read, one thread, is not in parts): each region's
    # slots split into `threads` interleaved shares
    region_calls = [c for c in calls if c.step == threads]
    assert len(region_calls) >= 2 * threads
    assert sorted(k for c in region_calls[:threads] for k in c) == list(range(len(task.slots)))


def test_a_chunk_no_larger_than_read_side_or_warped_by_gdal_is_one_region(tiny_catalog,
                                                                          tmp_path):
    from pipeline.engine.parts import read_regions
    from pipeline.plan.chunks import parts

    plan = _plan(tiny_catalog, tmp_path, [{"method": "median"}])
    (task,) = plan.tasks
    small = dataclasses.replace(plan.outputs, stack_budget=2 * 2**20)
    pieces = parts(task, small)
    assert len(pieces) >= 4
    assert read_regions(task, pieces, small) == [(task.grid_read, tuple(range(len(pieces))))]
    bilinear = dataclasses.replace(small, read_side=160, resampling="bilinear")
    assert len(read_regions(task, pieces, bilinear)) == 1
    assert len(read_regions(task, pieces, dataclasses.replace(bilinear,
                                                              resampling="nearest"))) >= 4


def test_a_cube_and_a_median_in_parts_write_the_whole_chunks_stores(tiny_catalog, tmp_path):
    """With a cube, the slots stream into it first and the median is computed in parts
    after (a second read): both stores equal those of the whole-chunk task."""
    import zarr

    from pipeline.engine.chunk import process_chunk
    from pipeline.engine.run import create_stores
    from pipeline.io.reader import RasterReader
    from pipeline.plan.chunks import parts

    stores = {}
    for label, budget in (("whole", 2**40), ("parts", 2 * 2**20)):
        out = tmp_path / label
        plan = _plan(tiny_catalog, out, [{"method": "median"}], cube=True)
        outputs = dataclasses.replace(plan.outputs, stack_budget=budget)
        assert (len(parts(plan.tasks[0], outputs)) > 1) == (label == "parts")
        create_stores(plan, {})
        reader = RasterReader()
        summary = process_chunk(plan.tasks[0], outputs=outputs, reader=reader)
        reader.close()
        assert summary.failures == ()
        stores[label] = out
    for name in ("cube.zarr", "m0.zarr"):
        a = zarr.open_group(str(stores["whole"] / name), mode="r")
        b = zarr.open_group(str(stores["parts"] / name), mode="r")
        for key, arr in a.arrays():
            np.testing.assert_array_equal(arr[...], b[key][...], err_msg=f"{name}/{key}")


def test_memory_follows_the_budget_not_the_stack(tiny_catalog, tmp_path):
    """60 observations on one 400 × 400 chunk: a whole median stack of ~150 MiB; in parts the
    task's peak stays near the budget plus the assembled mosaic."""
    from pipeline.engine.chunk import compute_chunk
    from pipeline.io.reader import RasterReader
    from tests.test_mosaic_run import _task_with_slots

    task, outputs = _task_with_slots(tiny_catalog, 60, ["median"], tmp_path)
    plan = _plan(tiny_catalog, tmp_path / "big", [{"method": "median"}])
    (big,) = plan.tasks  # the whole 400 × 400 grid, with the 60 slots of _task_with_slots
    task = dataclasses.replace(big, slots=task.slots)
    budget = 8 * 2**20
    peaks = {}
    reader = RasterReader()
    for label, b in (("whole", 2**40), ("parts", budget)):
        o = dataclasses.replace(outputs, stack_budget=b)
        compute_chunk(task, outputs=o, reader=reader)  # warm up (JIT, index maps)
        tracemalloc.start()
        out = compute_chunk(task, outputs=o, reader=reader)
        peaks[label] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert int(out.mosaics[0]["count"].max()) == 60
    reader.close()
    c = task.chunk
    stack = 60 * 4 * c.height * c.width * 4
    assembled = c.height * c.width * (4 * 4 + 12)
    print(f"whole: {peaks['whole'] / 2**20:.0f} MiB, parts: {peaks['parts'] / 2**20:.0f} MiB "
          f"(stack {stack / 2**20:.0f} MiB, budget {budget / 2**20:.0f} MiB)")
    assert peaks["whole"] > stack
    assert peaks["parts"] < 3 * budget + 2 * assembled < stack / 2


_FULL_DISK_CHILD = """
import dataclasses, resource, signal, sys
from pathlib import Path
sys.path.insert(0, sys.argv[3])
from tests.test_parts import _plan
from pipeline.engine.chunk import compute_chunk
from pipeline.errors import StoreUnwritable
from pipeline.io.reader import RasterReader

class Cat:
    root = Path(sys.argv[1])
    area_bounds = tuple(float(v) for v in sys.argv[2].split(","))

plan = _plan(Cat, Path(sys.argv[4]), [{"method": "median"}])
outputs = dataclasses.replace(plan.outputs, stack_budget=2 * 2**20)
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
resource.setrlimit(resource.RLIMIT_FSIZE, (256 * 1024, resource.RLIM_INFINITY))
try:
    compute_chunk(plan.tasks[0], outputs=outputs, reader=RasterReader())
except StoreUnwritable as exc:
    print("REFUSED", exc.reason, exc.message)
"""


def test_a_full_temporary_folder_fails_the_chunk_naming_the_folder_and_the_fix(tiny_catalog,
                                                                             tmp_path):
    """The parts' scratch file cannot grow (a file-size limit stands in for a full disk): the
    chunk fails with store_unwritable naming the temporary folder, never a partial mosaic."""
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    bounds = ",".join(str(v) for v in tiny_catalog.area_bounds)
    done = subprocess.run(
        [sys.executable, "-c", _FULL_DISK_CHILD, str(tiny_catalog.root), bounds, str(repo),
         str(tmp_path)], capture_output=True, text=True, timeout=120, cwd=repo,
        env={**__import__("os").environ, "TMPDIR": str(tmp_path)},
    )
    assert "REFUSED store_unwritable" in done.stdout, done.stdout + done.stderr
    assert str(tmp_path) in done.stdout
    assert "TMPDIR" in done.stdout and "grid.chunk" in done.stdout
    assert list(tmp_path.glob("aquila-stack-*")) == []  # the scratch file was never linked


def _blocks(tmp_path, task=None):
    import tempfile

    from pipeline.engine.parts import _Blocks

    scratch = tempfile.TemporaryFile(dir=tmp_path)  # noqa: SIM115 - the caller closes it
    return scratch, _Blocks(scratch.fileno(), task)


def test_the_scratch_files_space_is_reserved_a_step_ahead_not_for_the_whole_stack(
        tmp_path, monkeypatch):
    """Each put finds its space reserved (fallocate(2): ext4 appends ran 5-10x slower without,
    in some runs); at most one step is reserved beyond what is written; every block reads back
    as written."""
    import os

    from pipeline.engine import parts

    monkeypatch.setattr(parts, "PREALLOCATE", 4 * 2**20)
    scratch, blocks = _blocks(tmp_path)
    rng = np.random.default_rng(0)
    written = {}
    with scratch:
        for k in range(11):
            a = rng.random((3, 128, 256 + k)).astype(np.float32)  # ~0.4 MiB, sizes differ
            blocks.put(("v", 0, k), a)
            written[k] = a
            if blocks.reserved < 0:
                pytest.skip(f"{tmp_path}'s file system cannot reserve space (fallocate)")
            size = os.fstat(scratch.fileno()).st_size
            assert blocks.end <= blocks.reserved == size, (k, blocks.end, blocks.reserved, size)
            assert blocks.reserved - blocks.end < parts.PREALLOCATE
        assert blocks.reserved == 2 * parts.PREALLOCATE  # 11 blocks of ~0.4 MiB: two steps
        for k, a in written.items():
            back = np.empty_like(a)
            assert blocks.get(("v", 0, k), back)
            np.testing.assert_array_equal(back, a)
        assert not blocks.get(("v", 1, 0), np.empty_like(a))  # no block: untouched, False


_NO_ROOM_FOR_A_STEP_CHILD = """
import resource, signal, sys
import numpy as np
sys.path.insert(0, sys.argv[1])
from tests.test_parts import _blocks
from pathlib import Path

signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
resource.setrlimit(resource.RLIMIT_FSIZE, (8 * 2**20, resource.RLIM_INFINITY))
scratch, blocks = _blocks(Path(sys.argv[2]))
a = np.arange(2**18, dtype=np.float32)  # 1 MiB
for k in range(6):
    blocks.put(("v", 0, k), a + k)
ok = all(blocks.get(("v", 0, k), b := np.empty_like(a)) and (b == a + k).all() for k in range(6))
print("RESERVED", blocks.reserved, "END", blocks.end, "READ BACK", ok)
"""


def test_a_scratch_file_without_room_for_a_step_is_written_without_reserving(tmp_path):
    """Less room than a reservation step (a file-size limit of 8 MiB stands in for a nearly
    full disk) is no failure: the blocks are written without reserving, as they fit."""
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-c", _NO_ROOM_FOR_A_STEP_CHILD, str(repo),
                           str(tmp_path)], capture_output=True, text=True, timeout=60, cwd=repo)
    assert f"RESERVED -1 END {6 * 2**20} READ BACK True" in done.stdout, (
        done.stdout + done.stderr)
