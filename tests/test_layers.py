"""The layering rule of docs/architecture.md, enforced over the AST of every project module.

A module may import (at run time) only modules of its own layer or of a layer below it; the imports form
no cycle; and no function imports a project module, except on a line that says why (``lazy-import:``).
Imports under ``if TYPE_CHECKING:`` are annotations only and are not counted.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("attribution", "udfs", "jobs")

# Bottom to top. Each layer's rule: what it may import is its own layer and those listed before it.
LAYERS: dict[str, tuple[str, ...]] = {
    # the names every layer shares, and the error kinds: import nothing from the project
    "foundation": ("attribution", "attribution.errors", "attribution.schema"),
    # the configuration's dataclasses and each section's own checks
    "config": ("attribution.config",),
    # the library: Spark transforms and plain numpy/torch/Arrow code, one job per module
    "library": (
        "attribution.statistics",
        "attribution.metrics",
        "attribution.io",
        "attribution.sinks",
        "attribution.spark",
        "attribution.observed",
        "attribution.session_rules",
        "attribution.sessionize",
        "attribution.features",
        "attribution.model",
        "attribution.kernels",
        "attribution.methods",
        "attribution.attribute",
        "attribution.removal",
        "attribution.faithfulness",
        "attribution.events",
        "attribution.baseline_removal",
        "attribution.removal_tables",
        "attribution.table_layouts",
        "attribution.aggregate",
        "attribution.scenarios",
        "attribution.catalogue",
        "attribution.generate",
        "attribution.planted_truth",
        "attribution.train_worker",
        "attribution.train",
        "attribution.baseline",
        "attribution.tracking",
        "attribution.mlflow_model",
    ),
    # loading the configuration and the checks that read the library's registries
    "config loading": ("attribution.config_checks", "attribution.config_loader"),
    # what a person reads: the report's tables, text, pictures, page, the planted-driver check
    "answer": (
        "attribution.report",
        "attribution.report_text",
        "attribution.figures",
        "attribution.page",
        "attribution.ground_truth",
        "attribution.explain",
    ),
    # the Spark UDFs and what they share on a Python worker
    "udfs": ("udfs", "udfs.worker", "udfs.attribution_udf", "udfs.faithfulness_udf"),
    # each stage's run(spark, conf)
    "stages": ("attribution.stages",),
    # the command-line entry points
    "jobs": ("jobs",),
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


def _layer_of(module: str) -> int:
    """The index of the layer that names ``module``, or a package above it (``attribution.stages``)."""
    best, found = -1, None
    for index, (_, members) in enumerate(LAYERS.items()):
        for m in members:
            if (module == m or module.startswith(m + ".")) and len(m) > best:
                best, found = len(m), index
    if found is None:
        raise AssertionError(f"{module} is in no layer: add it to LAYERS (and to docs/architecture.md)")
    return found


def _project_target(node: ast.ImportFrom | ast.Import, modules: dict[str, Path]) -> list[str]:
    """The project modules an import statement loads (``from attribution import sinks`` loads
    ``attribution.sinks``)."""
    out = []
    if isinstance(node, ast.ImportFrom):
        if node.level or not node.module or node.module.split(".")[0] not in PACKAGES:
            return []
        for alias in node.names:
            full = f"{node.module}.{alias.name}"
            out.append(full if full in modules else node.module)
    else:
        out = [a.name for a in node.names if a.name.split(".")[0] in PACKAGES]
    return out


def _imports(path: Path, modules: dict[str, Path]) -> tuple[set[str], list[str]]:
    """(project modules imported at run time, function-level project imports without a reason)."""
    source = path.read_text()
    lines = source.splitlines()
    runtime: set[str] = set()
    lazy: list[str] = []

    def walk(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                continue
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                targets = _project_target(child, modules)
                runtime.update(targets)
                if targets and in_function and "lazy-import:" not in lines[child.lineno - 1]:
                    lazy.append(f"{path.relative_to(ROOT)}:{child.lineno}: {ast.unparse(child)}")
            else:
                walk(child, in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)))

    walk(ast.parse(source), False)
    return runtime, lazy


def _graph() -> tuple[dict[str, set[str]], list[str]]:
    modules = _modules()
    graph, lazy = {}, []
    for name, path in modules.items():
        targets, found = _imports(path, modules)
        graph[name] = {t for t in targets if t != name}
        lazy += found
    return graph, lazy


def test_every_import_goes_to_the_same_layer_or_below():
    graph, _ = _graph()
    names = list(LAYERS)
    upward = [
        f"{m} ({names[_layer_of(m)]}) imports {t} ({names[_layer_of(t)]})"
        for m, targets in graph.items()
        for t in sorted(targets)
        if _layer_of(t) > _layer_of(m)
    ]
    assert not upward, "imports against the layering:\n" + "\n".join(upward)


def test_the_imports_form_no_cycle():
    graph, _ = _graph()
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for t in sorted(graph.get(m, ())):
            if state.get(t) == 1:
                return [*stack[stack.index(t) :], t]
            if t not in state and (cycle := visit(t)):
                return cycle
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state:
            cycle = visit(m)
            assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_no_function_imports_a_project_module_without_saying_why():
    _, lazy = _graph()
    assert not lazy, "function-level imports of project modules (hoist them, or mark 'lazy-import: why'):\n" + (
        "\n".join(lazy)
    )


def test_the_rule_catches_an_upward_import(tmp_path):
    """The checker itself: a config module importing the library is flagged, and a function-level import
    is found; so the tests above can fail."""
    fake = tmp_path / "attribution"
    fake.mkdir()
    (fake / "config.py").write_text("def f():\n    from attribution.model import SessionTransformer\n")
    modules = {"attribution.config": fake / "config.py", "attribution.model": fake / "model.py"}
    global ROOT
    saved, ROOT = ROOT, tmp_path
    try:
        targets, lazy = _imports(fake / "config.py", modules)
    finally:
        ROOT = saved
    assert targets == {"attribution.model"}
    assert _layer_of("attribution.model") > _layer_of("attribution.config")
    assert len(lazy) == 1 and "SessionTransformer" in lazy[0]


def test_every_layer_is_drawn_in_the_architecture_doc():
    doc = (ROOT / "docs" / "architecture.md").read_text()
    missing = [name for name in LAYERS if f"**{name}**" not in doc]
    assert not missing, f"docs/architecture.md does not draw the layer(s) {missing}"
