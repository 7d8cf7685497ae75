# -*- test-case-name: tests.test_imports -*-
"""
The C{netd} package has no import cycles.

Every module of C{netd} is parsed with L{ast} and every import of a C{netd}
module is collected: at module level and inside functions and methods alike,
since a function-local import that exists to dodge a cycle is still a cycle.
C{from netd.x import y} counts as an import of C{netd.x.y} when C{y} is a
submodule, and of C{netd.x} otherwise. Imports under C{if TYPE_CHECKING:} are
left out: they never execute, they only give the type checker names.
"""

from __future__ import annotations

import ast
import os
from collections.abc import Iterable, Iterator, Mapping

from twisted.trial.unittest import SynchronousTestCase

import netd

Graph = Mapping[str, Iterable[str]]


def packageModules(package: str, directory: str) -> dict[str, str]:
    """
    Find every module of a package on disk.

    @param package: the package's dotted name, C{"netd"}.
    @param directory: the package's directory.
    @return: a mapping from dotted module name to source file path.
    """
    modules: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(directory):
        dirnames[:] = [d for d in dirnames if d != "__pycache__"]
        if "__init__.py" not in filenames:
            dirnames[:] = []
            continue
        relative = os.path.relpath(dirpath, directory)
        parts = [package] + ([] if relative == "." else relative.split(os.sep))
        for filename in filenames:
            if not filename.endswith(".py"):
                continue
            stem = filename[:-3]
            name = ".".join(parts if stem == "__init__" else parts + [stem])
            modules[name] = os.path.join(dirpath, filename)
    return modules


def _isTypeChecking(test: ast.expr) -> bool:
    """
    @return: whether C{test} is C{TYPE_CHECKING} or C{typing.TYPE_CHECKING}.
    """
    if isinstance(test, ast.Name):
        return test.id == "TYPE_CHECKING"
    if isinstance(test, ast.Attribute):
        return test.attr == "TYPE_CHECKING"
    return False


def _importNodes(node: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """
    Walk a syntax tree for import statements, skipping C{if TYPE_CHECKING:}
    bodies (but not their C{else:} branches).
    """
    if isinstance(node, (ast.Import, ast.ImportFrom)):
        yield node
        return
    if isinstance(node, ast.If) and _isTypeChecking(node.test):
        for child in node.orelse:
            yield from _importNodes(child)
        return
    for child in ast.iter_child_nodes(node):
        yield from _importNodes(child)


def moduleImports(
    name: str, source: str, modules: Iterable[str], package: str
) -> set[str]:
    """
    The package modules one module imports.

    @param name: the importing module's dotted name.
    @param source: its source text.
    @param modules: every module name of the package.
    @param package: the package's name; imports outside it are ignored.
    @return: the imported package modules, C{name} itself excluded.
    """
    known = set(modules)
    found: set[str] = set()
    for node in _importNodes(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in known:
                    found.add(alias.name)
        elif node.level == 0 and node.module is not None:
            base = node.module
            if base != package and not base.startswith(package + "."):
                continue
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                if sub in known:
                    found.add(sub)
                elif base in known:
                    found.add(base)
    found.discard(name)
    return found


def importGraph(package: str, directory: str) -> dict[str, set[str]]:
    """
    The import graph of a package.

    @return: a mapping from each module to the package modules it imports.
    """
    modules = packageModules(package, directory)
    graph = {}
    for name, path in modules.items():
        with open(path, encoding="utf-8") as f:
            graph[name] = moduleImports(name, f.read(), modules, package)
    return graph


def findCycle(graph: Graph) -> list[str] | None:
    """
    Find one cycle in a directed graph by depth-first search.

    @param graph: a mapping from each node to the nodes it points at.
    @return: a cycle as a path whose first and last nodes are the same, or
        L{None} if the graph is acyclic.
    """
    done: set[str] = set()
    for root in sorted(graph):
        if root in done:
            continue
        path = [root]
        onPath = {root}
        stack = [iter(sorted(graph.get(root, ())))]
        while stack:
            for nxt in stack[-1]:
                if nxt in onPath:
                    return path[path.index(nxt) :] + [nxt]
                if nxt not in done:
                    path.append(nxt)
                    onPath.add(nxt)
                    stack.append(iter(sorted(graph.get(nxt, ()))))
                    break
            else:
                stack.pop()
                node = path.pop()
                onPath.discard(node)
                done.add(node)
    return None


def findCycles(graph: Graph) -> list[list[str]]:
    """
    One cycle per strongly connected component that has one.

    @return: cycles as paths (first node repeated last); empty if acyclic.
    """
    remaining = {k: set(v) for k, v in graph.items()}
    cycles = []
    while True:
        cycle = findCycle(remaining)
        if cycle is None:
            return cycles
        cycles.append(cycle)
        # Drop one edge of the cycle and look again, so every cycle is named.
        remaining[cycle[-2]].discard(cycle[-1])


class FindCycleTests(SynchronousTestCase):
    """
    Tests for L{findCycle}.
    """

    def test_cycle(self) -> None:
        """
        A cycle in a small graph is reported as a closed path.
        """
        graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set()}
        self.assertEqual(findCycle(graph), ["a", "b", "c", "a"])

    def test_twoNodes(self) -> None:
        """
        A two-node cycle is found too.
        """
        self.assertEqual(findCycle({"x": {"y"}, "y": {"x"}}), ["x", "y", "x"])

    def test_dag(self) -> None:
        """
        A directed acyclic graph, diamond included, has no cycle.
        """
        graph = {"a": {"b", "c"}, "b": {"d"}, "c": {"d"}, "d": set()}
        self.assertIsNone(findCycle(graph))
        self.assertEqual(findCycles(graph), [])


class ModuleImportsTests(SynchronousTestCase):
    """
    Tests for L{moduleImports}.
    """

    modules = ["p", "p.a", "p.b", "p.sub", "p.sub.c"]

    def test_kinds(self) -> None:
        """
        Module-level, function-local, C{from p import submodule} and
        C{import p.x.y} imports are all collected; C{TYPE_CHECKING} ones and
        other packages' are not.
        """
        source = (
            "from typing import TYPE_CHECKING\n"
            "import os\n"
            "from p.a import thing\n"
            "if TYPE_CHECKING:\n"
            "    from p.b import Other\n"
            "def f():\n"
            "    import p.sub.c\n"
            "from p import sub\n"
        )
        self.assertEqual(
            moduleImports("p.x", source, self.modules, "p"),
            {"p.a", "p.sub.c", "p.sub"},
        )


class NoCyclesTests(SynchronousTestCase):
    """
    The C{netd} package imports downward only.
    """

    def test_noCycles(self) -> None:
        """
        No chain of imports between C{netd} modules leads back to its start.
        """
        graph = importGraph("netd", os.path.dirname(netd.__file__))
        cycles = findCycles(graph)
        if cycles:
            self.fail("import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles))
