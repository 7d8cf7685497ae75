# -*- test-case-name: tests.test_words -*-
"""
Tests for L{netd.words}.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from netd.words import plural


class PluralTests(SynchronousTestCase):
    """
    L{plural} counts nouns correctly.
    """

    def test_plural(self) -> None:
        """
        One is singular; zero and more are plural, regular or given.
        """
        self.assertEqual(plural(1, "service"), "1 service")
        self.assertEqual(plural(0, "service"), "0 services")
        self.assertEqual(plural(2, "problem"), "2 problems")
        self.assertEqual(plural(3, "process", "processes"), "3 processes")
