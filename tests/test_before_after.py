# -*- test-case-name: tests.test_before_after -*-
"""
Tests for C{bench/before_after.py}: it reads netd's ratios to its peer out of
each benchmark's Markdown output and sets two checkouts' medians side by side.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from tests.test_bench import loadBench

RUN_OUTPUT = """\
Python 3.11.7, Twisted 26.10.0, Linux 6.18, 2 CPUs; 1 x 3 s per workload.

| workload | netd | baseline | netd / baseline | netd server CPU | baseline server CPU |
|---|---|---|---|---|---|
| tcp-echo-50x64 | 88,130 msg/s | 60,175 msg/s | 1.46 (1.30-1.60) | 8.0 µs/msg | 16.0 µs/msg |
| tcp-bulk-echo | 817 MB/s | 253 MB/s | 3.23 | 1,200.0 µs/MB | 600.0 µs/MB |

| workload | netd p50 / p99 µs | baseline p50 / p99 µs | netd loss % |
|---|---|---|---|
| tcp-echo-50x64 | 448 / 1,286 | 799 / 1,417 | – |
"""

HTTP_OUTPUT = """\
wrk -t1 -c50 -d1s, keep-alive, median of 1 (req/s min-max in brackets)

| file | server | req/s | MiB/s | p99 ms | netd / twistd web | netd / nginx |
|---|---|---|---|---|---|---|
| 1 KiB | netd | 20,000 (21,907-21,907) | 26.2 | 12.74 | 5.63x | 1.00x |
| 1 KiB | twistd web | 4,000 (3,895-3,895) | 4.6 | 45.53 |  |  |
| 1 KiB | nginx | 25,000 (21,922-21,922) | 26.7 | 11.04 |  |  |
"""

CHAT_OUTPUT = """\
chat fan-out: 200 clients, 10 senders

| offered msg/s | offered deliveries/s | server | deliveries/s | p50 ms | p99 ms | netd / twisted |
|---|---|---|---|---|---|---|
| 1,000 | 199,000 | netd | 150,000 | 6.0 | 59.7 | 1.00 |
| 1,000 | 199,000 | twisted | 100,000 | 3.0 | 7.9 |  |
| 1,000 | 199,000 | ncat | 300,000 | 12.0 | 22.6 |  |
"""

FORWARD_OUTPUT = """\
forward vs socat: one connection, up to 64 MiB or 1 s per transfer, median of 1
| direction | netd MiB/s | socat MiB/s | netd/socat | netd ms CPU/MiB | socat ms CPU/MiB | netd/socat |
|---|---|---|---|---|---|---|
| upload | 450 | 300 | 1.16 | 0.75 | 1.50 | 0.71 |
"""


class ParsingTests(SynchronousTestCase):
    """
    Each bench's table gives one ratio per row, netd's figure over the
    peer's, computed from the figures rather than the rounded ratio columns
    where both are printed.
    """

    def setUp(self) -> None:
        self.module = loadBench("before_after")

    def test_number(self) -> None:
        """
        The first number of a cell, with thousands separators, ranges and
        units after it.
        """
        self.assertEqual(self.module.number("1,843.2 MiB/s"), 1843.2)
        self.assertEqual(self.module.number("2.22 (1.9-2.4)"), 2.22)
        self.assertEqual(self.module.number("5.63x"), 5.63)
        self.assertRaises(ValueError, self.module.number, "–")

    def test_tables(self) -> None:
        """
        Every Markdown table, header first, without the separator line.
        """
        found = self.module.tables(RUN_OUTPUT)
        self.assertEqual(len(found), 2)
        self.assertEqual(found[0][0][0], "workload")
        self.assertEqual(len(found[0]), 3)
        self.assertEqual(
            found[1][1], ["tcp-echo-50x64", "448 / 1,286", "799 / 1,417", "–"]
        )

    def test_run(self) -> None:
        """
        C{run.py}: the throughput ratio column and the quotient of the CPU
        columns, for each workload.
        """
        self.assertEqual(
            self.module.runRatios(RUN_OUTPUT),
            {
                "tcp-echo-50x64 throughput": 1.46,
                "tcp-echo-50x64 server CPU (lower is better)": 0.5,
                "tcp-bulk-echo throughput": 3.23,
                "tcp-bulk-echo server CPU (lower is better)": 2.0,
            },
        )

    def test_http(self) -> None:
        """
        C{http_bench.py}: netd's req/s over each peer's.
        """
        self.assertEqual(
            self.module.httpRatios(HTTP_OUTPUT),
            {"1 KiB req/s vs twistd web": 5.0, "1 KiB req/s vs nginx": 0.8},
        )

    def test_chat(self) -> None:
        """
        C{chat.py}: deliveries/s and p50 latency over each peer's, per rate.
        """
        self.assertEqual(
            self.module.chatRatios(CHAT_OUTPUT),
            {
                "1,000/s deliveries vs twisted": 1.5,
                "1,000/s p50 vs twisted (lower is better)": 2.0,
                "1,000/s deliveries vs ncat": 0.5,
                "1,000/s p50 vs ncat (lower is better)": 0.5,
            },
        )

    def test_forward(self) -> None:
        """
        C{forward_bench.py}: MiB/s and CPU per MiB over socat's.
        """
        self.assertEqual(
            self.module.forwardRatios(FORWARD_OUTPUT),
            {"upload MiB/s": 1.5, "upload CPU/MiB (lower is better)": 0.5},
        )

    def test_missingTable(self) -> None:
        """
        Output without the expected table is a L{ValueError} naming the
        column looked for, not a traceback from deep inside.
        """
        error = self.assertRaises(
            ValueError, self.module.runRatios, "bench/run.py: failed\n"
        )
        self.assertIn("'workload'", str(error))

    def test_sideBySide(self) -> None:
        """
        Medians with their range for each checkout, and after over before;
        a row missing on one side is left out.
        """
        table = self.module.sideBySide(
            "run",
            [{"a": 1.0, "b": 1.0}, {"a": 2.0}, {"a": 3.0}],
            [{"a": 2.0}, {"a": 4.0}, {"a": 6.0}],
        )
        lines = table.splitlines()
        self.assertEqual(len(lines), 3)
        self.assertEqual(
            lines[2], "| run | a | 2.00 (1.00-3.00) | 4.00 (2.00-6.00) | 2.000 |"
        )
