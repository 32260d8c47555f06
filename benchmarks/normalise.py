"""How fast, and in how much memory, discovery normalises a large search result.

Generates N Earth-Search-like Sentinel-2 L2A items (13 band assets with raster:bands, SCL with
classification, visual, metadata and thumbnails; 20 MGRS tiles × acquisitions, so grids repeat as
in a real time series), streams them as JSON text — the form an API page or an NDJSON file hands
over — and runs the same parse → normalise → dedupe path as ``aquila run``, keeping every Scene.
No file is opened (assets are https URLs; check_files=False), so this measures the metadata path.

    python benchmarks/normalise.py                # 100 000 items
    python benchmarks/normalise.py --items 20000

Prints items/s, wall seconds, and peak resident memory of the process (VmHWM from
/proc/self/status where there is one: Linux keeps ru_maxrss across exec, so a benchmark started
by a big process, such as a test session, would report its parent's peak; ru_maxrss elsewhere).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import resource
import sys
import time
from collections.abc import Iterator

BANDS = ("blue", "green", "red", "nir")
_S2 = [  # (asset key, common name, resolution m)
    ("coastal", "coastal", 60),
    ("blue", "blue", 10),
    ("green", "green", 10),
    ("red", "red", 10),
    ("rededge1", "rededge", 20),
    ("rededge2", "rededge", 20),
    ("rededge3", "rededge", 20),
    ("nir", "nir", 10),
    ("nir08", "nir08", 20),
    ("nir09", "nir09", 60),
    ("swir16", "swir16", 20),
    ("swir22", "swir22", 20),
]



def peak_rss_mib() -> float:
    """This process's peak resident memory in MiB: VmHWM belongs to the address space, so it
    starts afresh at exec; ru_maxrss (the fallback off Linux) carries the parent's peak over."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

def _tile_ring(zone: int, x0: float, y0: float) -> list[list[float]]:
    """The tile's footprint in lon/lat, 1 km inside its raster bounds (valid-data polygon)."""
    from pyproj import Transformer

    t = Transformer.from_crs(f"EPSG:{32600 + zone}", "EPSG:4326", always_xy=True)
    corners = [
        (x0 + 1000, y0 - 1000),
        (x0 + 108800, y0 - 1000),
        (x0 + 108800, y0 - 108800),
        (x0 + 1000, y0 - 108800),
    ]
    ring = [list(t.transform(x, y)) for x, y in corners]
    return [*ring, ring[0]]


def _template(tile: int) -> str:
    """One tile's item as JSON text with placeholders for what changes per acquisition."""
    zone = 31 + tile % 3
    x0 = 300000 + 109800 * (tile // 3 % 4)
    y0 = 5300040 - 109800 * (tile // 12)
    ring = _tile_ring(zone, x0, y0)
    lons = [p[0] for p in ring]
    lats = [p[1] for p in ring]
    base = f"https://example-bucket.s3.amazonaws.com/s2/{zone}/@ID@"
    assets = {}
    for key, name, res in _S2:
        assets[key] = {
            "href": f"{base}/{key.upper()}.tif",
            "type": "image/tiff; application=geotiff; profile=cloud-optimized",
            "roles": ["data", "reflectance"],
            "eo:bands": [{"name": key, "common_name": name}],
            "raster:bands": [{"nodata": 0, "data_type": "uint16", "scale": 0.0001, "offset": -0.1}],
            "proj:shape": [109800 // res, 109800 // res],
            "proj:transform": [res, 0, x0, 0, -res, y0],
        }
    assets["scl"] = {
        "href": f"{base}/SCL.tif",
        "type": "image/tiff; application=geotiff; profile=cloud-optimized",
        "roles": ["data-mask"],
        "raster:bands": [{"nodata": 0, "data_type": "uint8"}],
        "classification:classes": [
            {"value": v, "name": n}
            for v, n in [
                (0, "no_data"),
                (3, "cloud_shadow"),
                (4, "vegetation"),
                (8, "cloud_medium_probability"),
                (9, "cloud_high_probability"),
            ]
        ],
        "proj:shape": [5490, 5490],
        "proj:transform": [20, 0, x0, 0, -20, y0],
    }
    assets["visual"] = {
        "href": f"{base}/TCI.tif",
        "type": "image/tiff",
        "roles": ["visual"],
        "eo:bands": [{"name": c, "common_name": c} for c in ("red", "green", "blue")],
    }
    assets["thumbnail"] = {
        "href": f"{base}/thumb.jpg",
        "type": "image/jpeg",
        "roles": ["thumbnail"],
    }
    assets["metadata"] = {
        "href": f"{base}/meta.xml",
        "type": "application/xml",
        "roles": ["metadata"],
    }
    return json.dumps(
        {
            "type": "Feature",
            "stac_version": "1.0.0",
            "id": "@ID@",
            "collection": "sentinel-2-l2a",
            "bbox": [min(lons), min(lats), max(lons), max(lats)],
            "geometry": {"type": "Polygon", "coordinates": [ring]},
            "properties": {
                "datetime": "@WHEN@",
                "platform": "sentinel-2b",
                "constellation": "sentinel-2",
                "eo:cloud_cover": "@CLOUD@",
                "proj:epsg": 32600 + zone,
                "view:sun_elevation": 40.0 + tile,
                "s2:processing_baseline": "05.10",
                "s2:generation_time": "@WHEN@",
            },
            "assets": assets,
            "links": [],
        }
    ).replace('"@CLOUD@"', "@CLOUD@")


def generated_items(n: int) -> Iterator[str]:
    """N items as JSON text, lazily (never all in memory): 20 tiles, one acquisition a day each."""
    t0 = dt.datetime(2024, 1, 1, 10, 30, tzinfo=dt.UTC)
    templates: dict[int, str] = {}
    for i in range(n):
        tile = i % 20
        if tile not in templates:
            templates[tile] = _template(tile)
        when = t0 + dt.timedelta(days=i // 20, seconds=tile * 5)
        uid = f"S2B_T{tile:02d}_{when:%Y%m%d}_{i}_L2A"
        yield (
            templates[tile]
            .replace("@ID@", uid)
            .replace("@WHEN@", when.strftime("%Y-%m-%dT%H:%M:%SZ"))
            .replace("@CLOUD@", str((i * 37) % 100))
        )


def run(n: int) -> dict[str, float]:
    from pipeline.catalog.dedupe import drop_duplicates
    from pipeline.catalog.discover import collect
    from pipeline.catalog.items.options import NormaliseOptions
    from pipeline.catalog.sensors.profiles import load_profiles
    from pipeline.catalog.stacdoc import ItemDoc
    from pipeline.catalog.static import json_loads
    from pipeline.io.hrefs import HrefPolicy

    options = NormaliseOptions(
        policy=HrefPolicy(("https://example-bucket.s3.amazonaws.com/",)),
        profiles=load_profiles(),
        check_files=False,
    )
    # warm up: imports, pyproj transformers, profile loading (not counted)
    collect(
        (ItemDoc.from_dict(json_loads(t)) for t in generated_items(20)),
        bands=BANDS,
        options=options,
    )
    rss0 = peak_rss_mib()
    source = {"seconds": 0.0}

    def timed_source():
        """Generation (not Aquila's work) is timed apart; JSON parsing counts as ingest."""
        texts = generated_items(n)
        while True:
            t = time.perf_counter()
            try:
                text = next(texts)
            except StopIteration:
                return
            finally:
                source["seconds"] += time.perf_counter() - t
            yield ItemDoc.from_dict(json_loads(text))

    t0, c0 = time.perf_counter(), time.process_time()
    scenes, rejects, found = collect(timed_source(), bands=BANDS, options=options)
    kept, duplicates = drop_duplicates(scenes)
    seconds = time.perf_counter() - t0 - source["seconds"]
    cpu = time.process_time() - c0
    peak = peak_rss_mib()
    return {
        "generation_seconds": source["seconds"],
        "cpu_seconds": cpu,
        "items": found,
        "scenes": len(kept),
        "rejected": len(rejects),
        "duplicates": len(duplicates),
        "seconds": seconds,
        "items_per_s": found / seconds,
        "peak_rss_mib": peak,
        "rss_before_mib": rss0,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--items", type=int, default=100_000)
    p.add_argument("--max-seconds", type=float, default=60.0)
    p.add_argument("--max-mib", type=float, default=1024.0)
    args = p.parse_args(argv)
    r = run(args.items)
    print(
        f"normalised {r['items']:,} generated items → {r['scenes']:,} scenes "
        f"({r['rejected']} rejected, {r['duplicates']} duplicates) in {r['seconds']:.1f} s "
        f"wall, parse + normalise + dedupe ({r['items_per_s']:,.0f} items/s; process CPU "
        f"{r['cpu_seconds']:.1f} s incl. {r['generation_seconds']:.1f} s generating the test "
        f"JSON); peak RSS {r['peak_rss_mib']:.0f} MiB (before: {r['rss_before_mib']:.0f} MiB)"
    )
    ok = r["seconds"] < args.max_seconds and r["peak_rss_mib"] < args.max_mib
    print(
        f"budget: < {args.max_seconds:g} s and < {args.max_mib:g} MiB: {'met' if ok else 'MISSED'}"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
