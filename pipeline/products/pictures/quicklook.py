"""Pictures of one product, read from an overview level (never the whole array when the store
has overviews): the quicklook (true or false colour, per-band 2–98 % percentile stretch, NaN →
black) and the lineage map of a mosaic (the provider of each pixel's observation, or the count
of observations for methods without a ``source`` layer).

The level read is the coarsest whose larger side is still about ``max_side`` pixels
(:func:`pipeline.products.overviews.open_level`); a store without overviews is read at full
resolution and thinned by a stride to about ``max_side``.
"""

from __future__ import annotations

import contextlib
import math
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.errors import InputError, ProductNotFound, StoreUnwritable
from pipeline.products.objectstore import object_location
from pipeline.products.overviews import open_level
from pipeline.products.publish import is_marked, root_attrs

PRESETS: dict[str, tuple[str, str, str]] = {
    "true": ("red", "green", "blue"),  # as the eye sees it
    "false": ("nir", "red", "green"),  # vegetation red: the classic colour infrared
}
DEFAULT_SIDE = 1024  # pixels on the picture's larger side (about)
PERCENTILES = (2.0, 98.0)  # of each band's valid pixels → 0 and 255
NO_DATA = "no data"
NO_DATA_RGB = (0.85, 0.85, 0.85)  # light grey: never one of the provider colours (tab10)


@dataclass(frozen=True)
class LineageMap:
    """What :func:`lineage_map` drew: ``kind`` ``source`` (categories in ``legend``, each with its
    colour, 0–255 RGB) or ``count`` (a colour bar, no legend)."""

    path: Path
    kind: str
    legend: tuple[str, ...] = ()
    colours: Mapping[str, tuple[int, int, int]] = field(default_factory=dict)
    level_factor: int = 1


# --------------------------------------------------------------------------- quicklook


def quicklook(
    store: Path | str,
    out: Path | str,
    *,
    bands: str | Sequence[str] = "true",
    time: int | str | None = None,
    max_side: int = DEFAULT_SIDE,
    step: int | None = None,
    max_reflectance: float | None = None,
) -> Path:
    """Write an RGB PNG of ``store``: ``bands`` a preset (``true``, ``false``) or three band
    names; a cube's slot ``time`` (index or ISO date; default the last). Each band is stretched
    from its 2nd to its 98th percentile (or linearly 0..``max_reflectance`` when given); NaN is
    black."""
    store = Path(store)
    check_product(store)
    rgb = rgb_image(store, bands=bands, time=time, max_side=max_side, step=step,
                    max_reflectance=max_reflectance, label=str(store))
    out = Path(out)
    write_png(out, np.moveaxis(rgb, -1, 0), label=(root_attrs(store) or {}).get("aquila:label"))
    return out


def rgb_image(
    source: Any,
    *,
    bands: str | Sequence[str] = "true",
    time: int | str | None = None,
    max_side: int = DEFAULT_SIDE,
    step: int | None = None,
    max_reflectance: float | None = None,
    label: str | None = None,
) -> np.ndarray:
    """The quicklook's pixels, (y, x, 3) uint8, of ``source`` (a store path or a zarr store
    object, e.g. one on an object store): read from the overview level nearest ``max_side``."""
    label = label or str(source)
    names = resolve_bands(bands)
    ds, _, root = open_picture_level(source, max_side)
    planes = read_planes(ds, names, time=slot_index(root, time, label) if "time" in root.dims
                         else None, step=step, max_side=max_side, label=label)
    if max_reflectance is not None:
        scaled = [linear_stretch(p, max_reflectance) for p in planes]
    else:
        scaled = [percentile_stretch(p) for p in planes]
    return np.stack(scaled, axis=-1)


def resolve_bands(bands: str | Sequence[str]) -> tuple[str, ...]:
    """A preset name or three band names (``"nir,red,green"`` or a sequence) → the names."""
    if isinstance(bands, str):
        if bands in PRESETS:
            return PRESETS[bands]
        bands = [b.strip() for b in bands.split(",") if b.strip()]
    names = tuple(str(b) for b in bands)
    if len(names) != 3:
        raise InputError(
            f"a quicklook draws three bands (red, green, blue channels), not {list(names)}; "
            f"give a preset ({', '.join(PRESETS)}) or three names, e.g. --bands nir,red,green",
            reason="bad_bands",
        )
    return names


def open_picture_level(source: Any, max_side: int) -> tuple[Any, int, Any]:
    """``(dataset, factor, root)`` of the level nearest ``max_side`` on a log scale: the
    coarsest level whose larger side is at least ``max_side / √2`` (so the picture is within √2
    of the size asked for whenever the store has enough levels); ``root`` is the store's root,
    opened lazily too, which holds the attributes (``sources``) and the time coordinate."""
    import xarray as xr

    if max_side < 1:
        raise InputError(f"a picture of {max_side} px is not one; give --size of 1 or more",
                         reason="bad_size")
    ds, factor = open_level(source, max_side=max(1, math.ceil(max_side / math.sqrt(2))))
    return ds, factor, (ds if factor == 1 else xr.open_zarr(source, chunks={}))


def read_planes(ds: Any, names: Sequence[str], *, time: int | None, step: int | None,
                max_side: int, label: str) -> list[np.ndarray]:
    """The (y, x) float32 values of ``names`` (cube slot ``time``), every ``step``-th pixel
    (default: the stride that brings the larger side to about ``max_side``), read together."""
    import dask

    for name in names:
        if name not in ds.data_vars:
            raise InputError(
                f"{label} has no band {name!r} (it has {sorted(map(str, ds.data_vars))}); "
                "give --bands with three of those",
                reason="band_missing",
            )
    sel = ds[list(names)]
    if "time" in sel.dims:
        sel = sel.isel(time=-1 if time is None else time)
    stride = step if step is not None else auto_step(sel, max_side)
    if stride < 1:
        raise InputError(f"--step {stride} is not a stride; give 1 or more", reason="bad_step")
    sel = sel.isel(y=slice(None, None, stride), x=slice(None, None, stride))
    # threads here, whatever client is current: a picture is small and must not ship a store
    (values,) = dask.compute([sel[n].data for n in names], scheduler="threads")
    return [np.asarray(v, dtype=np.float32) for v in values]


def auto_step(ds: Any, max_side: int) -> int:
    """The stride that brings the larger side to about ``max_side`` (1 when it is already)."""
    side = max(int(ds.sizes["y"]), int(ds.sizes["x"]))
    return max(1, round(side / max_side))


def slot_index(ds: Any, time: int | str | None, label: str) -> int:
    """A cube slot: ``None`` the last, an integer (negative from the end) or a date/time prefix
    (``2025-06-15``, ``2025-06-15T09``) matching exactly one slot."""
    n = int(ds.sizes["time"])
    if time is None:
        return n - 1
    if isinstance(time, str) and time.lstrip("-").isdigit():
        time = int(time)
    if isinstance(time, int):
        if not -n <= time < n:
            raise InputError(f"{label} has {n} time slots (0..{n - 1}); --time {time} is not one",
                             reason="time_out_of_range")
        return time % n
    stamps = [str(np.datetime_as_string(t, unit="s")) for t in ds["time"].values]
    hits = [i for i, s in enumerate(stamps) if s.startswith(time)]
    if len(hits) != 1:
        what = "no slot" if not hits else f"{len(hits)} slots ({', '.join(map(str, hits))})"
        raise InputError(
            f"{label} has {what} at --time {time}; its slots are {', '.join(stamps)}: give one "
            "of those (a longer prefix) or the slot's index",
            reason="time_out_of_range",
        )
    return hits[0]


def percentile_stretch(values: np.ndarray, percentiles: tuple[float, float] = PERCENTILES
                       ) -> np.ndarray:
    """uint8: the band's ``percentiles`` of its valid (finite) pixels → 0 and 255, clipped
    outside; NaN → 0. A constant band is mid-grey; an all-NaN band black."""
    valid = values[np.isfinite(values)]
    if valid.size == 0:
        return np.zeros(values.shape, np.uint8)
    lo, hi = (float(v) for v in np.percentile(valid, percentiles))
    if not hi > lo:
        return np.where(np.isfinite(values), 128, 0).astype(np.uint8)
    return _to_uint8((values - lo) / (hi - lo))


def linear_stretch(values: np.ndarray, top: float) -> np.ndarray:
    """uint8: reflectance 0..``top`` → 0..255, clipped; NaN → 0 (the old fixed stretch)."""
    if not top > 0:
        raise InputError(f"--max {top} is not a reflectance to show as white; give e.g. 0.3",
                         reason="bad_max")
    return _to_uint8(values / top)


def _to_uint8(unit: np.ndarray) -> np.ndarray:
    return (np.clip(np.nan_to_num(unit, nan=0.0), 0, 1) * 255).round().astype(np.uint8)


# --------------------------------------------------------------------------- lineage map


def lineage_map(store: Path | str, out: Path | str, *, by: str = "provider",
                max_side: int = DEFAULT_SIDE, source: Any = None) -> LineageMap:
    """Draw where each pixel of a mosaic came from: its ``source`` layer (a cube slot index,
    -1 none) through the ``sources`` attribute to ``by`` (provider or collection), with a legend
    naming each one and "no data"; a mosaic without ``source`` (median, mean…) draws its
    ``count`` with a colour bar. ``source``: read through this zarr store object instead."""
    store = Path(store)
    check_product(store)
    ds, factor, root = open_picture_level(source if source is not None else store, max_side)
    product = str(root.attrs.get("aquila:product", store.name))
    if "source" in ds.data_vars:
        values = _read_layer(ds, "source", max_side)
        names = slot_names(root.attrs.get("sources") or [], by)
        drawn = _draw_categories(values, names, Path(out), f"{product}: {by} of each pixel",
                                 label=root.attrs.get("aquila:label"))
        return LineageMap(drawn[0], "source", drawn[1], drawn[2], factor)
    if "count" in ds.data_vars:
        values = _read_layer(ds, "count", max_side)
        path = _draw_count(values, Path(out), f"{product}: observations per pixel",
                           label=root.attrs.get("aquila:label"))
        return LineageMap(path, "count", level_factor=factor)
    raise InputError(f"{store} has neither a 'source' nor a 'count' layer: it is not a mosaic; "
                     "give a mosaic store, e.g. out/demo/best.zarr", reason="not_a_mosaic")


def slot_names(sources: Sequence[Mapping[str, Any]], by: str) -> dict[int, str]:
    """Cube slot index → its ``by`` (provider, else collection, else "unknown")."""
    return {int(s["index"]): str(s.get(by) or s.get("collection") or "unknown") for s in sources}


def categories(values: np.ndarray, names: Mapping[int, str]) -> tuple[np.ndarray, list[str]]:
    """``(codes, legend)``: each pixel's category code (0 = no data) and the legend, the
    categories present sorted by name, then "no data" (always listed)."""
    present = np.unique(values[values >= 0])
    labels = sorted({names.get(int(i), "unknown slot") for i in present})
    codes = np.zeros(values.shape, np.int32)
    for i in present:
        codes[values == i] = labels.index(names.get(int(i), "unknown slot")) + 1
    return codes, [*labels, NO_DATA]


def _read_layer(ds: Any, name: str, max_side: int) -> np.ndarray:
    import dask

    da = ds[name]
    stride = auto_step(da, max_side)
    da = da.isel(y=slice(None, None, stride), x=slice(None, None, stride))
    (values,) = dask.compute(da.data, scheduler="threads")
    return np.asarray(values)


def _draw_categories(values: np.ndarray, names: Mapping[int, str], out: Path, title: str, *,
                     label: Any = None
                     ) -> tuple[Path, tuple[str, ...], dict[str, tuple[int, int, int]]]:
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    codes, legend = categories(values, names)
    palette = tab10()
    # a provider's colour is its place among all the run's providers (as in the coverage
    # plot), not among those this map happens to show
    every = sorted({*names.values(), *legend[:-1]})
    rgb = [palette[every.index(name) % len(palette)] for name in legend[:-1]]
    rgb = [NO_DATA_RGB, *rgb]  # code 0 first
    fig, ax = new_figure(codes.shape, extra_width=2.4)
    ax.imshow(codes, cmap=ListedColormap(rgb), vmin=-0.5, vmax=len(rgb) - 0.5,
              interpolation="nearest")
    order = [*range(1, len(rgb)), 0]  # providers, then no data
    handles = [Patch(facecolor=rgb[c], edgecolor="black", label=legend[(c - 1) % len(legend)])
               for c in order]
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)
    ax.set_title(title)
    ax.set_axis_off()
    save_figure(fig, out, label=label)
    colours = {legend[(c - 1) % len(legend)]: _rgb255(rgb[c]) for c in order}
    return out, tuple(legend), colours


def _draw_count(values: np.ndarray, out: Path, title: str, *, label: Any = None) -> Path:
    fig, ax = new_figure(values.shape, extra_width=1.6)
    shown = ax.imshow(values, cmap="viridis", vmin=0, interpolation="nearest")
    fig.colorbar(shown, ax=ax, label="observations per pixel", fraction=0.046, pad=0.04)
    ax.set_title(title)
    ax.set_axis_off()
    save_figure(fig, out, label=label)
    return out


def tab10() -> list[tuple[float, float, float]]:
    """Matplotlib's ten categorical colours (0–1 RGB): the providers' colours, in order."""
    from matplotlib import colormaps

    return [tuple(float(v) for v in colormaps["tab10"](i)[:3]) for i in range(10)]  # type: ignore[misc]


def _rgb255(rgb: Sequence[float]) -> tuple[int, int, int]:
    r, g, b = (round(float(v) * 255) for v in rgb[:3])
    return (r, g, b)


# --------------------------------------------------------------------------- files


def new_figure(shape: Sequence[int], *, extra_width: float = 0.0) -> tuple[Any, Any]:
    """A matplotlib figure (Agg, no pyplot state) about 8 inches on the image's larger side,
    plus ``extra_width`` inches for a legend or colour bar; and its one axes."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    h, w = (max(1, int(v)) for v in shape[-2:])
    scale = 8.0 / max(h, w)
    fig = Figure(figsize=(w * scale + extra_width, h * scale + 0.6), dpi=100)
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot(1, 1, 1)


def label_text(label: Any) -> str:
    """A releasability label in one line ("none (no audience)" for a product without one)."""
    if not isinstance(label, Mapping):
        return "none (no audience)"
    text = (f"{label.get('classification')} releasable to "
            f"{', '.join(map(str, label.get('releasable_to') or ()))}")
    caveats = label.get("caveats") or ()
    return text + (f", caveats {', '.join(map(str, caveats))}" if caveats else "")


MARKER = b"Aquila"  # in every picture's metadata: how a later run knows the file is its own


def save_figure(fig: Any, out: Path, *, label: Any = None) -> Path:
    """Write ``fig`` as a PNG at ``out`` in one rename: the product's releasability label in
    the metadata and, when there is one, in a visible line at the bottom."""
    if isinstance(label, Mapping):
        fig.text(0.01, 0.005, f"releasability: {label_text(label)}", fontsize=9,
                 ha="left", va="bottom")

    def draw(tmp: Path) -> None:
        fig.savefig(tmp, format="png", bbox_inches="tight",
                    metadata={"Software": "Aquila", "Comment": f"aquila:label {label_text(label)}"})

    return _atomic(out, draw)


def write_png(out: Path, rgb: np.ndarray, *, label: Any = None) -> Path:
    """Write ``rgb`` (3, y, x) uint8 as a PNG at ``out`` in one rename, the releasability label
    in its text chunks, and no GDAL ``.aux.xml`` sidecar at all (PAM off)."""
    import rasterio

    def draw(tmp: Path) -> None:
        with warnings.catch_warnings(), rasterio.Env(GDAL_PAM_ENABLED="NO"):
            warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)  # a picture
            with rasterio.open(
                tmp, "w", driver="PNG", width=rgb.shape[2], height=rgb.shape[1],
                count=rgb.shape[0], dtype="uint8", WRITE_METADATA_AS_TEXT="YES",
            ) as dst:
                dst.update_tags(Software="Aquila", aquila_label=label_text(label))
                dst.write(rgb)

    return _atomic(out, draw)


def is_our_file(path: Path) -> bool:
    """Whether ``path`` may be replaced or removed: nothing there, or a regular file (not a
    link) of at most 64 MiB whose bytes carry Aquila's :data:`MARKER` (its pictures' metadata,
    its HTML report's generator tag)."""
    import stat

    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return True
    except OSError:
        return False
    if not stat.S_ISREG(st.st_mode) or st.st_size > 64 * 2**20:
        return False
    try:
        return MARKER in path.read_bytes()
    except OSError:
        return False


def _atomic(out: Path, draw: Any) -> Path:
    """``draw(tmp)`` to a temporary file of ours beside ``out``, then rename it over ``out``;
    the storage refusing is :class:`StoreUnwritable` naming the picture."""
    import rasterio

    tmp = out.with_name(f".{out.name}.{os.getpid()}-{os.urandom(4).hex()}.png")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        draw(tmp)
        os.replace(tmp, out)
    except (OSError, rasterio.errors.RasterioIOError) as exc:
        raise StoreUnwritable(
            f"cannot write the picture {out}: {exc}; give a path in a writable folder",
        ) from exc
    finally:
        # a name made here from our pid and random bytes: only this call wrote it (and where
        # its folder is not one, there is nothing to remove)
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
    return out


def check_product(store: Path) -> None:
    """Raise :class:`ProductNotFound` unless ``store`` is a product Aquila wrote (on disk: a
    bucket's product is refused with the command that reads it)."""
    loc = object_location(store)
    if loc is not None and not os.path.lexists(store):
        raise InputError(
            f"{loc} is in a bucket; quicklook draws products on disk: export it first "
            f"('aquila export {loc} --format cog {loc.name.removesuffix('.zarr')}.tif') and "
            "open the GeoTIFF, or copy the product to disk", reason="usage")
    if not os.path.lexists(store):
        raise ProductNotFound(f"no product at {store}; give a store written by 'aquila run', "
                              "e.g. out/demo/mosaic.zarr")
    if not is_marked(root_attrs(store)):
        raise ProductNotFound(
            f"{store} is not an Aquila product (no zarr.json with Aquila's attributes at its "
            "root); give a store written by 'aquila run', e.g. out/demo/mosaic.zarr",
            reason="not_a_product",
        )
