"""The entry point: :func:`generate_catalog` writes a deterministic synthetic multi-provider
STAC catalog whose pixels are rendered from a known ground truth, and returns a
:class:`SyntheticCatalog`, the description of what it generated.

The pieces: :mod:`~pipeline.demo.truth` (the area and its truth field),
:mod:`~pipeline.demo.providers` (provider conventions, presets), :mod:`~pipeline.demo.scenes`
(scene parameters and their plan), :mod:`~pipeline.demo.pixels` (the pixel model),
:mod:`~pipeline.demo.assets` (rendering, COGs, vendor metadata files) and
:mod:`~pipeline.demo.stac` (items and collections).
"""

from __future__ import annotations

import json
import multiprocessing
import shutil
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pystac

from pipeline.demo.assets import mtd_text, mtl_text, render, write_cog
from pipeline.demo.providers import (
    ALL_PROVIDERS,
    METADATA_FILES,
    PRESETS,
    PROVIDER_INDEX,
    PROVIDERS,
    ProviderSpec,
)
from pipeline.demo.scenes import SyntheticScene, plan_provider
from pipeline.demo.stac import StacIO, build_collection, build_item
from pipeline.demo.truth import AREA_CRS, BANDS

__all__ = ["MARKER", "SyntheticCatalog", "generate_catalog", "write_scene"]


@dataclass(frozen=True)
class SyntheticCatalog:
    """What :func:`generate_catalog` wrote: the root and its ``catalog.json``, the target area
    (``area_crs`` metres) and every scene's parameters, from which each pixel follows exactly
    (:mod:`pipeline.demo.pixels`; the tests' exact oracle, ``tests/synthetic_oracle.py``,
    evaluates it)."""

    root: Path
    catalog_href: Path
    area_crs: str
    area_bounds: tuple[float, float, float, float]
    scenes: tuple[SyntheticScene, ...]
    preset: str = "demo"
    seed: int = 0


def write_scene(
    scene: SyntheticScene, spec: ProviderSpec, item_dir: Path
) -> tuple[SyntheticScene, pystac.Item]:
    """Render, write the COGs into ``item_dir`` and build the (unsaved) STAC item."""
    rendered = render(scene, spec)
    scene = replace(scene, cloud_fraction=round(rendered.cloud_fraction, 6))
    item_dir.mkdir(parents=True, exist_ok=True)
    groups: dict[str, list[str]] = {}
    for band in BANDS:
        groups.setdefault(spec.band_assets[band][0], []).append(band)
    for key, bands in groups.items():
        data = np.stack([rendered.bands[b] for b in bands])
        write_cog(item_dir / f"{key}.tif", data, scene.transform, scene.crs, spec.nodata)
    write_cog(
        item_dir / f"{spec.qa_key}.tif",
        rendered.qa,
        scene.qa_transform,
        scene.crs,
        spec.qa_nodata,
        categorical=True,
    )
    if spec.published != "raster:bands":
        name, _ = METADATA_FILES[spec.published]
        text = mtd_text(scene) if spec.published == "mtd" else mtl_text(scene, spec)
        (item_dir / name).write_text(text, encoding="utf-8")
    return scene, build_item(scene, spec, rendered.cloud_fraction)


MARKER = ".aquila-synthetic"
"""Written into a root before a generation's first file: what a later generation may replace."""


def _clear_root(root: Path) -> None:
    """Remove what a previous generation wrote (catalog.json, collection folders) only, and only
    where that generation was Aquila's: the root holds :data:`MARKER` (written before anything
    else, so a killed generation is recognised too) or a ``catalog.json`` carrying
    ``aquila:synthetic``. A root whose ``catalog.json`` or provider-named folders are someone
    else's is refused, and nothing is removed."""
    ours = [root / "catalog.json", *(root / name for name in ALL_PROVIDERS)]
    present = [p for p in ours if p.exists() or p.is_symlink()]
    if present and not _generated_here(root):
        from pipeline.errors import InputError

        raise InputError(
            f"{root} already holds {', '.join(p.name for p in present)}, not written by "
            "'aquila demo-catalog'; nothing was changed. Give an empty or new folder"
        )
    (root / MARKER).write_text("written by aquila demo-catalog; its next run may replace this\n")
    # Safe: the marker or an aquila:synthetic catalog.json proves a generation wrote these names
    # (checked above), and symlinks are unlinked, never followed.
    for p in present:
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink()


def _generated_here(root: Path) -> bool:
    if (root / MARKER).is_file():
        return True
    try:
        doc = json.loads((root / "catalog.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(doc, dict) and "aquila:synthetic" in doc


def generate_catalog(
    root: Path | str,
    *,
    preset: str = "demo",
    seed: int = 0,
    area_bounds: tuple[float, float, float, float] | None = None,
    scenes_per_provider: int | None = None,
    workers: int = 1,
    providers: Sequence[str] | None = None,
) -> SyntheticCatalog:
    """Generate the synthetic catalog under ``root`` (created; previous output replaced).

    Args:
        root: output folder. Only ``catalog.json`` and the collection folders
            (``north``, ``south``, ``east``) are removed/rewritten; other files
            (e.g. a README) are kept.
        preset: a key of :data:`PRESETS` ("tiny", "demo", "medium").
        seed: RNG seed; the same (preset, seed, overrides) give identical JSON and pixels.
        area_bounds: override of the preset's target area (xmin, ymin, xmax, ymax),
            EPSG:32632 metres.
        scenes_per_provider: override of the preset's scene count per provider
            (>= 2 for each provider's union to cover the area).
        workers: number of forked worker processes rendering/writing scenes
            (default 1: in-process, no fork). Output does not depend on it.
        providers: collections to generate (default the three of :data:`PROVIDERS`; add
            ``west`` / ``centre`` of :data:`DN_PROVIDERS`, the DN-only ones). A provider's
            scenes do not depend on which others are generated.

    Returns:
        The :class:`SyntheticCatalog`: where it wrote, the area and every scene's parameters.
    """
    if preset not in PRESETS:
        raise KeyError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
    p = PRESETS[preset]
    area = tuple(float(v) for v in (area_bounds or p.area_bounds))
    if len(area) != 4 or not (area[0] < area[2] and area[1] < area[3]):
        raise ValueError(f"invalid area_bounds {area_bounds!r}")
    n = scenes_per_provider if scenes_per_provider is not None else p.scenes_per_provider
    if n < 1:
        raise ValueError("scenes_per_provider must be >= 1")
    names = tuple(providers) if providers is not None else tuple(PROVIDERS)
    unknown = [name for name in names if name not in ALL_PROVIDERS]
    if unknown or not names:
        raise ValueError(f"providers must be some of {list(ALL_PROVIDERS)}, got {list(names)}")
    specs = [ALL_PROVIDERS[name] for name in ALL_PROVIDERS if name in names]
    root = Path(root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    _clear_root(root)

    jobs: list[tuple[SyntheticScene, ProviderSpec, Path]] = []
    for spec in specs:
        pi = PROVIDER_INDEX[spec.collection]
        for scene in plan_provider(spec, pi, area, n, seed):  # type: ignore[arg-type]
            jobs.append((scene, spec, root / spec.collection / scene.item_id))
    if workers > 1:
        # rasterio holds the GIL while writing COGs, so parallelism needs processes
        ctx = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(min(workers, len(jobs)), mp_context=ctx) as pool:
            results = list(pool.map(write_scene, *zip(*jobs, strict=True)))
    else:
        results = [write_scene(*j) for j in jobs]

    catalog = pystac.Catalog(
        id=f"aquila-synthetic-{preset}",
        title=f"Aquila synthetic catalog ({preset}, seed {seed})",
        description=(
            "Deterministic synthetic multi-provider catalog generated by "
            "pipeline.demo.synthetic.generate_catalog; pixel values are rendered from "
            "truth_reflectance() with synthetic clouds, shadows and swath edges."
        ),
        extra_fields={
            "aquila:synthetic": {
                "preset": preset,
                "seed": seed,
                "area_crs": AREA_CRS,
                "area_bounds": list(area),
                "scenes_per_provider": n,
                **({"providers": list(names)} if providers is not None else {}),
            }
        },
    )
    scenes: list[SyntheticScene] = []
    for spec in specs:
        mine = [(s, it) for s, it in results if s.collection == spec.collection]
        scenes.extend(s for s, _ in mine)
        catalog.add_child(build_collection(spec, mine))
    catalog.normalize_hrefs(str(root))
    catalog.save(catalog_type=pystac.CatalogType.SELF_CONTAINED, stac_io=StacIO())
    return SyntheticCatalog(
        root=root,
        catalog_href=root / "catalog.json",
        area_crs=AREA_CRS,
        area_bounds=area,  # type: ignore[arg-type]
        scenes=tuple(scenes),
        preset=preset,
        seed=seed,
    )
