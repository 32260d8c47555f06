"""A nightly store's publication: a night whose base moved is refused, its cause kept."""

from __future__ import annotations

import icechunk
import pytest
import zarr

from pipeline.errors import RunError
from pipeline.products.transaction import MAIN, NightlyStore


def test_a_night_whose_base_moved_is_not_published_and_keeps_icechunks_error(tmp_path):
    store = NightlyStore.open(tmp_path / "nightly", create=True)
    night = store.begin("r1")
    snapshot = night.prepare(lambda s: zarr.create_group(s, path="cube"), run_id="r1")
    other = store.repo.writable_session(MAIN)  # another writer moves main meanwhile
    zarr.create_group(other.store, path="elsewhere")
    moved = other.commit("another night")
    with pytest.raises(RunError) as err:
        night.publish(snapshot)
    assert err.value.reason == "publish_conflict"
    assert "nothing was published" in err.value.message
    assert isinstance(err.value.__cause__, icechunk.IcechunkError)
    assert store.tip() == moved  # main is where the other writer left it
    night.close()
