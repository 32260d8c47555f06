"""The target grid and its chunk tiling; which scene footprints touch which chunk.

Grid arithmetic is odc-geo's (GeoBox, GeoboxTiles); this module only adapts it to Aquila's
records. Pixel coordinates are pixel centres; axis order is (y, x) everywhere.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from odc.geo import geom
from odc.geo.geobox import GeoBox, GeoboxTiles
from shapely.geometry.base import BaseGeometry
from shapely.ops import unary_union

from pipeline.errors import NoScenesError


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


@dataclass(frozen=True)
class TargetGrid:
    """The product grid: CRS, north-up transform, shape (y, x), and the chunk edge in pixels."""

    crs: str
    transform: tuple[float, float, float, float, float, float]
    shape: tuple[int, int]
    chunk: int

    @classmethod
    def from_bounds(
        cls, bounds: tuple[float, float, float, float], *, crs: str, resolution: float, chunk: int
    ) -> TargetGrid:
        gbox = GeoBox.from_bbox(bounds, crs, resolution=resolution)
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
    ) -> TargetGrid:
        """The grid over the union of lon/lat footprints (clipped to a lon/lat bbox if given)."""
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
            (b.left, b.bottom, b.right, b.top), crs=crs, resolution=resolution, chunk=chunk
        )

    @property
    def geobox(self) -> GeoBox:
        from affine import Affine

        return GeoBox(self.shape, Affine(*self.transform), self.crs)

    @property
    def tiles(self) -> GeoboxTiles:
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
        g = geom.Geometry(footprint, "EPSG:4326").to_crs(self.crs)
        g = g.buffer(pad_pixels * abs(self.transform[0]))
        return sorted(self.tiles.tiles(g))

    def coords(self) -> tuple:
        """Pixel-centre coordinates (y, x) as 1-D numpy arrays."""
        a, _, c, _, e, f = self.transform
        import numpy as np

        ny, nx = self.shape
        x = c + a * (np.arange(nx) + 0.5)
        y = f + e * (np.arange(ny) + 0.5)
        return y, x
