"""Per-core rates measured by ``benchmarks/rates.py`` (``--write`` rewrites this file):
the cost model's defaults (:mod:`pipeline.plan.cost`). Units are in ``Rates``'s
fields; single thread, one machine (named below)."""

from __future__ import annotations

from typing import Any

MEASURED: dict[str, Any] = {'machine': 'AMD EPYC',
 'cores': 2,
 'date': '2026-12-05',
 'commit': 'b738d47',
 'read_px_s': 117276080,
 'bytes_per_source_px': 0.323,
 'warp_px_s': 26838055,
 'warp_same_crs_px_s': 17377122840,
 'calibrate_px_s': 356710771,
 'mask_px_s': 619253467,
 'merge_px_s': 500543460,
 'composite_px_slot_s': {'median': 48045350,
                         'latest': 292531407,
                         'earliest': 299601589,
                         'mean': 303097995,
                         'min': 295811183,
                         'max': 292814487,
                         'percentile': 11281610,
                         'best-pixel': 92122829,
                         'medoid': 8584148},
 'write_px_s': 114770001,
 'task_bytes_per_px': 400.32,
 'task_fixed_bytes': 0,
 'worker_base_bytes': 553418752.0,
 'read_call_s': 0.001562,
 'warp_call_s': 8.5e-05}
