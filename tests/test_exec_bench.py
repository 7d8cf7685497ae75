# -*- test-case-name: tests.test_exec_bench -*-
"""
Tests for C{bench/exec_bench.py}: it runs, in a tiny configuration.
"""

from __future__ import annotations

import os

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from tests.test_bench import loadBench


class ExecBenchTests(SynchronousTestCase):
    """
    The exec benchmark measures netd and xinetd running the same program.
    """

    def test_tinyRun(self) -> None:
        """
        Ten connections each: a row per daemon with positive figures, and
        the ratio row.
        """
        if not os.access("/usr/sbin/xinetd", os.X_OK):
            raise SkipTest("xinetd is not installed (package xinetd)")
        bench = loadBench("exec_bench")
        lines = bench.run(10).splitlines()
        self.assertIn("median ms", lines[0])
        self.assertEqual(
            [line.split(" | ")[0] for line in lines[2:]],
            ["| netd", "| xinetd", "| netd / xinetd"],
        )
        for line in lines[2:4]:
            cells = [cell.strip() for cell in line.strip("| ").split("|")]
            self.assertEqual(cells[1], "10")
            self.assertGreater(float(cells[2]), 0)
            self.assertGreaterEqual(float(cells[3]), float(cells[2]))
