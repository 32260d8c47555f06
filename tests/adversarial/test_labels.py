"""A product's label is never below what went into it (issue #13, items 3 and 13).

Hostile catalogs list one collection/id twice with different markings (either order, one copy
not releasable to the audience), reuse an id in another collection, or publish one acquisition
twice under two ids and two markings; assets carry their own owner and licence. The expectation
is computed here from the raw marking dicts written into the items (never from
``pipeline.catalog.markings``): the stricter of every copy of every scene that could have given a
pixel, and nothing a withheld copy's scene could give.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.catalog.discover import discover
from pipeline.catalog.markings import Scale, high_water_mark, parse_marking
from pipeline.engine.run import RunOptions, outputs_of, run_workflow, target_grid
from pipeline.plan.chunks import make_plan
from pipeline.products.lineage import lineage
from pipeline.spec.workflow import spec_from_dict
from tests.conftest import make_spec_dict

LEVELS = ["UNCLASSIFIED", "RESTRICTED", "CONFIDENTIAL", "SECRET"]  # lowest first (default)
CODES = ["DEU", "NLD", "NOR", "USA"]
BOUNDS = (500000, 5000000, 504000, 5004000)
NORTH_20 = "S2B_32TNR_20250620_0_L2A"
SOUTH_16 = "LC09_L2SP_194028_20250616_20250625_02_T1"
OPEN_DATA = "unmarked-open-data"


def marking(level="UNCLASSIFIED", to=CODES, caveats=(), owner="NLD", licence="CC-BY-4.0"):
    return {"classification": level, "releasable_to": list(to), "caveats": list(caveats),
            "owner": owner, "licence": licence}


# --------------------------------------------------------------------------- the oracle


@dataclass(frozen=True)
class Audience:
    members: frozenset[str]
    clearance: str | None = None
    allow_unmarked: bool = False


def raw_markings(doc: dict, audience: Audience) -> list[dict] | None:
    """The marking dicts an item carries (item, then assets); None: unknown (withheld)."""
    mark = doc["properties"].get("aquila:marking")
    if mark is None:
        if not audience.allow_unmarked:
            return None
        mark = marking("UNCLASSIFIED", sorted(audience.members), (), "unknown", OPEN_DATA)
    marks = [mark] + [a["aquila:marking"] for a in doc["assets"].values() if "aquila:marking" in a]
    if any(m["classification"] not in LEVELS for m in marks):
        return None
    return marks


def admits(marks: list[dict] | None, audience: Audience) -> bool:
    if marks is None:
        return False
    top = max(LEVELS.index(m["classification"]) for m in marks)
    if audience.clearance is not None and top > LEVELS.index(audience.clearance):
        return False
    return all(audience.members <= set(m["releasable_to"]) for m in marks)


def key_of(doc: dict) -> tuple[str, str]:
    return (doc.get("collection") or "", doc["id"])


def withheld_keys(docs: list[dict], audience: Audience) -> set[tuple[str, str]]:
    """A (collection, id) one of whose copies is withheld is withheld whole."""
    return {key_of(d) for d in docs if not admits(raw_markings(d, audience), audience)}


def contributing_marks(
    docs: list[dict], keys: set[tuple[str, str]], dropped_for: dict, audience: Audience
) -> list[dict]:
    """Every marking of every copy of the scenes ``keys``, and of the publications dedupe
    dropped for them."""
    keys = set(keys)
    todo = list(keys)
    while todo:
        for k in dropped_for.get(todo.pop(), ()):
            if k not in keys:
                keys.add(k)
                todo.append(k)
    return [m for d in docs if key_of(d) in keys for m in raw_markings(d, audience) or ()]


def effective(marks: list[dict] | None) -> dict | None:
    """One copy's marking, order-free: its item and asset markings combined."""
    return None if marks is None else expected_label(marks)


def expected_label(marks: list[dict]) -> dict:
    releasable = set(marks[0]["releasable_to"])
    for m in marks:
        releasable &= set(m["releasable_to"])
    return {
        "classification": max((m["classification"] for m in marks), key=LEVELS.index),
        "releasable_to": sorted(releasable),
        "caveats": sorted({c for m in marks for c in m["caveats"]}),
        "licences": sorted({m["licence"] for m in marks}),
        "owners": sorted({m["owner"] for m in marks}),
    }


def assert_not_below(label: dict, marks: list[dict], audience: Audience) -> None:
    """The label is at least as strict as each marking, and still admits the audience."""
    for m in marks:
        assert LEVELS.index(label["classification"]) >= LEVELS.index(m["classification"]), m
        assert set(label["releasable_to"]) <= set(m["releasable_to"]), m
        assert set(label["caveats"]) >= set(m["caveats"]), m
        assert m["owner"] in label["owners"] and m["licence"] in label["licences"], m
    assert audience.members <= set(label["releasable_to"])
    if audience.clearance is not None:
        assert LEVELS.index(label["classification"]) <= LEVELS.index(audience.clearance)


def dropped_map(duplicates) -> dict[tuple[str, str], list[tuple[str, str]]]:
    """kept (collection, id) -> the (collection, id)s dedupe dropped for it."""
    out: dict[tuple[str, str], list[tuple[str, str]]] = {}
    for d in duplicates:
        d = d if isinstance(d, dict) else d.as_dict()
        out.setdefault((d["kept_collection"], d["kept"]), []).append(
            (d["dropped_collection"], d["dropped"])
        )
    return out


# --------------------------------------------------------------------------- property test

marking_st = st.builds(
    marking,
    level=st.sampled_from(LEVELS),
    to=st.lists(st.sampled_from(CODES), min_size=2, max_size=4, unique=True),
    caveats=st.lists(st.sampled_from(["AGRI", "CROPS"]), unique=True),
    owner=st.sampled_from(["NLD", "NOR", "ACME"]),
    licence=st.sampled_from(["CC-BY-4.0", "EULA", "NLOD-2.0"]),
)
GARBLED = {**marking(), "classification": "TOP SEKRIT"}
item_st = st.fixed_dictionaries({
    "id": st.sampled_from(["x", "y", "z"]),
    "collection": st.sampled_from(["north", "south", None]),
    "href": st.sampled_from(["a", "b"]),  # two self hrefs, same assets
    "acquisition": st.integers(0, 1),  # same acquisition: same time, platform and footprint
    "mark": st.one_of(*[marking_st] * 6, st.none(), st.just(GARBLED)),  # mostly valid
    "asset_mark": st.one_of(st.none(), marking_st),
})
audience_st = st.builds(
    Audience,
    members=st.frozensets(st.sampled_from(CODES), min_size=1, max_size=2),
    clearance=st.sampled_from([None, None, *LEVELS]),
    allow_unmarked=st.booleans(),
)


@pytest.fixture(scope="module")
def template(tiny_catalog):
    """One generated item (real COGs beside it) that every hypothetical item is made from."""
    path = next(tiny_catalog.root.glob(f"north/{NORTH_20}/{NORTH_20}.json"))
    return json.loads(path.read_text()), path.parent, tiny_catalog.root


def hypothetical(template, item: dict) -> dict:
    doc, folder, _ = template
    doc = copy.deepcopy(doc)
    doc["id"] = item["id"]
    doc.pop("collection", None)
    if item["collection"] is not None:
        doc["collection"] = item["collection"]
    when = dt.datetime(2025, 6, 20, 10, 24, 13, tzinfo=dt.UTC)
    doc["properties"]["datetime"] = (when + dt.timedelta(days=item["acquisition"])).isoformat()
    doc["links"] = [{"rel": "self", "href": str(folder / f"{item['href']}.json")}]
    if item["mark"] is not None:
        doc["properties"]["aquila:marking"] = item["mark"]
    if item["asset_mark"] is not None:
        doc["assets"]["B04"]["aquila:marking"] = item["asset_mark"]
    return doc


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    items=st.lists(item_st, min_size=1, max_size=8),
    audience=audience_st,
    used_mask=st.integers(0, 7),
)
def test_label_is_never_below_a_scene_that_could_have_given_a_pixel(
    template, items, audience, used_mask
):
    """Random catalogs (duplicate ids and collections, two self hrefs, one acquisition under
    several ids, random item and asset markings) through discovery, dedupe, the plan and the
    lineage of a random set of used ids."""
    docs = [hypothetical(template, i) for i in items]
    with tempfile.TemporaryDirectory() as tmp:
        ndjson = Path(tmp) / "items.ndjson"
        ndjson.write_text("".join(json.dumps(d) + "\n" for d in docs))
        raw = make_spec_dict(Path(tmp), Path(tmp), bounds=BOUNDS)
        raw |= {"catalog": str(ndjson), "allowed_roots": [str(template[2])],
                "allow_unmarked": audience.allow_unmarked,
                "audience": {"releasable_to": sorted(audience.members)}}
        if audience.clearance:
            raw["audience"]["clearance"] = audience.clearance
        spec = spec_from_dict(raw, base_dir=Path(tmp))
        found = discover(spec, check_files=False)
    out = withheld_keys(docs, audience)
    assert not [s.id for s in found.scenes if (s.collection, s.id) in out]
    if not found.scenes:
        return
    plan = make_plan(found.scenes, grid=target_grid(spec, found.scenes), outputs=outputs_of(spec))
    ids = sorted({s.id for s in plan.scenes})
    used = {i for n, i in enumerate(ids) if used_mask >> n & 1} or set(ids)
    lin = lineage(plan, used, complete=True, audience=None, markings=dict(found.markings),
                  scale=Scale())
    dropped = dropped_map(found.duplicates)
    def scenes_with(ids: set[str]) -> set[tuple[str, str]]:  # an id names every scene it may
        return {(s.collection, s.id) for s in plan.scenes if s.id in ids}

    assert_not_below(lin.label, contributing_marks(docs, scenes_with(used), dropped, audience),
                     audience)
    for slot, label in zip(plan.slots, lin.slot_labels, strict=True):
        slot_ids = set(slot.scene_ids) & used
        if slot_ids:
            marks = contributing_marks(docs, scenes_with(slot_ids), dropped, audience)
            assert_not_below(label, marks, audience)
    # every (collection, id) listed twice with different markings is reported to the operator
    named = {(c.scene[0], c.scene[1]) for c in getattr(found, "conflicts", ())}
    by_key: dict[tuple[str, str], list] = {}
    for d in docs:
        by_key.setdefault(key_of(d), []).append(effective(raw_markings(d, audience)))
    differing = {k for k, ms in by_key.items() if any(m != ms[0] for m in ms)}
    assert differing <= named


# --------------------------------------------------------------------------- owners, licences


@pytest.mark.parametrize(
    ("item", "asset", "owners", "licences"),
    [
        ("NLD", "NOR", {"NLD", "NOR"}, None),  # the asset's owner was dropped
        (None, None, None, {"CC-BY-4.0", "NLOD-2.0"}),  # two licences were joined into one
        ("NLD", "NLD", {"NLD"}, None),
    ],
)
def test_an_asset_marking_keeps_its_owner_and_licence(item, asset, owners, licences):
    a = marking("RESTRICTED", ["NLD", "NOR"], owner=item or "NLD", licence="CC-BY-4.0")
    b = marking("RESTRICTED", ["NLD", "NOR"], owner=asset or "NLD",
                licence="NLOD-2.0" if licences else "CC-BY-4.0")
    m = parse_marking({"properties": {"aquila:marking": a},
                       "assets": {"B04": {"aquila:marking": b}}})
    label = high_water_mark([m])
    assert label.owners == (owners or {a["owner"], b["owner"]})
    assert label.licences == (licences or {a["licence"], b["licence"]})


# --------------------------------------------------------------------------- end to end


def _docs(root: Path) -> list[tuple[Path, dict]]:
    return [(p, json.loads(p.read_text())) for p in sorted(root.glob("*/*/*.json"))]


def _link(root: Path, collection: str, path: Path, *, first: bool) -> None:
    """List ``path`` in the collection's item links, first or last."""
    cpath = root / collection / "collection.json"
    coll = json.loads(cpath.read_text())
    link = {"rel": "item", "href": "./" + path.relative_to(cpath.parent).as_posix(),
            "type": "application/geo+json"}
    coll["links"].insert(0, link) if first else coll["links"].append(link)
    cpath.write_text(json.dumps(coll))


def _edit(root: Path, item: str, **changes) -> tuple[Path, dict]:
    path = next(root.glob(f"*/{item}/{item}.json"))
    doc = json.loads(path.read_text())
    for name, value in changes.items():
        if name == "mark" and value is None:
            doc["properties"].pop("aquila:marking", None)
        elif name == "mark":
            doc["properties"]["aquila:marking"] = value
        elif name == "asset_mark":
            doc["assets"]["B04"]["aquila:marking"] = value
        else:
            doc[name] = value
    path.write_text(json.dumps(doc))
    return path, doc


def _copy(root: Path, item: str, name: str, *, first: bool, **changes) -> None:
    """A second item file beside ``item`` (same assets), listed first or last."""
    path, doc = _edit(root, item)
    doc = copy.deepcopy(doc)
    for k, v in changes.items():
        if k == "mark" and v is None:
            doc["properties"].pop("aquila:marking", None)
        elif k == "mark":
            doc["properties"]["aquila:marking"] = v
        else:
            doc[k] = v
    target = path.with_name(f"{name}.json")
    target.write_text(json.dumps(doc))
    _link(root, path.parent.parent.name, target, first=first)


STRICT = marking("RESTRICTED", ["NLD", "NOR"], ["AGRI"], "NOR", "NLOD-2.0")
LOOSE = marking("UNCLASSIFIED", ["NLD", "NOR", "USA"], [], "USA", "EULA")


@dataclass(frozen=True)
class Case:
    edit: Callable[[Path], None]
    audience: tuple[str, ...]
    absent: tuple[str, ...] = ()  # ids that must not be used (nor named to the audience)
    conflicts: dict[str, str] = field(default_factory=dict)  # item -> action (operator report)
    allow_unmarked: bool = False


CASES = {
    "same id twice, looser copy last": Case(
        lambda r: (_edit(r, NORTH_20, mark=STRICT), _copy(r, NORTH_20, "again", first=False,
                                                           mark=LOOSE)),
        ("NLD",), conflicts={NORTH_20: "stricter marking applied"},
    ),
    "same id twice, looser copy first": Case(
        lambda r: (_edit(r, NORTH_20, mark=STRICT), _copy(r, NORTH_20, "again", first=True,
                                                           mark=LOOSE)),
        ("NLD",), conflicts={NORTH_20: "stricter marking applied"},
    ),
    "same id twice, the stricter copy withholds it (listed first)": Case(
        lambda r: (_edit(r, NORTH_20, mark=STRICT), _copy(r, NORTH_20, "again", first=False,
                                                           mark=LOOSE)),
        ("NLD", "USA"), absent=(NORTH_20,), conflicts={NORTH_20: "withheld"},
    ),
    "same id twice, the stricter copy withholds it (listed last)": Case(
        lambda r: (_edit(r, NORTH_20, mark=STRICT), _copy(r, NORTH_20, "again", first=True,
                                                           mark=LOOSE)),
        ("NLD", "USA"), absent=(NORTH_20,), conflicts={NORTH_20: "withheld"},
    ),
    "same id twice, one copy unmarked": Case(
        lambda r: (_edit(r, NORTH_20, mark=LOOSE), _copy(r, NORTH_20, "again", first=False,
                                                          mark=None)),
        ("NLD",), absent=(NORTH_20,), conflicts={NORTH_20: "withheld"},
    ),
    "one id in two collections": Case(
        lambda r: (_edit(r, NORTH_20, mark=LOOSE), _edit(r, SOUTH_16, id=NORTH_20, mark=STRICT)),
        ("NLD",),
    ),
    "one acquisition under two ids, the looser kept": Case(
        lambda r: (_edit(r, NORTH_20, mark=STRICT),
                   _copy(r, NORTH_20, "zz", first=False, id=NORTH_20 + "_zz", mark=LOOSE)),
        ("NLD",), conflicts={NORTH_20 + "_zz": "stricter marking applied"},
    ),
    "one acquisition under two ids, the stricter withholds both": Case(
        lambda r: (_edit(r, NORTH_20, mark=STRICT),
                   _copy(r, NORTH_20, "zz", first=False, id=NORTH_20 + "_zz", mark=LOOSE)),
        ("NLD", "USA"), absent=(NORTH_20, NORTH_20 + "_zz"),
        conflicts={NORTH_20 + "_zz": "withheld"},
    ),
    "an asset marking with its own owner and licence": Case(
        lambda r: _edit(r, NORTH_20, mark=LOOSE, asset_mark=STRICT), ("NLD",),
    ),
    "an unmarked item (allowed as open data) whose asset is marked": Case(
        lambda r: _edit(r, NORTH_20, mark=None, asset_mark=STRICT), ("NLD", "USA"),
        absent=(NORTH_20,), allow_unmarked=True,
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_a_run_labels_its_products_with_the_stricter_marking(catalog_copy, tmp_path, name):
    case = CASES[name]
    root = catalog_copy
    for path, doc in _docs(root):  # every item open to the audience unless the case says not
        doc["properties"]["aquila:marking"] = marking("UNCLASSIFIED", CODES)
        path.write_text(json.dumps(doc))
    case.edit(root)
    docs = [d for _, d in _docs(root)]
    audience = Audience(frozenset(case.audience), allow_unmarked=case.allow_unmarked)
    out = tmp_path / "out"
    spec = make_spec_dict(root, out, bounds=BOUNDS, allow_unmarked=case.allow_unmarked)
    spec["audience"] = {"releasable_to": list(case.audience)}
    report = run_workflow(spec_from_dict(spec, base_dir=root), options=RunOptions(direct=True))
    assert report.status == "success", report.error
    used = set(report.scenes_used)
    assert not used & set(case.absent)
    dropped = dropped_map(report.duplicates)
    out_keys = withheld_keys(docs, audience) | {k for ks in dropped.values() for k in ks}

    def scenes_with(ids: set[str]) -> set[tuple[str, str]]:  # an id names every scene it may
        return {key_of(d) for d in docs if d["id"] in ids} - out_keys

    label = expected_label(contributing_marks(docs, scenes_with(used), dropped, audience))
    seen = [(out / "test.run-report.json").read_text()]
    for store in ("cube.zarr", "mosaic.zarr"):
        attrs = json.loads((out / store / "zarr.json").read_text())["attributes"]
        stac = json.loads((out / f"{store}.stac.json").read_text())
        assert attrs["aquila:label"] == stac["properties"]["aquila:label"] == label, store
        seen += [json.dumps(attrs), json.dumps(stac)]
    cube = json.loads((out / "cube.zarr" / "zarr.json").read_text())["attributes"]
    mosaic = json.loads((out / "mosaic.zarr" / "zarr.json").read_text())["attributes"]
    for slot, slot_label in zip(mosaic["sources"], cube["aquila:slot_labels"], strict=True):
        if slot["scenes"]:
            marks = contributing_marks(docs, scenes_with(set(slot["scenes"])), dropped, audience)
            assert_not_below(slot_label, marks, audience)
    for item in case.absent:  # withheld: never named where the audience looks
        assert item not in "\n".join(seen)
    op = json.loads((out / "test.operator-report.json").read_text())
    assert {c["item"]: c["action"] for c in op.get("conflicts", ())} == case.conflicts
    assert set(case.absent) <= {w["item"] for w in op["withheld"]}


NIGHTLY = [
    "same id twice, looser copy last",
    "same id twice, the stricter copy withholds it (listed first)",
    "one id in two collections",
    "one acquisition under two ids, the looser kept",
    "one acquisition under two ids, the stricter withholds both",
]


@pytest.mark.parametrize("name", NIGHTLY)
def test_a_nightly_store_is_labelled_with_the_stricter_marking(catalog_copy, tmp_path, name):
    """The same cases through ``aquila nightly`` (Icechunk store, ledger, its own dedupe)."""
    from pipeline.engine.nightly import NightOptions, run_nightly

    case = CASES[name]
    root = catalog_copy
    for path, doc in _docs(root):
        doc["properties"]["aquila:marking"] = marking("UNCLASSIFIED", CODES)
        path.write_text(json.dumps(doc))
    case.edit(root)
    docs = [d for _, d in _docs(root)]
    audience = Audience(frozenset(case.audience))
    spec = make_spec_dict(root, tmp_path / "out", bounds=BOUNDS)
    spec["audience"] = {"releasable_to": list(case.audience)}
    store, operator = tmp_path / "night.icechunk", tmp_path / "night.operator-report.json"
    report = run_nightly(
        spec_from_dict(spec, base_dir=root),
        options=NightOptions(store=store, direct=True, operator_report_path=operator),
    )
    assert report.status == "success", report.error
    used = set(report.new)
    assert not used & set(case.absent)
    dropped = dropped_map(report.duplicates)
    out_keys = withheld_keys(docs, audience) | {k for ks in dropped.values() for k in ks}
    keys = {key_of(d) for d in docs if d["id"] in used} - out_keys
    label = expected_label(contributing_marks(docs, keys, dropped, audience))
    stac = json.loads(store.with_name(store.name + ".stac.json").read_text())
    assert stac["properties"]["aquila:label"] == report.labels["cube"] == label
    op = json.loads(operator.read_text())
    assert {c["item"]: c["action"] for c in op.get("conflicts", ())} == case.conflicts
