""":func:`run`: a workflow from Python, the same run as ``aquila run`` (products published,
run report written), optionally on the caller's own Dask client."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from pipeline.engine.run import RunOptions, default_report_path, run_workflow
from pipeline.errors import InputError, RunError
from pipeline.products.report import RunReport
from pipeline.spec.workflow import WorkflowSpec, load_spec, spec_from_dict

log = logging.getLogger(__name__)

OK_STATUSES = ("success", "partial")
REPORTS = ("report", "operator report")  # report.products entries that are not stores


@dataclass(frozen=True)
class RunResult:
    """What a run wrote: its report (``report.status``, ``rejected``, ``read_failures``...),
    where the report is, and each product's store by name (``cube``, ``mosaic (median)``...)."""

    report: RunReport
    report_path: Path
    products: Mapping[str, Path]

    @property
    def status(self) -> str:
        return self.report.status

    @property
    def ok(self) -> bool:
        return self.report.status in OK_STATUSES

    def open(self, product: str = "cube") -> Any:
        """A product as a lazy ``xarray.Dataset`` (``'cube'``, ``'mosaic (median)'``...)."""
        import xarray as xr

        if product not in self.products:
            raise KeyError(f"no product {product!r}; this run wrote {sorted(self.products)}")
        return xr.open_zarr(self.products[product])


def run(
    spec_or_path: WorkflowSpec | Mapping[str, Any] | str | Path,
    client: Any = None,
    *,
    direct: bool = False,
    options: RunOptions | None = None,
    check: bool = True,
) -> RunResult:
    """Run a workflow (a spec file path, a spec mapping with paths relative to the current
    directory, or a :class:`WorkflowSpec`) and return its :class:`RunResult`.

    ``client``: a connected ``distributed.Client`` whose cluster runs the chunk tasks instead
    of a new local cluster; it is left open (and usable) afterwards. ``direct=True`` runs the
    tasks in this process, without Dask. ``options`` are the engine's :class:`RunOptions`.
    ``check`` (default) raises when the run ended neither ``success`` nor ``partial`` (the
    report is written either way; :class:`InputError` for bad input, :class:`RunError`
    otherwise)."""
    spec, source = _spec(spec_or_path)
    opts = options or RunOptions()
    if client is not None or direct:
        opts = replace(opts, client=client if client is not None else opts.client,
                       direct=direct or opts.direct)
    report = run_workflow(spec, spec_path=source, options=opts)
    path = opts.report_path or default_report_path(spec)
    products = {name: Path(p) for name, p in report.products.items()
                if name not in REPORTS}
    result = RunResult(report, path, products)
    log.info("run %s of %s: %s (report %s)", report.run_id, spec.name, report.status, path)
    if check and not result.ok:
        error = InputError if report.status == "bad_input" else RunError
        raise error(f"workflow {spec.name!r} ended '{report.status}': {report.error}. "
                    f"The run report is {path}", reason=report.status)
    return result


def _spec(value: WorkflowSpec | Mapping[str, Any] | str | Path) -> tuple[WorkflowSpec, str]:
    if isinstance(value, WorkflowSpec):
        return value, ""
    if isinstance(value, Mapping):
        return spec_from_dict(dict(value), base_dir=Path.cwd(), source="spec mapping"), ""
    return load_spec(value), str(value)
