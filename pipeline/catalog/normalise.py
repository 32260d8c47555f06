"""Turn a STAC item into a :class:`Scene`, or reject it with a reason code.

The walk for one item, each step a named function below, in the order the reject reasons are
checked (the first failing step names the reason):

1. when and where: ``no_datetime``, ``no_footprint`` / ``bad_footprint`` (antimeridian and polar
   footprints are made safe, see :mod:`pipeline.catalog.footprint`);
2. which sensor: a profile is picked (or forced); SAR items → ``sar_not_optical``;
3. which asset holds each band: ``eo:bands``/``bands`` common name first, then the profile's
   asset-key map; 8-bit display renderings (role ``visual``, profile ``display_assets``) never
   count → ``missing_band`` / ``no_usable_band`` / ``no_calibration`` (display only);
4. may we read it: href resolved, mirrored, checked → ``href_not_allowed``;
5. what it stores: ``unknown_dtype`` / ``unsupported_dtype``;
6. where its pixels are: grid from ``proj:*`` (asset, then item; ``proj:code``/``proj:epsg``/
   ``proj:wkt2``/``proj:projjson``), else the local file header → ``no_crs`` / ``bad_crs`` /
   ``no_grid`` / ``bad_transform`` / ``grid_mismatch``; then the footprint must lie in the
   raster's bounds → ``footprint_mismatch``;
7. how to calibrate, for the run's target quantity (reflectance or radiance, optionally
   harmonised to a reference sensor): ``raster:bands`` scale/offset/nodata, else the vendor
   metadata file (Landsat MTL, Sentinel-2 MTD, Planet XML), else the profile (rules on facts
   such as the Sentinel-2 baseline); see :mod:`pipeline.catalog.sensors.constants` →
   ``no_calibration`` / ``no_harmonisation`` / ``nodata_mask_grid``;
8. do the files exist (local only): ``asset_missing`` / ``asset_unreadable``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Any

from pipeline.catalog.footprint import footprint_from_geojson, inside_fraction, raster_footprint
from pipeline.catalog.scene import BandSource, QualitySource, RasterGrid, Scene
from pipeline.catalog.sensors.constants import (
    ItemRadiometry,
    RadiometryTarget,
    Unresolved,
    band_constants,
    harmonisation_use,
    resolve,
)
from pipeline.catalog.sensors.profiles import Calibration, ProfileSet, SensorProfile, load_profiles
from pipeline.catalog.stacdoc import (
    ItemDoc,
    common_name,
    number_or_none,
    production_facts,
    raster_band,
)
from pipeline.errors import HrefNotAllowed, SceneRejected
from pipeline.io.hrefs import HrefPolicy, relative_to, resolve_href
from pipeline.kernels.qa import rules_from_classification

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
# A requested common name may be served by a narrower one when the item lacks it:
# 'nir' (0.75–1.0 µm) by 'nir08' (0.75–0.90 µm, Landsat OLI B5, WorldView NIR1), never nir09.
FALLBACK_NAMES: Mapping[str, tuple[str, ...]] = {"nir": ("nir08",)}
MIN_FOOTPRINT_INSIDE = 0.8
"""Share of an item footprint that must lie inside its raster's bounds (else footprint_mismatch)."""

_DISPLAY_ROLES = frozenset({"visual", "overview", "thumbnail"})
_RASTER_SUFFIXES = (".tif", ".tiff", ".jp2", ".gtiff")
_QA_ROLES = frozenset({"data-mask", "cloud", "cloud-shadow", "snow-ice", "water", "water-mask"})

Mirror = tuple[str, str]
"""(href prefix, local folder): asset links starting with the prefix are read from the folder."""


@dataclass(frozen=True)
class NormaliseOptions:
    """Everything normalisation needs besides the item; resolved once by the driver."""

    policy: HrefPolicy
    profiles: ProfileSet = field(default_factory=load_profiles)
    profile: str | None = None  # force this profile for every item
    mirrors: tuple[Mirror, ...] = ()
    check_files: bool = True  # local files must exist; read headers where proj:* is missing
    quality_mask: bool = True  # attach QA sources (False: scenes carry none, nothing is masked)
    radiometry: RadiometryTarget = field(default_factory=RadiometryTarget)  # what bands hold


def normalise_item(
    item: Any,
    *,
    bands: Sequence[str],
    policy: HrefPolicy,
    check_files: bool = True,
    profile: str | None = None,
    profiles: ProfileSet | None = None,
    mirrors: Sequence[Mirror] = (),
) -> Scene:
    """Normalise one item (``pystac.Item``, item dict or :class:`ItemDoc`); raise
    :class:`SceneRejected` with a reason code if it cannot be used."""
    options = NormaliseOptions(
        policy=policy,
        profiles=profiles or load_profiles(),
        profile=profile,
        mirrors=tuple(mirrors),
        check_files=check_files,
    )
    return normalise_doc(as_doc(item), bands=bands, options=options)


def as_doc(item: Any) -> ItemDoc:
    if isinstance(item, ItemDoc):
        return item
    if isinstance(item, dict):
        return ItemDoc.from_dict(item)
    return ItemDoc.from_pystac(item)


def normalise_doc(doc: ItemDoc, *, bands: Sequence[str], options: NormaliseOptions) -> Scene:
    """The walk described in the module docstring."""
    when = doc.when()
    if when is None:
        raise _reject(doc, "no_datetime", "has neither a valid 'datetime' nor 'start_datetime'")
    footprint = _footprint(doc)
    profile = options.profiles.select(doc, options.profile)
    if profile.kind == "sar" or any(k.startswith("sar:") for k in doc.properties):
        raise _reject(
            doc,
            "sar_not_optical",
            f"is a SAR acquisition (profile {profile.name!r}, sar:* properties) and the workflow "
            f"asks for optical bands {list(bands)}; leave its collection out of 'collections'",
        )
    choices = _locate_bands(doc, bands, profile)
    calibration = profile.calibration_for(doc)
    notes: dict[str, str] = {"profile": profile.name, **production_facts(doc)}
    ctx = ItemRadiometry(
        doc,
        profile,
        calibration,
        options.radiometry,
        vendor_href=lambda key: _metadata_href(doc, key, options),
    )
    applied: list = []
    sources = tuple(
        _band_source(doc, name, choice, profile, calibration, options, notes, ctx, applied)
        for name, choice in zip(bands, choices, strict=True)
    )
    try:
        harmonisation = harmonisation_use(ctx, applied, tuple(bands))
    except Unresolved as exc:  # pragma: no cover - resolved per band first
        raise _reject(doc, exc.reason, str(exc)) from None
    notes.update(ctx.notes)
    quality = _quality_sources(doc, profile, options) if options.quality_mask else ()
    fixed = _check_footprint(doc, footprint, [s.grid for s in sources + quality], notes)
    if fixed:
        sources = tuple(replace(s, grid=fixed.get(s.grid, s.grid)) for s in sources)
        quality = tuple(replace(q, grid=fixed.get(q.grid, q.grid)) for q in quality)
    props = doc.properties
    return Scene(
        id=doc.id,
        collection=shared(doc.collection or ""),
        provider=shared(str(props.get("constellation") or doc.collection or "unknown")),
        datetime=when,
        footprint=footprint,
        bands=sources,
        quality=quality,
        platform=shared(_str_or_none(props.get("platform"))),
        sun_elevation=_sun_elevation(props, ctx),
        off_nadir=_float_or_none(props.get("view:off_nadir")),
        cloud_cover=_float_or_none(props.get("eo:cloud_cover")),
        extra=shared(tuple(shared((k, v)) for k, v in sorted(notes.items()))),
        harmonisation=harmonisation,
    )


def _metadata_href(doc: ItemDoc, key: str, options: NormaliseOptions) -> str:
    raw = str(doc.assets[key].get("href") or "")
    href = mirror_href(resolve_href(raw, doc.self_href), options.mirrors)[0]
    return options.policy.check_metadata(href, item_id=doc.id, asset=key)


def _sun_elevation(props: Mapping[str, Any], ctx: ItemRadiometry) -> float | None:
    """The item's sun elevation, else the one its vendor file gave (if it was read)."""
    value = _float_or_none(props.get("view:sun_elevation"))
    if value is None and ctx._sun is not None and ctx._sun.elevation is not None:
        return ctx._sun.elevation[0]
    return value


def _reject(doc: ItemDoc, reason: str, message: str) -> SceneRejected:
    return SceneRejected(doc.id, reason, message)


# --------------------------------------------------------------------------- 1. when and where


def _footprint(doc: ItemDoc):
    if not doc.geometry:
        raise _reject(doc, "no_footprint", "has no geometry, so it cannot be placed on the grid")
    try:
        return footprint_from_geojson(doc.geometry)
    except ValueError as exc:
        raise _reject(doc, "bad_footprint", f"{exc}; fix the item's geometry") from None


# --------------------------------------------------------------------------- 3. which asset


@dataclass(frozen=True)
class _Choice:
    key: str
    index: int  # 1-based band within the asset
    via: str  # "eo:bands" or "profile"
    hint_scale: float | None = None
    hint_offset: float | None = None
    hint_nodata: float | None = None
    resampling: str | None = None
    valid_range: tuple[float, float] | None = None
    mask: tuple[str, int, tuple[int, ...]] | None = None  # (asset key, index, nodata values)
    vendor_band: str | None = None
    alias: str = ""  # the common name it was found under (e.g. nir08 serving nir)


def _is_raster(key: str, asset: Mapping[str, Any]) -> bool:
    media = asset.get("type")
    if media:
        media = media.lower()
        if "tif" in media or "jp2" in media:
            return True
        if not media.startswith("image/"):
            return False
    href = str(asset.get("href") or "").split("?")[0].lower()
    return href.endswith(_RASTER_SUFFIXES) or "raster:bands" in asset


def _is_display(key: str, asset: Mapping[str, Any], profile: SensorProfile) -> bool:
    if key in profile.display_assets:
        return True
    roles = asset.get("roles")
    if not roles:
        return False
    roles = set(roles)
    return bool(roles & _DISPLAY_ROLES) and not roles & {"data", "reflectance"}


def _rank(key: str, asset: Mapping[str, Any]) -> tuple[int, int]:
    """Lower is better: GeoTIFF before JPEG 2000; 'data'/'reflectance' roles first."""
    media = str(asset.get("type") or "").lower()
    href = str(asset.get("href") or "").split("?")[0].lower()
    tiff = "tiff" in media or href.endswith((".tif", ".tiff"))
    roles = set(asset.get("roles") or ())
    return (0 if tiff else 1, 0 if roles & {"data", "reflectance"} else 1)


def _band_index(doc: ItemDoc, profile: SensorProfile) -> dict[str, tuple[list, list]]:
    """common name → ([(key, index)] of data assets best first, [(key, index)] of display
    assets), built in one pass over the item's assets."""
    index: dict[str, tuple[list, list]] = {}
    for key, asset in doc.assets.items():
        if not isinstance(asset, dict):
            continue
        infos = doc.band_infos(asset)
        if not infos or not _is_raster(key, asset):
            continue
        display = _is_display(key, asset, profile)
        for i, info in enumerate(infos, start=1):
            name = common_name(info)
            if name:
                index.setdefault(name, ([], []))[1 if display else 0].append((key, i))
    for found, _ in index.values():
        if len(found) > 1:
            found.sort(key=lambda c: _rank(c[0], doc.assets[c[0]]))
    return index


def _candidates(doc: ItemDoc, name: str, profile: SensorProfile, index):
    """Ranked choices for one band, and display assets that would have served it."""
    display_all: list[tuple[str, int]] = []
    for alias in (name, *FALLBACK_NAMES.get(name, ())):
        hint = profile.bands.get(alias)
        found, display = index.get(alias, ([], []))
        display_all += display
        out = [_Choice(k, i, "eo:bands", *_hint_values(hint), alias=alias) for k, i in found]
        if hint is not None:
            for key in hint.assets:
                asset = doc.assets.get(key)
                if not isinstance(asset, dict) or (key, hint.index) in found:
                    continue
                if _is_display(key, asset, profile):
                    display_all.append((key, hint.index))
                    continue
                if not _names_other_band(doc, asset, hint.index, alias):
                    out.append(
                        _Choice(key, hint.index, "profile", *_hint_values(hint), alias=alias)
                    )
        if out:
            return out, display_all
    return [], display_all


def _hint_values(hint) -> tuple:
    if hint is None:
        return (None,) * 7
    return (
        hint.scale,
        hint.offset,
        hint.nodata,
        hint.resampling,
        hint.valid_range,
        hint.mask,
        hint.vendor_band,
    )


def _names_other_band(doc: ItemDoc, asset: Mapping[str, Any], index: int, name: str) -> bool:
    """The item's own eo:bands say this band is something else: the item wins."""
    infos = doc.band_infos(asset)
    if index - 1 < len(infos):
        other = common_name(infos[index - 1])
        return bool(other) and other != name
    return False


def _locate_bands(
    doc: ItemDoc, bands: Sequence[str], profile: SensorProfile
) -> list[list[_Choice]]:
    """Per requested band, the candidate assets best first (the first allowed one is used)."""
    choices: list[list[_Choice]] = []
    missing: list[str] = []
    display_only: dict[str, str] = {}
    index = _band_index(doc, profile)
    for name in bands:
        found, display = _candidates(doc, name, profile, index)
        choices.append(found)
        if not found:
            missing.append(name)
            if display:
                display_only[name] = display[0][0]
    if not missing:
        return choices
    if display_only and len(display_only) == len(missing):
        keys = sorted(set(display_only.values()))
        raise _reject(
            doc,
            "no_calibration",
            f"band(s) {missing} exist only in display asset(s) {keys} (8-bit colour renderings, "
            "not radiometric data); use the provider's analytic/reflectance product instead",
        )
    offered = sorted(
        {
            common_name(i)
            for a in doc.assets.values()
            if isinstance(a, dict)
            for i in doc.band_infos(a)
            if common_name(i)
        }
        | {common_name(i) for i in doc.item_bands() if common_name(i)}
    )
    rasters = {k: a for k, a in doc.assets.items() if isinstance(a, dict) and _is_raster(k, a)}
    if rasters and all(_is_display(k, a, profile) for k, a in rasters.items()):
        raise _reject(
            doc,
            "no_calibration",
            f"its only raster assets {sorted(rasters)} are display renderings (8-bit colour, "
            f"not radiometric data; role 'visual' or display_assets of profile {profile.name!r}); "
            "use the provider's analytic/reflectance product instead",
        )
    if not offered and not any(
        k in doc.assets for hint in profile.bands.values() for k in hint.assets
    ):
        raster_keys = sorted(
            k for k, a in doc.assets.items() if isinstance(a, dict) and _is_raster(k, a)
        )
        raise _reject(
            doc,
            "no_usable_band",
            f"has no band Aquila can name: no asset declares eo:bands common_name and sensor "
            f"profile {profile.name!r} maps none of its raster assets {raster_keys}; add "
            "eo:bands common names to the item or a sensor profile for its constellation",
        )
    raise _reject(
        doc,
        "missing_band",
        f"has no asset for band(s) {missing} (by eo:bands common_name or profile "
        f"{profile.name!r}); it offers {offered or 'no named bands'}",
    )


# --------------------------------------------------------------------------- 4–7. one band


def _band_source(
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
        raise _reject(doc, exc.reason, str(exc)) from None
    applied.append(used)
    notes.setdefault("calibration", folded.how)
    grid = _grid(doc, chosen.key, asset, href, mirrored, options, notes)
    if mirrored:
        notes["mirror"] = (
            "asset read from a mirror (href_mirrors); a local mirror's grid is its file's"
        )
    _exists(doc, chosen.key, href, options)
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


def _nodata(doc, chosen: _Choice, asset, rb, calibration: Calibration) -> float | None:
    """raster:bands nodata, else eo:bands nodata, else the profile's (band hint, calibration)."""
    nodata = number_or_none(rb.get("nodata"))
    info = doc.band_infos(asset)
    if nodata is None and chosen.index - 1 < len(info):
        nodata = number_or_none(info[chosen.index - 1].get("nodata"))
    if nodata is None:
        nodata = chosen.hint_nodata if chosen.hint_nodata is not None else calibration.nodata
    return nodata


def _mask_band(doc, chosen: _Choice, grid: RasterGrid, options: NormaliseOptions):
    """(href, index, nodata values) of the band's mask band, which must share its grid."""
    if chosen.mask is None:
        return None
    key, index, nodata_values = chosen.mask
    asset = doc.assets.get(key)
    if not isinstance(asset, dict):
        return None
    try:
        href, mirrored = _checked_href(doc, key, options)
    except HrefNotAllowed as exc:
        message = exc.message.removeprefix(f"item {doc.id!r} ")
        raise _reject(doc, "href_not_allowed", message) from None
    mask_grid = _grid(doc, key, asset, href, mirrored, options, {})
    if mask_grid != grid:
        raise _reject(
            doc,
            "nodata_mask_grid",
            f"mask band {key!r} (band {index}) is on another grid than asset {chosen.key!r}; "
            "a nodata mask band must share its band's grid",
        )
    _exists(doc, key, href, options)
    return (href, index, tuple(nodata_values))


def _allowed(
    doc: ItemDoc, choices: Sequence[_Choice], options: NormaliseOptions
) -> tuple[_Choice, str, bool]:
    """The first candidate whose link (or alternate link) the policy allows, after mirroring."""
    first_error: str | None = None
    for c in choices:
        for raw in _links(doc.assets[c.key]):
            try:
                href, mirrored = _checked_href(doc, c.key, options, raw)
                return c, href, mirrored
            except HrefNotAllowed as exc:
                first_error = first_error or exc.message.removeprefix(f"item {doc.id!r} ")
    hint = ""
    if first_error and "s3://" in first_error:
        hint = (
            "; s3:// links are not read directly: map the bucket to an https endpoint or a "
            "local copy with the workflow's href_mirrors"
        )
    raise _reject(doc, "href_not_allowed", f"{first_error}{hint}")


def _links(asset: Mapping[str, Any]) -> list[str]:
    """The asset's href, then its alternate-assets hrefs (e.g. a public https copy of s3)."""
    links = [str(asset.get("href") or "")]
    alternate = asset.get("alternate")
    if isinstance(alternate, dict):
        links += [
            str(a["href"]) for a in alternate.values() if isinstance(a, dict) and a.get("href")
        ]
    return links


def _checked_href(
    doc: ItemDoc, key: str, options: NormaliseOptions, raw: str | None = None
) -> tuple[str, bool]:
    """(href, mirrored): resolved against the item, rewritten by the first matching mirror,
    and checked against the allowed roots (raises HrefNotAllowed)."""
    if raw is None:
        raw = str(doc.assets[key].get("href") or "")
    href, mirrored = mirror_href(resolve_href(raw, doc.self_href), options.mirrors)
    if _plainly_allowed_url(options.policy, href):
        return href, mirrored
    return options.policy.check(href, item_id=doc.id, asset=key), mirrored


def _plainly_allowed_url(policy: HrefPolicy, href: str) -> bool:
    """A fast yes for the common case, never a yes that ``policy.check`` would refuse
    (:meth:`HrefPolicy.plainly_allows`: roots compared by origin and path segments)."""
    return policy.plainly_allows(href)


def mirror_href(href: str, mirrors: Sequence[Mirror]) -> tuple[str, bool]:
    """Rewrite ``href`` by the first mirror it is below (origin and whole path segments)."""
    for prefix, target in mirrors:
        rest = relative_to(href, prefix)
        if rest is not None:
            if "://" in target:
                return target.rstrip("/") + "/" + rest, True
            return os.path.join(target, rest), True
    return href, False


def _is_local(href: str) -> bool:
    return "://" not in href or href.startswith("file://")


def _exists(doc: ItemDoc, key: str, href: str, options: NormaliseOptions) -> None:
    if options.check_files and _is_local(href) and not os.path.isfile(href):
        raise _reject(doc, "asset_missing", f"asset {key!r}: file {href} does not exist")


def _dtype(doc, key, rb, profile: SensorProfile, href: str, options: NormaliseOptions) -> str:
    dtype = rb.get("data_type") or doc.assets[key].get("data_type") or profile.dtype
    if not dtype and _can_read_header(href, options):
        _exists(doc, key, href, options)
        dtype = _header(doc, key, href)[1]
    if not dtype:
        raise _reject(
            doc,
            "unknown_dtype",
            f"asset {key!r} states no data type (raster:bands data_type) and its file is not "
            f"read at ingest ({'remote' if not _is_local(href) else 'file checks are off'}); "
            "add raster:bands data_type to the item or a sensor profile with a dtype",
        )
    dtype = str(dtype)
    if dtype not in SUPPORTED_DTYPES:
        raise _reject(
            doc,
            "unsupported_dtype",
            f"asset {key!r} stores {dtype!r}; supported: {sorted(SUPPORTED_DTYPES)}",
        )
    return dtype


def _can_read_header(href: str, options: NormaliseOptions) -> bool:
    """Only local files (already inside the allowed roots) are opened at ingest: a remote
    header would be read by GDAL's own HTTP client, which follows redirects anywhere."""
    return options.check_files and _is_local(href)


# --------------------------------------------------------------------------- 6. grid


def _crs_of(fields: Mapping[str, Any]) -> str | None:
    if fields.get("proj:code"):
        return str(fields["proj:code"])
    epsg = fields.get("proj:epsg")
    if epsg not in (None, ""):
        try:
            return f"EPSG:{int(epsg)}"
        except (TypeError, ValueError):
            return str(epsg)
    if fields.get("proj:wkt2"):
        return str(fields["proj:wkt2"])
    if fields.get("proj:projjson"):
        import json

        return json.dumps(fields["proj:projjson"], sort_keys=True)
    return None


@lru_cache(maxsize=1024)
def _crs_error(crs: str) -> str | None:
    from pyproj import CRS
    from pyproj.exceptions import CRSError

    try:
        CRS.from_user_input(crs)
    except CRSError as exc:
        return str(exc)
    return None


def _grid(doc, key, asset, href, mirrored, options, notes) -> RasterGrid:
    props = doc.properties
    crs = _crs_of(asset) or _crs_of(props)
    transform = asset.get("proj:transform") or props.get("proj:transform")
    shape = asset.get("proj:shape") or props.get("proj:shape")
    stated = _stated_grid(doc, key, crs, transform, shape) if crs and transform and shape else None
    if stated is not None and not (mirrored and _is_local(href)):
        return stated
    if not _can_read_header(href, options):
        if not crs:
            raise _reject(
                doc,
                "no_crs",
                f"asset {key!r}: no CRS anywhere (proj:code/proj:epsg/proj:wkt2/proj:projjson on "
                "the asset or the item) and the file is not read at ingest; add proj:code",
            )
        raise _reject(
            doc,
            "no_grid",
            f"asset {key!r}: CRS {crs[:40]!r} but no proj:shape/proj:transform, and the file is "
            "not read at ingest (remote); add proj:shape and proj:transform to the item",
        )
    _exists(doc, key, href, options)
    header = _header(doc, key, href)[0]
    if stated is not None and not _same_extent(stated, header):
        raise _reject(
            doc,
            "grid_mismatch",
            f"asset {key!r}: the file {href} covers {_bounds(header)} in {header.crs} but the item "
            f"says {_bounds(stated)} in {stated.crs}; the mirror holds another product",
        )
    if stated is None:
        notes.setdefault("grid", "from the file header (the item has no proj:shape/transform)")
    return header


def _stated_grid(doc, key, crs, transform, shape) -> RasterGrid:
    try:
        cache_key = (crs, tuple(transform), tuple(shape))
        found = _STATED.get(cache_key)
    except TypeError:  # unhashable parts: not numbers; validated (and refused) below
        cache_key, found = None, None
    if found is not None:
        return found
    grid = _validated_grid(doc, key, crs, transform, shape)
    if cache_key is not None:
        if len(_STATED) > 100_000:
            _STATED.clear()
        _STATED[cache_key] = grid
    return grid


_STATED: dict = {}


def _validated_grid(doc, key, crs, transform, shape) -> RasterGrid:
    problem = _crs_error(crs)
    if problem:
        raise _reject(
            doc,
            "bad_crs",
            f"asset {key!r}: CRS {crs[:60]!r} is not one pyproj knows ({problem[:120]}); "
            "fix proj:code/proj:epsg",
        )
    try:
        t = [float(v) for v in transform]
        hw = (int(shape[0]), int(shape[1]))
    except (TypeError, ValueError, IndexError):
        raise _reject(
            doc, "bad_transform", f"asset {key!r}: proj:transform/proj:shape are not numbers"
        ) from None
    if len(t) not in (6, 9) or (len(t) == 9 and t[6:] != [0.0, 0.0, 1.0]) or min(hw) <= 0:
        raise _reject(
            doc,
            "bad_transform",
            f"asset {key!r}: proj:transform {t} / proj:shape {list(hw)} do not describe a grid "
            "(6 affine coefficients a, b, c, d, e, f, optionally with 0, 0, 1)",
        )
    return shared_grid(crs, tuple(t[:6]), hw)  # type: ignore[arg-type]


_SHARED: dict = {}
_SHARED_MAX = 200_000


def shared(value):
    """One object per distinct value (grids, names, notes repeat across thousands of scenes)."""
    found = _SHARED.get(value)
    if found is None:
        if len(_SHARED) >= _SHARED_MAX:
            _SHARED.clear()
        _SHARED[value] = found = value
    return found


def shared_grid(crs: str, transform: tuple, shape: tuple[int, int]) -> RasterGrid:
    return shared(RasterGrid(shared(crs), shared(transform), shared(shape)))


def _same_extent(a: RasterGrid, b: RasterGrid) -> bool:
    if _crs_key(a.crs) != _crs_key(b.crs):
        return False
    tol = 2.0 * max(
        abs(b.transform[0]), abs(b.transform[4]), abs(a.transform[0]), abs(a.transform[4])
    )
    return all(abs(x - y) <= tol for x, y in zip(_bounds(a), _bounds(b), strict=True))


@lru_cache(maxsize=1024)
def _crs_key(crs: str) -> str:
    from pyproj import CRS

    c = CRS.from_user_input(crs)
    epsg = c.to_epsg()
    return f"EPSG:{epsg}" if epsg else c.to_wkt()


def _bounds(g: RasterGrid) -> tuple[float, float, float, float]:
    a, b, c, d, e, f = g.transform
    h, w = g.shape
    xs = [c, c + a * w + b * h, c + a * w, c + b * h]
    ys = [f, f + d * w + e * h, f + d * w, f + e * h]
    return (round(min(xs), 3), round(min(ys), 3), round(max(xs), 3), round(max(ys), 3))


def _header(doc: ItemDoc, key: str, href: str) -> tuple[RasterGrid, str]:
    """(grid, dtype) from the file itself; cached per href."""
    try:
        found = _read_header(href)
    except OSError as exc:
        raise _reject(doc, "asset_unreadable", f"asset {key!r} ({href}): {exc}") from None
    if found is None:
        raise _reject(
            doc,
            "no_crs",
            f"asset {key!r} has no CRS in the item (proj:*) nor a geotransform and CRS in the file "
            f"{href}; add proj:code, proj:shape and proj:transform to the item",
        )
    return found


@lru_cache(maxsize=4096)
def _read_header(href: str) -> tuple[RasterGrid, str] | None:
    import numpy as np
    import rasterio
    from rasterio.errors import RasterioIOError

    try:
        # GTiff only, as the reader: a VRT (or any other format) named .tif can point anywhere
        with rasterio.open(href, driver="GTiff") as ds:
            if ds.crs is None or ds.transform.is_identity:
                return None
            t = ds.transform
            grid = RasterGrid(
                ds.crs.to_string(), (t.a, t.b, t.c, t.d, t.e, t.f), (ds.height, ds.width)
            )
            return grid, str(np.dtype(ds.dtypes[0]))
    except RasterioIOError as exc:
        raise OSError(str(exc)) from None


def _check_footprint(
    doc: ItemDoc, footprint, grids: Sequence[RasterGrid], notes: dict[str, str]
) -> dict[RasterGrid, RasterGrid]:
    """The item footprint must (mostly) lie inside each distinct raster's bounds.

    A ``proj:transform`` written in GDAL order (c, a, b, f, d, e) instead of the affine order
    (a, b, c, d, e, f) — as sat-api's Landsat items did — places the raster nowhere; if the
    reordered transform fits the footprint it is used (returned as a fix) and noted.
    """
    fixes: dict[RasterGrid, RasterGrid] = {}
    for grid in dict.fromkeys(grids):
        share = _inside(footprint, grid)
        if share >= MIN_FOOTPRINT_INSIDE:
            continue
        t = grid.transform
        if t[2] == 0.0 and t[4] == 0.0 and t[1] != 0.0 and t[5] != 0.0:
            reordered = RasterGrid(grid.crs, (t[1], t[2], t[0], t[4], t[5], t[3]), grid.shape)
            if _inside(footprint, reordered) >= MIN_FOOTPRINT_INSIDE:
                fixes[grid] = reordered
                notes["transform"] = (
                    "proj:transform was in GDAL order (c, a, b, f, d, e); reordered"
                )
                continue
        raise _reject(
            doc,
            "footprint_mismatch",
            f"only {share:.0%} of the item geometry lies inside the raster bounds "
            f"{_bounds(grid)} ({grid.crs[:40]}) that proj:transform/proj:shape (or the file) "
            "give; the item's geometry or its projection fields are wrong",
        )
    return fixes


def _inside(footprint, grid: RasterGrid) -> float:
    try:
        return inside_fraction(footprint, _raster_lonlat(grid))
    except Exception:  # noqa: BLE001 - a grid that cannot be transformed matches nothing
        return 0.0


@lru_cache(maxsize=4096)
def _raster_lonlat(grid: RasterGrid):
    return raster_footprint(grid.crs, grid.transform, grid.shape)


# --------------------------------------------------------------------------- quality


def _quality_sources(doc: ItemDoc, profile: SensorProfile, options) -> tuple[QualitySource, ...]:
    out: list[QualitySource] = []
    for key, asset in doc.assets.items():
        if not isinstance(asset, dict) or not _may_classify(asset):
            continue
        classes, bitfields = _classification(asset)
        if classes is None and bitfields is None:
            continue
        roles = set(asset.get("roles") or ())
        if "data" in roles and not roles & _QA_ROLES:
            continue
        rules = rules_from_classification(classes, bitfields)
        if rules:
            out.append(_quality_source(doc, key, asset, rules, options))
    if out:
        return tuple(out)
    for hint in profile.quality:
        for key in hint.assets:
            asset = doc.assets.get(key)
            if isinstance(asset, dict):
                return (_quality_source(doc, key, asset, hint.rules, options),)
    return ()


def _quality_source(doc, key, asset, rules, options) -> QualitySource:
    try:
        href, mirrored = _checked_href(doc, key, options)
    except HrefNotAllowed as exc:
        message = exc.message.removeprefix(f"item {doc.id!r} ")
        raise _reject(doc, "href_not_allowed", message) from None
    _exists(doc, key, href, options)
    notes: dict[str, str] = {}
    grid = _grid(doc, key, asset, href, mirrored, options, notes)
    dtype = raster_band(asset, 0).get("data_type") or asset.get("data_type")
    if not dtype and options.check_files and _is_local(href):
        dtype = _header(doc, key, href)[1]
    return QualitySource(shared(key), href, 1, shared(str(dtype or "uint16")), grid, shared(rules))


def _may_classify(asset: Mapping[str, Any]) -> bool:
    if "classification:classes" in asset or "classification:bitfields" in asset:
        return True
    for key in ("raster:bands", "bands"):
        first = asset.get(key)
        if (
            isinstance(first, list)
            and first
            and isinstance(first[0], dict)
            and ("classification:classes" in first[0] or "classification:bitfields" in first[0])
        ):
            return True
    return False


def _classification(fields: Mapping[str, Any]):
    classes = fields.get("classification:classes")
    bits = fields.get("classification:bitfields")
    rb = raster_band(fields, 0)
    classes = classes if classes is not None else rb.get("classification:classes")
    bits = bits if bits is not None else rb.get("classification:bitfields")
    return classes, bits


# --------------------------------------------------------------------------- small helpers


def _float_or_none(value: Any) -> float | None:
    return number_or_none(value)


def _str_or_none(value: Any) -> str | None:
    return None if value is None else str(value)
