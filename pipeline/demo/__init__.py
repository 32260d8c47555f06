"""Aquila's demo input: a deterministic synthetic multi-provider STAC catalog with a known
ground truth (``aquila demo-catalog``).

:func:`generate_catalog` writes a static, self-contained STAC catalog of three "providers"
(collections) with deliberately different conventions, whose Cloud-Optimized GeoTIFF assets are
rendered from one analytic surface reflectance field, :func:`truth_reflectance`:

``north``
    Sentinel-2-L2A-like: EPSG:32632, 10 m, one single-band uint16 COG per band
    (``B02`` ``B03`` ``B04`` ``B08``), ``DN * 1e-4 - 0.1``, nodata 0; scene
    classification ``SCL`` (uint8, **20 m**, classification:classes);
    projection extension v1.1.0 (``proj:epsg``).
``south``
    Landsat-Collection-2-L2-like: EPSG:32632, 30 m, single-band uint16 COGs
    (``blue`` ``green`` ``red`` ``nir08``), ``DN * 2.75e-5 - 0.2``, nodata 0;
    ``qa_pixel`` (uint16 bit flags, classification:bitfields); projection
    extension v2.0.0 (``proj:code``).
``east``
    PlanetScope-like: **EPSG:32633** (the neighbouring UTM zone), 20 m, one
    4-band uint16 COG ``analytic`` (blue, green, red, nir), ``DN * 5e-5``,
    nodata 65535; ``udm`` (uint8, classification:classes); projection
    extension v1.1.0 (``proj:epsg``).

and, on request, two DN-only providers (``west``, ``centre``: :data:`DN_PROVIDERS`).

Modules: :mod:`~pipeline.demo.truth` (the area and its truth field),
:mod:`~pipeline.demo.providers` (provider conventions, presets), :mod:`~pipeline.demo.scenes`
(scene parameters and their deterministic plan), :mod:`~pipeline.demo.pixels` (the pixel model:
clouds, shadows, haze, swath edge, DN and QA encoding), :mod:`~pipeline.demo.assets` (rendering,
COGs, vendor metadata files), :mod:`~pipeline.demo.stac` (items and collections) and
:mod:`~pipeline.demo.synthetic` (:func:`generate_catalog`). The tests' exact pixel oracle over
a generated catalog lives with the tests (``tests/synthetic_oracle.py``).

Units: coordinates in metres of the named CRS (EPSG:32632 unless stated); reflectance is
unitless surface reflectance (0..1); angles in degrees.
"""

from pipeline.demo.pixels import (
    CLOUD_REFLECTANCE_RANGE,
    HAZE_M,
    HAZE_MAX,
    QA_DILATION_M,
    SHADOW_FACTOR,
)
from pipeline.demo.providers import (
    ALL_PROVIDERS,
    DN_PROVIDERS,
    HLS_V2_MSI_TO_OLI,
    PRESETS,
    PROVIDERS,
    Preset,
    ProviderSpec,
)
from pipeline.demo.scenes import CloudDisc, SyntheticScene, plan_provider
from pipeline.demo.stac import COG_MEDIA_TYPE, STAC_VERSION
from pipeline.demo.synthetic import SyntheticCatalog, generate_catalog
from pipeline.demo.truth import AREA_CRS, BANDS, truth_reflectance

__all__ = [
    "ALL_PROVIDERS",
    "AREA_CRS",
    "BANDS",
    "CLOUD_REFLECTANCE_RANGE",
    "COG_MEDIA_TYPE",
    "DN_PROVIDERS",
    "HAZE_M",
    "HAZE_MAX",
    "HLS_V2_MSI_TO_OLI",
    "PRESETS",
    "PROVIDERS",
    "QA_DILATION_M",
    "SHADOW_FACTOR",
    "STAC_VERSION",
    "CloudDisc",
    "Preset",
    "ProviderSpec",
    "SyntheticCatalog",
    "SyntheticScene",
    "generate_catalog",
    "plan_provider",
    "truth_reflectance",
]
