# -*- test-case-name: tests.test_timeservice -*-
"""
Tests for L{netd.services.timeservice}, the RFC 868 time service.
"""

from __future__ import annotations

import calendar
import io
import socket
import struct
import time

from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SynchronousTestCase, TestCase

from netd.config import parseConfig
from netd.services import serviceTypes
from netd.probe import ProbeFailed, ProbeTarget, probeConfig
from netd.services.timeservice import (
    WRAP,
    buildStreamFactory,
    encode,
    fromRfc868Seconds,
    rfc868Seconds,
    timeProbe,
)
from netd.sessions import SessionFactory
from tests.support import (
    GuardedRepliesMixin,
    makeContext,
    smallServiceConfig,
)
from tests.test_endtoend import freePorts
from tests.test_listeners import LOOPBACK, NetdTestMixin, echoConfig, waitFor


def utc(*fields: int) -> int:
    """
    @param fields: Year, month, day, hour, minute, second.
    @return: The POSIX time of that UTC moment.
    """
    return calendar.timegm((*fields, 0, 0, 0))


class ValueTests(SynchronousTestCase):
    """
    Tests for the RFC 868 count and its wrap in 2036.
    """

    def test_rfcExamples(self) -> None:
        """
        RFC 868's own examples: 1970-01-01 is 2,208,988,800 and 1983-05-01
        is 2,629,584,000; 1900-01-01 is 0.
        """
        self.assertEqual(rfc868Seconds(0), 2_208_988_800)
        self.assertEqual(rfc868Seconds(utc(1983, 5, 1, 0, 0, 0)), 2_629_584_000)
        self.assertEqual(rfc868Seconds(utc(1900, 1, 1, 0, 0, 0)), 0)
        self.assertEqual(encode(0), struct.pack("!I", 2_208_988_800))
        self.assertEqual(encode(0), b"\x83\xaa\x7e\x80")

    def test_knownDate(self) -> None:
        """
        A known date: 2026-12-07 06:13:24 UTC, fractions dropped.
        """
        moment = utc(2026, 12, 7, 6, 13, 24)
        self.assertEqual(rfc868Seconds(moment + 0.999), moment + 2_208_988_800)

    def test_wrap2036(self) -> None:
        """
        The count is modulo 2**32: it reaches 2**32 - 1 at 2036-02-07
        06:28:15 UTC and goes on from 0 a second later, and 4 bytes still
        go out (no overflow, no sign).
        """
        self.assertEqual(WRAP, utc(2036, 2, 7, 6, 28, 16))
        self.assertEqual(rfc868Seconds(WRAP - 1), 2**32 - 1)
        self.assertEqual(encode(WRAP - 1), b"\xff\xff\xff\xff")
        self.assertEqual(rfc868Seconds(WRAP), 0)
        self.assertEqual(encode(WRAP), b"\x00\x00\x00\x00")
        self.assertEqual(rfc868Seconds(WRAP + 86400), 86400)

    def test_decodeAcrossWrap(self) -> None:
        """
        Decoding picks the era nearest a known time, so a count just after
        the wrap is read as 2036, not 1900, and one just before as 2036 too.
        """
        for moment in (WRAP - 5, WRAP, WRAP + 5, 0, utc(2026, 12, 7, 0, 0, 0)):
            for near in (moment - 1000, moment + 1000):
                self.assertEqual(fromRfc868Seconds(rfc868Seconds(moment), near), moment)


class TimeStreamTests(SynchronousTestCase):
    """
    Tests for time over TCP, on a fake clock.
    """

    def test_fourBytesThenClose(self) -> None:
        """
        A connection gets the 4 bytes of the reactor's time, then is closed
        gracefully; across the wrap too.
        """
        context = makeContext("time")
        factory = SessionFactory(buildStreamFactory(context), context, "tcp:37")
        peer = IPv4Address("TCP", "127.0.0.1", 40000)
        context.reactor.advance(WRAP - 1)
        for expected in (b"\xff\xff\xff\xff", b"\x00\x00\x00\x00"):
            session = factory.buildProtocol(peer)
            transport = StringTransport(peerAddress=peer)
            session.makeConnection(transport)
            self.assertEqual(transport.value(), expected)
            self.assertTrue(transport.disconnecting)
            context.reactor.advance(1)


class TimeDatagramTests(GuardedRepliesMixin, SynchronousTestCase):
    """
    Tests for time over UDP and its guard.
    """

    serviceType = "time"
    ownPort = 10037

    def test_replyPerDatagram(self) -> None:
        """
        Each datagram, empty as RFC 868 has it or not, gets 4 bytes.
        """
        protocol = self.makeProtocol()
        protocol.datagramReceived(b"", ("127.0.0.1", 40000))
        protocol.datagramReceived(b"x" * 100, ("127.0.0.1", 40000))
        self.assertEqual(
            protocol.transport.written,
            [(encode(0), ("127.0.0.1", 40000))] * 2,
        )


class TimeSocketTests(NetdTestMixin, TestCase):
    """
    Time on real sockets on 127.0.0.1.
    """

    async def test_tcpAndUdp(self) -> None:
        """
        Over TCP a client reads 4 bytes and the end of the stream, over UDP
        a 4-byte datagram; both decode to now.
        """
        service = self.startNetd(echoConfig(name="time", type="time"))
        port = self.portNumber(service, "time", "stream")

        def read() -> bytes:
            with socket.create_connection((LOOPBACK, port), timeout=10) as sock:
                return sock.makefile("rb").read()

        answer = await deferToThread(read)
        self.assertEqual(len(answer), 4)
        now = time.time()
        decoded = fromRfc868Seconds(struct.unpack("!I", answer)[0], now)
        self.assertLess(abs(decoded - now), 5)
        client = self.udpClient()
        client.transport.write(
            b"", (LOOPBACK, self.portNumber(service, "time", "datagram"))
        )
        await waitFor(lambda: client.received, 5, "UDP time reply")
        self.assertEqual(len(client.received[0][0]), 4)

    async def test_probe(self) -> None:
        """
        The time probe passes against time over TCP and UDP, fails against a
        service that does not send 4 bytes (daytime), and fails against a
        clock that is far off.
        """
        port, other = freePorts(2)
        self.startNetd(smallServiceConfig("time", port))
        out = io.StringIO()
        config = parseConfig(serviceTypes(), smallServiceConfig("time", port), "<t>")
        failed = await deferToThread(probeConfig, config, out, 2.0)
        self.assertEqual(failed, 0, out.getvalue())
        self.assertIn(" UTC", out.getvalue())
        service = config.services[0]
        target = ProbeTarget(
            service, service.listeners[0], socket.AF_INET, (LOOPBACK, port)
        )
        with self.assertRaises(ProbeFailed) as caught:
            await deferToThread(timeProbe, target, lambda: time.time() + 3600)
        # Whole seconds against a float clock: 3600 or 3601 seconds off.
        self.assertRegex(str(caught.exception), r"-360[01]s from this host's")
        self.startNetd(smallServiceConfig("daytime", other))
        wrong = parseConfig(
            serviceTypes(), smallServiceConfig("time", other), "<wrong>"
        )
        out = io.StringIO()
        failed = await deferToThread(probeConfig, wrong, out, 2.0)
        self.assertEqual(failed, 2, out.getvalue())
        self.assertIn("not 4", out.getvalue())
