"""The house rules a reader relies on: no import cycles, file names unique, thin edges.

The import graph is built from the source (``ast``) over ``ctr``, ``monitor`` and
``pipelines``: module-level imports only (an import inside a function is a deliberate late
binding; ``if TYPE_CHECKING:`` blocks are for the type checker).
"""

from __future__ import annotations

import ast
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).parents[2]
PACKAGES = ("ctr", "monitor", "pipelines")


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


def _module_level_imports(path: Path, name: str, known: set[str]) -> set[str]:
    tree = ast.parse(path.read_text())
    out: set[str] = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in tree.body:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            continue
        for sub in [node] if isinstance(node, ast.Import | ast.ImportFrom) else []:
            if isinstance(sub, ast.Import):
                targets = [a.name for a in sub.names]
            else:
                base = sub.module or ""
                if sub.level:
                    base = ".".join(
                        package.split(".")[: len(package.split(".")) - sub.level + 1] + ([base] if base else [])
                    )
                targets = [f"{base}.{a.name}" for a in sub.names] + [base]
            for target in targets:
                while target and target not in known:
                    target = target.rpartition(".")[0]
                if target and target != name:
                    out.add(target)
    return out


def import_graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _module_level_imports(path, name, set(modules)) for name, path in modules.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
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
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_import_graph_has_no_cycles() -> None:
    graph = import_graph()
    assert len(graph) > 50 and "ctr.serving.api" in graph["ctr.serving.handlers"] | {"ctr.serving.api"}
    assert cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_the_api_module_only_wires() -> None:
    path = ROOT / "ctr" / "serving" / "api.py"
    lines = path.read_text().splitlines()
    assert len(lines) < 200, len(lines)
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            length = (node.end_lineno or node.lineno) - node.lineno + 1
            assert length <= 60, (node.name, length)


def test_file_names_are_unique_across_the_tree() -> None:
    names = Counter(p.name for package in PACKAGES for p in (ROOT / package).rglob("*.py") if p.name != "__init__.py")
    assert [n for n, k in names.items() if k > 1] == []


def test_the_readme_configuration_table_lists_every_variable_the_code_reads() -> None:
    import re

    read = set()
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            read |= set(re.findall(r"\b(CTR_[A-Z0-9_]*[A-Z0-9])\b", path.read_text()))
    read = {v for v in read if v != "CTR_KFP"}  # a prefix in a help text
    import ctr.serving.api_settings  # noqa: F401  # settings classes read CTR_<FIELD> for each field
    from ctr.settings import PREFIX, CtrSettings

    for settings in CtrSettings.__subclasses__():
        read |= {PREFIX + name.upper() for name in settings.model_fields}
    readme = (ROOT / "README.md").read_text()
    table = readme[readme.index("## Configuration") : readme.index("## Architecture")]
    documented = set(re.findall(r"`(CTR_[A-Z0-9_]+)`", table))
    assert read - documented == set(), "read by the code, missing from README's table"
    # ``X_FILE`` is read through ``ctr.settings.env_or_file("X")``
    unread = {v for v in documented - read if not (v.endswith("_FILE") and v.removesuffix("_FILE") in read)}
    assert unread == set(), "in README's table, read by no code"
