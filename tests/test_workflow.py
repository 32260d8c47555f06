"""The workflow spec: strict validation, safe YAML, helpful messages."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.catalog.query import parse_datetime_range
from pipeline.errors import SpecError
from pipeline.spec.workflow import load_spec

ROOT = Path(__file__).resolve().parents[1]

GOOD = """\
version: 1
name: demo
catalog: ../catalogs/demo/catalog.json
collections: [north, south]
datetime: 2025-06-01/2025-06-30
bbox: [9.0, 45.0, 9.5, 45.4]
bands: [blue, green, red, nir]
grid:
  crs: EPSG:32632
  resolution: 10
  bounds: [500000, 5000000, 520000, 5020000]
  chunk: 1024
  resampling: nearest
products:
  cube: {store: ../out/demo/cube.zarr}
  mosaic: {store: ../out/demo/mosaic.zarr, method: median}
"""


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "wf" / "spec.yaml"
    p.parent.mkdir(exist_ok=True)
    p.write_text(text)
    return p


def test_good_spec_resolves_paths_relative_to_the_spec_file(tmp_path):
    spec = load_spec(write(tmp_path, GOOD))
    assert spec.catalog == str((tmp_path / "catalogs/demo/catalog.json").resolve())
    assert spec.products.mosaic.store == (tmp_path / "out/demo/mosaic.zarr").resolve()
    assert spec.datetime[0] == dt.datetime(2025, 6, 1, tzinfo=dt.UTC)
    assert spec.datetime[1].date() == dt.date(2025, 6, 30)
    assert spec.grid.chunk == 1024 and spec.bands == ("blue", "green", "red", "nir")


@pytest.mark.parametrize(
    ("typo", "fixed", "key", "allowed"),
    [
        ("  chunk: 1024", "  chunks: 1024", "grid.chunks", "bounds, chunk, crs, resampling"),
        ("bands: [blue", "band: [blue", "band", "allowed_roots, audience, bands, bbox"),
        ("method: median", "methd: median", "products.mosaic.methd", "key, method, priority"),
    ],
)
def test_typo_is_refused_naming_the_key_and_the_allowed_ones(tmp_path, typo, fixed, key, allowed):
    with pytest.raises(SpecError) as err:
        load_spec(write(tmp_path, GOOD.replace(typo, fixed)))
    msg = str(err.value)
    assert f"unknown key {key!r}" in msg
    assert allowed in msg
    assert "did you mean" in msg


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        (("resampling: nearest", "resampling: lanczos"), "grid.resampling"),
        (("method: median", "method: mode"), "products.mosaic.method"),
        (("crs: EPSG:32632", "crs: EPSG:999999"), "not a CRS"),
        (("version: 1", "version: 2"), "version"),
        (("chunk: 1024", "chunk: 10"), "grid.chunk"),
        (("bbox: [9.0, 45.0, 9.5, 45.4]", "bbox: [500000, 45.0, 9.5, 45.4]"), "lon/lat"),
    ],
)
def test_bad_values_are_refused_with_the_location(tmp_path, change, needle):
    with pytest.raises(SpecError, match=needle):
        load_spec(write(tmp_path, GOOD.replace(*change)))


def test_missing_key_is_named(tmp_path):
    text = "\n".join(line for line in GOOD.splitlines() if not line.startswith("bands"))
    with pytest.raises(SpecError, match="missing required key 'bands'"):
        load_spec(write(tmp_path, text))


def test_custom_tags_and_aliases_are_refused(tmp_path):
    with pytest.raises(SpecError, match="not valid YAML"):
        load_spec(write(tmp_path, GOOD + "x: !!python/object/apply:os.system ['true']\n"))
    bomb = 'a: &a ["x","x"]\nb: &b [*a,*a]\nc: [*b,*b]\n'
    with pytest.raises(SpecError, match="anchors"):
        load_spec(write(tmp_path, bomb))


def test_oversized_spec_is_refused_before_parsing(tmp_path):
    with pytest.raises(SpecError, match="larger than"):
        load_spec(write(tmp_path, GOOD + "#" * 300_000))


def test_a_spec_may_ask_for_the_mosaic_alone(tmp_path):
    spec = load_spec(write(tmp_path, GOOD.replace("  cube: {store: ../out/demo/cube.zarr}\n", "")))
    assert spec.products.cube is None and spec.products.mosaic is not None
    text = GOOD.split("products:")[0] + "products: {}\n"
    with pytest.raises(SpecError, match="at least one product"):
        load_spec(write(tmp_path, text))


def test_every_bundled_workflow_validates():
    specs = sorted((ROOT / "workflows").glob("*.yaml"))
    assert specs, "workflows/ has no spec"
    for path in specs:
        load_spec(path)


@pytest.mark.parametrize(
    ("text", "start", "end"),
    [
        ("2025-06-01/2025-06-30", "2025-06-01T00:00:00+00:00", "2025-06-30T23:59:59.999999+00:00"),
        ("2025-06-01/..", "2025-06-01T00:00:00+00:00", None),
        ("../2025-06-30T12:00:00Z", None, "2025-06-30T12:00:00+00:00"),
        ("2025-06-05", "2025-06-05T00:00:00+00:00", "2025-06-05T23:59:59.999999+00:00"),
    ],
)
def test_datetime_ranges(text, start, end):
    s, e = parse_datetime_range(text)
    assert (s.isoformat() if s else None) == start
    assert (e.isoformat() if e else None) == end


@given(st.dates(min_value=dt.date(1972, 1, 1)), st.dates(min_value=dt.date(1972, 1, 1)))
def test_datetime_range_property(a, b):
    text = f"{a.isoformat()}/{b.isoformat()}"
    if a > b:
        with pytest.raises(ValueError):
            parse_datetime_range(text)
        return
    s, e = parse_datetime_range(text)
    assert s.date() == a and e.date() == b and s <= e and s.tzinfo is dt.UTC


@pytest.mark.parametrize(
    ("mosaic", "needle"),
    [
        ("{store: m.zarr, method: percentile}", "'q'"),
        ("{store: m.zarr, method: median, q: 50}", "'q'"),
        ("{store: m.zarr, method: priority}", "needs 'priority'"),
        ("{store: m.zarr, method: quality}", "'key'"),
        ("{store: m.zarr, method: median, blend: {width: 8}}", "'blend' needs"),
        ("{store: m.zarr, method: latest, best_pixel: {sun: 1}}", "'best_pixel'"),
    ],
)
def test_method_parameters_must_fit_the_method(tmp_path, mosaic, needle):
    text = GOOD.replace("mosaic: {store: ../out/demo/mosaic.zarr, method: median}",
                        f"mosaic: {mosaic}")
    with pytest.raises(SpecError, match=needle):
        load_spec(write(tmp_path, text))


def test_method_parameters_accepted(tmp_path):
    text = GOOD.replace(
        "mosaic: {store: ../out/demo/mosaic.zarr, method: median}",
        "mosaic: {store: m.zarr, method: best-pixel, priority: [north, east],"
        " best_pixel: {sun: 0.5, target_date: 2025-06-15}, blend: {width: 16}}\n"
        "  mosaics: [{store: p.zarr, method: percentile, q: 25}, {store: q.zarr, method: quality,"
        " key: ndvi}]",
    )
    spec = load_spec(write(tmp_path, text))
    best, pct, qual = spec.products.all_mosaics
    assert best.best_pixel.target_date == dt.date(2025, 6, 15) and best.blend.width == 16
    assert pct.q == 25 and qual.key == "ndvi"


def test_spec_methods_match_the_pipeline_methods():
    from typing import get_args

    from pipeline.plan.methods import METHODS
    from pipeline.spec.sections import MosaicMethod

    assert set(get_args(MosaicMethod)) == set(METHODS)
