"""The layering rules of docs/ARCHITECTURE.md, checked on the source: pure algorithms import no torch/HTTP/web
stack, the project's modules form no import cycle and import at module top, the environment is read in
albackend/settings.py only (and every variable is in the README table), logging is configured by entry points only.
"""
from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from albackend.settings import ENV_VARS

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("albackend", "plasm")
# Every module under albackend.algorithms (and the shared vocabulary in albackend.domain) is pure.
PURE_PACKAGES = ("albackend.algorithms", "albackend.domain")
HEAVY = ("torch", "transformers", "requests", "flask")

# The fast-CLI lazy import: `python -m plasm` imports a command's module (torch for run and distil) only after
# parsing, so --help and a mistyped option answer at once.
LAZY_IMPORT_ALLOWED = {"plasm/cli/__init__.py"}
# Modules owned by the live-loop rewrite: function-body imports, the jobs <-> training cycle and the job's logging
# set-up are being replaced there.
LIVE_LOOP: set[str] = set()
# Entry points may configure logging: the plasm CLI's main.
LOGGING_ENTRY_POINTS = {"plasm/cli/__init__.py", "albackend/adapters/rqjobs.py"}
# Reads of the environment outside settings.py: none. runtime.py only sets a default for a third-party library.
ENVIRON_WRITERS = {"albackend/settings.py", "albackend/models/runtime.py"}


@dataclass(frozen=True)
class Import:
    importer: str  # module name
    path: str  # file, relative to the repo
    line: int
    target: str  # project module it runs
    in_function: bool


def _modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for path in (REPO / pkg).rglob("*.py"):
            parts = list(path.relative_to(REPO).with_suffix("").parts)
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _targets(module: str, is_package: bool, node: ast.Import | ast.ImportFrom, modules: dict) -> set[str]:
    """Project modules an import statement runs: the named module and every package above it."""
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    else:
        base = node.module or ""
        if node.level:
            package = module.split(".") if is_package else module.split(".")[:-1]
            package = package[:len(package) - node.level + 1]
            base = ".".join(package + ([base] if base else []))
        names = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
    out = set()
    for name in names:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        while name:  # importing a.b.c runs a and a.b first; the importer's own packages are already running
            if name in modules and not (module + ".").startswith(name + "."):
                out.add(name)
            name = name.rpartition(".")[0]
    return out


def _function_nodes(tree: ast.AST) -> set[int]:
    return {id(n) for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            for n in ast.walk(f) if n is not f}


def _imports() -> tuple[list[Import], list[tuple[str, int, str]]]:
    """(project imports, every function-body import statement or importlib call as (path, line, code))."""
    modules = _modules()
    edges, lazy = [], []
    for module, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        inner = _function_nodes(tree)
        rel = str(path.relative_to(REPO))
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                if id(node) in inner:
                    lazy.append((rel, node.lineno, ast.unparse(node)))
                for target in _targets(module, path.name == "__init__.py", node, modules) - {module}:
                    edges.append(Import(module, rel, node.lineno, target, id(node) in inner))
            elif isinstance(node, ast.Call) and "import_module" in ast.unparse(node.func):
                lazy.append((rel, node.lineno, ast.unparse(node)))
    return edges, lazy


def _cycles(edges: list[Import]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), over every import, lazy ones too."""
    graph: dict[str, set[str]] = {}
    for e in edges:
        graph.setdefault(e.importer, set()).add(e.target)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

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
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def _owner(module: str) -> str:
    return module.replace(".", "/") + ".py"


# ================================================================================================ tests
def test_pure_algorithms_import_no_torch_http_or_web_stack():
    pure = sorted(m for m in _modules() if any(m == p or m.startswith(p + ".") for p in PURE_PACKAGES))
    assert "albackend.algorithms.ups.round" in pure, pure
    code = (f"import json, sys\nimport {', '.join(pure)}\n"
            f"print(json.dumps(sorted(m for m in {list(HEAVY)!r} if m in sys.modules)))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == [], f"{pure} pulled in {proc.stdout.strip()}"


# The floor plan (docs/ARCHITECTURE.md): each module's layer, and the layers each may import.
OUTBOUND_ADAPTERS = {"albackend.adapters.lsclient", "albackend.adapters.redisconn", "albackend.adapters.prommetrics"}
LAYER_PACKAGES = {"albackend", "albackend.algorithms", "albackend.domain", "albackend.models", "albackend.services",
                  "albackend.adapters", "plasm"}  # docstring-only package files: no layer of their own
MAY_IMPORT = {
    "algorithms": {"algorithms"},
    "domain": {"domain"},
    "settings": set(),
    "models": {"models", "algorithms", "domain", "settings"},
    # Services call the outbound adapters (LS REST, Redis, Prometheus), which are leaves: they import no service.
    "services": {"services", "models", "algorithms", "domain", "settings", "outbound"},
    "outbound": {"settings"},
    "inbound": {"inbound", "outbound", "services", "models", "algorithms", "domain", "settings"},
}


def _layer(module: str) -> str:
    if module in OUTBOUND_ADAPTERS:
        return "outbound"
    if module == "plasm.__main__" or module.startswith(("albackend.adapters.", "plasm.cli")):
        return "inbound"  # the HTTP app, the RQ entry points, the plasm command line
    if module.startswith("plasm."):
        return "services"  # PLASM: a service with its own successor models (docs/ARCHITECTURE.md says why)
    for layer in ("algorithms", "domain", "models", "services"):
        if module.startswith(f"albackend.{layer}."):
            return layer
    assert module == "albackend.settings", f"{module} is in no layer: place it in the floor plan"
    return "settings"


def _layering_violations(edges: list[Import]) -> list[str]:
    return [f"{e.path}:{e.line}: {_layer(e.importer)} module {e.importer} imports {_layer(e.target)} {e.target}"
            for e in edges if e.importer not in LAYER_PACKAGES and e.target not in LAYER_PACKAGES
            and _layer(e.target) not in MAY_IMPORT[_layer(e.importer)]]


def test_dependencies_point_one_way():
    """algorithms and domain import nothing above them; models no service or adapter; services no inbound adapter."""
    edges, _ = _imports()
    assert edges, "no import found: the scan is broken"
    assert _layering_violations(edges) == []


def test_layer_packages_are_docstrings_only():
    for module in LAYER_PACKAGES:
        tree = ast.parse((REPO / module.replace(".", "/") / "__init__.py").read_text(encoding="utf-8"))
        assert all(isinstance(n, ast.Expr) for n in tree.body), f"{module}/__init__.py must hold a docstring only"


def test_the_layering_check_catches_an_upward_import():
    edges = [Import("albackend.algorithms.strategies", "albackend/algorithms/strategies.py", 3,
                    "albackend.models.acquisition", False),
             Import("albackend.services.training", "albackend/services/training.py", 5, "albackend.adapters.app", False),
             Import("albackend.services.training", "albackend/services/training.py", 6,
                    "albackend.adapters.lsclient", False)]
    assert [v.split(":")[1] for v in _layering_violations(edges)] == ["3", "5"]


def test_no_import_cycles():
    edges, _ = _imports()
    cycles = [c for c in _cycles(edges) if not {_owner(m) for m in c} <= LIVE_LOOP]
    assert cycles == [], f"import cycles: {cycles}"


def test_imports_at_module_top():
    _, lazy = _imports()
    offenders = [f"{path}:{line}: {code}" for path, line, code in lazy
                 if path not in LAZY_IMPORT_ALLOWED | LIVE_LOOP]
    assert offenders == [], "imports inside function bodies:\n" + "\n".join(offenders)


def test_the_architecture_checks_catch_a_cycle_and_a_lazy_import(tmp_path, monkeypatch):
    """The checks above are real: a two-module cycle hidden in a function body is found by both."""
    pkg = tmp_path / "ups"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("import ups.b\n")
    (pkg / "b.py").write_text("def f():\n    from ups import a\n    return a\n")
    monkeypatch.setattr(sys.modules[__name__], "REPO", tmp_path)
    monkeypatch.setattr(sys.modules[__name__], "PACKAGES", ("ups",))
    edges, lazy = _imports()
    assert _cycles(edges) == [["ups.a", "ups.b"]]
    assert lazy == [("ups/b.py", 2, "from ups import a")]


def _sources() -> list[tuple[str, ast.AST]]:
    return [(str(p.relative_to(REPO)), ast.parse(p.read_text(encoding="utf-8")))
            for pkg in PACKAGES for p in sorted((REPO / pkg).rglob("*.py"))]


def test_environment_is_read_in_settings_only():
    offenders = [f"{path}:{node.lineno}: {ast.unparse(node)}" for path, tree in _sources() if path not in ENVIRON_WRITERS
                 for node in ast.walk(tree)
                 if isinstance(node, ast.Attribute) and ast.unparse(node) in ("os.environ", "os.getenv")]
    assert offenders == [], "environment read outside albackend/settings.py:\n" + "\n".join(offenders)


def test_logging_is_configured_by_entry_points_only():
    offenders = [f"{path}:{node.lineno}" for path, tree in _sources()
                 if path not in LOGGING_ENTRY_POINTS | LIVE_LOOP for node in ast.walk(tree)
                 if isinstance(node, ast.Attribute) and node.attr == "basicConfig"]
    assert offenders == [], f"logging.basicConfig in library code: {offenders}"


def test_importing_the_model_layer_changes_nothing_process_wide():
    code = ("import os, json\nbefore = dict(os.environ)\nimport albackend.models, albackend.models.registry\n"
            "print(json.dumps([dict(os.environ) == before, 'transformers' in __import__('sys').modules]))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120,
                          env={"PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == [True, False]


@pytest.mark.parametrize("name", sorted(ENV_VARS))
def test_every_environment_variable_is_in_the_readme_table(name):
    rows = dict(re.findall(r"^\| `([A-Z0-9_]+)` \| `([^`]*)` \|", (REPO / "README.md").read_text(), re.M))
    assert name in rows, f"{name} is missing from the README's configuration table"
    assert rows[name] == ENV_VARS[name][0], f"README default of {name}: {rows[name]!r}, code: {ENV_VARS[name][0]!r}"


def test_readme_table_lists_no_unknown_variable():
    rows = re.findall(r"^\| `([A-Z0-9_]+)` \| `[^`]*` \|", (REPO / "README.md").read_text(), re.M)
    assert sorted(set(rows) - set(ENV_VARS)) == []


MAX_FUNCTION_LINES = 60


def _long_functions(limit: int = MAX_FUNCTION_LINES) -> list[str]:
    """Functions of the product packages longer than ``limit`` lines, from ``def`` to the last line."""
    return [f"{path}:{node.lineno}: {node.name} ({node.end_lineno - node.lineno + 1} lines)"
            for path, tree in _sources() for node in ast.walk(tree)
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno + 1 > limit]


def test_no_function_over_sixty_lines_in_the_product():
    """A function a reader cannot take in at once is split by what it does (bench drivers may stay longer)."""
    assert _long_functions() == []


def test_the_length_check_measures_functions():
    assert any(": create_app (" in row for row in _long_functions(limit=10))
