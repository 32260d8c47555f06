"""What every step of normalising an item shares: the options the driver resolves once, the
reject a step raises, and one shared object per value that repeats across scenes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from pipeline.catalog.scene import RasterGrid
from pipeline.catalog.sensors.context import RadiometryTarget
from pipeline.catalog.sensors.profiles import ProfileSet, load_profiles
from pipeline.catalog.stacdoc import ItemDoc
from pipeline.errors import SceneRejected
from pipeline.io.hrefs import HrefPolicy

Mirror = tuple[str, str]
"""(href prefix, local folder): asset links starting with the prefix are read from the folder."""


@dataclass(frozen=True)
class NormaliseOptions:
    """Everything normalisation needs besides the item; resolved once by the driver."""

    policy: HrefPolicy
    profiles: ProfileSet = field(default_factory=load_profiles)
    profile: str | None = None  # force this profile for every item
    mirrors: tuple[Mirror, ...] = ()
    check_files: bool = True  # local files must exist; read headers where proj:* is missing
    quality_mask: bool = True  # attach QA sources (False: scenes carry none, nothing is masked)
    radiometry: RadiometryTarget = field(default_factory=RadiometryTarget)  # what bands hold
    # collection id -> signer name ("package.module:callable"): the scenes' band and quality
    # sources carry it, and the worker signs their hrefs with it (pipeline.io.signing)
    signers: Mapping[str, str] = field(default_factory=dict)


def reject(doc: ItemDoc, reason: str, message: str) -> SceneRejected:
    return SceneRejected(doc.id, reason, message)


_SHARED: dict = {}
_SHARED_MAX = 200_000


def shared(value):
    """One object per distinct value (grids, names, notes repeat across thousands of scenes)."""
    found = _SHARED.get(value)
    if found is None:
        if len(_SHARED) >= _SHARED_MAX:
            _SHARED.clear()
        _SHARED[value] = found = value
    return found


def shared_grid(crs: str, transform: tuple, shape: tuple[int, int]) -> RasterGrid:
    return shared(RasterGrid(shared(crs), shared(transform), shared(shape)))
