"""Turn a STAC item into a :class:`Scene`, or reject it with a reason code.

The walk for one item, each step a named function (:func:`normalise_doc` calls them in order),
in the order the reject reasons are checked (the first failing step names the reason):

1. when and where: ``no_datetime``, ``no_footprint`` / ``bad_footprint`` (antimeridian and polar
   footprints are made safe, see :mod:`pipeline.catalog.footprint`);
2. which sensor: a profile is picked (or forced); SAR items → ``sar_not_optical``;
3. which asset holds each band: ``eo:bands``/``bands`` common name first, then the profile's
   asset-key map; 8-bit display renderings (role ``visual``, profile ``display_assets``) never
   count → ``missing_band`` / ``no_usable_band`` / ``no_calibration`` (display only) /
   ``no_readable_raster`` (the bands only in NetCDF, HDF, Zarr... or no readable format at all);
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
8. do the files exist (local only): ``asset_missing`` / ``asset_unreadable``; the quality assets
   (classification extension, else the profile) → ``bad_classification``;
9. how to fetch them: the collection's signer (the workflow's ``signers``), if it has one, is
   carried by every band and quality source (the worker signs just before the read).

The steps live beside this module: 3 in :mod:`~pipeline.catalog.items.locate`, 4 in
:mod:`~pipeline.catalog.items.links`, 4-7 per band in :mod:`~pipeline.catalog.items.bands`, 6 in
:mod:`~pipeline.catalog.items.grid`, the QA sources in :mod:`~pipeline.catalog.items.quality`;
what they share (options, the reject) in :mod:`~pipeline.catalog.items.options`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from pipeline.catalog.footprint import footprint_from_geojson
from pipeline.catalog.items.bands import band_source
from pipeline.catalog.items.grid import check_footprint
from pipeline.catalog.items.links import metadata_href
from pipeline.catalog.items.locate import locate_bands
from pipeline.catalog.items.options import Mirror, NormaliseOptions, reject, shared
from pipeline.catalog.items.quality import quality_sources
from pipeline.catalog.scene import Scene
from pipeline.catalog.sensors.constants import harmonisation_use
from pipeline.catalog.sensors.context import ItemRadiometry
from pipeline.catalog.sensors.folding import Unresolved
from pipeline.catalog.sensors.profiles import ProfileSet, load_profiles
from pipeline.catalog.stacdoc import ItemDoc, number_or_none, production_facts
from pipeline.io.hrefs import HrefPolicy


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
        raise reject(doc, "no_datetime", "has neither a valid 'datetime' nor 'start_datetime'")
    footprint = _footprint(doc)
    profile = options.profiles.select(doc, options.profile)
    if profile.kind == "sar" or any(k.startswith("sar:") for k in doc.properties):
        raise reject(
            doc,
            "sar_not_optical",
            f"is a SAR acquisition (profile {profile.name!r}, sar:* properties) and the workflow "
            f"asks for optical bands {list(bands)}; leave its collection out of 'collections'",
        )
    choices = locate_bands(doc, bands, profile)
    calibration = profile.calibration_for(doc)
    notes: dict[str, str] = {"profile": profile.name, **production_facts(doc)}
    ctx = ItemRadiometry(
        doc,
        profile,
        calibration,
        options.radiometry,
        vendor_href=lambda key: metadata_href(doc, key, options),
    )
    applied: list = []
    sources = tuple(
        band_source(doc, name, choice, profile, calibration, options, notes, ctx, applied)
        for name, choice in zip(bands, choices, strict=True)
    )
    try:
        harmonisation = harmonisation_use(ctx, applied, tuple(bands))
    except Unresolved as exc:  # pragma: no cover - resolved per band first
        raise reject(doc, exc.reason, str(exc)) from None
    notes.update(ctx.notes)
    quality = quality_sources(doc, profile, options) if options.quality_mask else ()
    fixed = check_footprint(doc, footprint, [s.grid for s in sources + quality], notes)
    if fixed:
        sources = tuple(replace(s, grid=fixed.get(s.grid, s.grid)) for s in sources)
        quality = tuple(replace(q, grid=fixed.get(q.grid, q.grid)) for q in quality)
    sources, quality = _with_signer(sources, quality, options.signers.get(doc.collection or ""))
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
        item_href=None if doc.shared_file else doc.self_href,
    )


def _with_signer(sources: tuple, quality: tuple, signer: str | None) -> tuple[tuple, tuple]:
    """The sources carrying the collection's signer name (not a signature: that is made on
    the worker, just before each read)."""
    if signer is None:
        return sources, quality
    return (
        tuple(replace(s, signer=signer) for s in sources),
        tuple(replace(q, signer=signer) for q in quality),
    )


def _sun_elevation(props: Mapping[str, Any], ctx: ItemRadiometry) -> float | None:
    """The item's sun elevation, else the one its vendor file gave (if it was read)."""
    value = _float_or_none(props.get("view:sun_elevation"))
    if value is None and ctx._sun is not None and ctx._sun.elevation is not None:
        return ctx._sun.elevation[0]
    return value


def _footprint(doc: ItemDoc):
    if not doc.geometry:
        raise reject(doc, "no_footprint", "has no geometry, so it cannot be placed on the grid")
    try:
        return footprint_from_geojson(doc.geometry)
    except ValueError as exc:
        raise reject(doc, "bad_footprint", f"{exc}; fix the item's geometry") from None


def _float_or_none(value: Any) -> float | None:
    return number_or_none(value)


def _str_or_none(value: Any) -> str | None:
    return None if value is None else str(value)
