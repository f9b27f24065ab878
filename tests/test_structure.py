"""The house stays as built: packages import one way, no private name crosses a module.

Every import in ``src/acmelb`` counts: at module level, inside functions and under
``TYPE_CHECKING`` (a deferred import hides a circle, it does not remove it). The
allowed direction between packages is the one each package's ``__init__.py`` states and
docs/architecture.md draws.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src"
PACKAGE = SRC / "acmelb"
# The ground floor, which every package may use: no package of its own.
GROUND = {"acmelb.errors", "acmelb.names", "acmelb.version"}
# Which package may import which (besides itself and the ground floor).
ALLOWED: dict[str, set[str]] = {
    "cli": {"acme", "doctor", "kube", "cluster", "fix", "lab"},
    "lab": {"cluster", "acme", "doctor"},
    "cluster": {"acme", "doctor"},
    "fix": {"kube", "doctor"},
    "kube": {"doctor"},
    "acme": {"doctor"},
    "doctor": set(),
}
# The facade re-exports the public API lazily; nothing inside imports it.
FACADE = {"acmelb", "acmelb.__main__"}
MAX_FUNCTION_LINES = 80
MAX_CLI_RUN_LINES = 40
MAX_TOP_MODULES = 6


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imported(module: str, path: Path) -> list[tuple[str, str | None, int]]:
    """(module imported, name taken from it or None, line) for every import in the file."""
    tree = ast.parse(path.read_text("utf-8"))
    is_package = path.name == "__init__.py"
    found: list[tuple[str, str | None, int]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((alias.name, None, node.lineno) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                here = module.split(".") if is_package else module.split(".")[:-1]
                here = here[: len(here) - (node.level - 1)]
                base = ".".join([*here, *([node.module] if node.module else [])])
            for alias in node.names:
                full = f"{base}.{alias.name}"
                if full in MODULES:
                    found.append((full, None, node.lineno))
                else:
                    found.append((base, alias.name, node.lineno))
    return [f for f in found if f[0] == "acmelb" or f[0].startswith("acmelb.")]


IMPORTS = {m: imported(m, p) for m, p in MODULES.items()}


def package_of(module: str) -> str:
    """``acmelb.doctor.checks.base`` -> ``doctor``; a ground-floor module -> itself."""
    parts = module.split(".")
    return parts[1] if len(parts) > 2 or module + ".__init__" in MODULES else module


def packages() -> set[str]:
    return {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists()}


def test_every_package_is_in_the_graph_and_documents_itself() -> None:
    assert packages() == set(ALLOWED), "a new package needs its row in ALLOWED"
    for name in packages():
        doc = ast.get_docstring(ast.parse((PACKAGE / name / "__init__.py").read_text("utf-8")))
        assert doc and "import" in doc, f"acmelb/{name}/__init__.py must say what it may import"


def test_the_top_holds_only_the_ground_floor_and_the_facade() -> None:
    top = [p.name for p in PACKAGE.glob("*.py")]
    assert len(top) <= MAX_TOP_MODULES, top
    assert {f"acmelb.{p[:-3]}" for p in top} <= GROUND | {"acmelb.__init__", "acmelb.__main__"}


def test_imports_between_packages_point_one_way() -> None:
    wrong: list[str] = []
    for module, found in IMPORTS.items():
        if module in FACADE:
            continue
        source = module.split(".")[1] if module.count(".") >= 1 else module
        for target, _, line in found:
            if target in GROUND or target.startswith("acmelb.version"):
                continue
            if target in FACADE:
                wrong.append(f"{module}:{line} imports the facade {target}")
                continue
            if module in GROUND:
                wrong.append(f"{module}:{line} (the ground floor) imports {target}")
                continue
            dest = target.split(".")[1]
            if dest != source and dest not in ALLOWED[source]:
                wrong.append(f"{module}:{line} ({source}) imports {target} ({dest})")
    assert not wrong, "\n".join(wrong)


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the graph, or None (depth-first, colours)."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_import_circle_between_packages_or_modules() -> None:
    by_package: dict[str, set[str]] = defaultdict(set)
    by_module: dict[str, set[str]] = defaultdict(set)
    for module, found in IMPORTS.items():
        if module in FACADE:
            continue
        for target, _, _ in found:
            if target in MODULES and target != module and target not in FACADE:
                by_module[module].add(target)
            a, b = package_of(module), package_of(target)
            if a != b and b not in FACADE:
                by_package[a].add(b)
    assert _cycle(by_package) is None, f"packages in a circle: {_cycle(by_package)}"
    # a package importing its own __init__ (the registry) from a submodule is not a circle
    # of modules when the __init__ only re-exports; every other module circle is one
    assert _cycle(by_module) is None, f"modules in a circle: {_cycle(by_module)}"


def test_no_private_name_is_taken_from_another_module() -> None:
    taken = [
        f"{module}:{line} takes {name} from {target}"
        for module, found in IMPORTS.items()
        for target, name, line in found
        if name and name.startswith("_") and not name.startswith("__") and target != module
    ]
    taken += [
        f"{module}:{line} uses {target}.{attr}"
        for module, path in MODULES.items()
        for target, attr, line in _private_attributes(module, path)
    ]
    assert not taken, "\n".join(taken)


def _private_attributes(module: str, path: Path) -> list[tuple[str, str, int]]:
    """``othermodule._name`` where ``othermodule`` was imported as a module here."""
    tree = ast.parse(path.read_text("utf-8"))
    aliases: dict[str, str] = {}
    for target, name, _ in IMPORTS[module]:
        if name is None:
            continue
        full = f"{target}.{name}"
        if full in MODULES:
            aliases[name] = full
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                if full in MODULES and alias.asname:
                    aliases[alias.asname] = full
    found = []
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in aliases
            and node.attr.startswith("_")
            and not node.attr.startswith("__")
        ):
            found.append((aliases[node.value.id], node.attr, node.lineno))
    return found


def _functions() -> list[tuple[str, str, int, int]]:
    out = []
    for module, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text("utf-8"))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                assert node.end_lineno is not None
                out.append((module, node.name, node.lineno, node.end_lineno - node.lineno + 1))
    return out


def test_no_function_is_over_80_lines() -> None:
    long = [f"{m}:{line} {name} has {n} lines" for m, name, line, n in _functions()]
    long = [
        text
        for text, (_, _, _, n) in zip(long, _functions(), strict=True)
        if n > MAX_FUNCTION_LINES
    ]
    assert not long, "\n".join(long)


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m.startswith("acmelb.cli.")))
def test_a_cli_run_parses_calls_and_renders_in_40_lines(module: str) -> None:
    long = [
        f"{name} at line {line}: {n} lines"
        for m, name, line, n in _functions()
        if m == module and (name == "run" or name.startswith("run_")) and n > MAX_CLI_RUN_LINES
    ]
    assert not long, "\n".join(long)
