# -*- test-case-name: tests.test_ratelimit -*-
"""
Tests for L{netd.ratelimit.RateMeter}.
"""

from __future__ import annotations

import socket

from twisted.internet.task import Clock
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SynchronousTestCase, TestCase

from netd.ratelimit import RateMeter
from tests.test_listeners import LOOPBACK, NetdTestMixin, echoConfig


def echoFrom(source: str, port: int, payload: bytes) -> bytes:
    """
    Connect from a given loopback address, send C{payload}, half-close and
    read until the server ends the stream. Blocking: run it in a thread.

    @param source: The client's address (any of 127.0.0.0/8).
    @param port: The server's port on L{LOOPBACK}.
    @param payload: What to send.
    @return: Everything received (nothing when the server refused).
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.bind((source, 0))
        sock.connect((LOOPBACK, port))
        try:
            sock.sendall(payload)
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            # Refused: the server may have closed before the bytes went out.
            return b""
        chunks = []
        for _ in range(1000):
            try:
                data = sock.recv(65536)
            except ConnectionResetError:
                break
            if not data:
                break
            chunks.append(data)
        return b"".join(chunks)


class RateMeterTests(SynchronousTestCase):
    """
    Tests for L{RateMeter}.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1000)

    def test_burstThenRate(self) -> None:
        """
        A key may take C{burst} events at once, then one per C{1/rate}
        seconds; quiet time refills the bucket, never beyond C{burst}.
        """
        meter = RateMeter(2, 3, self.clock.seconds)
        self.assertEqual([meter.take("k") for _ in range(5)], [True] * 3 + [False] * 2)
        self.clock.advance(0.5)
        self.assertEqual([meter.take("k") for _ in range(2)], [True, False])
        self.clock.advance(3600)
        self.assertEqual([meter.take("k") for _ in range(5)], [True] * 3 + [False] * 2)

    def test_fractionalRate(self) -> None:
        """
        A rate below one per second spaces events by more than a second.
        """
        meter = RateMeter(0.25, 1, self.clock.seconds)
        self.assertTrue(meter.take("k"))
        self.clock.advance(3.9)
        self.assertFalse(meter.take("k"))
        self.clock.advance(0.1)
        self.assertTrue(meter.take("k"))

    def test_allowsDoesNotCharge(self) -> None:
        """
        L{RateMeter.allows} only looks; L{RateMeter.charge} counts.
        """
        meter = RateMeter(1, 1, self.clock.seconds)
        self.assertTrue(meter.allows("k"))
        self.assertTrue(meter.allows("k"))
        self.assertEqual(meter.tracked(), 0)
        meter.charge("k")
        self.assertFalse(meter.allows("k"))

    def test_keysAreIndependent(self) -> None:
        """
        One key using up its bucket leaves another's full.
        """
        meter = RateMeter(1, 1, self.clock.seconds)
        self.assertTrue(meter.take("a"))
        self.assertFalse(meter.take("a"))
        self.assertTrue(meter.take("b"))

    def test_tableBounded(self) -> None:
        """
        However many keys are seen, at most C{maxKeys} have state.
        """
        meter = RateMeter(1, 1, self.clock.seconds, maxKeys=100)
        for i in range(1000):
            meter.take(f"10.0.{i // 256}.{i % 256}")
        self.assertEqual(meter.tracked(), 100)

    def test_sweepKeepsBusyKeys(self) -> None:
        """
        When the table is full, keys whose bucket is full again are forgotten
        first, so a key that is still over its rate keeps its state.
        """
        meter = RateMeter(1, 1, self.clock.seconds, maxKeys=10)
        for i in range(9):
            meter.take(f"old{i}")
        self.clock.advance(5)
        meter.take("busy")
        meter.take("new")
        self.assertEqual(meter.tracked(), 2)
        self.assertFalse(meter.take("busy"))


class ConnectionRateSocketTests(NetdTestMixin, TestCase):
    """
    The per-source connection-rate limit of a real echo service.
    """

    async def test_onlyTheFastSourceIsRefused(self) -> None:
        """
        With at most one connection per second per source and a burst of 3,
        a client opening 5 connections at once gets 3 echoed and 2 closed
        unanswered, refused with a logged reason; a client from another
        address is served meanwhile.
        """
        events = self.captureEvents()
        service = self.startNetd(
            echoConfig(
                listen='"tcp:0:interface=127.0.0.1"',
                limits="max_connections_per_second_per_peer = 0.01\n"
                "connection_burst_per_peer = 3",
            )
        )
        port = self.portNumber(service, "echo", "stream")
        replies = []
        for _ in range(5):
            replies.append(await deferToThread(echoFrom, LOOPBACK, port, b"ping"))
        self.assertEqual(replies, [b"ping"] * 3 + [b""] * 2)
        other = await deferToThread(echoFrom, "127.0.0.2", port, b"pong")
        self.assertEqual(other, b"pong")
        policy = self.instance(service, "echo").context.policy
        reason = "address over its limit of 0.01 connections per second"
        self.assertEqual(dict(policy.refusals.totals), {reason: 2})
        logged = [e for e in events if e.get("reason") == reason]
        self.assertEqual(logged[0]["peer"], LOOPBACK)
