"""The layers of docs/architecture.md §1, checked on the source: who may import whom, no cycles, no prints."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
PACKAGES = ("rsretrieve", "indexer", "app")
APP_MAY_USE = {"rsretrieve.errors", "rsretrieve.query", "rsretrieve.render", "rsretrieve.search", "rsretrieve.chips"}
APP_MAY_USE |= {
    "rsretrieve.hits",
    "rsretrieve.thumbnails",
    "rsretrieve.labels",
    "rsretrieve.classify",
    "rsretrieve.geoparquet",
}
APP_MAY_USE |= {"rsretrieve.service.client"}  # the API key rules of `rsretrieve query --server`
APP_MAY_USE |= {"rsretrieve.imported"}  # is_vector_only: the page offers chip ids alone on imported embeddings
CLI = "rsretrieve.cli"  # the composition root: a package whose modules alone print and may load indexer/ lazily


def module_files() -> dict[str, Path]:
    """Dotted module name → file, for every module of the project's packages."""
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


MODULES = module_files()


def imports(path: Path) -> set[str]:
    """Project modules a file imports, at the top or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        found |= {name for name in names if name in MODULES}
    return found


GRAPH = {name: imports(path) - {name} for name, path in MODULES.items()}


def in_cli(name: str) -> bool:
    """Whether a module is the CLI package or one of its modules."""
    return name == CLI or name.startswith(CLI + ".")


def test_the_core_never_imports_the_indexer() -> None:
    wrong = [
        (a, b) for a, deps in GRAPH.items() for b in deps if a.startswith("rsretrieve") and b.startswith("indexer")
    ]
    assert [pair for pair in wrong if not in_cli(pair[0])] == []  # the CLI loads the indexer lazily


def test_the_page_uses_only_the_public_api() -> None:
    used = {b for a, deps in GRAPH.items() if a.startswith("app") for b in deps if not b.startswith("app")}
    assert used <= APP_MAY_USE


def test_no_import_cycles_between_modules() -> None:
    def reachable(start: str) -> set[str]:
        seen, todo = set(), [start]
        while todo:
            for nxt in GRAPH[todo.pop()]:
                if nxt not in seen and not nxt.startswith(start + "."):  # a package re-exporting its modules
                    seen.add(nxt)
                    todo.append(nxt)
        return seen

    assert [name for name in GRAPH if name in reachable(name)] == []


@pytest.mark.parametrize("name", sorted(name for name in MODULES if not in_cli(name)))
def test_library_code_logs_instead_of_printing(name: str) -> None:
    tree = ast.parse(MODULES[name].read_text())
    prints = [
        node.lineno for node in ast.walk(tree) if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "print"
    ]
    assert prints == []
