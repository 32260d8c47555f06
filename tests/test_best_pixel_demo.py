"""On the demo catalog, best-pixel is less cloud-contaminated than latest and median.

The generator paints thin haze up to 200 m around every cloud that the quality assets do not
flag (real masks miss cloud edges too). A mosaic pixel is *contaminated* when any band differs
from the generator's true reflectance by more than CONTAMINATED: clean observations differ by
at most ~0.0025 (uint16 quantisation + nearest-neighbour displacement on the smooth truth);
haze adds up to HAZE_MAX.
"""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.demo import truth_reflectance
from tests.conftest import make_spec_dict
from tests.test_run import BANDS, open_store, run

CONTAMINATED = 0.003

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def demo_mosaics(tmp_path_factory):
    from pipeline.demo import generate_catalog

    root = tmp_path_factory.mktemp("demo")
    cat = generate_catalog(root / "catalog", preset="demo", seed=0)
    out = root / "out"
    spec = make_spec_dict(cat.root, out, bounds=cat.area_bounds, chunk=512, cube=False)
    spec["products"]["mosaic"] = {"store": str(out / "median.zarr"), "method": "median"}
    spec["products"]["mosaics"] = [
        {"store": str(out / "latest.zarr"), "method": "latest"},
        {"store": str(out / "best.zarr"), "method": "best-pixel"},
    ]
    report = run(spec, direct=True)
    assert report.status == "success", report.error
    return {m: open_store(out / f"{m}.zarr").load() for m in ("median", "latest", "best")}


def contaminated_fraction(mosaic) -> float:
    X, Y = np.meshgrid(mosaic.x.values, mosaic.y.values)
    have = mosaic["count"].values > 0
    worst = np.max([np.abs(mosaic[b].values - truth_reflectance(b, X, Y)) for b in BANDS], 0)
    return float((worst[have] > CONTAMINATED).mean())


def test_best_pixel_is_less_contaminated_than_latest_and_median(demo_mosaics):
    fractions = {m: contaminated_fraction(ds) for m, ds in demo_mosaics.items()}
    print("cloud-contaminated fraction:",
          ", ".join(f"{m} {100 * f:.3f} %" for m, f in fractions.items()))
    assert fractions["latest"] > 0, "the demo must contain unflagged haze for this to mean much"
    assert fractions["best"] < fractions["latest"]
    # With ~12 observations per pixel the median is robust to the minority of hazy ones and is
    # not contaminated at all on this catalog (measured 0.000 %); best-pixel must not be worse.
    assert fractions["best"] <= fractions["median"]
