"""Layouts written with zarr directly (pipeline/products/layout.py) are byte for byte what
``xarray.Dataset.to_zarr(compute=False)`` + rioxarray wrote before: every key of the store
(zarr.json / .zarray / .zattrs / .zgroup, coordinate chunks) for a cube and a mosaic with
overview levels, in Zarr v3 and v2, and for a nightly store's groups in an Icechunk session.

The expectation is independent of the code under test: :class:`OldWay` below is the xarray
writer as it was (the product's variables, encodings and CF/rioxarray conventions spelled out
again), so a change of either side that alters a byte fails here. GDAL, xarray and rioxarray
read these stores; a metadata drift would be silent anywhere else.
"""

from __future__ import annotations

import datetime as dt
import warnings
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import zarr

from pipeline.plan.chunks import TimeSlot
from pipeline.plan.grid import TargetGrid
from pipeline.plan.methods import mosaic_layers
from pipeline.products.layout import encode_times
from pipeline.products.overviews import (
    level_path,
    level_shape,
    level_transform,
    levels_for,
    multiscales,
)
from pipeline.products.publish import PRODUCT_MARKER
from pipeline.products.store import (
    COMPRESSOR,
    create_cube,
    create_mosaic,
    create_nightly_groups,
    cube_layout,
    mosaic_layout,
)

ATTRS = {"title": "Aquila t", "aquila:run_id": "r1", "aquila:workflow": {"a": [1, 2.5, None]},
         "aquila:status": "incomplete", "n": np.int64(3), "v": np.arange(3)}
# 600 x 520 px in chunks of 128: two overview levels, edge chunks at every level
UTM = TargetGrid("EPSG:32632", (10.0, 0.0, 500000.0, 0.0, -10.0, 5006000.0), (600, 520), 128)
GEOGRAPHIC = TargetGrid("EPSG:4326", (0.001, 0.0, 8.9, 0.0, -0.001, 45.4), (300, 400), 64)


def _slots(n: int = 5, *, fraction: bool = False) -> list[TimeSlot]:
    t0 = dt.datetime(2025, 6, 3, 9, 55, 46, tzinfo=dt.UTC)
    return [
        TimeSlot(i, ("north", "south", "east")[i % 3], (t0 + dt.timedelta(days=i)).date(),
                 t0 + dt.timedelta(days=i, milliseconds=500 * i if fraction else 0), ("s",))
        for i in range(n)
    ]


class OldWay:
    """The layout writers of pipeline/products/store.py before zarr-direct writing (xarray,
    dask.array, rioxarray), kept as the expectation."""

    @staticmethod
    def _axis_attrs(grid: TargetGrid) -> tuple[dict, dict]:
        from pyproj import CRS

        if CRS.from_user_input(grid.crs).is_geographic:
            return ({"standard_name": "latitude", "units": "degrees_north", "axis": "Y",
                     "long_name": "latitude (pixel centre)"},
                    {"standard_name": "longitude", "units": "degrees_east", "axis": "X",
                     "long_name": "longitude (pixel centre)"})
        return ({"standard_name": "projection_y_coordinate", "units": "m", "axis": "Y",
                 "long_name": "y (pixel centre)"},
                {"standard_name": "projection_x_coordinate", "units": "m", "axis": "X",
                 "long_name": "x (pixel centre)"})

    @staticmethod
    def _band_attrs(band: str, quantity: str, what: str = "") -> dict:
        if quantity == "radiance":
            return {"long_name": f"{band} radiance{what}", "units": "W m-2 sr-1 um-1",
                    "standard_name": "toa_outgoing_radiance_per_unit_wavelength"}
        return {"long_name": f"{band} reflectance{what}", "units": "1"}

    @classmethod
    def _base(cls, grid: TargetGrid) -> dict:
        y, x = grid.coords()
        ya, xa = cls._axis_attrs(grid)
        return {"y": ("y", y, ya), "x": ("x", x, xa)}

    @classmethod
    def cube(cls, grid, bands, slots, quantity="reflectance"):
        import dask.array as da
        import xarray as xr

        c = grid.chunk
        coords = cls._base(grid)
        times = np.array([s.time.replace(tzinfo=None) for s in slots], dtype="datetime64[ns]")
        coords["time"] = ("time", times, {"standard_name": "time", "axis": "T",
                                          "long_name": "acquisition time of the slot's scenes"})
        coords["collection"] = ("time", np.array([s.collection for s in slots], dtype=object),
                                {"long_name": "STAC collection of the slot's scenes"})
        data = {b: (("time", "y", "x"),
                    da.full((len(slots), *grid.shape), np.nan, dtype=np.float32,
                            chunks=(1, c, c)),
                    cls._band_attrs(b, quantity)) for b in bands}
        enc: dict[str, Any] = {b: {"chunks": (1, c, c), "compressors": [COMPRESSOR],
                                   "_FillValue": np.nan} for b in bands}
        enc["time"] = {"units": "seconds since 1970-01-01", "dtype": "int64"}
        return xr.Dataset(data, coords=coords), enc

    @classmethod
    def mosaic(cls, grid, bands, method, layers=(), quantity="reflectance"):
        import dask.array as da
        import xarray as xr

        c = grid.chunk
        shape = grid.shape
        data: dict[str, Any] = {
            b: (("y", "x"), da.full(shape, np.nan, dtype=np.float32, chunks=(c, c)),
                {**cls._band_attrs(b, quantity, f" ({method} mosaic)"),
                 "ancillary_variables": " ".join(["count", *layers])}) for b in bands}
        enc: dict[str, Any] = {b: {"chunks": (c, c), "compressors": [COMPRESSOR],
                                   "_FillValue": np.nan} for b in bands}
        data["count"] = (("y", "x"), da.zeros(shape, dtype=np.uint16, chunks=(c, c)),
                         {"long_name": "valid observations per pixel", "units": "1"})
        enc["count"] = {"chunks": (c, c), "compressors": [COMPRESSOR], "fill_value": 0}
        texts = {
            "source": (np.int32, -1, "cube time slot index of the chosen observation (-1: "
                       "none); the 'sources' attribute maps it to time, collection, provider "
                       "and scene ids"),
            "score": (np.float32, np.nan, "best-available-pixel score of the chosen observation"),
            "weight": (np.float32, np.nan,
                       "share of the main source in a seam-blended pixel (0..1)"),
        }
        for layer in layers:
            dtype, fill, text = texts[layer]
            data[layer] = (("y", "x"), da.full(shape, fill, dtype=dtype, chunks=(c, c)),
                           {"long_name": text, "units": "1"})
            key = "_FillValue" if np.issubdtype(dtype, np.floating) else "fill_value"
            enc[layer] = {"chunks": (c, c), "compressors": [COMPRESSOR], key: fill}
        return xr.Dataset(data, coords=cls._base(grid)), enc

    @staticmethod
    def georeferenced(ds, grid, attrs, transform=None):
        import rioxarray  # noqa: F401
        from affine import Affine

        ds = ds.rio.write_crs(grid.crs)
        ds = ds.rio.write_transform(Affine(*(transform or grid.transform)[:6]))
        for name in ds.data_vars:
            if name != "spatial_ref":
                ds[name].attrs["grid_mapping"] = "spatial_ref"
                ds[name].encoding.pop("grid_mapping", None)
        ds.attrs.update(attrs)
        return ds

    @staticmethod
    def for_format(encoding, zarr_format):
        if zarr_format == 3:
            return dict(encoding)
        import numcodecs

        out = {}
        for name, e in encoding.items():
            e = dict(e)
            if "compressors" in e:
                e["compressors"] = [numcodecs.Blosc(cname="lz4", clevel=5,
                                                    shuffle=numcodecs.Blosc.SHUFFLE)]
            if "fill_value" in e:
                e.pop("fill_value")
                e["_FillValue"] = None
            out[name] = e
        return out

    @classmethod
    def overview(cls, ds, encoding, grid, k):
        import dask.array as da
        import xarray as xr

        f = 2**k
        ny, nx = level_shape(grid.shape, k)
        c = grid.chunk // f
        t = level_transform(grid.transform, k)
        coords: dict[str, Any] = {
            "y": ("y", t[5] + t[4] * (np.arange(ny) + 0.5), ds["y"].attrs),
            "x": ("x", t[2] + t[0] * (np.arange(nx) + 0.5), ds["x"].attrs),
        }
        for name, coord in ds.coords.items():
            if name not in ("x", "y", "spatial_ref"):
                coords[str(name)] = coord.variable
        data, enc = {}, {}
        for name, var in ds.data_vars.items():
            if name == "spatial_ref":
                continue
            e = dict(encoding[str(name)])
            fill = e.get("_FillValue", e.get("fill_value", 0))
            chunks = (*(1,) * (var.ndim - 2), c, c)
            data[str(name)] = (var.dims, da.full((*var.shape[:-2], ny, nx), fill,
                                                 dtype=var.dtype, chunks=chunks),
                               {a: v for a, v in var.attrs.items() if a != "grid_mapping"})
            enc[str(name)] = {**e, "chunks": chunks}
        if "time" in encoding and "time" in coords:
            enc["time"] = dict(encoding["time"])
        level = xr.Dataset(data, coords=coords)
        return cls.georeferenced(level, grid, {"aquila:overview_factor": f}, transform=t), enc

    @staticmethod
    def product_attrs(attrs):
        from pipeline._version import __version__

        return {"Conventions": "CF-1.8", "source": f"Aquila {__version__}", **attrs}

    @classmethod
    def write(cls, layout, grid, store, attrs, kind, zarr_format):
        ds, encoding = layout
        levels = levels_for(grid.shape, grid.chunk)
        pyramid = multiscales(grid.shape, grid.transform, levels) if levels else {}
        ds = cls.georeferenced(ds, grid, cls.product_attrs(
            {**attrs, **pyramid, PRODUCT_MARKER: kind}))
        ds.to_zarr(str(store), compute=False, mode="w-", zarr_format=zarr_format,
                   encoding=cls.for_format(encoding, zarr_format), consolidated=False)
        for k in levels:
            level, enc = cls.overview(ds, encoding, grid, k)
            level.to_zarr(str(store), group=level_path(k), compute=False, mode="w-",
                          encoding=cls.for_format(enc, zarr_format), zarr_format=zarr_format,
                          consolidated=False)

    @classmethod
    def nightly(cls, zstore, grid, outputs, groups, slots, time_block, attrs):
        def group(name, layout):
            ds, enc = layout
            cls.georeferenced(ds, grid, cls.product_attrs(attrs)).to_zarr(
                zstore, group=name, compute=False, mode="w", encoding=enc, zarr_format=3,
                consolidated=False)

        ds, enc = cls.cube(grid, outputs.bands, slots, outputs.quantity)
        for name in ("time", "collection"):
            enc.setdefault(name, {})["chunks"] = (4096,)
        ds = ds.assign({b: ds[b].chunk({"time": time_block}) for b in outputs.bands})
        for b in outputs.bands:
            enc[b]["chunks"] = (time_block, grid.chunk, grid.chunk)
        group("cube", (ds, enc))
        for m, name in zip(outputs.mosaics, groups, strict=True):
            layers = mosaic_layers(m.method, blend_width=m.blend_width)
            group(name, cls.mosaic(grid, outputs.bands, m.method, layers, outputs.quantity))


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


def _keys(store: Any) -> dict[str, bytes]:
    """Every key of a zarr store object with its bytes."""
    from zarr.core.buffer import default_buffer_prototype
    from zarr.core.sync import sync

    async def read() -> dict[str, bytes]:
        out = {}
        for key in sorted([k async for k in store.list()]):
            buf = await store.get(key, prototype=default_buffer_prototype())
            out[key] = buf.to_bytes()
        return out

    return sync(read())


def _same(new: dict[str, bytes], old: dict[str, bytes]) -> None:
    assert sorted(new) == sorted(old)
    differ = [k for k in old if new[k] != old[k]]
    assert not differ, {k: (old[k][:400], new[k][:400]) for k in differ[:3]}


def _old(fn, *args, **kwargs):
    with warnings.catch_warnings():  # xarray's own (e.g. the time units it had to change)
        warnings.simplefilter("ignore")
        fn(*args, **kwargs)


@pytest.mark.parametrize("zarr_format", [3, 2])
@pytest.mark.parametrize(("grid", "quantity", "fraction"), [
    (UTM, "reflectance", False),
    (GEOGRAPHIC, "radiance", False),
    (UTM, "reflectance", True),  # sub-second slot times: xarray's finer time units
])
def test_cube_layout_bytes(tmp_path, zarr_format, grid, quantity, fraction):
    slots = _slots(fraction=fraction)
    bands = ("blue", "nir")
    create_cube(tmp_path / "new", grid, bands, slots, attrs=ATTRS, quantity=quantity,
                zarr_format=zarr_format)
    _old(OldWay.write, OldWay.cube(grid, bands, slots, quantity), grid, tmp_path / "old", ATTRS,
         "cube", zarr_format)
    new, old = _files(tmp_path / "new"), _files(tmp_path / "old")
    levels = levels_for(grid.shape, grid.chunk)
    assert levels and all(any(k.startswith(level_path(n)) for k in new) for n in levels)
    _same(new, old)


@pytest.mark.parametrize("zarr_format", [3, 2])
@pytest.mark.parametrize(("method", "blend"), [("best-pixel", 16), ("median", 0)])
def test_mosaic_layout_bytes(tmp_path, zarr_format, method, blend):
    layers = mosaic_layers(method, blend_width=blend)
    bands = ("blue", "green", "red")
    create_mosaic(tmp_path / "new", UTM, bands, method=method, layers=layers, attrs=ATTRS,
                  zarr_format=zarr_format)
    _old(OldWay.write, OldWay.mosaic(UTM, bands, method, layers), UTM, tmp_path / "old", ATTRS,
         f"mosaic ({method})", zarr_format)
    _same(_files(tmp_path / "new"), _files(tmp_path / "old"))


def test_nightly_groups_bytes():
    """Into Icechunk sessions, as a night writes them; each group replaces what it held."""
    import icechunk

    outputs = SimpleNamespace(
        bands=("blue", "red"), quantity="reflectance",
        mosaics=(SimpleNamespace(method="median", blend_width=0),
                 SimpleNamespace(method="best-pixel", blend_width=8)))
    groups = ("mosaic", "best")
    stores = {}
    for way in ("new", "old"):
        repo = icechunk.Repository.create(icechunk.in_memory_storage())
        session = repo.writable_session("main")
        zarr.open_group(session.store, path="cube/stale", mode="w")  # replaced, not kept
        if way == "new":
            create_nightly_groups(session.store, UTM, outputs, groups, _slots(7),
                                  time_block=4, attrs=ATTRS)
        else:
            _old(OldWay.nightly, session.store, UTM, outputs, groups, _slots(7), 4, ATTRS)
        stores[way] = _keys(session.store)
    assert "cube/zarr.json" in stores["new"] and "best/score/zarr.json" in stores["new"]
    assert not any(k.startswith("cube/stale") for k in stores["new"])
    _same(stores["new"], stores["old"])


@pytest.mark.parametrize("zarr_format", [3, 2])
def test_an_empty_cube_bytes(tmp_path, zarr_format):
    """No slot yet: zero-length time axis and coordinates, as xarray wrote them."""
    create_cube(tmp_path / "new", UTM, ("red",), [], attrs={}, zarr_format=zarr_format)
    _old(OldWay.write, OldWay.cube(UTM, ("red",), []), UTM, tmp_path / "old", {}, "cube",
         zarr_format)
    _same(_files(tmp_path / "new"), _files(tmp_path / "old"))


def test_api_datasets_are_the_old_ones():
    """:func:`cube_layout` / :func:`mosaic_layout` (the API's lazy datasets) did not change."""
    slots = _slots()
    new, new_enc = cube_layout(UTM, ("blue", "red"), slots)
    old, old_enc = OldWay.cube(UTM, ("blue", "red"), slots)
    assert new.identical(old) and list(new.coords) == list(old.coords)
    assert [new[b].chunks for b in ("blue", "red")] == [old[b].chunks for b in ("blue", "red")]
    assert repr(new_enc) == repr(old_enc)
    layers = mosaic_layers("best-pixel", blend_width=4)
    new, new_enc = mosaic_layout(UTM, ("nir",), method="best-pixel", layers=layers)
    old, old_enc = OldWay.mosaic(UTM, ("nir",), "best-pixel", layers)
    assert new.identical(old) and list(new.data_vars) == list(old.data_vars)
    assert {k: v.dtype for k, v in new.data_vars.items()} == {
        k: v.dtype for k, v in old.data_vars.items()}
    assert repr(new_enc) == repr(old_enc)


@pytest.mark.parametrize(("offsets_ns", "units"), [
    ([0, 86_400 * 10**9], "seconds"),
    ([1_500_000_000], "milliseconds"),
    ([10**9, 10**9 + 1_000], "microseconds"),
    ([7], "nanoseconds"),
    ([], "seconds"),
])
def test_time_units_are_the_coarsest_exact_ones(offsets_ns, units):
    t = np.array(offsets_ns, dtype="int64").astype("datetime64[ns]")
    values, got = encode_times(t)
    assert got == f"{units} since 1970-01-01"
    per = {"seconds": 10**9, "milliseconds": 10**6, "microseconds": 10**3, "nanoseconds": 1}
    assert values.dtype == np.int64 and (values * per[units]).tolist() == offsets_ns


def test_driver_needs_no_xarray():
    """Writing layouts imports none of xarray, pandas, pyarrow, rioxarray or dask.array (the
    driver's memory: ~80 MiB); checked in a fresh interpreter."""
    import subprocess
    import sys

    code = (
        "import sys, tempfile, pathlib\n"
        "from tests.test_layout_bytes import UTM, ATTRS, _slots\n"
        "from pipeline.products.store import create_cube, create_mosaic\n"
        "d = pathlib.Path(tempfile.mkdtemp())\n"
        "create_cube(d / 'c', UTM, ('red',), _slots(), attrs=ATTRS)\n"
        "create_mosaic(d / 'm', UTM, ('red',), method='median', attrs=ATTRS, zarr_format=2)\n"
        "bad = [m for m in ('xarray', 'pandas', 'pyarrow', 'rioxarray', 'dask.array')"
        " if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
