"""The product's STAC sidecar is a function of its content, not of how the content was built:
a rerun after a crash between publish and sidecar (state read back from the store, keys sorted)
writes the bytes a clean run (state still in memory, keys in insertion order) writes."""

from __future__ import annotations

import json

from pipeline.products.stac import stac_path, write_product_stac


def test_sidecar_bytes_do_not_depend_on_key_order(tmp_path):
    label = {"classification": "SECRET", "releasable_to": ["AA", "BB"], "caveats": ["X"]}
    reordered = dict(sorted(label.items()))
    assert list(reordered) != list(label)
    written = []
    for i, lab in enumerate((label, reordered)):
        store = tmp_path / f"s{i}" / "n.icechunk"
        store.parent.mkdir()
        path = write_product_stac(
            store,
            kind="nightly cube and mosaics",
            bbox=(9.0, 45.0, 9.1, 45.1),
            times=["2025-06-20T10:30:31Z", "2025-06-21T10:30:31Z"],
            label=lab,
            slot_labels=[lab, None],
            properties={"aquila:run_id": "r1"},
        )
        assert path == stac_path(store)
        written.append(path.read_bytes())
    assert written[0] == written[1]
    item = json.loads(written[0])
    assert item["type"] == "Feature" and item["bbox"] == [9.0, 45.0, 9.1, 45.1]
