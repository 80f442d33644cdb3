"""The shape of the package: imports go one way (no cycle, not even through an import inside a function), no
module grows past 700 lines, and the format names a Checkpoint may carry are exactly the contract's."""

from __future__ import annotations

import ast
import typing
from pathlib import Path

import contract

from ckptlint.checkpoint import FormatName

PACKAGE = Path(__file__).resolve().parent.parent / "ckptlint"
MAX_LINES = 700


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Every ckptlint module ``name`` imports, at module level or inside a function (not under TYPE_CHECKING).

    ``from a.b import c`` is an import of ``a.b.c`` when that is a module, else of ``a.b``.
    """
    is_package = path.name == "__init__.py"
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - node.level + 1]
                module = ".".join([*base, *([node.module] if node.module else [])])
            else:
                module = node.module or ""
            for alias in node.names:
                sub = f"{module}.{alias.name}"
                found.add(sub if sub in modules else module)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(encoding="utf-8"), str(path)))
    return {m for m in found if m in modules and m != name}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                connect(w)
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
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return out


def test_the_import_graph_finds_hidden_imports() -> None:
    """The graph sees imports inside functions (the kind that used to close engine <-> rules._context)."""
    modules = _modules()
    assert "ckptlint.readers.sharded" in modules
    assert "ckptlint.readers" in _imports(
        "ckptlint.readers.sharded", modules["ckptlint.readers.sharded"], modules
    )
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycle() -> None:
    modules = _modules()
    graph = {name: _imports(name, path, modules) for name, path in modules.items()}
    cycles = list(_cycles(graph))
    assert cycles == [], f"import cycles: {cycles}"


def test_no_module_over_700_lines() -> None:
    long = {
        name: n
        for name, path in _modules().items()
        if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert not long, long


def test_checkpoint_format_names_are_the_contracts() -> None:
    assert list(typing.get_args(FormatName)) == contract.format_names()


def test_adapter_kinds_are_the_adapters_own() -> None:
    """``declared.tables`` names each adapter's sidecar kind; the adapters declare it too: the two must agree."""
    from ckptlint.declared import hf, open_clip, timm
    from ckptlint.declared.lookup import ADAPTERS
    from ckptlint.declared.tables import KINDS

    assert [ADAPTERS[k].KIND for k in KINDS] == list(KINDS) == [hf.KIND, open_clip.KIND, timm.KIND]
