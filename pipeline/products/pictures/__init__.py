"""The pictures of a run, beside its run report: ``<workflow>.quicklook.png`` (true colour of the
first mosaic, else the cube's last slot), ``<workflow>.lineage.png`` (the provider of each pixel
of the first mosaic with a ``source`` layer, else the first mosaic's count),
``<workflow>.coverage.png`` (scenes used per date and provider) and ``<workflow>.report.html``
(all of them beside the report's numbers, one self-contained file).

Everything drawn comes from the audience-facing run report and the published products, never
from the operator report: a withheld scene is only ever a count. A picture that cannot be drawn
is a reason in :attr:`Pictures.not_drawn`, never an error of the run.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.errors import AquilaError
from pipeline.products.pictures.quicklook import (
    is_our_file,
    lineage_map,
    new_figure,
    quicklook,
    save_figure,
    tab10,
)

UNKNOWN = "unknown"
SUFFIXES = {"quicklook": "quicklook.png", "lineage": "lineage.png",
            "coverage": "coverage.png", "html": "report.html"}


@dataclass
class Pictures:
    """The files written (picture name → path) and the pictures not drawn (name → why)."""

    written: dict[str, Path] = field(default_factory=dict)
    not_drawn: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Coverage:
    """Scenes used per (UTC date, provider), and what was left out, as counts only."""

    used: Mapping[tuple[str, str], int]
    rejected: int = 0
    read_failures: int = 0
    withheld: int = 0
    unit: str = "scenes"  # or "time slots" (a cube-only run: its slots do not list scenes)


def make_pictures(report_path: Path | str, products: Mapping[str, Path | str]) -> Pictures:
    """Write the run's pictures and HTML report beside ``report_path`` from the stores among
    ``products`` (run report names → paths: ``cube``, ``mosaic (<method>)``)."""
    report_path = Path(report_path)
    report = json.loads(report_path.read_text())
    stores = product_stores(products)
    folder, name = report_path.parent, str(report.get("workflow") or "run")
    paths = {key: folder / f"{name}.{suffix}" for key, suffix in SUFFIXES.items()}
    done = Pictures()
    _attempt(done, "quicklook", paths["quicklook"], lambda: _quicklook(stores, paths["quicklook"]))
    _attempt(done, "lineage", paths["lineage"], lambda: _lineage(stores, paths["lineage"]))
    _attempt(done, "coverage", paths["coverage"],
             lambda: coverage_plot(coverage_of(report, stores), paths["coverage"], name,
                                   label=run_label(report)))

    def html() -> Path:
        from pipeline.products.pictures.page import write_html_report

        return write_html_report(report, dict(done.written), paths["html"],
                                 not_drawn=dict(done.not_drawn))

    _attempt(done, "html", paths["html"], html)
    return done


def run_label(report: Mapping[str, Any]) -> Any:
    """The run's products' label (one per run: the high-water mark of the scenes it used), or
    None for a run without an audience."""
    for key, label in (report.get("labels") or {}).items():
        if key != "slots" and isinstance(label, Mapping):
            return label
    return None


def product_stores(products: Mapping[str, Path | str]) -> dict[str, Path]:
    """The product stores among a run report's ``products`` (its report and pictures are not)."""
    return {k: Path(v) for k, v in products.items()
            if (k == "cube" or k.startswith("mosaic")) and Path(v).is_dir()}


def _attempt(done: Pictures, key: str, path: Path, draw: Callable[[], Path | None]) -> None:
    """Draw one picture; a failure (or nothing to draw) is its reason, and an older picture of
    that name is removed so that nothing out of date sits beside the new report. A file at
    ``path`` that Aquila did not write (no Aquila marker in it, or a link) is left alone and
    nothing is drawn there."""
    if not is_our_file(path):
        done.not_drawn[key] = (f"{path} exists and Aquila did not write it (left as it is); "
                               "move it away to get this picture")
        return
    try:
        made = draw()
    except AquilaError as exc:
        reason = exc.message
    except Exception as exc:  # a picture must never fail the run: say why instead
        reason = f"{type(exc).__name__}: {exc}"
    else:
        if made is not None:
            done.written[key] = made
            return
        reason = "nothing to draw in this run"
    done.not_drawn[key] = reason
    # safe: is_our_file(path) held above: nothing there, or a regular file (never a link or a
    # folder) carrying Aquila's marker, i.e. a picture or page an earlier run wrote
    path.unlink(missing_ok=True)


def _mosaics(stores: Mapping[str, Path]) -> list[Path]:
    return [p for k, p in stores.items() if k.startswith("mosaic")]


def _quicklook(stores: Mapping[str, Path], out: Path) -> Path | None:
    """True colour of the first mosaic, else of the cube's last slot."""
    mosaics = _mosaics(stores)
    store = mosaics[0] if mosaics else stores.get("cube")
    return None if store is None else quicklook(store, out, bands="true")


def _lineage(stores: Mapping[str, Path], out: Path) -> Path | None:
    """The first mosaic with a ``source`` layer, else the first mosaic's count."""
    mosaics = _mosaics(stores)
    with_source = [p for p in mosaics if any((p / "source" / meta).is_file()
                                             for meta in ("zarr.json", ".zarray"))]
    candidates = with_source or mosaics
    return lineage_map(candidates[0], out).path if candidates else None


# --------------------------------------------------------------------------- coverage


def coverage_of(report: Mapping[str, Any], stores: Mapping[str, Path]) -> Coverage:
    """The counts of :class:`Coverage` from the run report, with each used scene's date and
    provider looked up in a mosaic's ``sources`` (a cube-only run counts the cube's slots)."""
    counts = (len(report.get("rejected") or ()), len(report.get("read_failures") or ()),
              int(report.get("withheld") or 0))
    sources = _sources(stores)
    if sources is not None:
        where = {sid: slot_key(slot) for slot in sources for sid in slot.get("scenes") or ()}
        used = Counter(where.get(sid, (UNKNOWN, UNKNOWN)) for sid in report.get("scenes_used")
                       or ())
        return Coverage(dict(used), *counts)
    if "cube" in stores:
        return Coverage(_cube_slots(stores["cube"]), *counts, unit="time slots")
    return Coverage({}, *counts)


def slot_key(slot: Mapping[str, Any]) -> tuple[str, str]:
    """(UTC date, provider) of one ``sources`` entry."""
    day = str(slot.get("time") or UNKNOWN)[:10]
    return day, str(slot.get("provider") or slot.get("collection") or UNKNOWN)


def _sources(stores: Mapping[str, Path]) -> list[dict[str, Any]] | None:
    from pipeline.products.publish import root_attrs

    for path in _mosaics(stores):
        sources = (root_attrs(path) or {}).get("sources")
        if isinstance(sources, list):
            return sources
    return None


def _cube_slots(cube: Path) -> dict[tuple[str, str], int]:
    import numpy as np
    import xarray as xr

    ds = xr.open_zarr(cube, chunks={})
    days = [str(np.datetime_as_string(t, unit="D")) for t in ds["time"].values]
    who = ds["collection"].values if "collection" in ds.coords else [UNKNOWN] * len(days)
    return dict(Counter(zip(days, (str(c) for c in who), strict=True)))


def coverage_plot(coverage: Coverage, out: Path, workflow: str, *, label: Any = None) -> Path:
    """Stacked bars: scenes used per date, one colour per provider; under them, the counts of
    scenes rejected, failed to read and withheld (counted, never named)."""
    days = sorted({d for d, _ in coverage.used})
    providers = sorted({p for _, p in coverage.used})
    fig, ax = new_figure((5, 8), extra_width=1.0)
    palette = tab10()
    bottom = [0] * len(days)
    for i, provider in enumerate(providers):
        heights = [coverage.used.get((d, provider), 0) for d in days]
        ax.bar(range(len(days)), heights, bottom=bottom, label=provider,
               color=palette[i % len(palette)], edgecolor="black", linewidth=0.5)
        bottom = [b + h for b, h in zip(bottom, heights, strict=True)]
    ax.set_xticks(range(len(days)), days, rotation=45, ha="right")
    ax.set_ylabel(f"{coverage.unit} used")
    ax.yaxis.get_major_locator().set_params(integer=True)
    ax.set_title(f"{workflow}: {coverage.unit} used per date and provider")
    if providers:
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    else:
        ax.text(0.5, 0.5, f"no {coverage.unit} used", ha="center", transform=ax.transAxes)
    ax.set_xlabel(left_out_line(coverage))
    save_figure(fig, out, label=label)
    return out


def left_out_line(coverage: Coverage) -> str:
    used = sum(coverage.used.values())
    return (f"{used} {coverage.unit} used · {coverage.rejected} rejected · "
            f"{coverage.read_failures} failed to read · {coverage.withheld} withheld "
            "(counted, never named)")

