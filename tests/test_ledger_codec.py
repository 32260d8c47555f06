"""The ledger keeps every field of a normalised scene: what it decodes equals what was encoded,
for every field of the scene model (so a field added to Scene cannot silently fall out)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import math

import orjson
import shapely
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.catalog.scene import BandSource, HarmonisationUse, QualitySource, RasterGrid, Scene
from pipeline.plan.ledger import Tokens, scene_from_dict, scene_json, scene_to_dict, scene_token

GRID = RasterGrid("EPSG:32632", (10.0, 0.0, 500000.0, 0.0, -10.0, 5004000.0), (400, 400))


def full_scene(nodata: float | None = 0.0, sun: float | None = 41.5) -> Scene:
    """A scene with every optional field set to a non-default value."""
    band = BandSource(
        band="red", asset="B04", href="/data/x/B04.tif", index=1, dtype="uint16", nodata=nodata,
        scale=1e-4, offset=-0.1, grid=GRID, resampling="bilinear", valid_range=(1.0, 65534.0),
        mask=("/data/x/mask.tif", 2, (0, 255)), sun_power=1, post_offset=0.25,
        signer="tests.signers:append_token",
    )
    qa = QualitySource(asset="SCL", href="/data/x/SCL.tif", index=1, dtype="uint8", grid=GRID,
                       rules=(("cloud", 0, 0, (8, 9)), ("shadow", 4, 1, (1,))), resampling="mode",
                       signer="tests.signers:append_token")
    h = HarmonisationUse("hls-msi-to-oli", "2.0", "landsat-8-9-oli", "sentinel-2a",
                         (("red", 0.982, 0.00094),), ("nir",))
    return Scene(
        id="S2A_X", collection="north", provider="esa",
        datetime=dt.datetime(2025, 6, 20, 10, 30, 31, 123456, tzinfo=dt.UTC),
        footprint=shapely.box(9.0, 45.0, 9.1, 45.1), bands=(band,), quality=(qa,),
        platform="sentinel-2a", sun_elevation=sun, off_nadir=3.25, cloud_cover=12.5,
        extra=(("profile", "sentinel-2-msi"), ("version", "05.10")), harmonisation=h,
        item_href="https://stac.example/collections/north/items/S2A_X",
    )


def roundtrip(s: Scene) -> Scene:
    return scene_from_dict(orjson.loads(scene_json(s)))


def test_every_field_survives_the_ledger():
    s = full_scene()
    back = roundtrip(s)
    assert back == s
    assert back.item_href == s.item_href  # kept, though equality does not look at it
    # the test's scene really sets every field away from its default (else it proves little)
    for obj in (s, s.bands[0], s.quality[0]):
        for f in dataclasses.fields(obj):
            if f.default is not dataclasses.MISSING:
                assert getattr(obj, f.name) != f.default, f"{type(obj).__name__}.{f.name}"


def test_nan_nodata_and_missing_sun_keep_their_meaning():
    back = roundtrip(full_scene(nodata=float("nan"), sun=None))
    assert math.isnan(back.bands[0].nodata) and back.sun_elevation is None


def test_an_entry_written_before_a_field_existed_gets_its_default():
    d = scene_to_dict(full_scene())
    del d["harmonisation"], d["bands"][0]["post_offset"]
    back = scene_from_dict(d)
    assert back.harmonisation is None and back.bands[0].post_offset == 0.0


@settings(max_examples=100, deadline=None)
@given(
    scale=st.floats(allow_nan=False, allow_infinity=False),
    offset=st.floats(allow_nan=False, allow_infinity=False),
    nodata=st.none() | st.floats(allow_infinity=True, allow_nan=True),
    sun=st.none() | st.floats(-90, 90),
)
def test_floats_round_trip_exactly(scale, offset, nodata, sun):
    s = full_scene(nodata=nodata, sun=sun)
    s = dataclasses.replace(s, bands=(dataclasses.replace(s.bands[0], scale=scale, offset=offset),))
    back = roundtrip(s)
    b, b0 = back.bands[0], s.bands[0]
    assert (b.scale, b.offset, back.sun_elevation) == (b0.scale, b0.offset, s.sun_elevation)
    if nodata is not None and math.isnan(nodata):
        assert math.isnan(b.nodata)
    else:
        assert b.nodata == nodata


def test_memoised_tokens_equal_computed_ones_and_tell_versions_apart():
    """Tokens returns scene_token's value, once per scene object: an equal scene decoded again
    gets the same token, a reprocessed one (any field changed) another."""
    tokens = Tokens()
    scene = full_scene()
    again = scene_from_dict(scene_to_dict(scene))
    newer = dataclasses.replace(scene, extra=(("profile", "sentinel-2-msi"), ("version", "05.11")))
    assert tokens(scene) == scene_token(scene) == tokens(again) == tokens(scene)
    assert tokens(newer) == scene_token(newer) != tokens(scene)
    assert len(tokens._memo) == 3


def test_the_scene_token_ignores_where_the_item_lives():
    """A catalog moved to another folder or host holds the same scenes: same token, so a night
    does not redo them; any field the pixels depend on changes it."""
    import dataclasses as dc

    from pipeline.plan.ledger import scene_token

    s = full_scene()
    assert scene_token(dc.replace(s, item_href="/elsewhere/S2A_X.json")) == scene_token(s)
    assert scene_token(dc.replace(s, item_href=None)) == scene_token(s)
    assert scene_token(dc.replace(s, cloud_cover=13.0)) != scene_token(s)
