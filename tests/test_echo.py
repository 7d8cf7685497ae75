# -*- test-case-name: tests.test_echo -*-
"""
Tests for L{netd.services.echo} and L{netd.datagrams}.
"""

from __future__ import annotations

import errno
import ipaddress

from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from netd.limits import Limits
from netd.descriptions import DatagramListener
from netd.services.echo import Echo, EchoDatagram, buildDatagramProtocol
from tests.support import FakeDatagramTransport, makeContext


class EchoTests(SynchronousTestCase):
    """
    Tests for the TCP L{Echo} protocol.
    """

    def setUp(self) -> None:
        self.transport = StringTransport()
        self.protocol = Echo()
        self.protocol.makeConnection(self.transport)

    def test_echoesBytesInOrder(self) -> None:
        """
        Every byte received is written back, in order, chunk after chunk.
        """
        self.protocol.dataReceived(b"hello ")
        self.protocol.dataReceived(b"\x00\xffworld")
        self.assertEqual(self.transport.value(), b"hello \x00\xffworld")

    def test_transportIsItsOwnProducer(self) -> None:
        """
        The transport is registered as its own streaming producer, so a full
        write buffer pauses reading instead of growing without bound.
        """
        self.assertIs(self.transport.producer, self.transport)
        self.assertTrue(self.transport.streaming)

    def test_chunksGoStraightToWrite(self) -> None:
        """
        Once connected, a chunk is handed to the transport's C{write}
        itself, with no call of the protocol's in between.
        """
        self.assertEqual(self.protocol.dataReceived, self.transport.write)

    def test_halfCloseFlushesThenCloses(self) -> None:
        """
        When the client stops sending, echo unregisters the producer and
        closes gracefully (after what is buffered), rather than dropping the
        connection and the pending echo.
        """
        self.assertTrue(IHalfCloseableProtocol.providedBy(self.protocol))
        self.protocol.dataReceived(b"last words")
        self.protocol.readConnectionLost()
        self.assertIsNone(self.transport.producer)
        self.assertTrue(self.transport.disconnecting)
        self.assertFalse(self.transport.disconnected)
        self.assertEqual(self.transport.value(), b"last words")


class EchoDatagramTests(SynchronousTestCase):
    """
    Tests for the UDP L{EchoDatagram} protocol and its guard.
    """

    def makeProtocol(self, **settings: object) -> EchoDatagram:
        """
        Build an echo datagram protocol on a fake clock and transport.

        @param settings: Echo settings over the defaults.
        @return: The protocol; its transport is a L{FakeDatagramTransport}.
        """
        self.context = makeContext("echo", settings=settings, ownPorts={10007})
        listener = DatagramListener("udp:10007", 10007, "127.0.0.1")
        protocol = buildDatagramProtocol(self.context, listener)
        protocol.transport = FakeDatagramTransport()
        return protocol

    def test_repliesToSender(self) -> None:
        """
        A datagram goes back, unchanged, to the address it came from, and is
        counted both ways.
        """
        protocol = self.makeProtocol()
        protocol.datagramReceived(b"x" * 1400, ("127.0.0.1", 40000))
        self.assertEqual(
            protocol.transport.written, [(b"x" * 1400, ("127.0.0.1", 40000))]
        )
        counters = self.context.counters
        self.assertEqual((counters.datagramsIn, counters.datagramBytesIn), (1, 1400))
        self.assertEqual((counters.datagramsOut, counters.datagramBytesOut), (1, 1400))

    def test_noReplyToPortZero(self) -> None:
        """
        Source port 0 never gets a reply, even with the port floor at 0.
        """
        protocol = self.makeProtocol(udp_min_source_port=0)
        protocol.datagramReceived(b"x", ("127.0.0.1", 0))
        self.assertEqual(protocol.transport.written, [])
        self.assertEqual(self.context.datagramDrops.totals, {"source port 0": 1})

    def test_noReplyToPrivilegedPort(self) -> None:
        """
        By default a source port below 1024 (where servers such as chargen
        live) gets no reply; the floor is configurable.
        """
        protocol = self.makeProtocol()
        protocol.datagramReceived(b"x", ("127.0.0.1", 19))
        protocol.datagramReceived(b"x", ("127.0.0.1", 1023))
        self.assertEqual(protocol.transport.written, [])
        self.assertEqual(self.context.counters.datagramsDropped, 2)
        protocol = self.makeProtocol(udp_min_source_port=0)
        protocol.datagramReceived(b"x", ("127.0.0.1", 19))
        self.assertEqual(protocol.transport.written, [(b"x", ("127.0.0.1", 19))])

    def test_noReplyToOwnPorts(self) -> None:
        """
        A datagram from one of netd's own listening ports gets no reply (no
        loops between netd services), unless that rule is switched off.
        """
        protocol = self.makeProtocol()
        protocol.datagramReceived(b"x", ("127.0.0.1", 10007))
        self.assertEqual(protocol.transport.written, [])
        self.assertEqual(
            self.context.datagramDrops.totals, {"source is a netd service port": 1}
        )
        protocol = self.makeProtocol(udp_refuse_own_ports=False)
        protocol.datagramReceived(b"x", ("127.0.0.1", 10007))
        self.assertEqual(len(protocol.transport.written), 1)

    def test_replyBudgetPerSource(self) -> None:
        """
        One source address gets at most C{udp_reply_burst} replies back to
        back, then C{udp_reply_rate} per second; other sources are not
        affected.
        """
        protocol = self.makeProtocol(udp_reply_rate=2.0, udp_reply_burst=3)
        for port in range(40000, 40010):
            protocol.datagramReceived(b"x", ("10.0.0.1", port))
        self.assertEqual(len(protocol.transport.written), 3)
        protocol.datagramReceived(b"y", ("10.0.0.2", 40000))
        self.assertEqual(len(protocol.transport.written), 4)
        self.context.reactor.advance(1.0)
        for port in range(40000, 40010):
            protocol.datagramReceived(b"x", ("10.0.0.1", port))
        self.assertEqual(len(protocol.transport.written), 6)
        self.assertEqual(self.context.datagramDrops.totals["reply budget exceeded"], 15)

    def test_denyList(self) -> None:
        """
        A source in the service's deny list gets no reply.
        """
        self.context = makeContext(
            "echo", limits=Limits(deny=(ipaddress.ip_network("10.0.0.0/8"),))
        )
        protocol = buildDatagramProtocol(
            self.context, DatagramListener("udp:7", 7, "127.0.0.1")
        )
        protocol.transport = FakeDatagramTransport()
        protocol.datagramReceived(b"x", ("10.1.2.3", 40000))
        protocol.datagramReceived(b"x", ("192.0.2.1", 40000))
        self.assertEqual(protocol.transport.written, [(b"x", ("192.0.2.1", 40000))])
        self.assertEqual(self.context.datagramDrops.totals, {"in the deny list": 1})

    def test_sendFailureIsCounted(self) -> None:
        """
        An error from the socket (full buffer, unreachable) is counted as a
        drop, never raised into the reactor.
        """
        protocol = self.makeProtocol()
        protocol.transport.error = OSError(errno.ENOBUFS, "No buffer space available")
        protocol.datagramReceived(b"x", ("127.0.0.1", 40000))
        self.assertEqual(self.context.counters.datagramsOut, 0)
        self.assertEqual(
            self.context.datagramDrops.totals,
            {"send failed (No buffer space available)": 1},
        )
