"""The package's shape: no import cycle (imports inside functions count too), MPI and Horovod each imported by one
module, the run directory's file names spelled only in menndl_py.rundir."""
import ast
import re
from pathlib import Path

import menndl_py

PACKAGE = Path(menndl_py.__file__).parent


def modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def imports(path: Path, name: str, known: dict) -> set[str]:
    """Every module `name` imports, at any depth of its code (functions, TYPE_CHECKING blocks): for
    `from X import Y`, X.Y when that is a module, else X."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1] + [base]).strip(".")
            for alias in node.names:
                out.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base)
    return out


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: {m for m in imports(path, name, known) if m in known} for name, path in known.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """One cycle through each strongly connected component of more than one module (or a module importing
    itself)."""
    found, state = [], {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(edges[node]):
            if state.get(nxt) == "open":
                found.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, stack)
        stack.pop()
        state[node] = "done"

    for node in sorted(edges):
        if node not in state:
            visit(node, [])
    return found


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_module_of_the_package_imports_itself_back():
    edges = graph()
    assert len(edges) > 60 and edges["menndl_py.engine.master"] >= {"menndl_py.search", "menndl_py.rundir"}
    assert cycles(edges) == []


def importers_of(library: str) -> list[str]:
    known = modules()
    return sorted(name for name, path in known.items()
                  if any(m == library or m.startswith(library + ".") for m in imports(path, name, known)))


def test_mpi4py_and_horovod_are_each_imported_by_one_module():
    assert importers_of("mpi4py") == ["menndl_py.engine.transport.mpi"]
    assert importers_of("horovod") == ["menndl_py.train.group"]


def test_the_search_imports_neither_mpi_nor_torch():
    edges = graph()
    reach, todo = set(), ["menndl_py.search"]
    while todo:
        for m in edges[todo.pop()] - reach:
            reach.add(m)
            todo.append(m)
    paths = modules()
    libraries = {m for name in reach | {"menndl_py.search"} for m in imports(paths[name], name, paths)}
    assert not {m for m in libraries if m.split(".")[0] in ("torch", "mpi4py", "horovod")}


def test_run_directory_names_are_spelled_only_in_rundir():
    pattern = re.compile(r'"best"|"final"|model\.pt|results\.csv')
    hits = [f"{path.relative_to(PACKAGE)}:{n}" for path in PACKAGE.rglob("*.py") if "rundir" not in path.parts
            for n, line in enumerate(path.read_text().splitlines(), 1) if pattern.search(line)]
    assert hits == []
