# -*- test-case-name: tests.test_policy -*-
"""
Tests for L{netd.policy}.
"""

from __future__ import annotations

import ipaddress

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from netd.limits import Limits
from netd.drops import DropLog
from netd.policy import AddressFilter, SessionPolicy


def networks(
    *prefixes: str,
) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    """
    @param prefixes: CIDR prefixes.
    @return: The parsed networks.
    """
    return tuple(ipaddress.ip_network(p) for p in prefixes)


class AddressFilterTests(SynchronousTestCase):
    """
    Tests for L{AddressFilter}.
    """

    def test_emptyListsAllowAll(self) -> None:
        """
        With no allow and no deny list, every address passes and the filter
        says it is inactive (so callers can skip it).
        """
        f = AddressFilter((), ())
        self.assertFalse(f.active)
        self.assertIsNone(f.check("203.0.113.5"))

    def test_allowList(self) -> None:
        """
        With an allow list, only addresses in it pass, IPv4 and IPv6.
        """
        f = AddressFilter(networks("10.0.0.0/8", "2001:db8::/32"), ())
        self.assertIsNone(f.check("10.9.8.7"))
        self.assertIsNone(f.check("2001:db8::1"))
        self.assertEqual(f.check("192.0.2.1"), "not in the allow list")
        self.assertEqual(f.check("2001:db9::1"), "not in the allow list")

    def test_denyWins(self) -> None:
        """
        An address in both lists is refused.
        """
        f = AddressFilter(networks("10.0.0.0/8"), networks("10.1.0.0/16"))
        self.assertIsNone(f.check("10.2.0.1"))
        self.assertEqual(f.check("10.1.0.1"), "in the deny list")

    def test_ipv4MappedAddresses(self) -> None:
        """
        An IPv4 client reaching an IPv6 socket (C{::ffff:10.0.0.1}) is judged
        by its IPv4 address.
        """
        f = AddressFilter((), networks("10.0.0.0/8"))
        self.assertEqual(f.check("::ffff:10.0.0.1"), "in the deny list")

    def test_cacheIsBounded(self) -> None:
        """
        The verdict cache never grows past its bound, however many distinct
        addresses are seen, and verdicts stay right.
        """
        f = AddressFilter((), networks("10.0.0.0/8"))
        for i in range(10000):
            f.check(f"10.{i // 256 % 256}.{i % 256}.1")
        self.assertLessEqual(len(f._verdicts), 4096)
        self.assertEqual(f.check("10.0.0.1"), "in the deny list")
        self.assertIsNone(f.check("192.0.2.1"))


class SessionPolicyTests(SynchronousTestCase):
    """
    Tests for L{SessionPolicy}.
    """

    def makePolicy(self, limits: Limits) -> SessionPolicy:
        """
        @param limits: The limits.
        @return: A policy on a fake clock.
        """
        return SessionPolicy(limits, DropLog("test", "refused", Clock(), 10))

    def test_countsPerPeerAndTotal(self) -> None:
        """
        Admitted sessions are counted per address and in total, and
        L{SessionPolicy.release} forgets an address with no sessions left.
        """
        policy = self.makePolicy(Limits(maxSessions=10, maxSessionsPerPeer=5))
        self.assertTrue(policy.admit("a"))
        self.assertTrue(policy.admit("a"))
        self.assertTrue(policy.admit("b"))
        self.assertEqual((policy.active, policy.sessionsFrom("a")), (3, 2))
        policy.release("a")
        policy.release("a")
        self.assertEqual(policy.sessionsFrom("a"), 0)
        self.assertNotIn("a", policy._perPeer)

    def test_refusalReasons(self) -> None:
        """
        Each refusal is recorded under its reason.
        """
        policy = self.makePolicy(
            Limits(maxSessions=2, maxSessionsPerPeer=1, deny=networks("192.0.2.0/24"))
        )
        self.assertFalse(policy.admit("192.0.2.1"))
        self.assertTrue(policy.admit("10.0.0.1"))
        self.assertFalse(policy.admit("10.0.0.1"))
        self.assertTrue(policy.admit("10.0.0.2"))
        self.assertFalse(policy.admit("10.0.0.3"))
        self.assertEqual(
            dict(policy.refusals.totals),
            {
                "in the deny list": 1,
                "address at its limit of 1 sessions": 1,
                "service at its limit of 2 sessions": 1,
            },
        )
