"""The deployment files in cluster/ are valid and run a command that exists, as it is spelled."""

from __future__ import annotations

import configparser
import shlex
from pathlib import Path

import pytest
import yaml

from pipeline.cli.main import _parser

CLUSTER = Path(__file__).resolve().parents[1] / "cluster"


def _aquila_args(argv: list[str]) -> list[str]:
    """The arguments after the ``aquila`` executable (wherever it is installed)."""
    at = next(i for i, a in enumerate(argv) if Path(a).name == "aquila")
    return argv[at + 1 :]


def _parses(args: list[str]):
    parsed = _parser().parse_args(args)  # exits (SystemExit) on an unknown command or option
    assert parsed.command == "nightly"
    return parsed


def _unit(name: str) -> configparser.ConfigParser:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # systemd keys are case-sensitive
    unit.read_string((CLUSTER / name).read_text())
    return unit


def test_systemd_service_and_timer():
    service = _unit("aquila-nightly.service")
    assert service["Service"]["Type"] == "oneshot"
    parsed = _parses(_aquila_args(shlex.split(service["Service"]["ExecStart"])))
    assert parsed.store is not None and parsed.no_progress
    assert service["Service"]["SuccessExitStatus"].split() == ["75"]  # busy is not a failure
    timer = _unit("aquila-nightly.timer")
    assert timer["Timer"]["Unit"] == "aquila-nightly.service"
    assert timer["Timer"]["OnCalendar"] and timer["Timer"]["Persistent"] == "true"
    assert timer["Install"]["WantedBy"] == "timers.target"


def test_crontab_line():
    lines = [
        line
        for line in (CLUSTER / "crontab").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert len(lines) == 1
    fields = shlex.split(lines[0].split(">>")[0])
    minute, hour, dom, month, dow, *command = fields
    assert (minute, hour) == ("0", "3") and (dom, month, dow) == ("*", "*", "*")
    assert command[:2] == ["flock", "-n"]
    _parses(_aquila_args(command))


def test_kubernetes_cronjob_forbids_concurrent_runs():
    doc = yaml.safe_load((CLUSTER / "k8s-cronjob.yaml").read_text())
    assert doc["apiVersion"] == "batch/v1" and doc["kind"] == "CronJob"
    spec = doc["spec"]
    assert spec["concurrencyPolicy"] == "Forbid"
    assert len(spec["schedule"].split()) == 5
    pod = spec["jobTemplate"]["spec"]["template"]["spec"]
    assert pod["restartPolicy"] in ("Never", "OnFailure")
    (container,) = pod["containers"]
    assert container["command"][0] == "aquila"
    _parses(container["command"][1:])
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert any(
        container["command"][i + 1].startswith(tuple(mounts))
        for i, a in enumerate(container["command"])
        if a == "--store"
    )


@pytest.mark.parametrize(
    "name", ["aquila-nightly.service", "aquila-nightly.timer", "crontab", "k8s-cronjob.yaml"]
)
def test_deployment_files_exist(name):
    assert (CLUSTER / name).is_file()


def test_help_documents_the_busy_exit_code():
    import subprocess
    import sys

    for args in (["--help"], ["nightly", "--help"]):
        out = subprocess.run(
            [sys.executable, "-m", "pipeline.cli.main", *args],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert "75 busy" in " ".join(out.split()), args
