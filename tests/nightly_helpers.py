"""Shared by the nightly tests: specs, reference runs and store comparisons.

The expectation a nightly store is compared with is independent of the nightly code: a plain
``aquila run`` (Zarr, no ledger, no diff) over the same catalog, or another nightly store.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import xarray as xr

from pipeline.demo import generate_catalog
from pipeline.engine.run import RunOptions, run_workflow
from pipeline.products.transaction import open_night
from pipeline.spec.workflow import spec_from_dict
from tests.arrivals import reprocess
from tests.conftest import make_spec_dict

MOSAICS = {"mosaic": "median", "latest": "latest"}  # group -> method
REPROCESSED = "S2X_REPROCESSED_L2A"


def make_arrivals(full: Path) -> tuple[Path, list[list[str]], str]:
    """A tiny catalog of 9 scenes plus a reprocessed publication of one north scene, and the
    order in which they arrive: seven nights, one empty, one late arrival, one reprocessing.
    Returns (catalog folder, item ids per night, the north scene the reprocessing replaces)."""
    cat = generate_catalog(full, preset="tiny", scenes_per_provider=3)
    by_time = [s.item_id for s in sorted(cat.scenes, key=lambda s: s.datetime)]
    north = [
        s.item_id for s in sorted(cat.scenes, key=lambda s: s.datetime) if s.collection == "north"
    ]
    reprocess(full, north[0], new_id=REPROCESSED)
    late = by_time[2]  # acquired early, published on night 4: inserted before later slots
    first = [i for i in by_time[:5] if i != late]
    nights = [
        first[:3],  # 1
        first[3:],  # 2: appended after them
        [],  # 3: nothing new
        [late, by_time[5]],  # 4: a late arrival renumbers the later slots
        [REPROCESSED],  # 5: a newer baseline replaces its slot's scene
        [by_time[6], by_time[7]],  # 6
        [by_time[8]],  # 7
    ]
    assert sorted(i for n in nights for i in n) == sorted([*by_time, REPROCESSED])
    return full, nights, north[0]


def night_spec(
    catalog: Path,
    out: Path,
    *,
    store: Path | None = None,
    chunk=64,
    res=20.0,
    bounds=(500000, 5000000, 504000, 5004000),
    mosaics=None,
    **extra,
) -> dict:
    """A small spec: a cube, a median mosaic and a latest mosaic (with its ``source`` layer)."""
    mosaics = mosaics or MOSAICS
    (first, method), *rest = mosaics.items()
    d = make_spec_dict(
        catalog, out, bounds=bounds, method=method, chunk=chunk, resolution=res, **extra
    )
    target = {"best_pixel": {"target_date": "2025-06-15"}}
    d["products"]["mosaic"]["store"] = str(out / f"{first}.zarr")
    if method == "best-pixel":
        d["products"]["mosaic"].update(target)
    d["products"]["mosaics"] = [
        {"store": str(out / f"{g}.zarr"), "method": m, **(target if m == "best-pixel" else {})}
        for g, m in rest
    ]
    return d


def full_run(spec_dict: dict, out: Path) -> Path:
    """The plain ``aquila run`` of a spec, in-process, into ``out``; returns ``out``."""
    d = json.loads(json.dumps(spec_dict))
    d["products"]["cube"]["store"] = str(out / "cube.zarr")
    d["products"]["mosaic"]["store"] = str(out / Path(d["products"]["mosaic"]["store"]).name)
    for m in d["products"].get("mosaics", []):
        m["store"] = str(out / Path(m["store"]).name)
    report = run_workflow(spec_from_dict(d, base_dir=out), options=RunOptions(direct=True))
    assert report.status == "success", report.error
    return out


def load(store_or_session, group: str) -> xr.Dataset:
    """A product of a plain run's folder (Path) or of a nightly store's session."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        if isinstance(store_or_session, Path):
            return xr.open_zarr(store_or_session / f"{group}.zarr").load()
        return xr.open_zarr(store_or_session.store, group=group, consolidated=False).load()


def assert_same(a, b, groups=("cube", *MOSAICS)) -> None:
    """Equal products: every variable's values (NaN = NaN) and coordinates, the scenes used,
    and each mosaic's ``sources`` table (slot index -> time, collection, provider, scenes)."""
    for group in groups:
        x, y = load(a, group), load(b, group)
        assert set(x.variables) == set(y.variables), (group, set(x.variables) ^ set(y.variables))
        for name in y.variables:
            u, v = x[name].values, y[name].values
            assert u.shape == v.shape, (group, name, u.shape, v.shape)
            if u.dtype.kind in "OUT" or v.dtype.kind in "OUT":
                assert [str(e) for e in u.ravel()] == [str(e) for e in v.ravel()], (group, name)
            else:
                np.testing.assert_array_equal(u, v, err_msg=f"{group}/{name}")
        if "sources" in y.attrs or "sources" in x.attrs:
            assert x.attrs["sources"] == y.attrs["sources"], group
        assert x.attrs["aquila:scenes"] == y.attrs["aquila:scenes"], group


def time_strictly_increasing(session) -> bool:
    t = load(session, "cube").time.values
    return bool((np.diff(t) > np.timedelta64(0)).all())


def current(store: Path, run: str | None = None):
    """A read-only session of a nightly store: now, or as of the night of run id ``run``."""
    return open_night(store, run=run)
