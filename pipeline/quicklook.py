"""A PNG quick-look of a mosaic or a cube time slot: true colour, linear stretch, NaN → black."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np


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

    ds = xr.open_zarr(store)
    rgb = []
    for name in bands:
        da = ds[name]
        if "time" in da.dims:
            da = da.isel(time=-1 if time_index is None else time_index)
        rgb.append(np.asarray(da.values[::step, ::step], dtype=np.float32))
    arr = np.stack(rgb)
    scaled = np.clip(np.nan_to_num(arr, nan=0.0) / max_reflectance, 0, 1) * 255
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)  # a picture
        with rasterio.open(
            out, "w", driver="PNG", width=arr.shape[2], height=arr.shape[1], count=3,
            dtype="uint8",
        ) as dst:
            dst.write(scaled.round().astype(np.uint8))
    aux = out.with_name(out.name + ".aux.xml")
    if aux.exists():
        aux.unlink()
    return out
