"""Where each output pixel comes from: nearest-neighbour source index maps. Pure NumPy + pyproj.

For nearest resampling Aquila does not call GDAL's warper. A same-CRS, axis-aligned source maps
by per-row/per-column indices (exact). Another CRS is transformed exactly (pyproj) on a node grid
every ``NODE_STEP`` output pixels, anchored to the *global* grid so the result does not depend
on the chunking, and interpolated bilinearly in between; for UTM↔UTM over 16 × 10 m the
interpolation error is below 1e-5 source pixel (measured 2e-6 at 6° from the central
meridian; tested). GDAL's default approximate transformer, by contrast, makes
nearest-neighbour output depend on the chunking.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from pyproj import CRS, Transformer

from pipeline.catalog.scene import RasterGrid
from pipeline.grid import ChunkGrid

NODE_STEP = 16


@dataclass(frozen=True)
class SourceWindow:
    """The part of a source raster a chunk needs, and the index maps into that window."""

    row0: int
    col0: int
    height: int
    width: int
    rows: np.ndarray  # (Y, X) int32, relative to row0; -1 = outside the source
    cols: np.ndarray  # (Y, X) int32, relative to col0; -1 = outside the source


@lru_cache(maxsize=64)
def _same_crs(a: str, b: str) -> bool:
    return CRS.from_user_input(a) == CRS.from_user_input(b)


@lru_cache(maxsize=64)
def _transformer(src: str, dst: str) -> Transformer:
    return Transformer.from_crs(CRS.from_user_input(src), CRS.from_user_input(dst), always_xy=True)


def source_pixel_coords(chunk: ChunkGrid, grid: RasterGrid) -> tuple[np.ndarray, np.ndarray]:
    """Fractional source (row, col) of every chunk pixel centre; arrays (Y, X) float64.

    Pixel i covers [i, i + 1) in fractional coordinates, so ``floor`` gives the nearest pixel.
    """
    a, b, c, d, e, f = chunk.transform
    sa, sb, sc, sd, se, sf = grid.transform
    axis_aligned = b == 0 and d == 0 and sb == 0 and sd == 0
    if axis_aligned and _same_crs(chunk.crs, grid.crs):
        x = c + a * (np.arange(chunk.width) + 0.5)
        y = f + e * (np.arange(chunk.height) + 0.5)
        cols = (x - sc) / sa
        rows = (y - sf) / se
        return np.broadcast_to(rows[:, None], (chunk.height, chunk.width)), np.broadcast_to(
            cols[None, :], (chunk.height, chunk.width)
        )
    # Node grid anchored to global pixel indices (multiples of NODE_STEP), covering the chunk.
    gy = np.arange(chunk.y0, chunk.y0 + chunk.height)
    gx = np.arange(chunk.x0, chunk.x0 + chunk.width)
    ny0, ny1 = (gy[0] // NODE_STEP) * NODE_STEP, -(-(gy[-1] + 1) // NODE_STEP) * NODE_STEP
    nx0, nx1 = (gx[0] // NODE_STEP) * NODE_STEP, -(-(gx[-1] + 1) // NODE_STEP) * NODE_STEP
    node_y = np.arange(ny0, ny1 + 1, NODE_STEP)
    node_x = np.arange(nx0, nx1 + 1, NODE_STEP)
    # global pixel index -> chunk-local -> map coords of pixel centres (affine of the chunk)
    ly = node_y - chunk.y0 + 0.5
    lx = node_x - chunk.x0 + 0.5
    LX, LY = np.meshgrid(lx, ly)
    mx = c + a * LX + b * LY
    my = f + d * LX + e * LY
    sx, sy = _transformer(chunk.crs, grid.crs).transform(mx, my)
    det = sa * se - sb * sd
    ccol = (se * (sx - sc) - sb * (sy - sf)) / det
    crow = (-sd * (sx - sc) + sa * (sy - sf)) / det
    # bilinear interpolation of the node values onto every pixel
    ty = (gy - ny0) / NODE_STEP
    tx = (gx - nx0) / NODE_STEP
    iy = np.minimum(ty.astype(np.int64), len(node_y) - 2)
    ix = np.minimum(tx.astype(np.int64), len(node_x) - 2)
    fy = (ty - iy)[:, None]
    fx = (tx - ix)[None, :]

    def interp(v: np.ndarray) -> np.ndarray:
        v00 = v[iy][:, ix]
        v01 = v[iy][:, ix + 1]
        v10 = v[iy + 1][:, ix]
        v11 = v[iy + 1][:, ix + 1]
        return (v00 * (1 - fx) + v01 * fx) * (1 - fy) + (v10 * (1 - fx) + v11 * fx) * fy

    return interp(crow), interp(ccol)


def nearest_window(chunk: ChunkGrid, grid: RasterGrid, *, pad: int = 0) -> SourceWindow | None:
    """The source window and nearest-neighbour index maps for one chunk, or None if disjoint."""
    frow, fcol = source_pixel_coords(chunk, grid)
    rows = np.floor(frow).astype(np.int64)
    cols = np.floor(fcol).astype(np.int64)
    h, w = grid.shape
    inside = (rows >= 0) & (rows < h) & (cols >= 0) & (cols < w)
    if not inside.any():
        return None
    r_in, c_in = rows[inside], cols[inside]
    row0 = max(int(r_in.min()) - pad, 0)
    col0 = max(int(c_in.min()) - pad, 0)
    row1 = min(int(r_in.max()) + 1 + pad, h)
    col1 = min(int(c_in.max()) + 1 + pad, w)
    rel_r = np.where(inside, rows - row0, -1).astype(np.int32)
    rel_c = np.where(inside, cols - col0, -1).astype(np.int32)
    return SourceWindow(row0, col0, row1 - row0, col1 - col0, rel_r, rel_c)
