"""Steps 4-7 of normalisation for one band: the first candidate asset the href policy allows,
what it stores (``unknown_dtype`` / ``unsupported_dtype``), its nodata and mask band, its grid,
and its calibration for the run's target quantity (:mod:`pipeline.catalog.sensors.constants`;
``no_calibration`` / ``no_harmonisation`` / ``nodata_mask_grid``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pipeline.catalog.items.formats import READS, asset_format, format_account
from pipeline.catalog.items.grid import asset_grid, file_header
from pipeline.catalog.items.links import can_read_header, check_exists, checked_href, is_local
from pipeline.catalog.items.locate import Choice
from pipeline.catalog.items.options import NormaliseOptions, reject, shared
from pipeline.catalog.scene import BandSource, RasterGrid
from pipeline.catalog.sensors.constants import band_constants, resolve
from pipeline.catalog.sensors.context import ItemRadiometry
from pipeline.catalog.sensors.folding import Unresolved
from pipeline.catalog.sensors.profiles import Calibration, SensorProfile
from pipeline.catalog.stacdoc import ItemDoc, number_or_none, raster_band
from pipeline.errors import HrefNotAllowed

SUPPORTED_DTYPES = frozenset(
    {
        "uint8",
        "int8",
        "uint16",
        "int16",
        "uint32",
        "int32",
        "uint64",
        "int64",
        "float16",
        "float32",
        "float64",
    }
)  # = the gather kernel's (pipeline.kernels.calibrate.SOURCE_DTYPES); complex is refused


def band_source(
    doc: ItemDoc,
    name: str,
    choice,
    profile: SensorProfile,
    calibration: Calibration,
    options: NormaliseOptions,
    notes: dict[str, str],
    ctx: ItemRadiometry,
    applied: list,
) -> BandSource:
    chosen, href, mirrored = _allowed(doc, choice, options)
    asset = doc.assets[chosen.key]
    rb = raster_band(asset, chosen.index - 1)
    dtype = _dtype(doc, chosen.key, rb, profile, href, options)
    nodata = _nodata(doc, chosen, asset, rb, calibration)
    info = doc.band_infos(asset)
    try:
        constants = band_constants(
            ctx,
            name=chosen.alias or name,
            asset_key=chosen.key,
            href=href,
            index=chosen.index,
            rb=rb,
            info=info[chosen.index - 1] if chosen.index - 1 < len(info) else {},
            dtype=dtype,
            hint_scale=chosen.hint_scale,
            hint_offset=chosen.hint_offset,
            vendor_band=chosen.vendor_band,
        )
        folded, used = resolve(ctx, constants, band=chosen.alias or name)
    except Unresolved as exc:
        raise reject(doc, exc.reason, str(exc)) from None
    applied.append(used)
    # "calibration": the first band's note; "calibration[band]": a band whose note differs
    # (per-band vendor coefficients), so every band's own note is kept
    if notes.setdefault("calibration", folded.how) != folded.how:
        notes[f"calibration[{name}]"] = folded.how
    grid = asset_grid(doc, chosen.key, asset, href, mirrored, options, notes)
    if mirrored:
        notes["mirror"] = (
            "asset read from a mirror (href_mirrors); a local mirror's grid is its file's"
        )
    check_exists(doc, chosen.key, href, options)
    return BandSource(
        band=shared(name),
        asset=shared(chosen.key),
        href=href,
        index=chosen.index,
        dtype=shared(dtype),
        nodata=nodata,
        scale=folded.scale,
        offset=folded.offset,
        grid=grid,
        resampling=chosen.resampling or profile.data_resampling,
        valid_range=chosen.valid_range or calibration.valid_range,
        mask=_mask_band(doc, chosen, grid, options),
        sun_power=folded.sun_power,
        post_offset=folded.post_offset,
    )


def _nodata(doc, chosen: Choice, asset, rb, calibration: Calibration) -> float | None:
    """raster:bands nodata, else eo:bands nodata, else the profile's (band hint, calibration)."""
    nodata = number_or_none(rb.get("nodata"))
    info = doc.band_infos(asset)
    if nodata is None and chosen.index - 1 < len(info):
        nodata = number_or_none(info[chosen.index - 1].get("nodata"))
    if nodata is None:
        nodata = chosen.hint_nodata if chosen.hint_nodata is not None else calibration.nodata
    return nodata


def _mask_band(doc, chosen: Choice, grid: RasterGrid, options: NormaliseOptions):
    """(href, index, nodata values) of the band's mask band, which must share its grid."""
    if chosen.mask is None:
        return None
    key, index, nodata_values = chosen.mask
    asset = doc.assets.get(key)
    if not isinstance(asset, dict):
        return None
    try:
        href, mirrored = checked_href(doc, key, options)
    except HrefNotAllowed as exc:
        message = exc.message.removeprefix(f"item {doc.id!r} ")
        raise reject(doc, "href_not_allowed", message) from None
    mask_grid = asset_grid(doc, key, asset, href, mirrored, options, {})
    if mask_grid != grid:
        raise reject(
            doc,
            "nodata_mask_grid",
            f"mask band {key!r} (band {index}) is on another grid than asset {chosen.key!r}; "
            "a nodata mask band must share its band's grid",
        )
    check_exists(doc, key, href, options)
    return (href, index, tuple(nodata_values))


def _allowed(
    doc: ItemDoc, choices: Sequence[Choice], options: NormaliseOptions
) -> tuple[Choice, str, bool]:
    """The first candidate whose link (or alternate link) the policy allows, after mirroring."""
    first_error: str | None = None
    for c in choices:
        for raw in _links(doc.assets[c.key]):
            try:
                href, mirrored = checked_href(doc, c.key, options, raw)
                return c, href, mirrored
            except HrefNotAllowed as exc:
                first_error = first_error or exc.message.removeprefix(f"item {doc.id!r} ")
    hint = ""
    if first_error and "s3://" in first_error:
        hint = (
            "; s3:// links are read only under a bucket root in the workflow's allowed_roots "
            "(e.g. s3://bucket/prefix/, credentials from the environment; docs/"
            "object-storage.md), or map the bucket to an https endpoint or a local copy with "
            "the workflow's href_mirrors"
        )
    keys = list(dict.fromkeys(c.key for c in choices))
    if keys and all(asset_format(doc.assets[k]).readable is False for k in keys):
        hint += (
            f"; the band's asset(s) are {format_account(doc.assets, keys)}, and Aquila reads "
            f"{READS} only: use the provider's COG product, or convert the files to COG "
            "(gdal_translate -of COG) and publish items that link to the copies"
        )
    raise reject(doc, "href_not_allowed", f"{first_error}{hint}")


def _links(asset: Mapping[str, Any]) -> list[str]:
    """The asset's href, then its alternate-assets hrefs (e.g. a public https copy of s3)."""
    links = [str(asset.get("href") or "")]
    alternate = asset.get("alternate")
    if isinstance(alternate, dict):
        links += [
            str(a["href"]) for a in alternate.values() if isinstance(a, dict) and a.get("href")
        ]
    return links


def _dtype(doc, key, rb, profile: SensorProfile, href: str, options: NormaliseOptions) -> str:
    dtype = rb.get("data_type") or doc.assets[key].get("data_type") or profile.dtype
    if not dtype and can_read_header(href, options):
        check_exists(doc, key, href, options)
        dtype = file_header(doc, key, href)[1]
    if not dtype:
        raise reject(
            doc,
            "unknown_dtype",
            f"asset {key!r} states no data type (raster:bands data_type) and its file is not "
            f"read at ingest ({'remote' if not is_local(href) else 'file checks are off'}); "
            "add raster:bands data_type to the item or a sensor profile with a dtype",
        )
    dtype = str(dtype)
    if dtype not in SUPPORTED_DTYPES:
        raise reject(
            doc,
            "unsupported_dtype",
            f"asset {key!r} stores {dtype!r}; supported: {sorted(SUPPORTED_DTYPES)}",
        )
    return dtype
