"""Logs an operator can use: one line per event with run id, workflow and mode, as JSON lines
for log shippers (``--log-format json``), and never a withheld scene's id.

The real console script runs on a private copy of the tiny demo catalog (``--direct``)."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from tests.adversarial.runs import aquila, write_spec
from tests.arrivals import item_files

OPEN = {"classification": "UNCLASSIFIED", "releasable_to": ["NLD"], "caveats": [],
        "owner": "NLD", "licence": "CC-BY-4.0"}
FOREIGN = OPEN | {"releasable_to": ["USA"]}  # not releasable to the spec's audience (NLD)


def _lines(stderr: str) -> list[dict]:
    """Every stderr line as JSON (json.loads refuses a line that is not one object)."""
    return [json.loads(line) for line in stderr.splitlines() if line.strip()]


def test_json_log_lines_carry_the_run_and_never_a_withheld_id(catalog_copy, tmp_path):
    items = item_files(catalog_copy)
    foreign = sorted(items)[:2]
    for item_id, path in items.items():
        doc = json.loads(path.read_text())
        doc["properties"]["aquila:marking"] = FOREIGN if item_id in foreign else OPEN
        path.write_text(json.dumps(doc))
    spec = write_spec(tmp_path / "spec.yaml", catalog_copy, tmp_path / "out", name="logs")
    doc = yaml.safe_load(spec.read_text())
    doc["audience"] = {"releasable_to": ["NLD"]}
    spec.write_text(yaml.safe_dump(doc))

    done = aquila("--log-format", "json", "-v", "run", str(spec), "--direct", "--no-progress")
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "out" / "logs.run-report.json").read_text())
    assert report["withheld"] == len(foreign)
    lines = _lines(done.stderr)
    events = {line["event"]: line for line in lines if line.get("logger") == "pipeline.events"}
    assert {"discovered", "withheld", "planned", "finished"} <= set(events)
    for line in events.values():
        assert line["run_id"] == report["run_id"]
        assert line["workflow"] == "logs" and line["mode"] == "run" and line["level"]
    assert events["finished"]["status"] == "success" and events["finished"]["exit_code"] == 0
    assert events["withheld"]["message"].startswith(f"withheld: {len(foreign)} item(s)")
    # the withheld ids are in the operator report, and nowhere in what the run printed
    operator = (tmp_path / "out" / "logs.operator-report.json").read_text()
    assert all(i in operator for i in foreign)
    for i in foreign:
        assert i not in done.stderr and i not in done.stdout


def test_text_logs_keep_the_console_clean_and_verbose_adds_the_context(tiny_catalog, tmp_path):
    spec = write_spec(tmp_path / "spec.yaml", tiny_catalog.root, tmp_path / "out", name="txt")
    plain = aquila("run", str(spec), "--direct", "--no-progress")
    assert plain.returncode == 0 and "pipeline.events" not in plain.stderr
    verbose = aquila("-v", "run", str(spec), "--direct", "--no-progress")
    finished = [line for line in verbose.stderr.splitlines()
                if line.startswith("INFO pipeline.events: finished")]
    assert len(finished) == 1 and "event=finished" in finished[0]
    assert "workflow=txt" in finished[0] and "run_id=" in finished[0]
    assert Path(tmp_path / "out" / "mosaic.zarr").exists()
