"""The layering is checked, not hoped for: import-linter's contracts (pyproject.toml) hold, they
break when bot/ imports a cog, and no project module takes part in an import cycle."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("bot", "cogs", "storage")
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_imports(project: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(project)}
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def copy_project(to: Path) -> Path:
    for package in PACKAGES:
        shutil.copytree(
            ROOT / package, to / package, ignore=shutil.ignore_patterns("__pycache__", "*.ttf")
        )
    shutil.copy(ROOT / "pyproject.toml", to / "pyproject.toml")
    return to


def test_the_import_contracts_hold(tmp_path: Path) -> None:
    result = lint_imports(copy_project(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_the_contracts_break_when_the_pipeline_imports_a_cog(tmp_path: Path) -> None:
    project = copy_project(tmp_path)
    stage = project / "bot" / "pipeline" / "intake.py"
    stage.write_text(stage.read_text() + "\nimport cogs.generate  # noqa: E402\n")
    result = lint_imports(project)
    assert result.returncode != 0
    assert "Nothing imports the extensions (cogs are loaded by name) BROKEN" in result.stdout
    assert "bot.pipeline.intake -> cogs.generate" in result.stdout


def test_the_contracts_break_when_storage_reaches_up(tmp_path: Path) -> None:
    project = copy_project(tmp_path)
    module = project / "storage" / "clock.py"
    module.write_text(module.read_text() + "\nimport bot.pipeline  # noqa: E402\n")
    result = lint_imports(project)
    assert result.returncode != 0
    assert "storage imports nothing of the bot BROKEN" in result.stdout


def import_cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan), each one a cycle."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(root: str) -> None:
        work = [(root, iter(sorted(graph.find_modules_directly_imported_by(root))))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, edges = work[-1]
            for nxt in edges:
                if nxt not in index:
                    index[nxt] = low[nxt] = len(index)
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(graph.find_modules_directly_imported_by(nxt)))))
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
                if low[node] == index[node]:
                    group = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        group.append(member)
                        if member == node:
                            break
                    if len(group) > 1:
                        cycles.append(sorted(group))

    for module in sorted(graph.modules):
        if module not in index:
            visit(module)
    return cycles


def test_no_module_is_part_of_an_import_cycle() -> None:
    """Run-time imports only: helpers may name KlingBot under TYPE_CHECKING (RoboDanny's way)."""
    graph = grimp.build_graph(*PACKAGES, exclude_type_checking_imports=True)
    assert import_cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    graph = grimp.ImportGraph()
    for module in ("a", "a.x", "a.y", "a.z"):
        graph.add_module(module)
    graph.add_import(importer="a.x", imported="a.y")
    graph.add_import(importer="a.y", imported="a.z")
    graph.add_import(importer="a.z", imported="a.x")
    assert import_cycles(graph) == [["a.x", "a.y", "a.z"]]
