"""The target grid and its chunk tiling; which scene footprints touch which chunk.

Grid arithmetic is odc-geo's (GeoBox, GeoboxTiles); this module only adapts it to Aquila's
records. Pixel coordinates are pixel centres; axis order is (y, x) everywhere.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from pipeline.errors import NoScenesError
from pipeline.plan.extent import Bounds, PlanLimits, grid_shape

if TYPE_CHECKING:  # odc-geo and shapely are imported where they are used: a Dask worker, which
    # imports ChunkGrid with the plan, never needs them
    import numpy as np
    from odc.geo import XY
    from odc.geo.geobox import GeoBox, GeoboxTiles
    from shapely.geometry.base import BaseGeometry

Anchor = Literal["edge", "center"] | tuple[float, float]
"""odc-geo's snapping anchor: 'edge' (pixel edges on multiples of the resolution), 'center'
(pixel centres there), or (fx, fy) pixel fractions; None keeps the given bounds exactly."""


@dataclass(frozen=True)
class ChunkGrid:
    """One output chunk: where it sits in the grid (pixel offsets) and its own geotransform."""

    iy: int
    ix: int
    y0: int
    x0: int
    height: int
    width: int
    crs: str
    transform: tuple[float, float, float, float, float, float]

    @property
    def name(self) -> str:
        return f"r{self.iy:03d}-c{self.ix:03d}"

    def part(self, y0: int, x0: int, height: int, width: int) -> ChunkGrid:
        """The part of this chunk at grid offsets (``y0``, ``x0``) of ``height`` × ``width``
        pixels (inside it), with its own geotransform; same chunk indices."""
        if not (self.y0 <= y0 and y0 + height <= self.y0 + self.height
                and self.x0 <= x0 and x0 + width <= self.x0 + self.width):
            raise ValueError(f"part ({y0}, {x0}, {height}, {width}) is not inside chunk "
                             f"{self.name} ({self.y0}, {self.x0}, {self.height}, {self.width})")
        a, b, c, d, e, f = self.transform
        dy, dx = y0 - self.y0, x0 - self.x0
        transform = (a, b, c + a * dx + b * dy, d, e, f + d * dx + e * dy)
        return ChunkGrid(self.iy, self.ix, y0, x0, height, width, self.crs, transform)


@dataclass(frozen=True)
class TargetGrid:
    """The product grid: CRS, north-up transform, shape (y, x), and the chunk edge in pixels."""

    crs: str
    transform: tuple[float, float, float, float, float, float]
    shape: tuple[int, int]
    chunk: int

    @classmethod
    def from_bounds(
        cls,
        bounds: Bounds,
        *,
        crs: str,
        resolution: float,
        chunk: int,
        anchor: Anchor | None = None,
        limits: PlanLimits | None = None,
        source: str = "grid.bounds",
    ) -> TargetGrid:
        """The grid over ``bounds`` (grid CRS units). Without ``anchor`` the bounds are kept
        exactly: origin (xmin, ymax), shape = extent / resolution, and bounds that are not whole
        pixels are refused (never moved silently). With ``anchor`` odc-geo snaps them outward.
        Its size is checked against ``limits`` from arithmetic, before anything is built."""
        shape = grid_shape(
            bounds, resolution, chunk=chunk, snapped=anchor is not None,
            limits=limits or PlanLimits(), source=source,
        )
        if shape is not None:
            xmin, ymax = float(bounds[0]), float(bounds[3])
            res = float(resolution)
            return cls(str(crs), (res, 0.0, xmin, 0.0, -res, ymax), shape, chunk)
        assert anchor is not None  # grid_shape leaves the shape to odc-geo only when snapping
        from odc.geo.geobox import GeoBox

        gbox = GeoBox.from_bbox(bounds, crs, resolution=resolution, anchor=_odc_anchor(anchor))
        t = gbox.transform
        return cls(str(crs), (t.a, t.b, t.c, t.d, t.e, t.f), (gbox.shape.y, gbox.shape.x), chunk)

    @classmethod
    def covering(
        cls,
        footprints: Iterable[BaseGeometry],
        *,
        crs: str,
        resolution: float,
        chunk: int,
        bbox: tuple[float, float, float, float] | None = None,
        anchor: Anchor | None = None,
        limits: PlanLimits | None = None,
    ) -> TargetGrid:
        """The grid over the union of lon/lat footprints (clipped to a lon/lat bbox if given),
        snapped outward to the resolution (``anchor``, default 'edge'): the run report records
        the bounds it ends up with."""
        from odc.geo import geom
        from shapely.ops import unary_union

        shapes = list(footprints)
        if not shapes:
            raise NoScenesError("no scene footprints to derive the grid bounds from")
        area = geom.Geometry(unary_union(shapes), "EPSG:4326")
        if bbox is not None:
            area = area.intersection(geom.box(*bbox, "EPSG:4326"))
        if area.is_empty:
            raise NoScenesError("the scenes' footprints do not overlap the workflow's bbox")
        b = area.to_crs(crs).boundingbox
        return cls.from_bounds(
            (b.left, b.bottom, b.right, b.top),
            crs=crs,
            resolution=resolution,
            chunk=chunk,
            anchor=anchor if anchor is not None else "edge",
            limits=limits,
            source="the scenes' footprints (no grid.bounds given)",
        )

    @property
    def bounds(self) -> Bounds:
        """(xmin, ymin, xmax, ymax) of the grid's outer pixel edges (north-up grid)."""
        a, _, c, _, e, f = self.transform
        ny, nx = self.shape
        return (c, f + e * ny, c + a * nx, f)

    @property
    def geobox(self) -> GeoBox:
        from affine import Affine
        from odc.geo.geobox import GeoBox

        return GeoBox(self.shape, Affine(*self.transform), self.crs)

    @property
    def tiles(self) -> GeoboxTiles:
        from odc.geo.geobox import GeoboxTiles

        return GeoboxTiles(self.geobox, (self.chunk, self.chunk))

    @property
    def chunk_counts(self) -> tuple[int, int]:
        s = self.tiles.shape
        return (s.y, s.x)

    def chunks(self) -> Iterator[ChunkGrid]:
        ny, nx = self.chunk_counts
        for iy in range(ny):
            for ix in range(nx):
                yield self.chunk_grid(iy, ix)

    def chunk_grid(self, iy: int, ix: int) -> ChunkGrid:
        from odc.geo.geobox import GeoBox

        sub = self.tiles[iy, ix]
        assert isinstance(sub, GeoBox)  # tiles of an affine GeoBox are affine GeoBoxes
        t = sub.transform
        return ChunkGrid(
            iy,
            ix,
            iy * self.chunk,
            ix * self.chunk,
            sub.shape.y,
            sub.shape.x,
            self.crs,
            (t.a, t.b, t.c, t.d, t.e, t.f),
        )

    def expanded(self, chunk: ChunkGrid, halo: int) -> ChunkGrid:
        """The chunk grown by ``halo`` pixels on every side, clipped to the grid."""
        if halo <= 0:
            return chunk
        ny, nx = self.shape
        y0, x0 = max(chunk.y0 - halo, 0), max(chunk.x0 - halo, 0)
        y1 = min(chunk.y0 + chunk.height + halo, ny)
        x1 = min(chunk.x0 + chunk.width + halo, nx)
        a, b, c, d, e, f = self.transform
        transform = (a, b, c + a * x0 + b * y0, d, e, f + d * x0 + e * y0)
        return ChunkGrid(chunk.iy, chunk.ix, y0, x0, y1 - y0, x1 - x0, self.crs, transform)

    def chunks_touching(
        self, footprint: BaseGeometry, *, pad_pixels: float = 2.0
    ) -> list[tuple[int, int]]:
        """Chunk indices (iy, ix) whose area intersects a lon/lat footprint (padded a little)."""
        from odc.geo import geom

        g = geom.Geometry(footprint, "EPSG:4326").to_crs(self.crs)
        g = g.buffer(pad_pixels * abs(self.transform[0]))
        return sorted(self.tiles.tiles(g))

    def coords(self) -> tuple[np.ndarray, np.ndarray]:
        """Pixel-centre coordinates (y, x) as 1-D numpy arrays."""
        a, _, c, _, e, f = self.transform
        import numpy as np

        ny, nx = self.shape
        x = c + a * (np.arange(nx) + 0.5)
        y = f + e * (np.arange(ny) + 0.5)
        return y, x


def _odc_anchor(anchor: Anchor) -> Literal["edge", "center"] | XY[float]:
    """Our anchor in odc-geo's terms: a name as is, a pixel-fraction pair as an ``XY``."""
    if isinstance(anchor, str):
        return anchor
    from odc.geo import xy_

    return xy_(*anchor)
