"""Aquila: many providers' STAC imagery into one calibrated Zarr cube and mosaic, on Dask."""

__version__ = "0.1.0"
