# -*- test-case-name: tests.test_drops -*-
"""
Tests for L{netd.drops.DropLog}.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.task import Clock
from twisted.logger import Logger
from twisted.trial.unittest import SynchronousTestCase

from netd.drops import DropLog


class DropLogTests(SynchronousTestCase):
    """
    Tests for L{DropLog}.
    """

    def setUp(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.patch(DropLog, "_log", Logger(observer=self.events.append))
        self.clock = Clock()
        self.drops = DropLog("echo", "dropped a datagram from", self.clock, 10)

    def test_firstLoggedAtOnce(self) -> None:
        """
        The first drop after a quiet period is logged at once, with peer and
        reason.
        """
        self.drops.record("privileged source port", "192.0.2.1")
        [event] = self.events
        self.assertEqual(event["peer"], "192.0.2.1")
        self.assertEqual(event["reason"], "privileged source port")
        self.assertEqual(event["service"], "echo")

    def test_summaryPerInterval(self) -> None:
        """
        Further drops within the interval are summed into one event at its
        end, by reason; a quiet interval logs nothing and the next drop is
        logged at once again.
        """
        self.drops.record("a", "p")
        for _ in range(5):
            self.drops.record("a", "p")
        self.drops.record("b", "p")
        self.assertEqual(len(self.events), 1)
        self.clock.advance(10)
        self.assertEqual(len(self.events), 2)
        self.assertEqual(self.events[1]["counts"], {"a": 5, "b": 1})
        self.assertEqual(self.events[1]["count"], 6)
        self.clock.advance(10)
        self.assertEqual(len(self.events), 2)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.drops.record("a", "q")
        self.assertEqual(len(self.events), 3)
        self.assertEqual(dict(self.drops.totals), {"a": 7, "b": 1})

    def test_stopFlushes(self) -> None:
        """
        L{DropLog.stop} logs what is pending and leaves no timer behind.
        """
        self.drops.record("a", "p")
        self.drops.record("a", "p")
        self.drops.stop()
        self.assertEqual(len(self.events), 2)
        self.assertEqual(self.clock.getDelayedCalls(), [])
