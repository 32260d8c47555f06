"""A CLI that fits in scripts: ``--version``, ``-q``/``-v``, ``--json`` on every command (one
document on stdout, human text on stderr), and exit codes documented per command. The real
console script runs in a subprocess on the tiny demo catalog (``--direct``: no cluster)."""

from __future__ import annotations

import json
import logging
import re
import subprocess
from pathlib import Path

import pytest
import yaml

import pipeline
from pipeline.cli.main import _parser, main
from pipeline.products.report import (
    EXIT_BAD_INPUT,
    EXIT_BUSY,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_PARTIAL,
)
from tests.adversarial.runs import BOUNDS, aquila, write_spec

ALL_CODES = {EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_PARTIAL, EXIT_BUSY, EXIT_INTERRUPTED}
COMMANDS = [["run"], ["validate"], ["quicklook"], ["demo-catalog"], ["catalog", "inspect"],
            ["nightly"], ["history"]]


def _document(done: subprocess.CompletedProcess) -> dict | list:
    """stdout as exactly one JSON document (json.loads refuses anything around it)."""
    assert done.stdout.strip(), done.stderr
    return json.loads(done.stdout)


@pytest.fixture(scope="module")
def work(tiny_catalog, tmp_path_factory) -> Path:
    """A folder with a mosaic-only spec over the tiny catalog (``spec.yaml``)."""
    folder = tmp_path_factory.mktemp("cli-fits")
    write_spec(folder / "spec.yaml", tiny_catalog.root, folder)
    return folder


@pytest.fixture(scope="module")
def json_run(work) -> tuple[subprocess.CompletedProcess, dict]:
    done = aquila("run", str(work / "spec.yaml"), "--direct", "--json",
                  "--report", str(work / "json.run-report.json"))  # other runs here: their own
    return done, _document(done)


# --------------------------------------------------------------------------- --version, -q, -v


def test_version_is_the_packages():
    done = aquila("--version")
    assert done.returncode == EXIT_OK
    assert done.stdout == f"aquila {pipeline.__version__}\n"


def test_quiet_run_prints_nothing_but_the_progress_bar_is_there_without_it(work, json_run):
    done = aquila("-q", "run", str(work / "spec.yaml"), "--direct")
    assert done.returncode == EXIT_OK, done.stderr
    assert done.stdout == "" and done.stderr == ""  # no bar, no summary, no warning
    # the same run without -q draws the bar (on stderr, stdout holding JSON): -q removed it
    loud, _ = json_run
    assert "chunks" in loud.stderr and "16/16" in loud.stderr


def test_a_quiet_partial_run_still_says_so_in_one_line(catalog_copy, tmp_path):
    asset = sorted((catalog_copy / "north").rglob("*.tif"))[0]
    asset.write_bytes(b"not a GeoTIFF" * 100)  # found at ingest, unreadable at the read: partial
    spec = write_spec(tmp_path / "spec.yaml", catalog_copy, tmp_path)
    done = aquila("-q", "run", str(spec), "--direct")
    assert done.returncode == EXIT_PARTIAL, done.stderr
    assert done.stdout == ""
    assert done.stderr.splitlines() == [
        "partial products written without the scenes that could not be read: see "
        f"{tmp_path / 'test.run-report.json'}"
    ]


def test_quiet_after_the_command_and_quiet_json(work):
    done = aquila("validate", str(work / "spec.yaml"), "-q", "--json")
    assert done.returncode == EXIT_OK and done.stderr == ""
    assert _document(done)["status"] == "valid"


def test_verbose_logs_debug_on_stderr_and_not_with_quiet(work):
    done = aquila("-v", "validate", str(work / "spec.yaml"), "--json")
    assert done.returncode == EXIT_OK
    assert "DEBUG pipeline.cli:" in done.stderr
    _document(done)  # the log stays off stdout
    both = aquila("-v", "-q", "validate", str(work / "spec.yaml"))
    assert both.returncode == EXIT_BAD_INPUT
    assert "contradict" in both.stderr and both.stdout == ""


def test_logging_is_configured_once_per_process(work, capsys):
    """main() twice in one process (as tests and notebooks do): one handler, not two."""
    for _ in range(2):
        assert main(["-q", "validate", str(work / "spec.yaml")]) == EXIT_OK
    cli_handlers = [h for h in logging.getLogger("pipeline").handlers
                    if isinstance(h, logging.StreamHandler)]
    assert len(cli_handlers) == 1
    assert capsys.readouterr().out == ""


# --------------------------------------------------------------------------- --json per command


def test_run_json_is_the_run_report_and_its_exit_code(work, json_run):
    done, doc = json_run
    assert done.returncode == EXIT_OK == doc["exit_code"]
    assert doc["status"] == "success" and doc["workflow"] == "test"
    path = work / "json.run-report.json"
    on_disk = json.loads(path.read_text())
    assert {k: v for k, v in doc.items() if k not in ("exit_code", "products")} == {
        k: v for k, v in on_disk.items() if k != "products"
    }
    assert doc["products"] == on_disk["products"] | {"report": str(path)}  # where it went
    # the human text went to stderr
    assert "scenes: 6 usable" in done.stderr and "plan:" in done.stderr


def test_a_failed_run_json_still_says_status_and_exit_code(tiny_catalog, tmp_path):
    spec = write_spec(tmp_path / "empty.yaml", tiny_catalog.root, tmp_path,
                      datetime="2020-01-01/2020-01-31")  # no scene
    done = aquila("run", str(spec), "--direct", "--json")
    doc = _document(done)
    assert done.returncode == EXIT_BAD_INPUT == doc["exit_code"]
    assert doc["status"] == "bad_input" and "no_scenes" in doc["error"]
    assert "no_scenes" in done.stderr  # the one line for a human


def test_a_spec_error_json_names_the_key(tiny_catalog, tmp_path):
    spec = write_spec(tmp_path / "typo.yaml", tiny_catalog.root, tmp_path)
    doc = yaml.safe_load(spec.read_text())
    doc["grid"]["chunks"] = doc["grid"].pop("chunk")
    spec.write_text(yaml.safe_dump(doc))
    for command, *flags in (["run", "--direct"], ["validate"], ["nightly", "--direct"]):
        done = aquila(command, str(spec), "--json", *flags)
        out = _document(done)
        assert done.returncode == EXIT_BAD_INPUT == out["exit_code"], command
        assert out["command"] == command and out["status"] == "bad_input"
        assert "grid.chunks" in out["error"] and "grid.chunks" in done.stderr


def test_a_usage_error_with_json_is_a_document_too():
    done = aquila("run", "spec.yaml", "--no-such-flag", "--json")
    assert done.returncode == EXIT_BAD_INPUT
    assert "--no-such-flag" in _document(done)["error"]
    assert "usage: aquila" in done.stderr


def test_validate_json_names_the_spec(work):
    done = aquila("validate", str(work / "spec.yaml"), "--json")
    doc = _document(done)
    assert done.returncode == EXIT_OK == doc["exit_code"] and done.stderr == ""
    assert doc["spec"] == str(work / "spec.yaml") and doc["workflow"] == "test"
    assert doc["resolved"]["grid"]["bounds"] == list(BOUNDS)


def test_quicklook_json(work, json_run):
    png = work / "q.png"
    done = aquila("quicklook", str(work / "mosaic.zarr"), str(png), "--step", "4", "--json")
    doc = _document(done)
    assert done.returncode == EXIT_OK == doc["exit_code"]
    assert doc["png"] == str(png) and png.stat().st_size > 0


def test_demo_catalog_json(tmp_path):
    done = aquila("demo-catalog", str(tmp_path / "cat"), "--preset", "tiny", "--json")
    doc = _document(done)
    assert done.returncode == EXIT_OK == doc["exit_code"] and done.stderr == ""
    items = list((tmp_path / "cat").rglob("*.json"))
    assert doc["scenes"] == 6 == len(items) - 1 - len(doc["collections"])  # catalog, collections
    assert Path(doc["catalog"]) == tmp_path / "cat" / "catalog.json"


def test_catalog_inspect_json(tiny_catalog):
    done = aquila("catalog", "inspect", str(tiny_catalog.catalog_href), "--json")
    doc = _document(done)
    assert done.returncode == EXIT_OK
    assert doc["items_found"] == len(tiny_catalog.scenes) == doc["normalised"]
    assert {c["collection"] for c in doc["collections"]} == {"north", "south", "east"}


def test_nightly_and_history_json(work, tmp_path):
    store = tmp_path / "n.icechunk"
    done = aquila("nightly", str(work / "spec.yaml"), "--store", str(store), "--direct",
                  "--json", "--retries", "2", "--http-timeout", "5")
    doc = _document(done)
    assert done.returncode == EXIT_OK == doc["exit_code"], done.stderr
    assert doc["status"] == "success" and len(doc["new"]) == 6
    assert "catalog: 6 items" in done.stderr  # the commentary, on stderr
    hist = aquila("--json", "history", str(store))
    nights = _document(hist)
    assert hist.returncode == EXIT_OK
    assert [n["run_id"] for n in nights] == [doc["run_id"]]


@pytest.mark.parametrize("where", ["empty", "missing"])
def test_history_of_no_store_is_one_line_and_one_document(tmp_path, where):
    store = tmp_path if where == "empty" else tmp_path / "nothing.icechunk"
    done = aquila("history", str(store), "--json")
    doc = _document(done)
    assert done.returncode == EXIT_BAD_INPUT == doc["exit_code"]
    assert doc["command"] == "history" and doc["reason"] == "product_missing"
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("error [product_missing] no nightly")


# --------------------------------------------------------------------------- exit codes, flags


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_every_command_documents_its_exit_codes(command):
    done = aquila(*command, "--help")
    assert done.returncode == EXIT_OK
    block = done.stdout.split("exit codes:\n", 1)[1]
    codes = {int(c) for c in re.findall(r"^  (\d+) ", block, re.M)}
    assert EXIT_OK in codes and EXIT_BAD_INPUT in codes and codes <= ALL_CODES
    if command in (["run"], ["nightly"]):
        assert codes == ALL_CODES
    for flag in ("--json", "-q, --quiet", "-v, --verbose"):
        assert flag in done.stdout


def test_the_readme_exit_code_table_is_the_constants():
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme.split("### Exit codes", 1)[1].split("\n#", 1)[0]
    rows = {int(c) for c in re.findall(r"^\| `(\d+)` \|", section, re.M)}
    assert rows == ALL_CODES


def test_global_options_go_before_or_after_the_command():
    parser = _parser()
    for argv in (["-q", "--json", "run", "s.yaml"], ["run", "s.yaml", "-q", "--json"]):
        args = parser.parse_args(argv)
        assert args.quiet and args.json and not args.verbose
    assert not parser.parse_args(["run", "s.yaml"]).json


def test_run_passes_retries_and_http_timeout_to_the_reader():
    from pipeline.cli.common import reader_settings

    args = _parser().parse_args(["run", "s.yaml", "--retries", "3", "--http-timeout", "2.5"])
    settings = reader_settings(args)
    assert settings.retry.attempts == 3 and settings.http_timeout_s == 2.5
    default = reader_settings(_parser().parse_args(["run", "s.yaml"]))
    assert default.retry.attempts == 5 and default.http_timeout_s == 30.0


@pytest.mark.parametrize("flag,value", [("--retries", "0"), ("--http-timeout", "0"),
                                        ("--http-timeout", "nan")])
def test_reader_flags_refuse_values_that_cannot_work(flag, value, capsys):
    with pytest.raises(SystemExit) as stop:
        _parser().parse_args(["run", "s.yaml", flag, value])
    assert stop.value.code == EXIT_BAD_INPUT
    assert f"argument {flag}" in capsys.readouterr().err


def test_quiet_silences_every_command_that_succeeds(work, json_run, tiny_catalog, tmp_path):
    """-q on every command but run (tested above): nothing on stdout or stderr on success;
    the same commands without -q do say something (so the check can fail)."""
    store = tmp_path / "q.icechunk"
    commands = [
        ["validate", str(work / "spec.yaml")],
        ["quicklook", str(work / "mosaic.zarr"), str(tmp_path / "q.png"), "--step", "4"],
        ["demo-catalog", str(tmp_path / "cat"), "--preset", "tiny"],
        ["catalog", "inspect", str(tiny_catalog.catalog_href)],
        ["nightly", str(work / "spec.yaml"), "--store", str(store), "--direct"],
        ["history", str(store)],
    ]
    for argv in commands:
        quiet = aquila("-q", *argv)
        assert quiet.returncode == EXIT_OK, (argv, quiet.stderr)
        assert (quiet.stdout, quiet.stderr) == ("", ""), argv
    loud = aquila("history", str(store))
    assert loud.returncode == EXIT_OK and loud.stdout.strip()
