"""What a product's STAC documents say about its store: its Zarr version and media type, its
arrays (name, dtype, fill value, dimensions) read from the store's own metadata (v3
``zarr.json`` or v2 ``.zmetadata``/``.zarray``), and its size."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Media types. Zarr: STAC best practices (radiantearth/stac-best-practices, best-practices-zarr.md,
# "Assets representing Zarr stores SHALL use the appropriate media type with version
# information": application/vnd.zarr; version=2 | 3; pystac#1546 and stac-best-practices#37
# retired "application/vnd+zarr"). Icechunk: the same repository's example of a virtual
# Icechunk store (examples/CMIP6_ScenarioMIP_NCAR_CESM2_collection.json, commit d18ec80)
# types it "application/vnd.zarr+icechunk": a repository is read through Icechunk, not as Zarr.
ICECHUNK_MEDIA_TYPE = "application/vnd.zarr+icechunk"
ZARR_MEDIA_TYPE = "application/vnd.zarr"
ITEM_MEDIA_TYPE = "application/geo+json"
JSON_MEDIA_TYPE = "application/json"
_MAX_META = 256 * 2**20


def zarr_format(store: Path) -> int | None:
    """The Zarr format the store's own metadata says (``zarr.json``: its ``zarr_format``, 3;
    ``.zgroup``/``.zarray``: 2); None where neither is there."""
    doc = _json_file(store / "zarr.json")
    if isinstance(doc, dict):
        return int(doc.get("zarr_format", 3))
    if (store / ".zgroup").is_file() or (store / ".zarray").is_file():
        return 2
    return None


def media_type(store: Path, *, icechunk: bool = False) -> str:
    """The asset media type of a store: an Icechunk repository, or Zarr of its own version."""
    if icechunk:
        return ICECHUNK_MEDIA_TYPE
    version = zarr_format(store)
    return ZARR_MEDIA_TYPE if version is None else f"{ZARR_MEDIA_TYPE}; version={version}"


@dataclass(frozen=True)
class Variable:
    """One array of a product, as its metadata describes it."""

    name: str
    dims: tuple[str, ...]
    dtype: str  # numpy dtype name
    fill: Any
    unit: str | None = None
    description: str | None = None


def store_variables(store: Path) -> list[Variable]:
    """The top-level arrays on the product grid (dimensions include y and x), read from the
    store's metadata (v3 ``zarr.json``, consolidated or per array; v2 ``.zmetadata`` or per
    array), in name order. Coordinates and nested groups (overviews) are left out."""
    meta = _array_metadata(store)
    found = [v for v in (_variable(name, m) for name, m in sorted(meta.items())) if v]
    return [v for v in found if "y" in v.dims and "x" in v.dims]


def _array_metadata(store: Path) -> dict[str, dict[str, Any]]:
    """name -> v3-shaped array metadata (data_type, fill_value, dimension_names, attributes)."""
    root = _json_file(store / "zarr.json")
    if isinstance(root, dict):
        consolidated = (root.get("consolidated_metadata") or {}).get("metadata")
        if isinstance(consolidated, dict):
            return {k: v for k, v in consolidated.items()
                    if "/" not in k and isinstance(v, dict) and v.get("node_type") == "array"}
        nodes = {p.name: _json_file(p / "zarr.json") for p in _children(store)}
        return {k: v for k, v in nodes.items()
                if isinstance(v, dict) and v.get("node_type") == "array"}
    return _v2_metadata(store)


def _v2_metadata(store: Path) -> dict[str, dict[str, Any]]:
    zmeta = _json_file(store / ".zmetadata")
    flat = zmeta.get("metadata") if isinstance(zmeta, dict) else None
    if not isinstance(flat, dict):
        flat = {}
        for p in _children(store):
            for leaf in (".zarray", ".zattrs"):
                doc = _json_file(p / leaf)
                if doc is not None:
                    flat[f"{p.name}/{leaf}"] = doc
    out = {}
    for key, array in flat.items():
        name, _, leaf = key.rpartition("/")
        if leaf != ".zarray" or not name or "/" in name or not isinstance(array, dict):
            continue
        attrs = dict(flat.get(f"{name}/.zattrs") or {})
        out[name] = {
            "data_type": _v2_dtype(array.get("dtype")),
            "fill_value": array.get("fill_value"),
            "dimension_names": attrs.pop("_ARRAY_DIMENSIONS", None),
            "attributes": attrs,
        }
    return out


def _v2_dtype(typestr: Any) -> str:
    import numpy as np

    try:
        return np.dtype(typestr).name
    except TypeError:
        return "other"


def _variable(name: str, meta: Mapping[str, Any]) -> Variable | None:
    dims = meta.get("dimension_names")
    if not isinstance(dims, list | tuple) or not all(isinstance(d, str) for d in dims):
        return None
    attrs = meta.get("attributes") or {}
    dtype = meta.get("data_type")
    return Variable(
        name=name,
        dims=tuple(dims),
        dtype=dtype if isinstance(dtype, str) else "other",
        fill=meta.get("fill_value"),
        unit=attrs.get("units") if isinstance(attrs.get("units"), str) else None,
        description=attrs.get("long_name") if isinstance(attrs.get("long_name"), str) else None,
    )


def band_variables(bands: Sequence[str], dims: tuple[str, ...], quantity: str = "reflectance"
                   ) -> list[Variable]:
    """The bands as every store lays them out (float32, NaN fill; the unit of ``quantity``), for
    a store whose metadata is not plain files (an Icechunk repository)."""
    unit = "W m-2 sr-1 um-1" if quantity == "radiance" else "1"
    return [Variable(b, dims, "float32", "NaN", unit, f"{b} {quantity}") for b in bands]


def _children(store: Path) -> list[Path]:
    try:
        return sorted(p for p in store.iterdir() if p.is_dir() and not p.is_symlink())
    except OSError:
        return []


def _json_file(path: Path) -> Any:
    """A small regular JSON file's content (None: absent, not a regular file, or not JSON)."""
    try:
        st = os.lstat(path)
        if not path.is_file() or path.is_symlink() or st.st_size > _MAX_META:
            return None
        return json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None


def store_size(store: Path) -> int | None:
    """Bytes of every file under ``store`` (None: no such folder): what a copy moves."""
    if not store.is_dir():
        return None
    total = 0
    for folder, _, files in os.walk(store):
        for name in files:
            try:
                total += os.lstat(os.path.join(folder, name)).st_size
            except OSError:
                continue
    return total
