"""The modules of ``vae_jax`` import one another without a cycle: each can be read, tested and
replaced on top of the ones it imports. Imports inside functions count: a cycle deferred to call
time is still two modules that cannot be understood apart."""

import ast
from pathlib import Path

import vae_jax

PACKAGE = Path(vae_jax.__file__).parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imported(tree: ast.AST, module: str, is_package: bool, known: set[str]) -> set[str]:
    """The ``vae_jax`` modules that ``module``'s source imports, anywhere in it."""
    package = module if is_package else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            # ``from vae_jax import runs`` imports the module vae_jax.runs; ``from vae_jax.runs
            # import train`` imports vae_jax.runs.
            names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        else:
            continue
        for name in names:
            # ``import vae_jax.data.crops`` runs vae_jax.data too, but the edge that matters is the module named.
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name and name != module:
                found.add(name)
    return found


def import_graph() -> dict[str, set[str]]:
    """Module -> the vae_jax modules it imports (at the top or inside functions)."""
    paths = sorted(PACKAGE.rglob("*.py"))
    known = {_module_name(path) for path in paths}
    return {
        _module_name(path): _imported(ast.parse(path.read_text()), _module_name(path), path.name == "__init__.py", known)
        for path in paths
    }


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle through each group of modules that reach one another by imports (Tarjan's
    strongly connected components), as the modules along it; a package importing its own
    submodules is no cycle unless one of them imports the package back."""
    index, low, on_stack, stack, groups = {}, {}, set(), [], []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for successor in sorted(graph.get(node, ())):
            if successor not in index:
                visit(successor)
                low[node] = min(low[node], low[successor])
            elif successor in on_stack:
                low[node] = min(low[node], index[successor])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return [_cycle_through(graph, set(group)) for group in groups]


def _cycle_through(graph, group):
    """The shortest closed path inside ``group`` (modules that all reach one another) from its
    first module back to it."""
    start = min(group)
    paths, frontier = {start: [start]}, [start]
    while frontier:
        reached = []
        for node in frontier:
            for successor in sorted(graph[node] & group):
                if successor == start:
                    return paths[node] + [start]
                if successor not in paths:
                    paths[successor] = paths[node] + [successor]
                    reached.append(successor)
        frontier = reached
    raise AssertionError(f"{sorted(group)} is not strongly connected")


def test_the_import_graph_finds_a_cycle_it_is_given():
    graph = {"a": {"b"}, "b": {"c", "d"}, "c": {"a"}, "d": {"a"}, "e": {"a"}}
    assert cycles(graph) == [["a", "b", "c", "a"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_among_vae_jax_modules():
    graph = import_graph()
    assert "vae_jax.config" in graph["vae_jax.runs"]  # the graph is read
    found = cycles(graph)
    assert found == [], "import cycles: " + "; ".join(" -> ".join(cycle) for cycle in found)


def test_imports_inside_functions_and_relative_imports_are_edges():
    source = "from vae_jax import config as c\ndef f():\n    from vae_jax.data import crops\n    from . import images\n"
    known = {"vae_jax", "vae_jax.config", "vae_jax.data", "vae_jax.data.crops", "vae_jax.images", "vae_jax.runs"}
    edges = _imported(ast.parse(source), "vae_jax.runs", False, known)
    assert edges == {"vae_jax.config", "vae_jax.data.crops", "vae_jax.images"}
