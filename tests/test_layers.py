"""The package layers: a package imports only the packages below it, and nothing but cli.py sits at the root."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "fedforget"
# Top to bottom: each package may import only those after it (ARCHITECTURE.md).
LAYERS = ("launch", "server", "reporting", "clients", "strategies", "unlearning", "learning", "data", "recon",
          "configs")


def imported_packages(path: Path) -> set[str]:
    """The fedforget packages a module imports (at any depth: deferred imports count too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                 else [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else [])
        for name in names:
            parts = name.split(".")
            if parts[0] == "fedforget" and len(parts) > 1:
                found.add(parts[1])
    return found


def test_every_package_is_a_known_layer() -> None:
    packages = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}
    assert packages == set(LAYERS)
    loose = {p.name for p in PACKAGE.glob("*.py")} - {"__init__.py", "cli.py"}
    assert not loose, f"modules at the package root: {sorted(loose)}"


def test_no_package_imports_one_above_it() -> None:
    upward = []
    for rank, layer in enumerate(LAYERS):
        allowed = {layer, *LAYERS[rank + 1:]}
        for module in sorted((PACKAGE / layer).rglob("*.py")):
            for imported in imported_packages(module) - allowed:
                upward.append(f"{module.relative_to(PACKAGE)} imports fedforget.{imported}")
    assert not upward, "\n".join(upward)


def test_the_layer_check_sees_an_upward_import(tmp_path: Path) -> None:
    module = tmp_path / "probe.py"
    module.write_text("def f():\n    from fedforget.server.phases import Session\n")
    assert imported_packages(module) == {"server"}
