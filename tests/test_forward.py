# -*- test-case-name: tests.test_forward -*-
"""
Tests for L{netd.services.forward}: the protocol logic on fake transports
and a fake reactor.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import error
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from netd.config import ServiceConfig
from netd.descriptions import DatagramListener, StreamListener
from netd.services import serviceTypes
from netd.services.forward import (
    ForwardDatagram,
    ForwardServer,
    buildDatagramProtocol,
    buildStreamFactory,
    checkConfig,
    datagramTarget,
    proxyProtocol,
    proxyV2Header,
    streamTarget,
)
from tests.support import FakeDatagramTransport, makeContext


class HalfCloseTransport(StringTransport):
    """
    A L{StringTransport} that records half-closes and has a session's
    C{closeReason}.
    """

    closeReason: str | None = None
    wroteEof = False

    def loseWriteConnection(self) -> None:
        """
        Record the half-close.
        """
        self.wroteEof = True


def forwardContext(reactor: Any, **settings: object) -> Any:
    """
    @param reactor: The fake reactor.
    @param settings: Settings over the defaults, C{to} on port 9 by default.
    @return: A forward service instance.
    """
    values: dict[str, object] = {"to": "tcp:192.0.2.1:9"}
    values.update(settings)
    return makeContext("forward", settings=values, reactor=reactor)


class ForwardStreamTests(SynchronousTestCase):
    """
    L{ForwardServer} on a L{StringTransport}, connecting with a
    L{MemoryReactorClock}.
    """

    client: HalfCloseTransport

    def setUp(self) -> None:
        self.reactor = MemoryReactorClock()

    def accept(self, **settings: object) -> ForwardServer:
        """
        @param settings: Service settings.
        @return: A server protocol just connected from a client.
        """
        factory = buildStreamFactory(forwardContext(self.reactor, **settings))
        protocol = factory.buildProtocol(IPv4Address("TCP", "203.0.113.5", 40000))
        assert isinstance(protocol, ForwardServer)
        self.client = HalfCloseTransport(
            hostAddress=IPv4Address("TCP", "198.51.100.1", 8080),
            peerAddress=IPv4Address("TCP", "203.0.113.5", 40000),
        )
        protocol.makeConnection(self.client)
        return protocol

    def connectTarget(self) -> tuple[Any, HalfCloseTransport]:
        """
        Complete the pending connect to the target.

        @return: The target-side protocol and its transport.
        """
        host, port, factory, timeout, bindAddress = self.reactor.tcpClients[-1]
        protocol = factory.buildProtocol(IPv4Address("TCP", host, port))
        transport = HalfCloseTransport()
        protocol.makeConnection(transport)
        return protocol, transport

    def test_pausesClientAndConnectsToConfiguredTarget(self) -> None:
        """
        On accept, the client is paused and one connection is made, to the
        configured target: the client has no say in where it goes.
        """
        self.accept()
        self.assertEqual(self.client.producerState, "paused")
        self.assertEqual(len(self.reactor.tcpClients), 1)
        self.assertEqual(self.reactor.tcpClients[0][:2], ("192.0.2.1", 9))

    def test_spliceBothWays(self) -> None:
        """
        Once connected, the client is read again and bytes go both ways in
        order.
        """
        server = self.accept()
        targetProtocol, target = self.connectTarget()
        self.assertEqual(self.client.producerState, "producing")
        server.dataReceived(b"hello ")
        server.dataReceived(b"\x00world")
        self.assertEqual(target.value(), b"hello \x00world")
        targetProtocol.dataReceived(b"reply")
        targetProtocol.dataReceived(b"\xff")
        self.assertEqual(self.client.value(), b"reply\xff")

    def test_eachSideProducesForTheOther(self) -> None:
        """
        Each transport is the other's streaming producer: a full buffer
        towards the client pauses reading from the target, and the other way
        round, and both resume.
        """
        self.accept()
        _, target = self.connectTarget()
        self.assertIs(self.client.producer, target)
        self.assertTrue(self.client.streaming)
        self.assertIs(target.producer, self.client)
        self.assertTrue(target.streaming)
        # What a full write buffer does: pause its producer.
        self.client.producer.pauseProducing()
        self.assertEqual(target.producerState, "paused")
        self.client.producer.resumeProducing()
        self.assertEqual(target.producerState, "producing")
        target.producer.pauseProducing()
        self.assertEqual(self.client.producerState, "paused")
        target.producer.resumeProducing()
        self.assertEqual(self.client.producerState, "producing")

    def test_halfCloseClientToTarget(self) -> None:
        """
        The client's shutdown of its sending side becomes a
        C{loseWriteConnection} towards the target; the target can still
        answer; its own end closes both.
        """
        server = self.accept()
        targetProtocol, target = self.connectTarget()
        server.readConnectionLost()
        self.assertTrue(target.wroteEof)
        self.assertFalse(target.disconnecting)
        targetProtocol.dataReceived(b"late answer")
        self.assertEqual(self.client.value(), b"late answer")
        self.assertFalse(self.client.disconnecting)
        targetProtocol.readConnectionLost()
        self.assertTrue(self.client.wroteEof)
        self.assertTrue(self.client.disconnecting)
        self.assertTrue(target.disconnecting)

    def test_halfCloseTargetToClient(self) -> None:
        """
        The target's end of sending becomes a C{loseWriteConnection}
        towards the client, which may still send.
        """
        server = self.accept()
        targetProtocol, target = self.connectTarget()
        targetProtocol.readConnectionLost()
        self.assertTrue(self.client.wroteEof)
        self.assertFalse(self.client.disconnecting)
        server.dataReceived(b"more")
        self.assertEqual(target.value(), b"more")
        server.readConnectionLost()
        self.assertTrue(target.wroteEof)
        self.assertTrue(self.client.disconnecting)

    def test_ownHalfCloseDoneClosesNothing(self) -> None:
        """
        C{writeConnectionLost} (Twisted's notice that our own
        C{loseWriteConnection} is done) closes neither side: the other side
        may still be sending.
        """
        server = self.accept()
        targetProtocol, target = self.connectTarget()
        server.readConnectionLost()
        targetProtocol.writeConnectionLost()
        targetProtocol.dataReceived(b"still coming")
        server.writeConnectionLost()
        self.assertFalse(self.client.disconnecting)
        self.assertFalse(target.disconnecting)
        self.assertEqual(self.client.value(), b"still coming")

    def test_clientGoneClosesTarget(self) -> None:
        """
        When the client connection is lost, the target connection is closed.
        """
        server = self.accept()
        _, target = self.connectTarget()
        server.connectionLost(Failure(error.ConnectionLost()))
        self.assertTrue(target.disconnecting)

    def test_targetGoneClosesClient(self) -> None:
        """
        When the target closes, the client is closed after what is
        buffered; an abnormal end is the session's reason.
        """
        self.accept()
        targetProtocol, _ = self.connectTarget()
        targetProtocol.connectionLost(Failure(error.ConnectionLost("reset")))
        self.assertTrue(self.client.disconnecting)
        self.assertIn("target connection lost", self.client.closeReason or "")

    def failConnect(self, reason: Exception) -> None:
        """
        Fail the pending connect.

        @param reason: The failure.
        """
        connector = self.reactor.connectors[-1]
        factory = self.reactor.tcpClients[-1][2]
        factory.clientConnectionFailed(connector, Failure(reason))

    def test_refused(self) -> None:
        """
        A refused connect closes the client with the reason in words.
        """
        self.accept()
        self.failConnect(error.ConnectionRefusedError())
        self.assertTrue(self.client.disconnecting)
        self.assertEqual(self.client.closeReason, "target refused: connection refused")
        self.assertEqual(self.client.value(), b"")

    def test_unreachable(self) -> None:
        """
        No route to the target, or another connect error, is "target
        unreachable" with the cause.
        """
        self.accept()
        self.failConnect(error.NoRouteError())
        self.assertEqual(
            self.client.closeReason, "target unreachable: no route to host"
        )
        self.accept()
        self.failConnect(error.ConnectError("network is down"))
        self.assertIn("target unreachable: ", self.client.closeReason or "")
        self.assertIn("network is down", self.client.closeReason or "")

    def test_connectTimeout(self) -> None:
        """
        A target that does not answer within C{connect_timeout} ends the
        session as timed out, and the attempt is abandoned.
        """
        self.accept(connect_timeout=2.5)
        self.reactor.advance(2.4)
        self.assertFalse(self.client.disconnecting)
        self.reactor.advance(0.2)
        self.assertTrue(self.client.disconnecting)
        self.assertEqual(
            self.client.closeReason, "target timed out: not connected after 2.5s"
        )
        self.assertEqual(self.reactor.connectors[-1].stoppedConnecting, True)

    def test_endpointTimeoutBeyondConnectTimeout(self) -> None:
        """
        The endpoint's own connect timeout (Twisted's 30 s by default) is
        set past C{connect_timeout}, so a long one is honoured; one written
        in C{to} is kept.
        """
        self.accept(connect_timeout=90)
        self.assertEqual(self.reactor.tcpClients[-1][3], 91)
        self.accept(to="tcp:192.0.2.1:9:timeout=5")
        self.assertEqual(self.reactor.tcpClients[-1][3], 5)

    def test_clientGoneWhileConnecting(self) -> None:
        """
        A client that leaves before the target answers cancels the attempt.
        """
        server = self.accept()
        server.connectionLost(Failure(error.ConnectionDone()))
        self.assertTrue(self.reactor.connectors[-1].stoppedConnecting)
        self.assertIsNone(self.client.closeReason)

    def test_proxyV2Sent(self) -> None:
        """
        With C{proxy_protocol = "v2"}, the target's first bytes are the
        header naming the client, then the client's bytes.
        """
        server = self.accept(proxy_protocol="v2")
        _, target = self.connectTarget()
        server.dataReceived(b"GET /")
        header = proxyV2Header(self.client.getPeer(), self.client.getHost())
        self.assertEqual(target.value(), header + b"GET /")


class ProxyV2Tests(SynchronousTestCase):
    """
    L{proxyV2Header} against the byte layout of the HAProxy specification
    (proxy-protocol.txt, section 2.2).
    """

    def test_ipv4(self) -> None:
        """
        TCP over IPv4: signature, version 2 + PROXY (0x21), AF_INET +
        STREAM (0x11), length 12, source and destination addresses, ports.
        """
        header = proxyV2Header(
            IPv4Address("TCP", "203.0.113.5", 40000),
            IPv4Address("TCP", "198.51.100.1", 8080),
        )
        self.assertEqual(
            header,
            b"\x0d\x0a\x0d\x0a\x00\x0d\x0a\x51\x55\x49\x54\x0a"
            b"\x21\x11\x00\x0c"
            b"\xcb\x00\x71\x05"
            b"\xc6\x33\x64\x01"
            b"\x9c\x40"
            b"\x1f\x90",
        )

    def test_ipv6(self) -> None:
        """
        TCP over IPv6: AF_INET6 + STREAM (0x21), length 36.
        """
        header = proxyV2Header(
            IPv6Address("TCP", "2001:db8::1", 443),
            IPv6Address("TCP", "::1", 80),
        )
        self.assertEqual(header[:16], b"\r\n\r\n\x00\r\nQUIT\n\x21\x21\x00\x24")
        self.assertEqual(len(header), 16 + 36)
        self.assertEqual(header[16:32], b"\x20\x01\x0d\xb8" + b"\x00" * 11 + b"\x01")
        self.assertEqual(header[32:48], b"\x00" * 15 + b"\x01")
        self.assertEqual(header[48:], b"\x01\xbb\x00\x50")

    def test_mixedFamiliesAsIPv6(self) -> None:
        """
        An IPv4 client on a dual-stack listener is sent as an IPv4-mapped
        IPv6 address.
        """
        header = proxyV2Header(
            IPv4Address("TCP", "192.0.2.7", 1234),
            IPv6Address("TCP", "::1", 80),
        )
        self.assertEqual(header[13], 0x21)
        self.assertEqual(header[16:32], b"\x00" * 10 + b"\xff\xff\xc0\x00\x02\x07")

    def test_unixIsLocal(self) -> None:
        """
        A client on a UNIX socket has no address to give: a C{LOCAL}
        command (0x20) with family 0 and length 0.
        """
        header = proxyV2Header(UNIXAddress(None), UNIXAddress(b"/run/x.sock"))
        self.assertEqual(header, b"\r\n\r\n\x00\r\nQUIT\n\x20\x00\x00\x00")


class ForwardConfigTests(SynchronousTestCase):
    """
    The forward settings and their problems.
    """

    def test_streamTargets(self) -> None:
        """
        tcp:, ssl: and unix: descriptions are accepted as they are.
        """
        for value in ("tcp:127.0.0.1:80", "ssl:localhost:443", "unix:/run/a.sock"):
            self.assertEqual(streamTarget(value), value)

    def test_badStreamTargets(self) -> None:
        """
        Another scheme, a description Twisted cannot parse, or a non-string
        is refused with a message saying what to write.
        """
        with self.assertRaises(ValueError) as e:
            streamTarget("udp:127.0.0.1:53")
        self.assertIn(
            "'udp' is not a stream target: use tcp:HOST:PORT", str(e.exception)
        )
        self.assertIn("to_udp", str(e.exception))
        with self.assertRaises(ValueError) as e:
            streamTarget("tcp:127.0.0.1:http-ish")
        self.assertIn("is not a valid tcp: endpoint", str(e.exception))
        with self.assertRaises(ValueError):
            streamTarget("tcp:127.0.0.1")
        with self.assertRaises(ValueError):
            streamTarget(80)

    def test_datagramTargets(self) -> None:
        """
        C{udp:IP:PORT}, IPv6 in brackets or not; names and bad ports are
        refused.
        """
        self.assertEqual(datagramTarget("udp:127.0.0.1:53"), ("127.0.0.1", 53))
        self.assertEqual(datagramTarget("udp:[::1]:53"), ("::1", 53))
        self.assertIsNone(datagramTarget(""))
        for bad in ("udp:localhost:53", "tcp:127.0.0.1:53", "udp:127.0.0.1:0", 5):
            self.assertRaises(ValueError, datagramTarget, bad)

    def test_proxyProtocolValues(self) -> None:
        """
        C{"v2"} or off.
        """
        self.assertEqual(proxyProtocol("v2"), "v2")
        self.assertIsNone(proxyProtocol(""))
        self.assertIsNone(proxyProtocol(False))
        self.assertRaises(ValueError, proxyProtocol, "v1")

    def test_defaults(self) -> None:
        """
        A connect timeout of 10 s, no PROXY header, UDP mappings idle out
        after 60 s, and the reply guard's settings.
        """
        keys = {s.key: s.default for s in serviceTypes()["forward"].settings}
        self.assertEqual(keys["connect_timeout"], 10.0)
        self.assertIsNone(keys["proxy_protocol"])
        self.assertEqual(keys["udp_idle_timeout"], 60.0)
        self.assertIn("udp_min_source_port", keys)

    def test_targetsRequiredByListeners(self) -> None:
        """
        A stream listener needs C{to}, a udp listener C{to_udp}.
        """
        forward = serviceTypes()["forward"]
        defaults = {s.key: s.default for s in forward.settings}
        context = makeContext("forward")
        listeners = (
            StreamListener("tcp:8080", "tcp", 8080),
            DatagramListener("udp:53", 53, "127.0.0.1"),
        )
        config = ServiceConfig(
            "fw", "forward", listeners, context.config.limits, defaults, forward
        )
        problems = checkConfig(config, {})
        self.assertEqual(
            [p.path for p in problems], ["services.fw.to", "services.fw.to_udp"]
        )
        self.assertIn('needs to = "tcp:HOST:PORT"', problems[0].message)


class FakeUDPPort:
    """
    A connected UDP port, as L{FakeUDPReactor.listenUDP} returns.
    """

    def __init__(self, protocol: Any, interface: str) -> None:
        self.protocol = protocol
        self.interface = interface
        self.connectedTo: tuple[str, int] | None = None
        self.written: list[bytes] = []
        self.stopped = False

    def connect(self, host: str, port: int) -> None:
        self.connectedTo = (host, port)

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def stopListening(self) -> None:
        self.stopped = True


class FakeUDPReactor(MemoryReactorClock):
    """
    A L{MemoryReactorClock} with a C{listenUDP}.
    """

    def __init__(self) -> None:
        super().__init__()
        self.udpPorts: list[FakeUDPPort] = []

    def listenUDP(self, port: int, protocol: Any, interface: str = "", **kw: Any) -> FakeUDPPort:  # type: ignore[override]
        udp = FakeUDPPort(protocol, interface)
        self.udpPorts.append(udp)
        return udp


class ForwardDatagramTests(SynchronousTestCase):
    """
    L{ForwardDatagram}: one mapping per client source, idle expiry, a cap,
    the reply guard.
    """

    def setUp(self) -> None:
        self.reactor = FakeUDPReactor()
        self.context = forwardContext(
            self.reactor,
            to_udp=("127.0.0.1", 5353),
            udp_idle_timeout=30.0,
            udp_max_mappings=2,
            udp_reply_burst=2,
            udp_reply_rate=1.0,
        )
        self.context.ownPorts.add(5300)
        self.protocol = buildDatagramProtocol(
            self.context, DatagramListener("udp:5300", 5300, "127.0.0.1")
        )
        assert isinstance(self.protocol, ForwardDatagram)
        self.transport = FakeDatagramTransport()
        self.protocol.transport = self.transport  # type: ignore[assignment]
        self.protocol.startProtocol()

    def test_mappingPerSource(self) -> None:
        """
        Each client source gets its own socket connected to the target;
        a second datagram reuses it.
        """
        self.protocol.datagramReceived(b"a", ("10.0.0.1", 4000))
        self.protocol.datagramReceived(b"b", ("10.0.0.1", 4000))
        self.protocol.datagramReceived(b"c", ("10.0.0.1", 4001))
        self.assertEqual(len(self.reactor.udpPorts), 2)
        first, second = self.reactor.udpPorts
        self.assertEqual(first.connectedTo, ("127.0.0.1", 5353))
        self.assertEqual(first.written, [b"a", b"b"])
        self.assertEqual(second.written, [b"c"])

    def test_repliesGoToTheirClientOnly(self) -> None:
        """
        What the target sends on a mapping goes back to that mapping's
        client, and no one else.
        """
        self.protocol.datagramReceived(b"q1", ("10.0.0.1", 4000))
        self.protocol.datagramReceived(b"q2", ("10.0.0.2", 4000))
        first, second = self.reactor.udpPorts
        second.protocol.datagramReceived(b"r2", ("127.0.0.1", 5353))
        first.protocol.datagramReceived(b"r1", ("127.0.0.1", 5353))
        self.assertEqual(
            self.transport.written,
            [(b"r2", ("10.0.0.2", 4000)), (b"r1", ("10.0.0.1", 4000))],
        )

    def test_idleExpiry(self) -> None:
        """
        A mapping unused for C{udp_idle_timeout} is closed; traffic keeps
        it; a later datagram opens a new one.
        """
        self.protocol.datagramReceived(b"a", ("10.0.0.1", 4000))
        port = self.reactor.udpPorts[0]
        self.reactor.advance(20)
        port.protocol.datagramReceived(b"r", ("127.0.0.1", 5353))
        self.reactor.advance(20)
        self.assertFalse(port.stopped)
        self.reactor.advance(20)
        self.assertTrue(port.stopped)
        self.assertEqual(self.protocol.mappings, {})
        self.protocol.datagramReceived(b"b", ("10.0.0.1", 4000))
        self.assertEqual(len(self.reactor.udpPorts), 2)

    def test_mappingCap(self) -> None:
        """
        Past C{udp_max_mappings} sources, a new source is dropped (counted).
        """
        for port in (4000, 4001, 4002):
            self.protocol.datagramReceived(b"x", ("10.0.0.1", port))
        self.assertEqual(len(self.reactor.udpPorts), 2)
        self.assertEqual(self.context.counters.datagramsDropped, 1)

    def test_guard(self) -> None:
        """
        No mapping for a privileged source port or one of netd's own ports;
        replies beyond the per-source budget are dropped.
        """
        self.protocol.datagramReceived(b"x", ("10.0.0.1", 53))
        self.protocol.datagramReceived(b"x", ("10.0.0.1", 5300))
        self.assertEqual(self.reactor.udpPorts, [])
        self.protocol.datagramReceived(b"x", ("10.0.0.1", 4000))
        mapping = self.reactor.udpPorts[0].protocol
        for i in range(3):
            mapping.datagramReceived(b"r%d" % i, ("127.0.0.1", 5353))
        self.assertEqual(len(self.transport.written), 2)
        self.assertEqual(self.context.counters.datagramsDropped, 3)

    def test_stopClosesMappings(self) -> None:
        """
        Stopping the listener closes every mapping and the sweep.
        """
        self.protocol.datagramReceived(b"x", ("10.0.0.1", 4000))
        self.protocol.stopProtocol()
        self.assertTrue(self.reactor.udpPorts[0].stopped)
        self.assertEqual(self.reactor.getDelayedCalls(), [])
