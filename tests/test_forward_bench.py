# -*- test-case-name: tests.test_forward_bench -*-
"""
Tests for C{bench/forward_bench.py}: it runs, in a tiny configuration.
"""

from __future__ import annotations

import shutil

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from tests.test_bench import loadBench


class ForwardBenchTests(SynchronousTestCase):
    """
    The forward benchmark measures both forwarders both ways.
    """

    def test_tinyRun(self) -> None:
        """
        Four MiB each way, at most a second per transfer, once: a table row
        per direction with figures for netd and socat and their ratios.
        """
        if shutil.which("socat") is None:
            raise SkipTest("socat is not installed (package socat)")
        bench = loadBench("forward_bench")
        output = bench.run(4, 1.0, 1)
        lines = output.splitlines()
        self.assertIn("netd MiB/s", lines[0])
        self.assertEqual(
            [line.split(" | ")[0] for line in lines[2:]], ["| upload", "| download"]
        )
        for line in lines[2:]:
            cells = [cell.strip() for cell in line.strip("| ").split("|")]
            self.assertEqual(len(cells), 7, line)
            self.assertGreater(float(cells[1]), 0)
            self.assertGreater(float(cells[2]), 0)
