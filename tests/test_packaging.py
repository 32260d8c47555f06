"""A fresh ``make install`` builds Aquila with the tested installer and build backend, and the
package's metadata uses no form its build backend has announced it will stop reading.

setuptools warns that ``project.license`` as a TOML table (``{ text = "..." }``) is deprecated and
"by 2027-Feb-18" no longer supported; pip builds with the newest setuptools unless told
otherwise, so a fresh install after that day would fail to build. The license is an SPDX string
(setuptools >= 77), and build-constraints.txt pins pip and the build backend that were tested.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]


def pins(path: Path) -> dict[str, Version]:
    """``name==version`` lines of a constraints file (comments and blank lines skipped)."""
    found: dict[str, Version] = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        name, sep, version = line.partition("==")
        assert sep, f"{path.name}: {line!r} is not pinned with =="
        found[name.strip().lower()] = Version(version.strip())
    return found


def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_the_license_is_an_spdx_string_not_a_deprecated_table():
    license_ = pyproject()["project"]["license"]
    assert isinstance(license_, str), (
        f"project.license is {license_!r}: setuptools drops the table form by 2027-02-18; "
        "write an SPDX expression string"
    )
    assert re.fullmatch(r"[A-Za-z0-9.+-]+( (AND|OR|WITH) [A-Za-z0-9.+-]+)*", license_)


def test_the_pinned_build_backend_satisfies_the_build_system_and_reads_spdx_licenses():
    pinned = pins(ROOT / "build-constraints.txt")
    requires = [Requirement(r) for r in pyproject()["build-system"]["requires"]]
    for req in requires:
        assert req.name.lower() in pinned, f"build requirement {req} is not pinned"
        assert req.specifier.contains(pinned[req.name.lower()]), (
            f"build-constraints.txt pins {req.name}=={pinned[req.name.lower()]}, outside {req}"
        )
    setuptools = next(r for r in requires if r.name == "setuptools")
    assert not setuptools.specifier.contains(Version("76.9")), (
        "an SPDX license string needs setuptools >= 77 in [build-system] requires"
    )
    # make install passes --build-constraint, which pip has from 25.3 on (25.2: "no such
    # option"): an older pin would break the install while every other check here passed
    assert pinned["pip"] >= Version("25.3"), "make install needs pip >= 25.3 (--build-constraint)"


def test_make_install_uses_the_pins_for_pip_and_the_build():
    make = (ROOT / "Makefile").read_text()
    recipe = make.split("$(STAMP):", 1)[1].split("\n\n", 1)[0]
    assert "build-constraints.txt" in recipe.splitlines()[0], "the stamp must depend on the pins"
    assert re.search(r"pip install [^\n]*-c build-constraints\.txt --upgrade pip", recipe)
    assert re.search(r"-c constraints\.txt --build-constraint build-constraints\.txt", recipe)
    # the runtime pins never repeat the build pins (pip freeze leaves pip/setuptools/wheel out)
    runtime = pins(ROOT / "constraints.txt")
    assert not {"pip", "setuptools", "wheel"} & set(runtime)
