"""Fixtures of the adversarial battery: a good product to attack, and a rerun over it."""

from __future__ import annotations

import shutil

import pytest

from tests.adversarial.runs import aquila, write_spec


@pytest.fixture(scope="module")
def good(tiny_catalog, tmp_path_factory):
    """A good mosaic of the tiny catalog, made once per module: its products folder."""
    root = tmp_path_factory.mktemp("good")
    spec = write_spec(root / "spec.yaml", tiny_catalog.root, root / "out")
    done = aquila("run", str(spec), "--direct", "--no-progress")
    assert done.returncode == 0, done.stdout + done.stderr
    return root / "out"


@pytest.fixture()
def rerun(good, catalog_copy, tmp_path):
    """A workflow over a private catalog copy whose products folder holds the good product:
    (spec path, catalog copy, products folder)."""
    out = tmp_path / "out"
    shutil.copytree(good, out, symlinks=True)
    spec = write_spec(tmp_path / "spec.yaml", catalog_copy, out)
    return spec, catalog_copy, out
