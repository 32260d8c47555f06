"""Step 3 of normalisation, which asset holds each band: ``eo:bands``/``bands`` common name first,
then the profile's asset-key map; 8-bit display renderings (role ``visual``, profile
``display_assets``) never count (``missing_band`` / ``no_usable_band`` / ``no_calibration``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pipeline.catalog.items.formats import READS, asset_format, format_account, has_readable_asset
from pipeline.catalog.items.options import reject
from pipeline.catalog.sensors.profiles import BandHint, SensorProfile
from pipeline.catalog.stacdoc import ItemDoc, common_name

# A requested common name may be served by a narrower one when the item lacks it:
# 'nir' (0.75–1.0 µm) by 'nir08' (0.75–0.90 µm, Landsat OLI B5, WorldView NIR1), never nir09.
FALLBACK_NAMES: Mapping[str, tuple[str, ...]] = {"nir": ("nir08",)}
_DISPLAY_ROLES = frozenset({"visual", "overview", "thumbnail"})
_RASTER_SUFFIXES = (".tif", ".tiff", ".jp2", ".gtiff")


@dataclass(frozen=True)
class Choice:
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
        out = [Choice(k, i, "eo:bands", *_hint_values(hint), alias=alias) for k, i in found]
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
                        Choice(key, hint.index, "profile", *_hint_values(hint), alias=alias)
                    )
        if out:
            return out, display_all
    return [], display_all


_HintValues = tuple[
    float | None,  # scale
    float | None,  # offset
    float | None,  # nodata
    str | None,  # resampling
    tuple[float, float] | None,  # valid_range
    tuple[str, int, tuple[int, ...]] | None,  # mask
    str | None,  # vendor_band
]


def _hint_values(hint: BandHint | None) -> _HintValues:
    """The profile's facts of a band, in the order of :class:`Choice`'s fields after ``via``."""
    if hint is None:
        return (None, None, None, None, None, None, None)
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


def locate_bands(
    doc: ItemDoc, bands: Sequence[str], profile: SensorProfile
) -> list[list[Choice]]:
    """Per requested band, the candidate assets best first (the first allowed one is used)."""
    choices: list[list[Choice]] = []
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
    _refuse_unreadable_formats(doc, missing, whole_item=False)
    if display_only and len(display_only) == len(missing):
        keys = sorted(set(display_only.values()))
        raise reject(
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
        raise reject(
            doc,
            "no_calibration",
            f"its only raster assets {sorted(rasters)} are display renderings (8-bit colour, "
            f"not radiometric data; role 'visual' or display_assets of profile {profile.name!r}); "
            "use the provider's analytic/reflectance product instead",
        )
    _refuse_unreadable_formats(doc, missing, whole_item=True)
    if not offered and not any(
        k in doc.assets for hint in profile.bands.values() for k in hint.assets
    ):
        raster_keys = sorted(
            k for k, a in doc.assets.items() if isinstance(a, dict) and _is_raster(k, a)
        )
        raise reject(
            doc,
            "no_usable_band",
            f"has no band Aquila can name: no asset declares eo:bands common_name and sensor "
            f"profile {profile.name!r} maps none of its raster assets {raster_keys}; add "
            "eo:bands common names to the item or a sensor profile for its constellation",
        )
    raise reject(
        doc,
        "missing_band",
        f"has no asset for band(s) {missing} (by eo:bands common_name or profile "
        f"{profile.name!r}); it offers {offered or 'no named bands'}",
    )


def _refuse_unreadable_formats(doc: ItemDoc, missing: Sequence[str], *, whole_item: bool) -> None:
    """``no_readable_raster``: the missing bands are named only by assets of a format Aquila does
    not read (NetCDF, HDF, Zarr...), or (``whole_item``) the item holds no asset Aquila could
    read at all."""
    holders: dict[str, list[str]] = {}
    for key, asset in doc.assets.items():
        if not isinstance(asset, dict) or asset_format(asset).readable is not False:
            continue
        roles = set(asset.get("roles") or ())
        if roles & _DISPLAY_ROLES and not roles & {"data", "reflectance"}:
            continue  # a preview names its colours, it never holds the band
        names = {common_name(i) for i in doc.band_infos(asset)}
        for band in missing:
            if names & {band, *FALLBACK_NAMES.get(band, ())}:
                holders.setdefault(band, []).append(key)
    fix = (
        f"Aquila reads {READS} only: use the provider's COG product, or convert the files to COG "
        "(gdal_translate -of COG) and publish items that link to the copies"
    )
    if holders:
        keys = sorted({k for ks in holders.values() for k in ks})
        raise reject(
            doc,
            "no_readable_raster",
            f"band(s) {sorted(holders)} are only in asset(s) of a format Aquila does not read "
            f"({format_account(doc.assets, keys)}); {fix}",
        )
    if whole_item and not has_readable_asset(doc.assets):
        raise reject(
            doc,
            "no_readable_raster",
            f"has no raster asset Aquila can read; its assets are {format_account(doc.assets)}; "
            f"{fix}",
        )
