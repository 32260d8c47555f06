"""The exact oracle of a generated synthetic catalog, for tests and benchmarks.

:func:`oracle` turns the :class:`~pipeline.demo.SyntheticCatalog` that
:func:`~pipeline.demo.generate_catalog` returns (where it wrote, the area, every scene's
parameters) into a :class:`CatalogOracle`: the same description plus the pixel model evaluated
point by point (``truth``, ``cloudy``, ``shadowed``, ``valid``, ``qa_clear``,
``pixel_reflectance``, ``toa_reflectance``, ``hazy``, ``contamination``,
``clear_observations``). It calls the generator's own pixel-model functions
(:mod:`pipeline.demo.pixels`), so its values are bit-identical to the rendered COGs.

All coordinates are EPSG:32632 metres (broadcastable arrays); reflectance is unitless.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
from numpy.typing import NDArray

from pipeline.demo.pixels import (
    QA_DILATION_M,
    apply_atmosphere,
    as_published,
    discs_mask,
    edge_distance,
    encode,
    haze_from_distance,
    valid_mask,
)
from pipeline.demo.providers import ALL_PROVIDERS, HLS_V2_MSI_TO_OLI
from pipeline.demo.scenes import CloudDisc, SyntheticScene, grid_shape
from pipeline.demo.synthetic import SyntheticCatalog
from pipeline.demo.truth import TRUTH_FIELDS, from_area, to_area, truth_reflectance

__all__ = ["TRUTH_MAX_GRADIENT", "CatalogOracle", "oracle", "point_haze", "truth_gradient_bound"]

TRUTH_MAX_GRADIENT = 3e-4
"""Upper bound of |grad truth_reflectance| for every band, reflectance per metre."""


def truth_gradient_bound(band: str) -> float:
    """Analytic upper bound of |grad truth_reflectance(band)| in reflectance per metre."""
    f = TRUTH_FIELDS[band]
    g = sum(abs(w.amplitude) * 2.0 * math.pi / w.wavelength_m for w in f.waves)
    # max |d/dr A exp(-r^2/2s^2)| = |A| exp(-1/2) / s at r = s
    g += sum(abs(b.amplitude) * math.exp(-0.5) / b.sigma_m for b in f.bumps)
    return g


def point_haze(
    x: NDArray[Any], y: NDArray[Any], discs: Sequence[CloudDisc], cloud: NDArray[np.bool_]
) -> NDArray[np.float64]:
    """Additive haze at EPSG:32632 points (broadcastable); ``cloud`` = the points inside
    ``discs`` (:func:`~pipeline.demo.pixels.discs_mask` with ``extra=0``) of the broadcast
    shape. Equal to the renderer's windowed haze (``haze_render``) at every pixel centre."""
    dist = np.full(np.broadcast_shapes(np.shape(x), np.shape(y)), np.inf)
    for d in discs:
        np.minimum(dist, edge_distance(x, y, d), out=dist)
    return haze_from_distance(dist, cloud)


def oracle(catalog: SyntheticCatalog) -> CatalogOracle:
    """The oracle of a generated catalog (the same fields, plus the oracle methods)."""
    return CatalogOracle(**{f.name: getattr(catalog, f.name) for f in fields(catalog)})


@dataclass(frozen=True)
class CatalogOracle(SyntheticCatalog):
    """A generated catalog plus oracles for its content.

    All oracle coordinates are EPSG:32632 metres (broadcastable arrays). The
    "pixel containing (x, y)" is the pixel of the scene's native grid (band grid,
    or QA grid for :meth:`qa_clear`) whose cell contains the point after
    transforming it into the scene's CRS -- what nearest-neighbour resampling
    onto a target grid with pixel centre (x, y) reads.
    """

    def scene(self, item_id: str) -> SyntheticScene:
        """The scene of ``item_id`` (KeyError if unknown)."""
        for s in self.scenes:
            if s.item_id == item_id:
                return s
        raise KeyError(item_id)

    def truth(self, band: str, x: NDArray[Any], y: NDArray[Any]) -> NDArray[np.float64]:
        """True surface reflectance; same as :func:`truth_reflectance`."""
        return truth_reflectance(band, x, y)

    def cloudy(self, x: NDArray[Any], y: NDArray[Any], item_id: str) -> NDArray[np.bool_]:
        """True where (x, y) lies inside that scene's (undilated) clouds."""
        return discs_mask(
            np.asarray(x, float), np.asarray(y, float), self.scene(item_id).clouds, 0.0
        )

    def shadowed(self, x: NDArray[Any], y: NDArray[Any], item_id: str) -> NDArray[np.bool_]:
        """True where (x, y) lies in that scene's (undilated) cloud shadow and not in a cloud."""
        s = self.scene(item_id)
        xa, ya = np.asarray(x, float), np.asarray(y, float)
        return discs_mask(xa, ya, s.clouds, 0.0, s.shadow_offset) & ~discs_mask(
            xa, ya, s.clouds, 0.0
        )

    def _centres(
        self, x: NDArray[Any], y: NDArray[Any], s: SyntheticScene, res: float
    ) -> tuple[NDArray[np.bool_], NDArray[np.float64], NDArray[np.float64]]:
        """(inside raster, X, Y): centre of the pixel containing each point, in EPSG:32632."""
        xa, ya = np.broadcast_arrays(np.asarray(x, float), np.asarray(y, float))
        u, v = from_area(s.crs, xa, ya)
        rows, cols = grid_shape(s.bounds, res)
        col = np.floor((u - s.bounds[0]) / res)
        row = np.floor((s.bounds[3] - v) / res)
        inside = (col >= 0) & (col < cols) & (row >= 0) & (row < rows)
        col = np.clip(col, 0, cols - 1)
        row = np.clip(row, 0, rows - 1)
        uc = s.bounds[0] + (col + 0.5) * res
        vc = s.bounds[3] - (row + 0.5) * res
        xc, yc = to_area(s.crs, uc, vc)
        return inside, xc, yc

    def valid(self, x: NDArray[Any], y: NDArray[Any], item_id: str) -> NDArray[np.bool_]:
        """True where the band pixel containing (x, y) holds data (not nodata)."""
        s = self.scene(item_id)
        inside, xc, yc = self._centres(x, y, s, s.resolution)
        return inside & valid_mask(s, xc, yc)

    def qa_clear(self, x: NDArray[Any], y: NDArray[Any], item_id: str) -> NDArray[np.bool_]:
        """True where the QA pixel containing (x, y) is data and flags neither cloud nor
        shadow (i.e. what a correct QA mask accepts)."""
        s = self.scene(item_id)
        inside, xc, yc = self._centres(x, y, s, s.qa_resolution)
        d = QA_DILATION_M
        flagged = discs_mask(xc, yc, s.clouds, d) | discs_mask(xc, yc, s.clouds, d, s.shadow_offset)
        return inside & valid_mask(s, xc, yc) & ~flagged

    def pixel_reflectance(
        self, band: str, x: NDArray[Any], y: NDArray[Any], item_id: str
    ) -> NDArray[np.float64]:
        """Decoded value (DN * scale + offset) of the band pixel containing (x, y); NaN
        where that pixel is nodata or outside the raster. Includes shadows, clouds and
        the (unflagged) haze. Bit-identical to the COG except, at most, for float64
        rounding ties (probability ~1e-12 per pixel)."""
        s = self.scene(item_id)
        spec = ALL_PROVIDERS[s.collection]
        inside, xc, yc = self._centres(x, y, s, s.resolution)
        ok = inside & valid_mask(s, xc, yc)
        cloud = discs_mask(xc, yc, s.clouds, 0.0)
        shadow = discs_mask(xc, yc, s.clouds, 0.0, s.shadow_offset)
        refl = apply_atmosphere(
            s, band, truth_reflectance(band, xc, yc), cloud, shadow, (xc[cloud], yc[cloud])
        )
        refl += point_haze(xc, yc, s.clouds, cloud)
        dn = encode(spec, as_published(spec, s, band, refl), ok)
        out = dn.astype(np.float64) * spec.scale + spec.offset
        out[~ok] = np.nan
        return out

    def toa_reflectance(
        self, band: str, x: NDArray[Any], y: NDArray[Any], item_id: str, *, harmonised: bool
    ) -> NDArray[np.float64]:
        """What a correct calibration makes of the band pixel containing (x, y) (NaN: nodata):
        for the DN-only providers the TOA reflectance from their published constants —
        ``centre``: (DN * 2e-5 - 0.1) / sin(sun elevation); ``west``: DN / 10000 - 0.1, the MSI
        reflectance, and with ``harmonised`` its HLS v2.0 adjustment to OLI, which equals the
        truth up to DN quantisation; the other providers: :meth:`pixel_reflectance`."""
        s = self.scene(item_id)
        spec = ALL_PROVIDERS[s.collection]
        value = self.pixel_reflectance(band, x, y, item_id)
        if spec.published == "mtl":
            return value / math.sin(math.radians(s.sun_elevation))
        if spec.published == "mtd" and harmonised:
            slope, intercept = HLS_V2_MSI_TO_OLI[s.platform][band]
            return value * slope + intercept
        return value

    def _haze_at(
        self, x: NDArray[Any], y: NDArray[Any], item_id: str
    ) -> tuple[NDArray[np.bool_], NDArray[np.bool_], NDArray[np.float64]]:
        """(inside raster, cloud, haze) at the centre of the band pixel containing (x, y)."""
        s = self.scene(item_id)
        inside, xc, yc = self._centres(x, y, s, s.resolution)
        cloud = discs_mask(xc, yc, s.clouds, 0.0)
        return inside, cloud, point_haze(xc, yc, s.clouds, cloud)

    def hazy(self, x: NDArray[Any], y: NDArray[Any], item_id: str) -> NDArray[np.bool_]:
        """True where the band pixel containing (x, y) is atmospherically contaminated:
        its centre is inside a cloud or gets haze > 0 (within :data:`HAZE_M` of a cloud
        edge). False outside the raster; swath nodata is not considered (combine with
        :meth:`valid`). Haze beyond :data:`QA_DILATION_M` is not flagged in QA, so
        ``hazy & qa_clear`` is where a QA-respecting mosaic can still be contaminated."""
        inside, cloud, haze = self._haze_at(x, y, item_id)
        return inside & (cloud | (haze > 0.0))

    def contamination(self, x: NDArray[Any], y: NDArray[Any], item_id: str) -> NDArray[np.float64]:
        """Additive haze reflectance (0..:data:`HAZE_MAX`) of the band pixel containing
        (x, y): the budget of |observed - truth| there (before DN quantisation, i.e. up
        to scale / 2 more). 0 where there is no haze, NaN inside clouds (the value is
        cloud reflectance, unrelated to the truth) and outside the raster. In (QA-flagged)
        shadows the observation is ``SHADOW_FACTOR * truth + contamination``."""
        inside, cloud, haze = self._haze_at(x, y, item_id)
        haze[cloud | ~inside] = np.nan
        return haze

    def clear_observations(self, x: NDArray[Any], y: NDArray[Any]) -> NDArray[np.int64]:
        """Number of scenes whose band pixel is data and whose QA pixel is clear at (x, y)."""
        xa, ya = np.broadcast_arrays(np.asarray(x, float), np.asarray(y, float))
        n = np.zeros(xa.shape, dtype=np.int64)
        for s in self.scenes:
            n += self.valid(xa, ya, s.item_id) & self.qa_clear(xa, ya, s.item_id)
        return n
