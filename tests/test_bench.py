# -*- test-case-name: tests.test_bench -*-
"""
Tests for the event loops of C{bench/echo_instructions.py}: each kind of
server it counts must really echo, or its count means nothing.
"""

from __future__ import annotations

import importlib.util
import os

from twisted.trial.unittest import SkipTest, SynchronousTestCase

BENCH = os.path.join(os.path.dirname(os.path.dirname(__file__)), "bench")


def loadBench(name: str):  # type: ignore[no-untyped-def]
    """
    @param name: A script of C{bench/}, without C{.py}.
    @return: It, as a module.
    """
    spec = importlib.util.spec_from_file_location(
        f"bench_{name}", os.path.join(BENCH, f"{name}.py")
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class EchoInstructionsTests(SynchronousTestCase):
    """
    Every kind of server in C{echo_instructions.py} echoes each message of
    every round, whole.
    """

    def setUp(self) -> None:
        self.bench = loadBench("echo_instructions")

    def test_kindsEcho(self) -> None:
        """
        C{child} runs rounds of echoes through each kind without an error
        (it raises if an echo does not come back whole).
        """
        for kind in ("netd", "twisted", "python"):
            self.bench.child(kind, 3, 5)

    def test_uvloopEchoes(self) -> None:
        """
        So does the uvloop kind, where uvloop is installed.
        """
        if not self.bench.importable("uvloop"):
            raise SkipTest("uvloop is not installed")
        self.bench.child("uvloop", 3, 5)

    def test_brokenEchoIsCaught(self) -> None:
        """
        A server that sends back something else makes C{child} raise.
        """

        def garble(pairs):  # type: ignore[no-untyped-def]
            def turn() -> None:
                for client, server in pairs:
                    server.send(server.recv(128)[::-1] + b"!")

            return turn

        self.bench.pythonLoop = garble
        self.assertRaises(RuntimeError, self.bench.child, "python", 2, 1)
