"""The package layout's rules, read from the source with ``ast`` so the layout cannot rot.

1. Packages import only the packages below them (README "Architecture"): config at the bottom,
   then promql and prometheus, slo, alerting, state and serve, and cli/daemon on top.
2. The pure core (config, promql, prometheus.results, slo, alerting but its channels) never imports,
   directly or through another sloeval module, an I/O library: httpx, sqlite3, psycopg,
   python-telegram-bot, aiosmtplib, prometheus_client or an HTTP server.
3. No module outside ``alerting/channels/`` names a channel: adding one is adding a module there.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

from sloeval.alerting.channels import channel_names

ROOT = Path(__file__).resolve().parent.parent / "sloeval"

#: What each part of the package may import from sloeval (besides itself).
ALLOWED: dict[str, frozenset[str]] = {
    "errors": frozenset(),
    "config": frozenset({"errors"}),
    "promql": frozenset({"errors", "config"}),
    "prometheus": frozenset({"errors", "config"}),
    "slo": frozenset({"errors", "config", "promql", "prometheus"}),
    "alerting": frozenset({"errors", "config", "slo"}),
    "state": frozenset({"errors", "config", "alerting"}),
    "serve": frozenset({"errors", "config", "slo", "alerting"}),
    "logs": frozenset({"errors"}),
    "daemon": frozenset({"errors", "config", "promql", "prometheus", "slo", "alerting", "state", "serve", "logs"}),
    "cli": frozenset(
        {"errors", "config", "promql", "prometheus", "slo", "alerting", "state", "serve", "logs", "daemon"}
    ),
    "__main__": frozenset({"cli"}),
    "__init__": frozenset(),
}
#: Libraries that do I/O; the pure core never reaches them.
IO_LIBRARIES = frozenset(
    {
        "httpx",
        "httpcore",
        "sqlite3",
        "psycopg",
        "psycopg_pool",
        "telegram",
        "aiosmtplib",
        "smtplib",
        "prometheus_client",
        "socket",
        "wsgiref",
        "hypercorn",
        "uvicorn",
        "aiohttp",
    }
)
#: Modules of the pure core (dotted, under sloeval); the channel modules are the alerting edge.
PURE_PACKAGES = ("config", "promql", "slo", "alerting")
PURE_MODULES = ("prometheus.results",)
NOT_PURE = ("alerting.channels.",)


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path, package: str) -> Iterator[tuple[int, str]]:
    """(line, imported module) for every import in the file, including those inside functions."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the file's package
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            yield node.lineno, module
            for alias in node.names:  # "from sloeval.slo import sli_math" imports a module too
                yield node.lineno, f"{module}.{alias.name}"


def import_graph(root: Path) -> dict[str, list[tuple[int, str]]]:
    """sloeval-relative module name -> its imports (as written, absolute)."""
    graph = {}
    for path in sorted(root.rglob("*.py")):
        name = module_name(path, root)
        package = "sloeval." + name if path.name == "__init__.py" else "sloeval." + name.rpartition(".")[0]
        graph[name] = list(imports_of(path, package.rstrip(".")))
    return graph


def layer_violations(root: Path) -> list[str]:
    problems = []
    for name, imports in import_graph(root).items():
        part = name.split(".")[0] or "__init__"
        allowed = ALLOWED.get(part)
        if allowed is None:
            problems.append(f"sloeval/{name}: not a known part of the layout; add it to ALLOWED and the README")
            continue
        for line, imported in imports:
            if imported == "sloeval" or not imported.startswith("sloeval."):
                continue
            target = imported.split(".")[1]
            if target != part and target not in allowed and target != "__version__":
                problems.append(f"sloeval/{name} line {line}: {part} may not import sloeval.{target}")
    return problems


def is_pure(name: str) -> bool:
    if any(name.startswith(prefix) for prefix in NOT_PURE):
        return False
    return name in PURE_MODULES or name.split(".")[0] in PURE_PACKAGES


def io_violations(root: Path) -> list[str]:
    graph = import_graph(root)
    problems = []
    for name in sorted(n for n in graph if is_pure(n)):
        # Follow sloeval imports transitively; report the path to the first I/O library on each.
        seen = {name}
        stack: list[tuple[str, tuple[str, ...]]] = [(name, (name,))]
        while stack:
            current, path = stack.pop()
            for line, imported in graph.get(current, []):
                top = imported.split(".")[0]
                if top in IO_LIBRARIES:
                    via = " -> ".join(f"sloeval.{p}" for p in path)
                    problems.append(f"{via} (line {line}) imports {imported}")
                elif top == "sloeval":
                    target = imported.removeprefix("sloeval.")
                    if target in graph and target not in seen:
                        seen.add(target)
                        stack.append((target, (*path, target)))
    return problems


def test_packages_import_only_the_packages_below_them() -> None:
    assert layer_violations(ROOT) == []


def test_the_pure_core_never_reaches_an_io_library() -> None:
    assert io_violations(ROOT) == []


def test_the_rules_see_the_whole_package() -> None:
    graph = import_graph(ROOT)
    assert {
        "config.settings",
        "slo.evaluator",
        "alerting.machine",
        "alerting.channels.telegram",
        "state.sqlite",
    } <= set(graph)
    assert is_pure("slo.evaluator")
    assert is_pure("alerting.machine")
    assert not is_pure("alerting.channels.telegram")
    assert not is_pure("prometheus.client")
    # The edges really import what the core must not: the check is not vacuous.
    assert any(imported == "sqlite3" for _, imported in graph["state.sqlite"])
    assert any(imported.startswith("httpx") for _, imported in graph["prometheus.client"])


@pytest.mark.parametrize(
    ("where", "source", "expected"),
    [
        ("slo/evil.py", "import httpx\n", "imports httpx"),
        ("slo/evil.py", "from sloeval.prometheus.client import PrometheusClient\n", "imports httpx"),
        ("alerting/evil.py", "def f():\n    import sqlite3\n", "imports sqlite3"),
        ("config/evil.py", "from sloeval.slo import sli_math\n", "config may not import sloeval.slo"),
        ("promql/evil.py", "from ..state import sqlite\n", "promql may not import sloeval.state"),
        ("slo/evil.py", "from sloeval.serve import exporter\n", "slo may not import sloeval.serve"),
    ],
)
def test_the_rules_fail_on_a_broken_layout(tmp_path: Path, where: str, source: str, expected: str) -> None:
    """The checks run on a copy of the package with one bad import added: they must report it."""
    copy = tmp_path / "sloeval"
    for path in ROOT.rglob("*.py"):
        target = copy / path.relative_to(ROOT)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(path.read_bytes())
    (copy / where).write_text(source, encoding="utf-8")
    problems = layer_violations(copy) + io_violations(copy)
    assert any(expected in problem for problem in problems), problems


def test_an_io_library_reached_through_another_module_is_found(tmp_path: Path) -> None:
    copy = tmp_path / "sloeval"
    (copy / "slo").mkdir(parents=True)
    (copy / "config").mkdir()
    (copy / "slo" / "innocent.py").write_text("from sloeval.config import helper\n")
    (copy / "config" / "helper.py").write_text("import aiosmtplib\n")
    problems = io_violations(copy)
    assert "sloeval.slo.innocent -> sloeval.config.helper (line 1) imports aiosmtplib" in problems


def channel_literals(root: Path) -> Iterator[tuple[str, int, str]]:
    names = channel_names()
    for path in sorted(root.rglob("*.py")):
        name = module_name(path, root)
        if name.startswith("alerting.channels"):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and node.value in names:
                yield name, node.lineno, node.value


def test_no_module_outside_the_channels_names_a_channel() -> None:
    """A channel name outside its module is a switch on it; the default routes are the one piece of data."""
    found = [(name, value) for name, _, value in channel_literals(ROOT)]
    assert sorted(found) == [
        ("config.alert_rules", "email"),
        ("config.alert_rules", "email"),
        ("config.alert_rules", "telegram"),
    ], "only NotifySpec's default routes may name channels"


def test_channels_are_found_by_discovery() -> None:
    assert channel_names() == {"telegram", "email"}
