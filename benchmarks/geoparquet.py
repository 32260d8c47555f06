"""How fast, and in how much memory, a million-item stac-geoparquet catalog is searched and
normalised through the real source path (``iter_docs`` → ``collect``/``normalise_doc``).

The items are benchmarks/normalise.py's Earth-Search-like Sentinel-2 L2A items (imported, not
copied), written once to ``benchmarks/_work/geoparquet-<N>.parquet`` by a child process (so its
memory is not this one's), 10 000 items per row group with pyarrow's ParquetWriter (through
stac_geoparquet.arrow.to_parquet, which streams a RecordBatchReader): generation stays in bounded
memory too. Reruns reuse the file.

    python benchmarks/geoparquet.py                      # 1 000 000 items, everything
    python benchmarks/geoparquet.py --search             # bbox + time selecting ~1 %
    python benchmarks/geoparquet.py --items 20000

Scenes are counted and dropped, 10 000 at a time (duplicate ids are checked within each slice;
no de-duplication across the file): the benchmark measures the source and normalisation, which
stream. ``aquila run`` itself keeps every scene its search selects (de-duplication, the plan and
the report need them all): a search that selects a million scenes is a different job, and
``--keep`` shows what holding them costs. Peak memory is VmHWM, as benchmarks/normalise.py reads
it. Target: peak < 2 GiB.
"""

from __future__ import annotations

import argparse
import datetime as dt
import subprocess
import sys
import time
from itertools import islice
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # the generator is benchmarks/normalise.py's
sys.path.insert(1, str(HERE.parent))

from normalise import BANDS, _tile_ring, generated_items, peak_rss_mib  # noqa: E402

ROW_GROUP = 10_000  # items per row group (and per write)
SLICE = 10_000  # scenes normalised, counted and dropped at a time
TARGET_MIB = 2048.0
T0 = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)  # normalise.py's first acquisition day


def parquet_path(work: Path, n: int) -> Path:
    return work / f"geoparquet-{n}.parquet"


def generate(path: Path, n: int) -> None:
    """N generated items as a stac-geoparquet file, one row group of ROW_GROUP items at a
    time (written to a temporary name and renamed: a killed run leaves no half file)."""
    import pyarrow as pa
    from orjson import loads
    from stac_geoparquet.arrow import parse_stac_items_to_arrow, to_parquet

    texts = generated_items(n)

    def batches():
        while chunk := [loads(t) for t in islice(texts, ROW_GROUP)]:
            yield from parse_stac_items_to_arrow(chunk)

    first = batches()
    head = next(first)
    rest = (b.cast(head.schema) for b in first)
    reader = pa.RecordBatchReader.from_batches(head.schema, _chain(head, rest))
    tmp = path.with_suffix(".part")
    to_parquet(reader, tmp)
    tmp.rename(path)


def _chain(head, rest):
    yield head
    yield from rest


def search_terms(n: int):
    """A bbox inside one of the 20 tiles (5 %) and the first fifth of the days (20 %): ~1 %."""
    from pipeline.catalog.query import SearchQuery

    ring = _tile_ring(31, 300000, 5300040)  # tile 0 of normalise.py's generator
    lon = sum(p[0] for p in ring[:4]) / 4
    lat = sum(p[1] for p in ring[:4]) / 4
    days = max(1, n // 20)
    end = T0 + dt.timedelta(days=days // 5, hours=23)
    return SearchQuery(bbox=(lon - 0.05, lat - 0.05, lon + 0.05, lat + 0.05), datetime=(T0, end))


def run(path: Path, n: int, *, search: bool, keep: bool) -> dict[str, float]:
    from pipeline.catalog.discover import collect
    from pipeline.catalog.items.options import NormaliseOptions
    from pipeline.catalog.query import SearchQuery
    from pipeline.catalog.sensors.profiles import load_profiles
    from pipeline.catalog.source import iter_docs
    from pipeline.io.hrefs import HrefPolicy

    options = NormaliseOptions(
        policy=HrefPolicy(("https://example-bucket.s3.amazonaws.com/",)),
        profiles=load_profiles(),
        check_files=False,
    )
    query = search_terms(n) if search else SearchQuery()
    # warm up: imports, pyproj transformers, profile loading (not counted)
    collect(islice(iter_docs(str(path), SearchQuery(), policy=options.policy), 20),
            bands=BANDS, options=options)
    rss0 = peak_rss_mib()
    notes: list[str] = []
    t0, c0 = time.perf_counter(), time.process_time()
    entries = iter_docs(str(path), query, notify=notes.append, policy=options.policy)
    selected = scenes = rejected = 0
    kept = []
    while True:
        got, rejects, found = collect(islice(entries, SLICE), bands=BANDS, options=options)
        if not found:
            break
        selected += found
        scenes += len(got)
        rejected += len(rejects)
        if keep:
            kept.extend(got)
    seconds = time.perf_counter() - t0
    return {
        "items": n,
        "selected": selected,
        "scenes": scenes,
        "rejected": rejected,
        "seconds": seconds,
        "cpu_seconds": time.process_time() - c0,
        "items_per_s": n / seconds,
        "peak_rss_mib": peak_rss_mib(),
        "rss_before_mib": rss0,
        "notes": notes,  # type: ignore[dict-item]
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--items", type=int, default=1_000_000)
    p.add_argument("--search", action="store_true", help="bbox + datetime selecting ~1 %%")
    p.add_argument("--keep", action="store_true", help="keep every Scene, as aquila run does")
    p.add_argument("--work", type=Path, default=HERE / "_work", help="where the file is cached")
    p.add_argument("--generate-only", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    path = parquet_path(args.work, args.items)
    if args.generate_only:
        generate(path, args.items)
        return 0
    if not path.exists():
        args.work.mkdir(parents=True, exist_ok=True)
        t = time.perf_counter()
        subprocess.run([sys.executable, __file__, "--generate-only", "--items", str(args.items),
                        "--work", str(args.work)], check=True)
        print(f"generated {path} ({path.stat().st_size / 2**20:.0f} MiB) in "
              f"{time.perf_counter() - t:.0f} s")
    r = run(path, args.items, search=args.search, keep=args.keep)
    for note in r["notes"]:  # type: ignore[attr-defined]
        print(f"note: {note}")
    what = "searched (bbox + datetime)" if args.search else "read"
    print(
        f"{what} {r['items']:,} stac-geoparquet items → {r['selected']:,} selected → "
        f"{r['scenes']:,} scenes normalised ({r['rejected']} rejected) in {r['seconds']:.1f} s "
        f"wall ({r['items_per_s']:,.0f} items/s; process CPU {r['cpu_seconds']:.1f} s); "
        f"peak RSS {r['peak_rss_mib']:.0f} MiB (before: {r['rss_before_mib']:.0f} MiB)"
    )
    ok = r["peak_rss_mib"] < TARGET_MIB
    print(f"target: peak memory < {TARGET_MIB:g} MiB: {'PASS' if ok else 'FAIL'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
