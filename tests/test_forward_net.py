# -*- test-case-name: tests.test_forward_net -*-
"""
Tests for L{netd.services.forward} on real sockets on 127.0.0.1.
"""

from __future__ import annotations

import socket
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.protocol import (
    ClientFactory,
    DatagramProtocol,
    Factory,
    Protocol,
)
from twisted.internet.task import LoopingCall, deferLater
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from netd.sessions import SessionFactory
from netd.services.forward import buildDatagramProtocol, buildStreamFactory
from netd.descriptions import DatagramListener
from netd.services.echo import Echo
from tests.support import makeContext

LOOPBACK = "127.0.0.1"
BIG = 16 * 1024 * 1024


class Source(Protocol):
    """
    Sends L{BIG} bytes as fast as the transport takes them (a pull
    producer), then closes.
    """

    sent = 0
    chunk = b"x" * 65536

    def connectionMade(self) -> None:
        self.transport.registerProducer(self, False)

    def resumeProducing(self) -> None:
        if self.sent >= BIG:
            self.transport.unregisterProducer()
            self.transport.loseConnection()
            return
        self.transport.write(self.chunk)
        self.sent += len(self.chunk)

    def stopProducing(self) -> None:
        """
        Nothing to release: the next C{resumeProducing} never comes.
        """


def buffered(transport: Any) -> int:
    """
    @param transport: A Twisted TCP transport.
    @return: The bytes waiting in its write buffer.
    """
    return len(transport.dataBuffer) - transport.offset + transport._tempDataLen


class ForwardSocketTests(TestCase):
    """
    A forward service listening on 127.0.0.1, in front of real servers.
    """

    timeout = 60

    def listenForward(self, to: str, **settings: object) -> tuple[int, Any]:
        """
        @param to: The target description.
        @param settings: More settings.
        @return: The forwarder's port and its context.
        """
        context = makeContext(
            "forward", settings={"to": to, **settings}, reactor=reactor
        )
        factory = SessionFactory(buildStreamFactory(context), context, "tcp:0")
        port = reactor.listenTCP(0, factory, interface=LOOPBACK)
        self.addCleanup(port.stopListening)
        return port.getHost().port, context

    def listenTarget(self, factory: Factory) -> int:
        """
        @param factory: The target's protocol factory.
        @return: Its port on 127.0.0.1.
        """
        port = reactor.listenTCP(0, factory, interface=LOOPBACK)
        self.addCleanup(port.stopListening)
        return port.getHost().port

    async def test_echoThroughForward(self) -> None:
        """
        A blocking client sends through the forwarder to a real echo server,
        shuts down its sending side, and gets every byte back before the
        end (half-close passes through both ways).
        """
        # netd's echo is half-close aware: it answers after the client's FIN.
        target = self.listenTarget(Factory.forProtocol(Echo))
        port, _ = self.listenForward(f"tcp:{LOOPBACK}:{target}")
        payload = bytes(range(256)) * 4096

        def talk() -> bytes:
            with socket.create_connection((LOOPBACK, port), timeout=10) as s:
                s.sendall(payload)
                s.shutdown(socket.SHUT_WR)
                received = b""
                while chunk := s.recv(65536):
                    received += chunk
                return received

        self.assertEqual(await deferToThread(talk), payload)

    async def test_slowReaderBoundsBuffer(self) -> None:
        """
        A target sending 16 MiB to a client that reads nothing for a while:
        netd's write buffer towards the client stays small (the target is
        paused), and every byte still arrives once the client reads.
        """
        target = self.listenTarget(Factory.forProtocol(Source))
        port, context = self.listenForward(f"tcp:{LOOPBACK}:{target}")
        servers: list[Any] = []
        peak = [0]

        def measure() -> None:
            for conn in reactor.getReaders() + reactor.getWriters():
                if getattr(conn, "getHost", None) is None:
                    continue
                try:
                    host = conn.getHost()
                except OSError:
                    continue  # a connection closing under us
                if getattr(host, "port", None) == port and hasattr(conn, "dataBuffer"):
                    servers.append(conn)
                    peak[0] = max(peak[0], buffered(conn))

        done: Deferred[int] = Deferred()

        class Slow(Protocol):
            received = 0

            def connectionMade(self) -> None:
                self.transport.pauseProducing()
                reactor.callLater(1.0, self.transport.resumeProducing)

            def dataReceived(self, data: bytes) -> None:
                self.received += len(data)

            def connectionLost(self, reason: Any) -> None:
                done.callback(self.received)

        loop = LoopingCall(measure)
        loop.start(0.01)
        self.addCleanup(lambda: loop.running and loop.stop())
        factory = ClientFactory.forProtocol(Slow)
        reactor.connectTCP(LOOPBACK, port, factory)
        received = await done
        self.assertEqual(received, BIG)
        self.assertTrue(servers, "the forwarder's client connection was not seen")
        self.assertLess(peak[0], 1024 * 1024, f"netd buffered {peak[0]} bytes")

    async def test_refusedTargetLogged(self) -> None:
        """
        A closed target port: the client is closed at once and the session
        event says "target refused: connection refused".
        """
        sock = socket.socket()
        sock.bind((LOOPBACK, 0))
        closed = sock.getsockname()[1]
        sock.close()
        port, _ = self.listenForward(f"tcp:{LOOPBACK}:{closed}")
        events: list[dict[str, Any]] = []
        from twisted.logger import globalLogPublisher

        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)

        def talk() -> bytes:
            with socket.create_connection((LOOPBACK, port), timeout=10) as s:
                return s.recv(10)

        self.assertEqual(await deferToThread(talk), b"")
        await deferLater(reactor, 0.05, lambda: None)
        reasons = [e.get("reason") for e in events if "bytesIn" in e]
        self.assertIn("target refused: connection refused", reasons)

    async def test_udpForward(self) -> None:
        """
        A datagram through the forwarder reaches a real UDP echo server and
        its answer comes back to the client's own address.
        """

        class UDPEcho(DatagramProtocol):
            def datagramReceived(self, data: bytes, addr: Any) -> None:
                self.transport.write(data.upper(), addr)

        echoPort = reactor.listenUDP(0, UDPEcho(), interface=LOOPBACK)
        self.addCleanup(echoPort.stopListening)
        context = makeContext(
            "forward",
            settings={"to_udp": (LOOPBACK, echoPort.getHost().port)},
            reactor=reactor,
        )
        protocol = buildDatagramProtocol(
            context, DatagramListener("udp:0", 0, LOOPBACK)
        )
        port = reactor.listenUDP(0, protocol, interface=LOOPBACK)
        self.addCleanup(port.stopListening)
        forwardPort = port.getHost().port

        def ask() -> tuple[bytes, Any]:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.bind((LOOPBACK, 0))
                s.settimeout(5)
                s.sendto(b"hello", (LOOPBACK, forwardPort))
                data, addr = s.recvfrom(100)
                return data, addr

        data, addr = await deferToThread(ask)
        self.assertEqual(data, b"HELLO")
        self.assertEqual(addr, (LOOPBACK, forwardPort))
        self.assertEqual(len(protocol.mappings), 1)
