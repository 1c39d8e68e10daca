"""The package's shape (README, Architecture): a folder a stage, imports only down the stages, no import circle,
no folder of more than 15 modules. Every import counts, those inside functions too."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "synthaug"
# README's Architecture order, top to bottom: a module may import its own stage and those before it
STAGES = ("core", "diffusion", "models", "config", "pools", "data", "generation", "training", "stats", "analysis",
          "sweep", "study")
MAX_MODULES = 15


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _imports(path: Path, modules: dict[str, Path]) -> set[str]:
    """The synthaug modules `path` imports, anywhere in it."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "synthaug":
            for alias in node.names:
                name = f"{node.module}.{alias.name}"
                found.add(name if name in modules else node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name in modules}
    return found - {"synthaug"}


def _stage(module: str) -> int:
    parts = module.split(".")
    return STAGES.index(parts[1])


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(path, modules) - {name} for name, path in modules.items()}


def test_every_module_sits_in_a_stage_folder_of_at_most_15_modules():
    modules = _modules()
    loose = [m for m in modules if m.count(".") == 1 and m != "synthaug.config" and not (PACKAGE / m.split(".")[1]).is_dir()]
    assert loose == [], f"modules outside a stage folder: {loose}"
    assert {m.split(".")[1] for m in modules if m != "synthaug"} == set(STAGES)
    for folder in {p.parent for p in PACKAGE.rglob("*.py")} - {PACKAGE}:
        count = len([p for p in folder.glob("*.py") if p.name not in ("__init__.py", "__main__.py")])
        assert count <= MAX_MODULES, f"{folder.relative_to(PACKAGE.parent)}: {count} modules"


def test_imports_go_down_the_stages_only():
    upward = [f"{a} -> {b}" for a, targets in _graph().items() if a != "synthaug" for b in targets
              if _stage(b) > _stage(a)]
    assert upward == []


def test_no_module_imports_one_that_imports_it_back():
    graph = _graph()
    state: dict[str, int] = {}          # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path + [node, nxt]
            if nxt not in state:
                found = visit(nxt, path + [node])
                if found:
                    return found
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state:
            circle = visit(start, [])
            assert circle is None, " -> ".join(circle)
