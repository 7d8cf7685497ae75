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


class ConnectionRateTests(SynchronousTestCase):
    """
    Tests for the connection-rate limits of L{SessionPolicy}.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1000)

    def makePolicy(self, **limits: object) -> SessionPolicy:
        """
        @param limits: L{Limits} fields.
        @return: A policy on L{clock}, with high session caps.
        """
        return SessionPolicy(
            Limits(maxSessions=10_000, maxSessionsPerPeer=10_000, **limits),  # type: ignore[arg-type]
            DropLog("test", "refused a session from", self.clock, 10),
        )

    def admitMany(self, policy: SessionPolicy, host: str, count: int) -> list[bool]:
        """
        @param policy: The policy.
        @param host: The address.
        @param count: How many sessions to ask for at this instant.
        @return: Each verdict.
        """
        return [policy.admit(host) for _ in range(count)]

    def test_unlimitedByDefault(self) -> None:
        """
        With no rate configured there are no meters and a burst of sessions
        is admitted.
        """
        policy = self.makePolicy()
        self.assertIsNone(policy.serviceRate)
        self.assertIsNone(policy.peerRate)
        self.assertEqual(self.admitMany(policy, "a", 500), [True] * 500)

    def test_perPeerPunishesOnlyTheSource(self) -> None:
        """
        A source over its rate is refused, with the reason counted and
        logged by the refusal log; another source is served at the same
        instant, and the source is served again once its bucket refills.
        """
        policy = self.makePolicy(
            maxConnectionsPerSecondPerPeer=2.0, connectionBurstPerPeer=3
        )
        self.assertEqual(self.admitMany(policy, "a", 5), [True] * 3 + [False] * 2)
        self.assertEqual(self.admitMany(policy, "b", 3), [True] * 3)
        self.assertEqual(
            dict(policy.refusals.totals),
            {"address over its limit of 2 connections per second": 2},
        )
        self.clock.advance(0.5)
        self.assertEqual(self.admitMany(policy, "a", 2), [True, False])

    def test_refusedAttemptsAreNotCharged(self) -> None:
        """
        Only admitted sessions use up a bucket: a source hammering at twice
        its rate still gets its rate.
        """
        policy = self.makePolicy(
            maxConnectionsPerSecondPerPeer=10.0, connectionBurstPerPeer=1
        )
        admitted = 0
        for _ in range(200):
            admitted += policy.admit("a")
            self.clock.advance(0.05)
        self.assertEqual(admitted, 100)

    def test_defaultBurstIsOneSecond(self) -> None:
        """
        A burst of 0 means one second's worth of the rate (at least one).
        """
        policy = self.makePolicy(maxConnectionsPerSecondPerPeer=4.5)
        self.assertEqual(self.admitMany(policy, "a", 7), [True] * 5 + [False] * 2)
        slow = self.makePolicy(maxConnectionsPerSecondPerPeer=0.1)
        self.assertEqual(self.admitMany(slow, "a", 2), [True, False])

    def test_serviceWide(self) -> None:
        """
        The service-wide rate counts every source together; it refuses only
        while over the rate and serves again as it refills (the service is
        never switched off for a while, as xinetd's C{cps} does).
        """
        policy = self.makePolicy(maxConnectionsPerSecond=10.0, connectionBurst=4)
        verdicts = [policy.admit(host) for host in "abcdef"]
        self.assertEqual(verdicts, [True] * 4 + [False] * 2)
        self.assertEqual(
            dict(policy.refusals.totals),
            {"service over its limit of 10 connections per second": 2},
        )
        self.clock.advance(0.1)
        self.assertEqual([policy.admit("g"), policy.admit("h")], [True, False])

    def test_peerCheckedBeforeService(self) -> None:
        """
        A source over its own rate is refused before it touches the
        service's budget, so a flood from one address cannot lock the
        others out.
        """
        policy = self.makePolicy(
            maxConnectionsPerSecond=5.0,
            connectionBurst=5,
            maxConnectionsPerSecondPerPeer=1.0,
            connectionBurstPerPeer=2,
        )
        self.assertEqual(
            self.admitMany(policy, "flood", 100), [True] * 2 + [False] * 98
        )
        self.assertEqual([policy.admit(h) for h in "abc"], [True] * 3)
        self.assertEqual(
            dict(policy.refusals.totals),
            {"address over its limit of 1 connections per second": 98},
        )

    def test_otherLimitsFirst(self) -> None:
        """
        A session refused by another limit (here the deny list) is not
        charged to the rate.
        """
        policy = SessionPolicy(
            Limits(maxConnectionsPerSecondPerPeer=1.0, deny=networks("192.0.2.0/24")),
            DropLog("test", "refused", self.clock, 10),
        )
        self.assertFalse(policy.admit("192.0.2.1"))
        assert policy.peerRate is not None
        self.assertEqual(policy.peerRate.tracked(), 0)

    def test_sourceTableBounded(self) -> None:
        """
        The per-source table holds at most C{maxRateSources} addresses,
        however many connect.
        """
        policy = SessionPolicy(
            Limits(maxSessions=100_000, maxConnectionsPerSecondPerPeer=1.0),
            DropLog("test", "refused", self.clock, 10),
            maxRateSources=50,
        )
        for i in range(1000):
            host = f"10.0.{i // 256}.{i % 256}"
            policy.admit(host)
            policy.release(host)
        assert policy.peerRate is not None
        self.assertEqual(policy.peerRate.tracked(), 50)

    def test_explicitClock(self) -> None:
        """
        The clock can be given apart from the refusal log's.
        """
        other = Clock()
        policy = SessionPolicy(
            Limits(maxConnectionsPerSecondPerPeer=1.0),
            DropLog("test", "refused", self.clock, 10),
            clock=other,
        )
        self.assertEqual(self.admitMany(policy, "a", 2), [True, False])
        self.clock.advance(10)
        self.assertFalse(policy.admit("a"))
        other.advance(1)
        self.assertTrue(policy.admit("a"))
