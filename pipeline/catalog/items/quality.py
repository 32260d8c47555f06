"""The quality (QA) sources of an item: assets whose classification extension fields
(``classification:classes`` / ``classification:bitfields``, on the asset or in its first
``raster:bands``/``bands`` entry; see :mod:`~pipeline.catalog.items.classification`) say what
their values mean, else the profile's QA asset; each checked like a band (href, existence, grid).

An asset with role ``data`` is a quality source only if it names no spectral band (no
``eo:bands`` common name): a quality raster some providers publish as data, never a band.
Two assets that state the same rules (one map at two resolutions, e.g. ``scl`` and ``scl_60m``)
are read once: the first.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pipeline.catalog.items.classification import classification_rules, has_classification
from pipeline.catalog.items.grid import asset_grid, file_header
from pipeline.catalog.items.links import check_exists, checked_href, is_local
from pipeline.catalog.items.options import reject, shared
from pipeline.catalog.scene import QualitySource
from pipeline.catalog.sensors.profiles import SensorProfile
from pipeline.catalog.stacdoc import ItemDoc, common_name, raster_band
from pipeline.errors import HrefNotAllowed

_QA_ROLES = frozenset(
    {"data-mask", "cloud", "cloud-shadow", "snow-ice", "water", "water-mask", "quality"}
)


def quality_sources(doc: ItemDoc, profile: SensorProfile, options) -> tuple[QualitySource, ...]:
    out: list[QualitySource] = []
    seen: set = set()
    for key, asset in doc.assets.items():
        if not isinstance(asset, dict) or not has_classification(asset):
            continue
        roles = set(asset.get("roles") or ())
        if "data" in roles and not roles & _QA_ROLES and _names_a_band(doc, asset):
            continue
        try:
            rules = classification_rules(asset)
        except ValueError as exc:
            raise reject(
                doc,
                "bad_classification",
                f"asset {key!r}: its classification extension cannot be read as a quality mask: "
                f"{exc}; fix the asset's classification:classes/bitfields, or set "
                "quality_mask: false in the workflow to use the item unmasked",
            ) from None
        if rules and rules not in seen:
            seen.add(rules)
            out.append(_quality_source(doc, key, asset, rules, options))
    if out:
        return tuple(out)
    for hint in profile.quality:
        for key in hint.assets:
            known = doc.assets.get(key)
            if isinstance(known, dict):
                return (_quality_source(doc, key, known, hint.rules, options),)
    return ()


def _names_a_band(doc: ItemDoc, asset: Mapping[str, Any]) -> bool:
    """The asset holds a spectral band (its eo:bands/bands name one): a band, not a QA map."""
    return any(common_name(info) for info in doc.band_infos(asset))


def _quality_source(doc, key, asset, rules, options) -> QualitySource:
    try:
        href, mirrored = checked_href(doc, key, options)
    except HrefNotAllowed as exc:
        message = exc.message.removeprefix(f"item {doc.id!r} ")
        raise reject(doc, "href_not_allowed", message) from None
    check_exists(doc, key, href, options)
    notes: dict[str, str] = {}
    grid = asset_grid(doc, key, asset, href, mirrored, options, notes)
    dtype = raster_band(asset, 0).get("data_type") or asset.get("data_type")
    if not dtype and options.check_files and is_local(href):
        dtype = file_header(doc, key, href)[1]
    return QualitySource(shared(key), href, 1, shared(str(dtype or "uint16")), grid, shared(rules))
