# -*- test-case-name: tests.test_daytime -*-
"""
Tests for L{netd.services.daytime}.
"""

from __future__ import annotations

import io
import os
import socket
import time

from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SynchronousTestCase, TestCase

from netd.config import ConfigError, parseConfig
from netd.services import serviceTypes
from netd.probe import probeConfig
from netd.services.daytime import (
    buildStreamFactory,
    daytimeLine,
    strftimeFormat,
)
from netd.sessions import SessionFactory
from tests.support import (
    GuardedRepliesMixin,
    makeContext,
    smallServiceConfig,
)
from tests.test_endtoend import freePorts
from tests.test_listeners import LOOPBACK, NetdTestMixin, echoConfig, waitFor

# 2026-12-07 06:13:24 UTC, a Monday.
MOMENT = 1796624004.75


class DaytimeLineTests(SynchronousTestCase):
    """
    Tests for the line and its settings.
    """

    def test_defaultFormat(self) -> None:
        """
        By default the line is C{ctime()}'s format in UTC, as inetd sends,
        with the zone, and CR LF.
        """
        context = makeContext("daytime")
        settings = context.settings
        self.assertEqual(
            daytimeLine(MOMENT, settings["format"], settings["utc"]),
            b"Mon Dec  7 06:13:24 2026 UTC\r\n",
        )

    def test_customFormat(self) -> None:
        """
        C{format} is any C{strftime} format.
        """
        self.assertEqual(
            daytimeLine(MOMENT, "%A, %B %d, %Y %H:%M:%S-%Z", True),
            b"Monday, December 07, 2026 06:13:24-UTC\r\n",
        )

    def test_localTime(self) -> None:
        """
        With C{utc = false} the line is in the process's time zone.
        """
        old = os.environ.get("TZ")
        os.environ["TZ"] = "EST+5"  # POSIX rule: needs no zoneinfo files
        time.tzset()

        def restore() -> None:
            if old is None:
                del os.environ["TZ"]
            else:
                os.environ["TZ"] = old
            time.tzset()

        self.addCleanup(restore)
        self.assertEqual(
            daytimeLine(MOMENT, "%H:%M %Z", False),
            b"01:13 EST\r\n",
        )

    def test_formatChecked(self) -> None:
        """
        A format must be a non-empty string of one line, of bounded output.
        """
        self.assertEqual(strftimeFormat("%c"), "%c")
        for bad, message in [
            (3, "expected a non-empty strftime format"),
            ("", "expected a non-empty strftime format"),
            ("%c\r\n", "without control characters"),
            ("x" * 300, "over 256"),
        ]:
            with self.assertRaises(ValueError) as caught:
                strftimeFormat(bad)
            self.assertIn(message, str(caught.exception))

    def test_configRejectsBadFormat(self) -> None:
        """
        A bad C{format} in a file is a configuration problem naming the key.
        """
        with self.assertRaises(ConfigError) as caught:
            parseConfig(
                serviceTypes(),
                smallServiceConfig("daytime", 1013, 'format = "a\\nb"'),
                "f",
            )
        self.assertIn("services.daytime.format", str(caught.exception))


class DaytimeStreamTests(SynchronousTestCase):
    """
    Tests for daytime over TCP, on a fake clock.
    """

    def test_lineThenClose(self) -> None:
        """
        A connection gets the line of the reactor's time, then is closed
        gracefully (after the line is written).
        """
        context = makeContext("daytime")
        context.reactor.advance(MOMENT)
        factory = SessionFactory(buildStreamFactory(context), context, "tcp:13")
        peer = IPv4Address("TCP", "127.0.0.1", 40000)
        session = factory.buildProtocol(peer)
        transport = StringTransport(peerAddress=peer)
        session.makeConnection(transport)
        self.assertEqual(transport.value(), b"Mon Dec  7 06:13:24 2026 UTC\r\n")
        self.assertTrue(transport.disconnecting)


class DaytimeDatagramTests(GuardedRepliesMixin, SynchronousTestCase):
    """
    Tests for daytime over UDP and its guard.
    """

    serviceType = "daytime"
    ownPort = 10013
    startTime = MOMENT

    def test_replyPerDatagram(self) -> None:
        """
        Each datagram, whatever it holds, gets the current line.
        """
        protocol = self.makeProtocol(format="%H:%M:%S")
        protocol.datagramReceived(b"", ("127.0.0.1", 40000))
        self.context.reactor.advance(1)
        protocol.datagramReceived(b"what time?", ("127.0.0.1", 40001))
        self.assertEqual(
            protocol.transport.written,
            [
                (b"06:13:24\r\n", ("127.0.0.1", 40000)),
                (b"06:13:25\r\n", ("127.0.0.1", 40001)),
            ],
        )


class DaytimeSocketTests(NetdTestMixin, TestCase):
    """
    Daytime on real sockets on 127.0.0.1.
    """

    async def test_tcpAndUdp(self) -> None:
        """
        Over TCP a client reads one line and the end of the stream; over UDP
        a datagram gets the line.
        """
        service = self.startNetd(echoConfig(name="daytime", type="daytime"))
        port = self.portNumber(service, "daytime", "stream")

        def read() -> bytes:
            with socket.create_connection((LOOPBACK, port), timeout=10) as sock:
                return sock.makefile("rb").read()

        line = await deferToThread(read)
        expected = time.strftime("%a %b %e %H:%M", time.gmtime()).encode()
        self.assertTrue(line.startswith(expected[:10]), line)
        self.assertTrue(line.endswith(b" UTC\r\n"), line)
        client = self.udpClient()
        udpPort = self.portNumber(service, "daytime", "datagram")
        client.transport.write(b"", (LOOPBACK, udpPort))
        await waitFor(lambda: client.received, 5, "UDP daytime reply")
        self.assertTrue(client.received[0][0].endswith(b" UTC\r\n"))

    async def test_probe(self) -> None:
        """
        The daytime probe passes against daytime over TCP and UDP and fails
        against a service that sends no line (time).
        """
        port, other = freePorts(2)
        self.startNetd(smallServiceConfig("daytime", port))
        out = io.StringIO()
        config = parseConfig(serviceTypes(), smallServiceConfig("daytime", port), "<t>")
        failed = await deferToThread(probeConfig, config, out, 2.0)
        self.assertEqual(failed, 0, out.getvalue())
        self.assertIn(" UTC'", out.getvalue())
        self.startNetd(smallServiceConfig("time", other))
        wrong = parseConfig(
            serviceTypes(), smallServiceConfig("daytime", other), "<wrong>"
        )
        out = io.StringIO()
        failed = await deferToThread(probeConfig, wrong, out, 2.0)
        self.assertEqual(failed, 2, out.getvalue())
        self.assertIn("not one line", out.getvalue())
