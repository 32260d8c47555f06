"""A run's driver plans, starts the cluster and publishes; the chunk tasks' numba kernels (and
scipy, which numba loads) are the workers' business. Their imports cost the driver a few
tenths of a second before its cluster could start, in every run (pipeline/engine/jobs.py)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import yaml

from tests.conftest import make_spec_dict

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("numba", "scipy")


def _python(code: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=300, cwd=cwd)


def test_the_commands_modules_load_no_kernels(tmp_path):
    done = _python(f"""
        import sys
        import pipeline.cli.main, pipeline.cli.run, pipeline.cli.nightly, pipeline.cli.submit
        import pipeline.engine.run, pipeline.engine.nightly, pipeline.engine.bucket_run
        print(sorted(m for m in {HEAVY + ("rasterio",)!r} if m in sys.modules))
    """, tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_a_run_on_a_local_cluster_never_loads_the_kernels_in_the_driver(tmp_path,
                                                                         tiny_catalog):
    spec = make_spec_dict(tiny_catalog.root, tmp_path / "out", bounds=tiny_catalog.area_bounds)
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    report = tmp_path / "report.json"
    # a script file, not -c: the local cluster's worker processes are spawned and import the
    # parent's __main__, which the guard keeps from running the command again
    script = tmp_path / "drive.py"
    script.write_text(textwrap.dedent(f"""
        import json, sys
        from pipeline.cli.main import main

        if __name__ == "__main__":
            code = main(["run", {str(path)!r}, "--workers", "1", "--threads", "2",
                         "--no-progress", "--no-pictures", "--report", {str(report)!r}])
            print(json.dumps({{"code": code,
                              "loaded": sorted(m for m in {HEAVY!r} if m in sys.modules)}}))
    """))
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["code"] == 0, done.stderr
    assert json.loads(report.read_text())["status"] == "success"
    assert result["loaded"] == []  # the workers computed every chunk; the driver loaded none
