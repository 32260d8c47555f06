"""Every mosaic method, end to end: each mosaic equals the NumPy reference applied to the cube
written by the same run, and chunk borders are seamless (halo) for best-pixel and blending."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import make_spec_dict
from tests.references import mosaic as ref
from tests.references.kernels import composite_latest_reference, composite_median_reference
from tests.test_run import BANDS, open_store, run

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
    "best-pixel": {"priority": ["north"]},
}


@pytest.fixture(scope="module")
def all_methods(tiny_catalog, tmp_path_factory):
    out = tmp_path_factory.mktemp("methods")
    spec = make_spec_dict(tiny_catalog.root, out, bounds=tiny_catalog.area_bounds, chunk=128)
    mosaics = [{"store": str(out / f"{m}.zarr"), "method": m, **p} for m, p in METHODS.items()]
    spec["products"]["mosaic"] = mosaics[0]
    spec["products"]["mosaics"] = mosaics[1:]
    report = run(spec, direct=True)
    assert report.status == "success", report.error
    cube = open_store(out / "cube.zarr").load()
    stack = np.stack([cube[b].values for b in BANDS], axis=1)  # (T, B, Y, X)
    return out, cube, stack


def _check(result, expected, *, source=True):
    bands = np.stack([result[b].values for b in BANDS])
    np.testing.assert_array_equal(bands, expected[0])
    if source:
        np.testing.assert_array_equal(result["source"].values, expected[1])
        np.testing.assert_array_equal(result["count"].values, expected[2])
    else:
        np.testing.assert_array_equal(result["count"].values, expected[1])


@pytest.mark.parametrize(
    ("method", "reference", "single"),
    [
        ("median", composite_median_reference, False),
        ("latest", composite_latest_reference, True),
        ("earliest", ref.composite_earliest_reference, True),
        ("mean", ref.composite_mean_reference, False),
        ("min", ref.composite_min_reference, False),
        ("max", ref.composite_max_reference, False),
        ("medoid", ref.composite_medoid_reference, True),
    ],
)
def test_method_equals_reference_on_the_cube(all_methods, method, reference, single):
    out, _, stack = all_methods
    _check(open_store(out / f"{method}.zarr"), reference(stack), source=single)


def test_percentile(all_methods):
    out, _, stack = all_methods
    win = (slice(100, 200), slice(250, 350))  # the reference is slow: a window across a border
    result = open_store(out / "percentile.zarr").isel(y=win[0], x=win[1])
    _check(result, ref.composite_percentile_reference(stack[..., win[0], win[1]], 25),
           source=False)


def test_priority_follows_the_collection_order(all_methods):
    out, cube, stack = all_methods
    order = ["south", "east", "north"]
    rank = np.array([order.index(c) for c in cube.collection.values])
    _check(open_store(out / "priority.zarr"), ref.composite_priority_reference(stack, rank))


def test_quality_picks_the_highest_ndvi(all_methods):
    out, _, stack = all_methods
    key = ref.ndvi_reference(stack, BANDS.index("red"), BANDS.index("nir"))
    _check(open_store(out / "quality.zarr"), ref.composite_quality_reference(stack, key))


def test_best_pixel_lineage_lets_a_user_name_the_scene(all_methods, tiny_catalog):
    out, cube, stack = all_methods
    m = open_store(out / "best-pixel.zarr")
    source = m["source"].values
    assert (source >= 0).mean() > 0.99
    yy, xx = np.nonzero(source >= 0)
    for b in BANDS:  # the value is the chosen slot's value
        np.testing.assert_array_equal(m[b].values[yy, xx], cube[b].values[source[yy, xx], yy, xx])
    assert np.isfinite(m["score"].values[yy, xx]).all()
    # the README's three lines: pixel -> slot -> scene id and provider
    y, x = 123, 234
    slot = m.attrs["sources"][int(m["source"][y, x])]
    ids = {s.item_id: s.collection for s in tiny_catalog.scenes}
    assert slot["scenes"][0] in ids and slot["provider"] and ids[slot["scenes"][0]] == slot[
        "collection"]


@pytest.mark.parametrize(
    "mosaic",
    [
        {"method": "best-pixel"},
        {"method": "latest", "blend": {"width": 12}},
        {"method": "best-pixel", "blend": {"width": 20}},
    ],
    ids=["best-pixel", "latest+blend", "best-pixel+blend"],
)
def test_chunk_borders_equal_one_big_chunk(tiny_catalog, tmp_path, mosaic):
    results = {}
    for chunk in (128, 512):  # 4 km at 10 m: 4 × 4 chunks, or a single chunk
        out = tmp_path / f"c{chunk}"
        spec = make_spec_dict(tiny_catalog.root, out, bounds=tiny_catalog.area_bounds,
                              chunk=chunk, cube=False)
        spec["products"]["mosaic"] = {"store": str(out / "m.zarr"), **mosaic}
        report = run(spec, direct=True)
        assert report.status == "success", report.error
        results[chunk] = open_store(out / "m.zarr").load()
    small, big = results[128], results[512]
    for var in small.data_vars:
        np.testing.assert_array_equal(small[var].values, big[var].values, err_msg=var)
    if mosaic["method"] == "latest" and "blend" in mosaic:
        # blending really happened, including at chunk borders (best-pixel already prefers
        # pixels far inside their scene, so its main weight may stay 1 everywhere)
        w = small["weight"].values
        assert np.nanmin(w) < 1.0
        border = np.zeros(w.shape, bool)
        border[127:129, :] = border[:, 127:129] = True
        assert (w[border] < 1).any() or np.isnan(w[border]).all()


STREAMABLE = ["latest", "earliest", "priority", "mean", "min", "max", "quality", "best-pixel"]


@pytest.mark.parametrize("method", STREAMABLE)
def test_streaming_path_gives_the_stack_paths_bytes(all_methods, tiny_catalog, tmp_path, method):
    """Alone, a streamable method folds slot by slot; in all_methods (with a median) it ran
    over the whole stack. Both must give identical bytes."""
    from pipeline.engine.run import outputs_of
    from pipeline.plan.chunks import can_stream
    from pipeline.spec.workflow import spec_from_dict

    out, _, _ = all_methods
    spec = make_spec_dict(tiny_catalog.root, tmp_path, bounds=tiny_catalog.area_bounds,
                          chunk=128, cube=False)
    spec["products"]["mosaic"] = {"store": str(tmp_path / "m.zarr"), "method": method,
                                  **METHODS[method]}
    assert can_stream(outputs_of(spec_from_dict(spec, base_dir=tmp_path)).mosaics)
    report = run(spec, direct=True)
    assert report.status == "success", report.error
    streamed = open_store(tmp_path / "m.zarr").load()
    stacked = open_store(out / f"{method}.zarr").load()
    assert set(streamed.data_vars) == set(stacked.data_vars)
    for var in stacked.data_vars:
        np.testing.assert_array_equal(streamed[var].values, stacked[var].values, err_msg=var)


def _task_with_slots(tiny_catalog, n_slots: int, methods: list[str], tmp_path,
                     collection: str = "north"):
    """One 128-px chunk task whose n_slots slots each hold the same north scene (distinct
    times), so the number of observations is large while reads stay cheap."""
    import dataclasses
    import datetime as dt

    from pipeline.engine.run import discover, outputs_of, target_grid
    from pipeline.plan.chunks import SlotScenes, TimeSlot, make_plan
    from pipeline.spec.workflow import spec_from_dict

    spec = spec_from_dict(
        {**make_spec_dict(tiny_catalog.root, tmp_path, bounds=tiny_catalog.area_bounds,
                          chunk=128, cube=False),
         "products": {"mosaic": {"store": str(tmp_path / "a.zarr"), "method": methods[0],
                                 **METHODS[methods[0]]},
                      "mosaics": [{"store": str(tmp_path / f"{m}.zarr"), "method": m,
                                   **METHODS[m]} for m in methods[1:]]}},
        base_dir=tmp_path,
    )
    scenes = list(discover(spec).scenes)
    plan = make_plan(scenes, grid=target_grid(spec, scenes), outputs=outputs_of(spec))
    task = plan.tasks[5]  # an interior chunk
    scene = next(s for ss in task.slots for s in ss.scenes if s.collection == collection)
    t0 = dt.datetime(2025, 6, 1, 10, tzinfo=dt.UTC)
    slots = tuple(
        SlotScenes(i, (scene,), TimeSlot(i, collection, t0.date(), t0 + dt.timedelta(hours=i),
                                         (scene.id,), provider=scene.provider,
                                         sun_elevation=60.0, off_nadir=2.0))
        for i in range(n_slots)
    )
    return dataclasses.replace(task, slots=slots), plan.outputs


def _peak_bytes(task, outputs) -> tuple[int, int]:
    import tracemalloc

    from pipeline.engine.chunk import compute_chunk
    from pipeline.io.reader import RasterReader

    reader = RasterReader()
    compute_chunk(task, outputs=outputs, reader=reader, on_slot=lambda i, a: None)  # warm up
    tracemalloc.start()
    out = compute_chunk(task, outputs=outputs, reader=reader, on_slot=lambda i, a: None)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    reader.close()
    assert all(int(m["count"].max()) == len(task.slots) for m in out.mosaics)
    return peak, len(task.slots)


def test_streaming_memory_does_not_grow_with_observations(tiny_catalog, tmp_path):
    """200 observations in one chunk: the streaming methods stay under a bound that does not
    depend on the number of observations; the stack methods hold the whole stack."""
    streaming = ["latest", "mean", "priority", "best-pixel"]
    peaks = {}
    for n in (20, 200):
        task, outputs = _task_with_slots(tiny_catalog, n, streaming, tmp_path / f"s{n}")
        peaks[n], _ = _peak_bytes(task, outputs)
    work = task.grid_read  # the chunk plus best-pixel's halo
    plane = 4 * work.height * work.width * 4  # one (band, y, x) float32 array
    # stated bound: per mosaic ~4 planes of state (values, float64 key/best, count/source),
    # plus the slot buffer, the scene scratch, index maps and source windows (~8 planes)
    bound = (4 * len(streaming) + 8) * plane
    print(f"streaming: peak {peaks[20] / 2**20:.1f} MiB at 20 observations, "
          f"{peaks[200] / 2**20:.1f} MiB at 200 (bound {bound / 2**20:.1f} MiB; "
          f"a stack of 200 would be {200 * plane / 2**20:.0f} MiB)")
    assert peaks[200] < bound
    assert peaks[200] - peaks[20] < plane / 4, "streaming memory grew with the observations"
    task_m, outputs_m = _task_with_slots(tiny_catalog, 200, ["median"], tmp_path / "m")
    peak_m, _ = _peak_bytes(task_m, outputs_m)
    stack_m = 200 * 4 * task_m.grid_read.height * task_m.grid_read.width * 4
    print(f"median (stack), 200 observations: peak {peak_m / 2**20:.1f} MiB")
    assert peak_m > stack_m  # the stack path does hold every observation


def test_a_profiles_band_resampling_overrides_the_workflows(tiny_catalog, tmp_path):
    """BandSource.resampling (from a sensor profile) wins over grid.resampling for that band."""
    import dataclasses

    from pipeline.engine.chunk import read_scene
    from pipeline.io.reader import RasterReader

    task, _ = _task_with_slots(tiny_catalog, 1, ["latest"], tmp_path, collection="south")
    scene = task.slots[0].scenes[0]  # 30 m onto 10 m: bilinear and nearest differ
    chunk = task.grid_read
    bilinear = dataclasses.replace(
        scene, bands=tuple(dataclasses.replace(b, resampling="bilinear") for b in scene.bands))
    reader = RasterReader()
    by_profile, _ = read_scene(bilinear, chunk, resampling="nearest", reader=reader)
    by_workflow, _ = read_scene(scene, chunk, resampling="bilinear", reader=reader)
    nearest, _ = read_scene(scene, chunk, resampling="nearest", reader=reader)
    np.testing.assert_array_equal(by_profile, by_workflow)
    assert not np.array_equal(by_profile, nearest, equal_nan=True)
