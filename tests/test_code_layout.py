"""The package's shape, checked: no function over 60 lines, no import cycle between its modules.

Both rules come from the components redesign: a reader should be able to hold any function in
view, and a part that imports the trainer (or data that imports models) is a hub in disguise.
Lazy imports inside functions count: they hide a cycle, they do not remove it.
"""
import ast
import os
from typing import Dict, Iterator, List, Set, Tuple

PACKAGE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "hvd_trainer")
MAX_FUNCTION_LINES = 60


def package_modules() -> Dict[str, str]:
    """Dotted module name -> file path, for every .py file of the package."""
    modules = {}
    root = os.path.dirname(PACKAGE)
    for directory, _, files in os.walk(PACKAGE):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(directory, name)
                dotted = os.path.relpath(path, root)[:-3].replace(os.sep, ".")
                modules[dotted[: -len(".__init__")] if dotted.endswith(".__init__") else dotted] = path
    return modules


def functions(tree: ast.AST) -> Iterator[ast.AST]:
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield node


def imported_modules(module: str, path: str, tree: ast.AST, known: Set[str]) -> Set[str]:
    """The package modules that `module` imports, at module level or inside functions."""
    is_package = path.endswith("__init__.py")
    found = set()
    for node in ast.walk(tree):
        names: List[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = module.split(".")
                anchor = parts if is_package else parts[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            # `from pkg import name` imports pkg.name when that is a module, else pkg itself.
            names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        for name in names:
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name and name != module:
                found.add(name)
    return found


def import_cycles(graph: Dict[str, Set[str]]) -> List[Tuple[str, ...]]:
    """Every strongly connected group of more than one module (Tarjan's algorithm)."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on_stack: Set[str] = set()
    groups: List[Tuple[str, ...]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                group.append(top)
                if top == node:
                    break
            if len(group) > 1:
                groups.append(tuple(sorted(group)))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return groups


def parsed() -> Dict[str, Tuple[str, ast.AST]]:
    out = {}
    for module, path in package_modules().items():
        with open(path) as f:
            out[module] = (path, ast.parse(f.read(), path))
    return out


def test_no_function_is_longer_than_60_lines():
    long = []
    for module, (path, tree) in parsed().items():
        for fn in functions(tree):
            length = fn.end_lineno - fn.lineno + 1
            if length > MAX_FUNCTION_LINES:
                long.append(f"{os.path.relpath(path, os.path.dirname(PACKAGE))}:{fn.lineno} {fn.name} ({length} lines)")
    assert not long, "Split these functions:\n" + "\n".join(sorted(long))


def test_no_import_cycle_between_package_modules():
    modules = parsed()
    known = set(modules)
    graph = {m: imported_modules(m, path, tree, known) for m, (path, tree) in modules.items()}
    # A package's __init__ that re-exports its own submodules is not a cycle with them.
    for m in graph:
        graph[m] = {d for d in graph[m] if not (m.startswith(d + ".") and d in known)}
    cycles = import_cycles(graph)
    assert not cycles, "Import cycles (lazy imports included):\n" + "\n".join(" <-> ".join(c) for c in cycles)


def test_the_checker_finds_a_cycle_and_a_long_function():
    """The two rules above can fail: a tiny graph with a cycle, a tiny long function."""
    assert import_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [("a", "b", "c")]
    tree = ast.parse("def f():\n" + "    x = 1\n" * 70)
    assert [fn.end_lineno - fn.lineno + 1 for fn in functions(tree)] == [71]


def package_graph() -> Dict[str, Set[str]]:
    modules = parsed()
    known = set(modules)
    return {m: imported_modules(m, path, tree, known) for m, (path, tree) in modules.items()}


def test_data_and_models_depend_on_features_not_on_each_other():
    graph = package_graph()
    crossings = [f"{m} imports {d}" for m, deps in graph.items() for d in deps
                 for a, b in (("data", "models"), ("models", "data"))
                 if m.startswith(f"hvd_trainer.{a}") and d.startswith(f"hvd_trainer.{b}")]
    assert not crossings, "\n".join(sorted(crossings))


def test_only_distributed_imports_horovod():
    outside = []
    for module, (path, tree) in parsed().items():
        if module.startswith("hvd_trainer.distributed") or module == "hvd_trainer.doctor":
            continue  # doctor reports Horovod's build and version
        for node in ast.walk(tree):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            outside += [f"{module}: {n}" for n in names if n == "horovod" or n.startswith("horovod.")]
    assert not outside, "\n".join(outside)
