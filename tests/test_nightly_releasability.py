"""Releasability in nightly runs: withheld items never reach the store, its ledger, the commit
metadata, the run report, the CLI output, logs or Dask task keys; only the operator report names
them. An ingested scene whose marking no longer admits the audience leaves the cube, counted but
not named."""

from __future__ import annotations

import json
import logging

import yaml

from pipeline.cli.main import main
from pipeline.products.transaction import NightlyStore, iter_groups
from tests.nightly_helpers import current, load
from tests.test_releasability import AUDIENCES, all_ids, marked, marked_spec  # noqa: F401


def _store_text(store) -> str:
    """Everything a nightly store says in words: attributes, ledger, commit metadata."""
    s = NightlyStore.open(store, create=False)
    session = current(store)
    parts = [json.dumps(load(session, g).attrs, default=str) for g in iter_groups(session)]
    state = s.state()
    parts.append(json.dumps([(e.id, e.scene.bands[0].href) for e in state.entries]))
    parts.append(json.dumps(state.slots))
    parts += [json.dumps(n.metadata) + n.message for n in s.nights()]
    return "\n".join(parts)


def test_withheld_items_stay_out_of_everything_the_audience_sees(
    marked,  # noqa: F811
    tmp_path,
    cluster,
    caplog,
    capsys,  # noqa: F811
):
    from distributed import get_task_stream

    root, server = marked
    audience, _ = AUDIENCES["nld-nor"]
    spec = marked_spec(root, tmp_path / "out", server.url, audience, chunk=64, resolution=20.0)
    spec["name"] = "leak"
    spec_file = tmp_path / "leak.yaml"
    spec_file.write_text(yaml.safe_dump(spec))
    store = tmp_path / "leak.icechunk"
    caplog.set_level(logging.INFO)
    args = [
        "nightly",
        str(spec_file),
        "--store",
        str(store),
        "--scheduler",
        cluster.scheduler.address,
        "--no-progress",
    ]
    with get_task_stream(cluster) as ts:
        assert main(args) == 0
    out = capsys.readouterr()
    report = json.loads((tmp_path / "leak.icechunk.night-report.json").read_text())
    withheld = all_ids(root) - set(report["new"])
    assert len(withheld) == 3 and report["withheld"] == 3
    seen = "\n".join(
        [
            out.out,
            out.err,
            caplog.text,
            json.dumps(report),
            _store_text(store),
            *(t["key"] for t in ts.data),
            *(line for _, line in cluster.get_scheduler_logs()),
            *(line for logs in cluster.get_worker_logs().values() for _, line in logs),
        ]
    )
    assert any(t["key"].startswith("aquila-leak-night-r") for t in ts.data)  # real targets
    assert all(i in seen for i in report["new"])
    for item in withheld:
        assert item not in seen, item
    operator = json.loads(
        (
            store.parent / "leak.icechunk.reports" / f"{report['run_id']}.operator-report.json"
        ).read_text()
    )
    assert {w["item"] for w in operator["withheld"]} == withheld

    # night 2: an ingested scene is now marked for another audience: it leaves the cube
    demoted = sorted(report["new"])[0]
    path = next(p for p in root.glob(f"*/{demoted}/{demoted}.json"))
    doc = json.loads(path.read_text())
    doc["properties"]["aquila:marking"]["releasable_to"] = ["DEU"]
    path.write_text(json.dumps(doc))
    assert main(args) == 0
    out = capsys.readouterr()
    second = json.loads((tmp_path / "leak.icechunk.night-report.json").read_text())
    assert second["removed_withheld"] == 1 and second["removed"] == []
    assert demoted not in json.dumps(second) + out.out + out.err
    session = current(store)
    for group in iter_groups(session):  # tonight's products do not name it
        assert demoted not in json.dumps(load(session, group).attrs, default=str), group
    assert demoted not in {e.id for e in NightlyStore.open(store, create=False).state().entries}
