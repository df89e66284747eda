"""The shape of the package (issue 21): imports go down the layers, never up or around.

Layers, bottom to top (a module may import its own layer and the ones below):

0. ``errors``, ``defaults``, ``bands``, ``uncertainty``, ``files``, ``kvconfig``, ``system/`` and
   the build glue
1. ``inputs/``, ``progress``, ``report.kit`` and ``report.svg`` (formatting that knows no axis)
2. ``engine/``
3. ``axes/``
4. ``options``, ``composite``
5. ``report/`` (build, reading, views, comparability, leaderboard)
6. ``scoring/``
7. ``matrix/``, ``sweep/``, ``selftest``
8. ``cli/`` and the package's entry points

Every import counts, at module level or inside a function (a late import is still an arrow);
only ``if TYPE_CHECKING:`` imports are exempt. No module imports a ``_private`` name of another.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "refract"

LAYERS: list[tuple[str, ...]] = [
    ("refract.errors", "refract.defaults", "refract.bands", "refract.uncertainty",
     "refract.files", "refract.kvconfig", "refract.system", "refract._cpu", "refract._build_config",
     "refract._core"),
    ("refract.inputs", "refract.progress", "refract.report.kit", "refract.report.svg",
     "refract.prompts"),
    ("refract.engine",),
    ("refract.axes",),
    ("refract.options", "refract.composite"),
    ("refract.report",),
    ("refract.scoring",),
    ("refract.matrix", "refract.selftest", "refract.outputs", "refract.sweep"),
    ("refract.cli", "refract.__main__"),
]


def layer_of(module: str) -> int | None:
    best: tuple[int, int] | None = None  # (prefix length, layer)
    for i, prefixes in enumerate(LAYERS):
        for p in prefixes:
            if module == p or module.startswith(p + "."):
                if best is None or len(p) > best[0]:
                    best = (len(p), i)
    return best[1] if best else None


def module_name(path: Path) -> str:
    rel = path.relative_to(SRC.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _type_checking_blocks(tree: ast.AST) -> set[int]:
    ids: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for sub in node.body:
                for inner in ast.walk(sub):
                    ids.add(id(inner))
    return ids


def imports(path: Path) -> Iterator[tuple[int, str, list[str]]]:
    """(line, imported module, imported names) of every runtime import in a file."""
    tree = ast.parse(path.read_text(), str(path))
    skip = _type_checking_blocks(tree)
    me = module_name(path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            for a in node.names:
                yield node.lineno, a.name, []
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            names = [a.name for a in node.names]
            if base == "refract" or base.startswith("refract."):
                # ``from refract.x import y`` may name a submodule y
                subs = [f"{base}.{n}" for n in names if _is_module(f"{base}.{n}")]
                if subs:
                    for s in subs:
                        yield node.lineno, s, []
                    names = [n for n in names if f"{base}.{n}" not in subs]
                    if not names:
                        continue
            yield node.lineno, base, names


def _is_module(name: str) -> bool:
    path = SRC.parent / name.replace(".", "/")
    return (path.with_suffix(".py").is_file() or path.with_suffix(".pyi").is_file()
            or (path / "__init__.py").is_file())


def sources() -> list[Path]:
    return sorted(p for p in SRC.rglob("*.py") if "__pycache__" not in p.parts)


def test_every_module_has_a_layer() -> None:
    missing = [module_name(p) for p in sources() if module_name(p) != "refract"
               and layer_of(module_name(p)) is None]
    assert not missing, f"modules outside every layer: {missing}"


def test_imports_go_down_the_layers() -> None:
    bad: list[str] = []
    for path in sources():
        me = module_name(path)
        mine = layer_of(me)
        if mine is None:  # the package __init__: the public API, above everything
            continue
        for line, target, _ in imports(path):
            if not target.startswith("refract.") or target == "refract":
                continue
            theirs = layer_of(target)
            if theirs is not None and theirs > mine:
                bad.append(f"{me}:{line} imports {target} (layer {theirs} > {mine})")
    assert not bad, "imports up the layers:\n" + "\n".join(bad)


def test_no_import_cycle_between_modules() -> None:
    graph: dict[str, set[str]] = {}
    for path in sources():
        me = module_name(path)
        graph[me] = {t for _, t, _ in imports(path)
                     if t.startswith("refract") and t != me and t in _all_modules()}
    seen: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        seen[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if seen.get(nxt) == 1:
                cycle = stack[stack.index(nxt):] + [nxt]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if nxt not in seen:
                visit(nxt)
        stack.pop()
        seen[node] = 2

    for node in sorted(graph):
        if node not in seen:
            visit(node)


def _all_modules() -> set[str]:
    return {module_name(p) for p in sources()}


def test_no_private_name_is_imported_across_modules() -> None:
    bad = [f"{module_name(p)}:{line} imports {n} from {t}"
           for p in sources() for line, t, names in imports(p)
           if t.startswith("refract") for n in names
           if n.startswith("_") and not n.startswith("__") and t != "refract._core"]
    assert not bad, "\n".join(bad)


def test_no_signature_takes_an_untyped_engine() -> None:
    bad = []
    for p in sources():
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                args = node.args.args + node.args.kwonlyargs + node.args.posonlyargs
                for a in args:
                    if a.arg == "engine" and (a.annotation is None
                                              or ast.unparse(a.annotation) == "Any"):
                        bad.append(f"{module_name(p)}.{node.name}")
    assert not bad, f"engine: Any in {bad}"
