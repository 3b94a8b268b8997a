"""The packages' layering: every import of a project package points down, never up or sideways between peers."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ALLOWED = {
    "core": set(),
    "modules": {"core"},
    "datamodules": {"core"},
    "callbacks": {"core", "modules", "datamodules"},
    "lightning_app": {"core", "modules", "datamodules", "callbacks"},
}
"""Which project packages each package may import: ``core`` is the bottom; networks (``modules``) and data
(``datamodules``) are peers that share only ``core``; callbacks sit on them; the commands on everything."""
PROJECT = set(ALLOWED) | {"benchmarks", "tests", "cli"}


def imported_packages(file: Path) -> set[tuple[str, int]]:
    """``(top-level project package, line)`` for every import in ``file``, inside functions and
    ``TYPE_CHECKING`` blocks too; relative imports count as the file's own package."""
    found = set()
    for node in ast.walk(ast.parse(file.read_text(), str(file))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [node.module or ""] if node.level == 0 else []
        else:
            continue
        found |= {(name.split(".")[0], node.lineno) for name in names if name.split(".")[0] in PROJECT}
    return found


def test_the_walk_sees_imports_an_upward_arrow_would_use(tmp_path):
    source = tmp_path / "example.py"
    source.write_text("import os\nfrom core.errors import UserFacingError\n\ndef f():\n    from lightning_app.cli import AnimatorCLI\n")
    assert imported_packages(source) == {("core", 2), ("lightning_app", 5)}


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_imports_point_down(package):
    files = sorted((ROOT / package).glob("**/*.py"))
    assert files, f"no files under {package}/"
    wrong = [f"{file.relative_to(ROOT)}:{line} imports {imported}"
             for file in files for imported, line in sorted(imported_packages(file))
             if imported != package and imported not in ALLOWED[package]]
    assert not wrong, f"{package}/ may import only {sorted(ALLOWED[package]) or 'no project package'}:\n" + "\n".join(wrong)
