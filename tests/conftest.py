"""Shared fixtures: a generated multi-provider catalog (real COGs) and a real LocalCluster."""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from pathlib import Path
from types import ModuleType

import pytest

SHARED = Path(__file__).resolve().parents[2] / "shared"
SHARED_REAL = SHARED / "data" / "real"


@pytest.fixture(scope="session")
def tiny_catalog(tmp_path_factory):
    """The 'tiny' synthetic catalog (4 km × 4 km, three providers), generated once per session."""
    from pipeline.demo import generate_catalog

    root = tmp_path_factory.mktemp("tiny-catalog")
    return generate_catalog(root / "catalog", preset="tiny", seed=0)


@pytest.fixture(scope="session")
def demo_catalog(tmp_path_factory):
    """The demo catalog as `make demo` generates it (catalogs/demo: 12 scenes, three
    providers, 20 km x 20 km), here in a temporary folder; ~10 s, so for slow tests."""
    from pipeline.demo import generate_catalog

    return generate_catalog(tmp_path_factory.mktemp("demo-catalog") / "catalog", preset="demo",
                            seed=0)


@pytest.fixture()
def catalog_copy(tiny_catalog, tmp_path):
    """A private copy of the tiny catalog that a test may break."""
    dst = tmp_path / "catalog"
    shutil.copytree(tiny_catalog.root, dst)
    return dst


@pytest.fixture(scope="session")
def cluster():
    """A real dask.distributed LocalCluster: 2 worker processes × 1 thread, loopback only.

    Its workers must exit cleanly when it closes: a worker that dies by a signal (e.g. a
    segfault of GDAL closing a dataset whose Python file object is already gone, as remote
    datasets left open at exit did) fails the session's teardown."""
    import logging

    from distributed import Client, LocalCluster

    os.environ.setdefault("DASK_DISTRIBUTED__WORKER__DAEMON", "True")
    deaths: list[str] = []  # "Worker process <pid> was killed by signal <n>", any cluster's
    mine: set[str] = set()  # this fixture's worker pids

    class _Deaths(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "killed by signal" in record.getMessage():
                deaths.append(record.getMessage())

    nanny_log = logging.getLogger("distributed.nanny")
    handler, level = _Deaths(), nanny_log.level
    nanny_log.addHandler(handler)
    nanny_log.setLevel(logging.INFO)
    try:
        with (
            LocalCluster(
                n_workers=2,
                threads_per_worker=1,
                processes=True,
                host="127.0.0.1",
                dashboard_address=":0",
            ) as lc,
            Client(lc) as client,
        ):
            mine = {str(pid) for pid in client.run(os.getpid).values()}
            yield client
    finally:
        nanny_log.removeHandler(handler)
        nanny_log.setLevel(level)
    # only this fixture's workers: chaos tests SIGKILL workers of their own clusters on purpose
    died = [d for d in deaths if d.split("process ")[-1].split(" ")[0] in mine]
    assert not died, f"worker processes died instead of exiting: {died}"


def bench_module(filename: str) -> ModuleType:
    """A script of benchmarks/ (not a package) loaded as a module, once per test process
    (registered first: its dataclasses look their module up)."""
    name = "aquila_bench_" + Path(filename).stem.lstrip("_")
    if name not in sys.modules:
        path = Path(__file__).resolve().parents[1] / "benchmarks" / filename
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec and spec.loader
        sys.modules[name] = module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    return sys.modules[name]


def make_spec_dict(
    catalog_root: Path,
    out: Path,
    *,
    bounds,
    method="median",
    cube=True,
    chunk=128,
    resolution=10.0,
    **extra,
) -> dict:
    products = {"mosaic": {"store": str(out / "mosaic.zarr"), "method": method}}
    if cube:
        products["cube"] = {"store": str(out / "cube.zarr")}
    spec = {
        "version": 1,
        "name": "test",
        "catalog": str(catalog_root / "catalog.json"),
        "bands": ["blue", "green", "red", "nir"],
        "grid": {
            "crs": "EPSG:32632",
            "resolution": resolution,
            "bounds": list(bounds),
            "chunk": chunk,
            "resampling": "nearest",
        },
        "products": products,
    }
    spec.update(extra)
    return spec


# a real S3 endpoint (moto's server): `s3_server` (session) and `s3` (its env set per test)
from tests.s3server import s3, s3_server  # noqa: E402, F401
