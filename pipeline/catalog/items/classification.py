"""An asset's STAC classification extension (``classification:classes`` /
``classification:bitfields``) read as quality rules.

The fields may sit on the asset, in its first ``raster:bands`` entry (STAC 1.0) or in its first
``bands`` entry (STAC 1.1). Providers spell the meaning of a class or a bit field in many ways
("Cloud Shadow", "cloud-shadow", "snow/ice", "cloud_mask", "Fill"): each name (else, when the
name says nothing, its description) is brought to one of the names
:func:`pipeline.kernels.qa.rules_from_classification` knows, by exact match after folding case,
punctuation, a plural ``s`` and a ``_mask``/``_flag`` suffix. A name that still means nothing
masks nothing (confidence levels, "clear", "band 1 saturation" are never guessed at).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from pipeline.catalog.scene import QaRules
from pipeline.kernels.qa import rules_from_classification

CLASSES = "classification:classes"
BITFIELDS = "classification:bitfields"

# folded name → the name pipeline.kernels.qa maps to a mask class (a superset of its table)
_ALIASES: Mapping[str, str] = {
    **dict.fromkeys(
        (
            "no_data",
            "nodata",
            "fill",
            "fill_data",
            "fill_value",
            "no_data_fill",
            "missing_data",
            "blackfill",
            "not_imaged",
        ),
        "nodata",
    ),
    **dict.fromkeys(
        (
            "saturated_or_defective",
            "saturated",
            "defective",
            "saturation",
            "radiometric_saturation",
            "saturated_pixel",
        ),
        "saturated",
    ),
    **dict.fromkeys(
        (
            "cloud",
            "cloudy",
            "cloud_medium_probability",
            "cloud_high_probability",
            "dilated_cloud",
            "opaque_cloud",
            "thick_cloud",
        ),
        "cloud",
    ),
    **dict.fromkeys(("cloud_shadow", "shadow"), "cloud_shadow"),
    **dict.fromkeys(("thin_cirrus", "cirrus", "cirrus_cloud"), "cirrus"),
    **dict.fromkeys(
        ("snow", "snow_ice", "snow_or_ice", "snow_and_ice", "ice_snow", "snow_cover"), "snow"
    ),
    **dict.fromkeys(("water", "water_body", "open_water"), "water"),
}
_SUFFIXES = ("_mask", "_flag", "_flags", "_bit", "_pixel", "_pixels")


def canonical_name(entry: Mapping[str, Any]) -> str | None:
    """The kernel's name for a class or bit field, from its name, else its description."""
    for text in (entry.get("name"), entry.get("description")):
        if text:
            found = _alias(str(text))
            if found is not None:
                return found
    return None


@lru_cache(maxsize=4096)
def _alias(text: str) -> str | None:
    token = re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")
    for suffix in ("", *_SUFFIXES):
        base = token.removesuffix(suffix) if suffix else token
        if suffix and base == token:
            continue
        for candidate in (base, base.removesuffix("s")):
            if candidate in _ALIASES:
                return _ALIASES[candidate]
    return None


def classification_fields(asset: Mapping[str, Any]) -> tuple[list | None, list | None, str]:
    """(classes, bitfields, where): the asset's own fields, else its first ``raster:bands`` or
    ``bands`` entry's; ``where`` names the extension field that spoke (for inspect)."""
    for holder in (asset, *_first_band_entries(asset)):
        classes, bits = holder.get(CLASSES), holder.get(BITFIELDS)
        if isinstance(classes, list) or isinstance(bits, list):
            return (
                classes if isinstance(classes, list) else None,
                bits if isinstance(bits, list) else None,
                BITFIELDS if isinstance(bits, list) else CLASSES,
            )
    return None, None, ""


def _first_band_entries(asset: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    out: list[Mapping[str, Any]] = []
    for key in ("raster:bands", "bands"):
        entries = asset.get(key)
        if isinstance(entries, list) and entries and isinstance(entries[0], dict):
            out.append(entries[0])
    return out


def has_classification(asset: Mapping[str, Any]) -> bool:
    classes, bits, _ = classification_fields(asset)
    return classes is not None or bits is not None


def classification_rules(asset: Mapping[str, Any]) -> QaRules:
    """The quality rules the asset's classification fields state (empty: none Aquila knows).
    Raises ValueError (with the field) for a class or bit field without a usable value/offset."""
    classes, bits, _ = classification_fields(asset)
    named_classes = [_renamed(c) for c in classes or () if isinstance(c, dict)]
    named_bits = [_renamed(f) for f in bits or () if isinstance(f, dict)]
    try:
        rules = rules_from_classification(named_classes, named_bits)
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(
            f"a class or bit field has no whole-number 'value'/'offset'/'length' ({exc!r})"
        ) from None
    for cls, offset, length, values in rules:
        top = 1 << length if length else 1 << 32
        if (
            offset < 0
            or length > 32
            or offset + length > 63
            or any(not 0 <= v < top for v in values)
        ):
            raise ValueError(
                f"the {cls!r} rule (bit offset {offset}, length {length}, values {list(values)}) "
                "does not fit a 64-bit quality value"
            )
    return rules


def _renamed(entry: Mapping[str, Any]) -> dict[str, Any]:
    name = canonical_name(entry)
    return {**entry, "name": name} if name is not None else {**entry, "name": ""}
