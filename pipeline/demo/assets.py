"""A scene's files: rendering its rasters, writing them as Cloud-Optimized GeoTIFFs, and the
vendor metadata file (Sentinel-2 ``MTD_MSIL1C.xml``, Landsat ``MTL.txt``) of the DN-only
providers.

COGs: DEFLATE (level :data:`COG_DEFLATE_LEVEL`), predictor 2, 512 px tiles, the COG driver's
default overview levels (NEAREST for categorical QA rasters).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from numpy.typing import NDArray
from rasterio.transform import Affine

from pipeline.demo.pixels import (
    QA_DILATION_M,
    apply_atmosphere,
    as_published,
    discs_mask,
    discs_mask_grid,
    encode,
    encode_qa,
    haze_render,
    haze_windows,
    valid_mask,
)
from pipeline.demo.providers import ProviderSpec
from pipeline.demo.scenes import SyntheticScene
from pipeline.demo.truth import AREA_CRS, BANDS, to_area, truth_grid, truth_reflectance

__all__ = ["COG_DEFLATE_LEVEL", "Rendered", "mtd_text", "mtl_text", "render", "write_cog"]

COG_DEFLATE_LEVEL = 4
"""DEFLATE level of the COGs: half the CPU of GDAL's default 6 for ~20 % larger files."""


# ----------------------------------------------------------------------- rendering


@dataclass
class Rendered:
    """One scene's rasters and the fraction of its data band pixels inside a cloud."""

    bands: dict[str, NDArray]  # common name -> uint16 DN (rows, cols)
    qa: NDArray
    cloud_fraction: float


def render(scene: SyntheticScene, spec: ProviderSpec) -> Rendered:
    """Rasterise one scene: DN arrays for every band and the QA array."""
    rows, cols = scene.shape
    x0, _, _, y1 = scene.bounds
    res = scene.resolution
    us = x0 + (np.arange(cols, dtype=np.float64) + 0.5) * res
    vs = y1 - (np.arange(rows, dtype=np.float64) + 0.5) * res
    d = QA_DILATION_M
    sh = scene.shadow_offset
    bands: dict[str, NDArray] = {}
    if scene.crs == AREA_CRS:
        valid = valid_mask(scene, us[None, :], vs[:, None])
        cloud = discs_mask_grid(us, vs, scene.clouds, 0.0)
        shadow = discs_mask_grid(us, vs, scene.clouds, 0.0, sh)
        rr, cc = np.nonzero(cloud)
        cxy = (us[cc], vs[rr])
        haze = haze_render(
            scene.clouds,
            haze_windows(us, vs, scene.crs, res, scene.clouds),
            lambda r0, r1, c0, c1: (us[None, c0:c1], vs[r0:r1, None]),
            cloud,
        )
        for band in BANDS:
            refl = apply_atmosphere(scene, band, truth_grid(band, us, vs), cloud, shadow, cxy)
            if haze is not None:
                refl[haze[0]] += haze[1]
            bands[band] = encode(spec, as_published(spec, scene, band, refl), valid)
        qres = scene.qa_resolution
        qrows, qcols = scene.qa_shape
        qus = x0 + (np.arange(qcols, dtype=np.float64) + 0.5) * qres
        qvs = y1 - (np.arange(qrows, dtype=np.float64) + 0.5) * qres
        if qres == res:
            qvalid, qcore = valid, cloud
        else:
            qvalid = valid_mask(scene, qus[None, :], qvs[:, None])
            qcore = discs_mask_grid(qus, qvs, scene.clouds, 0.0)
        qa = encode_qa(
            spec,
            qvalid,
            qcore,
            discs_mask_grid(qus, qvs, scene.clouds, d),
            discs_mask_grid(qus, qvs, scene.clouds, d, sh),
        )
    else:
        if scene.qa_resolution != res:  # pragma: no cover - no such provider
            raise NotImplementedError("QA grid must equal the band grid for non-area CRSs")
        uu, vv = np.meshgrid(us, vs)
        xx, yy = to_area(scene.crs, uu, vv)
        del uu, vv
        valid = valid_mask(scene, xx, yy)
        cloud = discs_mask(xx, yy, scene.clouds, 0.0)
        shadow = discs_mask(xx, yy, scene.clouds, 0.0, sh)
        cxy = (xx[cloud], yy[cloud])
        haze = haze_render(
            scene.clouds,
            haze_windows(us, vs, scene.crs, res, scene.clouds),
            lambda r0, r1, c0, c1: (xx[r0:r1, c0:c1], yy[r0:r1, c0:c1]),
            cloud,
        )
        for band in BANDS:
            refl = apply_atmosphere(
                scene, band, truth_reflectance(band, xx, yy), cloud, shadow, cxy
            )
            if haze is not None:
                refl[haze[0]] += haze[1]
            bands[band] = encode(spec, as_published(spec, scene, band, refl), valid)
        qa = encode_qa(
            spec,
            valid,
            cloud,
            discs_mask(xx, yy, scene.clouds, d),
            discs_mask(xx, yy, scene.clouds, d, sh),
        )
    n_valid = int(valid.sum())
    frac = float((cloud & valid).sum()) / n_valid if n_valid else 0.0
    return Rendered(bands=bands, qa=qa, cloud_fraction=frac)


def write_cog(
    path: Path,
    data: NDArray,
    transform: Affine,
    crs: str,
    nodata: float,
    *,
    categorical: bool = False,
) -> None:
    """Write a (count, rows, cols) or (rows, cols) array as a DEFLATE/predictor-2 COG
    with 512 px tiles.

    Overviews are left to the COG driver's default levels; categorical (QA) rasters
    get NEAREST overview resampling instead of the driver's default (CUBIC).
    """
    arr = data if data.ndim == 3 else data[None]
    opts: dict[str, Any] = {
        "driver": "COG",
        "width": arr.shape[2],
        "height": arr.shape[1],
        "count": arr.shape[0],
        "dtype": arr.dtype.name,
        "crs": crs,
        "transform": transform,
        "nodata": nodata,
        "compress": "DEFLATE",
        "level": COG_DEFLATE_LEVEL,
        "predictor": 2,
        "blocksize": 512,
        "num_threads": "ALL_CPUS",
    }
    if categorical:
        opts["overview_resampling"] = "NEAREST"
    with rasterio.open(path, "w", **opts) as ds:
        ds.write(arr)


# ------------------------------------------------------------------ vendor metadata

# Sentinel-2A/2B SOLAR_IRRADIANCE (W/m²/µm) of real MTD files (bandId 0..12), and the bands
# Aquila reads from them; they only matter for a radiance target.
# fmt: off
_S2_SOLAR = {
    "sentinel-2a": (1884.69, 1959.66, 1823.24, 1512.06, 1424.64, 1287.61, 1162.08, 1041.63,
                    955.32, 812.92, 367.15, 245.59, 85.25),
    "sentinel-2b": (1874.3, 1959.75, 1824.93, 1512.79, 1425.78, 1291.13, 1175.57, 1041.28,
                    953.93, 817.58, 365.41, 247.08, 87.75),
}
# fmt: on
# OLI band solar irradiance used only to make the synthetic MTL's radiance rescaling consistent
# with its reflectance rescaling (RADIANCE_MULT = REFLECTANCE_MULT * ESUN / (pi d^2)); values of
# the Thuillier-based OLI ESUN often quoted (USGS publishes none for OLI).
_OLI_ESUN = {"blue": 2004.57, "green": 1820.75, "red": 1549.49, "nir": 951.76}


def _sun_distance(when: datetime) -> float:
    """Earth-Sun distance (AU), Spencer (1971) series: independent of the pipeline's NOAA one."""
    g = 2.0 * math.pi * (when.timetuple().tm_yday - 1) / 365.0
    inverse_sq = (
        1.000110
        + 0.034221 * math.cos(g)
        + 0.001280 * math.sin(g)
        + 0.000719 * math.cos(2 * g)
        + 0.000077 * math.sin(2 * g)
    )
    return 1.0 / math.sqrt(inverse_sq)


def mtd_text(scene: SyntheticScene) -> str:
    """A minimal MTD_MSIL1C.xml in ESA's layout: baseline 05.10 quantification and offsets."""
    d = _sun_distance(scene.datetime)
    ns = "https://psd-14.sentinel2.eo.esa.int/PSD/User_Product_Level-1C.xsd"
    offsets = "".join(
        f'<RADIO_ADD_OFFSET band_id="{i}">-1000</RADIO_ADD_OFFSET>' for i in range(13)
    )
    solar = "".join(
        f'<SOLAR_IRRADIANCE bandId="{i}" unit="W/m²/µm">{v}</SOLAR_IRRADIANCE>'
        for i, v in enumerate(_S2_SOLAR[scene.platform])
    )
    return (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<n1:Level-1C_User_Product xmlns:n1="{ns}">'
        f"<n1:General_Info><Product_Info><PRODUCT_START_TIME>{scene.datetime:%Y-%m-%dT%H:%M:%S}"
        f".000Z</PRODUCT_START_TIME><PROCESSING_BASELINE>05.10</PROCESSING_BASELINE>"
        f"<PRODUCT_TYPE>S2MSI1C</PRODUCT_TYPE><Datatake><SPACECRAFT_NAME>Sentinel-"
        f"{scene.platform[-1].upper()}</SPACECRAFT_NAME></Datatake></Product_Info>"
        f'<Product_Image_Characteristics><QUANTIFICATION_VALUE unit="none">10000'
        f"</QUANTIFICATION_VALUE><Radiometric_Offset_List>{offsets}</Radiometric_Offset_List>"
        f"<Reflectance_Conversion><U>{1.0 / (d * d):.15f}</U><Solar_Irradiance_List>{solar}"
        f"</Solar_Irradiance_List></Reflectance_Conversion></Product_Image_Characteristics>"
        f"</n1:General_Info></n1:Level-1C_User_Product>\n"
    )


def mtl_text(scene: SyntheticScene, spec: ProviderSpec) -> str:
    """A Collection 2 Level-1 MTL.txt (ODL) with the groups radiometry reads."""
    d = _sun_distance(scene.datetime)
    numbers = {b: spec.band_names[b][1:] for b in BANDS}
    files = "".join(
        f'    FILE_NAME_BAND_{numbers[b]} = "{spec.band_assets[b][0]}.tif"\n' for b in BANDS
    )
    rescaling = ""
    for b in BANDS:
        k = _OLI_ESUN[b] / (math.pi * d * d)
        rescaling += (
            f"    RADIANCE_MULT_BAND_{numbers[b]} = {spec.scale * k:.4E}\n"
            f"    RADIANCE_ADD_BAND_{numbers[b]} = {spec.offset * k:.5f}\n"
        )
    for b in BANDS:
        rescaling += (
            f"    REFLECTANCE_MULT_BAND_{numbers[b]} = {spec.scale:.4E}\n"
            f"    REFLECTANCE_ADD_BAND_{numbers[b]} = {spec.offset:.6f}\n"
        )
    t = scene.datetime
    return (
        "GROUP = LANDSAT_METADATA_FILE\n  GROUP = PRODUCT_CONTENTS\n"
        f'    LANDSAT_PRODUCT_ID = "{scene.item_id}"\n    PROCESSING_LEVEL = "L1TP"\n{files}'
        "  END_GROUP = PRODUCT_CONTENTS\n  GROUP = IMAGE_ATTRIBUTES\n"
        f'    SPACECRAFT_ID = "LANDSAT_{scene.platform[-1]}"\n'
        f"    DATE_ACQUIRED = {t:%Y-%m-%d}\n"
        f'    SCENE_CENTER_TIME = "{t:%H:%M:%S}.0000000Z"\n'
        f"    SUN_AZIMUTH = {scene.sun_azimuth:.8f}\n"
        f"    SUN_ELEVATION = {scene.sun_elevation:.8f}\n"
        f"    EARTH_SUN_DISTANCE = {d:.7f}\n"
        "  END_GROUP = IMAGE_ATTRIBUTES\n  GROUP = LEVEL1_RADIOMETRIC_RESCALING\n"
        f"{rescaling}  END_GROUP = LEVEL1_RADIOMETRIC_RESCALING\n"
        "END_GROUP = LANDSAT_METADATA_FILE\nEND\n"
    )
