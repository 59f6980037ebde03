"""The shape of the package: no import cycles, imports at module top, small files, one training step."""
from __future__ import annotations

import ast
import re
from pathlib import Path

from tests.support import REPO

PACKAGE = REPO / "side4video"
MAX_LINES = 600
# external modules a function may import on first use, deliberately (heavy, optional, or needing the accelerator
# environment set first); the import line (or the one above it) says why, with the word "deferred"
DEFERRABLE = ("deepspeed", "decord", "av", "torchcodec", "matplotlib", "timm", "onnx", "onnxruntime", "webdataset",
              "tensorboard", "torch.utils.tensorboard", "PIL", "safetensors", "open_clip", "scipy")


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def _resolve(node: ast.ImportFrom, current: str, is_package: bool, modules: dict[str, Path]) -> list[str]:
    if node.level:
        base = current.split(".") if is_package else current.split(".")[:-1]
        base = base[:len(base) - (node.level - 1)]
        prefix = ".".join(base + ([node.module] if node.module else []))
    else:
        prefix = node.module or ""
    targets = []
    for alias in node.names:
        candidate = f"{prefix}.{alias.name}"
        targets.append(candidate if candidate in modules else prefix)
    return targets


def imports_of(path: Path, modules: dict[str, Path]) -> list[tuple[str, int, bool]]:
    """(imported module, line, at module top) for every import of a ``side4video`` module in ``path``."""
    current = module_name(path)
    tree = ast.parse(path.read_text())
    top_level = {id(node) for node in tree.body}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            names = _resolve(node, current, path.name == "__init__.py", modules)
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        for name in names:
            if name.split(".")[0] == "side4video":
                found.append((name, node.lineno, id(node) in top_level or _in_type_checking(tree, node)))
    return found


def _in_type_checking(tree: ast.Module, target: ast.AST) -> bool:
    for node in tree.body:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            if any(child is target for child in ast.walk(node)):
                return True
    return False


def import_graph() -> dict[str, set[str]]:
    modules = package_modules()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for target, _, _ in imports_of(path, modules):
            if target in modules and target != name:
                graph[name].add(target)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_the_package_import_graph_has_no_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, " -> ".join(cycle or [])


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_package_modules_are_imported_at_module_top():
    modules = package_modules()
    nested = [f"{path.relative_to(REPO)}:{line} imports {target}" for name, path in modules.items()
              for target, line, top in imports_of(path, modules) if not top]
    assert not nested, "\n".join(nested)


def test_deferred_imports_are_heavy_optional_dependencies_and_say_so():
    problems = []
    for path in sorted(PACKAGE.rglob("*.py")):
        lines = path.read_text().splitlines()
        tree = ast.parse("\n".join(lines))
        top_level = {id(node) for node in tree.body}
        for node in ast.walk(tree):
            if not isinstance(node, (ast.Import, ast.ImportFrom)) or id(node) in top_level or \
                    _in_type_checking(tree, node):
                continue
            name = node.module if isinstance(node, ast.ImportFrom) else node.names[0].name
            if not name or getattr(node, "level", 0):
                continue
            root = name.split(".")[0]
            said = "deferred" in lines[node.lineno - 1] or (node.lineno > 1 and "deferred" in lines[node.lineno - 2])
            if not any(name == d or name.startswith(d + ".") or root == d for d in DEFERRABLE) or not said:
                problems.append(f"{path.relative_to(REPO)}:{node.lineno} imports {name} inside a function")
    assert not problems, "\n".join(problems)


def test_no_file_of_the_package_is_over_600_lines():
    long = {str(p.relative_to(REPO)): n for p in PACKAGE.rglob("*.py") if (n := len(p.read_text().splitlines())) >
            MAX_LINES}
    assert not long, long


def test_the_training_step_is_written_once():
    """No backward pass outside the engine's step and backends (the linear probe over cached features aside); a
    backend subclass that times its parent's backward (``super().backward(...)``) delegates rather than copies."""
    pattern = re.compile(r"(?<!super\(\))\.backward\(")
    allowed = {PACKAGE / "engine" / "backends.py", PACKAGE / "tools" / "feature_baselines.py"}
    found = [f"{p.relative_to(REPO)}:{i}" for folder in (PACKAGE / "tools", PACKAGE / "ablation", REPO / "benchmarks")
             for p in folder.rglob("*.py") if p not in allowed
             for i, line in enumerate(p.read_text().splitlines(), 1) if pattern.search(line)]
    assert not found, found
