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
    module.write_text("def f():\n    from fedforget.server.recorder import Recorder\n")
    assert imported_packages(module) == {"server"}


# Figure code lays out panels one by one; everywhere else a function that long holds several steps.
LONG_FUNCTION_EXEMPT = {"reporting/figures.py"}
MAX_FUNCTION_LINES = 60


def test_no_function_outside_figure_code_is_longer_than_sixty_lines() -> None:
    long = []
    for module in sorted(PACKAGE.rglob("*.py")):
        if str(module.relative_to(PACKAGE)) in LONG_FUNCTION_EXEMPT:
            continue
        for node in ast.walk(ast.parse(module.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{module.relative_to(PACKAGE)}:{node.lineno} {node.name} ({lines} lines)")
    assert not long, "\n".join(long)


def test_only_the_atomic_write_module_renames_files_into_place() -> None:
    renaming = [str(module.relative_to(PACKAGE)) for module in sorted(PACKAGE.rglob("*.py"))
                if "os.replace" in module.read_text() and module.relative_to(PACKAGE) != Path("configs/atomic.py")]
    assert not renaming, f"write through fedforget.configs.atomic instead: {renaming}"
