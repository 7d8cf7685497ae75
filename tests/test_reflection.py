# -*- test-case-name: tests.test_reflection -*-
"""
Tests for L{netd.reflection.ReplyGuard}.
"""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from netd.reflection import ReplyGuard


class ReplyGuardTests(SynchronousTestCase):
    """
    Tests for L{ReplyGuard}.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1000)

    def test_portRules(self) -> None:
        """
        Port 0 and ports below the floor are refused, as are netd's own
        ports; the set of own ports is read live.
        """
        own: set[int] = set()
        guard = ReplyGuard(1024, own, 1000, 1000, self.clock.seconds)
        self.assertEqual(guard.check("h", 0), "source port 0")
        self.assertEqual(guard.check("h", 1023), "privileged source port")
        self.assertIsNone(guard.check("h", 5000))
        own.add(5000)
        self.assertEqual(guard.check("h", 5000), "source is a netd service port")

    def test_floorZeroStillRefusesPortZero(self) -> None:
        """
        A floor of 0 answers every port but 0.
        """
        guard = ReplyGuard(0, set(), 1000, 1000, self.clock.seconds)
        self.assertEqual(guard.check("h", 0), "source port 0")
        self.assertIsNone(guard.check("h", 1))

    def test_rateAndBurst(self) -> None:
        """
        A source may take C{burst} replies at once, then one per
        C{1/rate} seconds; the budget refills while it is quiet, never
        beyond C{burst}.
        """
        guard = ReplyGuard(1024, set(), 10, 5, self.clock.seconds)
        results = [guard.check("h", 40000) for _ in range(8)]
        self.assertEqual(results.count(None), 5)
        self.clock.advance(0.1)
        self.assertIsNone(guard.check("h", 40000))
        self.assertEqual(guard.check("h", 40000), "reply budget exceeded")
        self.clock.advance(100)
        results = [guard.check("h", 40000) for _ in range(8)]
        self.assertEqual(results.count(None), 5)

    def test_sourcesAreIndependent(self) -> None:
        """
        One source exhausting its budget does not touch another's.
        """
        guard = ReplyGuard(1024, set(), 1, 1, self.clock.seconds)
        self.assertIsNone(guard.check("a", 40000))
        self.assertIsNotNone(guard.check("a", 40001))
        self.assertIsNone(guard.check("b", 40000))

    def test_trackedSourcesBounded(self) -> None:
        """
        However many source addresses send, the state kept is bounded.
        """
        guard = ReplyGuard(1024, set(), 1, 1, self.clock.seconds, maxSources=100)
        for i in range(1000):
            guard.check(f"10.0.{i // 256}.{i % 256}", 40000)
        self.assertLessEqual(guard.tracked(), 100)

    def test_sweepForgetsRefilledSources(self) -> None:
        """
        When the table is full, sources whose budget has refilled are
        forgotten first, so recent heavy senders keep their state.
        """
        guard = ReplyGuard(1024, set(), 1, 1, self.clock.seconds, maxSources=10)
        for i in range(9):
            guard.check(f"old{i}", 40000)
        self.clock.advance(5)
        guard.check("heavy", 40000)
        guard.check("new", 40000)
        self.assertEqual(guard.tracked(), 2)
        self.assertEqual(guard.check("heavy", 40000), "reply budget exceeded")
