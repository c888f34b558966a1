"""The layout's rules, checked from the source alone (AST, nothing imported):

- no import cycle between the project's modules (imports inside functions count: hiding a cycle in a function
  does not remove it);
- the layers point one way: manifests <- stages <- model <- pipeline (nothing imports a layer above its own);
- no source file over MAX_FILE_LINES lines and no function over MAX_FUNCTION_LINES lines;
- one definition each of the names in SINGLE_DEFINITIONS.

    python scripts/check_structure.py          # exit 1 and one line per problem when a rule is broken
"""

from __future__ import annotations

import ast
import sys
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("manifests", "stages", "model", "pipeline")        # lowest layer first
MAX_FILE_LINES = 400
MAX_FUNCTION_LINES = 80
SINGLE_DEFINITIONS = ("TASKS", "SPEECH_TASKS", "VIDEO_TASKS", "MEL_PER_AUDIO_FRAME", "VIDEO_FPS", "AUDIO_FPS",
                      "atomic_open", "temp_path", "publish", "fail", "PipelineError", "pick_device")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def source_files() -> dict[str, Path]:
    return {module_name(p): p for package in PACKAGES for p in sorted((REPO / package).rglob("*.py"))}


def imported_modules(tree: ast.AST, module: str, is_package: bool, known: set[str]) -> set[str]:
    """Project modules this module imports (`from a.b import c` counts as a.b.c when that is a module)."""
    found = set()
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".") if is_package else module.split(".")[:-1]
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            names = [f"{base}.{alias.name}" for alias in node.names] + [base]
        for name in names:
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name and name != module:
                found.add(name)
    return found


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    sys.setrecursionlimit(10_000)
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return cycles


def long_functions(tree: ast.AST) -> list[tuple[str, int, int]]:
    out = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            length = node.end_lineno - node.lineno + 1
            if length > MAX_FUNCTION_LINES:
                out.append((node.name, node.lineno, length))
    return out


def top_level_names(tree: ast.Module) -> set[str]:
    names = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return names


def check() -> list[str]:
    files = source_files()
    known = set(files)
    problems: list[str] = []
    graph: dict[str, set[str]] = {}
    definitions: dict[str, list[str]] = defaultdict(list)
    layer = {p: i for i, p in enumerate(PACKAGES)}
    for module, path in files.items():
        text = path.read_text()
        tree = ast.parse(text, filename=str(path))
        rel = path.relative_to(REPO)
        graph[module] = imported_modules(tree, module, path.name == "__init__.py", known)
        for target in sorted(graph[module]):
            if layer[target.split(".")[0]] > layer[module.split(".")[0]]:
                problems.append(f"{rel}: imports {target}, a layer above {module.split('.')[0]}")
        lines = len(text.splitlines())
        if lines > MAX_FILE_LINES:
            problems.append(f"{rel}: {lines} lines (at most {MAX_FILE_LINES})")
        for name, lineno, length in long_functions(tree):
            problems.append(f"{rel}:{lineno}: function {name} has {length} lines (at most {MAX_FUNCTION_LINES})")
        for name in top_level_names(tree) & set(SINGLE_DEFINITIONS):
            definitions[name].append(str(rel))
    for cycle in find_cycles(graph):
        problems.append("import cycle: " + " <-> ".join(cycle))
    for name in SINGLE_DEFINITIONS:
        if len(definitions[name]) > 1:
            problems.append(f"{name} is defined {len(definitions[name])} times: {', '.join(definitions[name])}")
    return problems


def main() -> int:
    problems = check()
    for line in problems:
        print(line)
    print(f"structure: {len(problems)} problem(s) in {len(source_files())} modules")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
