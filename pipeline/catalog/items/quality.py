"""The quality (QA) sources of an item: assets whose ``classification:*`` fields the rules of
:mod:`pipeline.kernels.qa` can read, else the profile's QA asset; each checked like a band
(href, existence, grid).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pipeline.catalog.items.grid import asset_grid, file_header
from pipeline.catalog.items.links import check_exists, checked_href, is_local
from pipeline.catalog.items.options import reject, shared
from pipeline.catalog.scene import QualitySource
from pipeline.catalog.sensors.profiles import SensorProfile
from pipeline.catalog.stacdoc import ItemDoc, raster_band
from pipeline.errors import HrefNotAllowed
from pipeline.kernels.qa import rules_from_classification

_QA_ROLES = frozenset({"data-mask", "cloud", "cloud-shadow", "snow-ice", "water", "water-mask"})


def quality_sources(doc: ItemDoc, profile: SensorProfile, options) -> tuple[QualitySource, ...]:
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
            known = doc.assets.get(key)
            if isinstance(known, dict):
                return (_quality_source(doc, key, known, hint.rules, options),)
    return ()


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
