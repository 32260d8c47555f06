"""`aquila demo-catalog ROOT` replaces only what a previous generation wrote there."""

from __future__ import annotations

import subprocess
import sys

import pytest

AQUILA = [sys.executable, "-m", "pipeline.cli.main"]


@pytest.mark.parametrize(
    "theirs",
    [
        "north/notes.txt",  # a user's folder that happens to share a provider's name
        "catalog.json",  # somebody else's catalog
    ],
)
def test_a_folder_that_is_not_a_generated_catalog_is_refused_untouched(tmp_path, theirs):
    target = tmp_path / theirs
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text('{"type": "Catalog", "id": "theirs"}')
    done = subprocess.run(
        [*AQUILA, "demo-catalog", str(tmp_path), "--preset", "tiny"],
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and "not written by" in done.stderr
    assert target.read_text() == '{"type": "Catalog", "id": "theirs"}'
    assert sorted(p.name for p in tmp_path.rglob("*")) == sorted(
        {theirs.split("/")[0], target.name}
    )


def test_a_generated_catalog_is_regenerated_and_other_files_kept(tmp_path):
    from pipeline.demo import generate_catalog

    generate_catalog(tmp_path, preset="tiny")
    (tmp_path / "README.md").write_text("mine")
    first = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*.json"))
    generate_catalog(tmp_path, preset="tiny")  # the marker says the names are ours
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*.json")) == first
    assert (tmp_path / "README.md").read_text() == "mine"
