"""Dependencies point inward: connector -> webhooks -> storage; storage and webhooks never import upward."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = {
    "storage": {"connector", "webhooks", "flask", "connexion", "starlette", "werkzeug"},
    "webhooks": {"connector", "flask", "connexion", "starlette", "werkzeug"},
}


def imported_packages(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_does_not_import_upward(package: str) -> None:
    """No module of `package` imports a package above it or the web framework."""
    offenders = {
        str(path.relative_to(ROOT)): sorted(imported_packages(path) & FORBIDDEN[package])
        for path in (ROOT / package).rglob("*.py")
        if imported_packages(path) & FORBIDDEN[package]
    }
    assert offenders == {}


def test_the_scan_sees_imports() -> None:
    """The scanner itself finds an upward import, so the check above can fail."""
    sample = ROOT / "connector" / "app.py"
    assert {"storage", "connexion"} <= imported_packages(sample)
