"""workflows/ and labels/ are pure: they never import Flask, SQLAlchemy or lab/.

workflows/ is the lowest layer: it uses the standard library only and never imports labels/;
labels/ may import workflows/ and adds the printing libraries (reportlab, qrcode) and nothing else.
"""

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PURE_PACKAGES = ("workflows", "labels")
PRINTING = ("reportlab", "qrcode")
FORBIDDEN = ("flask", "sqlalchemy", "lab", "werkzeug", "jinja2")


def _imports(path: Path) -> list[str]:
    """Top-level module names imported by ``path`` (relative imports stay in the package)."""
    names = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            names.extend(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append(node.module.split(".")[0])
    return names


def _sources() -> list[Path]:
    return sorted(p for package in PURE_PACKAGES for p in (ROOT / package).rglob("*.py"))


def test_the_pure_packages_have_sources():
    files = {p.relative_to(ROOT).as_posix() for p in _sources()}
    assert {
        "workflows/engine.py",
        "workflows/definition.py",
        "workflows/formula.py",
        "workflows/codes.py",
    } <= files


@pytest.mark.parametrize("path", _sources(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_no_web_or_database_import(path):
    bad = [name for name in _imports(path) if name in FORBIDDEN or name.startswith("flask_")]
    assert bad == [], f"{path.relative_to(ROOT)} imports {bad}"


@pytest.mark.parametrize("path", _sources(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_only_the_standard_library_and_pure_packages(path):
    allowed = set(sys.stdlib_module_names) | {"workflows", "__future__"}
    if path.is_relative_to(ROOT / "labels"):
        allowed |= {"labels", *PRINTING}
    assert [name for name in _imports(path) if name not in allowed] == []


def test_the_scanner_sees_a_forbidden_import(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text(
        "import flask_login\nfrom lab.models import Batch\nfrom sqlalchemy.orm import Session\n"
    )
    assert _imports(sample) == ["flask_login", "lab", "sqlalchemy"]
