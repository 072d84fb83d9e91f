"""The package's floors: the library never imports a command-line module, and no import circle exists.

Every import inside ``src/switchbert`` counts, lazy ones (inside functions) included: a lazy import
still couples the modules, it only hides the circle until run time.
"""

from __future__ import annotations

import ast
from pathlib import Path

import switchbert

PACKAGE = Path(switchbert.__file__).resolve().parent


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def _imports(modules: dict[str, Path]) -> dict[str, set[str]]:
    """module -> the switchbert modules it imports (``from a.b import c`` counts a.b, and a.b.c when a module)."""
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            targets.update(n for n in names if n in modules and n != name)
        graph[name] = targets
    return graph


def _is_command(module: str) -> bool:
    return module == "switchbert.cli" or module.startswith("switchbert.commands")


# Known exceptions, each to be removed by the change named beside it; nothing else may join them.
ALLOWED_CIRCLE_EDGES: set[tuple[str, str]] = set()  # none: keep it so


def test_every_command_line_module_lives_under_commands():
    stray = [m for m in _modules() if m.endswith(".cli") and m != "switchbert.cli"]
    assert stray == [], f"CLI modules outside switchbert/commands/: {stray}"


def test_the_library_never_imports_a_command_line_module():
    graph = _imports(_modules())
    upward = sorted((a, b) for a, targets in graph.items() for b in targets
                    if _is_command(b) and not _is_command(a) and a != "switchbert.__main__")
    assert upward == [], f"library modules importing command-line modules: {upward}"


def _cycle(graph: dict[str, set[str]]) -> list[str]:
    """One import circle as a list of modules (first == last), or [] when there is none."""
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done
    stack: list[str] = []

    def visit(m: str) -> list[str]:
        state[m] = 1
        stack.append(m)
        for n in sorted(graph.get(m, ())):
            # A package's __init__ importing its own submodules is how packages re-export: not a circle.
            if n.startswith(m + "."):
                continue
            if state.get(n) == 1:
                return stack[stack.index(n):] + [n]
            if n not in state:
                found = visit(n)
                if found:
                    return found
        stack.pop()
        state[m] = 2
        return []

    for m in sorted(graph):
        if m not in state:
            found = visit(m)
            if found:
                return found
    return []


def test_no_import_circle():
    graph = _imports(_modules())
    for a, b in ALLOWED_CIRCLE_EDGES:
        graph[a].discard(b)
    assert _cycle(graph) == []


def test_the_circle_finder_finds_a_circle():
    # The check above must be able to fail: a hand-made graph with a circle through three modules.
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) == []
