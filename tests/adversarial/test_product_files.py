"""The files Aquila writes beside its products (pictures, HTML report, STAC Item and Collection)
never replace or remove a user's file, carry the product's releasability label, and never
point at a document that lists other (perhaps withheld) items."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import yaml

from tests.adversarial.runs import BOUNDS, aquila, last_line, write_spec
from tests.conftest import make_spec_dict


def _report(out: Path) -> dict:
    return json.loads((out / "test.run-report.json").read_text())


def test_a_users_files_where_pictures_go_are_left_alone_and_ours_are_replaced(rerun, tmp_path):
    spec, _, out = rerun
    ours_before = (out / "test.quicklook.png").read_bytes()  # the good run drew it
    (out / "test.report.html").write_text("my own notes")
    elsewhere = tmp_path / "elsewhere.png"
    elsewhere.write_bytes(b"not a picture of Aquila's")
    (out / "test.lineage.png").unlink()
    (out / "test.lineage.png").symlink_to(elsewhere)  # a link: never followed, never replaced
    done = aquila("run", str(spec), "--direct", "--no-progress")
    assert done.returncode == 0, done.stdout + done.stderr
    assert (out / "test.report.html").read_text() == "my own notes"
    assert (out / "test.lineage.png").is_symlink()
    assert elsewhere.read_bytes() == b"not a picture of Aquila's"
    report = _report(out)
    assert "html report" not in report["products"] and "lineage map" not in report["products"]
    notes = " ".join(report["notes"])
    assert "test.report.html exists and Aquila did not write it" in notes
    assert "test.lineage.png exists and Aquila did not write it" in notes
    # its own picture from the previous run is Aquila's to replace (a new run id, new bytes or
    # not: the file is rewritten and listed)
    assert report["products"]["quicklook"] == str(out / "test.quicklook.png")
    assert (out / "test.quicklook.png").read_bytes()[:8] == ours_before[:8] == b"\x89PNG\r\n\x1a\n"


RESTRICTED = {"classification": "RESTRICTED", "releasable_to": ["NLD", "NOR", "USA"],
              "caveats": [], "owner": "NOR", "licence": "NLOD-2.0"}


def test_pictures_and_the_html_page_carry_the_label(catalog_copy, tmp_path):
    """A run for an audience: the page shows the products' label at its top and bottom, and
    each PNG carries it in its metadata (the figures also in a visible line)."""
    for path in catalog_copy.glob("*/*/*.json"):
        doc = json.loads(path.read_text())
        if doc.get("type") == "Feature":
            doc["properties"]["aquila:marking"] = RESTRICTED
            path.write_text(json.dumps(doc))
    out = tmp_path / "out"
    spec = write_spec(tmp_path / "spec.yaml", catalog_copy, out,
                      audience={"releasable_to": ["NLD", "USA"]})
    done = aquila("run", str(spec), "--direct", "--no-progress")
    assert done.returncode == 0, done.stdout + done.stderr
    label = _report(out)["labels"]["mosaic (median)"]
    assert label["classification"] == "RESTRICTED"
    page = (out / "test.report.html").read_text()
    assert page.count("releasability: RESTRICTED releasable to NLD, NOR, USA") == 2, page[:600]
    for name in ("test.quicklook.png", "test.lineage.png", "test.coverage.png"):
        assert b"RESTRICTED releasable to NLD, NOR, USA" in (out / name).read_bytes(), name


def test_a_night_refuses_a_users_file_where_its_collection_goes(tiny_catalog, tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(make_spec_dict(tiny_catalog.root, tmp_path / "out",
                                                  bounds=BOUNDS)))
    store = tmp_path / "night.icechunk"
    mine = tmp_path / "night.icechunk.collection.json"
    mine.write_text('{"my": "catalog"}')
    done = aquila("nightly", str(spec), "--store", str(store), "--direct", "--no-progress")
    assert done.returncode == 2, done.stdout + done.stderr
    assert "night.icechunk.collection.json" in last_line(done.stderr)
    assert mine.read_text() == '{"my": "catalog"}'
    assert not store.exists()


def test_items_from_a_shared_file_are_named_but_not_linked(tiny_catalog, tmp_path):
    """Items read from a FeatureCollection file have no document of their own: the product
    names them in aquila:sources but links none (a link would lead to every item of the file);
    items with their own file are linked."""
    items = sorted(Path(tiny_catalog.root).glob("*/*/*.json"))
    docs = [json.loads(p.read_text()) for p in items]
    for d, p in zip(docs, items, strict=True):  # absolute asset links: the items move
        for a in d["assets"].values():
            a["href"] = str((p.parent / a["href"]).resolve())
        d["links"] = [link for link in d.get("links", []) if link.get("rel") != "self"]
    collection = tmp_path / "items.json"
    collection.write_text(json.dumps({"type": "FeatureCollection", "features": docs}))
    out = tmp_path / "out"
    spec_doc = make_spec_dict(tiny_catalog.root, out, bounds=BOUNDS, cube=False)
    spec_doc.update(catalog=str(collection), allowed_roots=[str(tiny_catalog.root)])
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(spec_doc))
    done = aquila("run", str(spec), "--direct", "--no-progress", "--no-pictures")
    assert done.returncode == 0, done.stdout + done.stderr
    item = json.loads((out / "mosaic.zarr.stac.json").read_text())
    assert item["properties"]["aquila:sources"]
    assert [link for link in item["links"] if link["rel"] == "derived_from"] == []
    # the same scenes from their own files are linked, one link each
    shutil.rmtree(out)
    spec_doc.update(catalog=str(Path(tiny_catalog.root) / "catalog.json"))
    spec.write_text(yaml.safe_dump(spec_doc))
    done = aquila("run", str(spec), "--direct", "--no-progress", "--no-pictures")
    assert done.returncode == 0, done.stdout + done.stderr
    item = json.loads((out / "mosaic.zarr.stac.json").read_text())
    linked = [link for link in item["links"] if link["rel"] == "derived_from"]
    assert len(linked) == len(item["properties"]["aquila:sources"]) > 0
