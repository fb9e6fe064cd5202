"""The layout of netfw/ (README, "Layout"): subsystem folders in layers, each importing only itself and the layers
below it, so that the tree shows the architecture and keeps showing it; and modules small enough to read whole."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "netfw"

#: Bottom first. A unit is a folder (netfw/<folder>/) or a module of netfw/ itself. A module may import its own
#: unit and the units of lower layers, never one of its own layer or above.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("netfw", "netfw.errors", "netfw.runner", "netfw.transaction"),  # netfw: the package's __init__ (__version__)
    ("netfw.model",),
    ("netfw.rules",),
    ("netfw.kernel",),
    ("netfw.state",),
    ("netfw.steps",),
    ("netfw.plan",),
    ("netfw.api",),
    ("netfw.observe", "netfw.opennebula"),
    ("netfw.cli",),
    ("netfw.entry",),
)
RANK = {unit: rank for rank, units in enumerate(LAYERS) for unit in units}

#: Longest module and function, in lines (issue 24), and the ones the README's layout section says are clearer whole.
MAX_MODULE_LINES, MAX_FUNCTION_LINES = 300, 60
CLEARER_WHOLE: dict[str, int] = {}


def modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def name_of(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def unit_of(module: str) -> str:
    """netfw.<folder> for what is in a folder, netfw.<module> for a module of netfw/, netfw for the package itself
    (and a name its __init__ defines, such as __version__)."""
    parts = module.split(".")
    if len(parts) > 1 and ((PACKAGE / parts[1]).is_dir() or (PACKAGE / f"{parts[1]}.py").exists()):
        return ".".join(parts[:2])
    return "netfw"


def imported(path: Path) -> set[str]:
    """Every netfw module path imports (at the top or inside a function), resolved."""
    me = name_of(path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target == "netfw" or target.startswith("netfw."):
                # `from netfw.x import y`: y may be a module of x; its unit is x's in either case but for netfw itself
                found |= {f"{target}.{a.name}" for a in node.names} if target == "netfw" else {target}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("netfw")}
    return found


def test_every_unit_has_a_layer():
    units = {unit_of(name_of(p)) for p in modules()}
    assert units <= set(RANK), f"give these a layer in LAYERS (and a line in the README): {sorted(units - set(RANK))}"


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(PACKAGE.parent)))
def test_a_module_imports_only_its_unit_and_the_layers_below(path):
    mine = unit_of(name_of(path))
    wrong = sorted(t for t in imported(path)
                   if (u := unit_of(t)) != mine and u != "netfw" and RANK.get(u, 99) >= RANK[mine])
    assert not wrong, f"{name_of(path)} ({mine}, layer {RANK[mine]}) imports {wrong}"


def test_every_folder_says_what_it_owns_and_may_import():
    for init in sorted(PACKAGE.glob("*/__init__.py")):
        doc = ast.get_docstring(ast.parse(init.read_text())) or ""
        assert "May import" in doc, f"{init.relative_to(PACKAGE.parent)}: its docstring says what it may import"


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(PACKAGE.parent)))
def test_modules_and_functions_are_short(path):
    rel = str(path.relative_to(PACKAGE.parent))
    lines = len(path.read_text().splitlines())
    assert lines <= CLEARER_WHOLE.get(rel, MAX_MODULE_LINES), f"{rel}: {lines} lines"
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            length = node.end_lineno - node.lineno + 1
            assert length <= MAX_FUNCTION_LINES, f"{rel}: {node.name} has {length} lines"
