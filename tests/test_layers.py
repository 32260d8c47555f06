"""The package's layers point down (pyproject.toml [tool.importlinter], docs/ARCHITECTURE.md).

import-linter builds the import graph of ``pipeline`` (lazy imports inside functions included)
and checks the "Layers point down" contract: an upward arrow or a cycle between layers fails.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _lint(cwd: Path) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).with_name("lint-imports")
    return subprocess.run([str(exe)], cwd=cwd, capture_output=True, text=True, timeout=300)


def test_layers_point_down():
    result = _lint(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 kept, 0 broken" in result.stdout


def test_an_upward_import_breaks_the_contract(tmp_path):
    """The check can fail: a copy of the package with kernels importing the engine is refused."""
    import shutil

    shutil.copytree(ROOT / "pipeline", tmp_path / "pipeline",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    bad = tmp_path / "pipeline" / "kernels" / "upward.py"
    bad.write_text(textwrap.dedent("""
        def f():
            from pipeline.engine import run  # an arrow that points up
            return run
    """))
    env_path = str(tmp_path)
    result = subprocess.run(
        [str(Path(sys.executable).with_name("lint-imports"))], cwd=tmp_path,
        capture_output=True, text=True, timeout=300, env={"PYTHONPATH": env_path, "PATH": ""},
    )
    # a copy lint-imports cannot import would pass for the wrong reason: fail, never skip
    assert "No module named" not in result.stderr, result.stderr
    assert result.returncode != 0
    assert "pipeline.kernels.upward -> pipeline.engine" in result.stdout


# distribution name where it differs from the import name
_DISTRIBUTION = {"yaml": "pyyaml", "odc": "odc-geo", "pystac_client": "pystac-client"}


def test_every_import_of_the_package_is_a_declared_dependency():
    """A module the package imports but pyproject.toml does not declare works here by accident
    (another package pulled it in) and breaks a fresh install later."""
    import ast
    import re
    import tomllib

    declared = {
        re.split(r"[<>=!~ \[;]", d, maxsplit=1)[0].strip().lower().replace("_", "-")
        for d in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    }
    imported: dict[str, str] = {}
    for path in (ROOT / "pipeline").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module] if isinstance(node, ast.ImportFrom) and not node.level
                     and node.module else [])
            for name in names:
                top = name.split(".")[0]
                if top != "pipeline" and top not in sys.stdlib_module_names:
                    imported.setdefault(top, str(path.relative_to(ROOT)))
    missing = {m: where for m, where in imported.items()
               if _DISTRIBUTION.get(m, m).replace("_", "-").lower() not in declared}
    assert not missing, f"imported but not declared in pyproject.toml: {missing}"
