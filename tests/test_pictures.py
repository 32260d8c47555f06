"""Pictures people would rather look at than read (issue 17, item 6): the quicklook (percentile
stretch, read from an overview level), the lineage map, the coverage plot and the HTML report,
written at the end of ``aquila run``; withheld scenes only ever counted.

Expectations come from elsewhere than the code under test: NumPy percentiles of the PNG, the
zarr keys a real store wrapper saw requested, the catalog's item files (date, constellation),
the run report's numbers, pixel colours read back from the PNG.
"""

from __future__ import annotations

import json
import math
import re
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import rasterio
import xarray as xr
import yaml
import zarr
from zarr.storage import LocalStore, WrapperStore

from pipeline.products.pictures import Coverage, coverage_of, coverage_plot, make_pictures
from pipeline.products.pictures.quicklook import (
    NO_DATA,
    lineage_map,
    percentile_stretch,
    quicklook,
    resolve_bands,
    rgb_image,
)
from tests.adversarial.runs import aquila
from tests.conftest import make_spec_dict

BOUNDS = (500000, 5000000, 504000, 5004000)  # the tiny catalog's 4 km: 400 px at 10 m
PICTURES = ("quicklook", "lineage map", "coverage plot", "html report")


def _spec(catalog: Path, out: Path, name: str = "pics", **extra) -> Path:
    spec = make_spec_dict(catalog, out, bounds=BOUNDS, **extra)
    spec["name"] = name
    spec["products"]["mosaics"] = [{"store": str(out / "latest.zarr"), "method": "latest"}]
    path = out.parent / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


@pytest.fixture(scope="module")
def run(tiny_catalog, tmp_path_factory):
    """One real ``aquila run`` (cube, median and latest mosaics) over the tiny catalog:
    (completed process, products folder)."""
    root = tmp_path_factory.mktemp("pictures")
    out = root / "out"
    done = aquila("run", str(_spec(tiny_catalog.root, out)), "--direct", "--no-progress")
    assert done.returncode == 0, done.stdout + done.stderr
    return done, out


def _png(path: Path) -> np.ndarray:
    """(y, x, bands) uint8, read back with GDAL."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)  # a picture
        with rasterio.open(path) as ds:
            return np.moveaxis(ds.read(), 0, -1)


# --------------------------------------------------------------------------- the run prints them


def test_a_run_writes_and_prints_its_pictures(run):
    done, out = run
    report = json.loads((out / "pics.run-report.json").read_text())
    expected = {
        "quicklook": out / "pics.quicklook.png", "lineage map": out / "pics.lineage.png",
        "coverage plot": out / "pics.coverage.png", "html report": out / "pics.report.html",
    }
    for name, path in expected.items():
        assert path.is_file() and path.stat().st_size > 0, name
        assert f"  {name}: {path}" in done.stdout  # the human summary lists each
        assert report["products"][name] == str(path)  # and the report on disk says so
    assert _png(expected["quicklook"]).shape[-1] == 3


def test_run_json_names_the_pictures(tiny_catalog, tmp_path):
    spec = _spec(tiny_catalog.root, tmp_path / "out", name="jsonpics")
    done = aquila("run", str(spec), "--direct", "--json")
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    for name in PICTURES:
        assert Path(doc["products"][name]).is_file(), name
    assert not [n for n in doc["notes"] if "drawn" in n]


# --------------------------------------------------------------------------- quicklook


def test_the_quicklook_is_not_crushed(run):
    """Each channel's 2nd–98th percentile spans most of 0–255 (the old 0..0.3 stretch left the
    picture dark: a span of about 60 levels on the same product)."""
    _, out = run
    rgb = _png(out / "pics.quicklook.png").reshape(-1, 3).astype(float)
    for channel in range(3):
        lo, hi = np.percentile(rgb[:, channel], [2, 98])
        assert hi - lo > 150, (channel, lo, hi)


def test_percentile_stretch_by_hand():
    values = np.array([[np.nan, 0.0], [1.0, 2.0]], np.float32)
    out = percentile_stretch(values, (0.0, 100.0))  # 0 → 0, 2 → 255, 1 → half; NaN black
    assert out.tolist() == [[0, 0], [128, 255]]
    assert percentile_stretch(np.full((2, 2), np.nan, np.float32)).max() == 0


def test_presets_and_explicit_bands(run):
    _, out = run
    assert resolve_bands("true") == ("red", "green", "blue")
    assert resolve_bands("false") == ("nir", "red", "green")
    assert resolve_bands("nir,red,blue") == ("nir", "red", "blue")
    false = rgb_image(out / "mosaic.zarr", bands="false", max_side=400)
    explicit = rgb_image(out / "mosaic.zarr", bands=["nir", "red", "green"], max_side=400)
    assert np.array_equal(false, explicit)
    ds = xr.open_zarr(out / "mosaic.zarr")  # the nir channel is the nir band, stretched
    nir = ds["nir"].values
    lo, hi = np.percentile(nir[np.isfinite(nir)], [2, 98])
    expected = (np.clip(np.nan_to_num((nir - lo) / (hi - lo)), 0, 1) * 255).round()
    assert false.shape[:2] == nir.shape
    assert np.abs(false[..., 0].astype(int) - expected).max() <= 1


def test_a_cube_slot_by_index_or_date(run, tmp_path):
    _, out = run
    cube = out / "cube.zarr"
    times = xr.open_zarr(cube)["time"].values
    day = str(np.datetime_as_string(times[1], unit="D"))
    same_day = [i for i, t in enumerate(times) if str(t).startswith(day)]
    assert same_day == [1], "the tiny catalog has one slot a day"
    by_date = rgb_image(cube, time=day)
    assert np.array_equal(by_date, rgb_image(cube, time=1))
    assert np.array_equal(rgb_image(cube), rgb_image(cube, time=len(times) - 1))
    assert not np.array_equal(by_date, rgb_image(cube))
    bad = aquila("quicklook", str(cube), str(tmp_path / "q.png"), "--time", "1999-01-01")
    assert bad.returncode == 2 and "its slots are" in bad.stderr
    bad = aquila("quicklook", str(cube), str(tmp_path / "q.png"), "--time", "99")
    assert bad.returncode == 2 and "time slots (0.." in bad.stderr


class KeysSeen(WrapperStore):
    """A real store (a LocalStore) that records every key read from it."""

    def __init__(self, store, seen: list[str]) -> None:
        super().__init__(store)
        self.seen = seen

    def _with_store(self, store):
        return type(self)(store, self.seen)

    async def get(self, key, prototype, byte_range=None):
        self.seen.append(key)
        return await super().get(key, prototype, byte_range)


def _pixel_keys(seen: list[str], variables) -> list[str]:
    """Chunk keys of the full-resolution (root) variables among ``seen``."""
    return [k for k in seen if re.fullmatch(rf"({'|'.join(variables)})/c/.*", k)]


def _with_hand_made_overviews(src: Path, dst: Path) -> Path:
    """A copy of a product with one overview level written by hand (the layout of
    ``pipeline.products.overviews``: group ``overviews/1`` at half resolution, the factors in
    ``aquila:overviews``), whatever the writer did."""
    ds = xr.open_zarr(src)
    ds.to_zarr(dst, mode="w", consolidated=False, zarr_format=3)
    half = ds.isel(y=slice(0, None, 2), x=slice(0, None, 2)).chunk({"y": 64, "x": 64})
    for v in half.variables.values():
        v.encoding.clear()
    half.to_zarr(dst, group="overviews/1", mode="w", consolidated=False, zarr_format=3)
    group = zarr.open_group(dst, mode="r+")
    group.attrs["aquila:overviews"] = [2]
    with warnings.catch_warnings():  # as the products are: consolidated (zarr warns it is v2's)
        warnings.simplefilter("ignore", UserWarning)
        zarr.consolidate_metadata(dst)
    return dst


def test_the_quicklook_reads_only_an_overview_level(run, tmp_path):
    _, out = run
    store = _with_hand_made_overviews(out / "mosaic.zarr", tmp_path / "m.zarr")
    bands = ("red", "green", "blue")
    seen: list[str] = []
    rgb = rgb_image(KeysSeen(LocalStore(store, read_only=True), seen), max_side=256)
    assert rgb.shape == (200, 200, 3)  # the level of 200 px, not the 400 px of the root
    assert [k for k in seen if k.startswith("overviews/1/red/c/")]  # the level was read
    assert _pixel_keys(seen, bands) == []  # and no full-resolution chunk
    # the same store without its overviews is read at full resolution: the check can fail
    seen.clear()
    rgb_image(KeysSeen(LocalStore(out / "mosaic.zarr", read_only=True), seen),
              max_side=400)
    assert _pixel_keys(seen, bands)


def test_the_quicklook_of_the_real_run_reads_an_overview_when_it_has_them(run):
    """On the products ``aquila run`` wrote itself (every product has overview levels now)."""
    _, out = run
    store = out / "mosaic.zarr"
    factors = xr.open_zarr(store).attrs.get("aquila:overviews")
    assert factors, "a run's products carry overview levels (aquila:overviews)"
    side = 400 // factors[0]
    seen: list[str] = []
    rgb = rgb_image(KeysSeen(LocalStore(store, read_only=True), seen), max_side=side)
    assert max(rgb.shape[:2]) == side
    assert _pixel_keys(seen, ("red", "green", "blue")) == []


DEMO_SPEC = Path(__file__).resolve().parents[1] / "workflows" / "demo.yaml"


@pytest.fixture(scope="module")
def demo_mosaic(demo_catalog, tmp_path_factory) -> Path:
    """The demo's median mosaic (2000 x 2000 px, overview levels), made here as `make demo`
    makes it: workflows/demo.yaml run over the demo catalog with its median alone."""
    root = tmp_path_factory.mktemp("demo")
    spec = yaml.safe_load(DEMO_SPEC.read_text())
    spec["catalog"] = str(demo_catalog.catalog_href)
    store = root / "out" / "mosaic.zarr"
    spec["products"] = {"mosaic": {"store": str(store), "method": "median"}}
    path = root / "demo.yaml"
    path.write_text(yaml.safe_dump(spec))
    done = aquila("run", str(path), "--direct", "--no-progress", "--no-pictures")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "aquila:overviews" in json.loads((store / "zarr.json").read_text())["attributes"]
    return store


@pytest.mark.slow  # the demo catalog and a run over it: ~25 s
def test_the_demo_quicklook_reads_only_an_overview_level(demo_mosaic):
    seen: list[str] = []
    rgb = rgb_image(KeysSeen(LocalStore(demo_mosaic, read_only=True), seen))  # default: ~1024 px
    assert 1024 / math.sqrt(2) <= max(rgb.shape[:2]) < 1024 * math.sqrt(2)
    assert _pixel_keys(seen, ("red", "green", "blue")) == []


def test_quicklook_writes_what_rgb_image_computes(run, tmp_path):
    _, out = run
    png = quicklook(out / "latest.zarr", tmp_path / "q.png", bands="false", max_side=300)
    assert np.array_equal(_png(png), rgb_image(out / "latest.zarr", bands="false",
                                               max_side=300))


# --------------------------------------------------------------------------- lineage


def test_the_lineage_legend_lists_exactly_the_providers_used(run, tmp_path):
    _, out = run
    store = out / "latest.zarr"
    drawn = lineage_map(store, tmp_path / "l.png", max_side=400)  # full resolution: 400 px
    source = xr.open_zarr(store)["source"].values
    slots = {s["index"]: s["provider"] for s in xr.open_zarr(store).attrs["sources"]}
    providers = sorted({slots[int(i)] for i in np.unique(source) if i >= 0})
    assert drawn.kind == "source"
    assert list(drawn.legend) == [*providers, NO_DATA]
    assert len(providers) >= 2  # a map worth drawing
    pixels = {tuple(p) for p in _png(drawn.path)[..., :3].reshape(-1, 3)}
    for name in providers:  # each provider's colour is on the picture
        assert drawn.colours[name] in pixels, name


def test_a_mosaic_without_source_draws_its_count(run, tmp_path):
    _, out = run
    drawn = lineage_map(out / "mosaic.zarr", tmp_path / "c.png")
    assert drawn.kind == "count" and drawn.legend == () and drawn.path.stat().st_size > 0


# --------------------------------------------------------------------------- coverage


def _catalog_items(root: Path) -> dict[str, tuple[str, str]]:
    """Item id → (date, provider) from the catalog's own item files (provider: constellation,
    else the collection)."""
    out = {}
    for path in root.glob("*/*/*.json"):
        doc = json.loads(path.read_text())
        props = doc["properties"]
        out[doc["id"]] = (props["datetime"][:10], props.get("constellation") or doc["collection"])
    return out


def test_the_coverage_counts_are_the_reports(run, tiny_catalog):
    _, out = run
    report = json.loads((out / "pics.run-report.json").read_text())
    items = _catalog_items(tiny_catalog.root)
    expected = Counter(items[i] for i in report["scenes_used"])
    stores = {k: Path(v) for k, v in report["products"].items() if k.endswith(")")}
    coverage = coverage_of(report, stores)
    assert dict(coverage.used) == dict(expected)
    assert sum(coverage.used.values()) == len(report["scenes_used"]) == 6
    assert (coverage.rejected, coverage.read_failures, coverage.withheld) == (0, 0, 0)


def test_a_coverage_plot_with_nothing_used_still_draws(tmp_path):
    path = coverage_plot(Coverage({}, rejected=2, withheld=3), tmp_path / "c.png", "empty")
    assert _png(path).shape[0] > 100


# --------------------------------------------------------------------------- HTML


def test_the_html_holds_the_numbers_and_the_images(run):
    _, out = run
    report = json.loads((out / "pics.run-report.json").read_text())
    page = (out / "pics.report.html").read_text()
    for name in ("quicklook", "lineage", "coverage"):
        png = (out / f"pics.{name}.png").read_bytes()
        import base64

        assert f"data:image/png;base64,{base64.b64encode(png).decode()}" in page, name
    assert report["run_id"] in page and ">success<" in page
    assert f'<td class="n">{len(report["scenes_used"])}</td>' in page
    assert f'<td class="n">{report["scenes_found"]}</td>' in page
    for phase, seconds in report["seconds_by_phase"].items():
        assert f"<td>{phase}</td><td class=\"n\">{seconds:.2f}</td>" in page
    for product in ("cube", "mosaic (median)", "mosaic (latest)"):
        assert f"<td>{product}</td>" in page
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)  # nothing from a network


def test_the_html_counts_chunks_and_the_tasks_they_were_fused_into():
    from pipeline.products.pictures.page import render_html

    fused = render_html({"tasks": 16, "compute_tasks": 4}, {}, not_drawn={})
    assert '<td>chunks</td><td class="n">16</td>' in fused
    assert '<td>computed in tasks (2 × 2 chunks each)</td><td class="n">4</td>' in fused
    alone = render_html({"tasks": 4, "compute_tasks": 4}, {}, not_drawn={})
    assert '<td>chunks</td><td class="n">4</td>' in alone and "computed in" not in alone


def test_what_the_html_inserts_is_escaped(run, tmp_path):
    _, out = run
    report = json.loads((out / "pics.run-report.json").read_text())
    report["rejected"] = [{"item": "<script>alert(1)</script>", "collection": "x&y",
                           "reason": "bad", "message": "a \"quoted\" <b>"}]
    report["workflow"] = "evil<i>"
    (tmp_path / "evil.run-report.json").write_text(json.dumps(report))
    stores = {k: v for k, v in report["products"].items() if k.startswith("mosaic")}
    made = make_pictures(tmp_path / "evil.run-report.json", stores)
    page = made.written["html"].read_text()
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "x&amp;y" in page and "evil&lt;i&gt;" in page and "<b>" not in page


# --------------------------------------------------------------------------- withheld


NLD_NOR = {"classification": "RESTRICTED", "releasable_to": ["NLD", "NOR"], "caveats": [],
           "owner": "NOR", "licence": "NLOD-2.0"}
OPEN = {"classification": "UNCLASSIFIED", "releasable_to": ["DEU", "NLD", "NOR", "USA"],
        "caveats": [], "owner": "NLD", "licence": "CC-BY-4.0"}


def test_no_withheld_id_in_any_picture_html_or_output(catalog_copy, tmp_path):
    """Two scenes not releasable to the audience (NLD, USA): the pictures count them and name
    them nowhere (PNG bytes and metadata, the HTML, stdout and stderr)."""
    items = sorted(catalog_copy.glob("*/*/*.json"))
    items = [p for p in items if p.name != "collection.json"]
    withheld = []
    for i, path in enumerate(items):
        doc = json.loads(path.read_text())
        strict = i in (1, 4)
        doc["properties"]["aquila:marking"] = NLD_NOR if strict else OPEN
        path.write_text(json.dumps(doc))
        if strict:
            withheld.append(doc["id"])
    out = tmp_path / "out"
    spec = make_spec_dict(catalog_copy, out, bounds=BOUNDS)
    spec["audience"] = {"releasable_to": ["NLD", "USA"]}
    spec["name"] = "held"
    spec["products"]["mosaics"] = [{"store": str(out / "latest.zarr"), "method": "latest"}]
    (tmp_path / "held.yaml").write_text(yaml.safe_dump(spec))
    done = aquila("run", str(tmp_path / "held.yaml"), "--direct", "--no-progress")
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads((out / "held.run-report.json").read_text())
    assert report["withheld"] == 2 and not set(withheld) & set(report["scenes_used"])
    page = (out / "held.report.html").read_text()
    assert "withheld (counted, never named)</td><td class=\"n\">2</td>" in page
    seen = [page, done.stdout, done.stderr]
    for name in ("quicklook", "lineage", "coverage"):
        path = out / f"held.{name}.png"
        seen.append(path.read_bytes().decode("latin-1"))  # every chunk, tEXt metadata included
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
            with rasterio.open(path) as ds:
                seen.append(json.dumps(ds.tags()))
    operator = (out / "held.operator-report.json").read_text()
    for item in withheld:
        assert item in operator  # the ids are real: the operator report names them
        for text in seen:
            assert item not in text, item
