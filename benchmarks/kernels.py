"""Throughput of the compositing kernels on one large chunk, beside numpy.nanmedian.

    python benchmarks/kernels.py [--size 1024] [--time 24] [--repeats 3] [--all]

Builds a (T, 4, size, size) float32 stack of random reflectance in [0, 0.6) in which ~20 % of
the observations (all bands of a (t, y, x)) are NaN, plus best-pixel metadata (cloud distance
from random cloud blobs via ``cloud_distance``, sun elevation, view angle, days from target,
provider rank). Every kernel is called once on a small slice first (JIT compile / cache load,
not timed); then each timed call is repeated ``--repeats`` times and the median wall time is
reported as Mpixel/s, pixels = Y * X per call (all T and bands included).

Prints ``composite_median`` and ``composite_best_pixel`` beside ``numpy.nanmedian(stack,
axis=0)`` over the same array, the ratio median-kernel / nanmedian and a PASS/FAIL verdict
against the target (>= 10x). ``--all`` adds the other methods (information only). Single
thread (the kernels are ``parallel=False``; a chunk task runs on one worker thread). Exits 0
whatever the verdict (it is a measurement).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.kernels.blend import blend_weights, composite_blend  # noqa: E402
from pipeline.kernels.composite import composite_latest, composite_median  # noqa: E402
from pipeline.kernels.mosaic import (  # noqa: E402
    BestPixelWeights,
    cloud_distance,
    composite_best_pixel,
    composite_earliest,
    composite_max,
    composite_mean,
    composite_medoid,
    composite_min,
    composite_percentile,
    composite_priority,
    composite_quality,
    ndvi,
)

TARGET_RATIO = 10.0


def make_inputs(nt: int, size: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    nb = 4
    stack = rng.random((nt, nb, size, size), dtype=np.float32)
    stack *= np.float32(0.6)
    invalid = rng.random((nt, size, size)) < 0.2
    for b in range(nb):
        stack[:, b][invalid] = np.nan
    # clouds: a few discs per observation (~ the masked part of the 20 % above)
    yy, xx = np.ogrid[:size, :size]
    clouds = np.zeros((nt, size, size), dtype=bool)
    for t in range(nt):
        for _ in range(4):
            cy, cx = rng.uniform(0, size, 2)
            r = rng.uniform(size / 40, size / 10)
            clouds[t] |= (yy - cy) ** 2 + (xx - cx) ** 2 < r * r
    return dict(
        stack=stack,
        clouds=clouds,
        sun=rng.uniform(20, 70, nt),
        view=rng.uniform(0, 25, nt),
        days=rng.integers(-90, 90, nt).astype(np.float64),
        prank=rng.integers(0, 3, nt).astype(np.int32),
    )


def timed(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--time", type=int, default=24)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--all", action="store_true", help="also time the other methods")
    args = ap.parse_args(argv)

    t0 = time.perf_counter()
    inp = make_inputs(args.time, args.size)
    stack = inp["stack"]
    cd = cloud_distance(inp["clouds"][:, :8, :8])  # compile / load
    t_cd = time.perf_counter()
    cd = cloud_distance(inp["clouds"])
    t_cd = time.perf_counter() - t_cd
    nt, nb, ny, nx = stack.shape
    w = BestPixelWeights()
    meta = (inp["sun"], inp["view"], inp["days"], inp["prank"])
    key = ndvi(stack, 2, 3)

    methods = {
        "composite_median": lambda s, c, k: composite_median(s),
        "composite_best_pixel": lambda s, c, k: composite_best_pixel(s, c, w, *meta),
    }
    if args.all:
        methods.update({
            "composite_latest": lambda s, c, k: composite_latest(s),
            "composite_earliest": lambda s, c, k: composite_earliest(s),
            "composite_priority": lambda s, c, k: composite_priority(s, inp["prank"]),
            "composite_mean": lambda s, c, k: composite_mean(s),
            "composite_min": lambda s, c, k: composite_min(s),
            "composite_max": lambda s, c, k: composite_max(s),
            "composite_percentile(25)": lambda s, c, k: composite_percentile(s, 25.0),
            "composite_quality(ndvi)": lambda s, c, k: composite_quality(s, k),
            "composite_medoid": lambda s, c, k: composite_medoid(s),
            "blend_weights(w=8)": lambda s, c, k: blend_weights(np.isfinite(s[:, 0]), 8.0),
        })
    for fn in methods.values():  # warm-up: compile or load from the on-disk cache
        fn(stack[:, :, :8, :8].copy(), cd[:, :8, :8].copy(), key[:, :8, :8].copy())
    composite_blend(stack[:, :, :8, :8].copy(), np.zeros((8, 8), np.int32),
                    np.ones((nt, 8, 8), np.float32))
    setup = time.perf_counter() - t0

    mpx = ny * nx / 1e6
    print(f"stack (T={nt}, B={nb}, Y={ny}, X={nx}) float32, "
          f"{np.isnan(stack[:, 0]).mean():.1%} NaN observations; "
          f"median of {args.repeats} runs, single thread; setup {setup:.1f} s")
    print(f"cloud_distance (T, Y, X) EDT: {nt * mpx / t_cd:8.1f} Mpixel-planes/s (1 run)")
    print(f"{'':28s} {'time [s]':>9s} {'Mpixel/s':>9s}")
    rate = {}
    for name, fn in methods.items():
        sec = timed(lambda fn=fn: fn(stack, cd, key), args.repeats)
        rate[name] = mpx / sec
        print(f"{name:28s} {sec:9.3f} {rate[name]:9.2f}")
    if args.all:
        base = composite_latest(stack)[1]
        weights = blend_weights(np.isfinite(stack).all(axis=1), 8.0)
        sec = timed(lambda: composite_blend(stack, base, weights), args.repeats)
        print(f"{'composite_blend':28s} {sec:9.3f} {mpx / sec:9.2f}")

    def numpy_median():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return np.nanmedian(stack, axis=0)

    sec = timed(numpy_median, args.repeats)
    rate["numpy.nanmedian"] = mpx / sec
    print(f"{'numpy.nanmedian(axis=0)':28s} {sec:9.3f} {rate['numpy.nanmedian']:9.2f}")

    # same answer (NaN where no valid observation; float64 vs float32 evaluation aside)
    ours = composite_median(stack)[0]
    theirs = numpy_median()
    agree = np.allclose(ours, theirs, rtol=1e-6, atol=0, equal_nan=True)

    ratio = rate["composite_median"] / rate["numpy.nanmedian"]
    verdict = "PASS" if ratio >= TARGET_RATIO and agree else "FAIL"
    print(f"ratio composite_median / numpy.nanmedian = {ratio:.1f}x (target >= "
          f"{TARGET_RATIO:.0f}x); results agree: {agree}")
    print(f"VERDICT: {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
