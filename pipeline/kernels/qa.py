"""Quality-band decoding into named masks (mask dilation: :mod:`pipeline.kernels.dilate`).

Every quality product is described by *rules* ``(class, bit offset, bit length, values)``: a QA
value ``v`` belongs to ``class`` when ``(v >> offset) & (2**length - 1)`` is one of ``values``;
``length`` 0 means the whole value (a classification class such as Sentinel-2 SCL 9). The
classes are Aquila's common names, :data:`MASK_CLASSES`. Decoding is one lookup table per set of
classes (``lut[qa]``, built once per QA source and class set); the tables below are the product
specifications, and the sensor profiles (``catalogs/profiles/*.yaml``) carry the same rules as
data (a test checks they agree). :func:`lut_from_classes` and :func:`lut_from_bitfields` build
such a table straight from class values or bit fields.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

__all__ = [
    "DEFAULT_MASK",
    "DILATABLE",
    "LANDSAT_C2_QA_PIXEL",
    "MASK_CLASSES",
    "PLANET_UDM",
    "SCL",
    "QaRule",
    "decode",
    "decode_landsat_qa_pixel",
    "decode_planet_udm",
    "decode_scl",
    "lut_from_bitfields",
    "lut_from_classes",
    "lut_from_rules",
    "rules_from_classification",
]

QaRule = tuple[str, int, int, tuple[int, ...]]
"""(class, bit offset, bit length (0: the whole value), values that set the class)."""

#: Aquila's mask classes, the names a workflow's ``radiometry.mask`` may list.
MASK_CLASSES: tuple[str, ...] = (
    "nodata",
    "saturated",
    "cloud",
    "shadow",
    "cirrus",
    "snow",
    "water",
)
#: What a run masks when the workflow does not say (the classes masked before radiometry existed).
DEFAULT_MASK: tuple[str, ...] = ("nodata", "saturated", "cloud", "shadow", "cirrus")
#: The classes ``radiometry.dilate`` grows (clouds and their shadows have soft, missed edges).
DILATABLE: frozenset[str] = frozenset({"cloud", "shadow"})

#: Landsat 8-9 Collection 2 QA_PIXEL (USGS LSDS-1619 L8-9 C2 L2 Science Product Guide, table
#: 6-3): bit 0 fill, 1 dilated cloud, 2 cirrus, 3 cloud, 4 cloud shadow, 5 snow, 6 clear,
#: 7 water; bits 8-9, 10-11, 12-13, 14-15 the cloud / shadow / snow / cirrus confidence (not
#: used: the single-bit flags are the mask). Landsat 4-7 have no cirrus bit (bit 2 unused).
LANDSAT_C2_QA_PIXEL: tuple[QaRule, ...] = (
    ("nodata", 0, 1, (1,)),
    ("cloud", 1, 1, (1,)),  # dilated cloud
    ("cirrus", 2, 1, (1,)),
    ("cloud", 3, 1, (1,)),
    ("shadow", 4, 1, (1,)),
    ("snow", 5, 1, (1,)),
    ("water", 7, 1, (1,)),
)
#: Sentinel-2 L2A scene classification (Sen2Cor SCL): 0 no data, 1 saturated or defective,
#: 2 dark area, 3 cloud shadow, 4 vegetation, 5 not vegetated, 6 water, 7 unclassified,
#: 8 cloud medium probability, 9 cloud high probability, 10 thin cirrus, 11 snow or ice.
SCL: tuple[QaRule, ...] = (
    ("nodata", 0, 0, (0,)),
    ("saturated", 0, 0, (1,)),
    ("shadow", 0, 0, (3,)),
    ("water", 0, 0, (6,)),
    ("cloud", 0, 0, (8, 9)),
    ("cirrus", 0, 0, (10,)),
    ("snow", 0, 0, (11,)),
)
#: Planet legacy unusable-data mask (UDM, ``*_DN_udm.tif``): bit 0 blackfill (not imaged),
#: bit 1 cloud, bits 2-6 missing or suspect data in band 1-5 (here: ``saturated``).
PLANET_UDM: tuple[QaRule, ...] = (
    ("nodata", 0, 1, (1,)),
    ("cloud", 1, 1, (1,)),
    *(("saturated", bit, 1, (1,)) for bit in range(2, 7)),
)

# STAC classification names (classes, and bit-field names) → mask class. Exact, lower-case.
_CLASS_NAMES: Mapping[str, str] = {
    **dict.fromkeys(("no_data", "nodata", "fill", "no-data"), "nodata"),
    **dict.fromkeys(("saturated_or_defective", "saturated", "defective"), "saturated"),
    **dict.fromkeys(
        ("cloud", "clouds", "cloud_medium_probability", "cloud_high_probability", "dilated_cloud"),
        "cloud",
    ),
    **dict.fromkeys(("cloud_shadow", "cloud_shadows", "shadow"), "shadow"),
    **dict.fromkeys(("thin_cirrus", "cirrus"), "cirrus"),
    **dict.fromkeys(("snow", "snow_ice", "snow_or_ice", "snow_and_ice"), "snow"),
    **dict.fromkeys(("water",), "water"),
}


def rules_from_classification(
    classes: Iterable[Mapping[str, Any]] | None = None,
    bitfields: Iterable[Mapping[str, Any]] | None = None,
) -> tuple[QaRule, ...]:
    """Rules from the STAC classification extension: ``classification:classes`` (a class with a
    known name, or ``nodata: true``, becomes a whole-value rule) and ``classification:bitfields``
    (a field with a known name masks with its non-zero values not named ``not_*``, or with
    every non-zero value when it lists none). Unknown names mask nothing."""
    rules: list[QaRule] = []
    for c in classes or ():
        name = str(c.get("name", "")).lower()
        cls = "nodata" if c.get("nodata") else _CLASS_NAMES.get(name)
        if cls is not None:
            rules.append((cls, 0, 0, (int(c["value"]),)))
    for f in bitfields or ():
        cls = _CLASS_NAMES.get(str(f.get("name", "")).lower())
        if cls is None:
            continue
        length = int(f.get("length", 1))
        values = tuple(
            int(c["value"])
            for c in f.get("classes", ())
            if int(c["value"]) != 0 and not str(c.get("name", "")).lower().startswith("not")
        )
        rules.append((cls, int(f["offset"]), length, values or tuple(range(1, 1 << length))))
    return tuple(rules)


def _check_rules(rules: Sequence[QaRule]) -> None:
    for i, rule in enumerate(rules):
        try:
            cls, off, length, values = rule
        except (TypeError, ValueError):
            raise ValueError(
                f"rules[{i}] must be (class, offset, length, values), got {rule!r}"
            ) from None
        if cls not in MASK_CLASSES:
            raise ValueError(f"rules[{i}]: unknown class {cls!r}; classes are {MASK_CLASSES}")
        if not (0 <= int(off) <= 62 and 0 <= int(length) <= 32 and off + length <= 63):
            raise ValueError(f"rules[{i}]: bad bit field offset={off} length={length}")
        top = (1 << int(length)) if length else None
        for v in values:
            if int(v) < 0 or (top is not None and int(v) >= top):
                raise ValueError(f"rules[{i}]: value {v} does not fit in {length} bits")


def lut_from_rules(rules: Sequence[QaRule], classes: Iterable[str], size: int) -> np.ndarray:
    """Bool LUT of length ``size``: True at every QA value that sets one of ``classes``."""
    _check_rules(rules)
    wanted = set(classes)
    unknown = wanted - set(MASK_CLASSES)
    if unknown:
        raise ValueError(f"unknown mask class(es) {sorted(unknown)}; classes are {MASK_CLASSES}")
    if int(size) < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    v = np.arange(int(size), dtype=np.int64)
    lut = np.zeros(int(size), dtype=np.bool_)
    for cls, off, length, values in rules:
        if cls not in wanted or not values:
            continue
        field = v if length == 0 else (v >> off) & ((1 << length) - 1)
        lut |= np.isin(field, np.asarray(values, dtype=np.int64))
    return lut


def _check_size(size: int) -> int:
    size = int(size)
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    return size


def lut_from_classes(values: Sequence[int], size: int) -> np.ndarray:
    """Bool LUT of length size, True at each QA class value in values (e.g. SCL 3, 8, 9, 10)."""
    size = _check_size(size)
    idx = np.asarray(list(values), dtype=np.int64)
    if idx.size and (idx.min() < 0 or idx.max() >= size):
        raise ValueError(f"values must lie in [0, {size}), got {list(values)}")
    lut = np.zeros(size, dtype=np.bool_)
    lut[idx] = True
    return lut


def lut_from_bitfields(fields: Sequence[tuple[int, int, Sequence[int]]], size: int) -> np.ndarray:
    """Bool LUT of length size: v is masked if ((v >> offset) & (2**length - 1)) is in the
    field's masked values, for any (offset, length, masked_values) field."""
    size = _check_size(size)
    v = np.arange(size, dtype=np.int64)
    lut = np.zeros(size, dtype=np.bool_)
    for i, field in enumerate(fields):
        try:
            off, length, masked_values = field
        except (TypeError, ValueError):
            raise ValueError(
                f"fields[{i}] must be (offset, length, masked_values), got {field!r}"
            ) from None
        off, length = int(off), int(length)
        if off < 0 or not 1 <= length <= 62 or off + length > 63:
            raise ValueError(f"fields[{i}]: bad bit field offset={off} length={length}")
        mv = np.asarray(list(masked_values), dtype=np.int64)
        if mv.size and (mv.min() < 0 or mv.max() >= (1 << length)):
            raise ValueError(
                f"fields[{i}]: masked_values {list(masked_values)} do not fit in {length} bits"
            )
        lut |= np.isin((v >> off) & ((1 << length) - 1), mv)
    return lut


def _check_qa(name: str, a: object) -> np.ndarray:
    if not isinstance(a, np.ndarray) or a.dtype.kind not in "iu":
        kind = f"{a.dtype} array" if isinstance(a, np.ndarray) else type(a).__name__
        raise ValueError(f"{name} must be an integer numpy array, got {kind}")
    if a.size and (int(a.min()) < 0 or int(a.max()) > 0xFFFF):
        raise ValueError(
            f"{name} values must lie in [0, 65535], got [{int(a.min())}, {int(a.max())}]"
        )
    return a


def decode(qa: np.ndarray, rules: Sequence[QaRule]) -> dict[str, np.ndarray]:
    """One bool mask (same shape as qa) per class of :data:`MASK_CLASSES`, from integer QA
    values (0..65535) and the product's rules. Classes the product does not flag are all False
    (e.g. Landsat QA_PIXEL has no saturation: that is in QA_RADSAT)."""
    qa = _check_qa("qa", qa)
    size = 65536 if qa.dtype.itemsize > 1 else 256
    idx = qa.astype(np.intp, copy=False)
    return {cls: lut_from_rules(rules, (cls,), size)[idx] for cls in MASK_CLASSES}


def decode_landsat_qa_pixel(qa: np.ndarray) -> dict[str, np.ndarray]:
    """Named masks from a Landsat Collection 2 QA_PIXEL array (see LANDSAT_C2_QA_PIXEL)."""
    return decode(qa, LANDSAT_C2_QA_PIXEL)


def decode_scl(scl: np.ndarray) -> dict[str, np.ndarray]:
    """Named masks from a Sentinel-2 SCL array (see :data:`SCL`); class 0 is nodata only here —
    a QA value of 0 is never nodata for products whose 0 means clear (Planet UDM)."""
    return decode(scl, SCL)


def decode_planet_udm(udm: np.ndarray) -> dict[str, np.ndarray]:
    """Named masks from a Planet legacy UDM array (see :data:`PLANET_UDM`)."""
    return decode(udm, PLANET_UDM)
