"""A PNG quick-look of a mosaic or a cube time slot: true colour, linear stretch, NaN → black."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np

from pipeline.errors import InputError, ProductNotFound, StoreUnwritable
from pipeline.products.publish import is_marked, root_attrs


def quicklook(
    store: Path | str,
    out: Path | str,
    *,
    bands: tuple[str, str, str] = ("red", "green", "blue"),
    time_index: int | None = None,
    max_reflectance: float = 0.3,
    step: int = 1,
) -> Path:
    """Write an RGB PNG of ``store`` (every ``step``-th pixel); reflectance 0..max → 0..255."""
    import rasterio
    import xarray as xr

    store = Path(store)
    check_product(store)
    ds = xr.open_zarr(store)
    rgb = []
    for name in bands:
        if name not in ds.data_vars:
            raise InputError(
                f"{store} has no band {name!r} (it has {sorted(map(str, ds.data_vars))}); "
                "quicklook draws red, green and blue",
                reason="band_missing",
            )
        rgb.append(np.asarray(_plane(ds[name], store, time_index)[::step, ::step],
                              dtype=np.float32))
    arr = np.stack(rgb)
    scaled = np.clip(np.nan_to_num(arr, nan=0.0) / max_reflectance, 0, 1) * 255
    out = Path(out)
    try:
        _write_png(out, scaled.round().astype(np.uint8))
    except (OSError, rasterio.errors.RasterioIOError) as exc:
        raise StoreUnwritable(
            f"cannot write the picture {out}: {exc}; give a path in a writable folder",
        ) from exc
    return out


def _write_png(out: Path, rgb: np.ndarray) -> None:
    """Write ``rgb`` (3, y, x) uint8 as a PNG at ``out`` in one rename: a temporary file of
    ours beside it first, and no GDAL ``.aux.xml`` sidecar at all (PAM off)."""
    import rasterio

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}-{os.urandom(4).hex()}.png")
    try:
        with warnings.catch_warnings(), rasterio.Env(GDAL_PAM_ENABLED="NO"):
            warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)  # a picture
            with rasterio.open(
                tmp, "w", driver="PNG", width=rgb.shape[2], height=rgb.shape[1], count=3,
                dtype="uint8",
            ) as dst:
                dst.write(rgb)
        os.replace(tmp, out)
    finally:
        # a name made here from our pid and random bytes: only this call wrote it
        tmp.unlink(missing_ok=True)


def check_product(store: Path) -> None:
    """Raise :class:`ProductNotFound` unless ``store`` is a product Aquila wrote."""
    if not os.path.lexists(store):
        raise ProductNotFound(f"no product at {store}; give a store written by 'aquila run', "
                              "e.g. out/demo/mosaic.zarr")
    if not is_marked(root_attrs(store)):
        raise ProductNotFound(
            f"{store} is not an Aquila product (no zarr.json with Aquila's attributes at its "
            "root); give a store written by 'aquila run', e.g. out/demo/mosaic.zarr",
            reason="not_a_product",
        )


def _plane(da, store: Path, time_index: int | None) -> np.ndarray:
    """The (y, x) values of one band: a mosaic's, or one cube time slot's (default: the last)."""
    if "time" not in da.dims:
        return da.values
    n = da.sizes["time"]
    index = -1 if time_index is None else time_index
    if not -n <= index < n:
        raise InputError(f"{store} has {n} time slots (0..{n - 1}); --time {index} is not one",
                         reason="time_out_of_range")
    return da.isel(time=index).values
