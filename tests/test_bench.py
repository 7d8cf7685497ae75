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


#: What h2load 1.52 prints at the end of a run.
H2LOAD_OUTPUT = """\
finished in 2.48s, 8054.18 req/s, 8.07MB/s
requests: 20000 total, 20000 started, 20000 done, 19990 succeeded, 10 failed, 0 errored, 0 timeout
status codes: 20000 2xx, 0 3xx, 0 4xx, 0 5xx
traffic: 20.04MB (21009977) total, 163.06KB (166977) headers (space savings 95.67%), 19.53MB (20480000) data
                     min         max         mean         sd        +/- sd
time for request:      458us     98.71ms     55.68ms      9.02ms    85.11%
"""


class H2BenchTests(SynchronousTestCase):
    """
    C{bench/h2_bench.py} reads h2load's summary right.
    """

    def test_parse(self) -> None:
        """
        Requests/s, MiB/s, the mean time per request in milliseconds and the
        failed count come from h2load's summary.
        """
        bench = loadBench("h2_bench")
        self.assertEqual(
            bench.parseH2load(H2LOAD_OUTPUT),
            {"rps": 8054.18, "mibps": 8.07, "mean": 55.68, "failed": 10.0},
        )

    def test_noSummary(self) -> None:
        """
        Output without a summary (h2load could not connect) is an error, not
        a figure.
        """
        bench = loadBench("h2_bench")
        with self.assertRaises(RuntimeError):
            bench.parseH2load("connect error\n")


class HTTP2MemoryBenchTests(SynchronousTestCase):
    """
    C{bench/h2_memory.py} and C{bench/h2_cpu.py} measure what they say.
    """

    def test_requestsAnswered(self) -> None:
        """
        The client bytes C{h2_memory} makes are all answered by the real
        stack: every request's body comes back, so its time per request is
        the time of whole requests.
        """
        bench = loadBench("h2_memory")
        root = self.mktemp()
        os.makedirs(root)
        with open(os.path.join(root, "f.bin"), "wb") as f:
            f.write(b"z" * 1024)
        chunks = bench.clientBytes("/f.bin", 25, 10)
        self.assertEqual(len(chunks), 1 + 3)
        spent, answered = bench.run(root, chunks)
        self.assertGreater(spent, 0)
        self.assertGreaterEqual(answered, 25 * 1024)
        self.assertLess(answered, 25 * 1024 * 2)

    def test_cpuSeconds(self) -> None:
        """
        C{h2_cpu.cpuSeconds} reads a process's CPU time, which grows as it
        works.
        """
        bench = loadBench("h2_cpu")
        before = bench.cpuSeconds(os.getpid())
        deadline = before + 0.05
        for _ in range(100_000):
            if bench.cpuSeconds(os.getpid()) >= deadline:
                break
            sum(range(10_000))
        self.assertGreaterEqual(bench.cpuSeconds(os.getpid()), deadline)
